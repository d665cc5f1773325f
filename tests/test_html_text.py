"""HTML-only mail read as text: web forms keep their "Field: value" lines, nothing hidden leaks,
and hostile or huge markup costs bounded time."""
from __future__ import annotations

import time
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxcrm.core.forms import form_fields, form_prospect
from inboxcrm.core.html_text import MAX_MARKUP, html_to_text
from inboxcrm.core.parse import parse

TEAM = frozenset({"acme.example"})
TABLE_FORM = """<html><head><style>td { color: red }</style><title>New submission</title></head><body>
<!-- Email: planted@attacker.example -->
<h2>New submission from Contact us</h2>
<table>
  <tr><td><b>Name:</b></td><td>Anna M&uuml;ller</td></tr>
  <tr><td><b>Email:</b></td><td>anna@m&uuml;ller-bau.example</td></tr>
  <tr><td><b>Message:</b></td><td>We need 40 units &amp; a quote</td></tr>
</table><script>document.write("Email: script@attacker.example")</script></body></html>"""
PARAGRAPH_FORM = ("<div><p>Name: Bob Stone</p><p>Email: <a href='mailto:bob@harbor.example'>bob@harbor.example</a></p>"
                  "<p>Company: Harbor&nbsp;Logistics</p></div>")


def html_only(markup: str) -> bytes:
    """An HTML-only notification as a form service sends it."""
    msg = EmailMessage()
    msg["From"] = "Website <forms@formmailer.example>"
    msg["To"] = "sales@acme.example"
    msg["Subject"] = "New submission"
    msg["Message-ID"] = "<form-1@formmailer.example>"
    msg.set_content(markup, subtype="html")
    return msg.as_bytes()


@pytest.mark.parametrize("markup, prospect, fields", [
    (TABLE_FORM, ("anna@müller-bau.example", "Anna Müller"), {"message": "We need 40 units & a quote"}),
    (PARAGRAPH_FORM, ("bob@harbor.example", "Bob Stone"), {"company": "Harbor Logistics"}),
])
def test_web_forms_sent_as_html_only_are_read(markup, prospect, fields):
    email = parse(html_only(markup))
    found = form_prospect(email, TEAM)
    assert (found.email, found.name) == prospect
    assert fields.items() <= form_fields(email.text).items()


def test_comments_scripts_styles_and_hidden_text_never_reach_the_text():
    text = html_to_text(TABLE_FORM + '<p style="display: none">Email: hidden@attacker.example</p>')
    assert "attacker" not in text and "color" not in text and "<" not in text
    assert "Email:" in text and text.count("@") == 1


def test_block_elements_keep_their_line_breaks_and_entities_are_text():
    text = html_to_text("<div>one</div><div>two</div>three<br>four<ul><li>five</li><li>six</li></ul>"
                        "<p>&lt;b&gt; &amp; &eacute;</p>")
    lines = [line.strip(" *") for line in text.splitlines() if line.strip()]
    assert lines == ["one", "two", "three", "four", "five", "six", "<b> & é"]


def test_a_5_mb_table_converts_quickly_and_says_where_it_stopped():
    """Tables cost inscriptis ~1 KB per cell: unbounded, a 5 MB table took 6 s and 330 MB."""
    markup = "<table>" + "<tr><td>Email:</td><td>a@b.example</td></tr>" * 120_000 + "</table>"
    assert len(markup) > 5_000_000
    started = time.perf_counter()
    text = html_to_text(markup)
    assert time.perf_counter() - started < 10
    assert text.startswith("Email:") and text.splitlines()[-1].startswith("[HTML converted up to character ")
    assert f"of {len(markup):,}; the stored message has the rest]" in text
    assert html_to_text(markup[:MAX_MARKUP // 2]).count("\n") > 1000  # under the bound nothing is cut


def test_nesting_past_the_parsers_cap_is_said_not_silently_dropped():
    """Old mailers leave <font> open; libxml2 stops at 255 levels."""
    text = html_to_text("".join(f"<font face=Arial>line {n}<br>" for n in range(400)))
    assert "line 200" in text and "line 399" not in text
    assert text.splitlines()[-1].startswith("[HTML nested more than 255 elements deep")


HTMLISH = st.text(alphabet=st.sampled_from(list("<>/!-=\"' &#;x\x00\napbtdr")) | st.characters(), max_size=300)


@settings(max_examples=300, deadline=None)
@given(HTMLISH, st.text(alphabet=st.characters(blacklist_characters="<'\"&"), max_size=50), HTMLISH)
def test_any_markup_converts_and_a_comment_never_shows(garbage, before, after):
    assert isinstance(html_to_text(garbage), str)
    text = html_to_text(f"<p>{before}</p><!-- Email: planted@attacker.example -->{after}")
    assert "planted@" not in text or "planted@" in after
