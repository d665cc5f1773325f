"""Benchmark: every manager's report over three years of a busy team, and the plan of every query it runs.

Generates (bench/report_data.py) 100,000 deals, 1,000,000 messages (one copy each) and 500,000
stage changes, with close date history, source costs, an audit log and an outbox, then for every
report in app.reports.REPORT_NAMES and every --by it allows:
  - runs app.reports.run_report once (warm-up) with the default period (the last 4 weeks before
    the data's "now"), recording every SQL statement and its parameters (before_cursor_execute);
  - times it: the best of 3 further runs, each in a fresh session;
  - runs EXPLAIN QUERY PLAN (SQLite) / EXPLAIN (FORMAT JSON) (PostgreSQL) on every statement it
    recorded, with the parameters it ran with.
The baseline, in the same run: a full `SELECT count(*), sum(value) FROM deals` and a full read of
stage_history (deal, stages, time), each the best of 3. It also times the weekly review's build
for the first manager (app.review.build: every report but the forecast for two periods, and the
week's deals); its plans are checked, its time is shown but has no limit.

Exits 1 when a report takes 2 s or more, or a statement scans a whole big table: on SQLite a
"SCAN <table>" (with or without "USING [COVERING] INDEX": a full index scan reads every entry
too) or an automatic index (built by reading the whole table); on PostgreSQL a "Seq Scan", or
an index scan (plain, index-only or bitmap) without an index condition (the whole index) that
no Limit stops. Reading a partial index whole is fine (it holds only the rows it was made for),
so is a scan of a small table (stages, reps, source_costs, ...) or of a subquery's or CTE's result.

    python bench/report_bench.py [--deals 100000] [--messages 1000000] [--stage-changes 500000]
                                 [--postgres [URL]] [--keep DIR] [--keep-postgres] [--runs 3]

--keep DIR keeps the generated SQLite database in DIR and reuses it when the same sizes are asked
again (pending migrations are applied to it first); --keep-postgres does the same with a
database inboxcrm_bench_keep_<sizes> on the server. --postgres also runs on PostgreSQL, in a
throw-away database inboxcrm_bench_<random> on the server (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), dropped at the end.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this tree's code
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import event, func, select, text  # noqa: E402

import report_data  # noqa: E402
from inboxcrm.app import reports, review  # noqa: E402
from inboxcrm.config import build_config  # noqa: E402
from inboxcrm.store.db import current_revision, head_revision, make_engine, session_factory, upgrade  # noqa: E402
from inboxcrm.store.models import Deal, StageChange  # noqa: E402

# Tables that grow with the business: reading one of them whole is what the rule forbids.
BIG_TABLES = frozenset({"deals", "messages", "message_copies", "message_raw", "stage_history", "close_date_history",
                        "contacts", "contact_addresses", "companies", "audit_log", "outbox"})
LIMIT_SECONDS = 2.0
CONFIG = build_config({"team": {"domains": ["acme.example"], "timezone": report_data.TEAM_ZONE},
                       "commands": {"address": "crm@acme.example"}}, None)


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: object


@dataclass(frozen=True)
class Finding:
    """A statement whose plan reads a big table whole."""

    statement: Statement
    plan: tuple[str, ...]
    tables: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join([f"FULL SCAN of {', '.join(self.tables)}",
                          "  statement: " + " ".join(self.statement.sql.split()),
                          f"  parameters: {self.statement.parameters!r}", "  plan:",
                          *(f"    {line}" for line in self.plan)])


@contextmanager
def recording(engine):
    """Every statement the engine sends while inside, as the driver got it (SQL + parameters)."""
    seen: list[Statement] = []

    def record(_conn, _cursor, statement, parameters, _context, _executemany):
        seen.append(Statement(statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def queries(statements) -> list[Statement]:
    """The reads among recorded statements (no BEGIN, SAVEPOINT, PRAGMA), each once."""
    out, seen = [], set()
    for s in statements:
        key = (s.sql, repr(s.parameters))
        if s.sql.lstrip().upper().startswith(("SELECT", "WITH")) and key not in seen:
            seen.add(key)
            out.append(s)
    return out


_NAMED = re.compile(r'\b(?:FROM|JOIN)\s+"?(\w+)"?(?:\s+(?:AS\s+)?"?(\w+)"?)?|"?(\w+)"?\s+AS\s+"?(\w+)"?\b', re.I)
_SQLITE_STEP = re.compile(r"^(SCAN|SEARCH) (\S+)(?: USING (?:COVERING )?INDEX (\w+))?(.*)$")


def _tables_by_name(sql: str) -> dict[str, str]:
    """Which table each name in a SQLite plan stands for: the table itself or its alias (SQLite
    prints "SCAN d" for "deals AS d"); SQLAlchemy's anonymous aliases are <table>_<n>."""
    names: dict[str, str] = {}
    for table, alias, labelled, label in _NAMED.findall(sql):
        if table:
            names.setdefault(table.lower(), table.lower())
            if alias:
                names[alias.lower()] = table.lower()
        elif labelled.lower() in BIG_TABLES:
            names[label.lower()] = labelled.lower()
    return names


