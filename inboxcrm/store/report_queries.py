"""The manager's reports' database side: narrow rows for ``core.metrics``, each query on an index.

A report covers a period of a database that may hold 100,000 deals and 500,000 stage changes,
so nothing here reads a whole large table: deals come by their creation date
(``ix_deals_created_at``), their close date (``ix_deals_open_stage`` and ``ix_deals_open_close``
lead with ``closed_at``, which also serves ``closed_at IS NULL``; a deal in Nurture is closed, and
``nurtured_at IS NULL`` keeps it out of the period's won and lost) or their id; stage changes by
their date (``ix_stage_history_at``) or their deal (``ix_stage_history_deal_id``). Messages are
never read: the deal row already carries its first response and its latest emails each way.
Only the small tables (stages, reps, source_costs) are read whole. ``statements`` names every
query so the benchmark can EXPLAIN them.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from inboxcrm.core.metrics import CostRow, DealFact, Move, OpenDeal, OpenTotal, StageInfo, WaitingDeal
from inboxcrm.store.models import Deal, Rep, SourceCost, Stage, StageChange
from inboxcrm.store.outbox_queries import batches

_FACT_COLUMNS = (Deal.id, Deal.stage_id, Deal.source, Deal.owner_rep_id, Deal.value, Deal.created_at,
                 Deal.closed_at, Deal.lost_reason, Deal.first_response_at)
_MOVE_COLUMNS = (StageChange.id, StageChange.deal_id, StageChange.from_stage, StageChange.to_stage, StageChange.at)
_BREAKDOWN = {"stage": None, "rep": Deal.owner_rep_id, "source": Deal.source}


def open_totals_statement(by: str) -> Select:
    group = _BREAKDOWN[by]
    columns = (Deal.stage_id, func.count(), func.coalesce(func.sum(Deal.value), 0))
    if group is None:
        return select(*columns).where(Deal.closed_at.is_(None)).group_by(Deal.stage_id)
    return select(group, *columns).where(Deal.closed_at.is_(None)).group_by(group, Deal.stage_id)


def created_statement(since: datetime, until: datetime) -> Select:
    return select(*_FACT_COLUMNS).where(Deal.created_at >= since, Deal.created_at < until)


def closed_statement(since: datetime, until: datetime) -> Select:
    """Deals won or lost in the period; a deal moved to Nurture is closed too, but neither."""
    return select(*_FACT_COLUMNS).where(Deal.closed_at >= since, Deal.closed_at < until, Deal.nurtured_at.is_(None))


def moves_statement(since: datetime, until: datetime) -> Select:
    return select(*_MOVE_COLUMNS).where(StageChange.at >= since, StageChange.at < until)


def history_statement(deal_ids: Sequence[int], before: datetime | None = None) -> Select:
    stmt = select(*_MOVE_COLUMNS).where(StageChange.deal_id.in_(list(deal_ids)))
    return stmt if before is None else stmt.where(StageChange.at < before)


def deals_statement(deal_ids: Sequence[int]) -> Select:
    return select(*_FACT_COLUMNS).where(Deal.id.in_(list(deal_ids)))


def open_ages_statement() -> Select:
    return select(Deal.stage_id, Deal.created_at, Deal.last_stage_change_at).where(Deal.closed_at.is_(None))


def waiting_statement() -> Select:
    return select(Deal.id, Deal.title, Deal.owner_rep_id, Deal.last_inbound_at).where(
        Deal.closed_at.is_(None), Deal.last_inbound_at.is_not(None),
        or_(Deal.last_outbound_at.is_(None), Deal.last_inbound_at > Deal.last_outbound_at))


def statements(since: datetime, until: datetime, sample_ids: Sequence[int] = (1, 2, 3)) -> dict[str, Select]:
    """Every query the reports run over a large table, by name (``sample_ids`` stand in for a
    chunk of deal ids): the loaders below run them, the benchmark EXPLAINs them."""
    return {
        "open totals by stage": open_totals_statement("stage"),
        "open totals by rep": open_totals_statement("rep"),
        "open totals by source": open_totals_statement("source"),
        "open ages": open_ages_statement(),
        "waiting": waiting_statement(),
        "created in period": created_statement(since, until),
        "closed in period": closed_statement(since, until),
        "moves in period": moves_statement(since, until),
        "history of deals": history_statement(sample_ids),
        "history of deals before": history_statement(sample_ids, since),
        "deals by id": deals_statement(sample_ids),
    }


# -- loaders ---------------------------------------------------------------------------------

def stages(session: Session) -> tuple[StageInfo, ...]:
    rows = session.execute(select(Stage.id, Stage.name, Stage.position, Stage.kind, Stage.probability,
                                  Stage.qualifying).order_by(Stage.position, Stage.id))
    return tuple(StageInfo(*row) for row in rows)


def rep_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Rep.id, Rep.name)).all())


def source_costs(session: Session) -> tuple[CostRow, ...]:
    rows = session.execute(select(SourceCost.source, SourceCost.month, SourceCost.amount))
    return tuple(CostRow(source, month, Decimal(str(amount))) for source, month, amount in rows)


def open_totals(session: Session, by: str) -> tuple[OpenTotal, ...]:
    """Open deals per stage (and per owner id or source when ``by`` says so)."""
    rows = session.execute(open_totals_statement(by))
    if _BREAKDOWN[by] is None:
        return tuple(OpenTotal(None, stage_id, n, Decimal(str(value))) for stage_id, n, value in rows)
    return tuple(OpenTotal(group, stage_id, n, Decimal(str(value))) for group, stage_id, n, value in rows)


def open_deals(session: Session) -> tuple[OpenDeal, ...]:
    return tuple(OpenDeal(*row) for row in session.execute(open_ages_statement()))


def _fact(row) -> DealFact:
    value = row[4]
    return DealFact(row[0], row[1], row[2] or "", row[3], None if value is None else Decimal(str(value)), *row[5:])


def created_in(session: Session, since: datetime, until: datetime) -> tuple[DealFact, ...]:
    return tuple(_fact(row) for row in session.execute(created_statement(since, until)))


def closed_in(session: Session, since: datetime, until: datetime) -> tuple[DealFact, ...]:
    return tuple(_fact(row) for row in session.execute(closed_statement(since, until)))


def moves_in(session: Session, since: datetime, until: datetime) -> tuple[Move, ...]:
    return tuple(Move(*row) for row in session.execute(moves_statement(since, until)))


def history_of(session: Session, deal_ids: Sequence[int], before: datetime | None = None) -> tuple[Move, ...]:
    """Every stage change of these deals (before ``before``), a chunk of ids per query."""
    ids = sorted(set(deal_ids))
    return tuple(Move(*row) for chunk in batches(ids) for row in session.execute(history_statement(chunk, before)))


def deals_by_id(session: Session, deal_ids: Sequence[int]) -> tuple[DealFact, ...]:
    ids = sorted(set(deal_ids))
    return tuple(_fact(row) for chunk in batches(ids) for row in session.execute(deals_statement(chunk)))


def waiting(session: Session) -> tuple[WaitingDeal, ...]:
    return tuple(WaitingDeal(pk, title or "", owner, since) for pk, title, owner, since
                 in session.execute(waiting_statement()))
