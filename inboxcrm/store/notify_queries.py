"""What ``app.notify`` reads to decide digests and nudges: narrow rows, by name.

Nudges are decided every 30 seconds, so each query reads a few columns and puts only the time
range in SQL (served by an index, or one quick scan); the rest is filtered in Python by the
caller, which knows the reps. Nothing here writes.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from inboxcrm.store.models import (
    Deal,
    Mailbox,
    Message,
    MessageCopy,
    OutboxMessage,
    Rep,
    RepAddress,
)
from inboxcrm.store.outbox_queries import batches

_SCHEDULE_COLUMNS = (Rep.id, Rep.name, Rep.timezone, Rep.digest_time, Rep.digest_days, Rep.digest_always,
                     Rep.digest_enabled,
                     select(RepAddress.address).where(RepAddress.rep_id == Rep.id).order_by(RepAddress.id)
                     .limit(1).scalar_subquery())


# -- schedules -------------------------------------------------------------------------------

def active_schedules(session: Session) -> list[tuple]:
    """(id, name, timezone, digest time, days, always, enabled, first address) of every active rep."""
    return list(session.execute(select(*_SCHEDULE_COLUMNS).where(Rep.active.is_(True)).order_by(Rep.id)))


def schedule_of(session: Session, rep_id: int) -> tuple:
    """The same row for one rep, active or not."""
    return session.execute(select(*_SCHEDULE_COLUMNS).where(Rep.id == rep_id)).one()


# -- digests ---------------------------------------------------------------------------------

def previous_digest_at(session: Session, rep_id: int, other_than: str, before: datetime) -> datetime | None:
    """When the rep's latest digest before ``before`` (other than the one under key ``other_than``) was built."""
    return session.scalar(select(func.max(OutboxMessage.created_at)).where(
        OutboxMessage.kind == "digest", OutboxMessage.rep_id == rep_id,
        OutboxMessage.key != other_than, OutboxMessage.created_at < before))


def latest_digests(session: Session, rep_ids: set[int], until: datetime) -> dict[int, datetime]:
    """When each rep's latest digest with something in it (not skipped) was built, up to ``until``."""
    return dict(session.execute(
        select(OutboxMessage.rep_id, func.max(OutboxMessage.created_at))
        .where(OutboxMessage.kind == "digest", OutboxMessage.status != "skipped", OutboxMessage.rep_id.in_(rep_ids),
               OutboxMessage.created_at <= until)
        .group_by(OutboxMessage.rep_id)).all())


# -- nudges ----------------------------------------------------------------------------------

def deals_created_since(session: Session, since: datetime) -> list[tuple]:
    """(id, owner, created_at, closed_at) of the deals created since ``since``."""
    return list(session.execute(select(Deal.id, Deal.owner_rep_id, Deal.created_at, Deal.closed_at)
                                .where(Deal.created_at >= since)))


def deals_written_to_between(session: Session, since: datetime, until: datetime) -> list[tuple]:
    """(id, owner, last inbound, last outbound, closed_at) of the deals whose latest inbound mail
    is dated between ``since`` and ``until``."""
    return list(session.execute(
        select(Deal.id, Deal.owner_rep_id, Deal.last_inbound_at, Deal.last_outbound_at, Deal.closed_at)
        .where(Deal.last_inbound_at >= since, Deal.last_inbound_at <= until)))


def mail_of_deals(session: Session, deal_ids: Iterable[int]) -> list[tuple]:
    """(deal id, direction, sent_at, earliest created_at of the mailboxes holding a copy), one row
    per stored message of these deals."""
    found = []
    for batch in batches(sorted(deal_ids)):
        found += session.execute(
            select(Message.deal_id, Message.direction, Message.sent_at, func.min(Mailbox.created_at))
            .join(MessageCopy, MessageCopy.message_id == Message.id).join(Mailbox, Mailbox.id == MessageCopy.mailbox_id)
            .where(Message.deal_id.in_(batch)).group_by(Message.id, Message.deal_id, Message.direction, Message.sent_at))
    return found


def nudges_sent(session: Session, rep_ids: set[int], day_from: datetime, hour_from: datetime) -> list[tuple]:
    """(rep id, nudges since ``day_from``, nudges since ``hour_from``) of the reps that had any."""
    return list(session.execute(
        select(OutboxMessage.rep_id, func.count(OutboxMessage.id),
               func.sum(case((OutboxMessage.created_at >= hour_from, 1), else_=0)))
        .where(OutboxMessage.kind == "nudge", OutboxMessage.rep_id.in_(rep_ids),
               OutboxMessage.created_at >= day_from)
        .group_by(OutboxMessage.rep_id)))
