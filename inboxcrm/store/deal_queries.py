"""What ``app.deals`` and ``app.commands`` ask of the deals, contacts and companies, by name.

Each function runs in the session it is given and never commits: the use case owns the
transaction. Rows come back as plain tuples or the ORM objects the caller reads; which deals a
listing keeps (quiet, stalled, snoozed) is the caller's to say, in the arguments.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased, selectinload

from inboxcrm.store.models import (
    Company,
    Contact,
    ContactAddress,
    Deal,
    DealFlag,
    Message,
    MessageCopy,
    Note,
    OutboxMessage,
    Rep,
    Stage,
    StageChange,
)

# -- finding what a lead joins ----------------------------------------------------------------

def company_by_domain(session: Session, domain: str) -> tuple[int, str] | None:
    """(id, name) of the company keyed by ``domain``."""
    row = session.execute(select(Company.id, Company.name).where(Company.domain == domain)).first()
    return tuple(row) if row else None


def company_by_name(session: Session, name: str) -> tuple[int, str] | None:
    """(id, name) of the company named ``name`` in any case."""
    row = session.execute(select(Company.id, Company.name).where(func.lower(Company.name) == name.lower())).first()
    return tuple(row) if row else None


def company_names(session: Session) -> list[str]:
    return list(session.scalars(select(Company.name).order_by(Company.name)))


def contact_by_address(session: Session, address: str) -> tuple[int, Rep | None] | None:
    """(contact id, owner) of the contact with ``address``."""
    row = session.execute(select(Contact.id, Contact.owner_rep_id).join(ContactAddress)
                          .where(ContactAddress.address == address)).first()
    if row is None:
        return None
    return row[0], session.get(Rep, row[1]) if row[1] is not None else None


def open_deal_ids(session: Session, contact_id: int) -> list[int]:
    """The contact's open deals, oldest first."""
    return list(session.scalars(select(Deal.id).where(Deal.contact_id == contact_id, Deal.closed_at.is_(None))
                                .order_by(Deal.id)))


def latest_open_deal_of(session: Session, address: str) -> int | None:
    """The most recently active open deal of the contact with ``address``."""
    return session.scalar(
        select(Deal.id).join(Contact, Contact.id == Deal.contact_id)
        .join(ContactAddress, ContactAddress.contact_id == Contact.id)
        .where(ContactAddress.address == address, Deal.closed_at.is_(None))
        .order_by(Deal.last_activity_at.desc(), Deal.id.desc()).limit(1))


def existing_deal_ids(session: Session, ids: set[int]) -> set[int]:
    return set(session.scalars(select(Deal.id).where(Deal.id.in_(ids)))) if ids else set()


# -- commands by email -------------------------------------------------------------------------

def deal_of_our_mail(session: Session, message_ids: Sequence[str]) -> int | None:
    """The deal of the latest mail we sent (a nudge, an answer) among ``message_ids`` (without
    angle brackets), if it was about one deal."""
    if not message_ids:
        return None
    ids = [f"<{mid}>" for mid in message_ids]
    return session.scalar(select(OutboxMessage.deal_id).where(OutboxMessage.message_id.in_(ids),
                                                              OutboxMessage.deal_id.is_not(None))
                          .order_by(OutboxMessage.id.desc()).limit(1))


def answers_since(session: Session, rep_id: int | None, since: datetime) -> int:
    """Answers to command emails queued for the rep since ``since``."""
    return session.scalar(select(func.count(OutboxMessage.id)).where(
        OutboxMessage.kind == "reply", OutboxMessage.rep_id == rep_id, OutboxMessage.created_at >= since))


# -- listings ----------------------------------------------------------------------------------

def _first_address():
    return (select(ContactAddress.address).where(ContactAddress.contact_id == Contact.id)
            .order_by(ContactAddress.id).limit(1).scalar_subquery())


