"""What a rep needs to see today, decided from plain rows and a clock: the digest's content.

Pure: the rows come from ``store.digest_queries``, the clock and the rep's time zone are arguments, and
the result is a frozen ``Digest`` that the templates only lay out. Keeping every decision here
(which deal belongs in which section, how long someone has waited, what a quick action says)
means the HTML and the plain-text versions cannot disagree, and the rules are tested without a
database. A busy deal can be overdue, awaiting a reply, quiet and without a next step at once;
listing it four times made a busy rep's digest long and repetitive, so each deal is shown once,
under its most urgent reason (``URGENCY``), and its other reasons ride along as short badges.
Dates that a rep reads ("due today", "overdue") are the rep's local dates; durations
("waiting 5 hours", "quiet for 15 days") are real elapsed time, so a DST change does not bend them.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from inboxcrm.core import verbs
from inboxcrm.core.views import plural

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # not strftime: the locale must not change mail
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DEFAULT_LIMIT = 25  # items shown per section; the rest are counted, with the command that lists them


# -- the rows digest_store loads ------------------------------------------------------------

@dataclass(frozen=True)
class RepInfo:
    id: int
    name: str
    address: str | None
    timezone: str


@dataclass(frozen=True)
class DealRow:
    """An open deal the rep owns or holds the next step of, with what the sections look at."""

    id: int
    title: str
    contact: str
    address: str | None
    company: str | None
    stage: str
    value: Decimal | None
    source: str
    score: int
    owner_rep_id: int | None
    owner: str | None
    next_step: str | None
    next_step_due: date | None
    next_step_owner_id: int | None
    created_at: datetime
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    last_stage_change_at: datetime
    closed_at: datetime | None = None
    snoozed_until: date | None = None  # asleep before this date (the rep's local date), awake on it


@dataclass(frozen=True)
class HeldRow:
    """A message held for review in a mailbox the rep owns."""

    id: int
    sender: str
    subject: str
    received_at: datetime
    mailbox: str


@dataclass(frozen=True)
class BounceRow:
    """An address of the contact of an open deal the rep owns that bounced (``app.bounces``)."""

    deal_id: int
    address: str
    bounced_at: datetime
    reason: str


@dataclass(frozen=True)
class StageTotal:
    """Open deals in one stage: ``deals`` and ``value`` over the whole team."""

    stage: str
    deals: int
    value: Decimal


@dataclass(frozen=True)
class DigestData:
    rep: RepInfo
    deals: tuple[DealRow, ...]
    held: tuple[HeldRow, ...]
    team: tuple[StageTotal, ...]  # every open stage in pipeline order, also those with no deals
    since: datetime  # new leads are the deals created after this (the last digest)
    bounces: tuple[BounceRow, ...] = ()


# -- the digest -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """A quick action: a ``mailto:`` link whose subject is a command (``[D-42] next: ``)."""

    label: str
    subject: str
    href: str


@dataclass(frozen=True)
class DealItem:
    ref: str
    title: str
    contact: str  # name, else address
    address: str | None
    company: str | None
    stage: str
    value: Decimal | None
    detail: str  # one line saying why the deal is in this section
    actions: tuple[Action, ...] = ()
    link: str | None = None  # a mail to the command address about this deal ("[D-42] ")
    also: tuple[str, ...] = ()  # its less urgent reasons, as badges ("quiet 12 days", "no next step")

    @property
    def who(self) -> str:
        return ", ".join(filter(None, (self.contact, self.company)))


@dataclass(frozen=True)
class HeldItem:
    id: int
    sender: str
    subject: str
    mailbox: str
    detail: str  # how long it has waited
    accept: str  # the commands that decide it
    reject: str


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    hint: str  # what the section means, once, under its title
    items: tuple  # DealItem or HeldItem, at most the limit
    total: int  # all that belong here; more than len(items) when cut
    more: str  # the command that lists them all
    unit: str = "deal"  # what total counts: deals (each in one section only), or held messages

    @property
    def hidden(self) -> int:
        return self.total - len(self.items)

    @property
    def counted(self) -> str:
        """"3 deals": the heading says what its number counts."""
        return plural(self.total, self.unit)


@dataclass(frozen=True)
class StageBar:
    stage: str
    deals: int
    value: Decimal
    team_deals: int
    team_value: Decimal
    percent: int  # bar width: the rep's deals against the rep's fullest stage, 0-100


@dataclass(frozen=True)
class Pipeline:
    bars: tuple[StageBar, ...]
    deals: int
    value: Decimal
    team_deals: int
    team_value: Decimal


@dataclass(frozen=True)
class Digest:
    rep_name: str
    rep_address: str | None
    local_date: date
    generated_at: datetime
    timezone: str
    since: datetime
    bouncing: Section
    overdue: Section
    due_today: Section
    awaiting_reply: Section
    new_leads: Section
    stalled: Section
    quiet: Section
    no_next_step: Section
    held: Section
    pipeline: Pipeline
    command_address: str | None = None

    @property
    def sections(self) -> tuple[Section, ...]:
        """Deal sections in ``URGENCY`` order, so a deal sits in the first one it belongs to."""
        return tuple(getattr(self, name) for name in (*URGENCY, "held"))

    def shortened(self, limit: int) -> Digest:
        """The same digest showing at most ``limit`` items per section; the rest stay counted,
        with the command that lists them."""
        return replace(self, **{s.key: replace(s, items=s.items[:limit]) for s in self.sections})

    @property
    def is_empty(self) -> bool:
        """Nothing to act on; the pipeline summary alone is not worth an email."""
        return all(s.total == 0 for s in self.sections)

    @property
    def day(self) -> str:
        return day_label(self.local_date)

    @property
    def deals(self) -> int:
        """Distinct deals listed: each is in one section only, so the sections add up."""
        return sum(s.total for s in self.sections if s.unit == "deal")

    @property
    def summary(self) -> str:
        """"5 deals: 3 overdue, 2 awaiting reply": deals, not reasons, so a deal that is overdue
        and quiet counts once; the first three sections by name, the rest as "N more", and held
        mail (messages, not deals) apart."""
        counts = [(s.total, SUBJECT_WORDS[s.key]) for s in self.sections if s.total and s.unit == "deal"]
        parts = [f"{n} {word}" for n, word in counts[:3]]
        if len(counts) > 3:
            parts.append(f"{sum(n for n, _ in counts[3:])} more")
        said = [f"{plural(self.deals, 'deal')}: {', '.join(parts)}"] if parts else []
        if self.held.total:
            said.append(f"{self.held.total} {SUBJECT_WORDS['held']}")
        return "; ".join(said) or "nothing needs you today"

    @property
    def subject(self) -> str:
        return f"inboxcrm: {self.summary} - {self.day}"


# Which reason wins when a deal has several: an address that bounces first, since nothing the rep
# sends reaches the person until it is fixed; then work that is due or owed before the signs that a deal
# is drifting, and among those the longest neglect first (no stage change for a month says more
# than no email for two weeks, which says more than no plan yet). The sections are shown in this
# order too, so a deal is listed in the first section it belongs to.
URGENCY = ("bouncing", "overdue", "due_today", "awaiting_reply", "new_leads", "stalled", "quiet", "no_next_step")

SUBJECT_WORDS = {"bouncing": "bouncing", "overdue": "overdue", "due_today": "due today",
                 "awaiting_reply": "awaiting reply",
                 "new_leads": "new leads", "no_next_step": "without next step", "quiet": "quiet",
                 "stalled": "stalled", "held": "held for review"}


# -- small formatting that the content depends on --------------------------------------------

def day_label(day: date) -> str:
    """"Tue 24 Nov", the same in every locale."""
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]}"


def span(seconds: float) -> str:
    """A wait as a person says it: "3 days", "5 hours", "20 minutes" (whole units, rounded down)."""
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size:
            return plural(seconds // size, unit)
    return plural(max(1, seconds // 60), "minute")


def mailto(address: str, subject: str) -> str:
    """Everything but the address's own characters is percent-encoded, so a deal title or a
    prefilled command with ``&``, ``?`` or ``#`` cannot end the subject early."""
    return f"mailto:{quote(address, safe='@')}?subject={quote(subject, safe='')}"


