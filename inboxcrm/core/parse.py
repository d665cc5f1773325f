"""Bytes -> Email. The only module that imports mail-parser.

Two entry points, on purpose: ``identify`` reads just enough (the Message-ID) to store the raw
message before anything can go wrong, and ``parse`` does the full interpretation, raising
ParseError with a reason code for quarantine. Both read the same header block (``header_block``)
so they cannot disagree about which message this is.

Headers and addresses are read with the standard library's header registry
(``email.policy.default``), never by splitting decoded text: an address comes only from an
addr-spec, so an encoded display name ("Support <alice@team.example>") stays a name and a CR/LF
inside an encoded word cannot add a recipient or a sender. mail-parser reads only bodies and
attachments; a message over SKELETON_FROM (1 MB) is handed to it as its skeleton (``skeleton``),
so a 24 MB message costs kilobytes to parse instead of nine times its size.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from email import message_from_bytes, policy
from email.errors import InvalidHeaderDefect
from email.message import Message
from email.headerregistry import Address as RegistryAddress
from email.headerregistry import AddressHeader
from email.parser import BytesHeaderParser, Parser
from email.policy import compat32
from email.utils import parsedate_to_datetime

import mailparser

from inboxcrm.core.addresses import normalize
from inboxcrm.core.html_text import html_to_text
from inboxcrm.core.views import BIDI_CONTROLS
from inboxcrm.errors import ParseError
from inboxcrm.values import NULL_SENDER, Address, Attachment, Email

_MSGID = re.compile(r"<([^<>\s]+)>")
SYNTHETIC_DOMAIN = "inboxcrm.invalid"
HEADER_LIMIT = 262144  # a header block larger than this is hostile; the rest is read as body
# mail-parser logs a warning per odd message ("Email content 'mixed' not handled") with no
# message id; we keep what matters as Email.defects instead. Quiet it here, in the one module
# that uses it, so neither the CLI nor a parse worker prints it.
logging.getLogger("mailparser").setLevel(logging.ERROR)


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def synthetic_message_id(raw: bytes) -> str:
    """A stable id for mail without one, so re-importing the same bytes deduplicates."""
    return f"sha256-{content_hash(raw)[:40]}@{SYNTHETIC_DOMAIN}"


def normalize_ids(value: str | None) -> tuple[str, ...]:
    """All ``<id>`` tokens in a header, brackets stripped; bare ids tolerated."""
    if not value:
        return ()
    found = _MSGID.findall(value)
    if not found:
        found = [tok for tok in value.split() if "@" in tok]
    return tuple(dict.fromkeys(tok.strip() for tok in found if tok.strip()))


# -- the header block, shared by identify and parse -----------------------------------------------

_LEADING_BLANK = re.compile(rb"\A(?:[ \t]*\r?\n)+")
_HEADER_END = re.compile(rb"\r?\n[ \t]*\r?\n")
_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def message_start(raw: bytes) -> int:
    """Where the headers begin: some exporters put blank lines before them, which a parser
    would otherwise take for an empty header block followed by a body."""
    found = _LEADING_BLANK.match(raw)
    return found.end() if found else 0


def header_block(raw: bytes) -> bytes:
    """The header lines (without the blank line that ends them), at most HEADER_LIMIT bytes."""
    start = message_start(raw)
    end = _HEADER_END.search(raw, start, start + HEADER_LIMIT)
    return raw[start:end.start() if end else min(len(raw), start + HEADER_LIMIT)]


def identify(raw: bytes) -> tuple[str, bool]:
    """(message_id, synthetic) from the header block alone, with a regex: it runs before
    anything else may fail, so it must be cheap and never raise. The first Message-ID header
    counts (parse uses this very function, so a duplicate header cannot make them differ)."""
    found = _MESSAGE_ID_HEADER.search(header_block(raw))
    ids = normalize_ids(found.group(1).decode("ascii", "replace")) if found else ()
    if ids and len(ids[0]) <= 900:
        return ids[0], False
    return synthetic_message_id(raw), True


# -- text that people will read ----------------------------------------------------------------------



def clean_text(text: str) -> str:
    """One line of readable text: control characters (CR, LF, NUL, ESC, C1...) and bidi
    overrides become spaces, runs of whitespace one space."""
    cleaned = "".join(" " if unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS else ch for ch in text)
    return " ".join(cleaned.split())


def _decode_line(line: bytes) -> str:
    """A header line as text: UTF-8 when it is (RFC 6532 mail), else Windows-1252/Latin-1, the
    8-bit charset of old clients; never an error."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def read_headers(raw: bytes):
    """The header block as an ``email.message.EmailMessage`` on the default policy (the header
    registry), with 8-bit header bytes decoded line by line."""
    text = "\n".join(_decode_line(line) for line in header_block(raw).splitlines())
    return Parser(policy=policy.default).parsestr(text + "\n\n", headersonly=True)


