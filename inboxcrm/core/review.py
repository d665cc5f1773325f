"""The weekly pipeline review a manager reads on Monday morning, decided from plain rows and Reports.

Pure: the rows come from ``store.review_queries``, the figures from ``app.reports`` as ``Report``
values, and the clock, the manager's zone and their command address are arguments. Everything
the manager reads (what counts as moved, which deals need a decision and why, each chart's bars
and numbers, the subject) is decided here, so the HTML and the text versions cannot disagree and
the rules are tested without a database.

A manager's question is not the rep's "what do I do today" but "where must I step in", so the
deals to decide on are the ones drifting: a close date already passed (the forecast is wrong),
no stage change for a month, no email for two weeks, nothing planned. A deal drifting in several
ways is listed once, under the first of those, with the others as badges, as in the rep's digest;
a long list is cut, counted, and the command that lists it whole is named.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from inboxcrm.core import verbs
from inboxcrm.core.digest import Reason, day_label, mailto, place, span
from inboxcrm.core.metrics import Duration, Move, Period, Pipeline, Rate, Report, StageInfo
from inboxcrm.core.report_format import cell_text, change_text, local_days
from inboxcrm.core.views import plural

WEEK = timedelta(days=7)
METRICS_WEEKS = 4  # the figures cover the last four weeks, compared with the four before
DEFAULT_LIMIT = 10  # deals shown per list; the rest are counted, with the command that lists them

# -- the rows store.review_queries loads ------------------------------------------------------


@dataclass(frozen=True)
class DealRow:
    """A deal of the team as the review looks at it: open ones for the lists, and those created
    or closed this week for what moved."""

    id: int
    title: str
    contact: str
    address: str | None
    company: str | None
    stage: str
    stage_kind: str
    value: Decimal | None
    source: str
    owner_rep_id: int | None
    owner: str | None
    owner_address: str | None
    next_step: str | None
    created_at: datetime
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    last_stage_change_at: datetime
    closed_at: datetime | None
    expected_close: date | None
    close_slips: int
    snoozed_until: date | None
    lost_reason: str | None


@dataclass(frozen=True)
class ReviewData:
    stages: tuple[StageInfo, ...]
    open_deals: tuple[DealRow, ...]
    created: tuple[DealRow, ...]  # created in the week, open or not
    closed: tuple[DealRow, ...]  # closed (won or lost) in the week
    moves: tuple[Move, ...]  # stage changes in the week
    moved: tuple[DealRow, ...]  # the deals of those moves


@dataclass(frozen=True)
class Manager:
    """Who reads it: ``command_address`` is the command address with their reply token when they
    are a rep; a manager named only in the config has none, so no command links."""

    name: str
    address: str
    timezone: str
    command_address: str | None
    is_rep: bool


# -- the review -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    label: str
    href: str


@dataclass(frozen=True)
class Item:
    ref: str
    title: str
    who: str  # contact, company
    owner: str
    stage: str
    value: Decimal | None
    detail: str  # why it is listed, in one line
    also: tuple[str, ...] = ()  # its other reasons, as badges
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    hint: str
    items: tuple[Item, ...]  # at most the limit
    total: int  # deals that belong here
    value: Decimal  # their value together
    more: str  # the command that lists them all

    @property
    def hidden(self) -> int:
        return self.total - len(self.items)

    @property
    def counted(self) -> str:
        return plural(self.total, "deal")


@dataclass(frozen=True)
class Bar:
    label: str
    amount: float  # what the bar's length stands for
    text: str  # the figure as a person reads it
    percent: int  # width: against the chart's largest amount, 0-100


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    hint: str
    bars: tuple[Bar, ...]
    note: str = ""


@dataclass(frozen=True)
class Metric:
    """One headline figure over the last four weeks against the four before; a ``snapshot``
    (how things stand now) has nothing to compare with."""

    report: str
    label: str
    current: str
    previous: str
    change: str
    snapshot: bool = False


@dataclass(frozen=True)
class Review:
    manager: Manager
    generated_at: datetime
    week_since: datetime  # the week is [week_since, generated_at)
    local_date: date
    moved: tuple[Section, ...]  # new, advanced, won, lost
    decide: tuple[Section, ...]  # slipped, stalled, quiet, no next step: each deal once
    charts: tuple[Chart, ...]
    metrics: tuple[Metric, ...]
    metrics_period: str  # "26 Oct - 23 Nov", the figures' four weeks, in words
    no_actions_reason: str = ""  # why a deal has no command links (the manager is not a rep)
    nurture_reminder: str = ""  # the quarter's first review: open deals gone cold (core.nurture.quarterly_reminder)

    @property
    def deals_to_decide(self) -> int:
        """Distinct deals: each is in one list only."""
        return sum(s.total for s in self.decide)

    @property
    def summary(self) -> str:
        moved = ", ".join(f"{s.total} {s.key}" for s in self.moved)  # "3 new, 2 advanced, 1 won, 0 lost"
        return f"{moved}; {plural(self.deals_to_decide, 'deal')} to decide on"

    @property
    def week(self) -> str:
        """"week to Mon 23 Nov": the 7 days before the review, named by the day it comes."""
        return f"week to {day_label(self.local_date)}"

    @property
    def week_span(self) -> str:
        """"Mon 16 Nov 08:00 - Mon 23 Nov 08:00, Europe/Berlin": exactly what "this week" covers."""
        tz = ZoneInfo(self.manager.timezone)
        return f"{local_time(self.week_since, tz)} - {local_time(self.generated_at, tz)}, {self.manager.timezone}"

    @property
    def subject(self) -> str:
        return f"Pipeline review, {self.week}: {self.summary}"

    def shortened(self, limit: int) -> Review:
        """At most ``limit`` deals per list; the rest stay counted, with the command that lists them."""
        return replace(self, moved=tuple(replace(s, items=s.items[:limit]) for s in self.moved),
                       decide=tuple(replace(s, items=s.items[:limit]) for s in self.decide))


# Which reason wins when a deal drifts in several ways: a close date that has passed makes the
# forecast wrong today; a month without a stage change says more than two weeks without email,
# which says more than no plan yet. The lists are shown in this order too.
URGENCY = ("slipped", "stalled", "quiet", "no_next_step")
LIST_COMMAND = "inboxcrm review deals"


def local_time(moment: datetime, tz: ZoneInfo) -> str:
    """"Fri 20 Nov 08:00" on the manager's clock, the same in every locale."""
    local = moment.astimezone(tz)
    return f"{day_label(local.date())} {local:%H:%M}"


