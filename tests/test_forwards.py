"""Finding the prospect in a forwarded email, as each mail client writes the forward, after the
message went through the real parser: a rep forwards a prospect's mail to the command address,
and the lead must be the prospect, never the rep."""
from __future__ import annotations

import time
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxcrm.core import verbs
from inboxcrm.core.forwards import forwarded, is_forward, sender_address
from inboxcrm.core.parse import parse
from inboxcrm.values import Address, Email

INTRO = "[D-42] note: she wants a quote for 50 seats\n\nBob"
CARLA = Address("carla@acme.example", "Carla Prospect")
ORIGINAL = "Hi Bob,\n\nwhat would 50 seats cost per year?\n\nBest,\nCarla"


def received(body: str, subject: str = "Fwd: Pricing for 50 seats", html: bool = False) -> Email:
    """The forward as the command mailbox gets it, parsed by inboxcrm.core.parse."""
    msg = EmailMessage()
    msg["From"] = "Bob Rep <bob@team.example>"
    msg["To"] = "crm@team.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = "<fwd-1@team.example>"
    if html:
        msg.set_content(body, subtype="html")
    else:
        msg.set_content(body)
    return parse(bytes(msg))


CLIENTS = {
    "gmail": (
        f"{INTRO}\n\n---------- Forwarded message ---------\n"
        "From: Carla Prospect <carla@acme.example>\n"
        "Date: Mon, Nov 23, 2026 at 9:12 AM\n"
        "Subject: Pricing for 50 seats\n"
        "To: <bob@team.example>\n\n\n" + ORIGINAL,
        "Mon, Nov 23, 2026 at 9:12 AM"),
    "gmail-german": (
        f"{INTRO}\n\n---------- Weitergeleitete Nachricht ---------\n"
        "Von: Carla Prospect <carla@acme.example>\n"
        "Date: Mo., 23. Nov. 2026 um 09:12 Uhr\n"
        "Subject: Pricing for 50 seats\n"
        "To: <bob@team.example>\n\n\n" + ORIGINAL,
        "Mo., 23. Nov. 2026 um 09:12 Uhr"),
    "apple-mail": (
        f"{INTRO}\n\nBegin forwarded message:\n\n"
        "From: Carla Prospect <carla@acme.example>\n"
        "Subject: Pricing for 50 seats\n"
        "Date: 23 November 2026 at 09:12:00 CET\n"
        "To: bob@team.example\n\n" + ORIGINAL,
        "23 November 2026 at 09:12:00 CET"),
    "apple-mail-french": (
        f"{INTRO}\n\nDébut du message réexpédié :\n\n"
        "De : Carla Prospect <carla@acme.example>\n"
        "Objet : Pricing for 50 seats\n"
        "Date : 23 novembre 2026 à 09:12:00 UTC+1\n"
        "À : bob@team.example\n\n" + ORIGINAL,
        "23 novembre 2026 à 09:12:00 UTC+1"),
    "apple-mail-quoted": (
        f"{INTRO}\n\nBegin forwarded message:\n\n"
        "> From: \"Carla Prospect\" <Carla@ACME.example>\n"
        "> Subject: Pricing for 50 seats\n"
        "> Date: 23 November 2026 at 09:12:00 CET\n"
        "> To: bob@team.example\n>\n" + "\n".join("> " + line for line in ORIGINAL.splitlines()),
        "23 November 2026 at 09:12:00 CET"),
    "outlook-original-message": (
        f"{INTRO}\n\n-----Original Message-----\n"
        "From: Carla Prospect [mailto:carla@acme.example]\n"
        "Sent: Monday, November 23, 2026 9:12 AM\n"
        "To: Bob Rep\n"
        "Subject: Pricing for 50 seats\n\n" + ORIGINAL,
        "Monday, November 23, 2026 9:12 AM"),
    "outlook-underscores": (
        f"{INTRO}\n\n________________________________\n"
        "From: Carla Prospect <carla@acme.example<mailto:carla@acme.example>>\n"
        "Sent: Monday, November 23, 2026 9:12 AM\n"
        "To: Bob Rep <bob@team.example<mailto:bob@team.example>>; Dana Buyer <dana@acme.example>;\n"
        "    Eve Finance <eve@acme.example>\n"
        "Cc: Frank <frank@acme.example>\n"
        "Subject: Pricing for 50 seats\n\n" + ORIGINAL,
        "Monday, November 23, 2026 9:12 AM"),
    "outlook-german": (
        f"{INTRO}\n\n-----Ursprüngliche Nachricht-----\n"
        "Von: Carla Prospect <carla@acme.example>\n"
        "Gesendet: Montag, 23. November 2026 09:12\n"
        "An: Bob Rep <bob@team.example>\n"
        "Betreff: Pricing for 50 seats\n\n" + ORIGINAL,
        "Montag, 23. November 2026 09:12"),
    "outlook-french": (
        f"{INTRO}\n\n-----Message d'origine-----\n"
        "De : Carla Prospect <carla@acme.example>\n"
        "Envoyé : lundi 23 novembre 2026 09:12\n"
        "À : Bob Rep <bob@team.example>\n"
        "Objet : Pricing for 50 seats\n\n" + ORIGINAL,
        "lundi 23 novembre 2026 09:12"),
    "thunderbird": (
        f"{INTRO}\n\n-------- Forwarded Message --------\n"
        "Subject: \tPricing for 50 seats\n"
        "Date: \tMon, 23 Nov 2026 09:12:00 +0100\n"
        "From: \tCarla Prospect <carla@acme.example>\n"
        "To: \tbob@team.example\n\n\n" + ORIGINAL,
        "Mon, 23 Nov 2026 09:12:00 +0100"),
    "thunderbird-french": (
        f"{INTRO}\n\n-------- Message transféré --------\n"
        "Sujet : \tPricing for 50 seats\n"
        "Date : \tMon, 23 Nov 2026 09:12:00 +0100\n"
        "De : \tCarla Prospect <carla@acme.example>\n"
        "Pour : \tbob@team.example\n\n\n" + ORIGINAL,
        "Mon, 23 Nov 2026 09:12:00 +0100"),
}


