"""The manager's reports against a fixture whose every figure is worked out by hand below.

The fixture: 3 reps (alice, bob, carol), sources web / referral / ads (and print, events with a
cost only), 14 deals with chosen dates. The period is the 4 weeks [Mon 2026-11-02 00:00,
Mon 2026-11-30 00:00) UTC, "now" is 2026-11-30 12:00 UTC, the team's zone UTC, business hours
09:00-17:00 Mon-Fri, min_sample 2 (so most rates show), response target 5 minutes.

Stages (migration defaults): New 10 %, Contacted 20 %, Qualified (qualifying; probability cleared
here, so the default for the 3rd of 5 open stages: 10 + 70 x 2/4 = 45 %), Proposal 60 %,
Negotiation 80 %, Won, Lost.

  deal  source    owner  value  created       stage history (None -> first stage at creation)        closed
  D1    web       alice  1000   10-20 10:00   New 10-20, Contacted 10-21, Qualified 11-03 10:00,      Won 11-20 10:00
                                              Proposal 11-10 10:00, Won 11-20 10:00
  D2    web       alice  2000   11-03 09:00   New, Contacted 11-03 09:04, Qualified 11-05 10:00,       Won 11-25 10:00
                                              Won 11-25 10:00
  D3    web       bob     500   11-04 10:00   New, Contacted 11-04 10:10, Lost 11-12 10:00 "price"     Lost 11-12
  D4    referral  bob    3000   11-05 16:58   New, Contacted 11-06 09:03, Qualified 11-09 10:00,       open
                                              Proposal 11-16 10:00
  D5    referral  carol  1500   10-01 10:00   New, Contacted 10-02, Qualified 10-10, Proposal 10-20,   Won 11-18 10:00
                                              Negotiation 11-06 10:00, Won 11-18 10:00
  D6    ads       carol   800   11-10 10:00   New, Contacted 11-10 11:00, Lost 11-20 10:00 "price"     Lost 11-20
  D7    ads       alice   -     11-12 10:00   New (never answered; prospect wrote 11-12 10:00)         open
  D8    web       bob    1200   11-15 10:00   New, Contacted 11-16 09:30, Qualified 11-20 10:00        open
  D9    referral  alice   700   09-15 10:00   New, Contacted 09-16 10:00, Lost 11-02 00:00 "timing"    Lost 11-02 00:00
  D10   web       carol  2500   11-20 10:00   New, Contacted 11-23 09:00 (prospect wrote 11-27 10:00)  open
  D11   ads       bob     400   11-25 10:00   New, Contacted 11-25 10:02                               open
  D12   referral  carol   900   11-30 00:00   New (= the period's end: outside it; prospect waiting)   open
  D13   web       alice  5000   09-01 10:00   New, Contacted 09-02, Won 10-15 10:00 (before period)    Won 10-15
  D14   web       alice   600   11-17 10:00   New, Contacted 11-17 10:00 (the rep wrote first)         open

First responses (first_response_at): D2 11-03 09:04, D3 11-04 10:10, D4 11-06 09:03, D6 11-10 11:00,
D8 11-16 09:30, D10 11-23 09:00, D11 11-25 10:02, D14 = its creation (rep wrote first); D1, D5, D9,
D13 answered long before the period.
Source costs: web 3000 from 2026-10, 1500 from 2026-11; ads 600 from 2026-09; print 300 from
2026-11 (no deals); events 999 from 2026-12 (after the period).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from inboxcrm.app.reports import BY_CHOICES, REPORT_NAMES, headline_figures, period_for, run_report
from inboxcrm.config import Config, DatabaseConfig, PipelineConfig, ReportsConfig, TeamConfig
from inboxcrm.core import metrics
from inboxcrm.core.metrics import DEFINITIONS, CostRow, Duration, Period, Rate, Report
from inboxcrm.errors import Invalid
from inboxcrm.store.models import Contact, Deal, Rep, SourceCost, Stage, StageChange


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


PERIOD = Period(at(11, 2), at(11, 30))
NOW = at(11, 30, 12)
DAY = 86400
CONFIG = Config(None, DatabaseConfig("sqlite://"), TeamConfig(), PipelineConfig(), reports=ReportsConfig(min_sample=2))
DEFAULT_CONFIG = replace(CONFIG, reports=ReportsConfig())
M = 2  # min_sample of CONFIG: every Rate of the main fixture carries it


def add_deal(session, stages, reps, title, source, owner, value, moves, *, reason=None, first_response=None,
             inbound=None, outbound=None) -> int:
    """``moves``: [(stage, at)], the first being the deal's creation; closed when the last is Won/Lost."""
    created, (last_stage, last_at) = moves[0][1], moves[-1]
    contact = Contact(name=title, source=source, first_seen=created)
    session.add(contact)
    session.flush()
    kind = stages[last_stage].kind
    deal = Deal(title=title, contact_id=contact.id, stage_id=stages[last_stage].id, owner_rep_id=reps[owner],
                value=None if value is None else Decimal(value), source=source, created_at=created,
                last_activity_at=last_at, last_stage_change_at=last_at,
                closed_at=None if kind == "open" else last_at, lost_reason=reason,
                first_response_at=first_response, last_inbound_at=inbound, last_outbound_at=outbound)
    session.add(deal)
    session.flush()
    previous = None
    for stage, when in moves:  # one flush each: a later id for a later row of the same instant
        session.add(StageChange(deal_id=deal.id, from_stage=previous, to_stage=stage, at=when, actor="test"))
        session.flush()
        previous = stage
    return deal.id


