"""What of a message to fetch over IMAP within the size limits, and the bytes stored from the answer.

Three ways to read a message, chosen per message from its RFC822.SIZE and, when it might carry
a large attachment, its BODYSTRUCTURE (``how_to_fetch``):

- whole (BODY.PEEK[]), as received: every message under the limits;
- without its large attachments, when the mailbox's ``max_attachment_bytes`` is set and a part
  is over it: BODY.PEEK[HEADER], the text/plain and text/html parts and every part under the
  limit (BODY.PEEK[n], still in their Content-Transfer-Encoding), and the MIME headers of all
  parts (BODY.PEEK[n.MIME]). ``rebuild`` puts them back together with each part left out
  replaced by a short text/plain attachment naming the file and its size. Gmail lets IMAP
  download about 2.5 GB a day, and a first backfill of a sales mailbox full of tenders and
  decks spends it on attachments inboxcrm never reads (the pipeline reads headers and text,
  see core.parse). The message's own headers stay as received and its text as sent, so it is
  matched, threaded and classified as the whole message would be;
- headers only (BODY.PEEK[HEADER] and BODYSTRUCTURE), as over ``[sync] max_message_bytes``
  (see mail.sources), when even the rest would be too big, or the message is nothing but one
  large attachment.

A message not read whole is stored truncated with its real size, so ``deal show`` and the raw
store say that the rest is still on the server. Pure: imapclient's parsed BODYSTRUCTURE and
FETCH answers in, FETCH items and bytes out; ``imap.fetch`` does the talking.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import MIMEPart
from email.parser import BytesHeaderParser

from inboxcrm.core.views import megabytes
from inboxcrm.errors import Invalid
from inboxcrm.mail.sources import headers_only

WHOLE = ("BODY.PEEK[]",)
HEADERS_ONLY = ("BODY.PEEK[HEADER]", "BODYSTRUCTURE")
TEXT_BODIES = ("text/plain", "text/html")
MESSAGE_LIMIT = "[sync] max_message_bytes"
ATTACHMENT_LIMIT = "the mailbox's max_attachment_bytes"
_HEADER_PARSER = BytesHeaderParser(policy=policy.default)
# A structure is written by the sender: nesting and part counts past these are read as a structure
# this does not understand (the message is then fetched whole or headers only, as without the
# attachment limit), so hostile mail can neither recurse us out of stack nor make a FETCH of
# thousands of items (a FETCH line of 500 parts stays far under Dovecot's 64 kB line limit).
MAX_DEPTH = 20
MAX_PARTS = 500


@dataclass(frozen=True)
class Part:
    """One node of a BODYSTRUCTURE: a multipart (with ``children``) or a leaf, and whether a
    leaf's body is fetched (``keep``) or left on the server."""

    section: str  # "1.2"; "" for the message itself when it is a multipart
    content_type: str
    size: int  # octets on the server, as encoded; 0 for a multipart
    name: str = ""  # the file name the structure gives, for notes
    boundary: bytes = b""
    children: tuple[Part, ...] = ()
    keep: bool = True

    @property
    def multipart(self) -> bool:
        return bool(self.children)

    def leaves(self) -> Iterable[Part]:
        if not self.multipart:
            yield self
        for child in self.children:
            yield from child.leaves()

    def nodes(self) -> Iterable[Part]:
        yield self
        for child in self.children:
            yield from child.nodes()


@dataclass(frozen=True)
class FetchPlan:
    """How one message is read: its FETCH items, the bytes they bring (for batching), and for
    a message not read whole its real size, the limit it is over and its structure."""

    items: tuple[str, ...]
    cost: int
    full_size: int | None = None  # set when the stored message will not be all of it
    over: str = MESSAGE_LIMIT  # the setting that kept part of it on the server
    limit: int = 0
    root: Part | None = None  # set when read without its large attachments


