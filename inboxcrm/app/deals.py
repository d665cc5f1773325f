"""Deals as reps and the admin handle them by hand: leads, stages, next steps, snoozes, listings.

Functions take a Session and plain values and return frozen rows. Rep actions (a stage move, a
note, a next step, a snooze) count as activity, so a deal someone is working on is not reported
as quiet. The CLI and commands by email call the same functions, so both do the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from inboxcrm.app.team import (
    audit,
    change_stage,
    find_rep,
    find_stage,
    first_stage,
    normalize_address,
    short_text,
)
from inboxcrm.core import forecast, scoring
from inboxcrm.core.addresses import company_name, normalize_domains
from inboxcrm.core.inputs import (  # noqa: F401 - the CLI's names
    CENTS,
    DUE_FORMS,
    REF_HINT,
    SNOOZE_MAX_DAYS,
    parse_due,
    parse_ref,
    parse_value,
)
from inboxcrm.core.match import company_domain
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.store import deal_queries as queries
from inboxcrm.store import forecast_queries
from inboxcrm.store.db import Session
from inboxcrm.store.leads import NewLead, create_lead
from inboxcrm.store.models import CloseDateChange, Deal, Note, Rep, Stage
from inboxcrm.values import Address

# -- parsing what a person typed ------------------------------------------------------------

def get_deal(session: Session, ref: str) -> Deal:
    deal = session.get(Deal, parse_ref(ref))
    if deal is None:
        raise NotFound(f"no deal D-{parse_ref(ref)}; {REF_HINT}")
    return deal


# -- changes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DealChange:
    ref: str
    field: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class LeadAdded:
    ref: str
    contact: str
    address: str
    company: str | None
    stage: str
    owner: str | None
    new_contact: bool
    other_open_deals: tuple[str, ...]  # the contact's deals already open: replies may go to either


def _company(session: Session, address: Address, name: str | None, team_domains: frozenset[str],
             freemail_extra: frozenset[str]) -> tuple[int | None, str | None, str | None]:
    """(existing company id, domain of a company to make, its name). The address's domain names
    the company, unless it is freemail or ours; then only an existing company given by name can
    be linked, since a company is keyed by its domain."""
    domain = company_domain(address, team_domains, freemail_extra)
    if domain is not None:
        found = queries.company_by_domain(session, domain)
        return (found[0], None, found[1]) if found else (None, domain, name or company_name(domain))
    if not name:
        return None, None, None
    found = queries.company_by_name(session, name)
    if found is None:
        known = ", ".join(queries.company_names(session)) or "none yet"
        raise Invalid(f'no company "{name}", and {address.domain} is not a company domain (freemail or the team\'s), '
                      f"so it cannot be made from this address; known companies: {known}")
    return found[0], None, found[1]


def add_lead(session: Session, now: datetime, actor: str, email: str, name: str = "", company: str | None = None,
             owner: str | None = None, source: str = "manual", value: str | None = None, stage: str | None = None,
             team_domains: frozenset[str] = frozenset(), freemail_extra: frozenset[str] = frozenset()) -> LeadAdded:
    """The first rep to own a contact keeps it: ``owner`` owns this deal, and the contact only
    if it had no owner yet. Without ``owner`` the deal goes to the contact's owner."""
    address = Address(normalize_address(email), short_text("name", name, 200, "Ann Smith", required=False))
    company = short_text("company", company, 200, "Northwind Traders", required=False)
    source = short_text("source", source, 100, "website")
    if address.domain in normalize_domains(team_domains):
        raise Invalid(f"{address.email} is a team address; a lead needs an outside address")
    rep = find_rep(session, owner) if owner else None
    start = find_stage(session, stage, ("open",)) if stage else first_stage(session, "open")
    amount = parse_value(value) if value is not None else None
    company_id, new_domain, company_name_ = _company(session, address, company, team_domains, freemail_extra)
    contact = queries.contact_by_address(session, address.email)
    contact_id, contact_owner = contact if contact else (None, None)
    others = tuple(f"D-{i}" for i in queries.open_deal_ids(session, contact_id)) if contact_id else ()
    if rep is None and contact_owner is not None and contact_owner.active:
        rep = contact_owner
    lead = create_lead(session, NewLead(
        actor=actor, prospect=address, title=company_name_ or address.name or address.email, stage_id=start.id,
        stage_name=start.name, source=source, owner_id=rep and rep.id, owner_name=rep and rep.name,
        contact_id=contact_id, company_id=company_id, company_domain=new_domain, company_name=company_name_,
        value=amount, claim_contact=True, history_reason="lead added by hand"), now)
    return LeadAdded(lead.ref, lead.contact_name, address.email, company_name_, start.name, rep and rep.name,
                     lead.new_contact, others)


