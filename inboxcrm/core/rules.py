"""Routing rules: all-must-hold conditions -> actions, evaluated as an ordered table.

Rules are values (``RuleSpec``) parsed from the CLI's ``KEY=VALUE`` words and stored as
JSON; ``evaluate`` is pure and says, per rule, why it fired or which condition failed.

Every value is bounded where the rule is written (``rule add``): a score no deal column can hold
or a megabyte of subject text would otherwise fail every message it meets, later, in the daemon.
Wildcards are ``fnmatch``'s, which matches in linear time (Python 3.9+); there are no regexes.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache

from inboxcrm.core.addresses import normalize_domain
from inboxcrm.core.views import clip
from inboxcrm.errors import Invalid
from inboxcrm.values import Email, Explanation

log = logging.getLogger(__name__)

SCORE_LIMIT = 1000  # per rule, either way: a business domain is worth 10 points, all replies 50
VALUE_CHARS = 500  # per condition or action value: longer than any address (320) or rep rotation worth typing
VALUE_LIMITS = {"source": 100}  # the deal's source column; other values: VALUE_CHARS
PARTS_PER_RULE = 20  # conditions, and actions, in one rule


@dataclass(frozen=True)
class Condition:
    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class Action:
    key: str
    value: str = ""

    def __str__(self) -> str:
        if self.key == "score":
            return f"score+={self.value}"
        return f"{self.key}={self.value}" if self.value else self.key


@dataclass(frozen=True)
class RuleSpec:
    name: str
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    round_robin_next: int = 0


def _address_pattern(pattern: str) -> str:
    """A pattern's domain in the stored form when it holds no wildcard, so ``*@xn--mller-bau-q9a.de``
    (written before addresses had one form, or copied from a header) matches ``anna@müller-bau.de``."""
    local, at, domain = pattern.strip().lower().rpartition("@")
    if at and domain and not any(c in domain for c in "*?["):
        domain = normalize_domain(domain) or domain
    return f"{local}{at}{domain}"


def _addresses_match(pattern: str, addresses: list[str]) -> bool:
    pattern = _address_pattern(pattern)
    return any(fnmatchcase(a, pattern) for a in addresses)


def _domain_match(domain: str, wanted: str) -> bool:
    """A rule written with the punycode or the Unicode spelling matches the stored form."""
    wanted = wanted.strip().lstrip("@")
    wanted = normalize_domain(wanted) or wanted.lower()
    return domain == wanted or domain.endswith("." + wanted)


def _header_match(email: Email, spec: str) -> bool:
    name, _, wanted = spec.partition(":")
    values = email.header_all(name.strip())
    return bool(values) and any(wanted.strip().lower() in v.lower() for v in values)


# condition key -> (help, test(email, mailbox, value))
CONDITIONS = {
    "from": ("sender address, * wildcards allowed", lambda e, m, v: _addresses_match(v, [e.from_.email])),
    "from-domain": ("sender domain or a parent domain", lambda e, m, v: _domain_match(e.from_.domain, v)),
    "to": ("any To/Cc address, * wildcards allowed", lambda e, m, v: _addresses_match(v, [a.email for a in e.recipients])),
    "mailbox": ("name of the mailbox it arrived in", lambda e, m, v: m == v),
    "subject-contains": ("text in the subject, any case", lambda e, m, v: v.lower() in e.subject.lower()),
    "header": ("Name:text, a header containing text", lambda e, m, v: _header_match(e, v)),
}
ACTIONS = {
    "source": "source=NAME  record where the lead came from",
    "owner": "owner=REP or owner=round-robin:REP1,REP2  who owns a new lead",
    "stage": "stage=STAGE  the stage a new deal starts in",
    "score": "score+=N  add N fit points",
    "ignore": "ignore  store the message but make no record",
    "review": "review  hold a new sender for a rep to accept",
    "form": "form  the sender is a web form; the prospect is in Reply-To or the body",
}
_FLAG_ACTIONS = {"ignore", "review", "form"}


def check_parts(when: list[str], then: list[str]) -> None:
    if len(when) > PARTS_PER_RULE or len(then) > PARTS_PER_RULE:
        raise Invalid(f"a rule has at most {PARTS_PER_RULE} conditions and {PARTS_PER_RULE} actions; found "
                      f"{len(when)} and {len(then)}; split it into several rules")


def _bounded_value(kind: str, key: str, text: str, value: str) -> str:
    limit = VALUE_LIMITS.get(key, VALUE_CHARS)
    if len(value) > limit:
        raise Invalid(f'invalid {kind} "{clip(text, 60)}"; a {key} value is at most {limit} characters, '
                      f"found {len(value)}")
    return value


def parse_condition(text: str) -> Condition:
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if not sep or key not in CONDITIONS or not value.strip():
        valid = ", ".join(f"{k}=VALUE ({h})" for k, (h, _) in CONDITIONS.items())
        raise Invalid(f'invalid condition "{clip(text, 60)}"; conditions are: {valid}')
    return Condition(key, _bounded_value("condition", key, text, value.strip()))


def _score(text: str, points: str) -> Action:
    """Counted by its digits first: int() of a 5,000-digit number is itself an error."""
    if len(points.lstrip("+-")) > len(str(SCORE_LIMIT)) or abs(int(points)) > SCORE_LIMIT:
        raise Invalid(f'invalid action "{clip(text, 60)}"; score+=N adds from {-SCORE_LIMIT} to {SCORE_LIMIT} '
                      f"points (a business domain is worth 10)")
    return Action("score", str(int(points)))


def parse_action(text: str) -> Action:
    text = text.strip()
    if text.lower() in _FLAG_ACTIONS:
        return Action(text.lower())
    match = re.fullmatch(r"score\s*\+=\s*([+-]?\d+)", text)
    if match:
        return _score(text, match.group(1))
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if sep and key in ACTIONS and key not in _FLAG_ACTIONS | {"score"} and value.strip():
        value = _bounded_value("action", key, text, value.strip())
        if key == "owner" and value.startswith("round-robin:"):
            reps = [r.strip() for r in value.removeprefix("round-robin:").split(",") if r.strip()]
            if not reps:
                raise Invalid(f'invalid action "{text}"; round-robin needs reps: owner=round-robin:alice,bob')
            value = "round-robin:" + ",".join(reps)
        return Action(key, value)
    raise Invalid(f'invalid action "{clip(text, 60)}"; actions are: ' + "; ".join(ACTIONS.values()))


def owner_names(action: Action) -> list[str]:
    """Rep names an owner action refers to, for validation against the reps table."""
    return action.value.removeprefix("round-robin:").split(",") if action.key == "owner" else []


@dataclass(frozen=True)
class Routing:
    source: str | None = None
    owner: str | None = None
    round_robin_rule: str | None = None  # the rule whose rotation chose ``owner``
    round_robin_reps: tuple[str, ...] = ()  # its rotation: the store takes the real turn
    stage: str | None = None
    score: int = 0
    ignore: str | None = None  # rule names, so the outcome can say which rule did it
    review: str | None = None
    form: str | None = None
    fired: tuple[str, ...] = ()
    explanations: tuple[Explanation, ...] = field(default=(), compare=False)


def _failed_condition(rule: RuleSpec, email: Email, mailbox: str) -> Condition | None:
    for cond in rule.conditions:
        if not CONDITIONS[cond.key][1](email, mailbox, cond.value):
            return cond
    return None


@lru_cache(maxsize=1024)
def unusable(rule: RuleSpec) -> str | None:
    """Why a stored rule cannot be applied (written before the bounds, or edited in the
    database), else None. Such a rule is skipped rather than quarantining every message it meets;
    cached, so the warning is logged once per rule, not once per message."""
    try:
        check_parts(list(map(str, rule.conditions)), list(map(str, rule.actions)))
        for condition in rule.conditions:
            parse_condition(str(condition))
        for action in rule.actions:
            parse_action(str(action))
    except Invalid as e:
        problem = f"skipped: {e}; replace it: inboxcrm rule remove {rule.name}, then rule add"
        log.warning("rule %s %s", rule.name, problem)
        return problem
    return None


def evaluate(rules: tuple[RuleSpec, ...], email: Email, mailbox: str) -> Routing:
    """Every rule whose conditions all hold fires; for each action the first rule wins."""
    chosen: dict[str, object] = {"score": 0}
    fired: list[str] = []
    explanations = []
    for rule in rules:
        problem = unusable(rule)
        if problem is not None:
            explanations.append(Explanation("rules", rule.name, False, problem))
            continue
        failed = _failed_condition(rule, email, mailbox)
        if failed is not None:
            explanations.append(Explanation("rules", rule.name, False, f"{failed} did not hold"))
            continue
        fired.append(rule.name)
        explanations.append(Explanation("rules", rule.name, True, ", ".join(map(str, rule.actions))))
        for action in rule.actions:
            if action.key == "score":
                chosen["score"] += int(action.value)
            elif action.key in _FLAG_ACTIONS:
                chosen.setdefault(action.key, rule.name)
            elif action.key == "owner" and action.value.startswith("round-robin:") and "owner" not in chosen:
                reps = owner_names(action)
                chosen["owner"] = reps[rule.round_robin_next % len(reps)]
                chosen["round_robin_rule"], chosen["round_robin_reps"] = rule.name, tuple(reps)
            else:
                chosen.setdefault(action.key, action.value)
    return Routing(fired=tuple(fired), explanations=tuple(explanations), **chosen)
