"""How fast a spreadsheet moves in: ``import-csv``'s work on N rows against a bare ``csv.reader``
read of the same file, in the same run.

    .venv/bin/python bench/csv_bench.py [--rows 100000] [--postgres [URL]]

The file has every field filled (name, address at one of 2,000 company domains or gmail.com,
company, stage, owner, value, next step, due date, source, a note). The import runs on a fresh
SQLite file (and, with --postgres, in a throw-away database on the server, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres, dropped at the end) through
``app.csv_import.import_csv`` in one transaction, as the command does. Printed: rows/s of each
and the ratio import / bare read; then a re-import of the same file (every row unchanged).

Figures for 100,000 rows on the 2-core machine (shared with other work), before and after the
bulk writer (``store.leads.create_leads``): SQLite 813 -> 7,629 rows/s, PostgreSQL 322 -> 3,142
rows/s; re-import 16,928 (SQLite) and 7,294 (PostgreSQL) rows/s. What is left on SQLite is
mostly reading and checking the rows (``core.csv_rows.read_row``, about 3 s of the 13 s).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from inboxcrm.app import csv_import, team  # noqa: E402
from inboxcrm.store.db import make_engine, session_factory, transaction, upgrade  # noqa: E402

STAGES = ("New", "Contacted", "Qualified", "Proposal", "Negotiation")
OWNERS = ("alice", "bob", "carol@acme.example")


def make_file(rows: int) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["Name", "Email", "Company", "Stage", "Owner", "Value", "Next step", "Due date", "Source", "Notes"])
    for i in range(rows):
        freemail = i % 10 == 0
        domain = "gmail.com" if freemail else f"firm{i % 2000}.example"
        writer.writerow([f"Person {i} Ødegård", f"p{i}@{domain}", "" if freemail else f"Firm {i % 2000}",
                         STAGES[i % 5], OWNERS[i % 3], f"{(i % 90 + 1) * 1000}.50", f"call back #{i}",
                         f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}", ("fair", "web", "=cmd")[i % 3],
                         f"met at the fair, \"row\" {i}\nsecond line"])
    return out.getvalue().encode("utf-8")


def bare_read(data: bytes) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert n > 0
    return time.perf_counter() - start


def _setup(engine) -> None:
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        now = datetime.now(UTC)
        for name in ("alice", "bob", "carol"):
            team.add_rep(session, now, "bench", name, [f"{name}@acme.example"])


def run_import(engine, data: bytes) -> tuple[float, dict]:
    start = time.perf_counter()
    with transaction(session_factory(engine)) as session:
        result = csv_import.import_csv(session, datetime.now(UTC), "bench", data, today=date.today(),
                                       team_domains=frozenset({"acme.example"}), file_name="bench.csv")
    return time.perf_counter() - start, result.counts


def measure(label: str, engine, data: bytes, rows: int) -> None:
    _setup(engine)
    bare = bare_read(data)
    took, counts = run_import(engine, data)
    assert counts["create"] == rows, counts
    again, counts2 = run_import(engine, data)
    assert counts2["unchanged"] == rows, counts2
    print(f"{label}: bare csv.reader {rows / bare:,.0f} rows/s ({bare:.2f} s); import {rows / took:,.0f} rows/s "
          f"({took:.1f} s), {took / bare:.0f}x the bare read; re-import (all unchanged) {rows / again:,.0f} rows/s "
          f"({again:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", metavar="URL", nargs="?",
                        const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    data = make_file(args.rows)
    print(f"{args.rows:,} rows, {len(data) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        measure("SQLite", engine, data, args.rows)
        engine.dispose()
    if args.postgres:
        admin = make_engine(args.postgres)
        name = f"inboxcrm_csv_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            engine = make_engine(admin.url.set(database=name))
            measure("PostgreSQL", engine, data, args.rows)
            engine.dispose()
        finally:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
