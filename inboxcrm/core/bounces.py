"""Who a delivery failure names: the failed recipients of a bounce, read from its raw bytes.

A bounce is written by whoever sends it, so this reads hostile input: the bytes are cut at
``MAX_BYTES`` (the report comes before the returned message, which is what makes a bounce big),
at most ``MAX_PARTS`` MIME parts are looked at, iteratively (no recursion a nested message
could exhaust), at most ``MAX_RECIPIENTS`` recipients are returned, and nothing it meets makes
it raise: what it cannot read it does not report. The standard library's parser reads the
MIME structure (``compat32``: it records defects instead of raising on them).

The standard form is RFC 3464's ``multipart/report; report-type=delivery-status``, with one
block of fields per recipient (Final-Recipient, Original-Recipient, Action, Status,
Diagnostic-Code). Without one, three plain-text forms that the big mail servers send are read,
each only from the text of the message itself and only when its own fixed wording says the
failure is permanent: Exim's ``X-Failed-Recipients`` header, qmail's "This is a permanent error;
I've given up", and Postfix's "The mail system" notice with a 5xx reply. Anything else (a
"delivery delayed" warning, a notice in another language, a vendor's HTML) names nobody:
missing a bounce costs a rep a day, a wrong one marks a person who reads their mail.
"""
from __future__ import annotations

import binascii
import quopri
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from inboxcrm.core.addresses import normalize

MAX_BYTES = 1024 * 1024
MAX_PARTS = 64
MAX_RECIPIENTS = 50
MAX_TEXT = 64 * 1024  # of one text part: the notices put the failure at the top
REASON_CHARS = 500  # ContactAddress.bounce_reason's size

_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_5XX = re.compile(r"(?<!\d)5\d\d(?!\d)")
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_ENCODED = {"base64": binascii.a2b_base64, "quoted-printable": quopri.decodestring}


@dataclass(frozen=True)
class Recipient:
    """One recipient a delivery report speaks of."""

    address: str  # the address as the sender wrote it (Original-Recipient), else Final-Recipient
    final: str  # where the last server tried to deliver (an alias or forward may differ)
    action: str  # failed | delayed | delivered | relayed | expanded (lower-case), "failed" in the text forms
    status: str  # "5.1.1", or "" when none was given
    diagnostic: str  # what the receiving server said, one line
    form: str  # "dsn", "exim", "qmail" or "postfix": which form it was read from

    @property
    def permanent(self) -> bool:
        """Given up for good: only these mark an address. A 4.x.x status is a mailbox that was
        full or a server that was down, however the report words its action."""
        return self.action == "failed" and self.status.startswith("5")

    @property
    def candidates(self) -> tuple[str, ...]:
        """The addresses it may be known by, the one the sender wrote first."""
        return tuple(dict.fromkeys(a for a in (self.address, self.final) if a))

    @property
    def reason(self) -> str:
        """"5.1.1 unknown user: "anna"": the status and what the server said, sized for the record."""
        return " ".join(filter(None, (self.status, self.diagnostic)))[:REASON_CHARS]


@dataclass(frozen=True)
class Report:
    form: str  # the form the recipients were read from, "" when the message names none
    recipients: tuple[Recipient, ...] = ()

    @property
    def failed(self) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.permanent)


NOTHING = Report("")


def read_bounce(data: bytes) -> Report:
    """The recipients a bounce reports on; ``NOTHING`` when ``data`` is no bounce we can read."""
    try:
        message = message_from_bytes(bytes(data[:MAX_BYTES]), policy=compat32)
        parts = _parts(message)
        for part in parts:
            if part.get_content_type() in _DSN_TYPES:
                recipients = _dsn_recipients(part)
                if recipients:
                    return Report("dsn", recipients)
        if any(p.get_content_type() in _DSN_TYPES for p in parts):
            return NOTHING  # a standard report that names nobody: its text is not read instead
        text = _first_text(parts)
        for form, reader in (("exim", _exim), ("qmail", _qmail), ("postfix", _postfix)):
            recipients = reader(message, text)
            if recipients:
                return Report(form, recipients)
    except Exception:  # noqa: BLE001 - hostile bytes: a parser bug must not stop the intake
        return NOTHING
    return NOTHING


# -- the MIME structure ------------------------------------------------------------------------

def _parts(message: Message) -> list[Message]:
    """The first ``MAX_PARTS`` parts in document order, without descending into a returned
    message (its parts are the original mail, not the report)."""
    found: list[Message] = []
    stack = [message]
    while stack and len(found) < MAX_PARTS:
        part = stack.pop()
        found.append(part)
        if part.get_content_maintype() == "multipart":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed([p for p in payload[:MAX_PARTS] if isinstance(p, Message)]))
    return found


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = part.get_payload()
        return payload[:MAX_TEXT] if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[:MAX_TEXT].decode(charset, errors="replace")
    except LookupError:  # a charset nobody has heard of
        return payload[:MAX_TEXT].decode("utf-8", errors="replace")


def _first_text(parts: list[Message]) -> str:
    """The notice a person would read: the first text/plain part outside any returned message."""
    return next((_text_of(p) for p in parts if p.get_content_type() == "text/plain"), "")


# -- RFC 3464 ----------------------------------------------------------------------------------