def seed(session) -> dict[str, int]:
    stages = {s.name: s for s in session.scalars(select(Stage))}
    stages["Qualified"].probability = None
    reps = {}
    for name in ("alice", "bob", "carol"):
        rep = Rep(name=name, created_at=at(1, 1))
        session.add(rep)
        session.flush()
        reps[name] = rep.id
    for source, month, amount in (("web", date(2026, 10, 1), "3000"), ("web", date(2026, 11, 1), "1500"),
                                  ("ads", date(2026, 9, 1), "600"), ("print", date(2026, 11, 1), "300"),
                                  ("events", date(2026, 12, 1), "999")):
        session.add(SourceCost(source=source, month=month, amount=Decimal(amount), at=at(1, 1), actor="test"))
    d = {}

    def deal(key, *args, **kwargs):
        d[key] = add_deal(session, stages, reps, key, *args, **kwargs)

    deal("D1", "web", "alice", "1000", [("New", at(10, 20, 10)), ("Contacted", at(10, 21, 10)),
                                         ("Qualified", at(11, 3, 10)), ("Proposal", at(11, 10, 10)),
                                         ("Won", at(11, 20, 10))], first_response=at(10, 21, 10))
    deal("D2", "web", "alice", "2000", [("New", at(11, 3, 9)), ("Contacted", at(11, 3, 9, 4)),
                                         ("Qualified", at(11, 5, 10)), ("Won", at(11, 25, 10))],
         first_response=at(11, 3, 9, 4), inbound=at(11, 3, 9), outbound=at(11, 25, 10))
    deal("D3", "web", "bob", "500", [("New", at(11, 4, 10)), ("Contacted", at(11, 4, 10, 10)),
                                      ("Lost", at(11, 12, 10))], reason="price",
         first_response=at(11, 4, 10, 10), inbound=at(11, 12, 9), outbound=at(11, 4, 10, 10))
    deal("D4", "referral", "bob", "3000", [("New", at(11, 5, 16, 58)), ("Contacted", at(11, 6, 9, 3)),
                                            ("Qualified", at(11, 9, 10)), ("Proposal", at(11, 16, 10))],
         first_response=at(11, 6, 9, 3), inbound=at(11, 5, 16, 58), outbound=at(11, 16, 10))
    deal("D5", "referral", "carol", "1500", [("New", at(10, 1, 10)), ("Contacted", at(10, 2, 10)),
                                              ("Qualified", at(10, 10, 10)), ("Proposal", at(10, 20, 10)),
                                              ("Negotiation", at(11, 6, 10)), ("Won", at(11, 18, 10))],
         first_response=at(10, 2, 10))
    deal("D6", "ads", "carol", "800", [("New", at(11, 10, 10)), ("Contacted", at(11, 10, 11)),
                                        ("Lost", at(11, 20, 10))], reason="price", first_response=at(11, 10, 11))
    deal("D7", "ads", "alice", None, [("New", at(11, 12, 10))], inbound=at(11, 12, 10))
    deal("D8", "web", "bob", "1200", [("New", at(11, 15, 10)), ("Contacted", at(11, 16, 9, 30)),
                                       ("Qualified", at(11, 20, 10))],
         first_response=at(11, 16, 9, 30), inbound=at(11, 15, 10), outbound=at(11, 20, 10))
    deal("D9", "referral", "alice", "700", [("New", at(9, 15, 10)), ("Contacted", at(9, 16, 10)),
                                             ("Lost", at(11, 2))], reason="timing", first_response=at(9, 16, 10))
    deal("D10", "web", "carol", "2500", [("New", at(11, 20, 10)), ("Contacted", at(11, 23, 9))],
         first_response=at(11, 23, 9), inbound=at(11, 27, 10), outbound=at(11, 23, 9))
    deal("D11", "ads", "bob", "400", [("New", at(11, 25, 10)), ("Contacted", at(11, 25, 10, 2))],
         first_response=at(11, 25, 10, 2), inbound=at(11, 25, 10), outbound=at(11, 25, 10, 2))
    deal("D12", "referral", "carol", "900", [("New", at(11, 30))], inbound=at(11, 30))
    deal("D13", "web", "alice", "5000", [("New", at(9, 1, 10)), ("Contacted", at(9, 2, 10)),
                                          ("Won", at(10, 15, 10))], first_response=at(9, 2, 10))
    deal("D14", "web", "alice", "600", [("New", at(11, 17, 10)), ("Contacted", at(11, 17, 10))],
         first_response=at(11, 17, 10), inbound=at(11, 18, 10), outbound=at(11, 18, 11))
    session.commit()
    return d