def how_to_fetch(size: int, structure, max_message_bytes: int,
                 max_attachment_bytes: int | None = None) -> FetchPlan:
    """The cheapest way to read a message that keeps what the pipeline reads. ``structure``:
    its BODYSTRUCTURE, asked for only when ``size`` is over ``max_attachment_bytes`` (under it
    no part can be over it); a structure this does not understand means the message is read
    as if there were no attachment limit."""
    root = None
    if max_attachment_bytes is not None and structure is not None and size > max_attachment_bytes:
        root = read_structure(structure, max_attachment_bytes)
    if root is not None and not all(leaf.keep for leaf in root.leaves()):
        if not root.multipart:  # one large attachment and nothing else: its headers are all there is
            return FetchPlan(HEADERS_ONLY, 0, size, ATTACHMENT_LIMIT, max_attachment_bytes)
        cost = sum(leaf.size for leaf in root.leaves() if leaf.keep)
        if cost <= max_message_bytes:
            return FetchPlan(fetch_items(root), cost, size, ATTACHMENT_LIMIT, max_attachment_bytes, root)
    if size <= max_message_bytes:
        return FetchPlan(WHOLE, size)
    return FetchPlan(HEADERS_ONLY, 0, size, MESSAGE_LIMIT, max_message_bytes)


def batches(plans: Iterable[tuple[int, FetchPlan]], batch_bytes: int, batch: int) -> list[tuple[tuple[str, ...], list[int]]]:
    """(items, UIDs) FETCHes in UID order: neighbours read the same way share one FETCH of at
    most ``batch`` messages and ``batch_bytes`` (a message bigger than that goes alone). A FETCH
    answer is held whole in memory until its last message is through the pipeline."""
    grouped: list[tuple[tuple[str, ...], list[int]]] = []
    used = 0
    for uid, plan in plans:
        if (not grouped or grouped[-1][0] != plan.items or len(grouped[-1][1]) >= batch
                or (used and used + plan.cost > batch_bytes)):
            grouped.append((plan.items, []))
            used = 0
        grouped[-1][1].append(uid)
        used += plan.cost
    return grouped


def stored_bytes(item: dict, plan: FetchPlan) -> bytes | None:
    """What is stored of one FETCH answer read as ``plan`` says; None when the answer has no
    body (the message was expunged by someone else between SEARCH and FETCH)."""
    if plan.items == WHOLE:
        return item.get(b"BODY[]")
    header = item.get(b"BODY[HEADER]")
    if header is None:
        return None
    if plan.root is None:
        return headers_only(header, plan.full_size or 0, plan.limit, describe_structure(item.get(b"BODYSTRUCTURE")),
                            setting=plan.over)
    return rebuild(plan.root, item, plan.limit)


# -- the structure -------------------------------------------------------------------------------

def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _pairs(values) -> dict[str, str]:
    values = values if isinstance(values, tuple) else ()
    return {_text(k).lower(): _text(v) for k, v in zip(values[::2], values[1::2])}


def _disposition(part) -> tuple[str, dict[str, str]]:
    """(disposition, its parameters) of a leaf: it sits after the type-specific fields, so it is
    the first (name, (params)) pair among them."""
    found = next((p for p in part[7:12] if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], bytes)
                  and (p[1] is None or isinstance(p[1], tuple))), None)
    return ("", {}) if found is None else (_text(found[0]).lower(), _pairs(found[1]))


def _node(part, section: str, limit: int | None, seen: list[int]) -> Part:
    seen[0] += 1
    if seen[0] > MAX_PARTS or section.count(".") >= MAX_DEPTH:
        raise ValueError(f"more than {MAX_PARTS} parts or {MAX_DEPTH} levels")
    if part and isinstance(part[0], list):  # a multipart: its parts, then its subtype and parameters
        if not part[0]:
            raise ValueError("a multipart without parts")
        prefix = f"{section}." if section else ""
        children = tuple(_node(child, f"{prefix}{n}", limit, seen) for n, child in enumerate(part[0], 1))
        boundary = _pairs(part[2] if len(part) > 2 else None).get("boundary", "")
        if not boundary:
            raise ValueError("a multipart without a boundary")
        return Part(section, f"multipart/{_text(part[1]).lower()}", 0, boundary=boundary.encode(),
                    children=children)
    kind = f"{_text(part[0])}/{_text(part[1])}".lower()
    size = part[6] if len(part) > 6 and isinstance(part[6], int) else 0
    disposition, parameters = _disposition(part)
    name = decode_filename(parameters.get("filename") or _pairs(part[2]).get("name", ""))
    text_body = kind in TEXT_BODIES and disposition != "attachment"
    return Part(section or "1", kind, size, name, keep=text_body or limit is None or size <= limit)


