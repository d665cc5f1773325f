"""The manager's figures, computed from plain rows: the values every report is made of.

Pure: rows come from ``store.report_queries``, the period and the thresholds are arguments, and
a report is a frozen ``Report`` of tables and headline figures that the command line prints as a
table, JSON or CSV and the weekly review lays out. A rate over a handful of deals reads as a
fact ("100 % win rate") when it is noise, so a ``Rate`` or ``Duration`` built from fewer than
``min_sample`` deals carries its counts but no value, and every output says "too few to say".
"""
from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from inboxcrm.core.business_time import Span, business_seconds

# -- values a report is made of -------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A half-open span of time, [since, until), in UTC."""

    since: datetime
    until: datetime

    def previous(self) -> Period:
        """The period of the same length just before this one: what a change is measured against."""
        return Period(self.since - (self.until - self.since), self.since)

    def __contains__(self, instant: datetime) -> bool:
        return self.since <= instant < self.until


@dataclass(frozen=True)
class Rate:
    """``part`` of ``whole``; no value when ``whole`` is below the sample a rate needs."""

    part: int
    whole: int
    min_sample: int

    @property
    def value(self) -> float | None:
        return None if self.whole < max(self.min_sample, 1) else self.part / self.whole


@dataclass(frozen=True)
class Duration:
    """A length of time summarised over ``sample`` deals (a median, an average, a p90); ``seconds``
    is None when the sample is below the minimum or empty."""

    seconds: float | None
    sample: int


Cell = str | int | Decimal | date | Rate | Duration | None


