"""A large message is parsed from its skeleton: the same Email, at a fraction of the memory.

Users rely on two things here: a backfill with 24 MB messages stays within its memory budget,
and what such a message becomes (its sender, text, attachments' names and types, defects, its
classification) is exactly what it would be if it were parsed whole; only the attachments' sizes
are estimates. The property tests pad the fixtures and the real-world corpus with large
attachments and compare both ways of parsing.
"""
from __future__ import annotations

import base64
import email
import os
import re
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxcrm.core import parse as parse_module
from inboxcrm.core.parse import (
    SKELETON_FROM,
    STRIP_FROM,
    TEXT_PART_LIMIT,
    _Scanner,
    parse,
    skeleton,
)
from inboxcrm.values import Email

from .conftest import MAIL

CORPUS = Path(os.environ.get("INBOXCRM_CORPUS", Path(__file__).resolve().parents[2] / "shared/corpus/discourse"))
PAD_LINE = base64.b64encode(bytes(range(57)))  # 76 characters, as mail clients wrap base64
# mail-parser names an unnamed attachment with random letters; those cannot be compared
RANDOM_NAME = re.compile(r"^[A-Za-z0-9]{10,}\.(?:txt|rtf)$")


def base64_lines(megabytes: float, eol: bytes = b"\r\n") -> bytes:
    return (PAD_LINE + eol) * int(megabytes * 1024 * 1024 / (len(PAD_LINE) + len(eol)))


def both_ways(raw: bytes, monkeypatch) -> tuple[Email, Email]:
    """(parsed whole, parsed from the skeleton) of the same bytes."""
    monkeypatch.setattr(parse_module, "SKELETON_FROM", 1 << 40)
    whole = parse(raw)
    monkeypatch.setattr(parse_module, "SKELETON_FROM", 0)
    return whole, parse(raw)


