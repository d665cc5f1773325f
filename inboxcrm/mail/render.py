"""Mail bodies from Jinja2 templates: a plain-text and an HTML version of the same content.

The HTML gets its CSS inlined (css-inline), since Gmail and Outlook drop or ignore a <style>
block; only @media rules stay in one. Autoescaping is on for HTML templates, so a subject or a
name written by a stranger is always shown as text. An admin's ``templates_dir`` comes first,
file by file, so overriding one template does not mean copying them all; a mistake in one is
reported with its file and line, as a user error, not as a traceback.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)

from inboxcrm.core.digest import Digest, day_label
from inboxcrm.core.review import Review
from inboxcrm.core.views import money
from inboxcrm.errors import InboxCRMError

_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


class TemplateProblem(InboxCRMError):
    """A template that cannot be loaded or rendered: names the file and line."""


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


def builtin_templates() -> Path:
    """The wheel packages templates/ as inboxcrm/templates; a checkout has it beside the package."""
    packaged = Path(str(files("inboxcrm") / "templates"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "templates"


def template_env(templates_dir: str | None = None) -> Environment:
    """``templates_dir`` (the config's ``[digest] templates_dir``) overrides built-in templates by name."""
    loaders = [FileSystemLoader(str(builtin_templates()))]
    if templates_dir:
        if not Path(templates_dir).is_dir():
            raise TemplateProblem(f"templates_dir {templates_dir} is not a folder; expected a folder holding "
                                  f"templates to override by name, such as digest.html.j2")
        loaders.insert(0, FileSystemLoader(templates_dir))
    env = Environment(loader=ChoiceLoader(loaders), autoescape=lambda name: bool(name and name.endswith(".html.j2")),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(money=_money, day=_day, when=_when)
    return env


def _money(value: Decimal | None) -> str:
    return money(Decimal(value)) if value is not None else ""


def _day(value: date) -> str:
    return day_label(value)


def _when(value: datetime, tz: str = "UTC") -> str:
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def _where(exc: Exception) -> str:
    """The template frame Jinja put into the traceback: "path/digest.html.j2 line 12"."""
    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.filename or exc.name} line {exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    return f"{frames[-1].filename} line {frames[-1].lineno}" if frames else "a template"


def render(env: Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except TemplateNotFound as exc:
        raise TemplateProblem(f"template {exc.name} not found; looked in {_searched(env)}") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise TemplateProblem(f"template error in {_where(exc)}: {exc}") from None


def _searched(env: Environment) -> str:
    loader = env.loader
    loaders = loader.loaders if isinstance(loader, ChoiceLoader) else [loader]
    return ", ".join(p for ld in loaders if isinstance(ld, FileSystemLoader) for p in ld.searchpath)


def render_pair(env: Environment, base_name: str, context: dict[str, Any]) -> tuple[str, str]:
    """(text, html) from ``base_name``.txt.j2 and ``base_name``.html.j2, CSS inlined into the HTML."""
    text = render(env, f"{base_name}.txt.j2", context)
    html = render(env, f"{base_name}.html.j2", context)
    return text, _INLINER.inline(html)


# Gmail clips a message whose HTML passes 102 KB behind a "View entire message" link, and the
# inlined CSS makes an item about 1.7 KB: a busy rep's digest shows fewer items per section
# (the rest counted, with the command that lists them) rather than being clipped.
HTML_BUDGET = 95_000
SHORTER_LIMITS = (10, 5, 3, 1)


def _within_budget(env: Environment, name: str, content: Digest | Review) -> RenderedMail:
    """``name``.txt.j2 and .html.j2 with ``content`` as ``name``, shortened (``content.shortened``)
    until the HTML fits the budget; the subject keeps the whole counts."""
    text, html = render_pair(env, name, {name: content, "subject": content.subject})
    for limit in SHORTER_LIMITS:
        if len(html.encode()) <= HTML_BUDGET:
            break
        text, html = render_pair(env, name, {name: content.shortened(limit), "subject": content.subject})
    return RenderedMail(content.subject, text, html)


def render_digest(digest: Digest, env: Environment) -> RenderedMail:
    return _within_budget(env, "digest", digest)


def render_review(review: Review, env: Environment) -> RenderedMail:
    """The weekly review; its charts are table bars, which Gmail and Outlook draw as sent."""
    return _within_budget(env, "review", review)