@dataclass(frozen=True)
class Table:
    """One table of a report. ``key`` is how the review and the tests find it (stable across
    ``--by``); ``columns`` are the headers; each row has one cell per column."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Headline:
    """One figure of a report that the weekly review compares with the previous period."""

    key: str
    label: str
    value: Cell


@dataclass(frozen=True)
class Report:
    name: str
    period: Period
    by: str | None
    tables: tuple[Table, ...]
    headlines: tuple[Headline, ...] = ()
    notes: tuple[str, ...] = ()

    def table(self, key: str) -> Table:
        return next(t for t in self.tables if t.key == key)

    def headline(self, key: str) -> Headline:
        return next(h for h in self.headlines if h.key == key)


# -- stage probabilities --------------------------------------------------------------------

# The usual chance of winning a deal in a stage of the built-in pipeline, in percent; migration
# 0008 wrote the same numbers onto the stages of those names.
LOW, HIGH = 10, 80


def probability(kind: str, set_percent: int | None, open_index: int, open_count: int) -> int:
    """A stage's win probability in percent: what the admin set, else won 100, lost 0, and open
    stages spread evenly from 10 % (the first) to 80 % (the last open one), so a stage added
    later gets a plausible figure until someone sets its own."""
    if set_percent is not None:
        return set_percent
    if kind == "won":
        return 100
    if kind == "lost":
        return 0
    if open_count <= 1:
        return LOW
    return round(LOW + (HIGH - LOW) * open_index / (open_count - 1))


# -- what every figure means ----------------------------------------------------------------

# One sentence per figure, with its formula. docs/reports.md carries the same sentences (a docs test
# compares them), so the printed figure and its written definition cannot drift apart.
DEFINITIONS: dict[str, str] = {
    "period": "A period = [the start of --since, the start of the day after --until), whole local days in the "
              "team's time zone; by default the last 4 weeks ending with today.",
    "too_few": "A rate, average, median or percentile over fewer than [reports] min_sample deals is shown as "
               "\"too few\" with its counts, never as a figure: value = part / whole only when whole >= min_sample.",
    "pipeline.deals": "Open deals of a stage = the deals in that stage with no close date (closed_at IS NULL), "
                      "counted now, whatever the period.",
    "pipeline.value": "Open value of a stage = the sum of the values of its open deals (a deal without a value "
                      "adds 0).",
    "pipeline.probability": "A stage's probability = the percent set with `stage probability`, else Won 100, Lost 0 "
                            "and the open stages spread evenly from 10 (the first) to 80 (the last open one).",
    "pipeline.weighted": "Weighted value = open value x the stage's probability / 100, summed over the stages "
                         "for a rep or source and for the total.",
    "funnel.reached": "Reached = the deals with a stage change into the stage dated in the period (a new deal's "
                      "first stage counts as reached when it was created).",
    "funnel.advanced": "Advanced = of the deals that reached the stage, those that after their first arrival in "
                       "the period, and before the period's end, moved into a later open stage or a won stage.",
    "funnel.conversion": "Conversion of a stage = advanced / reached; won and lost are exits, not rows.",
    "funnel.lead_to_opportunity": "Lead-to-opportunity = of the deals created in the period, the share that by the "
                                  "period's end reached the qualifying stage (`stage qualifying`), a later open "
                                  "stage or a won stage.",
    "velocity.open_deals": "Open deals of a stage = the deals in it with no close date, now.",
    "velocity.average_age": "Average age = the mean of (now - created) over a stage's open deals.",
    "velocity.median_age": "Median age = the median of (now - created) over a stage's open deals.",
    "velocity.time_in_stage": "Average time in stage = the mean, over the moves out of the stage dated in the "
                              "period, of (the move - the deal's latest arrival in the stage before it).",
    "velocity.time_in_current_stage": "Time in current stage = the mean of (now - the last stage change) over a "
                                      "stage's open deals.",
    "velocity.cycle_length": "Cycle length = the median of (closed - created) over the deals won in the period.",
    "velocity.moved_per_week": "Moved per week = the stage changes dated in the period (not counting a new deal's "
                               "first stage) / the weeks in the period (days / 7), rounded.",
    "velocity.velocity": "Pipeline velocity = open deals x win rate x average won value / average cycle length in "
                         "days, in value per day; none when the win rate, the average won value or the average "
                         "cycle length has too few deals.",
    "wins.win_rate": "Win rate = won / closed, over the deals closed (won or lost) in the period.",
    "wins.by_stage_reached": "Win rate by stage reached = won / closed over the deals closed in the period that "
                             "had a stage change into the stage before they closed.",
    "wins.by_source": "Win rate by source = won / closed over the deals of the source closed in the period.",
    "wins.by_rep": "Win rate by rep = won / closed over the deals the rep owns that closed in the period.",
    "wins.lost_reasons": "Lost reasons = the number of deals lost in the period per reason given.",
    "sources.leads": "Leads of a source = the deals of that source created in the period.",
    "sources.opportunities": "Opportunities of a source = of its leads, those that by the period's end reached "
                             "the qualifying stage, a later open stage or a won stage.",
    "sources.won": "Won of a source = its deals won (closed in a won stage) in the period, and won value = the "
                   "sum of their values.",
    "sources.cost": "Cost of a source = the sum over the months the period touches of the month's cost (the "
                    "latest `source cost` from that month or before) x the month's days in the period / the "
                    "month's days.",
    "sources.return": "Return = (won value - cost) / cost, a ratio (0.5 means half the cost was won back on top); "
                      "none when the source has no cost or a cost of 0.",
    "response.first_response": "First response time = the business time (the [digest] business_hours on its "
                               "days, in the team's time zone) from a deal's creation to the team's first "
                               "email to the prospect, over the deals created in the period that were answered "
                               "(a deal the rep opened with their own email has none).",
    "response.median": "Median first response = the middle first response time (the mean of the two middle "
                       "ones for an even count).",
    "response.p90": "p90 first response = the first response time that 90 % of answered deals met: the "
                    "ceil(0.9 x n)-th smallest.",
    "response.within_target": "Within target = answered deals whose first response took at most [reports] "
                              "response_target_minutes of business time / answered deals.",
    "response.waiting": "Waiting = open deals whose prospect's latest email is newer than the team's latest "
                        "email to them (or who were never written to), now.",
    "activity.leads_created": "Leads created = the deals created in the period.",
    "activity.advanced": "Advanced = the deals with at least one stage change in the period from an open stage "
                         "to a later open stage or to a won stage, counted under the deal's current source or "
                         "owner.",
    "activity.lost": "Lost = the deals closed in a lost stage in the period.",
    "forecast.expected": "Expected value of a month = the sum of the values of the open deals whose close date is "
                         "in that month and has not passed (today or later).",
    "forecast.weighted": "Weighted value of a month = the sum of value x the stage's probability / 100 over the "
                         "same deals.",
    "forecast.slipped": "Slipped = the open deals whose close date is before today; a deal's slips = the times its "
                        "close date was moved later after it had passed.",
    "forecast.at_month_start": "Forecast at month start = the sum of the values (today's values) of the deals open "
                               "at the month's first instant whose close date in force then lay in the month.",
    "forecast.won": "Won of a month = the sum of the values of the deals closed in a won stage during the month.",
    "forecast.accuracy": "Accuracy = won / forecast at month start, when the forecast held at least [reports] "
                         "min_sample deals.",
}


# -- rows the store hands in (narrow, by name) ----------------------------------------------


@dataclass(frozen=True)
class StageInfo:
    id: int
    name: str
    position: int
    kind: str  # open | won | lost
    probability: int | None  # as set by the admin; None: the default for its place
    qualifying: bool


@dataclass(frozen=True)
class OpenTotal:
    """Open deals of one stage (and one group of a breakdown: an owner id or a source)."""

    group: int | str | None
    stage_id: int
    deals: int
    value: Decimal


@dataclass(frozen=True)
class OpenDeal:
    stage_id: int
    created_at: datetime
    stage_since: datetime  # the last stage change


@dataclass(frozen=True)
class DealFact:
    """The columns of a deal that the period's figures read."""

    id: int
    stage_id: int
    source: str
    owner_id: int | None
    value: Decimal | None
    created_at: datetime
    closed_at: datetime | None
    lost_reason: str | None = None
    first_response_at: datetime | None = None