def assert_same_apart_from_sizes(whole: Email, skeletal: Email) -> None:
    def named(e: Email) -> Email:
        return replace(e, attachments=tuple(
            replace(a, size=0, filename="(random)" if RANDOM_NAME.match(a.filename) else a.filename)
            for a in e.attachments))

    assert named(skeletal) == named(whole)
    for full, estimate in zip(whole.attachments, skeletal.attachments):
        assert abs(full.size - estimate.size) <= max(16, full.size // 50), (full, estimate)


def message(body: bytes, content_type: bytes = b'multipart/mixed; boundary="BB"', eol: bytes = b"\r\n") -> bytes:
    head = (b"From: Buyer <buyer@tenders.example>\nTo: sales@team.example\nSubject: Tender\n"
            b"Message-ID: <t1@tenders.example>\nDate: Mon, 02 Nov 2026 09:00:00 +0000\nMIME-Version: 1.0\n"
            b"Content-Type: " + content_type + b"\n\n")
    return (head + body).replace(b"\n", eol)


def attachment(name: str, megabytes: float = 1.5, kind: str = "application/pdf") -> bytes:
    return (f'Content-Type: {kind}; name="{name}"\nContent-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: base64\n\n").encode() + base64_lines(megabytes, b"\n")


TEXT = b"Content-Type: text/plain; charset=utf-8\n\nPlease quote for 40 pumps.\n-- \nBuyer\n"
STRUCTURES = {
    "attachment": b"--BB\n" + TEXT + b"--BB\n" + attachment("tender.pdf") + b"--BB--\n",
    "nested multiparts": (b"--BB\nContent-Type: multipart/alternative; boundary=\"AA\"\n\n--AA\n" + TEXT
                          + b"--AA\nContent-Type: text/html\n\n<p>Please <b>quote</b></p>\n--AA--\n--BB\n"
                          + attachment("a.pdf") + b"--BB\n" + attachment("b.png", 1.2, "image/png") + b"--BB--\n"),
    "forwarded message with its attachment": (
        b"--BB\n" + TEXT + b"--BB\nContent-Type: message/rfc822\n\n"
        b"From: Other <o@other.example>\nSubject: inner\nContent-Type: multipart/mixed; boundary=\"CC\"\n\n"
        b"--CC\nContent-Type: text/plain\n\nInner text\n--CC\n" + attachment("inner.pdf") + b"--CC--\n--BB--\n"),
    "attached .eml with a filename": (
        b"--BB\n" + TEXT + b'--BB\nContent-Type: message/rfc822; name="fw.eml"\n'
        b'Content-Disposition: attachment; filename="fw.eml"\n\n'
        b"From: Other <o@other.example>\nSubject: inner\nContent-Type: multipart/mixed; boundary=\"CC\"\n\n"
        b"--CC\nContent-Type: text/plain\n\nInner text\n--CC\n" + attachment("inner.pdf") + b"--CC--\n--BB--\n"),
    "missing final boundary": b"--BB\n" + TEXT + b"--BB\n" + attachment("cut.pdf"),
    "inner multipart never closed": (b"--BB\nContent-Type: multipart/related; boundary=\"RR\"\n\n--RR\n" + TEXT
                                     + b"--RR\n" + attachment("img.png", 1.1, "image/png") + b"--BB\n"
                                     + attachment("after.pdf") + b"--BB--\n"),
    "boundary-like lines in quoted text": (
        b"--BB\nContent-Type: text/plain\n\n> --BB\n --BB\n--BBX\n--BB-- trailing words\nquoted above\n--BB\n"
        + attachment("q.pdf") + b"--BB--\n"),
    "preamble, epilogue and repeated boundaries": (
        b"This is a multi-part message in MIME format.\n--BB\n--BB\n" + TEXT + b"--BB\n" + attachment("p.pdf")
        + b"--BB--\nepilogue text\n"),
    "quoted-printable and 7bit files": (
        b"--BB\n" + TEXT + b'--BB\nContent-Type: application/octet-stream; name="q.bin"\n'
        b"Content-Transfer-Encoding: quoted-printable\n\n" + b"caf=C3=A9 and more text for the file=\n" * 40000
        + b'--BB\nContent-Type: text/csv; name="list.csv"\nContent-Transfer-Encoding: 7bit\n\n'
        + b"name,amount\nacme,100\n" * 70000 + b"--BB--\n"),
    "headers without a blank line before the body": (
        b"--BB\n" + TEXT + b'--BB\nContent-Type: application/pdf; name="x.pdf"\nContent-Transfer-Encoding: base64\n'
        + base64_lines(1.2, b"\n") + b"--BB--\n"),
    "digest of messages": (
        b"--BB\n\nFrom: First <f@lists.example>\nSubject: one\n\nFirst digest entry\n--BB\n\n"
        b"From: Second <s@lists.example>\nSubject: two\nContent-Type: multipart/mixed; boundary=\"DD\"\n\n"
        b"--DD\nContent-Type: text/plain\n\nSecond entry\n--DD\n" + attachment("d.pdf") + b"--DD--\n--BB--\n"),
    "html only with an image": (b"--BB\nContent-Type: text/html; charset=utf-8\n\n<div>Quote <br>40 pumps</div>\n"
                                b"--BB\n" + attachment("logo.png", 1.1, "image/png") + b"--BB--\n"),
}


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("name", STRUCTURES)
def test_the_skeleton_gives_the_same_email(name, eol, monkeypatch):
    content_type = b'multipart/digest; boundary="BB"' if name.startswith("digest") else b'multipart/mixed; boundary="BB"'
    raw = message(STRUCTURES[name], content_type, eol)
    found = skeleton(raw)
    assert found is not None, "structure not understood"
    assert len(found[0]) < 64 * 1024 < len(raw)
    whole, skeletal = both_ways(raw, monkeypatch)
    assert_same_apart_from_sizes(whole, skeletal)
    assert whole.attachments and whole.text


def test_what_the_structures_yield():
    """The table above is read the way a person would read these messages."""
    def parsed(name: str) -> Email:
        return parse(message(STRUCTURES[name]))

    assert parsed("attachment").text.startswith("Please quote for 40 pumps.")
    assert [a.filename for a in parsed("nested multiparts").attachments] == ["a.pdf", "b.png"]
    assert "Inner text" in parsed("forwarded message with its attachment").text
    assert "--BB-- trailing words" in parsed("boundary-like lines in quoted text").text
    assert [a.filename for a in parsed("missing final boundary").attachments] == ["cut.pdf"]
    assert parsed("html only with an image").text == "Quote\n40 pumps"


@pytest.mark.parametrize("raw", [
    message(b"--BB\r" + TEXT + b"--BB\n" + attachment("cr.pdf") + b"--BB--\n"),  # a bare CR ends a line too
    message(b"--BB\nContent-Type: multipart/alternative; boundary=\"BBB\"\n\n--BBB\n" + TEXT + b"--BBB--\n--BB\n"
            + attachment("p.pdf") + b"--BB--\n"),  # a boundary that is a prefix of another
], ids=["bare CR", "prefix boundaries"])
def test_a_structure_not_understood_is_parsed_whole(raw, monkeypatch):
    assert skeleton(raw) is None
    whole, fallback = both_ways(raw, monkeypatch)
    assert fallback == whole


def padded(raw: bytes, megabytes: float = 1.2) -> bytes:
    """The message with a large attachment added as the first part of each multipart, and each
    base64 file in it made larger: the same structure, now worth a skeleton."""
    eol = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    tree = email.message_from_bytes(raw)
    for part in tree.walk():
        boundary = part.get_boundary() if part.is_multipart() else None
        if boundary:
            separator = re.compile(rb"^--" + re.escape(boundary.encode("ascii", "surrogateescape")) + rb"[ \t]*\r?\n",
                                   re.M)
            first = separator.search(raw)
            if first:
                added = (b'Content-Type: application/octet-stream; name="pad.bin"' + eol
                         + b"Content-Transfer-Encoding: base64" + eol + eol + base64_lines(megabytes, eol) + first.group())
                raw = raw[:first.end()] + added + raw[first.end():]
        elif (str(part.get("content-transfer-encoding", "")).strip().lower() == "base64"
              and part.get_content_maintype() not in ("text", "multipart", "message")):
            lines = str(part.get_payload()).split("\n")
            line = lines[0].rstrip("\r").encode("ascii", "surrogateescape") if len(lines) > 1 else b""
            if len(line) >= 40 and len(line) % 4 == 0:
                raw = raw.replace(line + eol, line + eol + base64_lines(megabytes, eol), 1)
    return raw


_CONTENT_HEADER = re.compile(rb"^content-(?:type|transfer-encoding|disposition)[ \t]*:.*(?:\r?\n[ \t].*)*\r?\n",
                             re.I | re.M)


def wrapped(raw: bytes) -> bytes:
    """A single-part message as the first part of a multipart/mixed, so that it can be padded."""
    end = re.search(rb"\r?\n\r?\n", raw)
    if end is None or email.message_from_bytes(raw).is_multipart():
        return raw
    eol = end.group()[:len(end.group()) // 2]
    head = raw[:end.start() + len(eol)]
    part = b"".join(_CONTENT_HEADER.findall(head))
    return (_CONTENT_HEADER.sub(b"", head) + b'Content-Type: multipart/mixed; boundary="inboxcrm-test-wrap"' + eol
            + eol + b"--inboxcrm-test-wrap" + eol + part + eol + raw[end.end():] + eol
            + b"--inboxcrm-test-wrap--" + eol)


def corpus_messages() -> list[Path]:
    fixtures = sorted(MAIL.rglob("*.eml"))
    return fixtures + (sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else [])


def test_padded_fixtures_and_corpus_give_the_same_email(monkeypatch):
    from inboxcrm.errors import ParseError

    compared = skeletal_count = 0
    for path in corpus_messages():
        raw = padded(wrapped(path.read_bytes()))
        if len(raw) <= SKELETON_FROM:
            continue  # no multipart and no file to pad: parsed whole either way
        try:
            whole, skeletal = both_ways(raw, monkeypatch)
        except ParseError as whole_error:
            with pytest.raises(ParseError) as skeletal_error:
                parse(raw)
            assert skeletal_error.value.reason == whole_error.reason, path.name
            continue
        assert_same_apart_from_sizes(whole, skeletal)
        compared += 1
        found = skeleton(raw)
        skeletal_count += found is not None and len(found[0]) < len(raw) // 4
    assert compared >= len(corpus_messages()) * 0.8
    assert skeletal_count >= compared * 0.9  # the property is not met by falling back


def test_parsing_a_24_mb_message_costs_little_memory():
    raw = message(b"--BB\n" + TEXT + b"--BB\n" + attachment("tender.pdf", 24) + b"--BB--\n")
    tracemalloc.start()
    try:
        email_ = parse(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak / 1e6:.1f} MB allocated to parse a {len(raw) / 1e6:.0f} MB message"
    (pdf,) = email_.attachments
    file_size = base64_lines(24, b"\n").count(b"\n") * 57
    assert pdf.filename == "tender.pdf" and abs(pdf.size - file_size) < file_size * 0.03  # as parsed whole


def test_a_huge_text_part_is_read_up_to_its_limit():
    """Commands, forms and digests read the start of the text; a 3 MB body is cut, not lost."""
    line = b"Line of a very long report, repeated.\n"
    raw = message(b"Please call me back.\n" + line * (3 * 1024 * 1024 // len(line)), b"text/plain")
    email_ = parse(raw)
    assert email_.text.startswith("Please call me back.")
    assert TEXT_PART_LIMIT - len(line) <= len(email_.text.encode()) <= TEXT_PART_LIMIT
    assert email_.size == len(raw)


def test_small_parts_and_ordinary_mail_are_untouched():
    raw = message(b"--BB\n" + TEXT + b"--BB\n" + attachment("small.pdf", STRIP_FROM / 2 / 1024 / 1024) + b"--BB--\n")
    text, stripped = skeleton(raw)
    assert text == raw and stripped == {}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"--BB", b"--BB--", b"--BBX", b"--AA", b" --BB", b"x--BB", b"--BB \r", b"--BB--\t",
                                 b"text", b"", b"-", b"--", b"--B", b"\r"]), max_size=12),
       st.lists(st.sampled_from([b"BB", b"AA"]), min_size=1, max_size=2, unique=True),
       st.integers(min_value=0, max_value=80))
def test_the_next_boundary_is_the_one_the_boundary_pattern_finds(lines, boundaries, start):
    """The skeleton skips to lines starting with "--" instead of searching every position; it
    must find exactly the line the boundary pattern would (else parts are cut in the wrong place)."""
    raw = b"\n".join(lines)
    scanner = _Scanner(raw)
    scanner.boundaries = boundaries
    scanner.compile()
    start = min(start, len(raw))
    expected = scanner.pattern.search(raw, start)
    assert scanner.next_boundary(start) == (expected.start() if expected else len(raw))
