"""Benchmark: syncing an IMAP mailbox through the pipeline against a bare imapclient + mail-parser loop.

Starts a private Dovecot (tests/dovecot.py, real TLS verified against a private CA), loads N
generated messages (bench/import_bench.py's generator) into INBOX with MULTIAPPEND, then, each
in its own child process so peak RSS is measured per phase:
  baseline  EXAMINE, UID SEARCH, FETCH BODY.PEEK[] in batches, mailparser.parse_from_bytes() each
  sync      inboxcrm.app.sync.sync_mailbox() into a fresh database (the real pipeline), then
            the unchanged-mailbox poll (median of 20 passes) and delivery-to-record latency with
            IDLE: APPEND one message, wait_for_change() returns, a sync pass records it (p50/p95)
Prints msg/s of each and the ratio to the baseline (aim >= 0.80 on each backend), with --postgres
PostgreSQL's rate against SQLite's in the same run (aim >= 0.80), poll time (aim < 100 ms), latency
(aim p95 < 2 s; Dovecot itself announces a delivery ~0.5 s late) and peak RSS (aim < 200 MB).

    python bench/imap_bench.py [--messages 10000] [--attachment-kb 1024] [--deliveries 50] [--postgres [URL]]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree's code, without installing
sys.path.insert(0, str(ROOT / "bench"))

from import_bench import AIM, REPS, TEAM, backend_ratio, generate, throwaway_database


def phase_baseline(connection: dict) -> dict:
    import mailparser

    from inboxcrm.mail import imap
    from inboxcrm.mail.imap import ImapSettings

    settings = ImapSettings.from_json(connection)
    t0 = time.perf_counter()
    client = imap.connect(settings)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search("ALL"))
    count = 0
    for start in range(0, len(uids), imap.FETCH_BATCH):
        for data in client.fetch(uids[start:start + imap.FETCH_BATCH], ["BODY.PEEK[]"]).values():
            mailparser.parse_from_bytes(data[b"BODY[]"])
            count += 1
    client.logout()
    return {"messages": count, "seconds": time.perf_counter() - t0}


def bench_crm(db: str, connection: dict):
    """A fresh database (SQLite file path or URL) with the reps and a "sales" mailbox reading ``connection``."""
    from inboxcrm.app import team
    from inboxcrm.store.db import make_engine, session_factory, transaction, upgrade

    engine = make_engine(db if "://" in db else f"sqlite:///{db}")
    upgrade(engine)
    factory = session_factory(engine)
    now = datetime.now(UTC)
    with transaction(factory) as s:
        for rep in REPS:
            team.add_rep(s, now, "bench", rep, [f"{rep}@{TEAM}"])
        team.add_mailbox(s, now, "bench", "sales", "alice", "capture", None, "create", connection=connection)
    return factory


def phase_sync(connection: dict, db: str, workers: int | None, deliveries: int) -> dict:
    from inboxcrm.app.sync import sync_mailbox
    from inboxcrm.config import build_config
    from inboxcrm.mail import imap
    from inboxcrm.mail.imap import ImapSettings

    factory = bench_crm(db, connection)
    config = build_config({"team": {"domains": [TEAM]}}, None)
    t0 = time.perf_counter()
    report = sync_mailbox(factory, config, "sales", parse_workers=workers)
    seconds = time.perf_counter() - t0

    polls = []
    for _ in range(20):
        t = time.perf_counter()
        assert sync_mailbox(factory, config, "sales").total == 0
        polls.append(time.perf_counter() - t)

    settings = ImapSettings.from_json(connection)
    watcher, loader = imap.connect(settings), imap.connect(settings)
    latencies = []
    for i in range(deliveries):
        delivered: list[float] = []

        def deliver(i=i, delivered=delivered):
            time.sleep(0.05)
            loader.append("INBOX", (f"From: Late {i} <late{i}@later{i}.example>\r\nTo: sales@{TEAM}\r\n"
                                    f"Subject: Now {i}\r\nMessage-ID: <late{i}@bench.example>\r\n\r\nHello\r\n").encode())
            delivered.append(time.perf_counter())

        uidnext = imap.examine(watcher, "INBOX").uidnext
        thread = threading.Thread(target=deliver)
        thread.start()
        assert imap.wait_for_change(watcher, "INBOX", timeout=30, known_uidnext=uidnext)
        assert sync_mailbox(factory, config, "sales").total == 1
        thread.join()
        latencies.append(time.perf_counter() - delivered[0])
    watcher.logout()
    loader.logout()
    return {"messages": report.total, "seconds": seconds, "counts": {k: v for f in report.folders
                                                                      for k, v in f.counts.items()},
            "poll_ms": statistics.median(polls) * 1000, "poll_max_ms": max(polls) * 1000,
            "latencies": latencies}


def print_phase_result(result: dict) -> None:
    """A child phase's last line: its result with its own peak RSS and its largest child's."""
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["worker_peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(result))


def run_child(args: list[str]) -> tuple[dict, float, float]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, result.pop("peak_rss_kb") / 1024, result.pop("worker_peak_rss_kb") / 1024


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank; NaN for no values (a run that recorded nothing prints "nan", not a traceback)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--attachment-kb", type=int, default=1024)
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="also sync into a throw-away database on this PostgreSQL server (default: %(const)s)")
    parser.add_argument("--workers", type=int, help="parse workers (default: inboxcrm's own choice)")
    parser.add_argument("--phase", choices=["baseline", "sync"], help=argparse.SUPPRESS)
    parser.add_argument("--connection", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        connection = json.loads(args.connection)
        print_phase_result(phase_baseline(connection) if args.phase == "baseline"
                           else phase_sync(connection, args.db, args.workers, args.deliveries))
        return

    from tests.certs import make_tls_files
    from tests.dovecot import Dovecot

    work = Path(tempfile.mkdtemp(prefix="inboxcrm-imap-bench-"))
    server = Dovecot(make_tls_files(work / "tls"))
    try:
        server.start()
        mail = work / "mail"
        mail.mkdir()
        generate(mail, args.messages, args.attachment_kb)
        files = sorted(mail.iterdir())
        size = sum(p.stat().st_size for p in files) / 1e6
        user = server.add_user("sales", "bench-password")
        t0 = time.perf_counter()
        # A few at a time: a child's peak RSS starts at its parent's (Linux keeps it across fork
        # and exec), so the parent must never hold the whole mailbox.
        for start in range(0, len(files), 500):
            server.append(user, "INBOX", [p.read_bytes() for p in files[start:start + 500]])
        print(f"loaded {len(files)} messages ({size:.0f} MB, 5% with a {args.attachment_kb} KB attachment) "
              f"into Dovecot in {time.perf_counter() - t0:.1f} s")
        base_connection = json.dumps(server.connection(user, folders=("\\Inbox",)))
        base, base_rss, _ = run_child(["--phase", "baseline", "--connection", base_connection])
        runs = [("SQLite", str(work / "bench.db"))] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
        results = []
        connection = json.dumps(server.connection(user))
        extra = ["--workers", str(args.workers)] if args.workers is not None else []
        for label, target in runs:  # a later run also reads the earlier runs' deliveries
            with throwaway_database(target) as url:
                results.append((label, *run_child(["--phase", "sync", "--connection", connection, "--db", url,
                                                   "--deliveries", str(args.deliveries), *extra])))
    finally:
        server.close()
    base_rate = base["messages"] / base["seconds"]
    print(f"baseline  imapclient fetch + mail-parser : {base_rate:6.0f} msg/s ({base['seconds']:.1f} s), "
          f"peak RSS {base_rss:.0f} MB")
    rates = {}
    for label, run, rss, worker_rss in results:
        rate = rates[label] = run["messages"] / run["seconds"]
        lat = run["latencies"]
        print(f"inboxcrm  sync {label:<10}             : {rate:6.0f} msg/s ({run['seconds']:.1f} s), "
              f"ratio {rate / base_rate:.2f}x (aim >= {AIM:.2f}); peak RSS {rss:.0f} MB main + {worker_rss:.0f} MB "
              f"per parse worker (aim < 200 MB)")
        print(f"          unchanged poll                 : median {run['poll_ms']:.0f} ms, max "
              f"{run['poll_max_ms']:.0f} ms over 20 (aim < 100 ms)")
        print(f"          delivery -> record (IDLE)      : p50 {percentile(lat, 50):.2f} s, p95 "
              f"{percentile(lat, 95):.2f} s over {len(lat)} (aim p95 < 2 s; Dovecot adds ~0.5 s)")
        print(f"          outcomes                       : {run['counts']}")
    if (line := backend_ratio(rates, 41)) is not None:
        print(line)
    print(f"cpu cores                                : {os.cpu_count()}")


if __name__ == "__main__":
    main()