# -- building -------------------------------------------------------------------------------

def build_digest(data: DigestData, now: datetime, tz: ZoneInfo, quiet_days_for: Callable[[str], int],
                 stalled_days: int, command_address: str | None, limit: int = DEFAULT_LIMIT) -> Digest:
    """``quiet_days_for(stage)`` is the pipeline config's per-stage rule; ``limit`` caps each
    section's items (its ``total`` still counts all)."""
    rep = data.rep
    today = now.astimezone(tz).date()
    open_deals = [d for d in data.deals if d.closed_at is None]
    owned = [d for d in open_deals if d.owner_rep_id == rep.id]
    # a snooze silences the "nothing is happening" reasons (stalled, quiet, no next step), never
    # what needs doing (steps due, replies owed, new leads) nor the pipeline's counts
    awake = [d for d in owned if d.snoozed_until is None or d.snoozed_until <= today]
    reasons: dict[str, list[Reason]] = {}  # per section, in that section's own order

    def ago(moment: datetime) -> str:
        return span((now - moment).total_seconds())

    # next steps the rep holds: their own, or unassigned steps on their deals
    steps = sorted((d for d in open_deals if d.next_step and d.next_step_due is not None and (
        d.next_step_owner_id == rep.id or (d.next_step_owner_id is None and d.owner_rep_id == rep.id))),
        key=lambda d: (d.next_step_due, d.id))

    def step(d: DealRow) -> str:
        late = (today - d.next_step_due).days
        when = "due today" if late == 0 else f"due {day_label(d.next_step_due)}, {plural(late, 'day')} overdue"
        other = f" (deal owned by {d.owner or 'nobody'})" if d.owner_rep_id != rep.id else ""
        return f"{d.next_step} - {when}{other}"

    # addresses that bounced: the rep's mail to them does not arrive, oldest bounce first
    bounced: dict[int, list[BounceRow]] = {}
    for b in sorted(data.bounces, key=lambda b: (b.bounced_at, b.address)):
        bounced.setdefault(b.deal_id, []).append(b)
    reasons["bouncing"] = [Reason(d, "; ".join(f"{b.address} bounced on {day_label(b.bounced_at.astimezone(tz).date())}"
                                               + (f": {b.reason}" if b.reason else "") for b in bounced[d.id]),
                                  "address bouncing")
                           for d in sorted((d for d in owned if d.id in bounced),
                                           key=lambda d: (bounced[d.id][0].bounced_at, d.id))]

    reasons["overdue"] = [Reason(d, step(d), "step overdue") for d in steps if d.next_step_due < today]
    reasons["due_today"] = [Reason(d, step(d), "step due today") for d in steps if d.next_step_due == today]

    # the prospect wrote last: oldest wait first
    waiting = sorted((d for d in owned if d.last_inbound_at is not None
                      and (d.last_outbound_at is None or d.last_inbound_at > d.last_outbound_at)),
                     key=lambda d: (d.last_inbound_at, d.id))
    reasons["awaiting_reply"] = [Reason(d, f"waiting {ago(d.last_inbound_at)} for your reply",
                                        f"awaiting reply {ago(d.last_inbound_at)}") for d in waiting]

    # leads since the last digest, best first
    leads = sorted((d for d in owned if d.created_at > data.since), key=lambda d: (-d.score, d.created_at, d.id))
    reasons["new_leads"] = [Reason(d, f"from {d.source or 'unknown source'}, score {d.score}", "new lead")
                            for d in leads]

    # stalled (no stage change), quiet (no email) and open deals nobody has planned anything for
    def last_email(d: DealRow) -> datetime:
        return max(filter(None, (d.last_inbound_at, d.last_outbound_at)), default=d.created_at)

    stalled_rows = sorted((d for d in awake if d.last_stage_change_at < now - timedelta(days=stalled_days)),
                          key=lambda d: (d.last_stage_change_at, d.id))
    reasons["stalled"] = [Reason(d, f"in {d.stage} for {ago(d.last_stage_change_at)}",
                                 f"stalled {ago(d.last_stage_change_at)}") for d in stalled_rows]
    quiet_rows = sorted(((d, quiet_days_for(d.stage)) for d in awake), key=lambda p: (last_email(p[0]), p[0].id))
    reasons["quiet"] = [Reason(d, f"no email for {ago(last_email(d))} ({d.stage} counts as quiet after "
                                  f"{plural(days, 'day')})", f"quiet {ago(last_email(d))}")
                        for d, days in quiet_rows if last_email(d) < now - timedelta(days=days)]
    unplanned = sorted((d for d in awake if not d.next_step), key=lambda d: (last_email(d), d.id))
    reasons["no_next_step"] = [Reason(d, f"{d.stage}, last email {ago(last_email(d))} ago", "no next step")
                               for d in unplanned]

    def act(deal: DealRow, *kinds: str) -> tuple[Action, ...]:
        if not command_address:
            return ()
        return tuple(Action(label, subject, mailto(command_address, subject))
                     for label, subject in (ACTIONS[k](f"D-{deal.id}") for k in kinds))

    def item(key: str, reason: Reason, also: tuple[str, ...]) -> DealItem:
        deal, ref = reason.deal, f"D-{reason.deal.id}"
        actions = act(deal, *SECTION_ACTIONS[key])
        if key == "awaiting_reply" and deal.address:  # answering is the action: a plain reply to the prospect
            actions = (Action("reply", f"Re: {deal.title}", mailto(deal.address, f"Re: {deal.title}")), *actions)
        return DealItem(ref, deal.title, deal.contact or deal.address or "", deal.address, deal.company,
                        deal.stage, deal.value, reason.detail, actions,
                        mailto(command_address, f"[{ref}] ") if command_address else None, also)

    placed = place(reasons)

    def section(key: str, title: str, hint: str, more: str, items: list | None = None, unit: str = "deal") -> Section:
        """A deal section's items are the deals ``place`` put there; held mail brings its own."""
        if items is None:
            items = [item(key, reason, also) for reason, also in placed[key]]
        return Section(key, title, hint, tuple(items[:limit]), len(items), more, unit)

    mine = f"--owner {rep.name}"

    # new senders waiting for a yes or no: messages, not deals
    held = [HeldItem(m.id, m.sender, m.subject, m.mailbox, f"held {ago(m.received_at)} "
                     f"in {m.mailbox}", f"inboxcrm held accept {m.id}", f"inboxcrm held reject {m.id}")
            for m in sorted(data.held, key=lambda m: (m.received_at, m.id))]

    return Digest(
        rep_name=rep.name, rep_address=rep.address, local_date=today, generated_at=now, timezone=tz.key,
        since=data.since, command_address=command_address,
        bouncing=section("bouncing", "Bouncing addresses", "Your mail to these people does not arrive. Find a "
                         "working address (a colleague of theirs, their website, a signature) and write there; the "
                         "mark goes when they write again.", "inboxcrm contacts list --bouncing"),
        overdue=section("overdue", "Overdue next steps", "Past their due date in your time zone.",
                        f"inboxcrm deals list {mine}"),
        due_today=section("due_today", "Due today", "Next steps due today.", f"inboxcrm deals list {mine}"),
        awaiting_reply=section("awaiting_reply", "Awaiting your reply", "The prospect wrote last; longest wait first.",
                               f"inboxcrm deals list {mine}"),
        new_leads=section("new_leads", "New leads", f"Since {day_label(data.since.astimezone(tz).date())} "
                          f"{data.since.astimezone(tz):%H:%M}.", f"inboxcrm deals list {mine}"),
        stalled=section("stalled", "Stalled deals", f"No stage change for {plural(stalled_days, 'day')}.",
                        f"inboxcrm deals list {mine} --stalled {stalled_days}"),
        quiet=section("quiet", "Quiet deals", "No email in or out for a while.",
                      f"inboxcrm deals list {mine} --quiet DAYS"),
        no_next_step=section("no_next_step", "No next step", "Open deals with nothing planned.",
                             f"inboxcrm deals list {mine}"),
        held=section("held", "Held for review", "New senders in your inbox wait for a yes or no.",
                     "inboxcrm held list", held, unit="message"),
        pipeline=pipeline(owned, data.team),
    )