def _changed(session: Session, now: datetime, actor: str, deal: Deal, field: str, old, new,
             reason: str = "") -> DealChange:
    deal.last_activity_at = max(deal.last_activity_at, now)
    old, new = (None if v is None else str(v) for v in (old, new))
    audit(session, now, actor, field, "deal", deal.id, reason, ref=deal.ref, old=old, new=new)
    return DealChange(deal.ref, field, old, new)


def _move(session: Session, now: datetime, actor: str, ref: str, stage: Stage, reason: str) -> DealChange:
    deal = get_deal(session, ref)
    old = change_stage(session, now, actor, deal, stage, reason)
    deal.last_activity_at = max(deal.last_activity_at, now)
    return DealChange(deal.ref, "stage", old, stage.name)


def set_stage(session: Session, now: datetime, actor: str, ref: str, stage: str, reason: str = "") -> DealChange:
    return _move(session, now, actor, ref, find_stage(session, stage), reason)


def mark_won(session: Session, now: datetime, actor: str, ref: str, reason: str = "") -> DealChange:
    return _move(session, now, actor, ref, first_stage(session, "won"), reason)


def mark_lost(session: Session, now: datetime, actor: str, ref: str, reason: str) -> DealChange:
    if not (reason or "").strip():
        raise Invalid(f'a lost deal needs a reason: inboxcrm deal lost {ref} "REASON"')
    return _move(session, now, actor, ref, first_stage(session, "lost"), reason.strip())


def _next_text(text: str | None, due: date | None, owner: str | None) -> str | None:
    extra = ", ".join(filter(None, (due and f"due {due.isoformat()}", owner and f"owner {owner}")))
    return text and (f"{text} ({extra})" if extra else text)


def _refuse_closed(deal: Deal) -> None:
    if deal.nurtured_at is not None:
        raise Invalid(f"{deal.ref} is in Nurture (since {deal.nurtured_at.date()}); bring it back first: "
                      f"inboxcrm deal revive {deal.ref}")
    if deal.closed_at is not None:
        raise Invalid(f"{deal.ref} is closed ({deal.stage.name}); reopen it first: "
                      f"inboxcrm deal stage {deal.ref} STAGE")


def set_next(session: Session, now: datetime, actor: str, ref: str, text: str, due: date | None = None,
             owner: str | None = None) -> DealChange:
    """Without ``owner`` the step stays with whoever had it, else goes to the deal's owner."""
    deal = get_deal(session, ref)
    text = short_text("next step", text, 500, "send the proposal")
    _refuse_closed(deal)
    rep = find_rep(session, owner) if owner else (deal.next_step_owner or deal.owner)
    old = _next_text(deal.next_step, deal.next_step_due, deal.next_step_owner and deal.next_step_owner.name)
    deal.next_step, deal.next_step_due, deal.next_step_owner = text, due, rep
    return _changed(session, now, actor, deal, "next-step", old, _next_text(text, due, rep and rep.name))


def set_snooze(session: Session, now: datetime, actor: str, ref: str, until: date | None, reason: str = "", *,
               today: date) -> DealChange:
    """Until ``until`` (exclusive) the deal is left out of what says "nothing is happening" (the
    digest's quiet, stalled and no-next-step sections, ``deals list --quiet/--stalled``), not out
    of real work (overdue or due steps, replies owed). ``None`` wakes it, and so does new inbound
    mail. ``today`` is the actor's local date, which only the caller knows (a rep's time zone);
    ``reason`` goes to the audit log (a command email's Message-ID)."""
    deal = get_deal(session, ref)
    if until is not None:
        _refuse_closed(deal)
        latest = today + timedelta(days=SNOOZE_MAX_DAYS)
        if not today < until <= latest:
            raise Invalid(f"cannot snooze {deal.ref} until {until.isoformat()}: expected a date after today "
                          f"({today.isoformat()}) and at most {SNOOZE_MAX_DAYS} days ahead ({latest.isoformat()}), "
                          f"such as in 2 weeks, friday or {(today + timedelta(weeks=2)).isoformat()}")
    old, deal.snoozed_until = deal.snoozed_until, until
    return _changed(session, now, actor, deal, "snooze", old, until, reason)


