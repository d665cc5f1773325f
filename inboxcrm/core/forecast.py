"""Expected close dates and the forecast built on them: what should close this month and next,
which deals' dates have passed, and how past forecasts compared with what was won.

Pure: rows come from ``store.forecast_queries``, today and the team's time zone are arguments.
A forecast is only worth reading if it owns up to its misses, so a deal whose date has passed is
not counted in this month's figures (it is listed as slipped until someone gives it a new
date), moving a passed date later counts as a slip, and each past month's forecast is rebuilt
from the close dates the deals had at that month's start and set against what was won.
"""
from __future__ import annotations

import re
from calendar import monthrange
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from inboxcrm.core.business_time import at_wall
from inboxcrm.core.inputs import DUE_FORMS, add_months, read_date
from inboxcrm.core.metrics import Headline, Period, Report, Table, probability
from inboxcrm.core.views import clip
from inboxcrm.errors import Invalid

CLOSE_FORMS = (f"{DUE_FORMS}; also a month and day such as dec 15 or 15 december 2027, end of month, "
               f"end of next month, or none to clear it")
HISTORY_MONTHS = 6  # full months the forecast is checked against what was won
CENTS = Decimal("0.01")

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_ORDINAL = r"(\d{1,2})(?:st|nd|rd|th)?"
_MONTH = r"([a-z]{3,9})"
_MONTH_DAY = re.compile(rf"(?:{_ORDINAL} (?:of )?{_MONTH}|{_MONTH} {_ORDINAL}),?(?: (\d{{4}}))?")


# -- what a person types for a close date ---------------------------------------------------

def _month_number(word: str) -> int | None:
    found = [i for i, name in enumerate(_MONTHS, start=1) if name.startswith(word)]
    return found[0] if len(found) == 1 else None


def _month_day(word: str, today: date) -> date | None:
    """"dec 15", "15th of december", "december 15, 2027": without a year, the next such day from
    today on, so "jan 10" said in November is next January. None when ``word`` is no such form."""
    m = _MONTH_DAY.fullmatch(word)
    if m is None:
        return None
    day_text, month_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    month = _month_number(month_text)
    if month is None:
        return None
    day, year = int(day_text), m.group(5)
    if year is not None:
        return date(int(year), month, day)  # ValueError for 31 november: the caller's refusal
    found = date(today.year, month, day) if day <= monthrange(today.year, month)[1] else None
    if found is None or found < today:
        found = date(today.year + 1, month, day)
    return found


def _end_of_month(day: date) -> date:
    return day.replace(day=monthrange(day.year, day.month)[1])


def read_close(text: str, today: date) -> date | None:
    """A close date as ``deal close`` and ``close:`` take it: None for "none" (clear it), else a
    date today or later in CLOSE_FORMS (``today`` is the person's own date). The due dates'
    grammar, plus month names and month ends, because that is how people say when a deal closes."""
    word = " ".join((text or "").lower().split()).rstrip(".!,;")
    if word == "none":
        return None
    try:
        if word in ("end of month", "end of this month", "end of the month"):
            day = _end_of_month(today)
        elif word == "end of next month":
            day = _end_of_month(add_months(today.replace(day=1), 1))
        else:
            day = _month_day(word, today) or read_date(word, today)
    except (Invalid, ValueError, OverflowError):
        raise Invalid(f'invalid close date "{clip(text or "", 40)}"; expected {CLOSE_FORMS}') from None
    if day < today:
        raise Invalid(f"the close date {day.isoformat()} has passed; expected today or later: {CLOSE_FORMS}")
    return day


def slipped(previous: date | None, new: date | None, today: date) -> bool:
    """A slip: the date the deal last had has passed and the new one is later. ``previous`` is the
    last date the deal had even if it was cleared since, so clearing a passed date and setting a
    new one still counts."""
    return previous is not None and new is not None and previous < today and new > previous


# -- the rows a forecast is made of ---------------------------------------------------------

@dataclass(frozen=True)
class StageOdds:
    id: int
    kind: str  # open | won | lost
    probability: int | None  # what the admin set; None: the default for its place


@dataclass(frozen=True)
class OpenDeal:
    """An open deal with an expected close date."""

    id: int
    owner: str | None
    stage_id: int
    value: Decimal | None
    expected_close: date
    close_slips: int


@dataclass(frozen=True)
class PastCloseDate:
    """One close date change of a deal that was open at the start of the months looked back on."""

    deal_id: int
    value: Decimal | None  # the deal's value today: no history of values is kept
    closed_at: datetime | None
    close_date: date | None
    at: datetime


@dataclass(frozen=True)
class ClosedDeal:
    closed_at: datetime
    value: Decimal | None
    stage_id: int


@dataclass(frozen=True)
class Month:
    """A calendar month in the team's time zone: its first day and the UTC instants it spans."""

    first: date
    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        return self.first.strftime("%Y-%m")

    def holds(self, day: date) -> bool:
        return self.first <= day < add_months(self.first, 1)


def month(first: date, zone: ZoneInfo) -> Month:
    return Month(first, at_wall(first, time(0), zone), at_wall(add_months(first, 1), time(0), zone))


@dataclass(frozen=True)
class Months:
    """The months a forecast looks at: HISTORY_MONTHS full ones before this one, this one, the next."""

    past: tuple[Month, ...]
    this: Month
    next: Month

    @property
    def until(self) -> date:
        """The first day after the months forecast."""
        return add_months(self.next.first, 1)