def first_values(headers) -> dict[str, str]:
    """Lower-cased header name -> its first raw value: a duplicate header never overrides."""
    first: dict[str, str] = {}
    for key, value in headers.raw_items():
        first.setdefault(key.lower(), value)
    return first


def raw_values(headers, name: str) -> list[str]:
    """Every raw (undecoded) value of header ``name``: addresses are read from these, never
    from text whose encoded words were already decoded."""
    name = name.lower()
    return [value for key, value in headers.raw_items() if key.lower() == name]


def _registry(name: str, value: str):
    return policy.default.header_factory(name, value)


_CACHED_HEADER_CHARS = 4096  # longer values are read each time: hostile mail must not fill the cache


def _address_header(value: str):
    """An address header value as the registry reads it (all address headers read alike), once:
    a parse reads From, To and Cc twice (their mailboxes, and their text for the rules), and the
    registry is the costliest part of a parse after mail-parser (import_bench profile). A value
    the registry refuses raises each time, as it would uncached."""
    return _cached_address_header(value) if len(value) <= _CACHED_HEADER_CHARS else _registry("to", value)


@lru_cache(maxsize=256)  # at most 256 values of 4 KB: a bounded megabyte
def _cached_address_header(value: str):
    return _registry("to", value)


def decode_header_value(value: object) -> str:
    """RFC 2047 encoded words decoded, as readable text; never raises."""
    if value is None:
        return ""
    text = str(value)
    if "=?" not in text:
        return clean_text(text)
    try:
        return clean_text(str(_registry("x-unstructured", text)))
    except Exception:  # noqa: BLE001 - undecodable words are kept as written
        return clean_text(text)


def _not_addresses(name: str) -> bool:
    cls = policy.default.header_factory.registry.get(name.lower())
    return cls is None or not issubclass(cls, AddressHeader)


def _header_text(name: str, value: str) -> str:
    """A header's decoded value; an address header the registry refuses (a CR/LF inside an
    encoded word) is decoded as plain text, for rules that read header values. A header other than
    an address list without an encoded word is kept as written: free text reads the same with or
    without the registry (tests/test_parse_attacks.py checks it over the fixtures and the corpus),
    the registry rewrites dates and drops a folded Content-Type's parameters, and skipping it saves
    a quarter of a parse."""
    addresses = not _not_addresses(name)
    if "=?" not in value and not addresses:
        return clean_text(value)
    try:
        return clean_text(str(_address_header(value) if addresses else _registry(name, value)))
    except Exception:  # noqa: BLE001 - see decode_header_value
        return decode_header_value(value)


# -- addresses --------------------------------------------------------------------------------------

def _address(addr_spec: str, display_name: str) -> Address | None:
    """Our Address for an addr-spec the registry read, or None when it is no usable mailbox."""
    local, at, domain = addr_spec.rpartition("@")
    if not at or not local or not domain or any(unicodedata.category(ch) == "Cc" for ch in addr_spec):
        return None
    email = normalize(addr_spec)
    return Address(email=email, name=clean_text(display_name).strip('"')) if email else None


