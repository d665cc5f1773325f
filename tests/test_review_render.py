"""The weekly review as mail: text and HTML of the same content, strangers' text escaped, and
charts that survive Gmail and Outlook (table bars, no scripts, images or SVG), measured in
headless Chromium at 360 and 1200 px."""
from __future__ import annotations

import html
import json
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from inboxcrm.core.metrics import Duration, Headline, Period, Rate, Report, Table
from inboxcrm.core.review import ReviewData, build_review
from inboxcrm.mail.render import HTML_BUDGET, render_review, template_env

from .test_digest_render import HOSTILE_NAME, HOSTILE_TITLE, LONG_URL, LONG_WORD, chromium_dom, elements
from .test_review import BOSS, OUTSIDER, REVIEW_AT, STAGES, row, week_data

PERIOD = Period(REVIEW_AT - timedelta(days=28), REVIEW_AT)


def reports(period: Period, scale: int = 1) -> dict[str, Report]:
    """The four reports the charts draw, with figures chosen so the bars are easy to check:
    funnel 40/20/10/5/0, pipeline value 80,000/20,000/40,000, 3 sources, 3 reps (one too few)."""
    def rep(name, tables, headlines=()):
        return Report(name, period, None, tables, headlines)

    return {
        "funnel": rep("funnel", (Table("stages", "", ("stage", "reached", "advanced", "conversion"), tuple(
            (name, n * scale, 0, Rate(0, n, 5)) for name, n in
            (("New", 40), ("Contacted", 20), ("Qualified", 10), ("Proposal", 5), ("Negotiation", 0)))),),
            (Headline("lead_to_opportunity", "Lead to opportunity", Rate(10 * scale, 40, 5)),)),
        "pipeline": rep("pipeline", (Table("by_stage", "", ("stage", "deals", "value", "probability", "weighted"), (
            ("New", 8, Decimal(80000), 10, Decimal(8000)), (LONG_WORD, 1, Decimal(20000), 40, Decimal(8000)),
            ("Negotiation", 2, Decimal(40000), 80, Decimal(32000)))),),
            (Headline("open_value", "Open value", Decimal(140000)),)),
        "sources": rep("sources", (Table("sources", "", ("source", "leads", "opportunities", "won", "won value", "cost",
                                                         "return"),
                                         (("website", 30 * scale, 5, 1, Decimal(1000), None, None),
                                          (HOSTILE_TITLE, 15 * scale, 0, 0, Decimal(0), None, None),
                                          ("referral", 3 * scale, 3, 2, Decimal(9000), None, None))),),
                           (Headline("leads", "Leads", 48 * scale),)),
        "response": rep("response", (Table("first_response", "",
                                           ("rep", "answered", "median", "p90", "within target"), (
            ("alice", 9, Duration(1800, 9), Duration(3600, 9), Rate(7, 9, 5)),
            (HOSTILE_NAME, 6, Duration(5400, 6), Duration(9000, 6), Rate(1, 6, 5)),
            ("carol", 2, Duration(None, 2), Duration(None, 2), Rate(1, 2, 5)))),),
            (Headline("median_first_response", "Median first response", Duration(2700 * scale, 15)),)),
    }


def full_review(manager=BOSS, busy: int = 0):
    """Every part filled, with hostile and very long text from strangers; ``busy`` more deals
    without a next step."""
    old = REVIEW_AT - timedelta(days=40)
    drifting = (
        row(11, title=HOSTILE_TITLE, contact=HOSTILE_NAME, expected_close=date(2026, 11, 2), close_slips=1,
            last_stage_change_at=old, next_step=None),
        row(12, title=LONG_WORD, company=LONG_WORD, last_stage_change_at=old, owner="bob", value=Decimal(25000)),
        row(13, title="Quiet & co " + LONG_URL, last_inbound_at=old, last_outbound_at=None),
        row(14, title="Unplanned", next_step=None, owner_address=LONG_WORD.lower() + "@example.com"),
        *(row(100 + i, title=f"Enquiry number {i}", next_step=None) for i in range(busy)),
    )
    data = ReviewData(STAGES, drifting, *(getattr(week_data(), f) for f in ("created", "closed", "moves", "moved")))
    return build_review(data, REVIEW_AT, manager, reports(PERIOD), reports(PERIOD.previous(), scale=2),
                        lambda stage: 14, 30, has_command_address=True)


def page_text(markup: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup)))


def test_text_and_html_carry_the_same_content():
    review = full_review()
    mail = render_review(review, template_env())
    page = page_text(mail.html)
    text = re.sub(r"\s+", " ", mail.text)
    assert mail.subject == review.subject
    for section in (*review.moved, *review.decide):
        for item in section.items:
            for part in (item.ref, item.detail, *item.also):
                assert part in text and part in page, part
    for chart in review.charts:
        assert chart.title in text and chart.title in page
        for bar in chart.bars:  # each chart's numbers as text, in both versions
            assert f"{bar.label}: {bar.text}" in text and bar.text in page, bar
    for metric in review.metrics:
        assert metric.label in text and metric.label in page and metric.change in text and metric.change in page
    assert "Stage funnel" in text and "#" not in mail.text.split("Stage funnel")[1].split("Pipeline value")[0]
    assert "<table" not in mail.text and "too few (2)" in text


