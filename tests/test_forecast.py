"""The forecast report on a fixture whose figures are worked out by hand below, on SQLite and
PostgreSQL: this month and next, the slipped deals, and the last six months' forecasts as they
stood at each month's start against what was won; plus the empty and the one-deal cases and the
team's time zone at a month's edge.

Every deal is made through the same app functions the CLI and commands by email use, at pinned
instants, so the close date history is the one a real team would leave behind.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from inboxcrm.app import deals
from inboxcrm.app.forecast import forecast_report
from inboxcrm.app.team import add_rep
from inboxcrm.config import load_config
from inboxcrm.core.forecast import months_around
from inboxcrm.store.db import transaction

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # today is Fri 2026-11-20 in the team's zone (UTC)
D = Decimal


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


class Crm:
    """Deals made and changed at given instants, as a rep would over the months."""

    def __init__(self, factory):
        self.factory = factory
        self.count = 0
        with transaction(factory) as s:
            add_rep(s, at(date(2026, 1, 1)), "test", "alice", ["alice@acme.example"])

    def deal(self, created: date, value: str | None = None, stage: str | None = None) -> str:
        self.count += 1
        with transaction(self.factory) as s:
            added = deals.add_lead(s, at(created), "alice", f"p{self.count}@prospect{self.count}.example",
                                   owner="alice", value=value, stage=stage)
        return added.ref

    def close(self, ref: str, on: date, when: date | None) -> None:
        with transaction(self.factory) as s:
            deals.set_close(s, at(on), "alice", ref, when, today=on)

    def won(self, ref: str, when: datetime) -> None:
        with transaction(self.factory) as s:
            deals.mark_won(s, when, "alice", ref)

    def lost(self, ref: str, when: datetime) -> None:
        with transaction(self.factory) as s:
            deals.mark_lost(s, when, "alice", ref, "went quiet")

    def report(self, config, now: datetime = NOW):
        with self.factory() as s:
            return forecast_report(s, config, now)


@pytest.fixture
def config(tmp_path):
    """min_sample 2: a month's forecast of one deal is too few to rate, of two it is rated."""
    path = tmp_path / "config.toml"
    path.write_text('[team]\ndomains = ["acme.example"]\n\n[reports]\nmin_sample = 2\n')
    return load_config(path, True)


def rows(report, key: str) -> list[tuple]:
    return list(report.table(key).rows)


