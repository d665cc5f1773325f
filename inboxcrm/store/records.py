"""The database side of the intake: lookups for matching, and writing what one Decision means.

It knows tables, not sales: ``decide`` said what the message is, ``core.sales`` says what that
does to its deal; this module looks up the facts those functions need, writes the plan they
return, keeps the raw message first and writes the audit trail. It speaks SQLAlchemy Core rather
than the ORM because it runs once per message on the import and sync hot path, where the ORM's
unit of work cost several times the parse itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, cached_property, lru_cache
from typing import Any, Iterable, Sequence

from sqlalchemy import String, Table, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, aliased

from inboxcrm.core import nurture, sales
from inboxcrm.core.addresses import normalize_domain, registrable_domain
from inboxcrm.core.decide import Context, Decision, MailboxInfo
from inboxcrm.core.match import ContactInfo
from inboxcrm.core.parse import header_summary
from inboxcrm.core.sales import PIPELINE_ACTOR
from inboxcrm.store import audit, leads, nurture_queries
from inboxcrm.store.db import column_binds, driver_rows, insert_new
from inboxcrm.store.models import (
    AuditEntry,
    Company,
    Contact,
    ContactAddress,
    Deal,
    DealFlag,
    Mailbox,
    Message,
    MessageCopy,
    MessageRaw,
    RejectedSender,
    Rep,
    RepAddress,
    RoutingRule,
    Stage,
    StageChange,
)
from inboxcrm.values import Email, RawMessage

# The database is unwell, not the message: the intake stops (a re-run resumes) instead of quarantining.
DATABASE_FAILURES: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


# -- the rows a pass's Context is built from (app.context.context_for builds it) -----------------

def active_rep_addresses(session: Session) -> dict[str, str]:
    """Address -> name of every active rep."""
    return dict(session.execute(select(RepAddress.address, Rep.name).join(Rep).where(Rep.active.is_(True))).all())


def rep_ids(session: Session) -> dict[str, int]:
    """Name -> id of every rep, active or not: a deal may still name a rep who left."""
    return dict(session.execute(select(Rep.name, Rep.id)).all())


def stage_rows(session: Session) -> tuple[tuple[int, str, str], ...]:
    """(id, name, kind) of every stage, in pipeline order."""
    return tuple(session.execute(select(Stage.id, Stage.name, Stage.kind).order_by(Stage.position)).all())


def command_reps(session: Session) -> list[tuple[int, str, int, str | None]]:
    """(id, name, reply-token generation, time zone) of every active rep, for the command gate."""
    return [tuple(row) for row in session.execute(
        select(Rep.id, Rep.name, Rep.command_token_generation, Rep.timezone).where(Rep.active.is_(True)))]


def token_generation(session: Session, rep_id: int) -> int:
    return session.scalar(select(Rep.command_token_generation).where(Rep.id == rep_id)) or 0


def mailbox_info(session: Session, name: str) -> MailboxInfo | None:
    row = session.scalar(select(Mailbox).where(Mailbox.name == name))
    if row is None:
        return None
    return MailboxInfo(id=row.id, name=row.name, role=row.role, owner=row.owner.name if row.owner else None,
                       default_source=row.default_source, policy=row.new_sender_policy, created_at=row.created_at)


@cache
def _by_id(model, columns: tuple[str, ...]):
    """UPDATE model SET <columns> WHERE id = :pk, built once per shape."""
    table = model.__table__
    return update(table).where(table.c.id == bindparam("pk")).values(column_binds(table, columns))


# Lookups run for every message: built once, so each call only binds its parameters.
# What ``core.sales`` needs of a deal (``sales.DealState``). The lookups that find a message's deal
# read it too: applying the decision needs it right after, which was a round trip of its own.
_DEAL_STATE = (
    Deal.id, Deal.contact_id, Deal.stage_id, Deal.owner_rep_id, Deal.fit_score, Deal.inbound_count,
    Deal.outbound_count, Deal.created_at, Deal.last_activity_at, Deal.last_inbound_at,
    Deal.last_outbound_at, Deal.first_response_at, Deal.nurtured_at,
)
_THREAD_DEALS = select(Message.message_id, *_DEAL_STATE).join(Deal, Deal.id == Message.deal_id).where(
    Message.message_id.in_(bindparam("ids", expanding=True)))
# The contact who owns an address and whether the address was rejected in review, in one round
# trip: decide asks the second only when there is no contact, and always right after the first.
_WANTED = select(bindparam("address", type_=String).label("address")).subquery("wanted")
# The companies of the address's domain and of its registrable domain come with it: match asks
# for one of them (``core.match.company_domain``) right after, which was a round trip of its own.
_SENDER = (select(Contact.id, Rep.name, exists().where(RejectedSender.address == _WANTED.c.address).label("rejected"),
                  select(Company.id).where(Company.domain == bindparam("domain")).scalar_subquery(),
                  select(Company.id).where(Company.domain == bindparam("registrable")).scalar_subquery())
           .select_from(_WANTED)
           .outerjoin(ContactAddress, ContactAddress.address == _WANTED.c.address)
           .outerjoin(Contact, Contact.id == ContactAddress.contact_id)
           .outerjoin(Rep, Rep.id == Contact.owner_rep_id))
_OPEN_DEALS = (select(*_DEAL_STATE).where(Deal.contact_id == bindparam("contact_id"), Deal.closed_at.is_(None))
               .order_by(Deal.last_activity_at.desc(), Deal.id.desc()))
# A contact's deals in Nurture: asked only when they have no open deal (see core.nurture.deals_for_contact).
_NURTURED_DEALS = (select(Deal.id).where(Deal.contact_id == bindparam("contact_id"), Deal.nurtured_at.is_not(None))
                   .order_by(Deal.last_activity_at.desc(), Deal.id.desc()))
_COMPANY_BY_DOMAIN = select(Company.id).where(Company.domain == bindparam("domain"))
_REJECTED = select(RejectedSender.id).where(RejectedSender.address == bindparam("address"))
_MESSAGE_BY_ID = select(Message.id, Message.status, Message.deal_id, Message.reason).where(
    Message.message_id == bindparam("mid"))
_COPY = select(MessageCopy.id).where(MessageCopy.mailbox_id == bindparam("mailbox_id"),
                                     MessageCopy.location == bindparam("location"))
_STORED_LOCATIONS = select(MessageCopy.location).where(
    MessageCopy.mailbox_id == bindparam("mailbox_id"), MessageCopy.location.in_(bindparam("locations", expanding=True)))
# The deal of another message Gmail put in the same thread as a copy of this one, in the same
# account (thread ids are per account), the most recent first.
_THIS, _OTHER, _OTHER_COPY = aliased(Message), aliased(Message), aliased(MessageCopy)
_GMAIL_THREAD_DEAL = (
    select(_OTHER.deal_id)
    .select_from(_THIS)
    .join(MessageCopy, (MessageCopy.message_id == _THIS.id) & MessageCopy.gmail_thread_id.is_not(None))
    .join(_OTHER_COPY, (_OTHER_COPY.mailbox_id == MessageCopy.mailbox_id)
          & (_OTHER_COPY.gmail_thread_id == MessageCopy.gmail_thread_id))
    .join(_OTHER, _OTHER.id == _OTHER_COPY.message_id)
    .where(_THIS.message_id == bindparam("mid"), _OTHER.id != _THIS.id, _OTHER.deal_id.is_not(None))
    .order_by(_OTHER.sent_at.desc(), _OTHER.id.desc())
    .limit(1))
_DEAL = select(*_DEAL_STATE).where(Deal.id == bindparam("deal_id"))
_CONTACT_NAME = select(Contact.name).where(Contact.id == bindparam("contact_id"))
_UNMATCHED_IN_THREAD = select(Message.id, Message.direction, Message.sent_at, Message.from_address).where(
    Message.message_id.in_(bindparam("ids", expanding=True)), Message.status == "unmatched")
_THREAD_OUTREACH = (select(Message.from_address).where(
    Message.message_id.in_(bindparam("ids", expanding=True)), Message.status == "unmatched",
    Message.direction == "outbound").order_by(Message.sent_at).limit(1))
# Only mail that passed the identity checks counts toward a burst: forged mail in a rep's name
# must not lock the rep out.
_RECENT_COMMANDS = select(func.count(Message.id)).where(
    Message.status.in_(("command", "refused")),
    or_(Message.status == "command", Message.reason.in_(("refused-burst", "refused-token"))),
    Message.from_address == bindparam("address"), Message.received_at >= bindparam("since"))
_INSERT_RAW = insert(MessageRaw.__table__)
_NEW_MESSAGE_COLUMNS = ("message_id", "synthetic_id", "sha256", "size", "truncated", "received_at", "status",
                        "subject", "from_address")
_COPY_COLUMNS = ("mailbox_id", "folder", "location", "seen_at", "gmail_thread_id", "gmail_labels")
_INSERT_COPY = insert(MessageCopy.__table__).values(column_binds(MessageCopy.__table__, ("message_id", *_COPY_COLUMNS)))
_BLOB_HANDLE_BYTES = 1024 * 1024  # below this the driver's copy is not worth a second statement
_INSERTS: dict[type, object] = {}
# Per message on the hot path; a mailbox's mail comes from few domains (as normalize_domain's cache).
_registrable_domain = lru_cache(maxsize=8192)(registrable_domain)


def stored_locations(session: Session, mailbox_id: int, locations: Sequence[str]) -> set[str]:
    """Which of these copy locations the mailbox has stored already: the sync does not fetch
    them again (on Gmail, a message seen under another label; see ``mail.gmail``)."""
    if not locations:
        return set()
    return set(session.execute(_STORED_LOCATIONS, {"mailbox_id": mailbox_id, "locations": list(locations)}).scalars())


@cache
def _save_new_postgresql(keep_raw: bool):
    """PostgreSQL: the message row, its bytes and its copy in one statement (data-modifying CTEs),
    where three round trips were a fifth of a new message's statements. The bytes and the copy go
    in only when the message is new; a Message-ID stored already returns no id, and the copy is
    then recorded as on SQLite."""
    raw, copies = MessageRaw.__table__, MessageCopy.__table__
    new = insert_new("postgresql", Message.__table__, "message_id", _NEW_MESSAGE_COLUMNS).cte("new")
    copy = insert(copies).from_select(
        ["message_id", *_COPY_COLUMNS],
        select(new.c.id, *column_binds(copies, _COPY_COLUMNS).values())).cte("copy")
    statement = select(new.c.id).add_cte(copy)
    if keep_raw:
        statement = statement.add_cte(insert(raw).from_select(
            ["message_id", "data"], select(new.c.id, bindparam("data", type_=raw.c.data.type))).cte("raw"))
    return statement


@cache
def _updates_postgresql(shapes: tuple[tuple[type, tuple[str, ...]], ...]):
    """Built once per shape (which columns of which tables), as every statement of the hot path is:
    building one costs as much as running it."""
    statements = []
    for i, (model, columns) in enumerate(shapes):
        table = model.__table__
        statements.append(update(table).where(table.c.id == bindparam(f"pk_{i}")).values(
            {column: bindparam(f"{column}_{i}", type_=table.c[column].type) for column in columns}))
    *first, last = statements
    return last.add_cte(*(statement.returning(statement.table.c.id).cte(f"changed_{i}")
                          for i, statement in enumerate(first)))


@dataclass
class GroupRows:
    """Rows a commit group writes that the intake never reads back before the group commits (audit
    entries, stage history, deal flags, raw bytes on SQLite): written with one statement per table
    when the group ends (``flush``), where one statement per row was a quarter of a message's
    statements. Code that reads them in the same transaction (a command email, ``contact
    forget``'s mail) runs after a ``flush``."""

    rows: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: Table, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.setdefault(table, []).extend(rows)

    def flush(self, conn: Connection) -> None:
        for table, rows in self.rows.items():
            # executemany: on PostgreSQL, 80 audit rows took 2.7 ms where 7 ms went through
            # insert_rows' unnest() of arrays, whose JSON arrays psycopg builds in Python.
            conn.execute(insert(table), rows)
        self.clear()

    def clear(self) -> None:
        self.rows.clear()


@dataclass(frozen=True)
class StoredMessage:
    id: int
    message_id: str
    status: str
    deal_id: int | None
    reason: str | None = None


@dataclass
class Store:
    """One message's view of the records. Implements ``decide.DecisionLookup``.

    ``group``: where rows nobody reads back before the commit go (see ``GroupRows``); None
    writes them at once (a re-run, a replayed group, a test)."""

    session: Session
    now: datetime
    group: GroupRows | None = None
    _audit: list[dict] = field(default_factory=list)
    _rejected: dict[str, bool] = field(default_factory=dict)  # address -> rejected, read with its contact
    _companies: dict[str, int | None] = field(default_factory=dict)  # domain -> company, read with the contact
    _deals: dict[int, sales.DealState] = field(default_factory=dict)  # read with the lookups that found them
    _threadless: str | None = None  # Message-ID of the new message just saved with no Gmail thread id

    @cached_property
    def conn(self) -> Connection:
        """The session's connection: Core statements skip the ORM's per-statement overhead. Asked
        for once: a Store lives within one transaction, and asking the session each time was 4% of
        the importing process."""
        return self.session.connection()

    def _rows(self, stmt, params: dict[str, Any]) -> Sequence[tuple]:
        """A hot statement's rows, through the driver (``db.driver_rows``)."""
        return driver_rows(self.conn, stmt, params) or ()

    # -- lookups -----------------------------------------------------------------------
    def deal_for_thread(self, message_ids: Sequence[str]) -> int | None:
        rows = {row[0]: self._keep_deal(row[1:]) for row in self.conn.execute(_THREAD_DEALS, {"ids": list(message_ids)})}
        return next((rows[m] for m in message_ids if m in rows), None)

    def _keep_deal(self, row) -> int:
        self._deals[row[0]] = sales.DealState(*row)
        return row[0]

    def deal_for_gmail_thread(self, message_id: str) -> int | None:
        """Asked after save_raw, so the copy being decided has its thread id stored already;
        a re-run (quarantine retry, rule explain) finds the same copy. A message saved new just
        now, from a copy without a thread id, has no other copy to carry one: nothing to ask."""
        if message_id == self._threadless:
            return None
        return self.conn.scalar(_GMAIL_THREAD_DEAL, {"mid": message_id})

    def contact_for_address(self, address: str) -> ContactInfo | None:
        domain = normalize_domain(address.rpartition("@")[2]) or ""
        registrable = _registrable_domain(domain) if domain else ""
        (contact_id, owner, rejected, company, registrable_company), = self._rows(
            _SENDER, {"address": address, "domain": domain, "registrable": registrable})
        self._rejected[address] = bool(rejected)
        self._companies = {domain: company, registrable: registrable_company}
        return ContactInfo(id=contact_id, owner=owner) if contact_id is not None else None

    def open_deals(self, contact_id: int) -> Sequence[int]:
        """The contact's open deals; with none, their deal in Nurture, which the mail brings back."""
        found = [self._keep_deal(row) for row in self._rows(_OPEN_DEALS, {"contact_id": contact_id})]
        nurtured = [] if found else list(self.conn.scalars(_NURTURED_DEALS, {"contact_id": contact_id}))
        return nurture.deals_for_contact(found, nurtured)

    def company_for_domain(self, domain: str) -> int | None:
        if domain and domain in self._companies:
            return self._companies[domain]
        return self.conn.scalar(_COMPANY_BY_DOMAIN, {"domain": domain})

    def thread_outreach(self, message_ids: Sequence[str]) -> str | None:
        return self.conn.scalar(_THREAD_OUTREACH, {"ids": list(message_ids)})

    def is_rejected_sender(self, address: str) -> bool:
        if address in self._rejected:
            return self._rejected[address]
        return self.conn.scalar(_REJECTED, {"address": address}) is not None

    def recent_commands(self, address: str, minutes: int) -> int:
        """Few rows: the status index narrows it to command mail before the address is compared."""
        return self.conn.scalar(_RECENT_COMMANDS, {"address": address, "since": self.now - timedelta(minutes=minutes)})

    # -- raw first ---------------------------------------------------------------------
    def _insert(self, model, **values) -> int:
        stmt = _INSERTS.get(model)
        if stmt is None:
            table = model.__table__
            stmt = _INSERTS[model] = insert(table).returning(table.c.id)
        return self.conn.execute(stmt, values).scalar_one()

    def _update(self, model, pk: int, **values) -> None:
        self._rows(_by_id(model, tuple(values)), {"pk": pk, **values})

    def save_raw(self, raw: RawMessage, mailbox_id: int, message_id: str, synthetic: bool,
                 sha256: str, keep_raw: bool = True) -> tuple[StoredMessage, bool]:
        """Store the bytes and the copy before interpreting; (message, True) if never seen before.

        A message read without its body (over the size limit) keeps its real size and is marked
        truncated, so whoever reads it knows the stored bytes are not all of it."""
        values = dict(message_id=message_id, synthetic_id=synthetic, sha256=sha256,
                      size=raw.full_size if raw.truncated else len(raw.data), truncated=raw.truncated,
                      received_at=self.now, status="pending", subject="", from_address="")
        gmail = raw.gmail
        copy = dict(mailbox_id=mailbox_id, folder=raw.folder, location=raw.location, seen_at=self.now,
                    gmail_thread_id=gmail.thread_id if gmail else None,
                    gmail_labels=list(gmail.labels) if gmail else None)
        if self.conn.dialect.name == "postgresql":
            rows = self._rows(_save_new_postgresql(keep_raw), dict(values, **copy, data=raw.data))
            copied = bool(rows)
        else:
            new = insert_new(self.conn.dialect.name, Message.__table__, "message_id", _NEW_MESSAGE_COLUMNS)
            rows = self._rows(new, values)
            copied = False
            if rows and keep_raw:
                self._insert_raw(rows[0][0], raw.data)
        is_new = bool(rows)
        if is_new:
            stored = StoredMessage(rows[0][0], message_id, "pending", None)
            self._threadless = None if copy["gmail_thread_id"] else message_id
        else:
            row = self._rows(_MESSAGE_BY_ID, {"mid": message_id})[0]
            stored = StoredMessage(row[0], message_id, row[1], row[2], row[3])
        known = copied or (not is_new and bool(self._rows(_COPY, {"mailbox_id": mailbox_id, "location": raw.location})))
        if not known:
            self._rows(_INSERT_COPY, dict(copy, message_id=stored.id))
        return stored, is_new

    def _insert_raw(self, pk: int, data: bytes) -> None:
        """On SQLite the bytes are written through a blob handle: Python's sqlite3 keeps its own copy
        of the last blob bound to a statement until that statement runs again, so a 24 MB message
        would stay in memory through the rest of a backfill."""
        if self.conn.dialect.name != "sqlite" or len(data) < _BLOB_HANDLE_BYTES:
            self._later(MessageRaw, [{"message_id": pk, "data": data}])
            return
        self.conn.execute(_INSERT_RAW.values(message_id=pk, data=func.zeroblob(len(data))))
        with self.conn.connection.driver_connection.blobopen("message_raw", "data", pk) as blob:
            blob.write(data)

    def _update_together(self, updates: Sequence[tuple[type, int, dict[str, Any]]]) -> None:
        """UPDATEs of different rows whose answers nobody needs: on PostgreSQL one statement (each
        but the last a data-modifying CTE), where the deal's and the message's took a round trip each."""
        updates = [update for update in updates if update[2]]
        if self.conn.dialect.name != "postgresql" or len(updates) < 2:
            for model, pk, values in updates:
                self._update(model, pk, **values)
            return
        params: dict[str, Any] = {}
        for i, (_, pk, values) in enumerate(updates):
            params[f"pk_{i}"] = pk
            params.update({f"{column}_{i}": value for column, value in values.items()})
        self._rows(_updates_postgresql(tuple((model, tuple(values)) for model, _, values in updates)), params)

    def update_message(self, pk: int, **values) -> None:
        self._update(Message, pk, **values)

    def quarantine(self, msg: StoredMessage, reason: str, detail: str, raw: bytes = b"") -> None:
        subject, sender, date = header_summary(raw)
        self.update_message(msg.id, status="quarantined", reason=reason, detail=detail[:2000],
                             processed_at=self.now, subject=subject, from_address=sender, sent_at=date)

    # -- applying a decision ---------------------------------------------------------------
    def audit(self, action: str, entity: str, entity_id: int | None, reason: str, **detail) -> None:
        self._audit.append(audit.entry(self.now, PIPELINE_ACTOR, action, entity, entity_id, reason, **detail))

    def flush_audit(self) -> None:
        self._later(AuditEntry, self._audit)
        self._audit.clear()

    def _later(self, model, rows: Sequence[dict[str, Any]]) -> None:
        """Rows no lookup of the intake reads: to the group when there is one, else written now."""
        if not rows:
            return
        if self.group is not None:
            self.group.add(model.__table__, rows)
        else:
            self.conn.execute(insert(model.__table__), rows)

    def flush_group(self) -> None:
        """Before code that may read the group's rows (a command, a forgotten person's mail)."""
        if self.group is not None:
            self.group.flush(self.conn)

    def apply(self, msg: StoredMessage, email: Email, decision: Decision, mailbox: MailboxInfo,
              ctx: Context) -> int | None:
        """Record the decision; returns the deal id the message joined, if any. The sales rules
        (``core.sales``) say what the message does to its deal; this writes what they say."""
        when = sales.activity_time(email.date, self.now)
        found = decision.match
        values = dict(subject=email.subject[:5000], from_address=email.from_.email, sent_at=when,
                      status=decision.status, reason=decision.reason, detail=decision.detail[:2000],
                      kind=decision.classification.kind if decision.classification else None,
                      direction=decision.direction, processed_at=self.now,
                      contact_id=found.contact.id if found is not None and found.contact else None)
        deal, updates = None, []
        if sales.joins_a_deal(decision):
            deal = self._deal_state(found.deal_id) if found.deal_id else None
            created = deal is None and decision.create_deal
            if created:
                turn = self._take_turn(sales.turn_to_take(decision))
                deal = self._create_deal(email, decision, sales.new_deal(decision, mailbox, ctx, turn), when,
                                         f"message <{msg.message_id}>")
            if deal is not None:
                plan = sales.plan(self._activity(msg, email, decision, deal, when, created), ctx)
                self._write(plan, msg)
                updates.append((Deal, plan.deal_id, plan.deal_changes))
                values.update(deal_id=deal.id, contact_id=deal.contact_id)
        self._update_together([*updates, (Message, msg.id, values)])
        self.flush_audit()
        return deal.id if deal else None

    def _activity(self, msg: StoredMessage, email: Email, decision: Decision, deal: sales.DealState,
                  when: datetime, created: bool) -> sales.Activity:
        """The facts the sales rules need, each looked up only when it can matter (the hot path)."""
        earlier = self._unmatched_in_thread(email.thread_ids) if sales.adopts_thread(created, email.thread_ids) else ()
        name = self._contact_name(deal.contact_id) if sales.may_learn_address(decision) else None
        return sales.Activity(decision, deal, when, msg.message_id, earlier, name)

    def _deal_state(self, deal_id: int) -> sales.DealState | None:
        if deal_id in self._deals:  # found by the thread or the contact, in this message's lookups
            return self._deals[deal_id]
        rows = self._rows(_DEAL, {"deal_id": deal_id})
        return sales.DealState(*rows[0]) if rows else None

    def _unmatched_in_thread(self, thread_ids: Sequence[str]) -> tuple[sales.ThreadMail, ...]:
        return tuple(sales.ThreadMail(*row) for row in self.conn.execute(_UNMATCHED_IN_THREAD,
                                                                          {"ids": list(thread_ids)}))

    def _contact_name(self, contact_id: int) -> str:
        return self.conn.scalar(_CONTACT_NAME, {"contact_id": contact_id}) or ""

    def _take_turn(self, rule: str | None) -> int | None:
        """Turns a round-robin rule's rotation and returns its counter as it is now (None: no rule,
        or it was removed meanwhile). Taken here, not from the rules the run read at its start,
        because another process may have turned it since."""
        if not rule:
            return None
        return self.conn.scalar(update(RoutingRule).where(RoutingRule.name == rule)
                                .values(round_robin_next=RoutingRule.round_robin_next + 1)
                                .returning(RoutingRule.round_robin_next))

    def _create_deal(self, email: Email, decision: Decision, lead: sales.NewDeal, when: datetime,
                     why: str) -> sales.DealState:
        """Company (when new), contact (when new, else completed) and deal with its first stage."""
        found, routing = decision.match, decision.routing
        made = leads.create_lead(self.conn, leads.NewLead(
            actor=PIPELINE_ACTOR, prospect=found.prospect, title=email.subject, stage_id=lead.stage_id,
            stage_name=lead.stage_name, source=lead.source, owner_id=lead.owner_id, owner_name=lead.owner,
            contact_id=found.contact.id if found.contact else None, company_id=found.company_id,
            company_domain=found.company_domain, score_points=routing.score, history_reason=f"new lead from {why}",
            why=why, rules=tuple(routing.fired)), self.now, when, log=self._audit, later=self._later)
        return sales.DealState(made.deal_id, made.contact_id, lead.stage_id, lead.owner_id, made.fit, 0, 0, when, when,
                               None, None, None)

    def _write(self, plan: sales.Plan, msg: StoredMessage) -> None:
        """All the plan says but the deal's own changes, which ``apply`` writes with the message's."""
        why = f"message <{msg.message_id}>"
        for pk in plan.adopted:
            self.update_message(pk, deal_id=plan.deal_id, contact_id=plan.contact_id, status="processed",
                                reason="thread-adopted")
        for move in plan.stage_moves:
            self._later(StageChange, [dict(deal_id=plan.deal_id, from_stage=move.from_stage, to_stage=move.to_stage,
                                           at=move.at, actor=move.actor, reason=move.reason)])
            self.audit("stage", "deal", plan.deal_id, why, ref=f"D-{plan.deal_id}", old=move.from_stage,
                       new=move.to_stage)
        for flag in plan.flags:
            self._later(DealFlag, [dict(deal_id=plan.deal_id, kind=flag.kind, detail=flag.detail, message_id=msg.id,
                                        created_at=self.now)])
            self.audit("flag", "deal", plan.deal_id, why, kind=flag.kind, detail=flag.detail)
        if plan.revival is not None:
            back = plan.revival
            self.audit(nurture_queries.REVIVE_ACTION, "deal", plan.deal_id, why, ref=f"D-{plan.deal_id}",
                       stage=back.stage, nurtured_at=back.nurtured_at.isoformat(), direction=back.direction,
                       by_rep=back.by_rep)
        if plan.new_address is not None:
            self._insert(ContactAddress, contact_id=plan.contact_id, address=plan.new_address)
            self.audit("add-address", "contact", plan.contact_id, why, address=plan.new_address)