def test_hostile_text_is_shown_as_text():
    mail = render_review(full_review(), template_env())
    tags = elements(mail.html)
    assert not any(tag in ("script", "img", "svg", "iframe", "object") for tag, _ in tags)
    assert HOSTILE_TITLE in mail.text and html.escape(HOSTILE_TITLE, quote=False) in mail.html


def test_every_link_is_mailto_or_https_and_nothing_a_mail_client_drops():
    mail = render_review(full_review(), template_env())
    tags = elements(mail.html)
    links = [attrs.get("href") or "" for tag, attrs in tags if tag == "a"]
    assert links and all(link.startswith(("mailto:", "https:")) for link in links)
    styles = " ".join(attrs.get("style") or "" for _, attrs in tags)
    for dropped in ("background-image", "url(", "display: flex", "display:flex", "display: grid", "position:"):
        assert dropped not in styles
    assert not any(attrs.get(a, "").lower().startswith(("javascript:", "data:")) for _, attrs in tags
                   for a in ("href", "src"))
    assert not any(name.startswith("on") for _, attrs in tags for name in attrs)  # no event handlers


def test_a_config_manager_gets_no_reassign_links_and_is_told_why_in_both_versions():
    mail = render_review(full_review(OUTSIDER), template_env())
    hrefs = [attrs["href"] for tag, attrs in elements(mail.html) if tag == "a"]
    assert hrefs and all(h.startswith("mailto:bob@acme.example") or "example.com" in h for h in hrefs)
    assert "Reassign:" not in mail.text and "is not a rep's address" in mail.text
    assert "is not a rep&#39;s address" in mail.html or "is not a rep's address" in mail.html


def test_a_busy_week_stays_under_gmails_clipping_size_and_keeps_the_counts():
    review = full_review(busy=300)
    mail = render_review(review, template_env())
    assert len(mail.html.encode()) <= HTML_BUDGET
    assert review.subject.endswith("; 304 deals to decide on")
    assert "No next step (301 deals" in mail.text
    assert "and 291 more: inboxcrm review deals --reason no_next_step" in mail.text


# -- in a real browser --------------------------------------------------------------------------------

PROBE = """<!DOCTYPE html><html><body style="margin:0">{frames}
<script>
window.addEventListener('load', function () {{
  var found = {{}};
  document.querySelectorAll('iframe').forEach(function (f) {{
    var d = f.contentDocument, root = d.documentElement;
    found[f.id] = {{
      scroll: root.scrollWidth, client: root.clientWidth,
      bars: Array.prototype.map.call(d.querySelectorAll('table.chart td.fill'), function (td) {{
        var box = td.getBoundingClientRect(), track = td.parentNode.getBoundingClientRect();
        return {{width: box.width, height: box.height, track: track.width,
                colour: f.contentWindow.getComputedStyle(td).backgroundColor}};
      }})
    }};
  }});
  document.body.setAttribute('data-found', JSON.stringify(found));
}});
</script></body></html>"""


def measure(pages: dict[str, tuple[str, int]], tmp_path: Path) -> dict[str, dict]:
    """Widths of each page and of its chart bars, laid out at the given width. Headless Chromium
    will not make a window narrower than 500 px, so each page sits in an iframe of that width."""
    out = chromium_dom(pages, tmp_path, PROBE, 6000)
    found = re.search(r'data-found="([^"]*)"', out.stdout)
    assert found, f"chromium gave no measurement: {out.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("review-render")
    review = full_review()
    markup = render_review(review, template_env()).html
    (tmp_path / "review.html").write_text(markup, encoding="utf-8")  # kept for a look by hand
    return review, measure({"phone": (markup, 360), "desktop": (markup, 1200),
                            "control": ('<div style="width:800px">wide</div>', 360)}, tmp_path)


def test_the_review_fits_a_phone_and_a_desktop_without_scrolling_sideways(measured):
    _, found = measured
    assert found["control"]["scroll"] > 360  # the probe does see a page that scrolls sideways
    for name in ("phone", "desktop"):
        assert found[name]["scroll"] <= found[name]["client"], f"{name}: {found[name]['scroll']} px wide"


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_chart_bars_are_drawn_with_lengths_proportional_to_the_figures(measured, width):
    review, found = measured
    bars = found[width]["bars"]
    expected = [(chart.key, bar) for chart in review.charts for bar in chart.bars if bar.amount]
    assert len(bars) == len(expected) == 4 + 3 + 3 + 2  # funnel, pipeline, sources, the reps with enough answers
    for (key, bar), drawn in zip(expected, bars, strict=True):
        assert drawn["height"] >= 6 and drawn["colour"] == "rgb(59, 130, 246)", (key, bar, drawn)
        largest = max(b.amount for b in next(c for c in review.charts if c.key == key).bars)
        assert abs(drawn["width"] / drawn["track"] - bar.amount / largest) < 0.02, (key, bar, drawn)
    funnel = [d["width"] for d in bars[:4]]  # 40, 20, 10, 5 deals: each bar half the one before
    assert all(abs(a / b - 2) < 0.1 for a, b in zip(funnel, funnel[1:]))
