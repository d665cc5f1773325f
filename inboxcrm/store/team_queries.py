"""What ``app.team`` asks of the reps, mailboxes, stages, rules, held messages and lead sources, by name.

Each function runs in the session it is given and never commits: the admin's command owns the
transaction. Objects come back as the ORM rows the caller reads and changes; counts as numbers.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.orm import Session, selectinload

from inboxcrm.core.rules import Action, Condition, RuleSpec
from inboxcrm.store.models import (
    Contact,
    Deal,
    FolderPosition,
    Mailbox,
    Message,
    MessageCopy,
    Rep,
    RepAddress,
    RoutingRule,
    SourceCost,
    Stage,
)

# -- rules ------------------------------------------------------------------------------------

def load_rule_specs(session: Session) -> tuple[RuleSpec, ...]:
    """The routing table in evaluation order: the one reader of the rules table, for every pass's
    Context and for the admin's rule listings."""
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


# -- reps -------------------------------------------------------------------------------------

def rep_names(session: Session, active_only: bool = True) -> list[str]:
    query = select(Rep.name).order_by(Rep.name)
    return list(session.scalars(query.where(Rep.active.is_(True)) if active_only else query))


def rep_named(session: Session, name: str) -> Rep | None:
    """The rep called ``name`` in any case, active or not."""
    return session.scalar(select(Rep).where(func.lower(Rep.name) == name.strip().lower()))


def address_owner(session: Session, addresses: list[str]) -> tuple[str, str] | None:
    """(address, rep name) of the first of ``addresses`` a rep already has."""
    row = session.execute(select(RepAddress.address, Rep.name).join(Rep)
                          .where(RepAddress.address.in_(addresses))).first()
    return tuple(row) if row else None


def reps_with_open_deals(session: Session) -> list[tuple[Rep, int]]:
    """Every rep with its addresses and its number of open deals, by name."""
    open_deals = (select(Deal.owner_rep_id, func.count(Deal.id).label("n")).where(Deal.closed_at.is_(None))
                  .group_by(Deal.owner_rep_id).subquery())
    return [tuple(r) for r in session.execute(select(Rep, func.coalesce(open_deals.c.n, 0))
                                              .outerjoin(open_deals, open_deals.c.owner_rep_id == Rep.id)
                                              .options(selectinload(Rep.addresses)).order_by(Rep.name))]


def records_naming_rep(session: Session, rep_id: int) -> dict[str, int]:
    """How many deals (as owner or next-step owner), contacts and mailboxes name the rep."""
    return {
        "deal": session.scalar(select(func.count(Deal.id)).where(
            or_(Deal.owner_rep_id == rep_id, Deal.next_step_owner_id == rep_id))),
        "contact": session.scalar(select(func.count(Contact.id)).where(Contact.owner_rep_id == rep_id)),
        "mailbox": session.scalar(select(func.count(Mailbox.id)).where(Mailbox.owner_rep_id == rep_id)),
    }


# -- mailboxes --------------------------------------------------------------------------------

def mailbox_named(session: Session, name: str) -> Mailbox | None:
    return session.scalar(select(Mailbox).where(Mailbox.name == name))


def mailbox_names(session: Session) -> list[str]:
    return list(session.scalars(select(Mailbox.name).order_by(Mailbox.name)))


def copies_in(session: Session, mailbox_id: int) -> int:
    """Stored message copies seen in the mailbox."""
    return session.scalar(select(func.count(MessageCopy.id)).where(MessageCopy.mailbox_id == mailbox_id))


def forget_positions(session: Session, mailbox_id: int) -> None:
    """The mailbox's folder positions go: the next sync starts afresh from its since date."""
    session.execute(delete(FolderPosition).where(FolderPosition.mailbox_id == mailbox_id))


def forget_copies(session: Session, mailbox_id: int) -> None:
    """The records that messages were seen in the mailbox go; the messages stay."""
    session.execute(delete(MessageCopy).where(MessageCopy.mailbox_id == mailbox_id))


def mailboxes_with_copies(session: Session) -> list[tuple[Mailbox, str | None, int]]:
    """(mailbox, owner name, stored copies) by name."""
    copies = (select(MessageCopy.mailbox_id, func.count(MessageCopy.id).label("n"))
              .group_by(MessageCopy.mailbox_id).subquery())
    return [tuple(r) for r in session.execute(select(Mailbox, Rep.name, func.coalesce(copies.c.n, 0))
                                              .outerjoin(Rep, Rep.id == Mailbox.owner_rep_id)
                                              .outerjoin(copies, copies.c.mailbox_id == Mailbox.id)
                                              .order_by(Mailbox.name))]


# -- stages -----------------------------------------------------------------------------------

def stages_in_order(session: Session) -> list[Stage]:
    return list(session.scalars(select(Stage).order_by(Stage.position, Stage.id)))


def stages_with_deals(session: Session) -> list[tuple[Stage, int]]:
    """Every stage in pipeline order with the deals in it now."""
    return [tuple(r) for r in session.execute(select(Stage, func.count(Deal.id))
                                              .outerjoin(Deal, Deal.stage_id == Stage.id)
                                              .group_by(Stage.id).order_by(Stage.position, Stage.id))]


def deals_in_stage(session: Session, stage_id: int) -> list[Deal]:
    return list(session.scalars(select(Deal).where(Deal.stage_id == stage_id)))


# -- routing rules ----------------------------------------------------------------------------

def rule_exists(session: Session, name: str) -> bool:
    return session.scalar(select(RoutingRule.id).where(RoutingRule.name == name)) is not None


def last_rule_position(session: Session) -> int:
    return session.scalar(select(func.max(RoutingRule.position))) or 0


def rules_in_order(session: Session) -> list[RoutingRule]:
    return list(session.scalars(select(RoutingRule).order_by(RoutingRule.position, RoutingRule.id)))


# -- held and quarantined messages ------------------------------------------------------------

def messages_with_status(session: Session, status: str) -> list[Message]:
    """Messages in ``status``, oldest first, with the mailboxes they were seen in."""
    return list(session.scalars(select(Message).where(Message.status == status)
                                .options(selectinload(Message.copies).selectinload(MessageCopy.mailbox))
                                .order_by(Message.received_at, Message.id)))


def message_by_message_id(session: Session, message_id: str) -> Message | None:
    return session.scalar(select(Message).where(Message.message_id == message_id))


# -- lead sources -----------------------------------------------------------------------------

def sources_on_deals(session: Session) -> list[tuple[str, int, int]]:
    """(source, deals, open deals) for every source deals were recorded with."""
    open_deals = func.sum(case((Deal.closed_at.is_(None), 1), else_=0))
    return [(source, deals, int(open_ or 0)) for source, deals, open_ in session.execute(
        select(Deal.source, func.count(Deal.id), open_deals).group_by(Deal.source).order_by(Deal.source))]


def source_costs(session: Session) -> list[SourceCost]:
    """Every cost given, by source, then the month it applies from."""
    return list(session.scalars(select(SourceCost).order_by(SourceCost.source, SourceCost.month)))


def source_cost(session: Session, source: str, month: date) -> SourceCost | None:
    return session.scalar(select(SourceCost).where(SourceCost.source == source, SourceCost.month == month))