@dataclass(frozen=True)
class Move:
    """One stage_history row; stages are named, as the history keeps them."""

    id: int
    deal_id: int
    from_stage: str | None
    to_stage: str
    at: datetime


@dataclass(frozen=True)
class WaitingDeal:
    deal_id: int
    title: str
    owner_id: int | None
    since: datetime  # the prospect's latest email


@dataclass(frozen=True)
class CostRow:
    source: str
    month: date  # first day of the month it applies from
    amount: Decimal


@dataclass(frozen=True)
class BusinessHours:
    """The team's working time, in which a first response is measured."""

    zone: ZoneInfo
    days: frozenset[int]
    span: Span


# -- small arithmetic ------------------------------------------------------------------------

CENT = Decimal("0.01")
NO_OWNER, NO_SOURCE = "(no owner)", "(none)"


def _enough(count: int, min_sample: int) -> bool:
    return count >= max(min_sample, 1)


def average(seconds: Sequence[float], min_sample: int) -> Duration:
    return Duration(math.fsum(seconds) / len(seconds) if _enough(len(seconds), min_sample) else None, len(seconds))


def median(seconds: Sequence[float], min_sample: int) -> Duration:
    return Duration(float(statistics.median(seconds)) if _enough(len(seconds), min_sample) else None, len(seconds))


def percentile(seconds: Sequence[float], percent: int, min_sample: int) -> Duration:
    """Nearest rank: the smallest value that ``percent`` % of the values are at or below."""
    if not _enough(len(seconds), min_sample):
        return Duration(None, len(seconds))
    ordered = sorted(seconds)
    rank = max(1, math.ceil(percent * len(ordered) / 100))
    return Duration(float(ordered[rank - 1]), len(ordered))