def _partial_indexes(conn) -> frozenset[str]:
    """Indexes with a WHERE: reading one whole reads only the rows it was made for (the open
    deals, say), which is what an index is for."""
    sql = ("SELECT indexname FROM pg_indexes WHERE strpos(indexdef, ' WHERE ') > 0" if conn.dialect.name == "postgresql"
           else "SELECT name FROM sqlite_master WHERE type = 'index' AND instr(sql, ' WHERE ') > 0")
    return frozenset(name for (name,) in conn.exec_driver_sql(sql))


def _sqlite_plan(conn, statement: Statement, partial: frozenset[str]) -> tuple[list[str], list[str]]:
    rows = conn.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + statement.sql,
                                                      statement.parameters or ()).fetchall()
    names = _tables_by_name(statement.sql)
    depth: dict[int, int] = {0: 0}
    lines, scanned = [], []
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, 0) + 1
        lines.append("  " * (depth[node] - 1) + detail)
        step = _SQLITE_STEP.match(detail)
        if not step:
            continue
        verb, name, index, rest = step.groups()
        table = names.get(name.lower(), re.sub(r"_\d+$", "", name.lower()))
        if table in BIG_TABLES and ((verb == "SCAN" and index not in partial) or "AUTOMATIC" in rest):
            scanned.append(table)
    return lines, scanned


def _postgres_nodes(node: dict, depth: int = 0, limited: bool = False):
    """(depth, node, under a Limit) of every node of a JSON plan."""
    yield depth, node, limited
    for child in node.get("Plans", ()):
        yield from _postgres_nodes(child, depth + 1, limited or node["Node Type"] == "Limit")


def _postgres_full_scan(node: dict, limited: bool, partial: frozenset[str]) -> bool:
    """A Seq Scan of a big table; or an index scan without a condition (every entry of the
    index, in its order) of an index that is not partial, unless a Limit above it stops after a few."""
    if node.get("Relation Name") not in BIG_TABLES:
        return False
    if node["Node Type"] == "Seq Scan":
        return True

    def whole(index_node: dict) -> bool:
        return "Index Cond" not in index_node and index_node.get("Index Name") not in partial

    if node["Node Type"] == "Bitmap Heap Scan":  # its bitmap made of a whole index
        return any(n["Node Type"] == "Bitmap Index Scan" and whole(n) for _, n, _ in _postgres_nodes(node))
    return node["Node Type"] in ("Index Scan", "Index Only Scan") and whole(node) and not limited


def _postgres_plan(conn, statement: Statement, partial: frozenset[str]) -> tuple[list[str], list[str]]:
    cursor = conn.connection.driver_connection.cursor()
    cursor.execute("EXPLAIN (FORMAT JSON) " + statement.sql, statement.parameters)
    document = cursor.fetchone()[0]
    lines, scanned = [], []
    for depth, node, limited in _postgres_nodes(document[0]["Plan"]):
        what = node["Node Type"]
        if "Relation Name" in node:
            what += f" on {node['Relation Name']}" + (f" {node['Alias']}" if node.get("Alias") != node["Relation Name"]
                                                       else "")
        if "Index Name" in node:
            what += f" using {node['Index Name']}"
        for key in ("Index Cond", "Filter", "Hash Cond", "Join Filter"):
            if key in node:
                what += f" [{key}: {node[key]}]"
        lines.append("  " * depth + f"{what} (rows={node.get('Plan Rows')}, cost={node.get('Total Cost')})")
        if _postgres_full_scan(node, limited, partial):
            scanned.append(node["Relation Name"])
    return lines, scanned


