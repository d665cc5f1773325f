"""Every query of every report is served by an index, on SQLite and PostgreSQL: the plan rule of
bench/report_bench.py, kept by CI on a small copy of its data (2,000 deals, 20,000 messages,
10,000 stage changes). The benchmark itself times the reports over 100,000 deals.

On a database this small PostgreSQL rightly prefers reading a few pages whole to an index, so its
plans are taken with sequential scans switched off: a Seq Scan that is still there means no index
can serve the query. SQLite's planner takes an index whenever one fits, so its plans are as they are.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from inboxcrm.store.db import session_factory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import report_bench  # noqa: E402
import report_data  # noqa: E402


@pytest.fixture
def generated(engine):
    report_data.generate(engine, deals=2_000, messages=20_000, stage_changes=10_000)
    return engine


def statements_of(engine, *sql: str, **parameters) -> list[report_bench.Statement]:
    """The statements as the driver gets them, recorded the way the benchmark records a report."""
    with report_bench.recording(engine) as seen, engine.connect() as conn:
        for one in sql:
            conn.execute(text(one), parameters).all()
    return seen


def scanned(engine, statements) -> list[tuple[str, ...]]:
    findings, _ = report_bench.full_scans(engine, statements, force_index=True)
    return [f.tables for f in findings]


def test_the_generated_data_has_the_sizes_asked_for(generated):
    with generated.connect() as conn:
        count = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                 for t in ("deals", "messages", "message_copies", "stage_history")}
        open_deals = conn.execute(text("SELECT count(*) FROM deals WHERE closed_at IS NULL")).scalar_one()
        created_rows = conn.execute(text("SELECT count(*) FROM stage_history WHERE from_stage IS NULL")).scalar_one()
    assert count == {"deals": 2_000, "messages": 20_000, "message_copies": 20_000, "stage_history": 10_000}
    assert 0.1 < open_deals / 2_000 < 0.3  # most deals closed, as over three real years
    assert created_rows == 2_000  # every deal's history starts with its creation row


def test_every_report_query_is_served_by_an_index(generated):
    recorded = report_bench.record_cases(generated, session_factory(generated), report_data.NOW)
    assert set(recorded) == set(report_bench.report_cases())
    assert len(recorded) == 12  # 8 reports, pipeline by stage, rep and source, response and activity by rep and source
    failures = []
    for (name, by), statements in recorded.items():
        assert report_bench.queries(statements), f"{name} --by {by} ran no query: nothing was checked"
        findings, _ = report_bench.full_scans(generated, statements, force_index=True)
        failures += [f"{name} --by {by}: {finding}" for finding in findings]
    assert not failures, "\n\n".join(failures)


def test_the_weekly_review_reads_through_indexes_too(generated):
    with report_bench.recording(generated) as seen, session_factory(generated)() as session:
        review = report_bench.build_review(session, report_data.NOW)
    assert review is not None and report_bench.queries(seen)
    findings, _ = report_bench.full_scans(generated, seen, force_index=True)
    assert not findings, "\n\n".join(map(str, findings))


def test_a_statement_that_reads_a_big_table_whole_is_caught(engine):
    assert scanned(engine, statements_of(engine, "SELECT id FROM messages WHERE subject = :subject",
                                         subject="Re: deal 1")) == [("messages",)]
    # through an alias, as SQLAlchemy's aliased() writes it
    assert scanned(engine, statements_of(engine, "SELECT d.id FROM deals AS d WHERE d.title = :title",
                                         title="Company 1")) == [("deals",)]
    # every entry of an index is a full scan too
    assert scanned(engine, statements_of(engine, "SELECT count(*) FROM stage_history")) == [("stage_history",)]


def test_indexed_reads_and_small_tables_pass(engine):
    assert scanned(engine, statements_of(
        engine,
        "SELECT id FROM deals WHERE created_at >= :since",
        "SELECT h.deal_id FROM stage_history AS h JOIN stages ON stages.name = h.to_stage WHERE h.at >= :since",
        "SELECT name, kind FROM stages",
        since=report_data.NOW)) == []


def test_a_full_scan_or_a_slow_report_fails_the_run(engine, capsys):
    (finding,) = report_bench.full_scans(engine, statements_of(engine, "SELECT id FROM outbox WHERE subject = :s",
                                                               s="x"), force_index=True)[0]
    baseline = {"deals scan": 0.01, "history read": 0.5}
    assert report_bench.print_table("db", [report_bench.Row("pipeline", 0.1, 3, [])], baseline)
    assert not report_bench.print_table("db", [report_bench.Row("pipeline", 0.1, 3, [finding])], baseline)
    assert not report_bench.print_table("db", [report_bench.Row("velocity", 2.0, 3, [])], baseline)
    # the review runs every report twice: its time is shown, not held to a report's limit
    assert report_bench.print_table("db", [report_bench.Row("weekly review build", 4.0, 60, [], limited=False)],
                                    baseline)
    out = capsys.readouterr().out
    assert "FULL SCAN of outbox" in out and "SELECT id FROM outbox WHERE subject" in out and "TOO SLOW" in out


def test_reading_a_partial_index_whole_is_not_a_full_scan(engine):
    """An index with a WHERE holds only the rows it was made for: reading it whole is what it is for."""
    query = "SELECT title FROM deals WHERE lost_reason IS NOT NULL ORDER BY title"
    assert scanned(engine, statements_of(engine, query)) == [("deals",)]
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_bench_lost_titles ON deals (title) WHERE lost_reason IS NOT NULL"))
    try:
        assert scanned(engine, statements_of(engine, query)) == []
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_bench_lost_titles"))