def deal_rows(session: Session, stage_id: int | None = None, owner_id: int | None = None,
              quiet_before: datetime | None = None, stalled_before: datetime | None = None,
              awake_on: date | None = None, include_closed: bool = False) -> list[tuple]:
    """(id, contact, first address, company, stage, owner, value, next step, due, last activity,
    expected close) in pipeline order, most recently active first. ``quiet_before``/``stalled_before`` keep deals
    with no activity / no stage change since then; ``awake_on`` leaves out deals snoozed past it."""
    owner_rep = aliased(Rep)
    query = (select(Deal.id, Contact.name, _first_address(), Company.name, Stage.name, owner_rep.name, Deal.value,
                    Deal.next_step, Deal.next_step_due, Deal.last_activity_at, Deal.expected_close)
             .join(Contact, Contact.id == Deal.contact_id).join(Stage, Stage.id == Deal.stage_id)
             .outerjoin(Company, Company.id == Deal.company_id).outerjoin(owner_rep, owner_rep.id == Deal.owner_rep_id)
             .order_by(Stage.position, Deal.last_activity_at.desc(), Deal.id))
    if stage_id is not None:
        query = query.where(Deal.stage_id == stage_id)
    if owner_id is not None:
        query = query.where(Deal.owner_rep_id == owner_id)
    if quiet_before is not None:
        query = query.where(Deal.last_activity_at < quiet_before)
    if stalled_before is not None:
        query = query.where(Deal.last_stage_change_at < stalled_before)
    if awake_on is not None:
        query = query.where(or_(Deal.snoozed_until.is_(None), Deal.snoozed_until <= awake_on))
    if not include_closed:
        query = query.where(Deal.closed_at.is_(None))
    return [tuple(r) for r in session.execute(query)]


def flags_of(session: Session, deal_id: int) -> list[DealFlag]:
    return list(session.scalars(select(DealFlag).where(DealFlag.deal_id == deal_id)
                                .order_by(DealFlag.created_at, DealFlag.id)))


def notes_of(session: Session, deal_id: int) -> list[Note]:
    return list(session.scalars(select(Note).where(Note.deal_id == deal_id).order_by(Note.at, Note.id)))


def history_of(session: Session, deal_id: int) -> list[StageChange]:
    return list(session.scalars(select(StageChange).where(StageChange.deal_id == deal_id)
                                .order_by(StageChange.at, StageChange.id)))


def messages_of(session: Session, deal_id: int) -> list[Message]:
    """The deal's messages in the order they were written, with the mailboxes they were seen in."""
    return list(session.scalars(select(Message).where(Message.deal_id == deal_id)
                                .options(selectinload(Message.copies).selectinload(MessageCopy.mailbox))
                                .order_by(func.coalesce(Message.sent_at, Message.received_at), Message.id)))


def _deal_counts(key):
    """Deals and open deals per ``key`` column, as a subquery to outer-join."""
    return (select(key.label("key"), func.count(Deal.id).label("deals"),
                   func.count(Deal.id).filter(Deal.closed_at.is_(None)).label("open"))
            .group_by(key).subquery())


def contact_rows(session: Session) -> list[tuple]:
    """(contact with its addresses, company name, owner name, open deals, deals) by name."""
    counts = _deal_counts(Deal.contact_id)
    return [tuple(r) for r in session.execute(
        select(Contact, Company.name, Rep.name, func.coalesce(counts.c.open, 0), func.coalesce(counts.c.deals, 0))
        .outerjoin(Company, Company.id == Contact.company_id).outerjoin(Rep, Rep.id == Contact.owner_rep_id)
        .outerjoin(counts, counts.c.key == Contact.id)
        .options(selectinload(Contact.addresses)).order_by(func.lower(Contact.name), Contact.id))]


def company_rows(session: Session) -> list[tuple]:
    """(id, name, domain, contacts, open deals, deals) by name."""
    counts = _deal_counts(Deal.company_id)
    people = (select(Contact.company_id.label("key"), func.count(Contact.id).label("n"))
              .group_by(Contact.company_id).subquery())
    return [tuple(r) for r in session.execute(
        select(Company.id, Company.name, Company.domain, func.coalesce(people.c.n, 0),
               func.coalesce(counts.c.open, 0), func.coalesce(counts.c.deals, 0))
        .outerjoin(people, people.c.key == Company.id).outerjoin(counts, counts.c.key == Company.id)
        .order_by(func.lower(Company.name), Company.id))]


def stage_totals(session: Session) -> list[tuple]:
    """(stage, kind, deals, total value) per stage in pipeline order."""
    return [tuple(r) for r in session.execute(
        select(Stage.name, Stage.kind, func.count(Deal.id), func.coalesce(func.sum(Deal.value), 0))
        .outerjoin(Deal, (Deal.stage_id == Stage.id) & Deal.nurtured_at.is_(None))  # Nurture is out of the pipeline
        .group_by(Stage.id, Stage.name, Stage.kind, Stage.position)
        .order_by(Stage.position, Stage.id))]