def money(amount: Decimal | int | float | None) -> Decimal:
    return Decimal(0).quantize(CENT) if amount is None else Decimal(str(amount)).quantize(CENT, ROUND_HALF_UP)


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def rep_label(owner_id: int | None, rep_names: Mapping[int, str]) -> str:
    if owner_id is None:
        return NO_OWNER
    return rep_names.get(owner_id, f"rep {owner_id}")


def source_label(source: str | None) -> str:
    return source or NO_SOURCE


def _label(by: str, deal: DealFact, rep_names: Mapping[int, str]) -> str:
    return rep_label(deal.owner_id, rep_names) if by == "rep" else source_label(deal.source)


class Pipeline:
    """The stages in pipeline order, and what the reports ask of them: which moves go forward,
    which stages make a lead an opportunity, each stage's probability."""

    def __init__(self, stages: Sequence[StageInfo]):
        self.stages = sorted(stages, key=lambda s: (s.position, s.id))
        self.open = [s for s in self.stages if s.kind == "open"]
        self.by_id = {s.id: s for s in self.stages}
        self.by_name = {s.name: s for s in self.stages}
        self._open_index = {s.name: i for i, s in enumerate(self.open)}
        self.won_names = frozenset(s.name for s in self.stages if s.kind == "won")

    def probability(self, stage: StageInfo) -> int:
        index = self._open_index.get(stage.name, 0)
        return probability(stage.kind, stage.probability, index, len(self.open))

    def kind(self, stage_id: int) -> str | None:
        stage = self.by_id.get(stage_id)
        return stage.kind if stage else None

    def beyond(self, name: str) -> frozenset[str]:
        """The open stages after ``name``, and the won stages: where a deal in ``name`` goes forward to."""
        index = self._open_index.get(name)
        later = () if index is None else (s.name for s in self.open[index + 1:])
        return frozenset(later) | self.won_names

    def forward(self, move: Move) -> bool:
        """From an open stage to a later open stage or to a won stage."""
        return move.from_stage in self._open_index and move.to_stage in self.beyond(move.from_stage)

    def qualifying(self) -> StageInfo | None:
        """The first open stage marked qualifying, in pipeline order."""
        return next((s for s in self.open if s.qualifying), None)

    def opportunity_names(self) -> frozenset[str] | None:
        """Reaching one of these makes a lead an opportunity; None when no stage is marked qualifying."""
        marked = self.qualifying()
        return None if marked is None else frozenset({marked.name}) | self.beyond(marked.name)


def _order(moves: Iterable[Move]) -> list[Move]:
    return sorted(moves, key=lambda m: (m.at, m.id))


def _by_deal(moves: Iterable[Move]) -> dict[int, list[Move]]:
    found: dict[int, list[Move]] = defaultdict(list)
    for move in _order(moves):
        found[move.deal_id].append(move)
    return found


def _opportunities(created: Sequence[DealFact], moves: Sequence[Move], names: frozenset[str],
                   until: datetime) -> set[int]:
    """Deals of ``created`` with a move into one of ``names`` before ``until``."""
    ids = {d.id for d in created}
    return {m.deal_id for m in moves if m.deal_id in ids and m.to_stage in names and m.at < until}


NO_QUALIFYING_NOTE = ("No stage is marked qualifying, so lead-to-opportunity cannot be measured: "
                      "mark one with `inboxcrm stage qualifying NAME`.")


# -- the reports -----------------------------------------------------------------------------


