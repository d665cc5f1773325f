"""Benchmark: `inboxcrm import` of generated mail against a bare mail-parser loop.

Generates N messages (default 10,000; 5% with a large attachment) as a folder of .eml files,
then, each in its own child process so peak RSS is measured per phase:
  baseline  read every file and mailparser.parse_from_bytes() it, nothing else
  import    inboxcrm.app.importer.import_path() into a fresh SQLite database (the real pipeline:
            raw stored, parsed, classified, matched, routed, applied; one transaction each)
With --postgres the import runs a second time, into a throw-away PostgreSQL database.
Prints msg/s of each, the ratio to the baseline (aim >= 0.80 on each backend), PostgreSQL's rate
against SQLite's in the same run (aim >= 0.80), peak RSS of the import (aim < 200 MB), and the CPU
time per message of the importing process, its parse workers and (PostgreSQL on this machine)
the server's processes: on a small server these share the same cores.

    python bench/import_bench.py [--messages 10000] [--attachment-kb 1024] [--keep DIR] [--postgres [URL]]
                                 [--rounds N]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

# Run from a checkout without installing: the benchmark measures this tree's code.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEAM = "acme.example"
REPS = ("alice", "bob", "carol")
AUTHSERV = "mx.acme.example"  # the team's receiving server, trusted for commands
AIM = 0.80  # issue 16: each backend at 0.8x of the bare loop, and PostgreSQL at 0.8x of SQLite


def backend_ratio(rates: dict[str, float], label_width: int) -> str | None:
    """PostgreSQL's rate against SQLite's, measured in the same run, when both ran."""
    if "SQLite" not in rates or "PostgreSQL" not in rates:
        return None
    return (f"{'PostgreSQL / SQLite':<{label_width}}: {rates['PostgreSQL'] / rates['SQLite']:.2f}x "
            f"(aim >= {AIM:.2f})")


def generate(folder: Path, count: int, attachment_kb: int, seed: int = 7) -> None:
    """A plausible mix: new leads, replies in threads, reps' answers, noise, 1% reps' command
    emails to the command address (each changes a deal and queues an answer), 5% big files."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    blob = base64.encodebytes(rng.randbytes(attachment_kb * 1024)).replace(b"\n", b"\r\n")
    sent: list[tuple[str, str, str]] = []  # (message-id, prospect, subject)
    for i in range(count):
        when = format_datetime(start + timedelta(minutes=7 * i)).encode()
        mid = f"m{i}@gen.example"
        kind = rng.random()
        if kind < 0.01 and sent:
            rep = rng.choice(REPS)
            # Vouched for by the team's receiving server, as [commands] proof requires by default.
            sender, to, subject, extra = f"{rep}@{TEAM}", f"crm@{TEAM}", \
                f"[D-{rng.randrange(1, len(sent) + 1)}] note: called them about message {i}", \
                f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from={TEAM}\r\n".encode()
            refs = b""
            when = format_datetime(datetime.now(timezone.utc)).encode()  # older commands are history
        elif kind < 0.08:
            sender, to, subject, extra = f"news{i % 40}@lists{i % 40}.example", f"sales@{TEAM}", "Weekly news", \
                b"List-Id: <weekly.lists.example>\r\n"
            refs = b""
        elif kind < 0.35 and sent:
            parent, prospect, subject = rng.choice(sent)
            rep = REPS[hash(prospect) % len(REPS)]
            sender, to = (f"{rep}@{TEAM}", prospect) if rng.random() < 0.5 else (prospect, f"{rep}@{TEAM}")
            subject, extra = "Re: " + subject, b""
            refs = f"In-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n".encode()
        else:
            company = f"company{rng.randrange(2000)}.example" if rng.random() < 0.7 else "gmail.com"
            sender, to, subject, extra = f"person{rng.randrange(5000)}@{company}", f"sales@{TEAM}", \
                f"Enquiry {i}", b""
            refs = b""
            sent.append((mid, sender, subject))
        head = (f"From: Person {i} <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
                f"Date: ").encode() + when + b"\r\n" + refs + extra + b"MIME-Version: 1.0\r\n"
        text = (f"Hello,\r\n\r\nthis is message {i}. We would like to talk about a project.\r\n" * 5).encode()
        if i % 20 == 0:
            body = (b'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\n'
                    + text + b"\r\n--BB\r\nContent-Type: application/pdf; name=\"brief.pdf\"\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"\r\n--BB--\r\n")
        else:
            body = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
        (folder / f"{i:06d}.eml").write_bytes(head + body)


def phase_baseline(folder: str) -> dict:
    import mailparser

    files = sorted(Path(folder).glob("*.eml"))
    t0 = time.perf_counter()
    for path in files:
        mailparser.parse_from_bytes(path.read_bytes())
    return {"messages": len(files), "seconds": time.perf_counter() - t0}


def phase_import(folder: str, db: str, workers: int | None) -> dict:
    """``db`` is a SQLite file path or a full SQLAlchemy URL (PostgreSQL)."""
    from inboxcrm.app import team
    from inboxcrm.app.importer import import_path
    from inboxcrm.config import build_config
    from inboxcrm.store.db import make_engine, session_factory, transaction, upgrade

    engine = make_engine(db if "://" in db else f"sqlite:///{db}")
    upgrade(engine)
    factory = session_factory(engine)
    now = datetime.now(timezone.utc)
    with transaction(factory) as s:
        for rep in REPS:
            team.add_rep(s, now, "bench", rep, [f"{rep}@{TEAM}"])
        team.add_mailbox(s, now, "bench", "sales", "alice", "capture", None, "create")
    # Commands by email on, as a team with a command address runs: every message meets the gate.
    config = build_config({"team": {"domains": [TEAM]},
                           "commands": {"address": f"crm@{TEAM}",
                                        "token_key_file": str(Path(folder).parent / "reply-token.key"),
                                        "trusted_authserv_ids": [AUTHSERV]}}, None)
    server = postgres_cpu_seconds() if engine.dialect.name == "postgresql" else None
    own, children = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    report = import_path(factory, config, "sales", Path(folder), parse_workers=workers)
    seconds = time.perf_counter() - t0
    cpu = {"importing process": cpu_seconds(resource.RUSAGE_SELF) - own,
           "parse workers": cpu_seconds(resource.RUSAGE_CHILDREN) - children}
    if server is not None:  # read before the engine lets its connection go
        cpu["PostgreSQL server"] = postgres_cpu_seconds() - server
    return {"messages": report.total, "seconds": seconds, "counts": dict(report.counts), "cpu": cpu}


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_seconds() -> float:
    """CPU time of the PostgreSQL server's processes on this machine (its backends included), from
    /proc: where the import's CPU goes when the server shares the machine. 0 where /proc says nothing."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_child(args: list[str]) -> tuple[dict, float, float]:
    """Run one phase in a fresh interpreter: its result, its own peak RSS and its largest
    child's (a parse worker's) peak RSS, in MB."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, result.pop("peak_rss_kb") / 1024, result.pop("worker_peak_rss_kb") / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--attachment-kb", type=int, default=1024)
    parser.add_argument("--keep", help="keep generated mail and database in this folder")
    parser.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="also import into a throw-away database on this PostgreSQL server "
                             "(default: %(const)s)")
    parser.add_argument("--workers", type=int, help="parse workers (default: inboxcrm's own choice)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure baseline and imports this many times over, each ratio within its round, "
                             "and print the medians (a noisy machine's speed drifts between runs)")
    parser.add_argument("--phase", choices=["baseline", "import"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = phase_baseline(args.folder) if args.phase == "baseline" else phase_import(args.folder, args.db, args.workers)
        result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["worker_peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps(result))
        return

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="inboxcrm-bench-"))
    mail = work / "mail"
    mail.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generate(mail, args.messages, args.attachment_kb)
    size = sum(p.stat().st_size for p in mail.iterdir()) / 1e6
    print(f"generated {args.messages} messages ({size:.0f} MB, 5% with a {args.attachment_kb} KB attachment) "
          f"in {time.perf_counter() - t0:.1f} s")
    try:
        rounds = [measure_round(mail, work, args) for _ in range(args.rounds)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for number, (base, base_rss, results) in enumerate(rounds, 1):
        if args.rounds > 1:
            print(f"-- round {number} of {args.rounds}")
        report_round(base, base_rss, results)
    if args.rounds > 1:
        report_medians(rounds)
    print(f"cpu cores                   : {os.cpu_count()}")


def measure_round(mail: Path, work: Path, args) -> tuple[dict, float, list]:
    """The baseline, then each backend's import, back to back: on a shared machine whose speed
    drifts by the minute, a ratio is only as good as the time between its two figures."""
    base, base_rss, _ = run_child(["--phase", "baseline", "--folder", str(mail)])
    db = work / "bench.db"
    db.unlink(missing_ok=True)
    runs = [("SQLite", str(db))]
    if args.postgres:
        runs.append(("PostgreSQL", args.postgres))
    results = []
    for label, target in runs:
        with throwaway_database(target) as url:
            results.append((label, *run_child(["--phase", "import", "--folder", str(mail), "--db", url]
                                              + (["--workers", str(args.workers)] if args.workers is not None else []))))
    return base, base_rss, results


def rates_of(base: dict, results: list) -> tuple[float, dict[str, float]]:
    return base["messages"] / base["seconds"], {label: imp["messages"] / imp["seconds"]
                                                for label, imp, _, _ in results}


def report_round(base: dict, base_rss: float, results: list) -> None:
    base_rate, rates = rates_of(base, results)
    print(f"baseline  mail-parser loop  : {base_rate:6.0f} msg/s ({base['seconds']:.1f} s), peak RSS {base_rss:.0f} MB")
    for label, imp, rss, worker_rss in results:
        rate = rates[label]
        print(f"inboxcrm  import {label:<10} : {rate:6.0f} msg/s ({imp['seconds']:.1f} s), ratio {rate / base_rate:.2f}x "
              f"(aim >= {AIM:.2f}); peak RSS {rss:.0f} MB main + {worker_rss:.0f} MB per parse worker (aim < 200 MB)")
        print(f"          outcomes          : {imp['counts']}")
        print("          CPU per message   : " + ", ".join(f"{who} {seconds / imp['messages'] * 1e3:.2f} ms"
                                                           for who, seconds in imp["cpu"].items()))
    if (line := backend_ratio(rates, 28)) is not None:
        print(line)


def report_medians(rounds: list) -> None:
    """Each ratio's median over the rounds, every round's ratio taken within that round."""
    per_round = [rates_of(base, results) for base, _, results in rounds]
    print(f"-- medians of {len(rounds)} rounds")
    for label in per_round[0][1]:
        ratios = [rates[label] / base_rate for base_rate, rates in per_round]
        print(f"{'import ' + label + ' / baseline':<28}: {statistics.median(ratios):.2f}x "
              f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)}; aim >= {AIM:.2f})")
    both = [rates for _, rates in per_round if "SQLite" in rates and "PostgreSQL" in rates]
    if both:
        ratios = [rates["PostgreSQL"] / rates["SQLite"] for rates in both]
        print(f"{'PostgreSQL / SQLite':<28}: {statistics.median(ratios):.2f}x "
              f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)}; aim >= {AIM:.2f})")


@contextlib.contextmanager
def throwaway_database(target: str):
    """A SQLite path passes through; a PostgreSQL server URL gets a fresh database, dropped after."""
    if "://" not in target:
        yield target
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(target, isolation_level="AUTOCOMMIT")
    name = f"inboxcrm_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