def months_around(today: date, zone: ZoneInfo) -> Months:
    first = today.replace(day=1)
    return Months(tuple(month(add_months(first, -n), zone) for n in range(HISTORY_MONTHS, 0, -1)),
                  month(first, zone), month(add_months(first, 1), zone))


# -- the figures ----------------------------------------------------------------------------

def stage_probabilities(stages: Sequence[StageOdds]) -> dict[int, int]:
    """Stage id -> win probability in percent; ``stages`` in pipeline order."""
    open_ids = [s.id for s in stages if s.kind == "open"]
    return {s.id: probability(s.kind, s.probability, open_ids.index(s.id) if s.id in open_ids else 0,
                              len(open_ids)) for s in stages}


def _total(values: Iterable[Decimal | None]) -> Decimal:
    return sum((v or Decimal(0) for v in values), Decimal(0)).quantize(CENTS)


def forecast_at_start(changes: Iterable[PastCloseDate], months: Sequence[Month]) -> dict[date, tuple[int, Decimal]]:
    """Per month, (deals, value) of the forecast as it stood at the month's start: the deals open
    then whose latest close date set at or before that instant fell in the month. ``changes`` may
    leave out a deal's changes that were never in force at a month's start, and a date in force
    at the first month's start that falls in none of the months."""
    by_deal: dict[int, list[PastCloseDate]] = defaultdict(list)
    for change in changes:
        by_deal[change.deal_id].append(change)
    counted: dict[date, list[Decimal | None]] = {m.first: [] for m in months}
    for deal_changes in by_deal.values():
        deal_changes.sort(key=lambda c: c.at)
        closed_at = deal_changes[0].closed_at
        for m in months:
            if closed_at is not None and closed_at < m.start:
                continue
            latest = None
            for change in deal_changes:
                if change.at > m.start:
                    break
                latest = change
            if latest is not None and latest.close_date is not None and m.holds(latest.close_date):
                counted[m.first].append(latest.value)
    return {first: (len(values), _total(values)) for first, values in counted.items()}


def accuracy(won: Decimal, forecast: Decimal, deals: int, min_sample: int) -> Decimal | str | None:
    """Won / forecast (1.00: as forecast); "too few" when the forecast held fewer than
    ``min_sample`` deals, since a ratio of one or two deals says nothing about the team."""
    if deals < max(min_sample, 1):
        return f"too few ({deals} of {min_sample} deals)"
    if not forecast:
        return None
    return (won / forecast).quantize(CENTS)


def build_report(today: date, months: Months, odds: Sequence[StageOdds], dated: Sequence[OpenDeal],
                 past: Sequence[PastCloseDate], closed: Sequence[ClosedDeal], min_sample: int) -> Report:
    """The forecast report. ``dated``: open deals with a close date before ``months.until``;
    ``past``: of the deals open at the start of ``months.past[0]``, the changes that may have been
    in force at a past month's start (``forecast_at_start``); ``closed``: deals closed in the past
    months."""
    percent = stage_probabilities(odds)
    won_stages = {s.id for s in odds if s.kind == "won"}
    month_rows, headlines = [], []
    for m, key, label in ((months.this, "this_month", "expected to close this month"),
                          (months.next, "next_month", "expected to close next month")):
        deals = [d for d in dated if m.holds(d.expected_close) and d.expected_close >= today]
        value = _total(d.value for d in deals)
        weighted = _total((d.value or Decimal(0)) * percent.get(d.stage_id, 0) / 100 for d in deals)
        month_rows.append((m.name, len(deals), value, weighted))
        headlines.append(Headline(key, label, value))
    late = sorted((d for d in dated if d.expected_close < today), key=lambda d: (d.expected_close, d.id))
    headlines.append(Headline("slipped", "deals whose close date has passed", len(late)))

    at_start = forecast_at_start(past, months.past)
    history = []
    for m in months.past:
        deals, forecast = at_start[m.first]
        won = _total(c.value for c in closed if c.stage_id in won_stages and m.start <= c.closed_at < m.end)
        history.append((m.name, forecast, won, accuracy(won, forecast, deals, min_sample)))

    return Report(
        name="forecast", period=Period(months.this.start, months.next.end), by=None,
        tables=(
            Table("months", "Expected to close", ("month", "deals", "expected value", "weighted value"),
                  tuple(month_rows),
                  "open deals whose close date is in the month, from today on (a date that has passed is under "
                  "slipped until it gets a new one); weighted value = value x the stage's win probability"),
            Table("slipped", "Close date passed", ("deal", "owner", "close date", "slips", "value"),
                  tuple((f"D-{d.id}", d.owner, d.expected_close, d.close_slips, d.value) for d in late),
                  "open deals whose expected close date has passed, oldest first; slips: how often the date was "
                  "moved later after it had passed"),
            Table("history", "Past forecasts against what was won",
                  ("month", "forecast at month start", "won", "accuracy"), tuple(history),
                  "forecast: the open deals whose close date, as it stood when the month began, fell in the "
                  "month; won: the deals won in the month; accuracy = won / forecast (1.00: as forecast), too "
                  f"few to say when the forecast held fewer than {min_sample} deals"),
        ),
        headlines=tuple(headlines),
        notes=("Values are the deals' values today: inboxcrm keeps no history of values, so a past month's "
               "forecast is rebuilt from the close dates the deals had then, at today's values.",),
    )