def pipeline_report(period: Period, by: str, stages: Sequence[StageInfo], totals: Sequence[OpenTotal],
                    rep_names: Mapping[int, str]) -> Report:
    """``totals``: open deals per (group, stage); the group is None for ``by="stage"``."""
    pipe = Pipeline(stages)
    percent = {s.id: pipe.probability(s) for s in pipe.open}
    rows_by_stage: dict[int, list[OpenTotal]] = defaultdict(list)
    for total in totals:
        if total.stage_id in percent:  # a closed stage with no close date is not part of the pipeline
            rows_by_stage[total.stage_id].append(total)

    def weighted(items: Iterable[OpenTotal]) -> Decimal:
        return money(sum((money(t.value) * percent[t.stage_id] / 100 for t in items), Decimal(0)))

    counted = [t for items in rows_by_stage.values() for t in items]
    if by == "stage":
        rows = tuple((s.name, sum(t.deals for t in rows_by_stage[s.id]),
                      money(sum((money(t.value) for t in rows_by_stage[s.id]), Decimal(0))), percent[s.id],
                      weighted(rows_by_stage[s.id])) for s in pipe.open)
    else:
        groups: dict[str, list[OpenTotal]] = defaultdict(list)
        for total in counted:
            label = rep_label(total.group, rep_names) if by == "rep" else source_label(total.group)
            groups[label].append(total)
        rows = tuple((label, sum(t.deals for t in items), money(sum((money(t.value) for t in items), Decimal(0))),
                      None, weighted(items)) for label, items in sorted(groups.items()))
    table = Table("by_stage", "Open pipeline", (by, "deals", "value", "probability", "weighted"), rows)
    return Report("pipeline", period, by, (table,), (
        Headline("open_deals", "Open deals", sum(t.deals for t in counted)),
        Headline("open_value", "Open value", money(sum((money(t.value) for t in counted), Decimal(0)))),
        Headline("weighted_value", "Weighted value", weighted(counted)),
    ))


def funnel_report(period: Period, stages: Sequence[StageInfo], moves: Sequence[Move],
                  created: Sequence[DealFact], min_sample: int) -> Report:
    """``moves``: the stage changes dated in the period; ``created``: the deals created in it."""
    pipe = Pipeline(stages)
    history = _by_deal(m for m in moves if m.at in period)
    rows = []
    for stage in pipe.open:
        beyond = pipe.beyond(stage.name)
        reached = advanced = 0
        for deal_moves in history.values():
            arrivals = [i for i, m in enumerate(deal_moves) if m.to_stage == stage.name]
            if not arrivals:
                continue
            reached += 1
            advanced += any(m.to_stage in beyond for m in deal_moves[arrivals[0] + 1:])
        rows.append((stage.name, reached, advanced, Rate(advanced, reached, min_sample)))
    names = pipe.opportunity_names()
    notes = ()
    if names is None:
        lead_rate: Cell = None
        notes = (NO_QUALIFYING_NOTE,)
    else:
        lead_rate = Rate(len(_opportunities(created, moves, names, period.until)), len(created), min_sample)
    table = Table("stages", "Stage to stage", ("stage", "reached", "advanced", "conversion"), tuple(rows))
    return Report("funnel", period, None, (table,),
                  (Headline("lead_to_opportunity", "Lead to opportunity", lead_rate),), notes)


def _won(pipe: Pipeline, closed: Sequence[DealFact]) -> list[DealFact]:
    return [d for d in closed if pipe.kind(d.stage_id) == "won"]


def _closed(pipe: Pipeline, closed: Sequence[DealFact]) -> list[DealFact]:
    """Deals closed (won or lost) in the period; a deal reopened since has no close date and is not here."""
    return [d for d in closed if pipe.kind(d.stage_id) in ("won", "lost")]


def _arrival(deal_moves: Sequence[Move], leaving: Move) -> Move | None:
    """The deal's latest move into the stage ``leaving`` leaves, before it."""
    found = None
    for move in deal_moves:
        if (move.at, move.id) >= (leaving.at, leaving.id):
            break
        if move.to_stage == leaving.from_stage:
            found = move
    return found


def needs_earlier_history(moves: Sequence[Move], period: Period) -> set[int]:
    """Deals that left a stage in the period without having arrived in it during the period: only
    their changes before the period are worth loading to measure the time they spent there."""
    per_deal = _by_deal(m for m in moves if m.at in period)
    return {deal_id for deal_id, deal_moves in per_deal.items()
            if any(m.from_stage is not None and _arrival(deal_moves, m) is None for m in deal_moves)}