@pytest.mark.parametrize("client", CLIENTS)
def test_the_original_sender_subject_and_date_are_found(client):
    body, date_text = CLIENTS[client]
    found = forwarded(received(body))
    assert found is not None
    assert found.sender == CARLA
    assert found.subject == "Pricing for 50 seats"
    assert found.date_text == date_text
    assert found.intro == INTRO


def test_an_outlook_html_forward_turned_into_text_by_the_parser():
    """Outlook on the web sends HTML only; its source has a line break after each header."""
    markup = ("<html><body>\n<div><p>[D-42] note: she wants a quote</p></div>\n"
              '<hr style="display:inline-block;width:98%" tabindex="-1">\n'
              '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt">'
              "<b>From:</b> Carla Prospect &lt;carla@acme.example&gt;<br>\n"
              "<b>Sent:</b> Monday, November 23, 2026 9:12 AM<br>\n"
              "<b>To:</b> Bob Rep &lt;bob@team.example&gt;<br>\n"
              "<b>Subject:</b> Pricing for 50 seats</font>\n<div>&nbsp;</div>\n</div>\n"
              "<div><p>Hi Bob,</p></div>\n</body></html>")
    email = received(markup, html=True)
    found = forwarded(email)
    assert found is not None
    assert (found.sender, found.subject) == (CARLA, "Pricing for 50 seats")
    assert found.intro == "[D-42] note: she wants a quote"


def test_a_forwarded_thread_gives_the_newest_message_the_rep_forwarded():
    body = ("note: the buyer, copying her boss\n\n---------- Forwarded message ---------\n"
            "From: Carla Prospect <carla@acme.example>\nDate: Mon, Nov 23, 2026 at 9:12 AM\n"
            "Subject: Re: Pricing\nTo: <bob@team.example>\n\nAnd 10 more seats?\n\n"
            "On Sun, Nov 22, 2026 at 8:00 PM Bob Rep <bob@team.example> wrote:\n> Happy to help.\n>\n"
            "> From: Dana Boss <dana@acme.example>\n> Date: Sun, Nov 22, 2026\n> Subject: Pricing\n"
            "> To: <bob@team.example>\n")
    found = forwarded(received(body))
    assert found.sender.email == "carla@acme.example"
    assert found.subject == "Re: Pricing"


def test_the_intro_carries_commands_for_the_new_lead_and_the_body_scan_stops_at_the_forward():
    email = received(CLIENTS["gmail"][0].replace("[D-42] note", "note"))
    found = forwarded(email)
    parsed = verbs.parse(email.subject, found.intro, default_deal=7)
    assert [(c.deal, c.verb, c.arg) for c in parsed.commands] == [(7, "note", "she wants a quote for 50 seats")]
    # The whole text gives the same commands: the forwarded block ends them.
    assert verbs.parse(email.subject, email.text, default_deal=7).commands == parsed.commands