def set_close(session: Session, now: datetime, actor: str, ref: str, when: date | None, reason: str = "", *,
              today: date) -> DealChange:
    """When the deal is expected to close (``None`` clears it), for the forecast. Moving a date
    that has passed to a later one is a slip: counted on the deal and marked in its close date
    history, which also keeps every date so past forecasts can be rebuilt. The date it is moved
    from is the last one the deal had, so clearing a passed date before setting a new one still
    counts. ``today`` is the actor's local date (the team's on the command line, the rep's by
    email); ``reason`` goes to the audit log (a command email's Message-ID)."""
    deal = get_deal(session, ref)
    _refuse_closed(deal)
    if when is not None and when < today:
        raise Invalid(f"the close date {when.isoformat()} of {deal.ref} has passed; expected today "
                      f"({today.isoformat()}) or later, such as {(today + timedelta(weeks=3)).isoformat()}")
    old = deal.expected_close
    previous = old if old is not None else forecast_queries.last_close_date(session, deal.id)
    slip = forecast.slipped(previous, when, today)
    deal.expected_close = when
    deal.close_slips = (deal.close_slips or 0) + slip
    session.add(CloseDateChange(deal_id=deal.id, close_date=when, at=now, actor=actor, slipped=slip))
    return _changed(session, now, actor, deal, "close-date", old, when, reason)


def set_owner(session: Session, now: datetime, actor: str, ref: str, rep: str) -> DealChange:
    deal = get_deal(session, ref)
    new = find_rep(session, rep)
    old = deal.owner and deal.owner.name
    deal.owner = new
    return _changed(session, now, actor, deal, "owner", old, new.name)


def set_value(session: Session, now: datetime, actor: str, ref: str, value: str) -> DealChange:
    deal = get_deal(session, ref)
    amount = parse_value(value).quantize(CENTS)  # as stored, so old and new print alike
    old, deal.value = deal.value, amount
    return _changed(session, now, actor, deal, "value", old, amount)


def add_note(session: Session, now: datetime, actor: str, ref: str, text: str) -> DealChange:
    deal = get_deal(session, ref)
    if not (text or "").strip():
        raise Invalid('a note needs text, such as "called, they want a demo next week"')
    session.add(Note(deal_id=deal.id, text=text.strip(), actor=actor, at=now))
    return _changed(session, now, actor, deal, "note", None, text.strip())


# -- listings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DealRow:
    ref: str
    contact: str
    address: str
    company: str | None
    stage: str
    owner: str | None
    value: Decimal | None
    next_step: str | None
    next_step_due: date | None
    last_activity_at: datetime
    expected_close: date | None = None


def list_deals(session: Session, now: datetime, stage: str | None = None, owner: str | None = None,
               quiet_days: int | None = None, include_closed: bool = False,
               stalled_days: int | None = None) -> list[DealRow]:
    """Open deals unless ``include_closed`` or a closed ``stage`` is asked for; ``quiet_days``
    keeps open deals with no activity for that many days, ``stalled_days`` those whose stage
    has not changed for that many days. Both leave out deals snoozed past ``now``'s (UTC) date,
    as the digest does."""
    stage_id = owner_id = quiet_before = stalled_before = awake_on = None
    if stage is not None:
        wanted = find_stage(session, stage)
        stage_id = wanted.id
        include_closed = include_closed or wanted.kind != "open"
    if owner is not None:
        owner_id = find_rep(session, owner, active_only=False).id
    for kind, days in (("quiet", quiet_days), ("stalled", stalled_days)):
        if days is not None and days < 1:
            raise Invalid(f"invalid number of {kind} days {days}; expected a whole number of at least 1")
    if quiet_days is not None:
        quiet_before = now - timedelta(days=quiet_days)
    if stalled_days is not None:
        stalled_before = now - timedelta(days=stalled_days)
    if quiet_days is not None or stalled_days is not None:
        include_closed = False
        awake_on = now.astimezone(timezone.utc).date()
    rows = queries.deal_rows(session, stage_id, owner_id, quiet_before, stalled_before, awake_on, include_closed)
    return [DealRow(f"D-{r[0]}", *r[1:]) for r in rows]


@dataclass(frozen=True)
class FlagRow:
    kind: str
    detail: str
    created_at: datetime


@dataclass(frozen=True)
class NoteRow:
    at: datetime
    actor: str
    text: str


@dataclass(frozen=True)
class HistoryRow:
    at: datetime
    from_stage: str | None
    to_stage: str
    actor: str
    reason: str


