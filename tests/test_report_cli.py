"""The manager's command line on a real database (SQLite and PostgreSQL): ``report NAME`` with its
text, JSON and CSV, and the settings the reports read (stage probability and qualifying mark,
source costs, managers), each audited."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from inboxcrm.store.models import AuditEntry, SourceCost

from .conftest import refused

HOSTILE = ('=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)")
# The command line's clock, pinned mid-month: "this month", "today" and the default period do not
# move under a test that runs across midnight or a month's end.
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _pinned_clock(monkeypatch):
    from inboxcrm.cli.common import App

    monkeypatch.setattr(App, "now", staticmethod(lambda: NOW))


def audit(factory, entity: str) -> list[tuple[str, dict]]:
    with factory() as session:
        return [(e.action, e.detail) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.entity == entity).order_by(AuditEntry.id))]


def stages(cli) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(cli("stage", "list", "--json").stdout)}


def this_month() -> str:
    return NOW.strftime("%Y-%m")  # the config's team time zone is UTC


# -- the cli module stays light ---------------------------------------------------------------

def test_importing_the_report_commands_loads_no_store():
    probe = ("import sys, inboxcrm.cli.reports; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic', 'jinja2'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- stages: probability and the qualifying mark ----------------------------------------------

def test_a_stage_probability_is_set_listed_and_cleared(cli, factory):
    cli("stage", "add", "Demo", "--after", "qualified")
    before = stages(cli)
    assert (before["Proposal"]["probability"], before["Proposal"]["probability_set"]) == (60, True)  # migration 0008
    # a stage added later has the default of its place: the 4th of 6 open stages, 10 + 70 x 3/5
    assert (before["Demo"]["probability"], before["Demo"]["probability_set"]) == (52, False)
    assert cli("stage", "probability", "prop", "45").stdout == "stage Proposal: probability 45%\n"
    assert cli("stage", "probability", "demo", "30%").stdout == "stage Demo: probability 30%\n"
    rows = stages(cli)
    assert [(rows[n]["probability"], rows[n]["probability_set"]) for n in ("Demo", "Proposal")] == [(30, True),
                                                                                                   (45, True)]
    assert cli("stage", "probability", "Demo", "default").stdout == "stage Demo: probability 52% (the default)\n"
    listing = cli("stage", "list").stdout.splitlines()
    assert listing[0].split() == ["#", "NAME", "KIND", "DEALS", "PROBABILITY", "QUALIFYING"]
    assert listing[3].split() == ["3", "Qualified", "open", "0", "40%", "yes"]
    assert listing[4].split() == ["4", "Demo", "open", "0", "52%", "(default)"]
    assert listing[5].split() == ["5", "Proposal", "open", "0", "45%"]
    assert stages(cli)["Demo"] == before["Demo"]
    assert [(a, d) for a, d in audit(factory, "stage") if a == "probability"] == [
        ("probability", {"name": "Proposal", "old": 60, "new": 45}),
        ("probability", {"name": "Demo", "old": None, "new": 30}),
        ("probability", {"name": "Demo", "old": 30, "new": None}),
    ]


@pytest.mark.parametrize("percent", ["101", "-1", "4.5", "lots", ""])
def test_a_probability_outside_0_to_100_says_what_is_valid(cli, percent):
    said = refused(cli, "stage", "probability", "new", percent)
    assert "expected a whole percent from 0 to 100 such as 40, or \"default\"" in said


def test_won_and_lost_stages_take_no_probability(cli):
    said = refused(cli, "stage", "probability", "won", "50")
    assert "Won is a won stage, whose deals count 100%; only open stages take a probability: New, Contacted" in said
    assert "unknown stage \"nope\"; stages are: New" in refused(cli, "stage", "probability", "nope", "5")


def test_the_qualifying_mark_moves_and_only_to_an_open_stage(cli, factory):
    assert [n for n, r in stages(cli).items() if r["qualifying"]] == ["Qualified"]  # as migration 0008 marked it
    assert cli("stage", "qualifying", "prop").stdout == "Proposal is now the qualifying stage (was Qualified)\n"
    assert [n for n, r in stages(cli).items() if r["qualifying"]] == ["Proposal"]
    assert cli("stage", "list").stdout.splitlines()[4].split()[-1] == "yes"
    assert "Proposal is already the qualifying stage" in refused(cli, "stage", "qualifying", "proposal")
    assert "the qualifying stage is an open one: New, Contacted" in refused(cli, "stage", "qualifying", "lost")
    assert audit(factory, "stage") == [("qualifying", {"name": "Proposal", "old": "Qualified"})]


def test_removing_the_qualifying_stage_passes_the_mark_to_the_next_open_stage(cli, factory):
    out = cli("stage", "remove", "qualified").stdout
    assert out == "removed stage Qualified (Proposal is now the qualifying stage)\n"
    cli("stage", "remove", "negotiation")
    out = cli("stage", "remove", "proposal").stdout  # the last open stage: the mark goes back
    assert out == "removed stage Proposal (Contacted is now the qualifying stage)\n"
    assert [n for n, r in stages(cli).items() if r["qualifying"]] == ["Contacted"]
    removed = [d["qualifying_to"] for a, d in audit(factory, "stage") if a == "delete"]
    assert removed == ["Proposal", None, "Contacted"]


# -- managers ---------------------------------------------------------------------------------

def test_a_rep_is_made_a_manager_on_add_or_by_edit(team, factory):
    out = team("rep", "add", "carol", "--email", "carol@acme.example", "--manager").stdout
    assert out == "added rep carol (carol@acme.example), timezone UTC, manager (gets the weekly review)\n"
    assert team("rep", "edit", "bob", "--manager").stdout == \
        "rep bob is now a manager: gets the weekly pipeline review\n"
    listed = {r["name"]: r["manager"] for r in json.loads(team("rep", "list", "--json").stdout)}
    assert listed == {"alice": False, "bob": True, "carol": True}
    lines = team("rep", "list").stdout.splitlines()
    assert lines[0].split()[-1] == "MANAGER" and lines[1].split()[-1] == "no" and lines[2].split()[-1] == "yes"
    assert team("rep", "edit", "carol", "--no-manager").stdout == \
        "rep carol is no longer a manager: does not get the weekly pipeline review\n"
    assert "rep carol is already not a manager" in refused(team, "rep", "edit", "carol", "--no-manager")
    assert "say what to change: --manager or --no-manager" in refused(team, "rep", "edit", "carol")
    assert 'unknown rep "dave"' in refused(team, "rep", "edit", "dave", "--manager")
    changes = [(a, d) for a, d in audit(factory, "rep") if a == "manager"]
    assert changes == [("manager", {"name": "bob", "old": False, "new": True}),
                       ("manager", {"name": "carol", "old": True, "new": False})]
    assert ("create", True) in [(a, d.get("manager")) for a, d in audit(factory, "rep")]


# -- source costs -----------------------------------------------------------------------------

def test_a_source_cost_is_set_replaced_and_listed_with_this_month_s_cost(team, factory):
    team("lead", "add", "--email", "ann@northwind.example", "--source", "Website", "--owner", "alice")
    month = this_month()
    assert team("source", "cost", "website", "1,200.50").stdout == f"source Website: 1,200.50 a month from {month}\n"
    assert team("source", "cost", "WEBSITE", "900").stdout == \
        f"source Website: 900 a month from {month} (was 1,200.50)\n"
    assert team("source", "cost", "website", "0", "--from", "2020-01").stdout == \
        "source Website: 0 a month from 2020-01\n"
    next_year = NOW.year + 1
    team("source", "cost", "Website", "5000", "--from", f"{next_year}-01")
    out = team("source", "cost", "fair", "300").stdout
    assert out == (f'source fair: 300 a month from {month}; no deal has source fair yet: check the spelling with '
                   f'"inboxcrm source list"\n')
    assert json.loads(team("source", "list", "--json").stdout) == [
        {"source": "fair", "deals": 0, "open_deals": 0, "monthly_cost": 300, "cost_from": f"{month}-01"},
        {"source": "Website", "deals": 1, "open_deals": 1, "monthly_cost": 900, "cost_from": f"{month}-01"},
    ]
    lines = team("source", "list").stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "DEALS", "OPEN", "MONTHLY", "COST", "SINCE"]
    assert lines[2].split() == ["Website", "1", "1", "900", month]
    with factory() as session:
        costs = [(c.source, c.month, c.amount) for c in session.scalars(select(SourceCost).order_by(SourceCost.month))]
    first = NOW.date().replace(day=1)
    assert sorted((s, m, a) for s, m, a in costs) == sorted([
        ("Website", date(2020, 1, 1), 0), ("Website", first, 900), ("fair", first, 300),
        ("Website", date(next_year, 1, 1), 5000)])
    assert sum(1 for s, m, _ in costs if (s, m) == ("Website", first)) == 1  # replaced, not added
    actions = audit(factory, "source")
    assert actions[1] == ("cost", {"source": "Website", "month": first.isoformat(), "old": "1200.50", "new": "900"})
    assert len(actions) == 5


@pytest.mark.parametrize("args, said", [
    (("-5",), 'invalid value "-5"; expected a number of at least 0'),
    (("12,5",), 'invalid value "12,5"; expected a number of at least 0 such as 12000'),
    (("100", "--from", "2026-13"), "'2026-13' does not match the format '%Y-%m'"),
])
def test_a_bad_source_cost_says_what_is_valid(team, args, said):
    assert said in refused(team, "source", "cost", "website", *args)


def test_no_sources_yet_says_how_they_come(cli):
    assert cli("source", "list").stdout.startswith("no sources yet: deals get theirs from the mailbox or a rule")


# -- reports ----------------------------------------------------------------------------------

@pytest.fixture
def sales(team):
    """Six leads today, four of them from sources a stranger named to attack a spreadsheet; one won
    and one lost, so every rate is over too few deals (min_sample is 5)."""
    sources = [*HOSTILE, "website", "website"]
    for n, source in enumerate(sources, start=1):
        team("lead", "add", "--email", f"p{n}@prospect{n}.example", "--source", source, "--value", "1000",
             "--owner", "alice")
    team("deal", "won", "D-5")
    team("deal", "lost", "D-4", "budget")
    return team


def test_the_sources_csv_neutralises_every_hostile_name_and_parses_back(sales):
    out = sales("report", "sources", "--csv").stdout
    rows = list(csv.reader(io.StringIO(out, newline="")))
    shaped = json.loads(sales("report", "sources", "--json").stdout)
    assert rows[0] == shaped["tables"]["sources"]["columns"]
    names = [row[0] for row in rows[1:]]
    assert sorted(names) == sorted(["'" + name for name in HOSTILE] + ["website"])
    assert all(len(row) == len(rows[0]) for row in rows)
    by_source = sales("report", "activity", "--by", "source", "--csv").stdout
    assert "'=HYPERLINK(\"\"http://x\"\")" in by_source and "\n=" not in by_source and "\n+" not in by_source


def test_csv_with_a_bom_for_excel(sales):
    result = sales("report", "wins", "--csv", "--table", "lost_reasons", "--bom")
    assert result.stdout_bytes.startswith(b"\xef\xbb\xbf")
    assert list(csv.reader(io.StringIO(result.stdout_bytes.decode("utf-8-sig"), newline=""))) == [
        ["reason", "deals"], ["budget", "1"]]


def test_json_is_one_object_with_the_period_as_local_days(sales):
    today = NOW.date()
    shaped = json.loads(sales("report", "wins", "--json").stdout)
    assert shaped["report"] == "wins" and shaped["by"] is None
    assert shaped["period"] == {"since": (today - timedelta(days=27)).isoformat(), "until": today.isoformat()}
    assert shaped["headlines"]["win_rate"] == {"part": 1, "whole": 2, "rate": None}
    assert set(shaped) == {"report", "period", "by", "headlines", "tables", "notes"}


def test_the_text_states_the_period_and_too_few_never_reads_as_a_percentage(sales):
    today = NOW.date()
    since = today - timedelta(weeks=2) + timedelta(days=1)
    text = sales("report", "wins", "--weeks", "2").stdout
    first = text.splitlines()[0]
    assert first.startswith("wins: ") and first.endswith(", 2 weeks") and str(today.year) in first
    assert f"{since.day} " in first and f"{today.day} " in first
    win_rate = next(line for line in text.splitlines() if "too few (1 of 2)" in line)
    assert "%" not in win_rate


def test_every_report_prints_as_text_json_and_csv(sales):
    from inboxcrm.values import BY_CHOICES, REPORT_NAMES

    for name in REPORT_NAMES:
        for by in (None, *BY_CHOICES[name]):
            extra = ("--by", by) if by else ()
            assert sales("report", name, *extra).stdout.startswith(f"{name}: ")
            shaped = json.loads(sales("report", name, *extra, "--json").stdout)
            default = BY_CHOICES[name][0] if BY_CHOICES[name] else None
            assert shaped["report"] == name and shaped["by"] == (by or default)
            for key, table in shaped["tables"].items():
                rows = list(csv.reader(io.StringIO(sales("report", name, *extra, "--csv", "--table", key).stdout,
                                                   newline="")))
                assert rows[0] == table["columns"] and len(rows) == len(table["rows"]) + 1


@pytest.mark.parametrize("args, said", [
    (("report", "nope"), "'nope' is not one of 'pipeline', 'funnel', 'velocity', 'wins', 'sources', 'response', "
                         "'activity', 'forecast'"),
    (("report", "pipeline", "--by", "deal"), "'deal' is not one of 'stage', 'rep', 'source'"),
    (("report", "funnel", "--by", "rep"), "the funnel report has no --by breakdown; leave --by out"),
    (("report", "response", "--by", "stage"), 'the response report cannot be broken down by "stage"; --by takes: rep'),
    (("report", "wins", "--since", "2026-13-01"), "'2026-13-01' does not match the format '%Y-%m-%d'"),
    (("report", "wins", "--since", "2026-11-20", "--until", "2026-11-01"), "--since 2026-11-20 is after --until"),
    (("report", "wins", "--since", "2026-11-01", "--weeks", "2"), "give --weeks or --since, not both"),
    (("report", "wins", "--weeks", "0"), "0 is not in the range x>=1"),
    (("report", "wins", "--json", "--csv"), "give --json or --csv, not both"),
    (("report", "wins", "--bom"), "--table and --bom go with --csv"),
    (("report", "wins", "--csv", "--table", "nope"), 'the wins report has no table "nope"; its tables are: '
                                                     'by_stage_reached, by_source, by_rep, lost_reasons'),
])
def test_a_bad_report_argument_says_what_is_valid(cli, args, said):
    assert said in refused(cli, *args)