@pytest.fixture
def seeded(factory):
    with factory() as session:
        ids = seed(session)
    return factory, ids


def report(factory, name, by=None, config=CONFIG, period=PERIOD) -> Report:
    with factory() as session:
        return run_report(session, config, name, period, by, NOW)


def assert_duration(cell: Duration, seconds: float | None, sample: int) -> None:
    assert cell.sample == sample
    if seconds is None:
        assert cell.seconds is None
    else:
        assert cell.seconds == pytest.approx(seconds)


# -- pipeline ----------------------------------------------------------------------------------

def test_pipeline_by_stage_counts_open_deals_now_and_weights_them(seeded):
    factory, _ = seeded
    rep = report(factory, "pipeline")
    assert rep.by == "stage" and rep.table("by_stage").columns == ("stage", "deals", "value", "probability",
                                                                   "weighted")
    # open now (closed_at NULL): D4 Proposal 3000; D7 New (no value), D12 New 900; D8 Qualified 1200;
    # D10 2500, D11 400, D14 600 Contacted. D12 counts although created after the period: the pipeline is now.
    assert rep.table("by_stage").rows == (
        ("New", 2, Decimal("900.00"), 10, Decimal("90.00")),          # 900 x 10 %
        ("Contacted", 3, Decimal("3500.00"), 20, Decimal("700.00")),  # (2500 + 400 + 600) x 20 %
        ("Qualified", 1, Decimal("1200.00"), 45, Decimal("540.00")),  # default 45 % (3rd of 5 open stages)
        ("Proposal", 1, Decimal("3000.00"), 60, Decimal("1800.00")),
        ("Negotiation", 0, Decimal("0.00"), 80, Decimal("0.00")),
    )
    assert rep.headline("open_deals").value == 7
    assert rep.headline("open_value").value == Decimal("8600.00")   # 900 + 3500 + 1200 + 3000
    assert rep.headline("weighted_value").value == Decimal("3130.00")  # 90 + 700 + 540 + 1800


def test_pipeline_by_rep_and_by_source(seeded):
    factory, _ = seeded
    by_rep = report(factory, "pipeline", "rep")
    assert by_rep.table("by_stage").columns[0] == "rep"
    assert by_rep.table("by_stage").rows == (
        ("alice", 2, Decimal("600.00"), None, Decimal("120.00")),    # D7 New 0 + D14 Contacted 600 x 20 %
        ("bob", 3, Decimal("4600.00"), None, Decimal("2420.00")),    # 3000 x 60 % + 1200 x 45 % + 400 x 20 %
        ("carol", 2, Decimal("3400.00"), None, Decimal("590.00")),   # 2500 x 20 % + 900 x 10 %
    )
    by_source = report(factory, "pipeline", "source")
    assert by_source.table("by_stage").rows == (
        ("ads", 2, Decimal("400.00"), None, Decimal("80.00")),        # D7 0 + D11 400 x 20 %
        ("referral", 2, Decimal("3900.00"), None, Decimal("1890.00")),  # 3000 x 60 % + 900 x 10 %
        ("web", 3, Decimal("4300.00"), None, Decimal("1160.00")),     # 1200 x 45 % + 2500 x 20 % + 600 x 20 %
    )
    assert by_source.headline("weighted_value").value == Decimal("3130.00")


