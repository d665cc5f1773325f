"""The digest as mail: the same content in text and HTML, strangers' text escaped, the admin's
template overrides, and a layout that fits a phone (measured in headless Chromium)."""
from __future__ import annotations

import html
import os
import re
import subprocess
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from inboxcrm.core.digest import (
    BounceRow,
    DealRow,
    DigestData,
    HeldRow,
    RepInfo,
    StageTotal,
    build_digest,
)
from inboxcrm.mail.render import (
    SHORTER_LIMITS,
    TemplateProblem,
    builtin_templates,
    render_digest,
    render_pair,
    template_env,
)

from .conftest import server_missing

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
CHROMIUM = "/usr/bin/chromium"
HOSTILE_TITLE = "<script>alert(1)</script>"
HOSTILE_NAME = '"><img src=x onerror=alert(2)>'
LONG_URL = "https://www." + "very-long-subdomain-" * 8 + "example.com/" + "path/" * 20 + "?q=" + "x" * 120
LONG_WORD = "Donaudampfschifffahrtsgesellschaftskapitänswitwenrentenversicherungsanstalt" * 2


def row(i: int, **kw) -> DealRow:
    base = dict(id=i, title=f"Deal {i}", contact=f"Person {i}", address=f"p{i}@prospect.example", company="Harbor",
                stage="New", value=Decimal("12000.50"), source="website", score=10, owner_rep_id=1, owner="alice",
                next_step=None, next_step_due=None, next_step_owner_id=None, created_at=NOW - timedelta(days=40),
                last_inbound_at=None, last_outbound_at=None, last_stage_change_at=NOW - timedelta(days=40))
    return DealRow(**{**base, **kw})


def full_digest(command_address: str | None = "crm@acme.example"):
    """Every section filled, with hostile and very long text from strangers. Deals 1 to 3 have
    other reasons too (stalled and quiet for 40 days, no next step), shown as badges."""
    deals = (
        row(1, title=HOSTILE_TITLE, contact=HOSTILE_NAME, next_step="call " + LONG_URL, next_step_due=date(2026, 11, 20)),
        row(2, title=LONG_WORD, company=LONG_WORD, next_step="send the contract", next_step_due=date(2026, 11, 24)),
        row(3, title="Waiting one", address=LONG_WORD.lower() + "@example.com", last_inbound_at=NOW - timedelta(hours=5)),
        row(4, title="Fresh lead & co", source="web-form", score=55, created_at=NOW - timedelta(hours=2),
            last_stage_change_at=NOW - timedelta(hours=2)),
        row(5, stage="Proposal", title="Quiet one", last_outbound_at=NOW - timedelta(days=9),
            next_step="wait", last_stage_change_at=NOW - timedelta(days=9)),
        row(6, title="Stuck one", next_step="wait", last_outbound_at=NOW - timedelta(days=2)),
        row(7, title="Unplanned one", last_outbound_at=NOW - timedelta(days=2),
            last_stage_change_at=NOW - timedelta(days=2)),
        row(8, title="Bouncing one", next_step="wait", last_outbound_at=NOW - timedelta(days=1),
            last_stage_change_at=NOW - timedelta(days=1)),
    )
    bounces = (BounceRow(8, "p8@prospect.example", NOW - timedelta(days=1), "5.1.1 " + HOSTILE_TITLE + LONG_URL),)
    held = (HeldRow(77, "stranger@" + "x" * 90 + ".example", HOSTILE_TITLE + " " + LONG_URL, NOW - timedelta(hours=3),
                    "alice-inbox"),)
    team = (StageTotal("New", 40, Decimal(120000)), StageTotal("Proposal", 3, Decimal(9000)),
            StageTotal("Negotiation", 0, Decimal(0)))
    data = DigestData(RepInfo(1, "alice", "alice@acme.example", "Europe/Berlin"), deals, held, team,
                      NOW - timedelta(hours=24), bounces)
    return build_digest(data, NOW, ZoneInfo("Europe/Berlin"), lambda stage: 5 if stage == "Proposal" else 14, 30,
                        command_address)


