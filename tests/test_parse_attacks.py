"""Hostile and odd headers: an address comes only from an addr-spec, names and subjects stay
readable text, and no address but the sender's becomes the sender or a lead."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from inboxcrm.core.addresses import normalize
from inboxcrm.core.parse import _body_only, header_summary, identify, parse, read_headers
from inboxcrm.errors import ParseError
from inboxcrm.store.models import ContactAddress, Message
from inboxcrm.values import NULL_SENDER

from .conftest import mail
from .test_pipeline import CRM


def message(*headers: bytes, body: bytes = b"Hello, we would like a quote.\n") -> bytes:
    """A message from the given header lines (From first), to the capture address."""
    mid = hashlib.sha256(b"".join(headers)).hexdigest()[:16].encode()
    return b"\r\n".join((*headers, b"To: sales@acme.example", b"Date: Mon, 09 Nov 2026 09:00:00 +0000",
                         b"Message-ID: <attack-" + mid + b"@evil.example>", b"", body))


@dataclass(frozen=True)
class Attack:
    name: str
    raw: bytes
    sender: str  # the addr-spec, as written
    display: str  # what the sender's name must read
    subject: str = ""


ATTACKS = [
    Attack("encoded display name carrying an address",
           message(b"From: =?utf-8?q?Support_=3Calice=40team=2Eexample=3E?= <attacker@evil.example>"),
           "attacker@evil.example", "Support <alice@team.example>"),
    Attack("encoded word inside quotes carrying an address",
           message(b'From: "=?utf-8?q?Alice_=3Calice=40acme=2Eexample=3E?=" <attacker@evil.example>'),
           "attacker@evil.example", "Alice <alice@acme.example>"),
    Attack("literal angle brackets inside an encoded word",
           message(b"From: =?utf-8?q?<alice@team.example>?= <attacker@evil.example>"),
           "attacker@evil.example", "<alice@team.example>"),
    Attack("CR/LF in an encoded word planting a To and a Cc",
           message(b"From: =?utf-8?q?Evil=0D=0ATo:_victim@third.example=0D=0ACc:_=3Cv2@third.example=3E?= "
                   b"<attacker@evil.example>"),
           "attacker@evil.example", "Evil To: victim@third.example Cc: <v2@third.example>"),
    Attack("CR/LF in an encoded word planting a second From",
           message(b"From: =?utf-8?q?=0D=0AFrom:_boss@acme.example?= <attacker@evil.example>"),
           "attacker@evil.example", "From: boss@acme.example"),
    Attack("an address as the display name",
           message(b"From: alice@acme.example <attacker@evil.example>"),
           "attacker@evil.example", "alice@acme.example"),
    Attack("Outlook's quoted Last, First",
           message('From: "Müller, Jürgen" <j.mueller@bau.example>'.encode()),
           "j.mueller@bau.example", "Müller, Jürgen"),
    Attack("Last, First unquoted",
           message('From: Müller, Jürgen <j.mueller@bau.example>'.encode()),
           "j.mueller@bau.example", "Müller, Jürgen"),
    Attack("square brackets in the name",
           message('From: Müller [Sales] <m@bau.example>'.encode()),
           "m@bau.example", "Müller [Sales]"),
    Attack("RFC 2047 Latin-1 name",
           message(b"From: =?iso-8859-1?q?J=FCrgen_M=FCller?= <j@bau.example>"),
           "j@bau.example", "Jürgen Müller"),
    Attack("raw Latin-1 (8-bit) name and subject",
           message(b'From: "M\xfcller, J\xfcrgen" <j@bau.example>', b"Subject: Gr\xfc\xdfe aus K\xf6ln"),
           "j@bau.example", "Müller, Jürgen", "Grüße aus Köln"),
    Attack("raw UTF-8 name and subject",
           message("From: Zoë Ångström <zoe@bau.example>".encode(), "Subject: Angebot für Bürostühle ✓".encode()),
           "zoe@bau.example", "Zoë Ångström", "Angebot für Bürostühle ✓"),
    Attack("terminal escapes, NUL and bidi overrides in name and subject",
           message(b"From: =?utf-8?q?Eve=1B[2J=00=E2=80=AEevil?= <eve@evil.example>",
                   b"Subject: =?utf-8?q?hi=1B]0;owned=07_there=0D=0Aagain?="),
           "eve@evil.example", "Eve [2J evil", "hi ]0;owned there again"),
    Attack("IDN domain in UTF-8", message("From: Bau <info@müller-bau.example>".encode()),
           "info@müller-bau.example", "Bau"),
    Attack("IDN domain in punycode", message(b"From: Bau <info@xn--mller-bau-q9a.example>"),
           "info@xn--mller-bau-q9a.example", "Bau"),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_sender_is_the_addr_spec_and_the_name_is_only_a_name(attack):
    email = parse(attack.raw)
    assert email.from_.email == normalize(attack.sender)
    assert email.from_.name == attack.display
    assert [a.email for a in email.recipients] == ["sales@acme.example"]
    assert email.subject == attack.subject
    assert not any(ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 or ch in "\u202e\u2066" for ch in
                   email.from_.name + email.subject)


AMBIGUOUS = [
    (message(b"From: alice@acme.example", b"From: attacker@evil.example"), "several-senders"),
    (message(b"From: attacker@evil.example", b"From: alice@acme.example"), "several-senders"),
    (message(b"From: alice@acme.example, attacker@evil.example"), "several-senders"),
    (message(b"From: Alice <alice@acme.example> and <attacker@evil.example>"), "no-sender"),
    (message(b"From: =?utf-8?q?=3Calice=40acme=2Eexample=3E?="), "no-sender"),  # an address only in a name
    (mail("parse-from-without-address.eml"), "no-sender"),
]


@pytest.mark.parametrize("raw, reason", AMBIGUOUS)
def test_an_ambiguous_or_missing_sender_is_quarantined_not_guessed(raw, reason):
    with pytest.raises(ParseError) as caught:
        parse(raw)
    assert caught.value.reason == reason
    assert "From" in caught.value.detail


def test_recipients_come_from_addr_specs_only():
    raw = message(b"From: buyer@northwind.example",
                  b"Cc: =?utf-8?q?=3Cboss=40acme=2Eexample=3E?= <carol@northwind.example>, "
                  b"M\xfcller [Einkauf] <einkauf@bau.example>, broken@, <>")
    assert [(a.email, a.name) for a in parse(raw).cc] == [
        ("carol@northwind.example", "<boss@acme.example>"), ("einkauf@bau.example", "Müller [Einkauf]")]


def test_a_null_sender_is_the_null_sender_not_a_person():
    email = parse(mail("classify-null-sender.eml"))
    assert email.from_ == NULL_SENDER
    assert parse(mail("classify-mailer-daemon-bare.eml")).from_ == NULL_SENDER


def test_a_blank_line_before_the_headers_is_skipped_and_identify_agrees_with_the_parser():
    raw = mail("parse-blank-line-first.eml")
    email = parse(raw)
    assert (email.from_.email, email.subject) == ("lena@northwind.example", "Exported with a blank line first")
    assert identify(raw) == ("blank-first-1@northwind.example", False)  # the first of two Message-IDs
    assert email.message_id == identify(raw)[0]
    assert email.references == ("thread-root-1@acme.example", "thread-next-2@acme.example")  # folded
    assert email.text == "The exporter put an empty line before the headers."
    assert header_summary(raw)[:2] == ("Exported with a blank line first", "Lena Berg <lena@northwind.example>")


@pytest.mark.parametrize("raw", [
    b"\x00\xff" * 50,
    b"From: <<<>>>\r\n\r\n",
    b"From: " + b"(" * 5000 + b"\r\n\r\nx",
    b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
    b"From: a@b.example\r\nContent-Type: ;;;=\"\r\n\r\nx",
    b"From: =?x-unknown?q?abc?= <a@b.example>\r\nSubject: =?utf-8?b?!!!?=\r\n\r\nx",
    b"From: \"unterminated <a@b.example>\r\nTo: @@@, \"\"<>\r\n\r\nx",
    b"From: a@b.example\r\nMessage-ID: <" + b"x" * 5000 + b"@y>\r\n\r\nx",
    b"\r\n" * 10,
])
def test_malformed_headers_are_a_parse_error_never_a_crash(raw):
    try:
        email = parse(raw)
    except ParseError as exc:
        assert exc.reason and exc.detail
    else:
        assert email.from_ is not None and email.message_id == identify(raw)[0]


def test_the_header_registry_reads_every_header_once_decoded():
    headers = read_headers(message(b"From: a@b.example", b"Subject: =?utf-8?q?caf=C3=A9?="))
    assert str(headers["Subject"]) == "café"


def test_no_attack_makes_a_lead_of_anyone_but_the_sender(factory):
    crm = CRM(factory)
    safe = [a for a in ATTACKS if "IDN" not in a.name]  # distinct senders, one lead each
    for attack in safe:
        crm.feed(attack.name, data=attack.raw)
    for number, (raw, reason) in enumerate(AMBIGUOUS):
        assert crm.feed(f"ambiguous-{number}", data=raw).reason == reason
    with factory() as session:
        leads = set(session.scalars(select(ContactAddress.address)))
        senders = set(session.scalars(select(Message.from_address).where(Message.status != "quarantined")))
    assert leads == senders == {normalize(a.sender) for a in safe}


def test_free_text_headers_read_the_same_without_the_registry():
    """parse skips the header registry for free-text headers without an encoded word; over every
    fixture (and the Discourse corpus where present) that shortcut must give the registry's text."""
    from email.headerregistry import UnstructuredHeader
    from pathlib import Path

    from inboxcrm.core.parse import _header_text, _registry, clean_text

    def unstructured(name: str) -> bool:
        return isinstance(_registry(name, "x"), UnstructuredHeader)

    files = sorted(Path(__file__).parent.joinpath("mail").glob("*.eml"))
    corpus = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "discourse"
    files += sorted(corpus.glob("*.eml"))
    compared = 0
    for path in files:
        for name, value in read_headers(path.read_bytes()).raw_items():
            if "=?" in value or not unstructured(name):
                continue
            compared += 1
            assert _header_text(name, value) == clean_text(str(_registry(name, value))), (path.name, name)
    assert compared > 300


def test_a_flood_of_header_names_is_read_in_one_pass_not_one_pass_per_name():
    """mail-parser gets the message without the headers that say nothing about the body, deleted
    name by name: each deletion scans every header, so 16,000 distinct names took 15 s. Beyond
    any real message's count the message goes whole (mail-parser reads it in one pass); a real
    message is trimmed, and both read the same."""
    def mail(names: int) -> bytes:
        return (b"From: Ann <ann@northwind.example>\r\nTo: sales@acme.example\r\nSubject: Pumps\r\n"
                + b"".join(b"X-Flood-%d: v\r\n" % i for i in range(names))
                + b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease quote for 40 pumps.\r\n")

    flood, ordinary = mail(16_000), mail(20)
    assert len(_body_only(flood)) == 16_004  # given whole
    assert _body_only(ordinary).keys() == ["Content-Type"]
    assert parse(flood).text == parse(ordinary).text == "Please quote for 40 pumps."
    assert parse(flood).from_ == parse(ordinary).from_