# -- funnel ------------------------------------------------------------------------------------

def test_funnel_conversion_per_stage_and_lead_to_opportunity(seeded):
    factory, _ = seeded
    rep = report(factory, "funnel")
    assert rep.table("stages").rows == (
        # reached New in the period: created D2 D3 D4 D6 D7 D8 D10 D11 D14 (D12 at the period's end is out);
        # all but D7 moved on
        ("New", 9, 8, Rate(8, 9, M)),
        # reached Contacted: D2 D3 D4 D6 D8 D10 D11 D14; on to Qualified: D2 D4 D8 (D3 D6 lost, the rest still there)
        ("Contacted", 8, 3, Rate(3, 8, M)),
        # reached Qualified: D1 D2 D4 D8; advanced: D1 (Proposal), D2 (Won), D4 (Proposal)
        ("Qualified", 4, 3, Rate(3, 4, M)),
        # reached Proposal: D1, D4; advanced: D1 (Won)
        ("Proposal", 2, 1, Rate(1, 2, M)),
        # reached Negotiation: D5, then Won: 1 of 1, too few for a rate
        ("Negotiation", 1, 1, Rate(1, 1, M)),
    )
    assert rep.table("stages").rows[-1][3].value is None
    # created in the period: the 9 above; reached Qualified or later by the period's end: D2, D4, D8 = 3/9
    assert rep.headline("lead_to_opportunity").value == Rate(3, 9, M)
    assert rep.notes == ()


def test_funnel_without_a_qualifying_stage_says_so(seeded):
    factory, _ = seeded
    with factory() as session:
        session.scalars(select(Stage).where(Stage.name == "Qualified")).one().qualifying = False
        session.commit()
    rep = report(factory, "funnel")
    assert rep.headline("lead_to_opportunity").value is None
    assert any("stage qualifying" in note for note in rep.notes)
    assert any("stage qualifying" in note for note in report(factory, "sources").notes)


# -- velocity ----------------------------------------------------------------------------------

def test_velocity(seeded):
    factory, _ = seeded
    rep = report(factory, "velocity")
    rows = {row[0]: row for row in rep.table("stages").rows}
    assert rep.table("stages").columns[:5] == ("stage", "open deals", "average age", "median age",
                                                 "average time in stage")
    # New: D7 created 11-12 10:00 -> 18 d 2 h = 1,562,400 s; D12 11-30 00:00 -> 12 h = 43,200 s
    assert rows["New"][1] == 2
    assert_duration(rows["New"][2], (1_562_400 + 43_200) / 2, 2)
    assert_duration(rows["New"][3], (1_562_400 + 43_200) / 2, 2)
    # time in New, moves out of New in the period: D2 240, D3 600, D4 16 h 05 = 57,900, D6 3,600,
    # D8 23.5 h = 84,600, D10 2 d 23 h = 255,600, D11 120, D14 0 -> 402,660 / 8
    assert_duration(rows["New"][4], 402_660 / 8, 8)
    assert_duration(rows["New"][5], (1_562_400 + 43_200) / 2, 2)  # both never left New
    # Contacted: D10 10 d 2 h = 871,200; D11 5 d 2 h = 439,200; D14 13 d 2 h = 1,130,400
    assert rows["Contacted"][1] == 3
    assert_duration(rows["Contacted"][2], (871_200 + 439_200 + 1_130_400) / 3, 3)
    assert_duration(rows["Contacted"][3], 871_200, 3)
    # out of Contacted: D1 13 d = 1,123,200; D2 2 d 56 m = 176,160; D3 8 d - 10 m = 690,600;
    # D4 3 d 57 m = 262,620; D6 10 d - 1 h = 860,400; D8 4 d 30 m = 347,400; D9 (in since 09-16 10:00,
    # lost 11-02 00:00) 47 d - 10 h = 4,024,800 -> 7,485,180 / 7
    assert_duration(rows["Contacted"][4], 7_485_180 / 7, 7)
    # since the last change: D10 11-23 09:00 -> 7 d 3 h = 615,600; D11 10:02 -> 439,080; D14 1,130,400
    assert_duration(rows["Contacted"][5], (615_600 + 439_080 + 1_130_400) / 3, 3)
    # Qualified: D8 only -> too few; out of Qualified: D1 7 d, D2 20 d, D4 7 d
    assert rows["Qualified"][1] == 1
    assert_duration(rows["Qualified"][2], None, 1)
    assert_duration(rows["Qualified"][4], (7 + 20 + 7) * DAY / 3, 3)
    # Proposal: D4 alone; out of Proposal: D1 10 d, D5 17 d (in since 10-20)
    assert_duration(rows["Proposal"][3], None, 1)
    assert_duration(rows["Proposal"][4], (10 + 17) * DAY / 2, 2)
    # Negotiation: no open deal; D5 spent 12 d, one deal: too few
    assert rows["Negotiation"][1] == 0
    assert_duration(rows["Negotiation"][2], None, 0)
    assert_duration(rows["Negotiation"][4], None, 1)
    # won in the period: D1 31 d, D2 22 d 1 h, D5 48 d (D13 won in October is out) -> median 31 d
    assert_duration(rep.headline("cycle_length").value, 31 * DAY, 3)
    # changes in the period but creations: D1 3, D2 3, D3 2, D4 3, D5 2, D6 2, D8 2, D9 1, D10 1, D11 1,
    # D14 1 = 21 in 4 weeks = 5.25 -> 5
    assert rep.headline("moved_per_week").value == 5
    # 7 open x (3 won of 6 closed) x (1000 + 2000 + 1500) / 3 / ((31 d + 22 d 1 h + 48 d) / 3 in days)
    # = 7 x 0.5 x 1500 / (8,730,000 / 3 / 86,400) = 5250 x 86,400 x 3 / 8,730,000 = 155.876...
    assert rep.headline("velocity").value == Decimal("155.88")
    assert rep.notes == ()