@dataclass(frozen=True)
class Reason:
    """Why ``deal`` is in one section: ``detail`` is its line there, ``badge`` its short name on
    the item when a more urgent section lists the deal instead."""

    deal: DealRow
    detail: str
    badge: str


def place(reasons: dict[str, list[Reason]], order: tuple[str, ...] = URGENCY
          ) -> dict[str, list[tuple[Reason, tuple[str, ...]]]]:
    """Each deal once: in the first section of ``order`` (the digest's ``URGENCY``, or the weekly
    review's) that has a reason for it, in that section's order, with the badges of its other
    reasons (most urgent first). One deal, one line, so the section totals add up to the deals
    listed."""
    home: dict[int, str] = {}
    badges: dict[int, list[str]] = {}
    for key in order:
        for reason in reasons.get(key, ()):
            if reason.deal.id in home:
                badges[reason.deal.id].append(reason.badge)
            else:
                home[reason.deal.id], badges[reason.deal.id] = key, []
    return {key: [(r, tuple(badges[r.deal.id])) for r in reasons.get(key, ()) if home[r.deal.id] == key]
            for key in order}


# What each section offers to do about its deals, in the order the buttons appear.
SECTION_ACTIONS = {"bouncing": ("next", "lost"), "overdue": ("next", "stage", "won"),
                   "due_today": ("next", "stage", "won"),
                   "awaiting_reply": ("next", "stage"), "new_leads": ("next", "stage"),
                   "stalled": ("stage", "next", "close", "lost"), "quiet": ("next", "stage", "close", "lost"),
                   "no_next_step": ("next", "lost")}

# The digest's quick actions: (label, subject) of a mailto: link per verb, from the verb table.
ACTIONS: dict[str, Callable[[str], tuple[str, str]]] = {
    verb: functools.partial(verbs.quick_action, verb) for verb in ("next", "stage", "won", "lost", "close")}


def pipeline(owned: list[DealRow], team: tuple[StageTotal, ...]) -> Pipeline:
    """Bars scale to the rep's fullest stage; a stage with any deal gets a visible sliver."""
    counts: dict[str, tuple[int, Decimal]] = {}
    for d in owned:
        n, v = counts.get(d.stage, (0, Decimal(0)))
        counts[d.stage] = (n + 1, v + (d.value or 0))
    most = max((n for n, _ in counts.values()), default=0) or 1
    bars = []
    for t in team:
        n, v = counts.get(t.stage, (0, Decimal(0)))
        bars.append(StageBar(t.stage, n, v, t.deals, t.value, max(2, round(100 * n / most)) if n else 0))
    return Pipeline(tuple(bars), sum(b.deals for b in bars), sum((b.value for b in bars), Decimal(0)),
                    sum(t.deals for t in team), sum((t.value for t in team), Decimal(0)))
