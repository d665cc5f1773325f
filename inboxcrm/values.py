"""Typed values that cross module boundaries.

Every step of the pipeline hands the next one a frozen value instead of a dict, so a
field that is missing or misspelt fails where it is made, not three modules later.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Address:
    """One mailbox address; ``email`` is always lower-case so it can be compared."""

    email: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


# The sender parse gives a message with the null reverse-path written as its author (From: <>,
# a bare MAILER-DAEMON): only delivery systems send those. A domain that cannot exist, so it never
# matches a person; classify reads it as a bounce. A value rather than None, so every step that
# reads the sender works unchanged.
NULL_SENDER = Address(email="mailer-daemon@inboxcrm.invalid", name="null sender (delivery report)")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Email:
    """A parsed message: what the rest of the pipeline may know about it.

    ``headers`` keeps every header (lower-cased name, decoded value) in order, because
    classification rules look at headers that no other field carries.
    """

    message_id: str
    subject: str
    from_: Address | None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    date: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    text: str = ""
    content_type: str = "text/plain"
    report_type: str = ""
    attachments: tuple[Attachment, ...] = ()
    defects: tuple[str, ...] = ()  # the MIME structure's, by mail-parser (parse reads addresses and dates)
    size: int = 0
    # X-Original-From, read like From: the author a mailing list (a Google Group) names when it
    # rewrites From to its own address. Only classify's list-relay rule trusts it, and only for
    # mail sent to the team.
    original_from: Address | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        name = name.lower()
        return tuple(value for key, value in self.headers if key == name)

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message answers, nearest first."""
        seen: list[str] = []
        for mid in self.in_reply_to + tuple(reversed(self.references)):
            if mid not in seen:
                seen.append(mid)
        return tuple(seen)


@dataclass(frozen=True)
class GmailCopy:
    """What Gmail (X-GM-EXT-1) says about its copy of a message; none of it is in the bytes.

    The ids are Gmail's unsigned 64-bit numbers kept as decimal text: they only name things, and
    an unsigned 64-bit value need not fit a signed BIGINT. The labels are as seen when the copy
    was fetched (a label added later in Gmail is not followed)."""

    message_id: str  # X-GM-MSGID: one per message in the account, whatever its labels
    thread_id: str  # X-GM-THRID: Gmail's conversation, found even when a reply names no References
    labels: tuple[str, ...] = ()  # X-GM-LABELS, with the label of the folder it was read from


@dataclass(frozen=True)
class RawMessage:
    """Bytes as they came from a source, with where they came from.

    ``location`` names the copy (an IMAP folder and UID, a file and offset) so that the same
    message seen in two mailboxes is stored once with two copies.
    """

    data: bytes
    location: str
    folder: str = ""
    # Set when only the headers were read (the message is over [sync] max_message_bytes): the
    # real size, so the stored message says it is not all there.
    full_size: int | None = None
    # Set when the copy was read from Gmail: its thread and labels, kept with the stored copy.
    gmail: GmailCopy | None = None

    @property
    def truncated(self) -> bool:
        return self.full_size is not None


@dataclass(frozen=True)
class Classification:
    """What kind of message this is, and the rule that said so."""

    kind: str  # see classify.KINDS
    reason: str  # the rule's name: a stable reason code
    detail: str = ""
    # The person the message is from when that is not From: a list that relayed a prospect's
    # mail to the team wrote its own address in From.
    prospect: Address | None = None

    @property
    def is_noise(self) -> bool:
        return self.kind in NOISE_KINDS


NOISE_KINDS = frozenset({"auto-reply", "bounce", "list", "spam", "robot", "own"})


@dataclass(frozen=True)
class Explanation:
    """One line of ``rule explain``: a rule, whether it fired, and why."""

    stage: str
    rule: str
    fired: bool
    detail: str = ""


# The words an admin types for a mailbox's role and policy and a stage's kind: shared by the records
# (app.team checks them) and the command line (its choices), which must not load the store to list them.
MAILBOX_ROLES = ("capture", "rep", "commands")
MAILBOX_POLICIES = ("create", "review", "ignore")
STAGE_KINDS = ("open", "won", "lost")

# The manager's reports and the breakdowns each allows, the first being the one shown without --by:
# the command line lists them in --help without loading the store.
REPORT_NAMES = ("pipeline", "funnel", "velocity", "wins", "sources", "response", "activity", "forecast")
BY_CHOICES: dict[str, tuple[str, ...]] = {
    "pipeline": ("stage", "rep", "source"),
    "funnel": (),
    "velocity": (),
    "wins": (),
    "sources": (),
    "response": ("rep", "source"),
    "activity": ("source", "rep"),
    "forecast": (),
}