def test_velocity_with_the_default_sample_is_too_few(seeded):
    factory, _ = seeded
    rep = report(factory, "velocity", config=DEFAULT_CONFIG)
    # 3 won deals < 5
    assert_duration(rep.headline("cycle_length").value, None, 3)
    assert rep.headline("velocity").value is None
    assert any("Pipeline velocity needs at least 5" in note for note in rep.notes)
    assert rep.headline("moved_per_week").value == 5  # a count, never too few


# -- wins --------------------------------------------------------------------------------------

def test_wins(seeded):
    factory, _ = seeded
    rep = report(factory, "wins")
    # closed in the period: D1 W, D2 W, D3 L, D5 W, D6 L, D9 L (lost at the period's first instant); D13 is older
    assert rep.headline("win_rate").value == Rate(3, 6, M)
    assert rep.table("by_source").rows == (
        ("ads", 0, 1, Rate(0, 1, M)),        # D6 lost: one deal, too few
        ("referral", 1, 2, Rate(1, 2, M)),   # D5 won, D9 lost
        ("web", 2, 3, Rate(2, 3, M)),        # D1, D2 won, D3 lost
    )
    assert rep.table("by_rep").rows == (
        ("alice", 2, 3, Rate(2, 3, M)),      # D1, D2 won, D9 lost
        ("bob", 0, 1, Rate(0, 1, M)),        # D3 lost
        ("carol", 1, 2, Rate(1, 2, M)),      # D5 won, D6 lost
    )
    assert rep.table("by_stage_reached").rows == (
        ("New", 3, 6, Rate(3, 6, M)),        # all six started in New
        ("Contacted", 3, 6, Rate(3, 6, M)),  # and all were contacted
        ("Qualified", 3, 3, Rate(3, 3, M)),  # D1, D2, D5: all won
        ("Proposal", 2, 2, Rate(2, 2, M)),   # D1, D5
        ("Negotiation", 1, 1, Rate(1, 1, M)),  # D5
    )
    assert rep.table("lost_reasons").rows == (("price", 2), ("timing", 1))  # D3 D6 price, D9 timing


def test_wins_with_the_default_sample(seeded):
    factory, _ = seeded
    rep = report(factory, "wins", config=DEFAULT_CONFIG)
    assert rep.headline("win_rate").value.value == 0.5  # 6 closed >= 5
    assert all(row[3].value is None for row in rep.table("by_source").rows)  # 1, 2, 3 closed < 5


# -- sources -----------------------------------------------------------------------------------