def _who(d: DealRow) -> str:
    return ", ".join(filter(None, (d.contact or d.address, d.company)))


def _total(deals) -> Decimal:
    return sum((d.value or Decimal(0) for d in deals), Decimal(0))


def owner_subject(ref: str, title: str) -> str:
    """"[D-42] Acme renewal" for a mail to the deal's owner; never one that reads as a command
    (a title such as "Won" would make "[D-42] Won" one, were the owner to forward it)."""
    subject = f"[{ref}] {title}".strip()
    return subject if not verbs.has_command(subject) else f"[{ref}] about {title}"


def actions(deal: DealRow, manager: Manager | None) -> tuple[Action, ...]:
    """Write to the owner; hand the deal to someone else by command mail (the manager's token).
    None: no links (a listing on the command line)."""
    if manager is None:
        return ()
    ref = f"D-{deal.id}"
    found: list[Action] = []
    if deal.owner_address:
        found.append(Action(f"Email {deal.owner}", mailto(deal.owner_address, owner_subject(ref, deal.title))))
    if manager.command_address:
        found.append(Action("Reassign", mailto(manager.command_address, verbs.quick_action("owner", ref)[1])))
    return tuple(found)


def decide_reasons(deals: tuple[DealRow, ...], now: datetime, tz: ZoneInfo, quiet_days_for: Callable[[str], int],
                   stalled_days: int) -> dict[str, list[Reason]]:
    """Every reason each open deal has to be decided on, per list, each list in its own order.
    A snooze (the rep's "leave it until then") silences stalled, quiet and unplanned, as in the
    digest, but not a close date that has passed: that is the forecast, not the rep's to-do list."""
    today = now.astimezone(tz).date()
    open_ = [d for d in deals if d.closed_at is None]
    awake = [d for d in open_ if d.snoozed_until is None or d.snoozed_until <= today]

    def ago(moment: datetime) -> str:
        return span((now - moment).total_seconds())

    def last_email(d: DealRow) -> datetime:
        return max(filter(None, (d.last_inbound_at, d.last_outbound_at)), default=d.created_at)

    def silence(d: DealRow) -> str:
        if d.last_inbound_at or d.last_outbound_at:
            return f"last email {ago(last_email(d))} ago"
        return f"no email since it came in {ago(d.created_at)} ago"

    reasons: dict[str, list[Reason]] = {}
    slipped = sorted((d for d in open_ if d.expected_close is not None and d.expected_close < today),
                     key=lambda d: (d.expected_close, d.id))
    reasons["slipped"] = [
        Reason(d, f"expected to close {day_label(d.expected_close)}, {plural((today - d.expected_close).days, 'day')} "
                  f"ago" + (f"; slipped {plural(d.close_slips, 'time')} before" if d.close_slips else ""),
               "close date passed") for d in slipped]
    stalled = sorted((d for d in awake if d.last_stage_change_at < now - timedelta(days=stalled_days)),
                     key=lambda d: (d.last_stage_change_at, d.id))
    reasons["stalled"] = [Reason(d, f"in {d.stage} for {ago(d.last_stage_change_at)}",
                                 f"stalled {ago(d.last_stage_change_at)}") for d in stalled]
    quiet = sorted((d for d in awake if last_email(d) < now - timedelta(days=quiet_days_for(d.stage))),
                   key=lambda d: (last_email(d), d.id))
    reasons["quiet"] = [Reason(d, f"no email for {ago(last_email(d))}" if d.last_inbound_at or d.last_outbound_at
                               else silence(d), f"quiet {ago(last_email(d))}") for d in quiet]
    unplanned = sorted((d for d in awake if not d.next_step), key=lambda d: (last_email(d), d.id))
    reasons["no_next_step"] = [Reason(d, f"{d.stage}, {silence(d)}", "no next step") for d in unplanned]
    return reasons