def test_the_forecast_on_a_fixture_worked_out_by_hand(factory, config):
    crm = Crm(factory)
    # Default probabilities (migration 0008): New 10, Contacted 20, Proposal 60, Negotiation 80.
    d1 = crm.deal(date(2026, 8, 15), "10000", "Proposal")
    crm.close(d1, date(2026, 8, 20), date(2026, 9, 20))
    crm.won(d1, at(date(2026, 9, 25)))  # forecast for September and won in it
    d2 = crm.deal(date(2026, 8, 10), "5000")
    crm.close(d2, date(2026, 8, 10), date(2026, 9, 30))
    crm.close(d2, date(2026, 9, 28), date(2026, 10, 15))  # moved before the date passed: no slip
    crm.close(d2, date(2026, 10, 20), date(2026, 11, 10))  # Oct 15 had passed: slip 1; Nov 10 has passed too
    d3 = crm.deal(date(2026, 9, 5), "2000")
    crm.close(d3, date(2026, 9, 5), date(2026, 10, 5))
    crm.lost(d3, at(date(2026, 10, 3)))  # forecast for October (open on Oct 1), never won
    d4 = crm.deal(date(2026, 10, 10), "8000")
    crm.won(d4, at(date(2026, 10, 20)))  # won in October without ever being forecast
    d5 = crm.deal(date(2026, 10, 1), "4000", "Negotiation")
    crm.close(d5, date(2026, 10, 2), date(2026, 11, 25))
    d6 = crm.deal(date(2026, 11, 1), "6000", "Proposal")
    crm.close(d6, date(2026, 11, 1), date(2026, 12, 10))
    d7 = crm.deal(date(2026, 11, 2))  # no value: counts as a deal, adds nothing
    crm.close(d7, date(2026, 11, 2), date(2026, 11, 30))
    d8 = crm.deal(date(2026, 9, 1), "3000", "Contacted")
    crm.close(d8, date(2026, 9, 1), date(2026, 10, 20))
    crm.close(d8, date(2026, 9, 15), None)  # cleared before October began: not in October's forecast
    crm.close(d8, date(2026, 11, 3), date(2026, 12, 31))  # its last date, Oct 20, had passed: slip 1
    d9 = crm.deal(date(2026, 9, 1), "7000")
    crm.close(d9, date(2026, 9, 1), date(2026, 10, 31))  # never touched again: slipped, 0 slips
    d11 = crm.deal(date(2026, 3, 1), "900")
    crm.close(d11, date(2026, 3, 1), date(2026, 5, 10))
    crm.won(d11, at(date(2026, 4, 10)))  # closed before May began: in no forecast of the six months
    d12 = crm.deal(date(2026, 10, 10), "1000")
    crm.close(d12, date(2026, 10, 10), date(2026, 10, 25))  # set after October began: not forecast then
    crm.won(d12, at(date(2026, 10, 24)))
    d13 = crm.deal(date(2026, 7, 1), "500")
    crm.close(d13, date(2026, 7, 1), date(2026, 8, 15))
    crm.lost(d13, at(date(2026, 8, 20)))  # August's only forecast deal
    d14 = crm.deal(date(2026, 11, 4), "999")
    crm.close(d14, date(2026, 11, 4), date(2027, 1, 15))  # after next month: in neither month
    d15 = crm.deal(date(2026, 8, 1), "1500")
    crm.close(d15, date(2026, 8, 1), date(2026, 9, 15))  # September's forecast as it stood on Sep 1...
    crm.close(d15, date(2026, 9, 10), date(2026, 10, 10))  # ...though moved to October during September
    crm.lost(d15, at(date(2026, 10, 12)))
    d16 = crm.deal(date(2026, 8, 5), "700")
    crm.close(d16, date(2026, 8, 5), date(2026, 10, 20))
    crm.won(d16, at(date(2026, 9, 12)))  # won early, in September: no longer open when October began

    report = crm.report(config)
    assert report.name == "forecast" and report.by is None
    # November: D-5 4000 x 80 % = 3200, D-7 0 x 10 % = 0 (D-2's Nov 10 has passed: slipped, not here)
    # December: D-6 6000 x 60 % = 3600, D-8 3000 x 20 % = 600 -> 9000, weighted 4200
    assert rows(report, "months") == [("2026-11", 2, D("4000.00"), D("3200.00")),
                                      ("2026-12", 2, D("9000.00"), D("4200.00"))]
    # Oldest date first: D-9 (Oct 31, never moved), D-2 (Nov 10, moved once after Oct 15 passed)
    assert rows(report, "slipped") == [(d9, "alice", date(2026, 10, 31), 0, D("7000.00")),
                                       (d2, "alice", date(2026, 11, 10), 1, D("5000.00"))]
    # May-Jul: nothing forecast, nothing won. Aug: D-13 alone (500), too few; nothing won.
    # Sep: D-1 10000 + D-2 5000 + D-15 1500 = 16500; won D-1 10000 + D-16 700 = 10700
    #      -> 10700 / 16500 = 0.648 -> 0.65
    # Oct: D-2 5000 + D-3 2000 + D-9 7000 + D-15 1500 = 15500 (D-8 cleared, D-12 dated later, D-16 won);
    #      won D-4 8000 + D-12 1000 = 9000 -> 9000 / 15500 = 0.581 -> 0.58
    assert rows(report, "history") == [
        ("2026-05", D("0.00"), D("0.00"), "too few (0 of 2 deals)"),
        ("2026-06", D("0.00"), D("0.00"), "too few (0 of 2 deals)"),
        ("2026-07", D("0.00"), D("0.00"), "too few (0 of 2 deals)"),
        ("2026-08", D("500.00"), D("0.00"), "too few (1 of 2 deals)"),
        ("2026-09", D("16500.00"), D("10700.00"), D("0.65")),
        ("2026-10", D("15500.00"), D("9000.00"), D("0.58")),
    ]
    assert [(h.key, h.value) for h in report.headlines] == [
        ("this_month", D("4000.00")), ("next_month", D("9000.00")), ("slipped", 2)]
    assert report.table("months").columns == ("month", "deals", "expected value", "weighted value")
    assert report.table("slipped").columns == ("deal", "owner", "close date", "slips", "value")
    assert report.table("history").columns == ("month", "forecast at month start", "won", "accuracy")
    assert "today's values" in report.notes[0]
    assert (report.period.since, report.period.until) == (datetime(2026, 11, 1, tzinfo=UTC),
                                                          datetime(2027, 1, 1, tzinfo=UTC))