def test_sources(seeded):
    factory, _ = seeded
    rep = report(factory, "sources")
    assert rep.table("sources").rows == (
        # leads D6 D7 D11, none qualified, nothing won; cost 600 x 28/30 days of November = 560;
        # return (0 - 560) / 560 = -1
        ("ads", 3, 0, 0, Decimal("0.00"), Decimal("560.00"), Decimal("-1.00")),
        # no deals; 300 x 28/30 = 280; (0 - 280) / 280 = -1
        ("print", 0, 0, 0, Decimal("0.00"), Decimal("280.00"), Decimal("-1.00")),
        # lead D4 (qualified); won D5 1500; no cost, no return. events' cost starts in December: no row
        ("referral", 1, 1, 1, Decimal("1500.00"), None, None),
        # leads D2 D3 D8 D10 D14, qualified D2 D8; won D1 1000 + D2 2000; November's cost 1500 x 28/30 = 1400;
        # (3000 - 1400) / 1400 = 1.142... -> 1.14
        ("web", 5, 2, 2, Decimal("3000.00"), Decimal("1400.00"), Decimal("1.14")),
    )
    assert rep.headline("leads").value == 9


def test_cost_spanning_months_is_pro_rata_by_days():
    costs = [CostRow("web", date(2026, 10, 1), Decimal(3000)), CostRow("web", date(2026, 11, 1), Decimal(1500))]
    # Oct 20-31: 3000 x 12/31 = 1161.29...; Nov 1-9: 1500 x 9/30 = 450 -> 1611.29
    assert metrics.source_cost(costs, date(2026, 10, 20), date(2026, 11, 10)) == Decimal("1611.29")
    # before the first cost row nothing applies
    assert metrics.source_cost(costs, date(2026, 9, 1), date(2026, 9, 30)) is None
    # September has no cost, October a whole month
    assert metrics.source_cost(costs, date(2026, 9, 1), date(2026, 11, 1)) == Decimal("3000.00")


# -- response ----------------------------------------------------------------------------------

def test_response_by_rep(seeded):
    factory, ids = seeded
    rep = report(factory, "response")
    assert rep.by == "rep"
    # business seconds (09:00-17:00 Mon-Fri, UTC) from creation to the first answer, deals created in the period:
    # D2 Tue 09:00->09:04 240; D3 Wed 10:00->10:10 600; D4 Thu 16:58->Fri 09:03 2 + 3 min = 300;
    # D6 Tue 10:00->11:00 3600; D8 Sun 10:00->Mon 09:30 1800; D10 Fri 10:00->Mon 09:00 7 h = 25200;
    # D11 Wed 10:00->10:02 120. D14 (the rep wrote first) and D7 (unanswered) are not answered deals.
    assert rep.table("first_response").rows == (
        ("alice", 1, Duration(None, 1), Duration(None, 1), Rate(1, 1, M)),  # D2 alone: too few
        # bob: 120, 300, 600, 1800 -> median (300 + 600) / 2; p90 = 4th of 4 (ceil 3.6); within 5 min: 120, 300
        ("bob", 4, Duration(450.0, 4), Duration(1800.0, 4), Rate(2, 4, M)),
        # carol: 3600, 25200 -> median 14400, p90 = 2nd (ceil 1.8); none within 5 min
        ("carol", 2, Duration(14400.0, 2), Duration(25200.0, 2), Rate(0, 2, M)),
    )
    # all: 120 240 300 600 1800 3600 25200 -> median 600; within: 120 240 300 = 3/7
    assert rep.headline("median_first_response").value == Duration(600.0, 7)
    assert rep.headline("within_target").value == Rate(3, 7, M)
    # open deals whose prospect wrote last: D7 (never answered), D10 (wrote again 11-27), D12; D3 is closed
    assert rep.table("waiting").rows == (
        (f"D-{ids['D7']} D7", "alice", "2026-11-12 10:00"),
        (f"D-{ids['D10']} D10", "carol", "2026-11-27 10:00"),
        (f"D-{ids['D12']} D12", "carol", "2026-11-30 00:00"),
    )
    assert rep.headline("waiting").value == 3