def velocity_report(period: Period, now: datetime, stages: Sequence[StageInfo], open_deals: Sequence[OpenDeal],
                    moves: Sequence[Move], earlier: Sequence[Move], closed: Sequence[DealFact],
                    min_sample: int) -> Report:
    """``moves``: the stage changes dated in the period; ``earlier``: the changes before the period
    of the deals ``needs_earlier_history`` names (to find when they arrived in a stage they left
    in the period); ``closed``: the deals closed in the period."""
    pipe = Pipeline(stages)
    in_period = [m for m in moves if m.at in period]
    per_deal = _by_deal([*in_period, *(m for m in earlier if m.at < period.since)])
    spent: dict[str, list[float]] = defaultdict(list)
    for move in in_period:
        if move.from_stage is None:
            continue
        arrival = _arrival(per_deal[move.deal_id], move)
        if arrival is not None:
            spent[move.from_stage].append(_seconds(move.at, arrival.at))
    rows = []
    for stage in pipe.open:
        here = [d for d in open_deals if d.stage_id == stage.id]
        ages = [_seconds(now, d.created_at) for d in here]
        rows.append((stage.name, len(here), average(ages, min_sample), median(ages, min_sample),
                     average(spent[stage.name], min_sample),
                     average([_seconds(now, d.stage_since) for d in here], min_sample)))
    won = _won(pipe, closed)
    cycles = [_seconds(d.closed_at, d.created_at) for d in won]
    changes = sum(1 for m in in_period if m.from_stage is not None)
    weeks = Decimal(str(_seconds(period.until, period.since))) / Decimal(7 * 86400)
    per_week = int((Decimal(changes) / weeks).quantize(Decimal(1), ROUND_HALF_UP)) if weeks > 0 else 0
    speed, notes = _velocity(len(open_deals), _closed(pipe, closed), won, cycles, min_sample)
    table = Table("stages", "Open deals by stage",
                  ("stage", "open deals", "average age", "median age", "average time in stage",
                   "time in current stage"), tuple(rows))
    return Report("velocity", period, None, (table,), (
        Headline("cycle_length", "Cycle length of won deals (median)", median(cycles, min_sample)),
        Headline("moved_per_week", "Deals moved per week", per_week),
        Headline("velocity", "Pipeline velocity (value per day)", speed),
    ), notes)


def _velocity(open_count: int, closed: list[DealFact], won: list[DealFact], cycles: list[float],
              min_sample: int) -> tuple[Decimal | None, tuple[str, ...]]:
    rate = Rate(len(won), len(closed), min_sample)
    values = [money(d.value) for d in won if d.value is not None]
    missing = []
    if rate.value is None:
        missing.append(f"{len(closed)} deals closed")
    if not _enough(len(values), min_sample):
        missing.append(f"{len(values)} won deals with a value")
    if not _enough(len(cycles), min_sample):
        missing.append(f"{len(cycles)} won deals")
    if missing:
        return None, (f"Pipeline velocity needs at least {max(min_sample, 1)} of each; the period has "
                      f"{', '.join(missing)}.",)
    cycle_days = Decimal(str(math.fsum(cycles) / len(cycles))) / Decimal(86400)
    if cycle_days <= 0:
        return None, ("Pipeline velocity: the won deals closed the moment they were created.",)
    value = Decimal(open_count) * Decimal(len(won)) / Decimal(len(closed)) * (sum(values) / len(values)) / cycle_days
    return money(value), ()


def _rate_rows(groups: Mapping[str, list[DealFact]], pipe: Pipeline, min_sample: int) -> tuple[tuple[Cell, ...], ...]:
    rows = []
    for label, deals in sorted(groups.items()):
        won = len(_won(pipe, deals))
        rows.append((label, won, len(deals), Rate(won, len(deals), min_sample)))
    return tuple(rows)


