"""What forgetting a person means for a piece of text, JSON or mail, decided from values.

A person is found in free text in more ways than their address: their display name, the words of
it, the local part of each address, the Message-IDs of their mail (quoted in audit reasons such
as "new lead from message <...>"). ``Redactor`` holds all of them and answers two questions for
any value the database holds: does it name them, and what is it with every mention replaced.
Matching errs towards erasing: a term of four letters or more is found inside other words too
("Quimby" inside "Quimbyworks"), because a name left in a compound is still the name. Shorter
words are matched as whole words only, and a name word another contact or rep also carries is
not a term at all (the other "Zelda" keeps her name); the full name always is.

Only keyed hashes of an address are kept (``address_hash``), so later mail from it can be
recognised without the address being stored: the key lives in a file outside the database,
and without it a hash cannot be tested against a list of guessed addresses.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

PLACEHOLDER = "(forgotten)"
THEN = ("ignore", "new-lead")  # what later mail from a forgotten address does
FORGOTTEN_REASON = "forgotten"  # the reason code of a message ignored because its sender was forgotten
FORGOTTEN_DETAIL = "from an address erased on request; nothing of the message is kept"
SUBSTRING_LENGTH = 4  # terms this long are found inside other words too
MIN_WORD = 3  # shorter name words ("Li", "O") are not terms on their own; the full name still is
# Local parts that name a role, not a person: "info@" alone says nothing about who asked.
ROLE_LOCAL_PARTS = frozenset({"info", "sales", "contact", "hello", "office", "admin", "mail", "team", "support",
                              "billing", "accounts", "enquiries", "inquiries", "noreply", "no-reply"})
_ADDRESS_PURPOSE = b"inboxcrm forgotten address:"
_MESSAGE_ID_PURPOSE = b"inboxcrm forgotten message-id:"
_LOCATION_PURPOSE = b"inboxcrm forgotten location:"


def _mac(key: bytes, purpose: bytes, value: str) -> str:
    return hmac.new(key, purpose + value.encode("utf-8"), hashlib.sha256).hexdigest()


def address_hash(key: bytes, address: str) -> str:
    """64 hex digits; the address is compared in its normal form, lower case."""
    return _mac(key, _ADDRESS_PURPOSE, address.strip().lower())


def hashed_message_id(key: bytes, message_id: str) -> str:
    """What an erased message's Message-ID becomes: still unique, still the same for the same
    message (a copy arriving again is recognised), and no longer the id, which may embed the address."""
    return f"forgotten-{_mac(key, _MESSAGE_ID_PURPOSE, message_id.strip().lower())[:40]}@inboxcrm.invalid"


def hashed_location(key: bytes, location: str) -> str:
    """An erased copy's location: a file name can name the person, and the original location must
    not stay, or the same file imported again would collide with the erased copy."""
    return f"forgotten:{_mac(key, _LOCATION_PURPOSE, location)[:40]}"


@dataclass(frozen=True)
class Forgotten:
    """What one intake pass knows of forgotten addresses: the key and, per hash, what to do."""

    key: bytes = field(repr=False)
    then_by_hash: Mapping[str, str] = field(default_factory=dict, hash=False)

    def then_for(self, address: str | None) -> str | None:
        """"ignore" or "new-lead" for a forgotten address, None for any other."""
        return self.then_by_hash.get(address_hash(self.key, address)) if address else None

    def ignores(self, address: str | None) -> bool:
        return self.then_for(address) == "ignore"


def name_words(name: str) -> list[str]:
    return [w for w in re.split(r"[^\w'-]+", name.lower()) if w]


def terms(addresses: Iterable[str], name: str, shared_words: Iterable[str] = ()) -> tuple[str, ...]:
    """Everything that names the person, lower case, longest first (a longer mention is replaced
    whole before a part of it). ``shared_words``: name words other contacts or reps also carry."""
    shared = {w.lower() for w in shared_words}
    found: set[str] = set()
    for address in addresses:
        address = address.lower()
        found.add(address)
        local = address.rpartition("@")[0]
        if len(local) >= MIN_WORD and local not in ROLE_LOCAL_PARTS:
            found.add(local)
    if name.strip():
        found.add(" ".join(name_words(name)) if name_words(name) else name.strip().lower())
        found.add(name.strip().lower())
        found.update(w for w in name_words(name) if len(w) >= MIN_WORD and w not in shared)
    return tuple(sorted(found, key=lambda t: (-len(t), t)))


class Redactor:
    """Finds and replaces the person in text, JSON and mail. ``replacements``: exact strings
    (their Message-IDs) put back as something else (the hashed ids) rather than as PLACEHOLDER."""

    def __init__(self, terms: Iterable[str], replacements: Mapping[str, str] | None = None):
        self.terms = tuple(t for t in terms if t)
        self.replacements = {k.lower(): v for k, v in (replacements or {}).items() if k}
        parts = [re.escape(t) if len(t) >= SUBSTRING_LENGTH else rf"(?<!\w){re.escape(t)}(?!\w)"
                 for t in self.terms]
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        ids = sorted(self.replacements, key=len, reverse=True)
        self._ids = re.compile("|".join(map(re.escape, ids)), re.IGNORECASE) if ids else None
        self._bytes = tuple(t.encode("utf-8") for t in self.terms)

    def names(self, text: str | None) -> bool:
        if not text:
            return False
        return bool((self._pattern and self._pattern.search(text)) or (self._ids and self._ids.search(text)))

    def redact(self, text: str | None) -> str | None:
        if not text:
            return text
        if self._ids is not None:
            text = self._ids.sub(lambda m: self.replacements[m.group(0).lower()], text)
        return self._pattern.sub(PLACEHOLDER, text) if self._pattern is not None else text

    def redact_json(self, value: Any) -> Any:
        """Every string in a JSON value, keys included (a merge's undo data keys rows by address)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_json(v) for v in value]
        if isinstance(value, dict):
            return {self.redact(k): self.redact_json(v) for k, v in value.items()}
        return value

    def names_json(self, value: Any) -> bool:
        return self.redact_json(value) != value

    def names_bytes(self, data: bytes | None) -> bool:
        """The bytes as stored, then the mail decoded (RFC 2047 headers, base64 and
        quoted-printable parts, attachment names), where the person hides from a plain search."""
        if not data:
            return False
        lowered = data.lower()
        if any(t in lowered for t in self._bytes) or any(i.encode("utf-8", "replace") in lowered
                                                           for i in self.replacements):
            return True
        return self.names(mail_text(data))


def mail_text(data: bytes) -> str:
    """Every header and every part of a message as text, decoded; undecodable parts as latin-1
    bytes, so a name in a binary attachment is still found."""
    try:
        message = message_from_bytes(data, policy=policy.default)
    except Exception:  # noqa: BLE001 - mail from anywhere: a message no parser reads is searched raw
        return data.decode("latin-1")
    pieces: list[str] = []
    for part in message.walk():
        for name, value in part.items():
            try:
                pieces.append(f"{name}: {value}")
            except Exception:  # noqa: BLE001 - a malformed header still has its raw form
                pieces.append(str(name))
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001
            payload = b""
        charset = part.get_content_charset() or "utf-8"
        try:
            pieces.append(payload.decode(charset, "replace"))
        except LookupError:
            pieces.append(payload.decode("utf-8", "replace"))
        pieces.append(payload.decode("latin-1"))
    return "\n".join(pieces)


def erased_mail(subject: str, message_id: str, to_address: str, from_address: str) -> bytes:
    """What an outbox row that named the person keeps once it went out: who it went to and when
    (the outbox's own columns), and a body saying why the rest is gone."""
    message = EmailMessage()
    message["From"] = from_address or "inboxcrm"
    message["To"] = to_address
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = formatdate(usegmt=True)
    message.set_content("This message named a person who was erased on request (inboxcrm contact forget);\n"
                        "its content was removed.\n")
    return message.as_bytes(policy=policy.SMTP)


def company_is_theirs(domain: str, name: str, other_contacts: int, redactor: Redactor) -> bool:
    """A company goes with the person only when nobody else is there and it names them (their own
    domain, "quimby.example"); a business with one contact is still a business and stays."""
    return other_contacts == 0 and (redactor.names(domain) or redactor.names(name))
