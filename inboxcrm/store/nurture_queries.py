"""What ``app.nurture`` reads and writes: open deals gone quiet, the deals in Nurture, the move
there and back, and the revivals whose owners are still to be told. Nothing here commits.

Each query is on an index: quiet open deals by ``last_activity_at`` (a range of
``ix_deals_last_activity_at``, the few open ones among them kept by ``closed_at IS NULL``), the
deals in Nurture by ``ix_deals_nurtured_at``, recent revivals by the audit log's ``at``.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from inboxcrm.core.nurture import Candidate
from inboxcrm.store.models import AuditEntry, Company, Contact, ContactAddress, Deal, Rep, Stage

REVIVE_ACTION = "nurture-revive"  # the audit action the intake writes when mail brings a deal back

_owner = aliased(Rep)


def quiet_open_deals(session: Session, inactive_before: datetime) -> list[Candidate]:
    """Open deals whose last activity is at or before ``inactive_before``; whether each is cold
    (a snooze) is ``core.nurture``'s to say."""
    rows = session.execute(
        select(Deal.id, Deal.title, Stage.name, _owner.name, Deal.last_activity_at, Deal.snoozed_until)
        .join(Stage, Stage.id == Deal.stage_id).outerjoin(_owner, _owner.id == Deal.owner_rep_id)
        .where(Deal.last_activity_at <= inactive_before, Deal.closed_at.is_(None)))
    return [Candidate(*row) for row in rows]


def move_to_nurture(session: Session, deal_ids: Sequence[int], at: datetime) -> int:
    """Closes these deals into Nurture at ``at``; a deal closed meanwhile (won, lost, another
    archive) is left alone. Returns how many moved."""
    if not deal_ids:
        return 0
    result = session.execute(update(Deal).where(Deal.id.in_(list(deal_ids)), Deal.closed_at.is_(None))
                             .values(nurtured_at=at, closed_at=at).execution_options(synchronize_session=False))
    return result.rowcount


def nurtured_rows(session: Session) -> list[tuple]:
    """(id, title, contact, first address, company, stage, owner, value, nurtured_at,
    last_activity_at) of every deal in Nurture, the most recently moved first."""
    first_address = (select(ContactAddress.address).where(ContactAddress.contact_id == Deal.contact_id)
                     .order_by(ContactAddress.id).limit(1).scalar_subquery())
    return [tuple(r) for r in session.execute(
        select(Deal.id, Deal.title, select(Contact.name).where(Contact.id == Deal.contact_id).scalar_subquery(),
               first_address, select(Company.name).where(Company.id == Deal.company_id).scalar_subquery(),
               Stage.name, _owner.name, Deal.value, Deal.nurtured_at, Deal.last_activity_at)
        .join(Stage, Stage.id == Deal.stage_id).outerjoin(_owner, _owner.id == Deal.owner_rep_id)
        .where(Deal.nurtured_at.is_not(None)).order_by(Deal.nurtured_at.desc(), Deal.id.desc()))]


def revivals_since(session: Session, since: datetime) -> list[tuple[int, datetime, dict]]:
    """(deal id, when, detail) of every return from Nurture recorded since ``since``."""
    return [tuple(r) for r in session.execute(
        select(AuditEntry.entity_id, AuditEntry.at, AuditEntry.detail)
        .where(AuditEntry.at >= since, AuditEntry.action == REVIVE_ACTION, AuditEntry.entity == "deal")
        .order_by(AuditEntry.at, AuditEntry.id))]


def owner_of(session: Session, deal_id: int) -> int | None:
    return session.scalar(select(Deal.owner_rep_id).where(Deal.id == deal_id))
