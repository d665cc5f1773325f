"""How a report reads: text for a person, JSON for a program, CSV for a spreadsheet (core.report_format).

Pure: the reports are built by hand from core.metrics values, so each test states exactly the
cells it formats.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from inboxcrm.core import report_format as fmt
from inboxcrm.core.metrics import Duration, Headline, Period, Rate, Report, Table
from inboxcrm.core.views import to_json
from inboxcrm.errors import Invalid

BERLIN = ZoneInfo("Europe/Berlin")
# 28 Oct - 24 Nov 2026 in Berlin: local midnights (summer time ends on 25 Oct, so both are UTC+1)
FOUR_WEEKS = Period(datetime(2026, 10, 27, 23, tzinfo=UTC), datetime(2026, 11, 24, 23, tzinfo=UTC))
HOSTILE = ('=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tcmd", "\r=1+1", "\uff1dSUM(A1)")


def sources_report(names=("website",)) -> Report:
    rows = tuple((name, 4, Decimal("12000.50"), Rate(2, 3, 5), Duration(None, 2)) for name in names)
    rows += (("fair, \"big\"\nhall", 10, Decimal("-500"), Rate(4, 10, 5), Duration(3 * 86400 + 4 * 3600, 10)),)
    return Report(
        name="sources", period=FOUR_WEEKS, by="source",
        tables=(Table("sources", "Leads by source", ("source", "leads", "won value", "conversion", "cycle"), rows,
                      note="conversion = won / leads"),
                Table("lost_reasons", "Lost reasons", ("reason", "deals"), (("budget", 2),)),
                Table("empty", "Nothing yet", ("deal", "owner"), ())),
        headlines=(Headline("leads", "Leads", 1234), Headline("win_rate", "Win rate", Rate(1, 2, 5)),
                   Headline("cycle_length", "Cycle length", Duration(90000, 7))),
        notes=("Costs are spread over the days of each month.",))


# -- cells ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, text", [
    (Rate(4, 10, 5), "40% (4 of 10)"),
    (Rate(2, 3, 5), "too few (2 of 3)"),
    (Rate(0, 0, 5), "none"),
    (Rate(1, 1, 1), "100% (1 of 1)"),
    (Duration(3 * 86400 + 4 * 3600 + 59, 9), "3d 4h"),
    (Duration(300, 6), "5m"),
    (Duration(None, 2), "too few (2)"),
    (Duration(None, 0), "none"),
    (Decimal("12000"), "12,000"),
    (Decimal("1200.5"), "1,200.50"),
    (1234, "1,234"),
    (date(2026, 11, 3), "2026-11-03"),
    (None, "-"),
    ("website", "website"),
])
def test_a_cell_reads_as_a_person_expects(cell, text):
    assert fmt.cell_text(cell) == text


def test_too_few_is_never_a_percentage():
    for part, whole in ((0, 1), (1, 1), (2, 3), (4, 4)):
        text = fmt.cell_text(Rate(part, whole, 5))
        assert text.startswith("too few") and "%" not in text


@pytest.mark.parametrize("current, previous, change", [
    (12, 10, "+2 (+20%)"),
    (7, 10, "-3 (-30%)"),
    (3, 0, "+3"),
    (5, 5, "no change"),
    (Decimal("900"), Decimal("1000.50"), "-100.50 (-10%)"),
    (Decimal("1500"), 1000, "+500 (+50%)"),
    (Rate(5, 10, 5), Rate(4, 10, 5), "+10 pts"),
    (Rate(5, 10, 5), Rate(2, 3, 5), "n/a"),
    (Rate(5, 10, 5), Rate(50, 100, 5), "no change"),
    (Duration(3600, 5), Duration(7260, 5), "-1h 1m"),
    (Duration(7200, 5), Duration(None, 1), "n/a"),
    (None, 3, "n/a"),
    ("website", "website", "n/a"),
])
def test_a_change_against_the_previous_period(current, previous, change):
    assert fmt.change_text(current, previous) == change


def test_cell_json_keeps_the_counts_and_exact_money():
    assert fmt.cell_json(Rate(2, 3, 5)) == {"part": 2, "whole": 3, "rate": None}
    assert fmt.cell_json(Rate(4, 10, 5)) == {"part": 4, "whole": 10, "rate": 0.4}
    assert fmt.cell_json(Duration(None, 2)) == {"seconds": None, "sample": 2}
    assert fmt.cell_json(Decimal("0.10")) == "0.10"
    assert fmt.cell_json(date(2026, 1, 2)) == "2026-01-02"
    assert fmt.cell_json(None) is None and fmt.cell_json(3) == 3


@pytest.mark.parametrize("cell, value", [
    (Rate(4, 10, 5), "0.4"), (Rate(1, 3, 3), "0.333333"), (Rate(0, 10, 5), "0"), (Rate(2, 3, 5), ""),
    (Duration(90000.4, 6), "90000"), (Duration(None, 2), ""),
    (Decimal("12000.50"), "12000.50"), (Decimal("-500"), "-500"), (Decimal("1E+3"), "1000"),
    (date(2026, 11, 3), "2026-11-03"), (1234, "1234"), (None, ""),
])
def test_cell_csv_is_a_plain_machine_value(cell, value):
    assert fmt.cell_csv(cell) == value


@pytest.mark.parametrize("name", HOSTILE)
def test_a_text_cell_a_spreadsheet_would_run_gets_an_apostrophe(name):
    assert fmt.cell_csv(name) == "'" + name


@pytest.mark.parametrize("name", ["website", "Ünïcode fair", "'quoted", "a=b", "mail@example.com", ""])
def test_ordinary_text_is_left_alone(name):
    assert fmt.cell_csv(name) == name


# -- the period -----------------------------------------------------------------------------

def test_the_period_is_stated_as_the_local_days_included():
    assert fmt.period_text(FOUR_WEEKS, BERLIN) == "28 Oct - 24 Nov 2026, 4 weeks"
    assert fmt.local_days(FOUR_WEEKS, BERLIN) == (date(2026, 10, 28), date(2026, 11, 24))
    # the same instants in UTC are other days: the zone decides what a day is
    assert fmt.period_text(FOUR_WEEKS) == "27 Oct - 24 Nov 2026, 29 days"


def test_a_period_across_new_year_and_a_single_day():
    new_year = Period(datetime(2025, 12, 29, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC))
    assert fmt.period_text(new_year) == "29 Dec 2025 - 4 Jan 2026, 1 week"
    day = Period(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert fmt.period_text(day) == "2 Mar 2026, 1 day"
    ten = Period(day.since, day.since + timedelta(days=10))
    assert fmt.period_text(ten) == "2 Mar - 11 Mar 2026, 10 days"


# -- text -----------------------------------------------------------------------------------

def test_the_text_states_the_period_then_headlines_then_aligned_tables_then_notes():
    text = fmt.report_text(sources_report(), BERLIN)
    lines = text.splitlines()
    assert lines[0] == "sources: 28 Oct - 24 Nov 2026, 4 weeks, by source"
    assert lines[2:5] == ["Leads         1,234", "Win rate      too few (1 of 2)", "Cycle length  1d 1h"]
    header = lines.index("Leads by source") + 1
    assert lines[header].split("  ")[0] == "SOURCE"
    website = lines[header + 1]
    # numbers are right-aligned under their header; the too-few rate reads as such
    assert website.startswith("website ") and "12,000.50" in website and "too few (2 of 3)" in website
    assert website.index("too few (2 of 3)") + len("too few (2 of 3)") == \
        lines[header].index("CONVERSION") + len("CONVERSION")
    assert "40% (4 of 10)" in lines[header + 2] and "3d 4h" in lines[header + 2]
    assert "conversion = won / leads" in lines
    assert lines[lines.index("Nothing yet") + 1] == "none in this period"
    assert lines[-2:] == ["Notes", "  - Costs are spread over the days of each month."]
    assert text.index("Win rate") < text.index("Leads by source") < text.index("Notes")


def test_a_name_with_a_line_break_stays_on_its_row_in_the_text():
    text = fmt.report_text(sources_report())
    assert 'fair, "big" hall' in text and "\nhall" not in text


# -- JSON -----------------------------------------------------------------------------------

def test_json_is_one_object_that_round_trips():
    report = sources_report()
    shaped = fmt.report_json(report, BERLIN)
    assert json.loads(to_json(shaped)) == shaped
    assert set(shaped) == {"report", "period", "by", "headlines", "tables", "notes"}
    assert shaped["period"] == {"since": "2026-10-28", "until": "2026-11-24"}
    assert shaped["headlines"] == {"leads": 1234, "win_rate": {"part": 1, "whole": 2, "rate": None},
                                   "cycle_length": {"seconds": 90000, "sample": 7}}
    table = shaped["tables"]["sources"]
    assert table["columns"] == ["source", "leads", "won value", "conversion", "cycle"]
    assert table["rows"][0] == ["website", 4, "12000.50", {"part": 2, "whole": 3, "rate": None},
                                {"seconds": None, "sample": 2}]
    assert list(shaped["tables"]) == ["sources", "lost_reasons", "empty"] and shaped["tables"]["empty"]["rows"] == []
    assert shaped["notes"] == ["Costs are spread over the days of each month."]


# -- CSV ------------------------------------------------------------------------------------

def test_csv_parses_back_with_every_hostile_name_neutralised():
    text = fmt.report_csv(sources_report(HOSTILE))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["source", "leads", "won value", "conversion", "cycle"]
    assert [row[0] for row in rows[1:-1]] == ["'" + name for name in HOSTILE]
    assert rows[1][1:] == ["4", "12000.50", "", ""]
    assert rows[-1] == ['fair, "big"\nhall', "10", "-500", "0.4", str(3 * 86400 + 4 * 3600)]
    assert len(rows) == len(HOSTILE) + 2


def test_csv_prints_the_table_asked_for_and_names_the_others():
    report = sources_report()
    assert fmt.report_csv(report, "lost_reasons") == "reason,deals\r\nbudget,2\r\n"
    assert fmt.report_csv(report) == fmt.report_csv(report, "sources")
    assert fmt.report_csv(report, "empty") == "deal,owner\r\n"
    with pytest.raises(Invalid, match='no table "costs"; its tables are: sources, lost_reasons, empty'):
        fmt.report_csv(report, "costs")
