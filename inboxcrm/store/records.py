"""The database side of the pipeline: lookups for matching, and applying one Decision.

It knows tables, not sales: what to do was decided in ``decide``; this module records it,
keeps the timestamps and counters the digest reads, and writes the audit trail. It speaks
SQLAlchemy Core rather than the ORM because it runs once per message on the import and sync
hot path, where the ORM's unit of work cost several times the parse itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from inboxcrm.core import scoring
from inboxcrm.core.addresses import company_name
from inboxcrm.core.classify import TeamContext
from inboxcrm.core.decide import Context, Decision, MailboxInfo
from inboxcrm.core.match import ContactInfo
from inboxcrm.core.parse import header_summary
from inboxcrm.core.rules import Action, Condition, Routing, RuleSpec
from inboxcrm.store.db import insert_new
from inboxcrm.store import audit
from inboxcrm.store.models import (
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
from inboxcrm.values import Address, Email, RawMessage

PIPELINE_ACTOR = "pipeline"
# A Date header this far in the future is a sender's broken clock, not a plan.
FUTURE_SLACK = timedelta(days=1)


def load_rule_specs(session: Session) -> tuple[RuleSpec, ...]:
    rows = session.scalars(select(RoutingRule).order_by(RoutingRule.position, RoutingRule.id))
    return tuple(
        RuleSpec(
            name=r.name,
            conditions=tuple(Condition(k, v) for k, v in r.conditions),
            actions=tuple(Action(k, v) for k, v in r.actions),
            round_robin_next=r.round_robin_next,
        )
        for r in rows
    )


def load_context(session: Session, team_domains: Sequence[str], freemail: Sequence[str]) -> Context:
    """Reps, team, stages and rules as values, read once per import run or poll."""
    reps = session.execute(select(RepAddress.address, Rep.name).join(Rep).where(Rep.active.is_(True))).all()
    rep_by_address = {address: name for address, name in reps}
    team = TeamContext(team_domains=frozenset(team_domains), rep_addresses=frozenset(rep_by_address))
    return Context(
        team=team, rep_by_address=rep_by_address, rules=load_rule_specs(session), freemail=frozenset(freemail),
        rep_ids=dict(session.execute(select(Rep.name, Rep.id)).all()),
        stages=tuple(session.execute(select(Stage.id, Stage.name, Stage.kind).order_by(Stage.position)).all()),
    )


def mailbox_info(session: Session, name: str) -> MailboxInfo | None:
    row = session.scalar(select(Mailbox).where(Mailbox.name == name))
    if row is None:
        return None
    return MailboxInfo(id=row.id, name=row.name, role=row.role, owner=row.owner.name if row.owner else None,
                       default_source=row.default_source, policy=row.new_sender_policy, created_at=row.created_at)


def _by_id(model):
    """UPDATE model SET <the keys passed> WHERE id = :pk, compiled once and cached."""
    table = model.__table__
    return update(table).where(table.c.id == bindparam("pk"))


# Lookups run for every message: built once, so each call only binds its parameters.
_THREAD_DEALS = select(Message.message_id, Message.deal_id).where(
    Message.message_id.in_(bindparam("ids", expanding=True)), Message.deal_id.is_not(None))
_CONTACT_BY_ADDRESS = (select(Contact.id, Rep.name)
                       .join(ContactAddress, ContactAddress.contact_id == Contact.id)
                       .outerjoin(Rep, Rep.id == Contact.owner_rep_id)
                       .where(ContactAddress.address == bindparam("address")))
_OPEN_DEALS = (select(Deal.id).where(Deal.contact_id == bindparam("contact_id"), Deal.closed_at.is_(None))
               .order_by(Deal.last_activity_at.desc(), Deal.id.desc()))
_COMPANY_BY_DOMAIN = select(Company.id).where(Company.domain == bindparam("domain"))
_REJECTED = select(RejectedSender.id).where(RejectedSender.address == bindparam("address"))
_MESSAGE_BY_ID = select(Message.id, Message.status, Message.deal_id, Message.reason).where(
    Message.message_id == bindparam("mid"))
_COPY = select(MessageCopy.id).where(MessageCopy.mailbox_id == bindparam("mailbox_id"),
                                     MessageCopy.location == bindparam("location"))
_DEAL = select(
    Deal.id, Deal.contact_id, Deal.stage_id, Deal.owner_rep_id, Deal.fit_score, Deal.inbound_count,
    Deal.outbound_count, Deal.created_at, Deal.last_activity_at, Deal.last_inbound_at,
    Deal.last_outbound_at, Deal.first_response_at,
).where(Deal.id == bindparam("deal_id"))
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
_BLOB_HANDLE_BYTES = 1024 * 1024  # below this the driver's copy is not worth a second statement
_INSERTS: dict[type, object] = {}
_UPDATES: dict[type, object] = {}


@dataclass(frozen=True)
class StoredMessage:
    id: int
    message_id: str
    status: str
    deal_id: int | None
    reason: str | None = None


@dataclass
class Store:
    """One transaction's view of the records. Implements ``decide.DecisionLookup``."""

    session: Session
    now: datetime
    _audit: list[dict] = field(default_factory=list)

    @property
    def conn(self) -> Connection:
        """The session's connection: Core statements skip the ORM's per-statement overhead."""
        return self.session.connection()

    def _one(self, stmt):
        return self.conn.execute(stmt).first()

    # -- lookups -----------------------------------------------------------------------
    def deal_for_thread(self, message_ids: Sequence[str]) -> int | None:
        rows = dict(self.conn.execute(_THREAD_DEALS, {"ids": list(message_ids)}).all())
        return next((rows[m] for m in message_ids if m in rows), None)

    def contact_for_address(self, address: str) -> ContactInfo | None:
        row = self.conn.execute(_CONTACT_BY_ADDRESS, {"address": address}).first()
        return ContactInfo(id=row[0], owner=row[1]) if row else None

    def open_deals(self, contact_id: int) -> Sequence[int]:
        return self.conn.scalars(_OPEN_DEALS, {"contact_id": contact_id}).all()

    def company_for_domain(self, domain: str) -> int | None:
        return self.conn.scalar(_COMPANY_BY_DOMAIN, {"domain": domain})

    def thread_outreach(self, message_ids: Sequence[str]) -> str | None:
        return self.conn.scalar(_THREAD_OUTREACH, {"ids": list(message_ids)})

    def is_rejected_sender(self, address: str) -> bool:
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
        stmt = _UPDATES.get(model)
        if stmt is None:
            stmt = _UPDATES[model] = _by_id(model)
        self.conn.execute(stmt, {"pk": pk, **values})  # SET takes the columns named in the parameters

    def save_raw(self, raw: RawMessage, mailbox_id: int, message_id: str, synthetic: bool,
                 sha256: str, keep_raw: bool = True) -> tuple[StoredMessage, bool]:
        """Store the bytes and the copy before interpreting; (message, True) if never seen before.

        A message read without its body (over the size limit) keeps its real size and is marked
        truncated, so whoever reads it knows the stored bytes are not all of it."""
        pk = self.conn.scalar(insert_new(self.conn.dialect.name, Message.__table__, "message_id"), dict(
            message_id=message_id, synthetic_id=synthetic, sha256=sha256,
            size=raw.full_size if raw.truncated else len(raw.data), truncated=raw.truncated,
            received_at=self.now, status="pending", subject="", from_address=""))
        is_new = pk is not None
        if is_new:
            if keep_raw:
                self._insert_raw(pk, raw.data)
            stored = StoredMessage(pk, message_id, "pending", None)
        else:
            row = self.conn.execute(_MESSAGE_BY_ID, {"mid": message_id}).first()
            stored = StoredMessage(row[0], message_id, row[1], row[2], row[3])
        known = not is_new and self.conn.scalar(
            _COPY, {"mailbox_id": mailbox_id, "location": raw.location}) is not None
        if not known:
            self._insert(MessageCopy, message_id=stored.id, mailbox_id=mailbox_id, folder=raw.folder,
                         location=raw.location, seen_at=self.now)
        return stored, is_new

    def _insert_raw(self, pk: int, data: bytes) -> None:
        """On SQLite the bytes are written through a blob handle: Python's sqlite3 keeps its own copy
        of the last blob bound to a statement until that statement runs again, so a 24 MB message
        would stay in memory through the rest of a backfill."""
        if self.conn.dialect.name != "sqlite" or len(data) < _BLOB_HANDLE_BYTES:
            self.conn.execute(_INSERT_RAW, {"message_id": pk, "data": data})
            return
        self.conn.execute(_INSERT_RAW.values(message_id=pk, data=func.zeroblob(len(data))))
        with self.conn.connection.driver_connection.blobopen("message_raw", "data", pk) as blob:
            blob.write(data)

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
        audit.write_batch(self.conn, self._audit)
        self._audit.clear()

    def apply(self, msg: StoredMessage, email: Email, decision: Decision, mailbox: MailboxInfo,
              ctx: Context) -> int | None:
        """Record the decision; returns the deal id the message joined, if any."""
        when = email.date if email.date and email.date <= self.now + FUTURE_SLACK else self.now
        found = decision.match
        values = dict(subject=email.subject[:5000], from_address=email.from_.email, sent_at=when,
                      status=decision.status, reason=decision.reason, detail=decision.detail[:2000],
                      kind=decision.classification.kind if decision.classification else None,
                      direction=decision.direction, processed_at=self.now,
                      contact_id=found.contact.id if found is not None and found.contact else None)
        deal = None
        if decision.status == "processed" and found is not None:
            why = f"message <{msg.message_id}>"
            deal = self._deal_row(found.deal_id) if found.deal_id else None
            if deal is None and decision.create_deal:
                deal = self._create_deal(email, decision, mailbox, ctx, when, why)
            if deal is not None:
                values.update(deal_id=deal["id"], contact_id=deal["contact_id"])
                self._touch_deal(deal, msg, decision, ctx, when, why)
                if found.via == "thread" and found.contact is None and decision.direction == "inbound":
                    self._learn_address(deal["contact_id"], found.prospect, why)
        self.update_message(msg.id, **values)
        self.flush_audit()
        return deal["id"] if deal else None

    def _learn_address(self, contact_id: int, sender: Address, why: str) -> None:
        """The contact answering in their thread from another address (work and home, a new
        job) gains it, so their next new email matches too. Only when the display name is the
        contact's: a colleague answering in the same thread is someone else."""
        name = self.conn.scalar(select(Contact.name).where(Contact.id == contact_id)) or ""
        if not sender.name or " ".join(sender.name.lower().split()) != " ".join(name.lower().split()):
            return
        self._insert(ContactAddress, contact_id=contact_id, address=sender.email)
        self.audit("add-address", "contact", contact_id, why, address=sender.email)

    def _deal_row(self, deal_id: int) -> dict | None:
        row = self.conn.execute(_DEAL, {"deal_id": deal_id}).first()
        return dict(row._mapping) if row else None

    def _create_deal(self, email: Email, decision: Decision, mailbox: MailboxInfo, ctx: Context,
                     when: datetime, why: str) -> dict:
        found, routing = decision.match, decision.routing
        source = routing.source or mailbox.default_source
        owner = self._take_turn(routing) if decision.owner == routing.owner else decision.owner
        owner_id = ctx.rep_ids.get(owner)
        company_id = found.company_id
        if company_id is None and found.company_domain:
            company_id = self._insert(Company, domain=found.company_domain,
                                      name=company_name(found.company_domain), created_at=self.now)
            self.audit("create", "company", company_id, why, domain=found.company_domain)
        if found.contact is None:
            contact_id = self._insert(Contact, name=found.prospect.name[:200], company_id=company_id,
                                      owner_rep_id=owner_id, source=source, first_seen=when)
            self._insert(ContactAddress, contact_id=contact_id, address=found.prospect.email)
            self.audit("create", "contact", contact_id, why, address=found.prospect.email,
                       owner=owner, source=source)
        else:
            contact_id = found.contact.id
            contact = self._one(select(Contact.company_id, Contact.name).where(Contact.id == contact_id))
            fill = {}
            if contact.company_id is None and company_id is not None:
                fill["company_id"] = company_id
            if not contact.name and found.prospect.name:
                fill["name"] = found.prospect.name[:200]
            if fill:
                self._update(Contact, contact_id, **fill)
        stage_id, stage_name = next(((i, n) for i, n, _ in ctx.stages if n == routing.stage), ctx.first_open)
        fit = scoring.fit_points(company_id is not None, routing.score)
        deal_id = self._insert(
            Deal, title=email.subject[:300], contact_id=contact_id, company_id=company_id, stage_id=stage_id,
            owner_rep_id=owner_id, source=source, fit_score=fit, score=fit, inbound_count=0, outbound_count=0,
            created_at=when, last_activity_at=when, last_stage_change_at=when)
        self._insert(StageChange, deal_id=deal_id, from_stage=None, to_stage=stage_name, at=when,
                     actor=PIPELINE_ACTOR, reason=f"new lead from {why}")
        self.audit("create", "deal", deal_id, why, ref=f"D-{deal_id}", stage=stage_name, owner=owner,
                   source=source, rules=list(routing.fired))
        deal = dict(id=deal_id, contact_id=contact_id, stage_id=stage_id, owner_rep_id=owner_id, fit_score=fit,
                    inbound_count=0, outbound_count=0, created_at=when, last_activity_at=when,
                    last_inbound_at=None, last_outbound_at=None, first_response_at=None)
        self._adopt_thread(deal, email, ctx, why)
        return deal

    def _take_turn(self, routing: Routing) -> str | None:
        """The owner a round-robin rule gives this lead, from the rule's counter as it is now:
        the context's copy of the rules was read at the start of the run, and another process
        (an import beside the daemon) may have turned the rotation since."""
        if not routing.round_robin_rule:
            return routing.owner
        turn = self.conn.scalar(update(RoutingRule).where(RoutingRule.name == routing.round_robin_rule)
                                .values(round_robin_next=RoutingRule.round_robin_next + 1)
                                .returning(RoutingRule.round_robin_next))
        if turn is None:  # the rule was removed meanwhile: keep what the rules said
            return routing.owner
        return routing.round_robin_reps[(turn - 1) % len(routing.round_robin_reps)]

    def _adopt_thread(self, deal: dict, email: Email, ctx: Context, why: str) -> None:
        """A rep's cold email stored before the prospect answered joins the new deal, which
        then starts when the rep wrote and counts as contacted: the rep spoke first."""
        if not email.thread_ids:
            return
        earlier = self.conn.execute(_UNMATCHED_IN_THREAD, {"ids": list(email.thread_ids)}).all()
        outreach = [(sent_at, sender) for pk, direction, sent_at, sender in earlier if direction == "outbound"]
        for pk, direction, sent_at, _ in earlier:
            self.update_message(pk, deal_id=deal["id"], contact_id=deal["contact_id"], status="processed",
                                 reason="thread-adopted")
            deal["outbound_count"] += direction == "outbound"
            if sent_at and sent_at < deal["created_at"]:
                deal["created_at"] = sent_at
        if outreach:
            first, sender = min(outreach, key=lambda item: item[0] or deal["created_at"])
            first = first or deal["created_at"]
            deal["first_response_at"] = deal["last_outbound_at"] = first
            moved = self._advance_from_first_stage(deal, ctx, first, ctx.rep_by_address.get(sender), why,
                                                   "the rep wrote first")
            self._update(Deal, deal["id"], first_response_at=first, last_outbound_at=first, **moved)
            deal.update(moved)

    def _touch_deal(self, deal: dict, msg: StoredMessage, decision: Decision, ctx: Context, when: datetime,
                    why: str) -> None:
        """Counters, activity timestamps, first response, flags and score for one more message."""
        found, changes = decision.match, {}
        if found.ambiguous:
            others = ", ".join(f"D-{d}" for d in found.other_open_deals)
            self._flag(deal, msg, "ambiguous-match",
                       f"{found.prospect.email} also has open deals {others}; this message was attached "
                       f"to the most recent, D-{deal['id']}. Move it if that is wrong.")
        if decision.direction == "outbound":
            changes["outbound_count"] = deal["outbound_count"] + 1
            changes["last_outbound_at"] = max(filter(None, (deal["last_outbound_at"], when)))
            if deal["first_response_at"] is None and deal["inbound_count"] > 0 and when >= deal["created_at"]:
                changes["first_response_at"] = when
                changes["first_response_seconds"] = int((when - deal["created_at"]).total_seconds())
                changes.update(self._advance_from_first_stage(deal, ctx, when, decision.sender_rep, why))
            sender_id = ctx.rep_ids.get(decision.sender_rep)
            if sender_id and deal["owner_rep_id"] and sender_id != deal["owner_rep_id"]:
                owner = next((n for n, i in ctx.rep_ids.items() if i == deal["owner_rep_id"]), "another rep")
                self._flag(deal, msg, "duplicate-outreach",
                           f"{decision.sender_rep} wrote to {found.prospect.email}, whose deal {owner} owns")
        else:
            changes["inbound_count"] = deal["inbound_count"] + 1
            changes["last_inbound_at"] = max(filter(None, (deal["last_inbound_at"], when)))
            changes["snoozed_until"] = None  # the prospect wrote: a snoozed deal wakes up
        deal.update(changes)
        for key in ("created_at", "inbound_count", "outbound_count"):  # a new deal may have adopted mail
            changes[key] = deal[key]
        changes["last_activity_at"] = max(deal["last_activity_at"], when)
        changes["score"] = scoring.score(deal["fit_score"], deal["inbound_count"], deal["outbound_count"])
        self._update(Deal, deal["id"], **changes)

    def _advance_from_first_stage(self, deal: dict, ctx: Context, when: datetime, actor: str | None,
                                  why: str, because: str = "first reply") -> dict:
        """The first reply to a New deal makes it Contacted (the first two open stages, by position)."""
        open_stages = [(i, n) for i, n, kind in ctx.stages if kind == "open"]
        if len(open_stages) < 2 or deal["stage_id"] != open_stages[0][0]:
            return {}
        (_, old), (new_id, new) = open_stages[:2]
        self._insert(StageChange, deal_id=deal["id"], from_stage=old, to_stage=new, at=when,
                     actor=actor or PIPELINE_ACTOR, reason=f"{because}, {why}")
        self.audit("stage", "deal", deal["id"], why, ref=f"D-{deal['id']}", old=old, new=new)
        return {"stage_id": new_id, "last_stage_change_at": when}

    def _flag(self, deal: dict, msg: StoredMessage, kind: str, detail: str) -> None:
        self._insert(DealFlag, deal_id=deal["id"], kind=kind, detail=detail, message_id=msg.id, created_at=self.now)
        self.audit("flag", "deal", deal["id"], f"message <{msg.message_id}>", kind=kind, detail=detail)