@dataclass(frozen=True)
class TimelineRow:
    sent_at: datetime | None
    direction: str | None
    from_address: str
    subject: str
    message_id: str
    mailboxes: tuple[str, ...]
    truncated_size: int | None = None  # the real size of a message stored from its headers only


@dataclass(frozen=True)
class DealDetail:
    ref: str
    title: str
    contact: str
    addresses: tuple[str, ...]
    company: str | None
    company_domain: str | None
    stage: str
    stage_kind: str
    owner: str | None
    source: str
    score: int
    fit: int
    engagement: int
    value: Decimal | None
    next_step: str | None
    next_step_due: date | None
    next_step_owner: str | None
    snoozed_until: date | None  # as stored: a date on or before today means awake again
    expected_close: date | None
    close_slips: int  # times the close date was moved later after it had passed
    first_response_seconds: int | None
    created_at: datetime
    last_activity_at: datetime
    last_stage_change_at: datetime
    closed_at: datetime | None
    lost_reason: str | None
    flags: tuple[FlagRow, ...]
    notes: tuple[NoteRow, ...]
    history: tuple[HistoryRow, ...]
    messages: tuple[TimelineRow, ...]
    nurtured_at: datetime | None = None  # in Nurture since (closed_at is the same instant)


def show_deal(session: Session, ref: str) -> DealDetail:
    deal = get_deal(session, ref)

    def name(rep: Rep | None) -> str | None:
        return rep.name if rep else None

    messages = queries.messages_of(session, deal.id)
    return DealDetail(
        ref=deal.ref, title=deal.title, contact=deal.contact.name,
        addresses=tuple(a.address for a in deal.contact.addresses),
        company=deal.company and deal.company.name, company_domain=deal.company and deal.company.domain,
        stage=deal.stage.name, stage_kind=deal.stage.kind, owner=name(deal.owner), source=deal.source,
        score=deal.score, fit=deal.fit_score,
        engagement=scoring.engagement_points(deal.inbound_count, deal.outbound_count),
        value=deal.value, next_step=deal.next_step, next_step_due=deal.next_step_due,
        next_step_owner=name(deal.next_step_owner), snoozed_until=deal.snoozed_until,
        expected_close=deal.expected_close, close_slips=deal.close_slips or 0,
        first_response_seconds=deal.first_response_seconds,
        created_at=deal.created_at, last_activity_at=deal.last_activity_at,
        last_stage_change_at=deal.last_stage_change_at, closed_at=deal.closed_at, lost_reason=deal.lost_reason,
        flags=tuple(FlagRow(f.kind, f.detail, f.created_at) for f in queries.flags_of(session, deal.id)),
        notes=tuple(NoteRow(n.at, n.actor, n.text) for n in queries.notes_of(session, deal.id)),
        history=tuple(HistoryRow(h.at, h.from_stage, h.to_stage, h.actor, h.reason)
                      for h in queries.history_of(session, deal.id)),
        messages=tuple(TimelineRow(m.sent_at or m.received_at, m.direction, m.from_address, m.subject, m.message_id,
                                   tuple(dict.fromkeys(c.mailbox.name for c in m.copies)),
                                   m.size if m.truncated else None) for m in messages),
        nurtured_at=deal.nurtured_at,
    )


@dataclass(frozen=True)
class ContactRow:
    id: int
    name: str
    addresses: tuple[str, ...]
    company: str | None
    owner: str | None
    source: str
    open_deals: int
    deals: int


def list_contacts(session: Session) -> list[ContactRow]:
    rows = queries.contact_rows(session)
    return [ContactRow(c.id, c.name, tuple(a.address for a in c.addresses), company, owner, c.source, n_open, n)
            for c, company, owner, n_open, n in rows]


@dataclass(frozen=True)
class CompanyRow:
    id: int
    name: str
    domain: str
    contacts: int
    open_deals: int
    deals: int


def list_companies(session: Session) -> list[CompanyRow]:
    rows = queries.company_rows(session)
    return [CompanyRow(*r) for r in rows]


@dataclass(frozen=True)
class StageSummary:
    stage: str
    kind: str
    deals: int
    value: Decimal


def pipeline_summary(session: Session) -> list[StageSummary]:
    """Deals and their total value per stage, in pipeline order (open stages hold only open deals)."""
    rows = queries.stage_totals(session)
    return [StageSummary(name, kind, n, Decimal(total)) for name, kind, n, total in rows]
