"""The manager's figures, computed from plain rows: the values every report is made of.

Pure: rows come from ``store.report_queries``, the period and the thresholds are arguments, and
a report is a frozen ``Report`` of tables and headline figures that the command line prints as a
table, JSON or CSV and the weekly review lays out. A rate over a handful of deals reads as a
fact ("100 % win rate") when it is noise, so a ``Rate`` or ``Duration`` built from fewer than
``min_sample`` deals carries its counts but no value, and every output says "too few to say".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

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
