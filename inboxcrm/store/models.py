"""SQLAlchemy 2 tables. One schema for SQLite and PostgreSQL; Alembic owns its history.

Models hold data only: no session, no connection, no business rule lives here.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator):
    """Timestamps stored as UTC and always returned timezone-aware, on both backends."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Rep(Base):
    __tablename__ = "reps"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The rep's own digest schedule; None takes the [digest] defaults of the configuration.
    digest_time: Mapped[str | None] = mapped_column(String(5))  # "HH:MM", the rep's local time
    digest_days: Mapped[str | None] = mapped_column(String(40))  # e.g. "mon-fri", "mon,wed,fri"
    digest_always: Mapped[bool] = mapped_column(Boolean, default=False)  # send even when empty
    digest_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped by "rep token --rotate": the reply token is derived from it, so old tokens stop working.
    command_token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Gets the weekly pipeline review ("rep add/edit --manager").
    manager: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    addresses: Mapped[list[RepAddress]] = relationship(
        back_populates="rep", cascade="all, delete-orphan", order_by="RepAddress.id"
    )


class RepAddress(Base):
    __tablename__ = "rep_addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    rep: Mapped[Rep] = relationship(back_populates="addresses")


class Mailbox(Base):
    __tablename__ = "mailboxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    owner_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))  # capture | rep
    default_source: Mapped[str] = mapped_column(String(100), default="email")
    new_sender_policy: Mapped[str] = mapped_column(String(20), default="create")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # IMAP settings (host, port, security, user, auth, where the secret lives, folders, since);
    # None for a mailbox that is only fed by ``import``. Never holds a secret itself.
    connection: Mapped[dict | None] = mapped_column(JSON)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed passes
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[Rep | None] = relationship()