def test_an_empty_database_forecasts_nothing_and_rates_nothing(factory, config):
    report = Crm(factory).report(config)
    assert rows(report, "months") == [("2026-11", 0, D("0.00"), D("0.00")), ("2026-12", 0, D("0.00"), D("0.00"))]
    assert rows(report, "slipped") == []
    assert [r[0] for r in rows(report, "history")] == ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09",
                                                       "2026-10"]
    assert {r[1:] for r in rows(report, "history")} == {(D("0.00"), D("0.00"), "too few (0 of 2 deals)")}
    assert [(h.key, h.value) for h in report.headlines] == [
        ("this_month", D("0.00")), ("next_month", D("0.00")), ("slipped", 0)]


def test_one_deal(factory, config):
    crm = Crm(factory)
    ref = crm.deal(date(2026, 9, 1), "1200", "Qualified")  # Qualified: 40 %
    crm.close(ref, date(2026, 9, 2), date(2026, 12, 1))
    report = crm.report(config)
    assert rows(report, "months") == [("2026-11", 0, D("0.00"), D("0.00")), ("2026-12", 1, D("1200.00"), D("480.00"))]
    assert rows(report, "slipped") == []
    assert all(r[1] == D("0.00") for r in rows(report, "history"))  # December is no past month

    # A month later, in December's first days, it is this month's; once Dec 1 has passed, slipped.
    later = crm.report(config, datetime(2026, 12, 1, 9, tzinfo=UTC))
    assert rows(later, "months")[0] == ("2026-12", 1, D("1200.00"), D("480.00"))
    passed = crm.report(config, datetime(2026, 12, 2, 9, tzinfo=UTC))
    assert rows(passed, "months")[0] == ("2026-12", 0, D("0.00"), D("0.00"))
    assert rows(passed, "slipped") == [(ref, "alice", date(2026, 12, 1), 0, D("1200.00"))]
    # In January, December is a past month whose forecast (made in September) held this one deal.
    january = crm.report(config, datetime(2027, 1, 5, tzinfo=UTC))
    assert rows(january, "history")[-1] == ("2026-12", D("1200.00"), D("0.00"), "too few (1 of 2 deals)")


def test_months_and_wins_follow_the_teams_time_zone(factory, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[team]\ndomains = ["acme.example"]\ntimezone = "Pacific/Auckland"\n\n[reports]\nmin_sample = 1\n')
    config = load_config(path, True)
    zone = ZoneInfo("Pacific/Auckland")
    crm = Crm(factory)
    ref = crm.deal(date(2026, 9, 1), "2500")
    crm.close(ref, date(2026, 9, 1), date(2026, 10, 31))
    # 2026-10-31 12:00 UTC is already 1 November 01:00 in Auckland: won in November there, not October.
    crm.won(ref, datetime(2026, 10, 31, 12, tzinfo=UTC))
    december = datetime(2026, 12, 10, tzinfo=zone)
    months = months_around(date(2026, 12, 10), zone)
    assert months.past[-1].start == datetime(2026, 11, 1, tzinfo=zone)  # Auckland midnight, 2026-10-31 11:00 UTC
    history = dict((r[0], r[1:]) for r in rows(crm.report(config, december), "history"))
    # October's forecast (at Oct 1 Auckland) held the deal; the win fell in Auckland's November.
    assert history["2026-10"] == (D("2500.00"), D("0.00"), D("0.00"))
    assert history["2026-11"] == (D("0.00"), D("2500.00"), "too few (0 of 1 deals)")
