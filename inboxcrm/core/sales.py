"""The sales rules of intake: what one more message does to its deal, decided as values.

``decide`` says which deal a message belongs to (or that it starts one); this module says what
that means for the deal: who owns a new lead (a round-robin rule's turn), where it starts, the
counters and timestamps the digest reads, New -> Contacted on the first reply, the rep's earlier
mail of the thread joining a new deal, flags a rep must look at, a snoozed deal waking up, a
contact learning a new address, and a deal in Nurture coming back (``core.nurture``). The store
looks up the facts, calls these functions and writes the ``Plan`` they return; it decides
nothing, so each rule is tested here with plain values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from inboxcrm.core import nurture, scoring
from inboxcrm.core.decide import Context, Decision, MailboxInfo

PIPELINE_ACTOR = "pipeline"  # who the records name when the intake, not a rep, changed a deal
# A Date header this far in the future is a sender's broken clock, not a plan.
FUTURE_SLACK = timedelta(days=1)


def activity_time(sent: datetime | None, now: datetime) -> datetime:
    """When the message happened for the deal: its Date, unless missing or implausibly ahead."""
    return sent if sent is not None and sent <= now + FUTURE_SLACK else now


# -- a new deal ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewDeal:
    """Who owns a new lead, where it came from and the stage it starts in."""

    owner: str | None
    owner_id: int | None
    source: str
    stage_id: int
    stage_name: str


def turn_to_take(decision: Decision) -> str | None:
    """The round-robin rule whose turn the store must take for this new deal, or None.

    The turn is taken from the database, not from the rules read at the start of the run:
    another process (an import beside the daemon) may have turned the rotation since. A
    contact's own rep or a rep's outreach decided the owner already, and takes no turn."""
    routing = decision.routing
    return routing.round_robin_rule if decision.owner == routing.owner else None


def new_deal(decision: Decision, mailbox: MailboxInfo, ctx: Context, turn: int | None) -> NewDeal:
    """``turn``: the rotation's counter after the store took the turn (None: no turn taken, or
    the rule was removed meanwhile and what the rules said stands)."""
    routing = decision.routing
    owner = decision.owner
    if turn is not None and routing.round_robin_reps:
        owner = routing.round_robin_reps[(turn - 1) % len(routing.round_robin_reps)]
    stage_id, stage_name = next(((i, n) for i, n, _ in ctx.stages if n == routing.stage), ctx.first_open)
    return NewDeal(owner, ctx.rep_ids.get(owner), routing.source or mailbox.default_source, stage_id, stage_name)


# -- one more message on a deal -----------------------------------------------------------------

@dataclass(frozen=True)
class DealState:
    """The deal as the store holds it before this message, in the columns the rules read."""

    id: int
    contact_id: int
    stage_id: int
    owner_rep_id: int | None
    fit_score: int
    inbound_count: int
    outbound_count: int
    created_at: datetime
    last_activity_at: datetime
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    first_response_at: datetime | None
    nurtured_at: datetime | None = None  # in Nurture since (closed_at is the same instant)


@dataclass(frozen=True)
class ThreadMail:
    """A message of the thread stored before the deal existed, that joined no deal (a rep's
    cold email the prospect now answered)."""

    id: int
    direction: str | None
    sent_at: datetime | None
    from_address: str


@dataclass(frozen=True)
class Activity:
    """What the rules need to know about one message joining ``deal``."""

    decision: Decision
    deal: DealState
    when: datetime  # activity_time of the message
    message_id: str
    earlier: tuple[ThreadMail, ...] = ()  # a new deal's thread mail stored before it (see adopts_thread)
    contact_name: str | None = None  # the deal's contact's name, when may_learn_address


@dataclass(frozen=True)
class StageMove:
    from_stage: str
    to_stage: str
    at: datetime
    actor: str
    reason: str  # the stage history's text


@dataclass(frozen=True)
class Flag:
    kind: str
    detail: str


@dataclass(frozen=True)
class Revival:
    """A deal back from Nurture: in its stage again, open; the owner is told (``app.nurture``)."""

    stage: str
    nurtured_at: datetime
    direction: str | None
    by_rep: str | None  # the rep whose email brought it back; None: the prospect wrote


@dataclass(frozen=True)
class Plan:
    """What to write for one message on a deal; the store writes exactly this."""

    deal_id: int
    contact_id: int
    deal_changes: dict[str, object] = field(hash=False)  # column -> new value
    adopted: tuple[int, ...] = ()  # earlier messages that join the deal
    stage_moves: tuple[StageMove, ...] = ()
    flags: tuple[Flag, ...] = ()
    new_address: str | None = None  # the contact gains this address
    revival: Revival | None = None


def joins_a_deal(decision: Decision) -> bool:
    """Processed mail of a prospect joins a deal (found, or made for it); all else joins none."""
    return decision.status == "processed" and decision.match is not None


def adopts_thread(created: bool, thread_ids: tuple[str, ...]) -> bool:
    """Whether the store must look up the thread's earlier unmatched mail: only a deal this
    message creates can adopt it (an existing deal's mail joined it when it arrived)."""
    return created and bool(thread_ids)


def may_learn_address(decision: Decision) -> bool:
    """A reply in a deal's thread from an address the contact does not have yet: the store
    then looks up the contact's name, which decides whether it is the contact at all."""
    found = decision.match
    return found.via == "thread" and found.contact is None and decision.direction == "inbound"


def plan(activity: Activity, ctx: Context) -> Plan:
    """Counters, activity timestamps, first response, stage, flags, score and adoption for one
    more message on a deal (new or not)."""
    decision, deal, when = activity.decision, activity.deal, activity.when
    found, why = decision.match, f"message <{activity.message_id}>"
    state = _Progress(deal)
    moves: list[StageMove] = []
    flags: list[Flag] = []
    _adopt(state, activity.earlier, ctx, why, moves)
    if found.ambiguous:
        others = ", ".join(f"D-{d}" for d in found.other_open_deals)
        flags.append(Flag("ambiguous-match", f"{found.prospect.email} also has open deals {others}; this message "
                                             f"was attached to the most recent, D-{deal.id}. Move it if that is wrong."))
    changes = state.changes
    if decision.direction == "outbound":
        state.outbound += 1
        changes["last_outbound_at"] = max(filter(None, (state.last_outbound_at, when)))
        if state.first_response_at is None and state.inbound > 0 and when >= state.created_at:
            changes["first_response_at"] = when
            changes["first_response_seconds"] = int((when - state.created_at).total_seconds())
            state.advance(ctx, when, decision.sender_rep, f"first reply, {why}", moves)
        duplicate = _duplicate_outreach(decision, deal, ctx)
        if duplicate is not None:
            flags.append(duplicate)
    else:
        state.inbound += 1
        changes["last_inbound_at"] = max(filter(None, (deal.last_inbound_at, when)))
        changes["snoozed_until"] = None  # the prospect wrote: a snoozed deal wakes up
    revival = _revival(decision, deal, when, ctx)
    if revival is not None:
        changes.update(nurtured_at=None, closed_at=None)
    changes.update(created_at=state.created_at, inbound_count=state.inbound, outbound_count=state.outbound,
                   last_activity_at=max(deal.last_activity_at, when),
                   score=scoring.score(deal.fit_score, state.inbound, state.outbound))
    learned = (found.prospect.email if may_learn_address(decision)
               and same_person(found.prospect.name, activity.contact_name or "") else None)
    return Plan(deal.id, deal.contact_id, changes, tuple(m.id for m in activity.earlier), tuple(moves),
                tuple(flags), learned, revival)


def _revival(decision: Decision, deal: DealState, when: datetime, ctx: Context) -> Revival | None:
    """Mail on a deal in Nurture written after the move brings it back, whoever wrote: the
    prospect answering, or a rep writing to them (that is activity too)."""
    if not nurture.revives(deal.nurtured_at, when):
        return None
    stage = next((n for i, n, _ in ctx.stages if i == deal.stage_id), str(deal.stage_id))
    by_rep = decision.sender_rep if decision.direction == "outbound" else None
    return Revival(stage, deal.nurtured_at, decision.direction, by_rep)


def same_person(sender_name: str, contact_name: str) -> bool:
    """The contact answering from another address (work and home, a new job) writes under
    their own name; a colleague answering in the same thread is someone else."""
    return bool(sender_name) and " ".join(sender_name.lower().split()) == " ".join(contact_name.lower().split())


class _Progress:
    """The deal's values as the rules move them, and the columns changed so far."""

    def __init__(self, deal: DealState):
        self.stage_id, self.created_at = deal.stage_id, deal.created_at
        self.inbound, self.outbound = deal.inbound_count, deal.outbound_count
        self.first_response_at, self.last_outbound_at = deal.first_response_at, deal.last_outbound_at
        self.changes: dict[str, object] = {}

    def advance(self, ctx: Context, when: datetime, actor: str | None, reason: str, moves: list[StageMove]) -> None:
        """The first reply to a New deal makes it Contacted (the first two open stages, by position)."""
        open_stages = [(i, n) for i, n, kind in ctx.stages if kind == "open"]
        if len(open_stages) < 2 or self.stage_id != open_stages[0][0]:
            return
        (_, old), (new_id, new) = open_stages[:2]
        moves.append(StageMove(old, new, when, actor or PIPELINE_ACTOR, reason))
        self.stage_id = new_id
        self.changes.update(stage_id=new_id, last_stage_change_at=when)


def _adopt(state: _Progress, earlier: tuple[ThreadMail, ...], ctx: Context, why: str,
           moves: list[StageMove]) -> None:
    """A rep's cold email stored before the prospect answered joins the new deal, which then
    starts when the rep wrote and counts as contacted: the rep spoke first."""
    if not earlier:
        return
    for mail in earlier:
        state.outbound += mail.direction == "outbound"
        if mail.sent_at and mail.sent_at < state.created_at:
            state.created_at = mail.sent_at
    outreach = [(m.sent_at, m.from_address) for m in earlier if m.direction == "outbound"]
    if not outreach:
        return
    first, sender = min(outreach, key=lambda item: item[0] or state.created_at)
    first = first or state.created_at
    state.first_response_at = state.last_outbound_at = first
    state.changes.update(first_response_at=first, last_outbound_at=first)
    state.advance(ctx, first, ctx.rep_by_address.get(sender), f"the rep wrote first, {why}", moves)


def _duplicate_outreach(decision: Decision, deal: DealState, ctx: Context) -> Flag | None:
    """A rep writing to a prospect whose deal another rep owns: two reps, one customer."""
    sender_id = ctx.rep_ids.get(decision.sender_rep)
    if not sender_id or not deal.owner_rep_id or sender_id == deal.owner_rep_id:
        return None
    owner = next((n for n, i in ctx.rep_ids.items() if i == deal.owner_rep_id), "another rep")
    return Flag("duplicate-outreach",
                f"{decision.sender_rep} wrote to {decision.match.prospect.email}, whose deal {owner} owns")