def test_response_by_source_and_target(seeded):
    factory, _ = seeded
    rep = report(factory, "response", "source")
    assert rep.table("first_response").columns[0] == "source"
    assert rep.table("first_response").rows == (
        ("ads", 2, Duration(1860.0, 2), Duration(3600.0, 2), Rate(1, 2, M)),      # D6 3600, D11 120
        ("referral", 1, Duration(None, 1), Duration(None, 1), Rate(1, 1, M)),     # D4 300
        # D2 240, D3 600, D8 1800, D10 25200: median (600 + 1800) / 2, p90 the 4th
        ("web", 4, Duration(1200.0, 4), Duration(25200.0, 4), Rate(1, 4, M)),
    )
    # a 10-minute target takes in D3's 600 s as well: 4/7
    ten = replace(CONFIG, reports=ReportsConfig(response_target_minutes=10, min_sample=2))
    assert report(factory, "response", config=ten).headline("within_target").value == Rate(4, 7, M)


def test_response_in_the_teams_time_zone(seeded):
    """In New York (UTC-5 in November) the answers at 09:0x UTC came at 04:0x local, before business
    hours: they took no business time at all."""
    factory, _ = seeded
    config = replace(CONFIG, team=TeamConfig(timezone="America/New_York"), reports=ReportsConfig(min_sample=1))
    rows = {row[0]: row for row in report(factory, "response", config=config).table("first_response").rows}
    assert rows["alice"] == ("alice", 1, Duration(0.0, 1), Duration(0.0, 1), Rate(1, 1, 1))  # D2 04:00 -> 04:04
    # bob: D3 Wed 05:00 -> 05:10 local = 0; D4 Thu 11:58 -> Fri 04:03 = 5 h 02 min of Thursday = 18120;
    # D8 Sun 05:00 -> Mon 04:30 = 0; D11 Wed 05:00 -> 05:02 = 0
    assert rows["bob"] == ("bob", 4, Duration(0.0, 4), Duration(18120.0, 4), Rate(3, 4, 1))


# -- activity ----------------------------------------------------------------------------------

def test_activity_by_source_and_rep(seeded):
    factory, _ = seeded
    rep = report(factory, "activity")
    assert rep.by == "source"
    # created: web D2 D3 D8 D10 D14, referral D4, ads D6 D7 D11.
    # forward moves in the period: web D1 D2 D3 D8 D10 D14, referral D4 D5, ads D6 D11 (D9's move was to Lost)
    # lost in the period: web D3, referral D9, ads D6
    assert rep.table("activity").rows == (("ads", 3, 2, 1), ("referral", 1, 2, 1), ("web", 5, 6, 1))
    assert [h.value for h in rep.headlines] == [9, 10, 3]
    by_rep = report(factory, "activity", "rep")
    # alice: created D2 D7 D14, advanced D1 D2 D14, lost D9; bob: D3 D4 D8 D11, D3 D4 D8 D11, D3;
    # carol: D6 D10, advanced D5 D6 D10, lost D6
    assert by_rep.table("activity").rows == (("alice", 3, 3, 1), ("bob", 4, 4, 1), ("carol", 2, 3, 1))


# -- empty and one deal ------------------------------------------------------------------------

def _all_reports(factory, config):
    with factory() as session:
        reports = {name: run_report(session, config, name, PERIOD, by, NOW)
                   for name in REPORT_NAMES if name != "forecast"
                   for by in (BY_CHOICES[name] or (None,))}
        figures = headline_figures(session, config, PERIOD, NOW)
    return reports, figures


def test_an_empty_database_says_too_few_everywhere(factory):
    reports, figures = _all_reports(factory, DEFAULT_CONFIG)
    assert set(figures) == set(REPORT_NAMES) - {"forecast"}
    pipeline = figures["pipeline"]
    assert [h.value for h in pipeline.headlines] == [0, Decimal("0.00"), Decimal("0.00")]
    assert all(row[1] == 0 for row in pipeline.table("by_stage").rows)
    assert figures["funnel"].headline("lead_to_opportunity").value == Rate(0, 0, 5)
    assert figures["funnel"].headline("lead_to_opportunity").value.value is None
    assert all(row[3].value is None for row in figures["funnel"].table("stages").rows)
    velocity = figures["velocity"]
    assert velocity.headline("cycle_length").value == Duration(None, 0)
    assert velocity.headline("velocity").value is None and velocity.headline("moved_per_week").value == 0
    assert figures["wins"].headline("win_rate").value.value is None
    assert figures["wins"].table("by_source").rows == () and figures["wins"].table("lost_reasons").rows == ()
    assert figures["sources"].table("sources").rows == () and figures["sources"].headline("leads").value == 0
    assert figures["response"].headline("median_first_response").value == Duration(None, 0)
    assert figures["response"].headline("within_target").value.value is None
    assert [h.value for h in figures["activity"].headlines] == [0, 0, 0]


