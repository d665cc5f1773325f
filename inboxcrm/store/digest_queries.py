"""The digest's database side: loads one rep's rows for ``digest.build_digest``.

Five small Core queries per rep, each served by an index on SQLite and PostgreSQL (migration
0003; ``bench/digest_bench.py`` prints their plans): the rep, the open deals they own, the open
deals whose next step they hold, the messages held in their mailboxes, and the team's totals
per stage. The team totals are the same for every rep, so a run over all reps loads them once
(``team_totals``) and passes them in. Snoozed deals are loaded like the others: they still count
in the pipeline and still show when a step is due, and whether a snooze is over depends on the
rep's local date, so ``build_digest`` leaves them out of the sections a snooze silences.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from inboxcrm.core.digest import (
    BounceRow,
    DealRow,
    DigestData,
    HeldRow,
    RepInfo,
    StageTotal,
)
from inboxcrm.errors import NotFound
from inboxcrm.store.models import (
    Company,
    Contact,
    ContactAddress,
    Deal,
    Mailbox,
    Message,
    MessageCopy,
    Rep,
    RepAddress,
    Stage,
)

_owner = aliased(Rep)

_DEAL_COLUMNS = (
    Deal.id, Deal.title, Contact.name,
    select(ContactAddress.address).where(ContactAddress.contact_id == Deal.contact_id)
    .order_by(ContactAddress.id).limit(1).scalar_subquery(),
    select(Company.name).where(Company.id == Deal.company_id).scalar_subquery(), Stage.name, Deal.value, Deal.source, Deal.score, Deal.owner_rep_id, _owner.name,
    Deal.next_step, Deal.next_step_due, Deal.next_step_owner_id, Deal.created_at, Deal.last_inbound_at,
    Deal.last_outbound_at, Deal.last_stage_change_at, Deal.closed_at, Deal.snoozed_until,
)


def deals_query(where) -> select:
    """Names come from scalar subqueries by primary key: a join let PostgreSQL hash the whole
    companies table for each rep's 150 deals."""
    return (select(*_DEAL_COLUMNS)
            .join(Contact, Contact.id == Deal.contact_id).join(Stage, Stage.id == Deal.stage_id)
            .outerjoin(_owner, _owner.id == Deal.owner_rep_id)
            .where(where, Deal.closed_at.is_(None)))


def statements(rep_id: int) -> dict[str, select]:
    """Every query a digest runs, by name, bound to one rep: the loader runs them, the
    benchmark explains them."""
    return {
        "rep": select(Rep.id, Rep.name, Rep.timezone,
                      select(RepAddress.address).where(RepAddress.rep_id == Rep.id)
                      .order_by(RepAddress.id).limit(1).scalar_subquery())
        .where(Rep.id == rep_id),
        "owned deals": deals_query(Deal.owner_rep_id == rep_id),
        # steps the rep holds on others' deals; their own deals came with the query above
        "next steps held": deals_query(and_(Deal.next_step_owner_id == rep_id,
                                       or_(Deal.owner_rep_id.is_(None), Deal.owner_rep_id != rep_id))),
        "held messages": (select(Message.id, Message.from_address, Message.subject, Message.received_at,
                                 func.min(Mailbox.name))
                          .join(MessageCopy, MessageCopy.message_id == Message.id)
                          .join(Mailbox, Mailbox.id == MessageCopy.mailbox_id)
                          .where(Message.status == "held", Mailbox.owner_rep_id == rep_id)
                          .group_by(Message.id, Message.from_address, Message.subject, Message.received_at)),
        "team totals": team_totals_statement(),
        # addresses of the contacts of the rep's open deals that bounced (app.bounces marks them)
        "bouncing addresses": (select(Deal.id, ContactAddress.address, ContactAddress.bounced_at,
                                      func.coalesce(ContactAddress.bounce_reason, ""))
                               .join(ContactAddress, ContactAddress.contact_id == Deal.contact_id)
                               .where(Deal.owner_rep_id == rep_id, Deal.closed_at.is_(None),
                                      ContactAddress.bounced_at.is_not(None))),
    }


def team_totals_statement() -> select:
    return (select(Deal.stage_id, func.count(), func.coalesce(func.sum(Deal.value), 0))
            .where(Deal.closed_at.is_(None)).group_by(Deal.stage_id))


def team_totals(session: Session) -> tuple[StageTotal, ...]:
    """Open deals per open stage over the whole team, every open stage in pipeline order."""
    totals = {stage_id: (n, Decimal(value)) for stage_id, n, value in session.execute(team_totals_statement())}
    stages = session.execute(select(Stage.id, Stage.name).where(Stage.kind == "open").order_by(Stage.position))
    return tuple(StageTotal(name, *totals.get(stage_id, (0, Decimal(0)))) for stage_id, name in stages)


def load_digest_data(session: Session, rep_id: int, since: datetime,
                     team: Sequence[StageTotal] | None = None) -> DigestData:
    """``since``: when the rep's previous digest was built (its new leads are those after it).
    ``team``: totals already loaded by ``team_totals`` for a run over many reps."""
    queries = statements(rep_id)
    row = session.execute(queries["rep"]).one_or_none()
    if row is None:
        reps = ", ".join(session.scalars(select(Rep.name).order_by(Rep.name))) or "none yet"
        raise NotFound(f"no rep with id {rep_id}; reps are: {reps}")
    rep = RepInfo(row[0], row[1], row[3], row[2] or "UTC")
    deals = [DealRow(*r) for r in session.execute(queries["owned deals"])]
    deals += [DealRow(*r) for r in session.execute(queries["next steps held"])]
    held = tuple(HeldRow(*r) for r in session.execute(queries["held messages"]))
    bounces = tuple(BounceRow(*r) for r in session.execute(queries["bouncing addresses"]))
    return DigestData(rep, tuple(deals), held, tuple(team) if team is not None else team_totals(session), since,
                      bounces)


def open_deal_rows(session: Session, deal_ids: Sequence[int]) -> dict[int, DealRow]:
    """The digest's rows (names, company, stage) of a few open deals, by id: a nudge shows its
    deal as the digest would."""
    if not deal_ids:
        return {}
    return {r[0]: DealRow(*r) for r in session.execute(deals_query(Deal.id.in_(list(deal_ids))))}