def decide_lists(deals: tuple[DealRow, ...], now: datetime, tz: ZoneInfo, quiet_days_for: Callable[[str], int],
                 stalled_days: int, manager: Manager | None, limit: int | None = DEFAULT_LIMIT) -> tuple[Section, ...]:
    """The deals to decide on, each once, most urgent reason first; ``limit`` None: all of them
    (``inboxcrm review deals``)."""
    placed = place(decide_reasons(deals, now, tz, quiet_days_for, stalled_days), URGENCY)
    hints = {"slipped": "Open deals whose expected close date has passed: the forecast counts them in the wrong month.",
             "stalled": f"No stage change for {plural(stalled_days, 'day')}.",
             "quiet": "No email in or out for a while (the quiet days of the deal's stage).",
             "no_next_step": "Open deals nobody has planned anything for."}
    titles = {"slipped": "Slipped close dates", "stalled": "Stalled deals", "quiet": "Quiet deals",
              "no_next_step": "No next step"}
    sections = []
    for key in URGENCY:
        items = [Item(f"D-{r.deal.id}", r.deal.title, _who(r.deal), r.deal.owner or "nobody", r.deal.stage,
                      r.deal.value, r.detail, also, actions(r.deal, manager)) for r, also in placed[key]]
        shown = items if limit is None else items[:limit]
        sections.append(Section(key, titles[key], hints[key], tuple(shown), len(items),
                                _total(r.deal for r, _ in placed[key]), f"{LIST_COMMAND} --reason {key}"))
    return tuple(sections)


