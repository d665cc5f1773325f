"""The admin's side of the records: reps, mailboxes, stages, lead source costs, routing rules, review, quarantine.

Every function takes a Session and plain values and returns frozen rows, so the CLI, the demo
and the tests drive the same code. The primitives the deal operations share (audit entries,
finding a rep or a stage by what a person typed, moving a deal between stages) live here too,
because stage removal moves deals and must write the same history a rep's move writes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from inboxcrm.core import addresses, rules
from inboxcrm.core.inputs import matching_names, parse_value
from inboxcrm.core.metrics import probability
from inboxcrm.core.views import clip, plural
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.values import MAILBOX_POLICIES, MAILBOX_ROLES, STAGE_KINDS
from inboxcrm.store import audit as store_audit
from inboxcrm.store import team_queries as queries
from inboxcrm.store.db import Session
from inboxcrm.store.models import (
    Deal,
    Mailbox,
    Message,
    Rep,
    RepAddress,
    RoutingRule,
    SourceCost,
    Stage,
    StageChange,
)

PREVIEW_BYTES = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# -- shared primitives ----------------------------------------------------------------------

audit = store_audit.write  # the one audit writer, under the name every deal and admin operation uses


def listed(names) -> str:
    return ", ".join(names) or "none yet"


def check_name(kind: str, name: str) -> str:
    """Names are typed in commands and rules (``owner=round-robin:a,b``): no spaces or commas."""
    if not _NAME.fullmatch(name or ""):
        raise Invalid(f'invalid {kind} name "{name}"; use letters, digits, ".", "_" or "-" '
                      f'(at most 100, starting with a letter or digit) such as sales or alice')
    return name


def short_text(what: str, value: str | None, limit: int, example: str, required: bool = True) -> str:
    """Free text bound for a column of ``limit`` characters: refused rather than silently cut."""
    text = (value or "").strip()
    if (required and not text) or len(text) > limit:
        need = f"1 to {limit}" if required else f"at most {limit}"
        raise Invalid(f'invalid {what} "{clip(text, 40)}"; expected {need} characters such as "{example}"')
    return text


def normalize_address(text: str) -> str:
    address = addresses.normalize(text)
    if address is None:
        raise Invalid(f'invalid address "{text}"; expected an address such as alice@example.com')
    return address


def rep_names(session: Session, active_only: bool = True) -> list[str]:
    return queries.rep_names(session, active_only)


def find_rep(session: Session, name: str, active_only: bool = True) -> Rep:
    """Rep names match regardless of case; an inactive rep cannot be given new work."""
    rep = queries.rep_named(session, name or "")
    if rep is None or (active_only and not rep.active):
        state = " is deactivated" if rep is not None else ""
        raise NotFound(f'unknown rep "{name}"{state}; reps are: {listed(rep_names(session))}')
    return rep


def stages(session: Session) -> list[Stage]:
    return queries.stages_in_order(session)


def find_stage(session: Session, name: str, kinds: tuple[str, ...] = STAGE_KINDS) -> Stage:
    """Exact name in any case, else a unique prefix ("prop" -> Proposal)."""
    candidates = [s for s in stages(session) if s.kind in kinds]
    picked = matching_names(name, [s.name for s in candidates])
    found = [s for s in candidates if s.name in picked]
    names = ", ".join(s.name for s in candidates)
    what = "stage" if kinds == STAGE_KINDS else "/".join(kinds) + " stage"
    if len(found) > 1:
        raise Invalid(f'ambiguous {what} "{name}": it could be {", ".join(s.name for s in found)}; '
                      f'type more of the name')
    if not found:
        raise NotFound(f'unknown {what} "{name}"; {what}s are: {names}')
    return found[0]


def first_stage(session: Session, kind: str) -> Stage:
    return next(s for s in stages(session) if s.kind == kind)


def change_stage(session: Session, now: datetime, actor: str, deal: Deal, stage: Stage, reason: str = "") -> str:
    """Moves a deal, keeping closed_at, lost_reason, the history and the audit consistent.

    A move between two closed stages keeps the original close date; a lost deal always has a reason.
    """
    old = deal.stage
    if old.id == stage.id:
        raise Invalid(f"{deal.ref} is already in {stage.name}")
    reason = short_text("reason", reason, 500, "went with a competitor", required=False)
    lost_reason = (reason or deal.lost_reason or "") if stage.kind == "lost" else None
    if stage.kind == "lost" and not lost_reason:
        raise Invalid(f'a lost deal needs a reason: inboxcrm deal lost {deal.ref} "REASON"')
    if deal.nurtured_at is not None:  # moved by hand: out of Nurture, its close date was the archive's
        deal.nurtured_at = deal.closed_at = None
    deal.stage, deal.last_stage_change_at, deal.lost_reason = stage, now, lost_reason
    deal.closed_at = None if stage.kind == "open" else (deal.closed_at or now)
    session.add(StageChange(deal_id=deal.id, from_stage=old.name, to_stage=stage.name, at=now, actor=actor,
                            reason=reason))
    audit(session, now, actor, "stage", "deal", deal.id, reason, ref=deal.ref, old=old.name, new=stage.name)
    return old.name


def _rules_naming(session: Session, kind: str, name: str) -> list[str]:
    """Rules that would break if the rep, stage or mailbox ``name`` went away."""
    def names(rule: rules.RuleSpec):
        if kind == "rep":
            return [n for a in rule.actions for n in rules.owner_names(a)]
        if kind == "stage":
            return [a.value for a in rule.actions if a.key == "stage"]
        return [c.value for c in rule.conditions if c.key == "mailbox"]
    return [r.name for r in queries.load_rule_specs(session) if name in names(r)]


def _refuse_if_in_rules(session: Session, kind: str, name: str) -> None:
    used = _rules_naming(session, kind, name)
    if used:
        raise Invalid(f'{kind} "{name}" is named in rule {", ".join(used)}; change or remove the rule first '
                      f'(inboxcrm rule remove NAME)')


@dataclass(frozen=True)
class Removed:
    """What a remove did: deleted, or (for a rep still named on records) deactivated."""

    entity: str
    name: str
    deactivated: bool = False
    note: str = ""


# -- reps -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RepRow:
    name: str
    emails: tuple[str, ...]
    timezone: str
    active: bool
    open_deals: int
    manager: bool = False  # gets the weekly pipeline review


def add_rep(session: Session, now: datetime, actor: str, name: str, emails: list[str],
            timezone: str = "UTC", manager: bool = False) -> RepRow:
    check_name("rep", name)
    if not emails:
        raise Invalid(f'rep "{name}" needs at least one address: --email {name}@example.com')
    addresses = list(dict.fromkeys(normalize_address(e) for e in emails))
    try:
        ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise Invalid(f'unknown timezone "{timezone}"; expected an IANA name such as UTC or Europe/Berlin') from None
    clash = queries.rep_named(session, name)
    if clash is not None:
        raise Invalid(f'rep "{clash.name}" already exists; reps are: {listed(rep_names(session, False))}')
    taken = queries.address_owner(session, addresses)
    if taken is not None:
        raise Invalid(f"address {taken[0]} already belongs to rep {taken[1]}")
    rep = Rep(name=name, timezone=timezone, active=True, created_at=now, manager=manager,
              addresses=[RepAddress(address=a) for a in addresses])
    session.add(rep)
    session.flush()
    audit(session, now, actor, "create", "rep", rep.id, name=name, emails=addresses, timezone=timezone,
          manager=manager)
    return RepRow(name, tuple(addresses), timezone, True, 0, manager)


def list_reps(session: Session) -> list[RepRow]:
    rows = queries.reps_with_open_deals(session)
    return [RepRow(r.name, tuple(a.address for a in r.addresses), r.timezone, r.active, n, r.manager)
            for r, n in rows]


def set_manager(session: Session, now: datetime, actor: str, name: str, manager: bool) -> RepRow:
    """A manager gets the weekly pipeline review by email; any active rep can be one."""
    rep = find_rep(session, name)
    if rep.manager == manager:
        raise Invalid(f'rep {rep.name} is already {"a manager" if manager else "not a manager"}')
    rep.manager = manager
    audit(session, now, actor, "manager", "rep", rep.id, name=rep.name, old=not manager, new=manager)
    session.flush()
    return next(r for r in list_reps(session) if r.name == rep.name)


def remove_rep(session: Session, now: datetime, actor: str, name: str) -> Removed:
    """A rep still named on deals, contacts or mailboxes is deactivated, so history keeps the name."""
    rep = find_rep(session, name, active_only=False)
    if not rep.active:
        raise Invalid(f'rep "{rep.name}" is already deactivated (kept because records name it)')
    _refuse_if_in_rules(session, "rep", rep.name)
    uses = queries.records_naming_rep(session, rep.id)
    held = ", ".join(plural(n, what, "mailboxes" if what == "mailbox" else "") for what, n in uses.items() if n)
    if held:
        rep.active = False
        audit(session, now, actor, "deactivate", "rep", rep.id, name=rep.name, still_named_on=held)
        return Removed("rep", rep.name, True, f"not deleted: still named on {held}")
    audit(session, now, actor, "delete", "rep", rep.id, name=rep.name,
          emails=[a.address for a in rep.addresses])
    session.delete(rep)
    return Removed("rep", rep.name)


# -- mailboxes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MailboxRow:
    name: str
    role: str
    owner: str | None
    source: str
    policy: str
    copies: int
    imap: str | None = None  # "user@host:port" of a synced mailbox; None: fed by import only


def imap_address(connection: dict | None) -> str | None:
    """Where a mailbox is read from, safe to show: the connection holds no secret, and this
    shows only the login and the server."""
    if not connection or not connection.get("host"):
        return None
    port = f":{connection['port']}" if connection.get("port") else ""
    user = f"{connection['user']}@" if connection.get("user") else ""
    return f"{user}{connection['host']}{port}"


def _choice(kind: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise Invalid(f'invalid {kind} "{value}"; expected one of: {", ".join(valid)}')
    return value


def find_mailbox(session: Session, name: str) -> Mailbox:
    row = queries.mailbox_named(session, name)
    if row is None:
        names = listed(queries.mailbox_names(session))
        raise NotFound(f'unknown mailbox "{name}"; mailboxes are: {names}')
    return row


def add_mailbox(session: Session, now: datetime, actor: str, name: str, owner: str | None, role: str,
                source: str | None = None, policy: str | None = None,
                connection: dict | None = None) -> MailboxRow:
    """A capture mailbox (sales@) makes leads by default; a rep's own inbox holds new senders for
    review, because most of what lands there is not sales.

    ``connection`` (``ImapSettings.to_json()``, which names where a secret lives but never holds
    one) makes it a mailbox the daemon syncs; without it, only ``import`` feeds it."""
    check_name("mailbox", name)
    _choice("role", role, MAILBOX_ROLES)
    # A commands mailbox makes no leads at all: every message in it is read as command mail.
    policy = _choice("policy", policy or {"capture": "create", "rep": "review"}.get(role, "ignore"), MAILBOX_POLICIES)
    source = short_text("source", source or (name if role == "capture" else "rep-inbox"), 100, "website")
    if owner is None and role == "rep":
        raise Invalid(f"a rep mailbox needs --owner; reps are: {listed(rep_names(session))}")
    rep = find_rep(session, owner) if owner is not None else None
    if queries.mailbox_named(session, name) is not None:
        raise Invalid(f'mailbox "{name}" already exists; choose another name')
    row = Mailbox(name=name, owner=rep, role=role, default_source=source, new_sender_policy=policy, created_at=now,
                  failures=0)
    if connection is not None:  # assigning None would store JSON 'null', which IS NULL does not find
        row.connection = connection
    session.add(row)
    session.flush()
    audit(session, now, actor, "create", "mailbox", row.id, name=name, owner=rep and rep.name, role=role,
          source=source, policy=policy, imap=imap_address(connection))
    return MailboxRow(name, role, rep and rep.name, source, policy, 0, imap_address(connection))


def connect_mailbox(session: Session, now: datetime, actor: str, name: str, connection: dict) -> MailboxRow:
    """Gives an existing mailbox its IMAP connection, or replaces it (a new secret source, port,
    folders). Positions stay while it is the same account on the same server; another server
    or login starts afresh from its own since date (stored messages are still recognised)."""
    row = find_mailbox(session, name)
    old = row.connection
    same_account = old is not None and (old.get("host"), old.get("user")) == (connection["host"], connection["user"])
    if not same_account:
        queries.forget_positions(session, row.id)
    row.connection = connection
    row.failures, row.failing_since = 0, None
    audit(session, now, actor, "connect", "mailbox", row.id, name=name, imap=imap_address(connection),
          was=imap_address(old), positions="kept" if same_account else "reset")
    copies = queries.copies_in(session, row.id)
    return MailboxRow(row.name, row.role, row.owner and row.owner.name, row.default_source, row.new_sender_policy,
                      copies, imap_address(connection))


def list_mailboxes(session: Session) -> list[MailboxRow]:
    rows = queries.mailboxes_with_copies(session)
    return [MailboxRow(m.name, m.role, owner, m.default_source, m.new_sender_policy, n, imap_address(m.connection))
            for m, owner, n in rows]


def remove_mailbox(session: Session, now: datetime, actor: str, name: str, force: bool = False) -> Removed:
    """Refuses while stored messages were seen in the mailbox, unless ``force``: then the
    messages stay (they may be a deal's history) and only the record of this copy goes."""
    row = find_mailbox(session, name)
    _refuse_if_in_rules(session, "mailbox", name)
    copies = queries.copies_in(session, row.id)
    if copies and not force:
        stored = plural(copies, "stored message copy", "stored message copies")
        raise Invalid(f'mailbox "{name}" has {stored}; use --force to remove it '
                      f'anyway (the messages stay, the record that they were seen in "{name}" goes)')
    queries.forget_copies(session, row.id)
    queries.forget_positions(session, row.id)
    audit(session, now, actor, "delete", "mailbox", row.id, name=name, copies_dropped=copies)
    session.delete(row)
    dropped = plural(copies, "message copy", "message copies")
    return Removed("mailbox", name, note=f"dropped {dropped}" if copies else "")


# -- stages ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageRow:
    position: int
    name: str
    kind: str
    deals: int  # deals now in the stage: for an open stage, its open deals
    probability: int = 0  # percent: the chance a deal in it is won, as the pipeline report weighs it
    probability_set: bool = False  # False: the default for its kind and place (core.metrics.probability)
    qualifying: bool = False  # reaching it makes a lead an opportunity


def list_stages(session: Session) -> list[StageRow]:
    rows = queries.stages_with_deals(session)
    open_ids = [s.id for s, _ in rows if s.kind == "open"]

    def chance(stage: Stage) -> int:
        index = open_ids.index(stage.id) if stage.kind == "open" else 0
        return probability(stage.kind, stage.probability, index, len(open_ids))

    return [StageRow(s.position, s.name, s.kind, n, chance(s), s.probability is not None, s.qualifying)
            for s, n in rows]


def _renumber(ordered: list[Stage]) -> None:
    for position, stage in enumerate(ordered, start=1):
        stage.position = position


def _row(session: Session, stage: Stage) -> StageRow:
    session.flush()
    return next(r for r in list_stages(session) if r.name == stage.name)


def add_stage(session: Session, now: datetime, actor: str, name: str, after: str | None = None,
              kind: str = "open") -> StageRow:
    """Without ``after`` an open stage goes before the first closed one, a closed stage last."""
    name = (name or "").strip()
    _choice("kind", kind, STAGE_KINDS)
    if not name or len(name) > 60 or "," in name:
        raise Invalid(f'invalid stage name "{name}"; expected up to 60 characters without commas such as Demo')
    ordered = stages(session)
    clash = next((s for s in ordered if s.name.lower() == name.lower()), None)
    if clash is not None:
        raise Invalid(f'stage "{clash.name}" already exists; stages are: {", ".join(s.name for s in ordered)}')
    index = len(ordered)
    if after is not None:
        index = ordered.index(find_stage(session, after)) + 1
    elif kind == "open":
        index = next((i for i, s in enumerate(ordered) if s.kind != "open"), index)
    stage = Stage(name=name, kind=kind, position=0)
    session.add(stage)
    ordered.insert(index, stage)
    _renumber(ordered)
    session.flush()
    audit(session, now, actor, "create", "stage", stage.id, name=name, kind=kind, position=stage.position)
    return _row(session, stage)


def remove_stage(session: Session, now: datetime, actor: str, name: str, move_to: str | None = None) -> Removed:
    stage = find_stage(session, name)
    ordered = stages(session)
    if sum(s.kind == stage.kind for s in ordered) == 1:
        raise Invalid(f'cannot remove {stage.name}: it is the only {stage.kind} stage, and the pipeline needs '
                      f'at least one open, one won and one lost stage')
    _refuse_if_in_rules(session, "stage", stage.name)
    deals = queries.deals_in_stage(session, stage.id)
    others = [s.name for s in ordered if s.kind == stage.kind and s.id != stage.id]
    if deals and move_to is None:
        raise Invalid(f'stage {stage.name} has {plural(len(deals), "deal")}; move them with --move-to STAGE '
                      f'(one of: {", ".join(others)})')
    target = find_stage(session, move_to, (stage.kind,)) if move_to is not None else None
    if target is not None and target.id == stage.id:
        raise Invalid(f'--move-to must be another {stage.kind} stage: {", ".join(others)}')
    heir = _qualifying_heir(ordered, stage) if stage.qualifying else None
    if heir is not None:
        stage.qualifying, heir.qualifying = False, True
    for deal in deals:
        change_stage(session, now, actor, deal, target, f"stage {stage.name} removed")
    session.flush()
    audit(session, now, actor, "delete", "stage", stage.id, name=stage.name, kind=stage.kind,
          moved=len(deals), move_to=target and target.name, qualifying_to=heir and heir.name)
    session.delete(stage)
    _renumber([s for s in ordered if s.id != stage.id])
    moved = [f"moved {plural(len(deals), 'deal')} to {target.name}"] if deals else []
    marked = [f"{heir.name} is now the qualifying stage"] if heir is not None else []
    return Removed("stage", stage.name, note="; ".join(moved + marked))


def _qualifying_heir(ordered: list[Stage], leaving: Stage) -> Stage:
    """Where the qualifying mark goes when its stage is removed: the next open stage, which keeps
    "reached it or a later stage" closest to what it meant, else the open stage before it (there is
    always another open one: the last cannot be removed)."""
    opened = [s for s in ordered if s.kind == "open"]
    at = opened.index(leaving)
    return opened[at + 1] if at + 1 < len(opened) else opened[at - 1]


def move_stage(session: Session, now: datetime, actor: str, name: str, after: str | None = None,
               before: str | None = None) -> list[StageRow]:
    if (after is None) == (before is None):
        raise Invalid("say where to move the stage: exactly one of --after STAGE or --before STAGE")
    stage = find_stage(session, name)
    anchor = find_stage(session, after if after is not None else before)
    if anchor.id == stage.id:
        raise Invalid(f"cannot move {stage.name} relative to itself")
    ordered = [s for s in stages(session) if s.id != stage.id]
    old = stage.position
    ordered.insert(ordered.index(anchor) + (after is not None), stage)
    _renumber(ordered)
    audit(session, now, actor, "move", "stage", stage.id, name=stage.name, old=old, new=stage.position)
    session.flush()
    return list_stages(session)


PERCENT_FORMS = 'a whole percent from 0 to 100 such as 40, or "default" for the default of its place in the pipeline'


def _percent(text: str) -> int | None:
    word = (text or "").strip().lower().removesuffix("%").strip()
    if word == "default":
        return None
    if not word.isdigit() or int(word) > 100:  # isdigit: no sign, no fraction
        raise Invalid(f'invalid probability "{clip(text or "", 20)}"; expected {PERCENT_FORMS}')
    return int(word)


def set_probability(session: Session, now: datetime, actor: str, name: str, percent: str) -> StageRow:
    """The chance, in percent, that a deal in the open stage ``name`` is won: what the pipeline
    report weighs its value with. Won and lost stages are certain (100 and 0), so they take none."""
    stage = find_stage(session, name)
    if stage.kind != "open":
        opened = ", ".join(s.name for s in stages(session) if s.kind == "open")
        raise Invalid(f"{stage.name} is a {stage.kind} stage, whose deals count {100 if stage.kind == 'won' else 0}%; "
                      f"only open stages take a probability: {opened}")
    new = _percent(percent)
    old, stage.probability = stage.probability, new
    audit(session, now, actor, "probability", "stage", stage.id, name=stage.name, old=old, new=new)
    return _row(session, stage)


def set_qualifying(session: Session, now: datetime, actor: str, name: str) -> tuple[StageRow, str | None]:
    """Marks the open stage ``name`` as the one whose reaching makes a lead an opportunity (the
    funnel's lead-to-opportunity rate); the mark moves, so exactly one stage carries it.
    Returns the stage and the name of the one that had the mark."""
    stage = find_stage(session, name)
    ordered = stages(session)
    if stage.kind != "open":
        opened = ", ".join(s.name for s in ordered if s.kind == "open")
        raise Invalid(f"{stage.name} is a {stage.kind} stage; the qualifying stage is an open one: {opened}")
    if stage.qualifying:
        raise Invalid(f"{stage.name} is already the qualifying stage")
    previous = [s for s in ordered if s.qualifying]
    for other in previous:
        other.qualifying = False
    stage.qualifying = True
    was = previous[0].name if previous else None
    audit(session, now, actor, "qualifying", "stage", stage.id, name=stage.name, old=was)
    return _row(session, stage), was


# -- lead sources and what they cost ----------------------------------------------------------

@dataclass(frozen=True)
class SourceRow:
    source: str
    deals: int
    open_deals: int
    monthly_cost: Decimal | None  # what it costs in the month of today; None: no cost given
    cost_from: date | None  # the month that cost applies from


@dataclass(frozen=True)
class CostChange:
    source: str
    month: date  # the first day of the month the cost applies from
    amount: Decimal
    old: Decimal | None  # what that month's cost was before; None: none was given
    deals: int  # deals recorded with the source so far (0: perhaps a typo, or a source yet to bring leads)


def _current_costs(session: Session, month: date) -> dict[str, SourceCost]:
    """Each source's cost row for ``month``: the latest one from that month or before."""
    current: dict[str, SourceCost] = {}
    for row in queries.source_costs(session):  # by source, then month
        if row.month <= month:
            current[row.source] = row
    return current


def list_sources(session: Session, today: date) -> list[SourceRow]:
    """The sources deals were recorded with, and those given a cost, with this month's cost."""
    counts = {source: (deals, open_deals) for source, deals, open_deals in queries.sources_on_deals(session)
              if source}
    costs = _current_costs(session, today.replace(day=1))
    names = sorted({*counts, *(row.source for row in queries.source_costs(session))}, key=str.lower)
    return [SourceRow(name, *counts.get(name, (0, 0)), Decimal(costs[name].amount) if name in costs else None,
                      costs[name].month if name in costs else None) for name in names]


def set_source_cost(session: Session, now: datetime, actor: str, source: str, amount: str, month: date | None,
                    today: date) -> CostChange:
    """What ``source`` costs per month from ``month`` (default: this one) on, until a later
    month's cost: the sources report sets it against what the source won. A source is matched
    regardless of case, so a cost never lands beside the spelling the deals carry."""
    typed = short_text("source", source, 100, "website")
    on_deals = {name: deals for name, deals, _ in queries.sources_on_deals(session) if name}
    known = [*on_deals, *(row.source for row in queries.source_costs(session))]
    name = next((k for k in known if k.lower() == typed.lower()), typed)
    value = parse_value(amount)
    first = (month or today).replace(day=1)
    row = queries.source_cost(session, name, first)
    old = None if row is None else Decimal(row.amount)
    if row is None:
        row = SourceCost(source=name, month=first)
        session.add(row)
    row.amount, row.at, row.actor = value, now, actor
    session.flush()
    audit(session, now, actor, "cost", "source", row.id, source=name, month=first.isoformat(),
          old=None if old is None else str(old), new=str(value))
    return CostChange(name, first, value, old, on_deals.get(name, 0))


# -- routing rules --------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleRow:
    position: int
    name: str
    conditions: tuple[str, ...]
    actions: tuple[str, ...]


def _canonical_action(session: Session, action: rules.Action) -> rules.Action:
    """Rules store the exact rep and stage names, so the pipeline can match them as written."""
    if action.key == "stage":
        return rules.Action("stage", find_stage(session, action.value, ("open",)).name)
    if action.key == "owner":
        reps = [find_rep(session, n).name for n in rules.owner_names(action)]
        prefix = "round-robin:" if action.value.startswith("round-robin:") else ""
        return rules.Action("owner", prefix + ",".join(reps))
    return action


def _canonical_condition(session: Session, condition: rules.Condition) -> rules.Condition:
    if condition.key == "mailbox":
        find_mailbox(session, condition.value)
    return condition


def add_rule(session: Session, now: datetime, actor: str, name: str, when: list[str], then: list[str]) -> RuleRow:
    """Conditions may be empty (the rule matches every message); actions may not."""
    check_name("rule", name)
    if queries.rule_exists(session, name):
        raise Invalid(f'rule "{name}" already exists; remove it first or choose another name')
    rules.check_parts(when, then)
    conditions = [_canonical_condition(session, rules.parse_condition(c)) for c in when]
    actions = [_canonical_action(session, rules.parse_action(a)) for a in then]
    if not actions:
        raise Invalid("a rule needs at least one --then ACTION; actions are: " + "; ".join(rules.ACTIONS.values()))
    position = queries.last_rule_position(session) + 1
    row = RoutingRule(name=name, position=position, conditions=[[c.key, c.value] for c in conditions],
                      actions=[[a.key, a.value] for a in actions], round_robin_next=0, created_at=now)
    session.add(row)
    session.flush()
    audit(session, now, actor, "create", "rule", row.id, name=name, conditions=row.conditions, actions=row.actions)
    return RuleRow(position, name, tuple(map(str, conditions)), tuple(map(str, actions)))


def list_rules(session: Session) -> list[RuleRow]:
    return [RuleRow(i, r.name, tuple(map(str, r.conditions)), tuple(map(str, r.actions)))
            for i, r in enumerate(queries.load_rule_specs(session), start=1)]


def remove_rule(session: Session, now: datetime, actor: str, name: str) -> Removed:
    ordered = queries.rules_in_order(session)
    row = next((r for r in ordered if r.name == name), None)
    if row is None:
        raise NotFound(f'unknown rule "{name}"; rules are: {listed(r.name for r in ordered)}')
    audit(session, now, actor, "delete", "rule", row.id, name=name, conditions=row.conditions, actions=row.actions)
    session.delete(row)
    for position, rule in enumerate((r for r in ordered if r is not row), start=1):
        rule.position = position
    return Removed("rule", name)


# -- review and quarantine ------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewRow:
    id: int
    date: datetime
    from_address: str
    subject: str
    mailboxes: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    date: datetime
    from_address: str
    subject: str
    reason: str
    detail: str
    size: int


@dataclass(frozen=True)
class QuarantineDetail:
    message: QuarantineRow
    message_id: str
    mailboxes: tuple[str, ...]
    raw_stored: bool
    preview: str  # the first PREVIEW_BYTES of the raw message, undecodable bytes replaced
    truncated: bool


def _mailbox_names(message: Message) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.mailbox.name for c in message.copies))