class Elements(HTMLParser):
    """Element names and attributes as a browser would see them."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(markup: str) -> list[tuple[str, dict]]:
    parser = Elements()
    parser.feed(markup)
    return parser.tags


def test_every_section_is_in_both_versions():
    digest = full_digest()
    mail = render_digest(digest, template_env())
    assert mail.subject == digest.subject == ("inboxcrm: 8 deals: 1 bouncing, 1 overdue, 1 due today, "
                                              "5 more; 1 held for review - Tue 24 Nov")
    page = html.unescape(re.sub(r"<[^>]+>", " ", mail.html))
    for section in digest.sections:
        assert section.total, section.key
        for text in (section.title, *(i.detail for i in section.items)):
            assert text in mail.text and text in page, text
    for section in digest.sections:
        assert f"{section.title} ({section.counted})" in mail.text and section.counted in page
    for text in ("D-4", "Fresh lead & co", "web-form, score 55", "12,000.50", "inboxcrm held accept 77",
                 "inboxcrm rep digest alice --time", "--off"):
        assert text in mail.text and text in page, text


def test_each_deal_is_shown_once_with_its_other_reasons_as_badges_in_both_versions():
    """Deal 3 is awaiting a reply, stalled and without a next step: one item, two badges."""
    digest = full_digest()
    mail = render_digest(digest, template_env())
    page = html.unescape(re.sub(r"<[^>]+>", " ", mail.html))
    assert "\n  also: stalled 40 days, no next step\n" in mail.text
    waiting = mail.text.split("Awaiting your reply (1 deal)")[1].split("\n\n")[0]
    assert "D-3 Waiting one" in waiting and "also: stalled 40 days, no next step" in waiting
    assert re.search(r"also:\s+stalled 40 days\s+no next step", page)
    for ref in (f"D-{i} " for i in range(1, 8)):  # D-1 is in the text once, not in four sections
        assert len(re.findall(rf"^- {ref}", mail.text, re.M)) == 1, ref
    badges = [t for t, attrs in elements(mail.html) if "badge" in attrs.get("class", "")]
    assert len(badges) == sum(len(i.also) for s in digest.sections if s.unit == "deal" for i in s.items) == 7


def test_a_one_deal_digest_counts_one_deal():
    data = DigestData(RepInfo(1, "bob", None, "UTC"), (row(1, owner_rep_id=1, next_step="call",
                                                          next_step_due=date(2026, 11, 20)),), (), (), NOW)
    digest = build_digest(data, NOW, ZoneInfo("UTC"), lambda s: 14, 30, None)
    mail = render_digest(digest, template_env())
    assert mail.subject == "inboxcrm: 1 deal: 1 overdue - Tue 24 Nov"
    assert "Overdue next steps (1 deal)" in mail.text and "also: stalled 40 days, quiet 40 days" in mail.text
    assert "Stalled deals" not in mail.text and "Quiet deals" not in mail.text


def test_hostile_content_is_text_in_html_and_verbatim_in_text():
    mail = render_digest(full_digest(), template_env())
    tags = elements(mail.html)
    assert not [t for t, _ in tags if t in ("script", "img")]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert HOSTILE_TITLE in mail.text and HOSTILE_NAME in mail.text  # text/plain: nothing runs


def test_quick_action_links_in_html_decode_to_the_command():
    from urllib.parse import unquote, urlsplit

    hrefs = [attrs["href"] for tag, attrs in elements(render_digest(full_digest(), template_env()).html)
             if tag == "a" and attrs.get("href", "").startswith("mailto:crm@")]
    subjects = {unquote(urlsplit(h).query.removeprefix("subject=")) for h in hrefs}
    assert {"[D-1] next: ", "[D-1] stage: ", "[D-1] won", "[D-1] ", "[D-5] lost: "} <= subjects
    reply = [attrs["href"] for tag, attrs in elements(render_digest(full_digest(), template_env()).html)
             if tag == "a" and attrs.get("href", "").startswith("mailto:donau")]
    assert reply and unquote(urlsplit(reply[0]).query) == "subject=Re: Waiting one"


def test_css_is_inlined_for_gmail_and_outlook():
    html_ = render_digest(full_digest(), template_env()).html
    assert 'style="' in html_ and "max-width: 640px" in html_
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html_, re.S)
    assert all(s.strip().startswith("@media") for s in styles)  # only what cannot be inlined stays


def test_empty_digest_renders_and_says_so():
    data = DigestData(RepInfo(1, "bob", None, "UTC"), (), (), (StageTotal("New", 0, Decimal(0)),), NOW)
    digest = build_digest(data, NOW, ZoneInfo("UTC"), lambda s: 14, 30, None)
    mail = render_digest(digest, template_env())
    assert digest.is_empty and "Nothing needs you today." in mail.text and "Nothing needs you today." in mail.html


def test_the_builtin_templates_are_found():
    assert {"digest.html.j2", "digest.txt.j2", "base.html.j2"} <= {p.name for p in builtin_templates().iterdir()}


def test_an_override_replaces_one_template_by_name(tmp_path):
    (tmp_path / "digest.txt.j2").write_text("Hello {{ digest.rep_name }}: {{ digest.overdue.total }} overdue\n")
    mail = render_digest(full_digest(), template_env(str(tmp_path)))
    assert mail.text == "Hello alice: 1 overdue\n"
    assert "Overdue next steps" in mail.html  # the HTML template was not overridden


def test_an_override_is_autoescaped_too(tmp_path):
    (tmp_path / "digest.html.j2").write_text("<p>{{ digest.overdue.items[0].title }}</p>")
    assert "<p>&lt;script&gt;" in render_digest(full_digest(), template_env(str(tmp_path))).html


@pytest.mark.parametrize("source, line, says", [
    ("ok\n{% for x in digest.sections %}\n{{ x.title }\n", 3, "unexpected '}'"),
    ("line one\nline two\n{{ digest.no_such_thing }}\n", 3, "no_such_thing"),
])
def test_a_broken_override_names_the_file_and_line(tmp_path, source, line, says):
    broken = tmp_path / "digest.txt.j2"
    broken.write_text(source)
    with pytest.raises(TemplateProblem) as caught:
        render_digest(full_digest(), template_env(str(tmp_path)))
    assert f"{broken} line {line}" in str(caught.value) and says in str(caught.value)


def test_a_missing_templates_dir_is_refused(tmp_path):
    with pytest.raises(TemplateProblem, match="is not a folder"):
        template_env(str(tmp_path / "nope"))


def test_render_pair_serves_other_mails(tmp_path):
    (tmp_path / "nudge.txt.j2").write_text("{{ who }} wrote\n")
    (tmp_path / "nudge.html.j2").write_text("<style>p { color: red }</style><p>{{ who }} wrote</p>")
    text, html_ = render_pair(template_env(str(tmp_path)), "nudge", {"who": "<b>Sam</b>"})
    assert text == "<b>Sam</b> wrote\n"
    assert 'style="color: red;"' in html_ and "&lt;b&gt;Sam&lt;/b&gt; wrote" in html_


# -- the layout in a real browser -----------------------------------------------------------

PROBE = """<!DOCTYPE html><html><body style="margin:0">{frames}
<script>
window.addEventListener('load', function () {{
  document.querySelectorAll('iframe').forEach(function (f) {{
    var d = f.contentDocument.documentElement;
    document.body.setAttribute('data-' + f.id, d.scrollWidth + ' ' + d.clientWidth);
  }});
}});
</script></body></html>"""


def chromium_dom(pages: dict[str, tuple[str, int]], tmp_path: Path, probe_page: str, height: int):
    """Lays each page out at its width in headless Chromium and returns the run, whose stdout is the
    probe page's DOM after its script measured the frames. Headless Chromium will not make a window
    narrower than 500 px, so each page sits in an iframe of the wanted width."""
    if not os.access(CHROMIUM, os.X_OK):
        server_missing("Chromium", f"{CHROMIUM} is missing (Debian package chromium)")
    frames = "".join(f'<iframe id="{name}" style="width:{width}px;height:{height}px;border:0;display:block" '
                     f'srcdoc="{html.escape(markup, quote=True)}"></iframe>' for name, (markup, width) in pages.items())
    probe = tmp_path / "probe.html"
    probe.write_text(probe_page.format(frames=frames), encoding="utf-8")
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,3000",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)


def measure(pages: dict[str, tuple[str, int]], tmp_path: Path) -> dict[str, tuple[int, int]]:
    """scrollWidth and clientWidth of each page laid out at its width."""
    out = chromium_dom(pages, tmp_path, PROBE, 4000)
    found = dict(re.findall(r'data-(\w+)="(\d+ \d+)"', out.stdout))
    assert set(found) == set(pages), f"chromium gave no measurement: {out.stderr[-2000:]}"
    return {name: tuple(map(int, value.split())) for name, value in found.items()}


def test_the_html_digest_fits_360_and_1200_px_without_horizontal_scrolling(tmp_path):
    markup = render_digest(full_digest(), template_env()).html
    (tmp_path / "digest.html").write_text(markup, encoding="utf-8")  # kept for a look by hand
    widths = measure({"phone": (markup, 360), "desktop": (markup, 1200),
                      "control": ('<div style="width:800px">wide</div>', 360)}, tmp_path)
    assert widths["control"][0] > 360  # the probe does see a page that scrolls sideways
    for name in ("phone", "desktop"):
        scroll, client = widths[name]
        assert scroll <= client, f"{name}: content {scroll} px wide in a {client} px viewport"


def test_a_busy_reps_digest_stays_under_gmails_clipping_size_and_counts_what_it_leaves_out():
    """Gmail hides everything after 102 KB of HTML behind a link; 200 deals, 50 each overdue,
    awaiting a reply, due today and stalled, make a digest well over that. Fewer items are shown;
    the counts stay whole."""
    kinds = (dict(next_step="call", next_step_due=date(2026, 11, 20)),
             dict(next_step="call", next_step_due=date(2026, 11, 24)),
             dict(next_step="wait", last_outbound_at=NOW - timedelta(days=2)))
    deals = tuple(row(i, title=f"Enquiry number {i}", **(kinds[i % 4 - 1] if i % 4 else
                                                        dict(last_inbound_at=NOW - timedelta(hours=i))))
                  for i in range(1, 201))
    data = DigestData(RepInfo(1, "alice", "alice@acme.example", "Europe/Berlin"), deals, (), (),
                      NOW - timedelta(hours=24))
    digest = build_digest(data, NOW, ZoneInfo("Europe/Berlin"), lambda stage: 14, 30, "crm@acme.example")
    unlimited = render_pair(template_env(), "digest", {"digest": digest, "subject": digest.subject})[1]
    assert len(unlimited.encode()) > 102_400  # the case is real: without the budget it would be clipped

    mail = render_digest(digest, template_env())
    assert len(mail.html.encode()) <= 95_000
    assert digest.subject.startswith("inboxcrm: 200 deals: 50 overdue, 50 due today, 50 awaiting reply, 50 more")
    assert "Awaiting your reply" in mail.html and "(50 deals)" in mail.html  # the whole count
    assert any(f"and {50 - shown} more" in mail.html for shown in SHORTER_LIMITS)
    assert "Enquiry number 200" in mail.html  # the longest wait comes first and is kept
