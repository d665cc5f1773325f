"""Due times and business hours in the rep's zone, across nights, weekends and DST changes."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from inboxcrm.config import parse_weekdays
from inboxcrm.core.business_time import (
    add_business_hours,
    at_wall,
    business_seconds,
    digest_due_date,
    next_digest_at,
    parse_span,
)

BERLIN, AUCKLAND, LA = ZoneInfo("Europe/Berlin"), ZoneInfo("Pacific/Auckland"), ZoneInfo("America/Los_Angeles")
WEEKDAYS = parse_weekdays("mon-fri")
NINE_TO_FIVE = parse_span("09:00-17:00")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_an_ordinary_wall_time_is_that_instant():
    assert at_wall(date(2026, 6, 10), time(8, 0), BERLIN) == utc(2026, 6, 10, 6, 0)  # CEST, +2
    assert at_wall(date(2026, 12, 10), time(8, 0), BERLIN) == utc(2026, 12, 10, 7, 0)  # CET, +1


def test_a_time_skipped_by_spring_forward_is_due_when_the_clocks_jump():
    # Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never happens.
    assert at_wall(date(2026, 3, 29), time(2, 30), BERLIN) == utc(2026, 3, 29, 1, 0)
    # Los Angeles, 8 March 2026: 02:00 PST becomes 03:00 PDT (10:00 UTC).
    assert at_wall(date(2026, 3, 8), time(2, 15), LA) == utc(2026, 3, 8, 10, 0)
    # Auckland, 27 September 2026: 02:00 NZST becomes 03:00 NZDT (14:00 UTC the day before).
    assert at_wall(date(2026, 9, 27), time(2, 45), AUCKLAND) == utc(2026, 9, 26, 14, 0)


def test_a_time_repeated_by_fall_back_is_due_at_its_first_occurrence():
    # Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    assert at_wall(date(2026, 10, 25), time(2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    # Auckland, 5 April 2026: 03:00 NZDT becomes 02:00 NZST; 02:30 first at 13:30 UTC on the 4th.
    assert at_wall(date(2026, 4, 5), time(2, 30), AUCKLAND) == utc(2026, 4, 4, 13, 30)


@pytest.mark.parametrize("zone, day, clock", [
    (BERLIN, date(2026, 3, 29), time(2, 30)), (BERLIN, date(2026, 10, 25), time(2, 30)),
    (LA, date(2026, 3, 8), time(2, 15)), (LA, date(2026, 11, 1), time(1, 30)),
    (AUCKLAND, date(2026, 9, 27), time(2, 45)), (AUCKLAND, date(2026, 4, 5), time(2, 30)),
])
def test_on_a_dst_day_the_digest_is_due_exactly_once_a_minute_apart(zone, day, clock):
    """Walking the whole local day minute by minute: due from one instant on, for one date."""
    days = frozenset(range(7))
    start = at_wall(day, time(0, 0), zone)
    minutes = [start + timedelta(minutes=m) for m in range(26 * 60)]
    due = [digest_due_date(m, zone, days, clock) for m in minutes]
    first = next(i for i, d in enumerate(due) if d == day)
    assert all(d is None for d in due[:first])  # nothing before the time
    assert all(d in (day, None) or d > day for d in due[first:])
    assert minutes[first] == at_wall(day, clock, zone)
    assert minutes[first].astimezone(zone).replace(tzinfo=None) >= datetime.combine(day, clock)


def test_digest_due_only_on_digest_days_in_the_reps_own_date():
    clock = time(8, 0)
    saturday = utc(2026, 11, 21, 9, 0)
    assert digest_due_date(saturday, BERLIN, WEEKDAYS, clock) is None
    assert digest_due_date(saturday, BERLIN, parse_weekdays("sat-sun"), clock) == date(2026, 11, 21)
    # Monday 20:00 UTC is already Tuesday 09:00 in Auckland: Tuesday's digest is due there.
    monday_evening = utc(2026, 11, 23, 20, 0)
    assert digest_due_date(monday_evening, AUCKLAND, WEEKDAYS, clock) == date(2026, 11, 24)
    # ... and a Friday evening in UTC is Saturday in Auckland: no digest.
    assert digest_due_date(utc(2026, 11, 20, 20, 0), AUCKLAND, WEEKDAYS, clock) is None
    # Before the time, not yet; Los Angeles is behind: Monday 14:00 UTC is 06:00 there.
    assert digest_due_date(utc(2026, 11, 23, 14, 0), LA, WEEKDAYS, clock) is None
    assert digest_due_date(utc(2026, 11, 23, 16, 0), LA, WEEKDAYS, clock) == date(2026, 11, 23)


def test_next_digest_skips_the_weekend():
    friday_noon = utc(2026, 11, 20, 12, 0)
    assert next_digest_at(friday_noon, BERLIN, WEEKDAYS, time(8, 0)) == utc(2026, 11, 23, 7, 0)
    assert next_digest_at(friday_noon, BERLIN, parse_weekdays("mon,wed,fri"), time(14, 0)) == utc(2026, 11, 20, 13, 0)


def test_business_hours_skip_nights_and_weekends():
    friday_1600 = datetime(2026, 11, 20, 16, 0, tzinfo=BERLIN)
    monday_1000 = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    assert business_seconds(friday_1600, monday_1000, BERLIN, WEEKDAYS, NINE_TO_FIVE) == 2 * 3600
    assert add_business_hours(friday_1600, 2, BERLIN, WEEKDAYS, NINE_TO_FIVE) == monday_1000
    # Arriving at night counts from the next morning.
    tuesday_2300 = datetime(2026, 11, 24, 23, 0, tzinfo=BERLIN)
    assert add_business_hours(tuesday_2300, 2, BERLIN, WEEKDAYS, NINE_TO_FIVE) == \
        datetime(2026, 11, 25, 11, 0, tzinfo=BERLIN)
    # Saturday mail is first counted on Monday; 10 hours run into Tuesday.
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=BERLIN)
    assert add_business_hours(saturday, 10, BERLIN, WEEKDAYS, NINE_TO_FIVE) == \
        datetime(2026, 11, 24, 11, 0, tzinfo=BERLIN)
    assert business_seconds(saturday, datetime(2026, 11, 22, 23, 0, tzinfo=BERLIN), BERLIN, WEEKDAYS,
                            NINE_TO_FIVE) == 0
    assert business_seconds(monday_1000, friday_1600, BERLIN, WEEKDAYS, NINE_TO_FIVE) == 0


def test_business_hours_are_the_reps_hours_not_utcs():
    # 08:00 UTC on a Monday is midnight in Los Angeles: the two hours start at 09:00 PST (17:00 UTC).
    arrived = utc(2026, 11, 23, 8, 0)
    assert add_business_hours(arrived, 2, LA, WEEKDAYS, NINE_TO_FIVE) == utc(2026, 11, 23, 19, 0)
    assert add_business_hours(arrived, 2, BERLIN, WEEKDAYS, NINE_TO_FIVE) == utc(2026, 11, 23, 10, 0)


def test_a_business_day_across_a_dst_change_is_still_eight_hours():
    monday = datetime(2026, 3, 30, 0, 0, tzinfo=BERLIN)  # the day after spring forward
    friday = datetime(2026, 3, 27, 0, 0, tzinfo=BERLIN)
    assert business_seconds(friday, monday + timedelta(days=1), BERLIN, WEEKDAYS, NINE_TO_FIVE) == 16 * 3600
    # A span that crosses a skipped hour is an hour shorter: 01:00-04:00 on spring-forward Sunday.
    night = parse_span("01:00-04:00")
    sunday = date(2026, 3, 29)
    assert business_seconds(at_wall(sunday, time(0), BERLIN), at_wall(sunday, time(23), BERLIN), BERLIN,
                            frozenset({6}), night) == 2 * 3600