def full_scans(engine, statements, force_index: bool = False
               ) -> tuple[list[Finding], list[tuple[Statement, list[str]]]]:
    """EXPLAIN each statement with its own parameters; the ones that read a big table whole, and
    every plan. ``force_index`` (PostgreSQL) turns sequential scans off, so that on a small test
    database a Seq Scan left in the plan means no index could serve the query, not that reading
    a few pages whole was cheaper."""
    findings, plans = [], []
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        if postgres and force_index:
            conn.exec_driver_sql("SET enable_seqscan = off")
        partial = _partial_indexes(conn)
        for statement in queries(statements):
            lines, scanned = (_postgres_plan if postgres else _sqlite_plan)(conn, statement, partial)
            plans.append((statement, lines))
            if scanned:
                findings.append(Finding(statement, tuple(lines), tuple(dict.fromkeys(scanned))))
        conn.rollback()
    return findings, plans


# -- the reports -------------------------------------------------------------------------------

def report_cases() -> list[tuple[str, str | None]]:
    """Every report once per --by it allows (the first is its default), or once when it has none."""
    return [(name, by) for name in reports.REPORT_NAMES for by in (reports.BY_CHOICES.get(name) or (None,))]


def default_period(now):
    return reports.period_for(now, ZoneInfo(CONFIG.team.timezone), None, None, None)


def run_case(factory, name: str, by: str | None, period, now):
    with factory() as session:
        return reports.run_report(session, CONFIG, name, period, by, now)


def record_cases(engine, factory, now) -> dict[tuple[str, str | None], list[Statement]]:
    """Each report case run once, with the statements it sent."""
    period = default_period(now)
    recorded = {}
    for name, by in report_cases():
        with recording(engine) as seen:
            run_case(factory, name, by, period, now)
        recorded[name, by] = list(seen)
    return recorded


def best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def build_review(session, now):
    """The weekly review's content for the first manager (what the daemon queues, without the outbox)."""
    return review.build(session, CONFIG, review.recipients(session, CONFIG)[0], now)


@dataclass
class Row:
    label: str
    seconds: float
    statements: int
    findings: list[Finding]
    error: str = ""
    limited: bool = True  # the 2 s limit is the reports'; the weekly review (all of them, twice) is shown


def measure(engine, runs: int) -> tuple[list[Row], dict[str, float]]:
    factory = session_factory(engine)
    now = report_data.NOW

    def deals_scan():
        with factory() as s:
            s.execute(select(func.count(), func.sum(Deal.value)).select_from(Deal)).one()

    def history_read():
        with factory() as s:
            s.execute(select(StageChange.deal_id, StageChange.from_stage, StageChange.to_stage,
                             StageChange.at)).all()

    baseline = {"deals scan": best_of(runs, deals_scan), "history read": best_of(runs, history_read)}
    period = default_period(now)
    rows = []
    for (name, by), recorded in record_cases(engine, factory, now).items():
        seconds = best_of(runs, lambda: run_case(factory, name, by, period, now))
        findings, _ = full_scans(engine, recorded)
        rows.append(Row(name + (f" --by {by}" if by else ""), seconds, len(queries(recorded)), findings))
    rows.append(_measure_review(engine, factory, now, runs))
    return rows, baseline


def _measure_review(engine, factory, now, runs) -> Row:
    def once():
        with factory() as session:
            return build_review(session, now)

    try:
        with recording(engine) as seen:
            once()
        seconds = best_of(runs, once)
    except Exception as exc:  # noqa: BLE001 - the review is not a report: its failure is shown, the reports still count
        return Row("weekly review build", 0.0, 0, [], error=f"{type(exc).__name__}: {exc}")
    findings, _ = full_scans(engine, seen)
    return Row("weekly review build", seconds, len(queries(seen)), findings, limited=False)


def print_table(label: str, rows: list[Row], baseline: dict[str, float]) -> bool:
    scan, read = baseline["deals scan"], baseline["history read"]
    print(f"  baseline: full deals scan (count, sum of value) {scan * 1000:.1f} ms; "
          f"full stage_history read {read * 1000:.1f} ms")
    print(f"  {'report':<22} {'ms':>8} {'stmts':>6} {'x scan':>7} {'x read':>7}  plan")
    ok = True
    for row in rows:
        if row.error:
            print(f"  {row.label:<22} {'-':>8} {'-':>6} {'-':>7} {'-':>7}  not run: {row.error}")
            continue
        verdict = "index" if not row.findings else "FULL SCAN: " + ", ".join(
            sorted({t for f in row.findings for t in f.tables}))
        slow = row.limited and row.seconds >= LIMIT_SECONDS
        ok &= not row.findings and not slow
        print(f"  {row.label:<22} {row.seconds * 1000:8.1f} {row.statements:6d} {row.seconds / scan:7.1f} "
              f"{row.seconds / read:7.2f}  {verdict}{'  TOO SLOW (limit 2 s)' if slow else ''}")
    worst = max((r for r in rows if not r.error and r.limited), key=lambda r: r.seconds, default=None)
    if worst:
        print(f"  slowest: {worst.label} {worst.seconds * 1000:.0f} ms (limit {LIMIT_SECONDS * 1000:.0f} ms)")
    shown = set()
    for row in rows:
        for finding in row.findings:
            if finding.statement.sql not in shown:
                shown.add(finding.statement.sql)
                print(f"\n  {label}, {row.label}: {finding}")
    return ok


