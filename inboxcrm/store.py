"""The database side of the pipeline: lookups for matching, and applying one Decision.

It knows tables, not sales: what to do was decided in ``decide``; this module records it,
keeps the timestamps and counters the digest reads, and writes the audit trail.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import scoring
from .classify import TeamContext
from .decide import Context, Decision, MailboxInfo
from .match import ContactInfo
from .models import (
    AuditEntry, Company, Contact, ContactAddress, Deal, DealFlag, Mailbox, Message, MessageCopy,
    RejectedSender, Rep, RepAddress, RoutingRule, Stage, StageChange,
)
from .rules import Action, Condition, RuleSpec
from .values import Email, RawMessage

PIPELINE_ACTOR = "pipeline"
# A Date header this far in the future is a sender's broken clock, not a plan.
FUTURE_SLACK = timedelta(days=1)


def company_name(domain: str) -> str:
    """"northwind-traders.example" -> "Northwind Traders": a readable default, editable later."""
    label = domain.split(".")[-2] if domain.count(".") >= 1 else domain
    return " ".join(part.capitalize() for part in label.replace("_", "-").split("-") if part)


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
    """Reps, team and rules as values, read once per import run or poll."""
    reps = session.execute(
        select(RepAddress.address, Rep.name).join(Rep).where(Rep.active.is_(True))
    ).all()
    rep_by_address = {address: name for address, name in reps}
    team = TeamContext(team_domains=frozenset(team_domains), rep_addresses=frozenset(rep_by_address))
    return Context(team=team, rep_by_address=rep_by_address, rules=load_rule_specs(session),
                   freemail=frozenset(freemail))


def mailbox_info(session: Session, name: str) -> MailboxInfo | None:
    row = session.scalar(select(Mailbox).where(Mailbox.name == name))
    if row is None:
        return None
    return MailboxInfo(id=row.id, name=row.name, role=row.role, owner=row.owner.name if row.owner else None,
                       default_source=row.default_source, policy=row.new_sender_policy)


@dataclass
class Store:
    """One transaction's view of the records. Implements ``decide.DecisionLookup``."""

    session: Session
    now: datetime

    # -- lookups -----------------------------------------------------------------------
    def deal_for_thread(self, message_ids: Sequence[str]) -> int | None:
        rows = dict(self.session.execute(
            select(Message.message_id, Message.deal_id)
            .where(Message.message_id.in_(list(message_ids)), Message.deal_id.is_not(None))
        ).all())
        return next((rows[m] for m in message_ids if m in rows), None)

    def contact_for_address(self, address: str) -> ContactInfo | None:
        row = self.session.execute(
            select(Contact.id, Rep.name)
            .join(ContactAddress, ContactAddress.contact_id == Contact.id)
            .outerjoin(Rep, Rep.id == Contact.owner_rep_id)
            .where(ContactAddress.address == address)
        ).first()
        return ContactInfo(id=row[0], owner=row[1]) if row else None

    def open_deals(self, contact_id: int) -> Sequence[int]:
        return self.session.scalars(
            select(Deal.id).where(Deal.contact_id == contact_id, Deal.closed_at.is_(None))
            .order_by(Deal.last_activity_at.desc(), Deal.id.desc())
        ).all()

    def company_for_domain(self, domain: str) -> int | None:
        return self.session.scalar(select(Company.id).where(Company.domain == domain))

    def is_rejected_sender(self, address: str) -> bool:
        return self.session.scalar(select(RejectedSender.id).where(RejectedSender.address == address)) is not None

    def rep_id(self, name: str | None) -> int | None:
        return self.session.scalar(select(Rep.id).where(Rep.name == name)) if name else None

    # -- raw first ---------------------------------------------------------------------
    def save_raw(self, raw: RawMessage, mailbox_id: int, message_id: str, synthetic: bool,
                 sha256: str, keep_raw: bool = True) -> tuple[Message, bool]:
        """Store the bytes and the copy before interpreting; (row, True) if never seen before."""
        row = self.session.scalar(select(Message).where(Message.message_id == message_id))
        is_new = row is None
        if is_new:
            row = Message(message_id=message_id, synthetic_id=synthetic, sha256=sha256,
                          raw=raw.data if keep_raw else None, size=len(raw.data), received_at=self.now,
                          status="pending")
            self.session.add(row)
            self.session.flush()
        known = self.session.scalar(select(MessageCopy.id).where(
            MessageCopy.mailbox_id == mailbox_id, MessageCopy.location == raw.location))
        if known is None:
            self.session.add(MessageCopy(message_id=row.id, mailbox_id=mailbox_id, folder=raw.folder,
                                         location=raw.location, seen_at=self.now))
        return row, is_new

    def quarantine(self, row: Message, reason: str, detail: str) -> None:
        row.status, row.reason, row.detail = "quarantined", reason, detail[:2000]
        row.processed_at = self.now

    # -- applying a decision ---------------------------------------------------------------
    def audit(self, action: str, entity: str, entity_id: int | None, reason: str, **detail) -> None:
        self.session.add(AuditEntry(at=self.now, actor=PIPELINE_ACTOR, action=action, entity=entity,
                                    entity_id=entity_id, detail=detail, reason=reason))

    def apply(self, row: Message, email: Email, decision: Decision, mailbox: MailboxInfo) -> Deal | None:
        when = email.date if email.date and email.date <= self.now + FUTURE_SLACK else self.now
        row.subject, row.from_address, row.sent_at = email.subject[:5000], email.from_.email, when
        row.status, row.reason, row.detail = decision.status, decision.reason, decision.detail[:2000]
        row.kind = decision.classification.kind if decision.classification else None
        row.direction, row.processed_at = decision.direction, self.now
        found = decision.match
        if found is not None and found.contact is not None:
            row.contact_id = found.contact.id
        if decision.status != "processed" or found is None:
            return None
        why = f"message <{row.message_id}>"
        deal = self.session.get(Deal, found.deal_id) if found.deal_id else None
        if deal is None and decision.create_deal:
            deal = self._create_deal(email, decision, mailbox, when, why)
        if deal is None:
            return None
        row.deal_id, row.contact_id = deal.id, deal.contact_id
        if found.ambiguous:
            others = ", ".join(f"D-{d}" for d in found.other_open_deals)
            self._flag(deal, row, "ambiguous-match",
                       f"{found.prospect.email} also has open deals {others}; this message was attached "
                       f"to the most recent, {deal.ref}. Move it if that is wrong.")
        if decision.direction == "outbound":
            self._record_outbound(deal, row, decision, when, why)
        else:
            deal.inbound_count += 1
            deal.last_inbound_at = max(filter(None, (deal.last_inbound_at, when)))
        deal.last_activity_at = max(deal.last_activity_at, when)
        deal.score = scoring.score(deal.fit_score, deal.inbound_count, deal.outbound_count)
        return deal

    def _create_deal(self, email: Email, decision: Decision, mailbox: MailboxInfo, when: datetime,
                     why: str) -> Deal:
        found, routing = decision.match, decision.routing
        source = routing.source or mailbox.default_source
        owner_id = self.rep_id(decision.owner)
        company_id = found.company_id
        if company_id is None and found.company_domain:
            company = Company(domain=found.company_domain, name=company_name(found.company_domain),
                              created_at=self.now)
            self.session.add(company)
            self.session.flush()
            company_id = company.id
            self.audit("create", "company", company.id, why, domain=company.domain)
        if found.contact is None:
            contact = Contact(name=found.prospect.name, company_id=company_id, owner_rep_id=owner_id,
                              source=source, first_seen=when)
            contact.addresses.append(ContactAddress(address=found.prospect.email))
            self.session.add(contact)
            self.session.flush()
            self.audit("create", "contact", contact.id, why, address=found.prospect.email,
                       owner=decision.owner, source=source)
            contact_id = contact.id
        else:
            contact_id = found.contact.id
            contact = self.session.get(Contact, contact_id)
            if contact.company_id is None and company_id is not None:
                contact.company_id = company_id
            if not contact.name and found.prospect.name:
                contact.name = found.prospect.name
        stage = self._stage(routing.stage)
        fit = scoring.fit_points(company_id is not None, routing.score)
        deal = Deal(title=email.subject[:300], contact_id=contact_id, company_id=company_id, stage_id=stage.id,
                    owner_rep_id=owner_id, source=source, fit_score=fit, score=fit, created_at=when,
                    last_activity_at=when, last_stage_change_at=when)
        self.session.add(deal)
        self.session.flush()
        self.session.add(StageChange(deal_id=deal.id, from_stage=None, to_stage=stage.name, at=when,
                                     actor=PIPELINE_ACTOR, reason=f"new lead from {why}"))
        self.audit("create", "deal", deal.id, why, ref=deal.ref, stage=stage.name, owner=decision.owner,
                   source=source, rules=list(routing.fired))
        if routing.round_robin_rule and decision.owner == routing.owner:
            self.session.execute(update(RoutingRule).where(RoutingRule.name == routing.round_robin_rule)
                                 .values(round_robin_next=RoutingRule.round_robin_next + 1))
        self._adopt_thread(deal, email)
        return deal

    def _adopt_thread(self, deal: Deal, email: Email) -> None:
        """A rep's cold email stored before the prospect answered joins the new deal."""
        if not email.thread_ids:
            return
        earlier = self.session.scalars(select(Message).where(
            Message.message_id.in_(list(email.thread_ids)), Message.status == "unmatched")).all()
        for msg in earlier:
            msg.deal_id, msg.contact_id, msg.status, msg.reason = deal.id, deal.contact_id, "processed", "thread-adopted"
            deal.outbound_count += msg.direction == "outbound"
            if msg.sent_at and msg.sent_at < deal.created_at:
                deal.created_at = msg.sent_at

    def _stage(self, name: str | None) -> Stage:
        if name:
            stage = self.session.scalar(select(Stage).where(Stage.name == name))
            if stage is not None:
                return stage
        return self.session.scalars(select(Stage).where(Stage.kind == "open").order_by(Stage.position)).first()

    def _record_outbound(self, deal: Deal, row: Message, decision: Decision, when: datetime, why: str) -> None:
        deal.outbound_count += 1
        deal.last_outbound_at = max(filter(None, (deal.last_outbound_at, when)))
        if deal.first_response_at is None and deal.inbound_count > 0 and when >= deal.created_at:
            deal.first_response_at = when
            deal.first_response_seconds = int((when - deal.created_at).total_seconds())
            self._advance_from_first_stage(deal, when, decision.sender_rep or PIPELINE_ACTOR, why)
        owner = deal.owner.name if deal.owner else None
        if decision.sender_rep and owner and decision.sender_rep != owner:
            self._flag(deal, row, "duplicate-outreach",
                       f"{decision.sender_rep} wrote to {decision.match.prospect.email}, whose deal "
                       f"{owner} owns")

    def _advance_from_first_stage(self, deal: Deal, when: datetime, actor: str, why: str) -> None:
        """The first reply to a New deal makes it Contacted (the first two open stages, by position)."""
        open_stages = self.session.scalars(select(Stage).where(Stage.kind == "open").order_by(Stage.position)).all()
        if len(open_stages) < 2 or deal.stage_id != open_stages[0].id:
            return
        new = open_stages[1]
        self.session.add(StageChange(deal_id=deal.id, from_stage=open_stages[0].name, to_stage=new.name,
                                     at=when, actor=actor, reason=f"first reply, {why}"))
        self.audit("stage", "deal", deal.id, why, ref=deal.ref, old=open_stages[0].name, new=new.name)
        deal.stage_id, deal.last_stage_change_at = new.id, when

    def _flag(self, deal: Deal, row: Message, kind: str, detail: str) -> None:
        self.session.add(DealFlag(deal_id=deal.id, kind=kind, detail=detail, message_id=row.id, created_at=self.now))
        self.audit("flag", "deal", deal.id, f"message <{row.message_id}>", kind=kind, detail=detail)