def list_review(session: Session) -> list[ReviewRow]:
    return [ReviewRow(m.id, m.sent_at or m.received_at, m.from_address, m.subject, _mailbox_names(m), m.reason or "")
            for m in queries.messages_with_status(session, "held")]


def _quarantine_row(m: Message) -> QuarantineRow:
    return QuarantineRow(m.id, m.sent_at or m.received_at, m.from_address, m.subject, m.reason or "",
                         m.detail or "", m.size)


def list_quarantine(session: Session) -> list[QuarantineRow]:
    return [_quarantine_row(m) for m in queries.messages_with_status(session, "quarantined")]


def show_quarantined(session: Session, pk: int) -> QuarantineDetail:
    m = session.get(Message, pk)
    if m is None or m.status != "quarantined":
        ids = listed(str(r.id) for r in list_quarantine(session))
        raise NotFound(f'no quarantined message {pk}; quarantined messages are: {ids} (see "inboxcrm quarantine list")')
    raw = m.raw or b""
    return QuarantineDetail(_quarantine_row(m), m.message_id, _mailbox_names(m), m.raw is not None,
                            raw[:PREVIEW_BYTES].decode("utf-8", errors="replace"), len(raw) > PREVIEW_BYTES)


def stored_raw(session: Session, message_id: str) -> bytes:
    """The raw bytes of a stored message, by its Message-ID with or without the angle brackets."""
    wanted = message_id.strip().removeprefix("<").removesuffix(">")
    row = queries.message_by_message_id(session, wanted)
    if row is None:
        raise NotFound(f'no stored message with Message-ID <{wanted}>; give a Message-ID from "inboxcrm deal show" '
                       f"or the path of an .eml file")
    if row.raw is None:
        raise Invalid(f"message <{wanted}> was stored without its raw bytes (pipeline.store_raw = false)")
    return row.raw