def wins_report(period: Period, stages: Sequence[StageInfo], closed: Sequence[DealFact], history: Sequence[Move],
                rep_names: Mapping[int, str], min_sample: int) -> Report:
    """``closed``: the deals closed in the period; ``history``: their stage changes."""
    pipe = Pipeline(stages)
    deals = _closed(pipe, closed)
    won = _won(pipe, deals)
    per_deal = _by_deal(history)
    stage_rows = []
    for stage in pipe.open:
        reached = [d for d in deals if any(m.to_stage == stage.name and m.at <= d.closed_at
                                           for m in per_deal.get(d.id, ()))]
        n_won = len(_won(pipe, reached))
        stage_rows.append((stage.name, n_won, len(reached), Rate(n_won, len(reached), min_sample)))
    by_source: dict[str, list[DealFact]] = defaultdict(list)
    by_rep: dict[str, list[DealFact]] = defaultdict(list)
    for deal in deals:
        by_source[source_label(deal.source)].append(deal)
        by_rep[rep_label(deal.owner_id, rep_names)].append(deal)
    reasons = Counter((d.lost_reason or "").strip() or "(no reason given)"
                      for d in deals if pipe.kind(d.stage_id) == "lost")
    columns = ("won", "closed", "win rate")
    return Report("wins", period, None, (
        Table("by_stage_reached", "Win rate by stage reached", ("stage", *columns), tuple(stage_rows)),
        Table("by_source", "Win rate by source", ("source", *columns), _rate_rows(by_source, pipe, min_sample)),
        Table("by_rep", "Win rate by rep", ("rep", *columns), _rate_rows(by_rep, pipe, min_sample)),
        Table("lost_reasons", "Lost reasons", ("reason", "deals"),
              tuple(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))),
    ), (Headline("win_rate", "Win rate", Rate(len(won), len(deals), min_sample)),))


def _months(first: date, last: date) -> Iterator[date]:
    """The first day of every month from ``first``'s to ``last``'s."""
    month = first.replace(day=1)
    while month <= last:
        yield month
        month = (month + timedelta(days=32)).replace(day=1)


def source_cost(costs: Sequence[CostRow], since: date, until: date) -> Decimal | None:
    """One source's cost over the local days [since, until): each month's cost (its latest row from
    that month or before) times the share of the month's days in the span; None when no cost applies."""
    if until <= since:
        return None
    ordered = sorted(costs, key=lambda c: c.month)
    total, applied = Decimal(0), False
    for month in _months(since, until - timedelta(days=1)):
        rows = [c for c in ordered if c.month <= month]
        if not rows:
            continue
        following = (month + timedelta(days=32)).replace(day=1)
        days = (min(until, following) - max(since, month)).days
        total += Decimal(str(rows[-1].amount)) * days / (following - month).days
        applied = True
    return money(total) if applied else None


def sources_report(period: Period, zone: ZoneInfo, stages: Sequence[StageInfo], created: Sequence[DealFact],
                   moves: Sequence[Move], closed: Sequence[DealFact], costs: Sequence[CostRow]) -> Report:
    """``created``: deals created in the period; ``moves``: the stage changes dated in it;
    ``closed``: deals closed in it; ``costs``: every source_costs row."""
    pipe = Pipeline(stages)
    names = pipe.opportunity_names()
    opportunities = _opportunities(created, moves, names, period.until) if names is not None else set()
    since, until = period.since.astimezone(zone).date(), period.until.astimezone(zone).date()
    cost_rows: dict[str, list[CostRow]] = defaultdict(list)
    for row in costs:
        cost_rows[row.source].append(row)
    leads: dict[str, list[DealFact]] = defaultdict(list)
    for deal in created:
        leads[deal.source or ""].append(deal)
    won: dict[str, list[DealFact]] = defaultdict(list)
    for deal in _won(pipe, closed):
        won[deal.source or ""].append(deal)
    rows = []
    for source in sorted({*leads, *won, *cost_rows}, key=source_label):
        cost = source_cost(cost_rows.get(source, ()), since, until)
        if cost is None and source not in leads and source not in won:
            continue  # a cost that starts after the period
        value = money(sum((money(d.value) for d in won[source] if d.value is not None), Decimal(0)))
        back = money((value - cost) / cost) if cost else None
        rows.append((source_label(source), len(leads[source]), sum(d.id in opportunities for d in leads[source]),
                     len(won[source]), value, cost, back))
    notes = (NO_QUALIFYING_NOTE,) if names is None else ()
    table = Table("sources", "Sources", ("source", "leads", "opportunities", "won", "won value", "cost", "return"),
                  tuple(rows), "return = (won value - cost) / cost")
    return Report("sources", period, None, (table,), (Headline("leads", "Leads", len(created)),), notes)