def test_one_deal_says_too_few_and_does_not_divide_by_zero(factory):
    with factory() as session:
        stages = {s.name: s for s in session.scalars(select(Stage))}
        rep = Rep(name="solo", created_at=at(1, 1))
        session.add(rep)
        session.flush()
        session.add(SourceCost(source="web", month=date(2026, 11, 1), amount=Decimal(0), at=at(1, 1), actor="t"))
        add_deal(session, stages, {"solo": rep.id}, "only", "web", "solo", "100",
                 [("New", at(11, 3, 10)), ("Contacted", at(11, 3, 10, 1)), ("Won", at(11, 4, 10))],
                 first_response=at(11, 3, 10, 1), inbound=at(11, 3, 10), outbound=at(11, 3, 10, 1))
        session.commit()
    reports, figures = _all_reports(factory, CONFIG)
    assert figures["wins"].headline("win_rate").value == Rate(1, 1, M) and \
        figures["wins"].headline("win_rate").value.value is None
    assert figures["velocity"].headline("cycle_length").value == Duration(None, 1)
    assert figures["velocity"].headline("velocity").value is None
    assert figures["funnel"].headline("lead_to_opportunity").value == Rate(1, 1, M)  # reached Won
    assert figures["response"].headline("median_first_response").value == Duration(None, 1)
    # a cost of 0 has no return (no division by zero)
    assert figures["sources"].table("sources").rows == (("web", 1, 1, 1, Decimal("100.00"), Decimal("0.00"), None),)
    assert figures["activity"].table("activity").rows == (("web", 1, 1, 0),)
    assert figures["pipeline"].headline("open_deals").value == 0


# -- the period and the entry point ------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_default_period_is_four_weeks_of_local_days_ending_today():
    period = period_for(at(11, 30, 12), BERLIN, None, None, None)
    # today in Berlin is Mon 11-30; the period ends at the start of 12-01 local (23:00 UTC, CET = UTC+1)
    assert period == Period(at(11, 2, 23), at(11, 30, 23))
    assert period.previous() == Period(at(10, 5, 23), at(11, 2, 23))


def test_since_and_until_are_whole_local_days_across_a_clock_change():
    # Berlin leaves summer time on 2026-10-25: Oct 20 starts at 22:00 UTC the day before, Nov 1 ends at 23:00 UTC
    assert period_for(NOW, BERLIN, date(2026, 10, 20), date(2026, 10, 31), None) == \
        Period(at(10, 19, 22), at(10, 31, 23))
    assert period_for(NOW, BERLIN, None, date(2026, 11, 29), 1) == Period(at(11, 22, 23), at(11, 29, 23))
    assert period_for(NOW, BERLIN, date(2026, 11, 29), None, None) == Period(at(11, 28, 23), at(11, 30, 23))
    one_day = period_for(NOW, ZoneInfo("UTC"), date(2026, 11, 3), date(2026, 11, 3), None)
    assert one_day == Period(at(11, 3), at(11, 4))


@pytest.mark.parametrize("args, says", [
    ((date(2026, 11, 10), date(2026, 11, 1), None), "on or before 2026-11-01"),
    ((None, None, 0), "--weeks must be 1 or more"),
    ((date(2026, 11, 1), None, 2), "not both"),
])
def test_a_bad_period_says_what_would_be_valid(args, says):
    with pytest.raises(Invalid, match=says):
        period_for(NOW, BERLIN, *args)


def test_an_unknown_report_or_breakdown_names_the_valid_ones(factory):
    with factory() as session:
        with pytest.raises(Invalid, match="reports are: pipeline, funnel, velocity, wins, sources, response, "
                                          "activity, forecast"):
            run_report(session, CONFIG, "revenue", PERIOD, None, NOW)
        with pytest.raises(Invalid, match="--by takes: rep, source"):
            run_report(session, CONFIG, "response", PERIOD, "stage", NOW)
        with pytest.raises(Invalid, match="has no --by"):
            run_report(session, CONFIG, "funnel", PERIOD, "rep", NOW)


def test_every_figure_has_a_definition_with_a_formula():
    assert all(text.endswith(".") and "=" in text for text in DEFINITIONS.values())
    for name in REPORT_NAMES[:-1]:
        assert any(key.startswith(name + ".") for key in DEFINITIONS), name