def read_structure(structure, limit: int | None = None) -> Part | None:
    """The tree of a BODYSTRUCTURE, each leaf over ``limit`` (text bodies aside) marked not
    kept; None for a structure this does not understand."""
    try:
        return _node(structure, "", limit, [0])
    except (IndexError, TypeError, ValueError, UnicodeError):
        return None


def describe_structure(structure) -> list[str]:
    """One line per leaf part of a BODYSTRUCTURE ("application/pdf "offer.pdf" 48.0 MB"), so the
    note of a message stored without its body says what it carried. A structure this does not
    understand gives no lines rather than an error: the note is for people, nothing depends on it."""
    root = read_structure(structure)
    if root is None:
        return []
    return [f'{leaf.content_type}{f" {leaf.name!r}" if leaf.name else ""} {megabytes(leaf.size)}'
            for leaf in root.leaves()]


def decode_filename(value: str) -> str:
    """RFC 2047 words in a part's name decoded, control characters dropped: it is shown to people."""
    try:
        value = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        pass
    return "".join(c for c in value if c.isprintable())[:200]


def fetch_items(root: Part) -> tuple[str, ...]:
    """The FETCH items of a message read without its large parts: its header, the MIME header
    of every part below it, the body of every part kept. All BODY.PEEK: nothing gets \\Seen."""
    items = ["BODY.PEEK[HEADER]"]
    for node in root.nodes():
        if node is root:
            continue
        items.append(f"BODY.PEEK[{node.section}.MIME]")
        if not node.multipart and node.keep:
            items.append(f"BODY.PEEK[{node.section}]")
    return tuple(items)


# -- the message rebuilt -------------------------------------------------------------------------

def rebuild(root: Part, item: dict, limit: int) -> bytes:
    """The message from its FETCH answer: its header as received, then each multipart with its
    own boundary, each kept part as it was sent, each part left out as a placeholder. (A
    multipart's preamble and epilogue are not fetched; mail clients show neither.)"""
    pieces: list[bytes] = [item[b"BODY[HEADER]"]]

    def body(part: Part) -> None:
        if not part.multipart:
            pieces.append(item[f"BODY[{part.section}]".encode()])
            return
        for child in part.children:
            pieces.append(b"--" + part.boundary + b"\r\n")
            header = item[f"BODY[{child.section}.MIME]".encode()]
            if child.multipart or child.keep:
                pieces.append(header)
                body(child)
            else:
                pieces.append(placeholder(child, header, limit))
            pieces.append(b"\r\n")
        pieces.append(b"--" + part.boundary + b"--")

    body(root)
    pieces.append(b"\r\n")
    return b"".join(pieces)


def placeholder(part: Part, mime_header: bytes, limit: int) -> bytes:
    """A part left on the server as a small text/plain attachment (its MIME header and body),
    named after the file, saying what the file is and that it is still in the mailbox. An
    attachment and not inline text, so the message's text stays exactly what its sender wrote."""
    headers = _HEADER_PARSER.parsebytes(mime_header)
    try:
        name = decode_filename(headers.get_filename() or "") or part.name
    except (ValueError, LookupError, UnicodeError):
        name = part.name
    what = f'"{name}" ({part.content_type}, {megabytes(part.size)} on the server)' if name else \
        f"A {part.content_type} part of {megabytes(part.size)}"
    note = MIMEPart(policy=policy.SMTP)
    note.set_content(f"[inboxcrm] Not downloaded:\n{what}\nIt is over {ATTACHMENT_LIMIT} ({megabytes(limit)})\n"
                     f"and still in the mailbox: part {part.section} of this message.\n",
                     disposition="attachment", filename=f"{name or 'part ' + part.section} (not downloaded).txt")
    data = note.as_bytes()
    return data[:-2] if data.endswith(b"\r\n") else data  # the line end before the next boundary is the boundary's


def attachment_limit(value) -> int | None:
    """A mailbox's max_attachment_bytes as given (None: attachments are fetched whole), or
    Invalid naming what would be valid."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise Invalid(f"--max-attachment-bytes {value!r}: expected a whole number of bytes, 0 or more "
                      f"(1048576 is 1 MB; 0 keeps text parts only), or leave it out to fetch attachments whole")
    return value