def moved_lists(data: ReviewData, week: Period, tz: ZoneInfo, limit: int = DEFAULT_LIMIT) -> tuple[Section, ...]:
    """New deals, deals moved forward (``metrics.Pipeline.forward``, as the activity report
    counts them: to a later open stage or to won; each deal once however often it moved), and
    deals won and lost, all within ``week``."""
    def when(moment: datetime) -> str:
        return local_time(moment, tz)

    def item(d: DealRow, detail: str) -> Item:
        return Item(f"D-{d.id}", d.title, _who(d), d.owner or "nobody", d.stage, d.value, detail)

    created = sorted((d for d in data.created if d.created_at in week), key=lambda d: (d.created_at, d.id))
    new = [item(d, f"from {d.source or 'an unknown source'}, {when(d.created_at)}") for d in created]

    pipe = Pipeline(data.stages)
    deals = {d.id: d for d in data.moved}
    forward: dict[int, tuple[str, str, datetime]] = {}  # deal -> (first from, last to, last at)
    for m in sorted(data.moves, key=lambda m: (m.at, m.id)):
        if m.at in week and m.deal_id in deals and pipe.forward(m):
            first = forward.get(m.deal_id, (m.from_stage, "", m.at))[0]
            forward[m.deal_id] = (first, m.to_stage, m.at)
    advanced_deals = sorted(forward, key=lambda pk: (forward[pk][2], pk))
    advanced = [item(deals[pk], f"{forward[pk][0]} -> {forward[pk][1]}, {when(forward[pk][2])}")
                for pk in advanced_deals]

    closed = sorted((d for d in data.closed if d.closed_at is not None and d.closed_at in week),
                    key=lambda d: (d.closed_at, d.id))
    won = [d for d in closed if d.stage_kind == "won"]
    lost = [d for d in closed if d.stage_kind == "lost"]
    return (
        Section("new", "New deals", "Created this week.", tuple(new[:limit]), len(new), _total(created),
                "inboxcrm deals list"),
        Section("advanced", "Advanced", "Moved forward this week: to a later stage, or won.", tuple(advanced[:limit]),
                len(advanced), _total(deals[pk] for pk in advanced_deals), "inboxcrm report activity --weeks 1"),
        Section("won", "Won", "Closed as won this week.",
                tuple(item(d, f"won {when(d.closed_at)}") for d in won[:limit]), len(won), _total(won),
                "inboxcrm deals list --all"),
        Section("lost", "Lost", "Closed as lost this week.",
                tuple(item(d, f"lost {when(d.closed_at)}" + (f": {d.lost_reason}" if d.lost_reason else ""))
                      for d in lost[:limit]), len(lost), _total(lost), "inboxcrm deals list --all"),
    )


# -- charts and figures from the reports --------------------------------------------------------

def _amount(cell) -> float | None:
    """The number a bar is drawn from; None when there is none to draw (too few to say)."""
    if isinstance(cell, Duration):
        return cell.seconds
    if isinstance(cell, Rate):
        return cell.value
    if isinstance(cell, (int, float, Decimal)) and not isinstance(cell, bool):
        return float(cell)
    return None


def bars(rows: list[tuple[str, object]]) -> tuple[Bar, ...]:
    """Widths against the largest figure; a figure above zero gets at least a visible sliver."""
    amounts = [(label, cell, _amount(cell)) for label, cell in rows]
    most = max((a for _, _, a in amounts if a), default=0) or 1
    return tuple(Bar(str(label), a or 0.0, cell_text(cell), max(2, round(100 * a / most)) if a else 0)
                 for label, cell, a in amounts)


CHARTS = (  # key, report, table, figure column, title, hint
    ("funnel", "funnel", "stages", "reached", "Stage funnel",
     "Deals that reached each stage in the last four weeks."),
    ("pipeline", "pipeline", "by_stage", "value", "Pipeline value by stage", "Open deals' value per stage, now."),
    ("sources", "sources", "sources", "leads", "Leads by source", "New leads per source in the last four weeks."),
    ("response", "response", "first_response", "median", "First response time by rep",
     "Median time to the first answer in business hours, last four weeks; shorter is better."),
)


