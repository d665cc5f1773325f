"""Bytes -> Email. The only module that imports mail-parser.

Two entry points, on purpose: ``identify`` reads just enough (the Message-ID) with the
standard library to store the raw message before anything can go wrong, and ``parse`` does
the full interpretation, raising ParseError with a reason code for quarantine.
"""
from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime

import mailparser

from .addresses import normalize
from .errors import ParseError
from .html_text import html_to_text
from .values import Address, Attachment, Email

_MSGID = re.compile(r"<([^<>\s]+)>")
SYNTHETIC_DOMAIN = "inboxcrm.invalid"
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


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def identify(raw: bytes) -> tuple[str, bool]:
    """(message_id, synthetic) from the header block alone, with a regex: it runs before
    anything else may fail, so it must be cheap and never raise."""
    end = _HEADER_END.search(raw, 0, 262144)
    found = _MESSAGE_ID_HEADER.search(raw, 0, end.start() if end else min(len(raw), 262144))
    ids = normalize_ids(found.group(1).decode("ascii", "replace")) if found else ()
    if ids and len(ids[0]) <= 900:
        return ids[0], False
    return synthetic_message_id(raw), True


def decode_header_value(value: object) -> str:
    """RFC 2047 encoded words decoded; text that cannot be decoded is kept as written."""
    if value is None:
        return ""
    text = str(value)
    if "=?" not in text:
        return text.strip()
    try:
        return str(make_header(decode_header(text))).strip()
    except Exception:  # noqa: BLE001 - undecodable words are kept as written
        return text.strip()


def _addresses(values: list[str]) -> tuple[Address, ...]:
    result = []
    for name, email in getaddresses([decode_header_value(v) for v in values]):
        email = email.strip().strip("<>").lower()
        if "@" not in email or email.startswith("@") or email.endswith("@"):
            continue
        email = normalize(email) or email
        result.append(Address(email=email, name=name.strip().strip('"')))
    return tuple(result)


def parse_date(value: str | None) -> datetime | None:
    """A Date header as an aware UTC datetime, or None when absent or unparseable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
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
        headers = BytesHeaderParser().parsebytes(raw[:262144])
        subject = " ".join(decode_header_value(headers.get("Subject", "")).split())
        from_ = decode_header_value(headers.get("From", "") or headers.get("Sender", ""))
        return subject[:5000], from_[:320], parse_date(headers.get("Date"))
    except Exception:  # noqa: BLE001 - this runs for messages already known to be broken
        return "", "", None


def parse(raw: bytes, message_id: str | None = None) -> Email:
    """Interpret raw bytes. Raises ParseError(reason, detail) when they cannot be used."""
    if not raw.strip():
        raise ParseError("empty", "the message has no bytes")
    try:
        parsed = mailparser.parse_from_bytes(raw)
        msg = parsed.message
        headers = tuple((k.lower(), decode_header_value(v)) for k, v in msg.items())
        text = "\n".join(parsed.text_plain).strip()
        if not text and parsed.text_html:
            text = html_to_text("\n".join(parsed.text_html)).strip()
        attachments = tuple(
            Attachment(
                filename=decode_header_value(a.get("filename") or ""),
                content_type=a.get("mail_content_type") or "application/octet-stream",
                size=len(a.get("payload") or "") * 3 // 4 if a.get("binary") else len(a.get("payload") or ""),
            )
            for a in parsed.attachments
        )
        defects = tuple(sorted(parsed.defects_categories or ()))  # a set: sorted so results are stable
        content_type = msg.get_content_type()
        report_type = str(msg.get_param("report-type") or "").lower()
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - broken MIME must quarantine, not crash
        raise ParseError("unparseable", f"{type(exc).__name__}: {exc}") from exc

    def all_of(name: str) -> list[str]:
        return [v for k, v in headers if k == name]

    senders = _addresses(all_of("from")) or _addresses(all_of("sender"))
    if not senders:
        raise ParseError("no-sender", "no usable From or Sender address")
    if message_id is None:
        message_id = identify(raw)[0]
    return Email(
        message_id=message_id,
        subject=" ".join(decode_header_value(msg.get("Subject", "")).split()),
        from_=senders[0],
        to=_addresses(all_of("to")),
        cc=_addresses(all_of("cc")),
        reply_to=_addresses(all_of("reply-to")),
        date=parse_date(msg.get("Date")),
        in_reply_to=normalize_ids(msg.get("In-Reply-To")),
        references=normalize_ids(msg.get("References")),
        headers=headers,
        text=text,
        content_type=content_type,
        report_type=report_type,
        attachments=attachments,
        defects=defects,
        size=len(raw),
    )
