"""What the weekly review reads: the team's open deals, the week's new, moved and closed deals,
and who gets it. Narrow rows for ``core.review``, by name; nothing here writes.

The week's rows are found by time range on an index each (``ix_deals_created_at``,
``ix_deals_open_close`` on ``closed_at``, ``ix_stage_history_at``); the open deals, in id order,
by the partial index ``ix_deals_open_id`` (id WHERE closed_at IS NULL). Contact and company
names come from scalar subqueries by primary key, as in ``digest_queries``: a join with contacts
would make PostgreSQL hash every contact for a week's few hundred deals.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from inboxcrm.core.review import DealRow, ReviewData
from inboxcrm.store import report_queries
from inboxcrm.store.models import (
    Company,
    Contact,
    ContactAddress,
    Deal,
    Rep,
    RepAddress,
    Stage,
)
from inboxcrm.store.outbox_queries import batches

_owner = aliased(Rep)


def _first_address_of_rep(rep_id_column):
    return (select(RepAddress.address).where(RepAddress.rep_id == rep_id_column)
            .order_by(RepAddress.id).limit(1).scalar_subquery())


_DEAL_COLUMNS = (
    Deal.id, Deal.title, select(Contact.name).where(Contact.id == Deal.contact_id).scalar_subquery(),
    select(ContactAddress.address).where(ContactAddress.contact_id == Deal.contact_id)
    .order_by(ContactAddress.id).limit(1).scalar_subquery(),
    select(Company.name).where(Company.id == Deal.company_id).scalar_subquery(),
    Stage.name, Stage.kind, Deal.value, Deal.source, Deal.owner_rep_id, _owner.name, _first_address_of_rep(_owner.id),
    Deal.next_step, Deal.created_at, Deal.last_inbound_at, Deal.last_outbound_at, Deal.last_stage_change_at,
    Deal.closed_at, Deal.expected_close, Deal.close_slips, Deal.snoozed_until, Deal.lost_reason,
)


def _deals(where) -> select:
    return (select(*_DEAL_COLUMNS)
            .join(Stage, Stage.id == Deal.stage_id)
            .outerjoin(_owner, _owner.id == Deal.owner_rep_id)
            .where(where).order_by(Deal.id))


def statements(since: datetime, until: datetime) -> dict[str, select]:
    """The review's own queries, by name, for the week [since, until)."""
    return {
        "open deals": _deals(Deal.closed_at.is_(None)),
        "created": _deals(Deal.created_at >= since).where(Deal.created_at < until),
        "closed": _deals(Deal.closed_at >= since).where(Deal.closed_at < until, Deal.nurtured_at.is_(None)),
    }


def _rows(session: Session, query) -> tuple[DealRow, ...]:
    return tuple(DealRow(*r) for r in session.execute(query))


def load_review_data(session: Session, since: datetime, until: datetime) -> ReviewData:
    """The week's rows; stages and stage moves as the reports read them (``report_queries``),
    so "advanced" means here what it means there."""
    queries = statements(since, until)
    moves = report_queries.moves_in(session, since, until)
    open_rows = _rows(session, queries["open deals"])
    # most deals moved this week are still open: their rows are loaded already
    by_id = {row.id: row for row in open_rows}
    moved_ids = sorted({m.deal_id for m in moves})
    for chunk in batches([pk for pk in moved_ids if pk not in by_id]):
        by_id.update((row.id, row) for row in _rows(session, _deals(Deal.id.in_(chunk))))
    return ReviewData(
        stages=report_queries.stages(session),
        open_deals=open_rows,
        created=_rows(session, queries["created"]),
        closed=_rows(session, queries["closed"]),
        moves=moves, moved=tuple(by_id[pk] for pk in moved_ids if pk in by_id))


def open_deals(session: Session) -> tuple[DealRow, ...]:
    """The team's open deals alone: what ``inboxcrm review deals`` lists."""
    return _rows(session, _deals(Deal.closed_at.is_(None)))


# -- who gets it ----------------------------------------------------------------------------------

def manager_reps(session: Session) -> list[tuple[int, str, str | None, str | None]]:
    """(id, name, time zone, first address) of every active rep marked as a manager."""
    return list(session.execute(
        select(Rep.id, Rep.name, Rep.timezone, _first_address_of_rep(Rep.id))
        .where(Rep.active.is_(True), Rep.manager.is_(True)).order_by(Rep.id)))


def reps_by_address(session: Session, addresses: Iterable[str]) -> dict[str, tuple[int, str, str | None]]:
    """Address -> (id, name, time zone) of the active reps among ``addresses``."""
    wanted = list(addresses)
    if not wanted:
        return {}
    return {address: (pk, name, zone) for address, pk, name, zone in session.execute(
        select(RepAddress.address, Rep.id, Rep.name, Rep.timezone).join(Rep, Rep.id == RepAddress.rep_id)
        .where(RepAddress.address.in_(wanted), Rep.active.is_(True)))}