def response_report(period: Period, by: str, created: Sequence[DealFact], waiting: Sequence[WaitingDeal],
                    rep_names: Mapping[int, str], hours: BusinessHours, target_minutes: int,
                    min_sample: int) -> Report:
    """``created``: deals created in the period (those without a first response, or opened by the
    rep's own email, are left out here); ``waiting``: the open deals whose prospect wrote last."""
    answered = [d for d in created if d.first_response_at is not None and d.first_response_at > d.created_at]
    seconds = {d.id: business_seconds(d.created_at, d.first_response_at, hours.zone, hours.days, hours.span)
               for d in answered}
    target = target_minutes * 60

    def figures(deals: Sequence[DealFact]) -> tuple[Duration, Duration, Rate]:
        times = [seconds[d.id] for d in deals]
        return (median(times, min_sample), percentile(times, 90, min_sample),
                Rate(sum(t <= target for t in times), len(times), min_sample))

    groups: dict[str, list[DealFact]] = defaultdict(list)
    for deal in answered:
        groups[_label(by, deal, rep_names)].append(deal)
    rows = tuple((label, len(deals), *figures(deals)) for label, deals in sorted(groups.items()))
    overall_median, _, within = figures(answered)
    waiting_rows = tuple((f"D-{w.deal_id} {w.title}".strip(), rep_label(w.owner_id, rep_names),
                          w.since.astimezone(hours.zone).strftime("%Y-%m-%d %H:%M"))
                         for w in sorted(waiting, key=lambda w: (w.since, w.deal_id)))
    return Report("response", period, by, (
        Table("first_response", "First response (business time)", (by, "answered", "median", "p90", "within target"),
              rows, f"target: {target_minutes} minutes of business time"),
        Table("waiting", "Prospects waiting for an answer", ("deal", "owner", "waiting since"), waiting_rows),
    ), (
        Headline("median_first_response", "Median first response", overall_median),
        Headline("within_target", "Answered within target", within),
        Headline("waiting", "Prospects waiting", len(waiting)),
    ))


def activity_report(period: Period, by: str, stages: Sequence[StageInfo], created: Sequence[DealFact],
                    moves: Sequence[Move], movers: Sequence[DealFact], closed: Sequence[DealFact],
                    rep_names: Mapping[int, str]) -> Report:
    """``moves``: the stage changes dated in the period; ``movers``: the deals those moves belong
    to (for their source and owner); ``closed``: the deals closed in the period."""
    pipe = Pipeline(stages)
    forward = {m.deal_id for m in moves if m.at in period and pipe.forward(m)}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for deal in created:
        counts[_label(by, deal, rep_names)][0] += 1
    for deal in movers:
        if deal.id in forward:
            counts[_label(by, deal, rep_names)][1] += 1
    for deal in closed:
        if pipe.kind(deal.stage_id) == "lost":
            counts[_label(by, deal, rep_names)][2] += 1
    rows = tuple((label, *values) for label, values in sorted(counts.items()))
    totals = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    return Report("activity", period, by, (
        Table("activity", "Leads created, advanced, lost", (by, "leads created", "advanced", "lost"), rows),
    ), (
        Headline("leads_created", "Leads created", totals[0]),
        Headline("advanced", "Advanced", totals[1]),
        Headline("lost", "Lost", totals[2]),
    ))
