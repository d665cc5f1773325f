"""Benchmark: building every rep's digest on a large team, and the plan of every digest query.

Generates (bulk Core inserts) 500 reps, 100,000 deals and 1,000,000 messages (with one copy
each; 0.5% held for review in the reps' own inboxes), then measures, in the same run:
  baseline  one bare indexed query per rep: SELECT count(*) FROM deals WHERE owner_rep_id=? AND open
  load      digest_store.load_digest_data for every rep (the team totals loaded once per run)
  build     notify.build_for_rep for every rep (load + digest.build_digest)
  render    render.render_digest of every digest (Jinja2 text + HTML, css-inline)
and prints the times and build/baseline. Aim: build + render of all digests under 30 s.
It prints EXPLAIN QUERY PLAN (SQLite) / EXPLAIN (PostgreSQL) of every query in
digest_store.statements() and exits 1 if one scans deals or messages without an index.

    python bench/digest_bench.py [--reps 500] [--deals 100000] [--messages 1000000]
                                 [--postgres [URL]] [--keep DIR]

--postgres creates a throw-away database on the server (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and drops it afterwards; SQLite always runs.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this tree's code

from sqlalchemy import bindparam, func, insert, select, text  # noqa: E402

from inboxcrm.app.notify import build_for_rep  # noqa: E402
from inboxcrm.config import build_config  # noqa: E402
from inboxcrm.mail.render import render_digest, template_env  # noqa: E402
from inboxcrm.store.db import make_engine, session_factory, upgrade  # noqa: E402
from inboxcrm.store.digest_queries import load_digest_data, statements, team_totals  # noqa: E402
from inboxcrm.store.models import (  # noqa: E402
    Company,
    Contact,
    ContactAddress,
    Deal,
    Mailbox,
    Message,
    MessageCopy,
    Rep,
    RepAddress,
    Stage,
)

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
ZONES = ("Europe/Berlin", "America/Los_Angeles", "Pacific/Auckland", "UTC", "Asia/Kolkata")
BATCH = 20_000
CONFIG = build_config({"team": {"domains": ["acme.example"]}, "commands": {"address": "crm@acme.example"},
                       "pipeline": {"quiet_days_by_stage": {"Proposal": 7}}}, None)


def chunks(rows, size=BATCH):
    batch = []
    for r in rows:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def generate(engine, reps: int, deals: int, messages: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    with engine.connect() as conn:
        stages = {kind_name: sid for sid, kind_name in conn.execute(select(Stage.id, Stage.name))}
        kinds = dict(conn.execute(select(Stage.id, Stage.kind)).all())
    open_ids = [sid for sid, kind in kinds.items() if kind == "open"]
    won, lost = stages["Won"], stages["Lost"]
    t0 = NOW - timedelta(days=200)
    with engine.begin() as conn:
        conn.execute(insert(Rep), [dict(id=i, name=f"rep{i}", timezone=ZONES[i % len(ZONES)], active=True,
                                        created_at=t0, digest_always=False, digest_enabled=True)
                                   for i in range(1, reps + 1)])
        conn.execute(insert(RepAddress), [dict(rep_id=i, address=f"rep{i}@acme.example") for i in range(1, reps + 1)])
        conn.execute(insert(Mailbox), [dict(id=i, name=f"rep{i}-inbox", owner_rep_id=i, role="rep",
                                            default_source="rep-inbox", new_sender_policy="review", created_at=t0,
                                            failures=0) for i in range(1, reps + 1)]
                     + [dict(id=reps + 1, name="sales", owner_rep_id=1, role="capture", default_source="sales",
                             new_sender_policy="create", created_at=t0, failures=0)])
        companies = max(1, deals // 5)
        for batch in chunks(dict(id=i, domain=f"company{i}.example", name=f"Company {i}", created_at=t0)
                            for i in range(1, companies + 1)):
            conn.execute(insert(Company), batch)
        for batch in chunks(dict(id=i, name=f"Person {i}", company_id=(i % companies) + 1, owner_rep_id=None,
                                 source="website", first_seen=t0) for i in range(1, deals + 1)):
            conn.execute(insert(Contact), batch)
        for batch in chunks(dict(contact_id=i, address=f"person{i}@company{(i % companies) + 1}.example")
                            for i in range(1, deals + 1)):
            conn.execute(insert(ContactAddress), batch)

        def deal(i: int) -> dict:
            created = t0 + timedelta(minutes=rng.randrange(200 * 24 * 60))
            roll = rng.random()
            stage, closed = (won, created + timedelta(days=3)) if roll < 0.2 else \
                (lost, created + timedelta(days=3)) if roll < 0.3 else (rng.choice(open_ids), None)
            owner = rng.randrange(1, reps + 1)
            has_step = rng.random() < 0.6
            inbound = created + timedelta(hours=rng.randrange(1, 4000)) if rng.random() < 0.8 else None
            outbound = created + timedelta(hours=rng.randrange(1, 4000)) if rng.random() < 0.7 else None
            return dict(
                id=i, title=f"Company {(i % companies) + 1}", contact_id=i, company_id=(i % companies) + 1,
                stage_id=stage, owner_rep_id=owner, value=Decimal(rng.randrange(0, 50_000)) if rng.random() < 0.5
                else None, source=rng.choice(("website", "referral", "sales-inbox")), fit_score=10,
                score=rng.randrange(0, 80), inbound_count=1, outbound_count=1,
                next_step="follow up" if has_step else None,
                next_step_due=(NOW + timedelta(days=rng.randrange(-20, 20))).date() if has_step else None,
                next_step_owner_id=(owner if rng.random() < 0.95 else rng.randrange(1, reps + 1)) if has_step else None,
                created_at=created, last_activity_at=max(filter(None, (created, inbound, outbound))),
                last_inbound_at=inbound and min(inbound, NOW), last_outbound_at=outbound and min(outbound, NOW),
                last_stage_change_at=created + timedelta(days=rng.randrange(0, 60)), closed_at=closed,
            )

        for batch in chunks(deal(i) for i in range(1, deals + 1)):
            conn.execute(insert(Deal), batch)

        def message(i: int) -> dict:
            held = rng.random() < 0.005
            return dict(id=i, message_id=f"m{i}@gen.example", synthetic_id=False, sha256=f"{i:064x}", size=2000,
                        subject=f"Subject {i}", from_address=f"person{rng.randrange(1, deals + 1)}@x.example",
                        sent_at=t0 + timedelta(seconds=i * 15), received_at=t0 + timedelta(seconds=i * 15),
                        status="held" if held else rng.choice(("processed", "processed", "processed", "noise")),
                        direction="inbound", deal_id=None if held else rng.randrange(1, deals + 1))

        for batch in chunks(message(i) for i in range(1, messages + 1)):
            conn.execute(insert(Message), batch)
        for batch in chunks(dict(message_id=i, mailbox_id=rng.randrange(1, reps + 2), folder="INBOX",
                                 location=f"gen:{i}", seen_at=t0) for i in range(1, messages + 1)):
            conn.execute(insert(MessageCopy), batch)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("reps", "mailboxes", "companies", "contacts", "deals", "messages"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


FULL_SCAN = {"sqlite": re.compile(r"\bSCAN (deals|messages)\b"), "postgresql": re.compile(r"Seq Scan on (deals|messages)\b")}


def explain(engine, rep_id: int) -> list[str]:
    """Prints each digest query's plan; returns the names of those that scan deals or messages."""
    bad = []
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        for name, stmt in statements(rep_id).items():
            sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            rows = conn.exec_driver_sql(prefix + sql).all()
            plan = [" ".join(str(c) for c in r[-1:]) for r in rows]
            print(f"  -- {name}")
            for line in plan:
                print(f"     {line}")
            if any(FULL_SCAN[engine.dialect.name].search(line) for line in plan):
                bad.append(name)
    return bad


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(label: str, url: str, args) -> bool:
    engine = make_engine(url)
    upgrade(engine)
    seconds, _ = timed(lambda: generate(engine, args.reps, args.deals, args.messages))
    print(f"\n{label}: generated {args.reps} reps, {args.deals} deals, {args.messages} messages in {seconds:.1f} s")
    factory = session_factory(engine)
    rep_ids = list(range(1, args.reps + 1))
    baseline_sql = select(func.count()).select_from(Deal).where(Deal.owner_rep_id == bindparam("rep"),
                                                                  Deal.closed_at.is_(None))

    def baseline():
        with factory() as s:
            return sum(s.scalar(baseline_sql, {"rep": r}) for r in rep_ids)

    def load():
        with factory() as s:
            team = team_totals(s)
            return [load_digest_data(s, r, NOW - timedelta(hours=24), team) for r in rep_ids]

    def build():
        with factory() as s:
            team = team_totals(s)
            return [build_for_rep(s, r, NOW, CONFIG, team=team) for r in rep_ids]

    env = template_env()
    t_base, open_deals = timed(baseline)
    t_load, _ = timed(load)
    t_build, digests = timed(build)
    t_render, mails = timed(lambda: [render_digest(d, env) for d in digests])
    items = sum(s.total for d in digests for s in d.sections)
    print(f"  baseline  {t_base:7.2f} s  one count(*) per rep ({open_deals} open deals)")
    print(f"  load      {t_load:7.2f} s  {t_load / t_base:5.1f} x baseline")
    print(f"  build     {t_build:7.2f} s  {t_build / t_base:5.1f} x baseline  ({t_build / len(rep_ids) * 1000:.1f} ms "
          f"per rep, {items} section items, {sum(d.is_empty for d in digests)} empty)")
    print(f"  render    {t_render:7.2f} s  ({sum(len(m.html) for m in mails) / len(mails) / 1024:.0f} KB HTML per digest)")
    print(f"  total     {t_build + t_render:7.2f} s  for {len(rep_ids)} digests (aim under 30 s)")
    print(f"  plans ({'EXPLAIN QUERY PLAN' if engine.dialect.name == 'sqlite' else 'EXPLAIN'}) for rep 1:")
    bad = explain(engine, 1)
    engine.dispose()
    if bad:
        print(f"  FULL SCAN of deals or messages in: {', '.join(bad)}")
    return not bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", nargs="?",
                        const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="also run on PostgreSQL, in a throw-away database on this server")
    parser.add_argument("--keep", metavar="DIR", help="keep the SQLite database in this folder")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "digest-bench.db"
        path.unlink(missing_ok=True)
        ok &= run("SQLite", f"sqlite:///{path}", args)
    if args.postgres:
        admin = make_engine(args.postgres)
        name = f"inboxcrm_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            ok &= run("PostgreSQL", admin.url.set(database=name).render_as_string(hide_password=False), args)
        finally:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