def _field_blocks(part: Message) -> list[list[tuple[str, str]]]:
    """The report's blocks of fields: the standard library splits message/delivery-status into
    them; a report it left as text (another encoding, the global form of RFC 6533) is split here."""
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if isinstance(payload, list) and encoding not in _ENCODED:
        return [[(str(k), str(v)) for k, v in block.items()] for block in payload[:MAX_RECIPIENTS + 1]
                if isinstance(block, Message)]
    if isinstance(payload, list):  # split into "blocks" before it was decoded: put back together, decode
        text = _ENCODED[encoding]("".join(b.as_string() for b in payload[:MAX_PARTS] if isinstance(b, Message))
                                  [:MAX_BYTES].encode("ascii", "replace")).decode("utf-8", "replace")
    else:
        text = _text_of(part)
    blocks: list[list[tuple[str, str]]] = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text[:MAX_TEXT])[:MAX_RECIPIENTS + 1]:
        fields: list[tuple[str, str]] = []
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and fields:
                fields[-1] = (fields[-1][0], f"{fields[-1][1]} {line.strip()}")
            elif ":" in line:
                name, _, value = line.partition(":")
                fields.append((name.strip(), value.strip()))
        if fields:
            blocks.append(fields)
    return blocks


def _typed_address(value: str) -> str:
    """"rfc822; anna@example.com" -> the address in its stored form, "" when not one."""
    kind, sep, address = value.partition(";")
    if not sep:
        kind, address = "rfc822", value
    if kind.strip().lower() not in ("rfc822", "utf-8"):
        return ""  # an X.400 or other non-Internet address
    return normalize(address.strip().strip("<>").strip()) or ""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:REASON_CHARS]


def _status(value: str) -> str:
    found = _STATUS.match(value or "")
    return ".".join(found.groups()) if found else ""


def _dsn_recipients(part: Message) -> tuple[Recipient, ...]:
    recipients: list[Recipient] = []
    for block in _field_blocks(part):
        fields = {name.lower(): value for name, value in block}  # one per block; a repeat: the last
        final = _typed_address(fields.get("final-recipient", ""))
        original = _typed_address(fields.get("original-recipient", ""))
        if not (final or original):
            continue  # the per-message block (Reporting-MTA, Arrival-Date), or an unreadable one
        diagnostic = fields.get("diagnostic-code", "")
        kind, sep, said = diagnostic.partition(";")
        recipients.append(Recipient(original or final, final, fields.get("action", "").strip().lower(),
                                    _status(fields.get("status", "")), _one_line(said if sep else diagnostic),
                                    "dsn"))
        if len(recipients) == MAX_RECIPIENTS:
            break
    return tuple(recipients)


# -- the plain-text forms ----------------------------------------------------------------------

def _status_in(text: str, fallback: str = "") -> str:
    found = _STATUS_IN_TEXT.search(text)
    return ".".join(found.groups()) if found else fallback


def _failed(address: str, diagnostic: str, form: str) -> Recipient | None:
    """A recipient a text notice calls permanently failed; its status from the server's words,
    else 5.0.0 (the notice's own wording said permanent)."""
    stored = normalize(address.strip().strip("<>"))
    if not stored:
        return None
    said = _one_line(diagnostic)
    return Recipient(stored, stored, "failed", _status_in(said, "5.0.0"), said, form)


def _exim(message: Message, text: str) -> tuple[Recipient, ...]:
    """Exim names the addresses that failed for good in X-Failed-Recipients (a delay warning has
    none); what each server said follows the address, indented, in the text."""
    header = " ".join(str(v) for v in (message.get_all("X-Failed-Recipients") or ()))[:8192]
    if not header:
        return ()
    found = []
    for address in re.split(r"[,\s]+", header)[:MAX_RECIPIENTS]:
        block = re.search(rf"^[ \t]+{re.escape(address)}\s*\n((?:[ \t]+\S.*\n?){{0,6}})", text, re.M | re.I)
        recipient = _failed(address, block.group(1) if block else "", "exim")
        if recipient:
            found.append(recipient)
    return tuple(found)


_QMAIL = re.compile(r"This is a permanent error; I've given up", re.I)


def _qmail(message: Message, text: str) -> tuple[Recipient, ...]:
    """qmail: "<anna@example.com>:" on a line, then what the server said, up to a blank line;
    only in its permanent-failure notice, and only above the copy of the message."""
    if not _QMAIL.search(text):
        return ()
    text = text.split("--- Below this line is a copy of the message.", 1)[0]
    found = []
    for address, said in re.findall(r"^<([^<>\s]{3,320})>:[ \t]*\n((?:.+\n?){0,6})", text, re.M)[:MAX_RECIPIENTS]:
        recipient = _failed(address, said, "qmail")
        if recipient:
            found.append(recipient)
    return tuple(found)


def _postfix(message: Message, text: str) -> tuple[Recipient, ...]:
    """Postfix's text notice: "The mail system" on a line, then "<anna@example.com>: ..." per
    recipient; a recipient counts only with a 5xx reply or a 5.x.x status (its delay warnings
    carry 4xx)."""
    head, sep, body = text.partition("The mail system")
    if not sep or len(head) > 4096:
        return ()
    found = []
    for address, said in re.findall(r"^<([^<>\s]{3,320})>(?: \(expanded from <[^<>\s]*>\))?:[ \t]*((?:.+\n?){1,6})",
                                    body, re.M)[:MAX_RECIPIENTS]:
        if not (_REPLY_5XX.search(said) or _status_in(said).startswith("5")):
            continue
        recipient = _failed(address, said, "postfix")
        if recipient:
            found.append(recipient)
    return tuple(found)