def _top_level(value: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """Split an address list on commas outside quotes, comments and angle brackets; each item
    with the spans of its top-level ``<...>``. Only for headers the registry read with defects."""
    items, spans, start, depth, quoted, angle, i = [], [], 0, 0, False, None, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"' and angle is None:
            quoted = True
        elif ch == "(" and angle is None:
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            pass
        elif ch == "<" and angle is None:
            angle = i
        elif ch == ">" and angle is not None:
            spans.append((angle - start, i + 1 - start))
            angle = None
        elif ch == "," and angle is None:
            items.append((value[start:i], spans))
            start, spans = i + 1, []
        i += 1
    items.append((value[start:], spans))
    return items


def _lenient(value: str) -> list[Address]:
    """Addresses of a header the registry found invalid (``Müller [Sales] <m@x>``,
    ``a@b <c@d>``): an item counts only when it ends in exactly one ``<addr-spec>``, which the
    registry must accept; the text before it is the display name. Outlook's unquoted
    ``Müller, Jürgen <j@x>`` splits at the comma: a part with no address and no "@" is the start
    of the next part's name. Anything else is dropped, so a malformed header yields fewer
    addresses, never someone else's."""
    found, name_start = [], []
    for item, spans in _top_level(value):
        if not spans and "@" not in item:
            name_start.append(item.strip())
            continue
        lead, name_start = name_start, []
        if len(spans) != 1 or item[spans[0][1]:].strip():
            continue
        begin, end = spans[0]
        try:
            parsed = RegistryAddress(addr_spec=item[begin + 1:end - 1].strip())
        except Exception:  # noqa: BLE001 - the registry refuses what is no addr-spec
            continue
        name = ", ".join(decode_header_value(_unquote(part)) for part in (*lead, item[:begin].strip()) if part)
        address = _address(parsed.addr_spec, name)
        if address is not None:
            found.append(address)
    return found


def _unquote(text: str) -> str:
    if len(text) > 1 and text.startswith('"') and text.endswith('"'):
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def read_addresses(value: str) -> list[Address]:
    """The mailboxes of one raw address header value, each from its addr-spec alone."""
    try:
        header = _address_header(value)
        strict = not any(isinstance(d, InvalidHeaderDefect) for d in header.defects)
        addresses = header.addresses if strict else ()
    except Exception:  # noqa: BLE001 - e.g. CR/LF in an encoded word: ValueError from the registry
        strict, addresses = False, ()
    if not strict:
        return _lenient(value)
    return [a for a in (_address(m.addr_spec, m.display_name) for m in addresses) if a is not None]


_DAEMON_WORD = re.compile(r"(?:mailer-daemon|postmaster)\b", re.I)


def _null_sender(from_values: list[str], return_path: str | None) -> bool:
    """A message with the null reverse-path written as its sender: ``From: <>`` or a bare
    ``MAILER-DAEMON`` with no domain, or no From at all under ``Return-Path: <>`` /
    ``<MAILER-DAEMON>``. Only delivery systems write these."""
    if any(v.strip() == "<>" or _DAEMON_WORD.match(v.strip()) and "@" not in v for v in from_values):
        return True
    path = (return_path or "").strip()
    return not from_values and (path.replace(" ", "") == "<>" or bool(_DAEMON_WORD.match(path.strip("<>"))))


def _sender(headers) -> Address:
    """The one author: From (or Sender when From has no mailbox). Several From headers or
    several mailboxes in From make the author ambiguous: quarantined rather than guessed."""
    from_values = raw_values(headers, "From")
    if len(from_values) > 1:
        raise ParseError("several-senders", f"{len(from_values)} From headers; RFC 5322 allows one")
    authors = read_addresses(from_values[0]) if from_values else []
    if len(authors) > 1:
        raise ParseError("several-senders", f"From names {len(authors)} mailboxes; only one can be the sender")
    if authors:
        return authors[0]
    senders = [a for v in raw_values(headers, "Sender") for a in read_addresses(v)]
    if len(senders) == 1:
        return senders[0]
    if _null_sender(from_values, first_values(headers).get("return-path")):
        return NULL_SENDER
    raise ParseError("no-sender", "no usable From or Sender address (a mailbox such as "
                                  "Name <person@example.com>)")


def _all_addresses(headers, name: str) -> tuple[Address, ...]:
    return tuple(a for v in raw_values(headers, name) for a in read_addresses(v))


# -- dates and the summary of a broken message ----------------------------------------------------

def parse_date(value: str | None) -> datetime | None:
    """A Date header as an aware UTC datetime, or None when absent or unparseable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def header_summary(raw: bytes) -> tuple[str, str, datetime | None]:
    """(subject, from, date) as far as the headers allow: what a person needs to recognise a
    quarantined message. Never raises."""
    try:
        headers = read_headers(raw)
        raw_items = first_values(headers)
        subject = decode_header_value(raw_items.get("subject", ""))
        from_ = decode_header_value(raw_items.get("from") or raw_items.get("sender") or "")
        return subject[:5000], from_[:320], parse_date(raw_items.get("date"))
    except Exception:  # noqa: BLE001 - this runs for messages already known to be broken
        return "", "", None


# -- the whole message ----------------------------------------------------------------------------

def _body(raw: bytes, start: int = 0) -> tuple[str, tuple[Attachment, ...], tuple[str, ...]]:
    """(text, attachments, defects) by mail-parser, of the message from offset ``start``:
    HTML-only mail turned into text. A message over SKELETON_FROM bytes is given to mail-parser
    as its skeleton (see ``skeleton``): decoding every attachment cost about nine times the
    message in memory, and nothing here reads attachments."""
    found = skeleton(raw, start) if len(raw) - start > SKELETON_FROM else None
    stripped: dict[str, StrippedPart] = {}
    if found is not None:
        data, stripped = found
    else:
        data = raw[start:]
    parsed = mailparser.MailParser(_body_only(data))
    del data
    text = "\n".join(parsed.text_plain).strip()
    if not text and parsed.text_html:
        text = html_to_text("\n".join(parsed.text_html)).strip()
    attachments = tuple(
        Attachment(
            filename=decode_header_value(a.get("filename") or ""),
            content_type=a.get("mail_content_type") or "application/octet-stream",
            size=_attachment_size(a, stripped),
        )
        for a in parsed.attachments
    )
    defects = tuple(sorted(parsed.defects_categories or ()))  # a set: sorted so results are stable
    return text, attachments, defects


_BODY_HEADERS = frozenset(("content-type", "content-transfer-encoding", "content-disposition", "content-id"))
_TRIM_HEADERS_UP_TO = 200  # each deletion scans every header: hostile mail must not make it quadratic


def _body_only(data: bytes) -> Message:
    """The message as mail-parser reads it (``message_from_bytes``), without the top-level
    headers that say nothing about the body. mail-parser reads a part only through these four
    headers, but reads every address and date header of the message too (a fifth of a small
    message's parse, import_bench profile), which ``parse`` does itself with the header registry.
    A message with more headers than any real one is given whole: mail-parser reads those in
    one pass, and deleting them name by name would take a pass per name."""
    message = message_from_bytes(data)
    if len(message) <= _TRIM_HEADERS_UP_TO:
        for name in {key.lower() for key in message.keys()} - _BODY_HEADERS:
            del message[name]
    return message


def _attachment_size(attachment: dict, stripped: dict[str, StrippedPart]) -> int:
    """Decoded size from mail-parser's payload (base64 for every file), or for a part whose
    body the skeleton left out, the estimate made from its encoded length."""
    payload = attachment.get("payload") or ""
    if not attachment.get("binary"):  # an attached multipart or message: its children as text
        return len(payload) + sum(stripped[m].encoded - len(m) for m in _MARKER.findall(payload) if m in stripped)
    key = payload.strip()
    if key not in stripped and len(payload) <= 64:  # a marker of a part that was not base64
        try:
            key = base64.b64decode(payload).decode("ascii").strip()
        except (ValueError, UnicodeDecodeError):
            pass
    return stripped[key].size if key in stripped else len(payload) * 3 // 4


# -- the skeleton of a large message ----------------------------------------------------------------
#
# A line scanner over the raw bytes that follows the MIME structure the way the standard
# library's feedparser does (which is what mail-parser runs): part headers end at the first line
# that is no header line, and a part ends at a line matching the boundary of any enclosing
# multipart. It copies headers, preambles, epilogues and boundary lines as they are, keeps the
# first TEXT_PART_LIMIT bytes of each text/plain and text/html part, and puts a marker in place of
# every other body. Whatever it does not understand (a bare CR, which the feedparser reads as a
# line end; boundaries that are prefixes of each other; absurd nesting) means no skeleton: the
# message is parsed whole, as before.

SKELETON_FROM = 1024 * 1024
TEXT_PART_LIMIT = 1024 * 1024
STRIP_FROM = 1024  # a smaller body is left in: nothing to gain, and its size stays exact
MAX_DEPTH = 32
_TEXT_BODY = ("text/plain", "text/html")
_STRIPPABLE = ("", "7bit", "8bit", "binary", "base64", "quoted-printable")
_MARKER = re.compile(r"inboxcrmStripped[0-9]{8}")  # base64 letters, 24 of them: valid base64 too
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")  # email.feedparser.headerRE
_BARE_CR = re.compile(rb"\r(?!\n)")


@dataclass(frozen=True)
class StrippedPart:
    """A body the skeleton left out: its decoded size as estimated (what mail-parser's payload
    length would have given) and its encoded length (what it adds to an attached container)."""

    size: int
    encoded: int


class _NotUnderstood(Exception):
    pass


def skeleton(raw: bytes, start: int = 0) -> tuple[bytes, dict[str, StrippedPart]] | None:
    """The message from ``start`` with its non-text bodies replaced by markers and its text parts
    cut at TEXT_PART_LIMIT, and the markers' parts; None when the structure is not understood.
    Costs little beyond its result: the raw bytes are searched in place, never split or copied."""
    if _BARE_CR.search(raw, start):
        return None
    try:
        return _Scanner(raw).run(start)
    except (_NotUnderstood, RecursionError, LookupError, ValueError):
        return None


class _Scanner:
    def __init__(self, raw: bytes):
        self.raw = raw
        self.pieces: list[bytes] = []
        self.stripped: dict[str, StrippedPart] = {}
        self.boundaries: list[bytes] = []  # of the open multiparts, outermost first
        self.digest: list[bool] = []  # whether each is a multipart/digest (parts default to message/rfc822)
        self.pattern: re.Pattern[bytes] | None = None

    def run(self, pos: int) -> tuple[bytes, dict[str, StrippedPart]]:
        digest_child = False
        while pos < len(self.raw):
            pos, body, headers = self.headers(pos, digest_child)
            digest_child = False
            if body is None:  # a boundary line ended the headers
                pos, digest_child = self.boundary(pos)
                continue
            if headers.get_content_maintype() == "message" and headers.get_content_type() != "message/delivery-status":
                continue  # an enclosed message: its headers follow
            boundary = headers.get_boundary() if headers.get_content_maintype() == "multipart" else None
            if boundary is not None:
                self.open(boundary.encode("ascii", "surrogateescape"), headers.get_content_subtype() == "digest")
                end = self.next_boundary(pos)
                self.keep(pos, end)  # the preamble
            else:
                end = self.next_boundary(pos)
                self.leaf(headers, pos, end)
            pos, digest_child = self.boundary(end)
        return b"".join(self.pieces), self.stripped

    def keep(self, start: int, end: int) -> None:
        if end > start:
            self.pieces.append(self.raw[start:end])

    def line_end(self, pos: int) -> int:
        found = self.raw.find(b"\n", pos)
        return len(self.raw) if found < 0 else found + 1

    def headers(self, pos: int, digest_child: bool):
        """(where the body starts, the body start or None if a boundary came first, the headers)."""
        start = pos
        while pos < len(self.raw):
            if self.pattern is not None and self.pattern.match(self.raw, pos):
                break
            if not _HEADER_LINE.match(self.raw, pos):
                break
            pos = self.line_end(pos)
            if pos - start > HEADER_LIMIT:
                raise _NotUnderstood("header block too large")
        block = self.raw[start:pos]
        headers = BytesHeaderParser(policy=compat32).parsebytes(block)
        if digest_child:
            headers.set_default_type("message/rfc822")
        self.keep(start, pos)
        at_boundary = pos >= len(self.raw) or (self.pattern is not None and self.pattern.match(self.raw, pos))
        if at_boundary:
            return pos, None, headers
        if self.raw[pos:pos + 1] in (b"\r", b"\n"):  # the blank line that ends the headers
            body = self.line_end(pos)
            self.keep(pos, body)
            return body, body, headers
        return pos, pos, headers  # no blank line: this line starts the body (a defect, as the parser sees it)

    def open(self, boundary: bytes, digest: bool) -> None:
        if len(self.boundaries) >= MAX_DEPTH:
            raise _NotUnderstood("nested too deep")
        if any(b.startswith(boundary) or boundary.startswith(b) for b in self.boundaries):
            raise _NotUnderstood("a boundary is a prefix of another")
        self.boundaries.append(boundary)
        self.digest.append(digest)
        self.compile()

    def close(self, level: int) -> None:
        del self.boundaries[level:], self.digest[level:]
        self.compile()

    def compile(self) -> None:
        # email.feedparser's boundaryre, for all the open multiparts at once
        alternatives = b"|".join(re.escape(b) for b in self.boundaries)
        self.pattern = (re.compile(rb"^--(" + alternatives + rb")(--)?[ \t]*\r?$", re.M)
                        if self.boundaries else None)

    def next_boundary(self, pos: int) -> int:
        """Where the next line matching an open boundary starts, or the end of the message: what
        ``self.pattern.search(raw, pos)`` finds. Only lines starting with "--" can match, and
        ``bytes.find`` skips to them; the pattern's own search tried every position of a megabyte
        attachment (11 of a large message's 15 ms, import_bench profile)."""
        raw = self.raw
        if self.pattern is None:
            return len(raw)
        if self.pattern.match(raw, pos):  # "^": only where a line starts
            return pos
        at = pos
        while (found := raw.find(b"\n--", at)) >= 0:
            if self.pattern.match(raw, found + 1):
                return found + 1
            at = found + 1
        return len(raw)

    def boundary(self, pos: int) -> tuple[int, bool]:
        """At a boundary line (or the end): closes what it ends; (where to go on, whether a part
        of a multipart/digest starts there)."""
        while pos < len(self.raw):
            found = self.pattern.match(self.raw, pos)
            level = self.boundaries.index(found.group(1))
            digest = self.digest[level]
            pos = self.line_end(pos)
            self.keep(found.start(), pos)
            if found.group(2):  # the close boundary: the rest up to an enclosing boundary is epilogue
                self.close(level)
                end = self.next_boundary(pos)
                self.keep(pos, end)
                pos = end
                continue
            self.close(level + 1)
            while pos < len(self.raw) and (more := self.pattern.match(self.raw, pos)) and more.group(1) == found.group(1):
                pos = self.line_end(pos)  # repeated boundary lines make no parts
                self.keep(more.start(), pos)
            return pos, digest
        return pos, False

    def leaf(self, headers, start: int, end: int) -> None:
        kind = headers.get_content_type()
        encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
        if kind in _TEXT_BODY and headers.get_content_disposition() != "attachment":
            self.keep_start(start, end)
        elif end - start < STRIP_FROM or encoding not in _STRIPPABLE or headers.get_content_maintype() in ("multipart", "message"):
            self.keep(start, end)  # small, or encoded in a way we do not estimate, or a multipart without boundary
        else:
            self.strip(start, end, encoding)

    def keep_start(self, start: int, end: int) -> None:
        """The first TEXT_PART_LIMIT bytes of a text body, cut after a line."""
        if end - start <= TEXT_PART_LIMIT:
            return self.keep(start, end)
        cut = self.raw.rfind(b"\n", start, start + TEXT_PART_LIMIT) + 1
        if cut > start:
            return self.keep(start, cut)
        self.pieces.append(self.raw[start:start + TEXT_PART_LIMIT] + b"\r\n")  # one long line

    def strip(self, start: int, end: int, encoding: str) -> None:
        eol = b"\r\n" if self.raw[end - 2:end] == b"\r\n" else b"\n"
        # the line end before a boundary belongs to the boundary, not to the payload
        payload = end - start - (len(eol) if end < len(self.raw) and self.raw[end - 1:end] == b"\n" else 0)
        if encoding == "base64":
            size = payload * 3 // 4
        else:
            decoded = payload
            if encoding == "quoted-printable":  # "=XX" is one byte, a soft line break "=\r\n" none
                decoded -= 2 * self.raw.count(b"=", start, end) + self.raw.count(b"=\r\n", start, end)
            size = -(-max(decoded, 0) // 3) * 3  # as mail-parser's re-encoding to base64 rounds it
        marker = f"inboxcrmStripped{len(self.stripped):08d}"
        self.stripped[marker] = StrippedPart(size, payload)
        self.pieces.append(marker.encode() + eol)


def _content_type(value: str | None) -> tuple[str, str]:
    """(content type, report-type parameter); text/plain when absent or unreadable (RFC 2045)."""
    try:
        header = _registry("content-type", value or "text/plain")
        return header.content_type, str(header.params.get("report-type") or "").lower()
    except Exception:  # noqa: BLE001 - a broken Content-Type is read as the default
        return "text/plain", ""


def parse(raw: bytes, message_id: str | None = None) -> Email:
    """Interpret raw bytes. Raises ParseError(reason, detail) when they cannot be used, and
    nothing else: a hostile or broken message is quarantined, never a crash."""
    if not raw or raw.isspace():  # not raw.strip(): that copies the whole message
        raise ParseError("empty", "the message has no bytes")
    try:
        return _parse(raw, message_id)
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - broken MIME must quarantine, not crash
        raise ParseError("unparseable", f"{type(exc).__name__}: {exc}") from exc


def _parse(raw: bytes, message_id: str | None) -> Email:
    headers = read_headers(raw)
    sender = _sender(headers)
    first = first_values(headers)
    text, attachments, defects = _body(raw, message_start(raw))
    content_type, report_type = _content_type(first.get("content-type"))
    return Email(
        message_id=message_id if message_id is not None else identify(raw)[0],
        subject=decode_header_value(first.get("subject", "")),
        from_=sender,
        to=_all_addresses(headers, "To"),
        cc=_all_addresses(headers, "Cc"),
        reply_to=_all_addresses(headers, "Reply-To"),
        date=parse_date(first.get("date")),
        in_reply_to=normalize_ids(first.get("in-reply-to")),
        references=normalize_ids(first.get("references")),
        headers=tuple((k.lower(), _header_text(k, v)) for k, v in headers.raw_items()),
        text=text,
        content_type=content_type,
        report_type=report_type,
        attachments=attachments,
        defects=defects,
        size=len(raw),
        original_from=next(iter(_all_addresses(headers, "X-Original-From")), None),
    )