def charts(reports: Mapping[str, Report]) -> tuple[Chart, ...]:
    """The four charts, each from one report's table: the first column labels the bars."""
    found = []
    for key, name, table_key, column, title, hint in CHARTS:
        report = reports.get(name)
        if report is None:
            continue
        table = report.table(table_key)
        index = table.columns.index(column)
        drawn = bars([(row[0] if row[0] is not None else "-", row[index]) for row in table.rows])
        found.append(Chart(key, title, hint, drawn, "" if drawn else "Nothing to show for these four weeks."))
    return tuple(found)


METRIC_REPORTS = ("pipeline", "funnel", "velocity", "wins", "sources", "response", "activity")
# Figures of how things stand now rather than of a period (the open pipeline, who is waiting): the
# reports read them from the deals as they are, so a "previous period" would repeat today's.
SNAPSHOTS = {"pipeline": None, "response": ("waiting",)}  # report -> its snapshot headlines (None: all)


def metrics(current: Mapping[str, Report], previous: Mapping[str, Report]) -> tuple[Metric, ...]:
    """Every headline figure now and four weeks before, with the change in words."""
    found = []
    for name in (*METRIC_REPORTS, *sorted(set(current) - set(METRIC_REPORTS))):
        report = current.get(name)
        if report is None:
            continue
        before = {h.key: h.value for h in previous[name].headlines} if name in previous else {}
        for h in report.headlines:
            if name in SNAPSHOTS and (SNAPSHOTS[name] is None or h.key in SNAPSHOTS[name]):
                found.append(Metric(name, h.label, cell_text(h.value), cell_text(None), "", snapshot=True))
            else:
                found.append(Metric(name, h.label, cell_text(h.value), cell_text(before.get(h.key)),
                                    change_text(h.value, before.get(h.key))))
    return tuple(found)


def period_words(period: Period, tz: ZoneInfo) -> str:
    """"Mon 16 Nov - Sun 22 Nov": the local days ``period`` covers."""
    first, last = local_days(period, tz)
    return f"{day_label(first)} - {day_label(last)}"


def metrics_period(at: datetime) -> Period:
    """The four weeks the figures cover, ending at the review's time; ``.previous()`` the four before."""
    return Period(at - METRICS_WEEKS * WEEK, at)


NO_TOKEN = ("Reassign links are left out: {address} is not a rep's address, so inboxcrm would not obey a command "
            "from it. Reassign with \"inboxcrm deal owner D-42 REP\", or mark yourself a manager as a rep "
            "(inboxcrm rep edit NAME --manager) to get the links.")
NO_COMMAND_ADDRESS = ("Reassign links are left out: no command address is set ([commands] address), so there is "
                      "nowhere to send them. Reassign with \"inboxcrm deal owner D-42 REP\".")


def build_review(data: ReviewData, now: datetime, manager: Manager, current: Mapping[str, Report],
                 previous: Mapping[str, Report], quiet_days_for: Callable[[str], int], stalled_days: int,
                 has_command_address: bool, limit: int = DEFAULT_LIMIT, nurture_reminder: str = "") -> Review:
    """The review at ``now`` (the 7 days before it are the week). ``current`` and ``previous``:
    the reports over the four weeks before ``now`` and the four before those."""
    tz = ZoneInfo(manager.timezone)
    week = Period(now - WEEK, now)
    reason = ""
    if manager.command_address is None:
        reason = NO_TOKEN.format(address=manager.address) if has_command_address else NO_COMMAND_ADDRESS
    figures = next(iter(current.values()), None)
    return Review(
        manager=manager, generated_at=now, week_since=week.since, local_date=now.astimezone(tz).date(),
        moved=moved_lists(data, week, tz, limit),
        decide=decide_lists(data.open_deals, now, tz, quiet_days_for, stalled_days, manager, limit),
        charts=charts(current), metrics=metrics(current, previous),
        metrics_period=period_words(figures.period, tz) if figures is not None else "",
        no_actions_reason=reason, nurture_reminder=nurture_reminder,
    )

