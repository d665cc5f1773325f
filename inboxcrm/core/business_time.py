"""Wall-clock arithmetic in a rep's time zone: when a digest is due and how many business hours passed.

A rep thinks in local wall-clock time ("my digest at 08:00 on weekdays", "answer within two
working hours"), while the records hold UTC instants. Daylight saving makes the mapping
between them neither one-to-one nor total: a spring-forward day has wall times that never
happen, a fall-back day has an hour that happens twice. Everything here resolves a wall time
to the *earliest instant at which the wall clock has reached it*: a missing time becomes the
moment the clocks jump, a repeated one its first occurrence. Pure: instants and zones in,
instants out; weekdays arrive as numbers (Monday 0), already parsed by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

# A business-hours search walks day by day; a year bounds it even for one working day a week.
MAX_DAYS = 400


@dataclass(frozen=True)
class Span:
    """Part of a day in wall-clock time, such as 09:00-17:00."""

    start: time
    end: time


def parse_clock(text: str) -> time:
    """"HH:MM" -> time; the caller has validated the text (config's rules)."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def parse_span(text: str) -> Span:
    """"09:00-17:00" -> Span, as config.digest.business_hours holds it."""
    start, end = text.split("-")
    return Span(parse_clock(start.strip()), parse_clock(end.strip()))


def _exists(local: datetime, zone: ZoneInfo) -> bool:
    return local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None, fold=0)


@lru_cache(maxsize=4096)  # the same few days and clocks, asked for every waiting deal every pass
def at_wall(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The earliest UTC instant at which the wall clock in ``zone`` shows ``day`` ``clock`` or later.

    A repeated wall time (fall back) gives its first occurrence; a skipped one (spring
    forward) gives the instant the clocks jump over it, the first moment after it."""
    naive = datetime.combine(day, clock)
    found = [naive.replace(tzinfo=zone, fold=fold) for fold in (0, 1)]
    existing = [d.astimezone(UTC) for d in found if _exists(d, zone)]
    if existing:
        return min(existing)
    # In a gap the two folds map to the instants either side of it, in either order;
    # the jump is the first instant whose wall time is at or past the wanted one.
    low, high = sorted(d.astimezone(UTC) for d in found)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def digest_due_date(now: datetime, zone: ZoneInfo, days: frozenset[int], clock: time) -> date | None:
    """The local date whose digest is due at ``now``, or None: today's, when today is a digest
    day and its time has come. The date is the digest's identity, so a repeated hour cannot
    make a second one."""
    today = local_date(now, zone)
    if today.weekday() in days and now >= at_wall(today, clock, zone):
        return today
    return None


def next_digest_at(now: datetime, zone: ZoneInfo, days: frozenset[int], clock: time) -> datetime:
    """The first digest instant after ``now`` (for showing a rep their schedule)."""
    day = local_date(now, zone)
    for _ in range(8):
        if day.weekday() in days:
            due = at_wall(day, clock, zone)
            if due > now:
                return due
        day += timedelta(days=1)
    raise ValueError("no digest day in a week")  # days is never empty (config.parse_weekdays)


def _windows(start: datetime, zone: ZoneInfo, days: frozenset[int], span: Span):
    """Business windows (UTC start, UTC end) from the local day of ``start`` on, in order."""
    day = local_date(start, zone)
    for _ in range(MAX_DAYS):
        if day.weekday() in days:
            yield at_wall(day, span.start, zone), at_wall(day, span.end, zone)
        day += timedelta(days=1)


def business_seconds(start: datetime, end: datetime, zone: ZoneInfo, days: frozenset[int], span: Span) -> float:
    """Seconds of business time between two instants (0 when end is not after start)."""
    total = 0.0
    for open_, close in _windows(start, zone, days, span):
        if open_ >= end:
            break
        total += max(0.0, (min(close, end) - max(open_, start)).total_seconds())
    return total


def add_business_hours(start: datetime, hours: float, zone: ZoneInfo, days: frozenset[int], span: Span) -> datetime:
    """The instant at which ``hours`` of business time have passed since ``start``: a message
    that arrives on Friday evening is "two business hours old" on Monday at 11:00."""
    left = timedelta(hours=hours)
    for open_, close in _windows(start, zone, days, span):
        begin = max(open_, start)
        if begin >= close:
            continue
        if begin + left <= close:
            return begin + left
        left -= close - begin
    raise ValueError(f"{hours} business hours do not fit in {MAX_DAYS} days")


def rep_timezone(name: str | None, fallback: str) -> ZoneInfo:
    """A rep's zone as stored; one the system no longer knows falls back to the team's."""
    try:
        return ZoneInfo(name or fallback)
    except (ValueError, KeyError, OSError):
        return ZoneInfo(fallback)