class FolderPosition(Base):
    """Where a sync stopped in one folder: UIDVALIDITY + last UID (+ MODSEQ), never \\Seen."""

    __tablename__ = "folder_positions"
    __table_args__ = (UniqueConstraint("mailbox_id", "folder"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    highest_modseq: Mapped[int | None] = mapped_column(BigInteger)
    role: Mapped[str | None] = mapped_column(String(20))  # inbox | sent | all | None (named by the admin)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)  # as last seen: backlog = uidnext - 1 - last_uid
    message_count: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Company(Base):
    __tablename__ = "companies"
    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    owner_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"), index=True)
    source: Mapped[str] = mapped_column(String(100), default="")
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    addresses: Mapped[list[ContactAddress]] = relationship(
        back_populates="contact", cascade="all, delete-orphan", order_by="ContactAddress.id"
    )
    company: Mapped[Company | None] = relationship()
    owner: Mapped[Rep | None] = relationship()


class ContactAddress(Base):
    __tablename__ = "contact_addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    # A delivery failure (DSN) for this address was captured: when, and what the server said.
    # Cleared when mail from the address arrives again.
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    bounce_reason: Mapped[str | None] = mapped_column(String(500))
    contact: Mapped[Contact] = relationship(back_populates="addresses")


class Stage(Base):
    __tablename__ = "stages"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10), default="open")  # open | won | lost
    # Chance, in percent, that a deal in this stage is won ("stage probability"); None: the default
    # for its place in the pipeline (core.metrics.default_probability).
    probability: Mapped[int | None] = mapped_column(Integer)
    # Reaching this stage (or a later open one, or won) makes a lead an opportunity ("stage qualifying").
    qualifying: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Deal(Base):
    __tablename__ = "deals"
    __table_args__ = (
        Index("ix_deals_contact_open", "contact_id", "closed_at"),
        # the digest: a rep's open deals, the open next steps a rep holds, open totals per stage
        Index("ix_deals_owner_open", "owner_rep_id", "closed_at"),
        Index("ix_deals_next_step_owner_open", "next_step_owner_id", "closed_at"),
        Index("ix_deals_open_stage", "closed_at", "stage_id", "value"),
        # reports: leads created in a period; the forecast: open deals by expected close date
        Index("ix_deals_created_at", "created_at"),
        Index("ix_deals_open_close", "closed_at", "expected_close"),
        # the weekly review: the open deals in id order, without reading the closed ones
        Index("ix_deals_open_id", "id", postgresql_where=text("closed_at IS NULL"),
              sqlite_where=text("closed_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)  # the number in its reference D-<id>
    title: Mapped[str] = mapped_column(String(300), default="")
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"), index=True)
    owner_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    value: Mapped[float | None] = mapped_column(Numeric(14, 2))
    source: Mapped[str] = mapped_column(String(100), default="")
    fit_score: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[int] = mapped_column(Integer, default=0)
    inbound_count: Mapped[int] = mapped_column(Integer, default=0)
    outbound_count: Mapped[int] = mapped_column(Integer, default=0)
    next_step: Mapped[str | None] = mapped_column(String(500))
    next_step_due: Mapped[date | None] = mapped_column(Date)
    # "snooze: 2 weeks": quiet, stalled and no-next-step leave the digest until then; new mail wakes it.
    snoozed_until: Mapped[date | None] = mapped_column(Date)
    # Moved to Nurture ("deals archive --inactive 90"): out of the pipeline, neither open nor lost,
    # until the contact writes again. None: not in Nurture.
    nurtured_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    next_step_owner_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_stage_change_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_seconds: Mapped[int | None] = mapped_column(Integer)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the rep expects to close it ("deal close D-42 2026-12-15", "[D-42] close: dec 15").
    expected_close: Mapped[date | None] = mapped_column(Date)
    # How many times the expected close date was moved later after it had passed.
    close_slips: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    contact: Mapped[Contact] = relationship()
    company: Mapped[Company | None] = relationship()
    stage: Mapped[Stage] = relationship()
    owner: Mapped[Rep | None] = relationship(foreign_keys=[owner_rep_id])
    next_step_owner: Mapped[Rep | None] = relationship(foreign_keys=[next_step_owner_id])

    @property
    def ref(self) -> str:
        return f"D-{self.id}"


class DealFlag(Base):
    """Something a rep should look at: ambiguous match, duplicate outreach."""

    __tablename__ = "deal_flags"
    id: Mapped[int] = mapped_column(primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Message(Base):
    """Stored once per Message-ID; ``status`` says what the pipeline made of it."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(1000), unique=True)
    synthetic_id: Mapped[bool] = mapped_column(Boolean, default=False)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)  # as received: for a truncated message, its full size
    # Over [sync] max_message_bytes: only the headers (and a note naming its parts) were stored.
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    subject: Mapped[str] = mapped_column(Text, default="")
    from_address: Mapped[str] = mapped_column(String(320), default="", index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # [retention] raw_days sweeps by it
    # pending | processed | noise | internal | held | ignored | rejected | unmatched | quarantined
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    direction: Mapped[str | None] = mapped_column(String(10))  # inbound | outbound
    kind: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    copies: Mapped[list[MessageCopy]] = relationship(back_populates="message", order_by="MessageCopy.id")
    raw_row: Mapped[MessageRaw | None] = relationship(cascade="all, delete-orphan")

    @property
    def raw(self) -> bytes | None:
        """The bytes as received, or None when the config keeps no raw mail."""
        return self.raw_row.data if self.raw_row is not None else None


class MessageRaw(Base):
    """Raw bytes in their own table: updating a message's status must not rewrite a 10 MB row."""

    __tablename__ = "message_raw"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MessageCopy(Base):
    """Where a message was seen: one row per mailbox and location.

    A copy read from Gmail also keeps Gmail's thread id and labels: they belong to that account's
    copy, not to the message (another mailbox's copy has its own), and are not in the bytes."""

    __tablename__ = "message_copies"
    __table_args__ = (UniqueConstraint("mailbox_id", "location"),
                      # match: the other messages of a copy's Gmail thread, in the same account
                      Index("ix_message_copies_gmail_thread", "mailbox_id", "gmail_thread_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"))
    folder: Mapped[str] = mapped_column(String(500), default="")
    location: Mapped[str] = mapped_column(String(1500))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # X-GM-THRID as decimal text (an unsigned 64-bit id); None where the server is not Gmail
    gmail_thread_id: Mapped[str | None] = mapped_column(String(20))
    gmail_labels: Mapped[list | None] = mapped_column(JSON)  # X-GM-LABELS when fetched, e.g. ["\\Inbox", "Clients"]
    message: Mapped[Message] = relationship(back_populates="copies")
    mailbox: Mapped[Mailbox] = relationship()


class StageChange(Base):
    __tablename__ = "stage_history"
    id: Mapped[int] = mapped_column(primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(60))
    to_stage: Mapped[str] = mapped_column(String(60))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # reports: the moves of a period
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(500), default="")


class CloseDateChange(Base):
    """Every expected close date a deal had, so the forecast of a past month can be rebuilt as it
    stood then and compared with what was won."""

    __tablename__ = "close_date_history"
    __table_args__ = (
        # a deal's dates in order (its latest, the one in force at a month start); leads with deal_id
        # for the foreign key's cascade
        Index("ix_close_date_history_deal_at", "deal_id", "at", "id"),
        # past forecasts: the dates set for the months looked back on, before those months began
        Index("ix_close_date_history_close_at", "close_date", "at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"))
    close_date: Mapped[date | None] = mapped_column(Date)  # None: the date was cleared
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    slipped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SourceCost(Base):
    """What a lead source costs per month, from ``month`` on, until a later row for the same
    source ("source cost NAME AMOUNT [--from YYYY-MM]")."""

    __tablename__ = "source_costs"
    __table_args__ = (UniqueConstraint("source", "month"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    month: Mapped[date] = mapped_column(Date)  # the first day of the month it applies from
    amount: Mapped[float] = mapped_column(Numeric(14, 2))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))


class Merge(Base):
    """A merge of two contacts or companies, with what ``merge undo`` needs to put every row back
    as it was: the rows moved (table, id, column, old value) and the rows removed (their values)."""

    __tablename__ = "merges"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # contact | company
    kept_id: Mapped[int] = mapped_column(Integer)
    merged_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    undo: Mapped[dict] = mapped_column(JSON, default=dict)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_by: Mapped[str | None] = mapped_column(String(200))


class ForgottenAddress(Base):
    """An address erased by ``contact forget``, kept only as a keyed hash, so later mail from it
    can be recognised and handled as the admin chose without the address being stored."""

    __tablename__ = "forgotten_addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    then: Mapped[str] = mapped_column(String(10))  # ignore | new-lead: what later mail from it does
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class RoutingRule(Base):
    __tablename__ = "rules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    conditions: Mapped[list] = mapped_column(JSON)
    actions: Mapped[list] = mapped_column(JSON)
    round_robin_next: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RejectedSender(Base):
    """A sender a rep rejected in review: later mail from them is ignored, not held again."""

    __tablename__ = "rejected_senders"
    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Every change, with who made it and why (a rule name, a CLI user, a Message-ID)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(String(500), default="")


class OutboxMessage(Base):
    """Mail we send, written in the same transaction as the decision to send it.

    ``key`` makes the decision happen once (a digest's key is rep + local date); ``message_id``
    is derived from the key, so a resend after a crash is recognisably the same message."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),
                      # the metrics scrape: outbox rows by kind and status, without reading the sent mail
                      Index("ix_outbox_kind_status", "kind", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # digest | nudge | reply | alert | review
    rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id", ondelete="SET NULL"), index=True)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="SET NULL"), index=True)
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the complete RFC 5322 message as sent
    # pending | sending (handed to SMTP) | sent | failed | skipped (empty digest) | unknown (crashed mid-send)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Daemon(Base):
    """An ``inboxcrm run`` process that shares the work, by its ``--id`` name.

    ``expires_at`` is renewed while it lives; a row past it belongs to a daemon that died (kill -9,
    a cut network, a machine gone) and counts no more when the mailboxes are shared out."""

    __tablename__ = "daemons"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """Who works a resource now: an IMAP mailbox (``mailbox:<id>``) or a job that must run on one
    daemon only (``job:notify``). The database is the coordinator: a lease is taken and renewed by
    conditional UPDATEs, and one past ``expires_at`` may be taken by any daemon."""

    __tablename__ = "leases"
    id: Mapped[int] = mapped_column(primary_key=True)
    resource: Mapped[str] = mapped_column(String(200), unique=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    holder: Mapped[str] = mapped_column(String(100))  # a daemon's name
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