# -- databases -----------------------------------------------------------------------------------

def _sqlite_database(args, folder: Path) -> tuple[str, str]:
    """The SQLite file for these sizes: reused from --keep when there, else generated."""
    name = f"report-bench-{args.deals}-{args.messages}-{args.stage_changes}-v{report_data.VERSION}.db"
    path = folder / name
    url = f"sqlite:///{path}"
    if path.exists():
        engine = make_engine(url)
        if current_revision(engine) != head_revision():
            upgrade(engine)  # a new migration (an index) applies to the kept data
            report_data.analyze(engine)
        engine.dispose()
        return url, f"reused {path}"
    partial = folder / (name + ".partial")
    for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        stale.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{partial}")
    upgrade(engine)
    start = time.perf_counter()
    counts = report_data.generate(engine, args.deals, args.messages, args.stage_changes)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    partial.rename(path)
    return url, f"generated {counts} in {time.perf_counter() - start:.0f} s"


def _on_postgres(args) -> bool:
    """Generates into a throw-away database and drops it; with --keep-postgres, into one named
    by the sizes, kept and reused (renamed into place only once complete)."""
    admin = make_engine(args.postgres)
    kept = f"inboxcrm_bench_keep_{args.deals}_{args.messages}_{args.stage_changes}_v{report_data.VERSION}"
    name = kept + "_partial" if args.keep_postgres else f"inboxcrm_bench_{uuid.uuid4().hex[:8]}"

    def url_of(database: str) -> str:
        return admin.url.set(database=database).render_as_string(hide_password=False)

    def sql(statement: str):
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.execute(text(statement)).all() if statement.startswith("SELECT") else conn.execute(
                text(statement))

    try:
        if args.keep_postgres and sql(f"SELECT 1 FROM pg_database WHERE datname = '{kept}'"):
            engine = make_engine(url_of(kept))
            if current_revision(engine) != head_revision():
                upgrade(engine)
                report_data.analyze(engine)
            engine.dispose()
            return run("PostgreSQL", url_of(kept), f"reused database {kept}", args)
        sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        sql(f'CREATE DATABASE "{name}"')
        engine = make_engine(url_of(name))
        upgrade(engine)
        start = time.perf_counter()
        counts = report_data.generate(engine, args.deals, args.messages, args.stage_changes)
        engine.dispose()
        how = f"generated {counts} in {time.perf_counter() - start:.0f} s"
        if args.keep_postgres:
            sql(f'ALTER DATABASE "{name}" RENAME TO "{kept}"')
            name = kept
        return run("PostgreSQL", url_of(name), how, args)
    finally:
        if not args.keep_postgres:
            sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(label: str, url: str, how: str, args) -> bool:
    print(f"\n{label}: {how}")
    engine = make_engine(url)
    try:
        rows, baseline = measure(engine, args.runs)
    finally:
        engine.dispose()
    return print_table(label, rows, baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--stage-changes", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per report, the best counts (default 3)")
    parser.add_argument("--postgres", metavar="URL", nargs="?",
                        const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="also run on PostgreSQL, in a throw-away database on this server")
    parser.add_argument("--keep", metavar="DIR", help="keep the generated SQLite database in DIR and reuse it")
    parser.add_argument("--keep-postgres", action="store_true",
                        help="keep the PostgreSQL database (inboxcrm_bench_keep_<sizes>) and reuse it")
    args = parser.parse_args()
    if min(args.deals, args.messages, args.stage_changes, args.runs) < 1:
        parser.error("--deals, --messages, --stage-changes and --runs must be at least 1")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        url, how = _sqlite_database(args, folder)
        ok &= run("SQLite", url, how, args)
    if args.postgres:
        ok &= _on_postgres(args)
    print("\nOK: every report under 2 s, every query on an index" if ok else
          "\nFAILED: see the reports marked above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