@pytest.mark.parametrize("body", [
    "Hi, can we talk about pricing?\n\nCarla",
    "From: the team at Acme, greetings!\nWe would like a quote.",  # a From: line in prose
    "Thanks!\n\nFrom: Carla Prospect <carla@acme.example>\n\nNo date, subject or to lines.",
    # Outlook with an address-book name only: there is no address to make a lead from.
    "-----Original Message-----\nFrom: Carla Prospect\nSent: Monday, November 23, 2026 9:12 AM\n"
    "To: Bob Rep\nSubject: Pricing\n\nHi",
    "-----Original Message-----\nFrom: Carla Prospect <not-an-address>\nSent: Monday\nTo: Bob\nSubject: x\n",
    "",
])
def test_no_forwarded_block_with_an_address_is_none(body):
    assert forwarded(received(body or " ")) is None


def test_a_forward_as_attachment_is_not_handled_because_the_parser_drops_its_headers():
    """What inboxcrm.core.parse yields for message/rfc822: the original's text is in Email.text, its
    From is nowhere, so there is nothing to read the sender from (documented in forwards.py)."""
    original = EmailMessage()
    original["From"] = "Carla Prospect <carla@acme.example>"
    original["To"] = "bob@team.example"
    original["Subject"] = "Pricing for 50 seats"
    original["Date"] = "Mon, 23 Nov 2026 09:12:00 +0100"
    original.set_content(ORIGINAL)
    msg = EmailMessage()
    msg["From"] = "Bob Rep <bob@team.example>"
    msg["To"] = "crm@team.example"
    msg["Subject"] = "Fwd: Pricing for 50 seats"
    msg.set_content("note: she wants a quote")
    msg.add_attachment(original)
    email = parse(bytes(msg))
    assert "what would 50 seats cost" in email.text
    assert "carla@acme.example" not in email.text
    assert [a.content_type for a in email.attachments] == ["message/rfc822"]
    assert forwarded(email) is None


@pytest.mark.parametrize("subject, expected", [
    ("Fwd: Pricing", True), ("FW: Pricing", True), ("Fw: Re: Pricing", True), ("WG: Angebot", True),
    ("TR: Devis", True), ("RV: Precio", True), ("Fwd[2]: x", True), ("I: Preventivo", True), ("ENC: Preço", True),
    ("Re: Fwd: Pricing", False),  # a reply to a forward
    ("Pricing", False), ("Forward planning", False), ("AW: Angebot", False),
    ("VS: Tarjous", False),  # a reply in Finnish, a forward in Danish: not guessed
    ("", False),
])
def test_is_forward_reads_the_outermost_prefix(subject, expected):
    assert is_forward(subject) is expected


@pytest.mark.parametrize("value, address", [
    ("Carla Prospect <carla@acme.example>", CARLA),
    ("\"Prospect, Carla\" <carla@acme.example>", Address("carla@acme.example", "Prospect, Carla")),
    ("Carla Prospect [mailto:Carla@Acme.Example]", CARLA),
    ("Carla Prospect < carla@acme.example >", CARLA),
    ("carla@acme.example", Address("carla@acme.example")),
    ("<carla@acme.example>", Address("carla@acme.example")),
    ("*Carla Prospect* <carla@acme.example>", CARLA),
    ("Carla Prospect", None), ("Carla <carla@>", None), ("", None),
])
def test_sender_address(value, address):
    assert sender_address(value) == address


def test_a_huge_body_is_read_quickly():
    text = "Fw: " + "a" * 150_000 + "\nFrom: " + "b" * 150_000 + "\n" + "To: x\n" * 100_000
    started = time.perf_counter()
    assert forwarded(Email("m@x", "Fwd: x", Address("bob@team.example"), text=text)) is None
    assert time.perf_counter() - started < 2


LINES = st.sampled_from(["From: Carla <carla@acme.example>", "> From: x@y.example", "Von: a@b.example",
                         "Date: Mon", "Sent: today", "Subject: Pricing", "To: bob@team.example", "Cc: a@b.example",
                         "---------- Forwarded message ---------", "", "  continued", "Hi", "From: Carla"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(LINES, st.text(max_size=40)), max_size=15))
def test_any_text_never_raises_and_a_found_sender_was_written_in_it(lines):
    text = "\n".join(lines)
    found = forwarded(Email("m@x", "Fwd: x", Address("bob@team.example"), text=text))
    if found is not None:
        assert found.sender.email in text.lower()
        assert found.intro in text
