"""The forecast's database side: the rows ``core.forecast.build_report`` is made of, and the last
close date a deal had.

Every statement is served by an index on SQLite and PostgreSQL, so the report stays fast over
100,000 deals: open deals by close date and deals closed in a span read ``ix_deals_open_close``
(closed_at, expected_close); past forecasts read the close date changes of the months looked
back on through ``ix_close_date_history_at``, and which date was in force when they began
through ``ix_close_date_history_close_at`` (close_date, at) and ``ix_close_date_history_deal_at``
(deal_id, at, id).
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Sequence

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session, aliased

from inboxcrm.core.forecast import ClosedDeal, OpenDeal, PastCloseDate, StageOdds
from inboxcrm.store.models import CloseDateChange, Deal, Rep, Stage


def stage_odds(session: Session) -> list[StageOdds]:
    """Every stage in pipeline order, with the probability the admin set."""
    rows = session.execute(select(Stage.id, Stage.kind, Stage.probability).order_by(Stage.position, Stage.id))
    return [StageOdds(*r) for r in rows]


def open_deals_closing_before(session: Session, until: date) -> list[OpenDeal]:
    """Open deals with a close date before ``until``: the months ahead and the slipped, in one
    range of ix_deals_open_close (closed_at IS NULL, expected_close < until)."""
    rows = session.execute(
        select(Deal.id, Rep.name, Deal.stage_id, Deal.value, Deal.expected_close, Deal.close_slips)
        .outerjoin(Rep, Rep.id == Deal.owner_rep_id)
        .where(Deal.closed_at.is_(None), Deal.expected_close.is_not(None), Deal.expected_close < until)
        .order_by(Deal.expected_close, Deal.id))
    return [OpenDeal(*r) for r in rows]


def past_close_dates(session: Session, first: datetime, last: datetime, window: tuple[date, date]
                     ) -> list[PastCloseDate]:
    """What the forecasts at the month starts from ``first`` to ``last`` were made of, for the deals
    open at ``first`` (still open, or closed since), ordered per deal by when each was set:

    - every change made after ``first`` and at or before ``last`` (a range of
      ix_close_date_history_at: six months of changes, however long the history);
    - and each deal's date in force at ``first``, the latest change at or before it, only when that
      date falls in ``window`` (the months looked at): a range of ix_close_date_history_close_at,
      each candidate checked against the deal's latest change by ix_close_date_history_deal_at. A
      date outside the window is counted in no month, and the later changes above replace it
      either way. Older changes are never returned.

    The deal's value and close time come by primary key, per change, and deals closed before
    ``first`` are dropped here rather than in SQL: a join or a filter on deals would make
    PostgreSQL hash every open deal for the few thousand changes of the period."""
    latest = aliased(CloseDateChange)
    in_force_at_first = (select(latest.id).where(latest.deal_id == CloseDateChange.deal_id, latest.at <= first)
                         .order_by(latest.at.desc(), latest.id.desc()).limit(1).scalar_subquery())
    columns = (CloseDateChange.deal_id,
               select(Deal.value).where(Deal.id == CloseDateChange.deal_id).scalar_subquery(),
               select(Deal.closed_at).where(Deal.id == CloseDateChange.deal_id).scalar_subquery(),
               CloseDateChange.close_date, CloseDateChange.at, CloseDateChange.id)
    since = select(*columns).where(CloseDateChange.at > first, CloseDateChange.at <= last)
    in_force = select(*columns).where(CloseDateChange.close_date >= window[0], CloseDateChange.close_date < window[1],
                                      CloseDateChange.at <= first, CloseDateChange.id == in_force_at_first)
    both = union_all(in_force, since).subquery()
    rows = session.execute(select(both).order_by(both.c.deal_id, both.c.at, both.c.id))
    return [PastCloseDate(*r[:5]) for r in rows if r[2] is None or r[2] >= first]  # open at ``first``


def closed_between(session: Session, since: datetime, until: datetime, stage_ids: Sequence[int]) -> list[ClosedDeal]:
    """Deals closed in [since, until) into one of ``stage_ids`` (the won stages)."""
    if not stage_ids:
        return []
    rows = session.execute(select(Deal.closed_at, Deal.value, Deal.stage_id)
                           .where(Deal.closed_at >= since, Deal.closed_at < until, Deal.stage_id.in_(stage_ids),
                                  Deal.nurtured_at.is_(None)))  # never won (open stages only): belt and braces
    return [ClosedDeal(*r) for r in rows]


def last_close_date(session: Session, deal_id: int) -> date | None:
    """The last close date the deal had, even if it was cleared since (a slip is measured from it)."""
    return session.scalar(select(CloseDateChange.close_date)
                          .where(CloseDateChange.deal_id == deal_id, CloseDateChange.close_date.is_not(None))
                          .order_by(CloseDateChange.at.desc(), CloseDateChange.id.desc()).limit(1))
