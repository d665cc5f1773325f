"""Benchmark: peak memory of an IMAP backfill with huge messages, against the same backfill without them.

Starts a private Dovecot (tests/dovecot.py, real TLS), loads two mailboxes with MULTIAPPEND:
  small   N - 10 generated messages (bench/import_bench.py's generator, 5% with a 1 MB attachment)
  mixed   the same messages with ten 50 MB ones among them (a 37.5 MB random PDF, base64), N in all
then, each in its own child process, measures:
  bare      a Python process that imported what ``poll`` imports, nothing else
  backfill  inboxcrm.app.sync.sync_mailbox() (what ``poll --once`` runs) of "small", then of "mixed",
            into a fresh SQLite database with the default [sync] settings
Peak RSS is read two ways: the child's own ru_maxrss (the main process), and the whole process
tree (main + parse worker) summed from /proc every 20 ms by the parent. (A child's ru_maxrss is
not used for the worker: Linux starts it at its parent's size.)
Prints figures and the ratio mixed / small (aim: under 200 MB for the tree, ratio near 1).
``--unlimited`` also backfills "mixed" with max_message_bytes above 50 MB: what the limit saves.
``--near-limit N`` adds a mailbox "near": the small messages with N messages just under the limit
(24 MB by default), which are read and parsed whole: the case the limit does not cover.

    python bench/backfill_memory_bench.py [--messages 2000] [--big 10] [--big-mb 50] [--unlimited]
                                          [--near-limit 10 [--near-limit-mb 24] [--only-near]]
                                          [--fetch-batch-bytes N]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree's code, without installing
sys.path.insert(0, str(ROOT / "bench"))

from imap_bench import bench_crm, print_phase_result
from import_bench import TEAM, generate

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def big_message(i: int, megabytes: float) -> bytes:
    """A prospect's tender with a PDF attachment that makes the message ``megabytes`` MB."""
    blob = base64.encodebytes(random.Random(i).randbytes(int(megabytes * 1024 * 1024 * 3 / 4 * 76 / 78)))
    blob = blob.replace(b"\n", b"\r\n")
    return (f"From: Buyer {i} <buyer{i}@tenders{i}.example>\r\nTo: sales@{TEAM}\r\nSubject: Tender {i}\r\n"
            f"Message-ID: <big{i}@tenders.example>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\n'
            f"Please find our tender documents attached.\r\n--BB\r\n"
            f'Content-Type: application/pdf; name="tender-{i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            ).encode() + blob + b"\r\n--BB--\r\n"


def phase_load(server_state: dict, folder: str, extra: dict[str, tuple[int, int]]) -> dict:
    """Appends in a child, so the parent (whose peak RSS every later child starts from) stays small.
    ``extra``: mailbox -> (how many large messages, their size in MB) among the generated ones."""
    import ssl

    from imapclient import IMAPClient

    from tests.dovecot import APPEND_BATCH

    files = sorted(Path(folder).iterdir())
    loaded = {}
    for user in ("small", *extra):
        count, megabytes = extra.get(user, (0, 0))
        every = max(1, len(files) // count) if count else 0
        large = 0
        client = IMAPClient("127.0.0.1", server_state["port"], ssl=True,
                            ssl_context=ssl.create_default_context(cafile=server_state["ca"]), timeout=60)
        client.login(user, server_state["password"])
        batch: list[bytes] = []
        loaded[user] = 0
        for n, path in enumerate(files):
            batch.append(path.read_bytes())
            if len(batch) >= APPEND_BATCH or n == len(files) - 1:
                client.multiappend("INBOX", [{"msg": m} for m in batch])
                loaded[user] += len(batch)
                batch = []
            if every and n % every == every // 2 and large < count:
                if batch:
                    client.multiappend("INBOX", [{"msg": m} for m in batch])
                    loaded[user] += len(batch)
                    batch = []
                client.append("INBOX", big_message(n, megabytes))
                loaded[user] += 1
                large += 1
        client.logout()
    return loaded


def phase_bare() -> dict:
    import inboxcrm.app.sync  # noqa: F401
    import inboxcrm.cli.sync  # noqa: F401 - what `inboxcrm poll` has loaded before its first message
    return {}


def phase_backfill(connection: dict, db: str, max_message_bytes: int | None, batch_bytes: int | None) -> dict:
    from sqlalchemy import func, select

    from inboxcrm.app.sync import sync_mailbox
    from inboxcrm.config import build_config
    from inboxcrm.store.models import Message

    factory = bench_crm(db, connection)
    sync = {"max_message_bytes": max_message_bytes} if max_message_bytes else {}
    sync |= {"fetch_batch_bytes": batch_bytes} if batch_bytes else {}
    config = build_config({"team": {"domains": [TEAM]}, "sync": sync}, None)
    t0 = time.perf_counter()
    report = sync_mailbox(factory, config, "sales")
    seconds = time.perf_counter() - t0
    with factory() as s:
        truncated = s.scalar(select(func.count()).select_from(Message).where(Message.truncated))
    return {"messages": report.total, "seconds": seconds, "truncated": truncated,
            "counts": {k: v for f in report.folders for k, v in f.counts.items()}}


def tree_rss_kb(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(children.get(current, []))
    return total


def run_child(args: list[str]) -> tuple[dict, dict]:
    """The child's result, and its memory in MB: its own ru_maxrss, and the peak of its tree, polled."""
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(child.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=poll)
    watcher.start()
    out, _ = child.communicate()
    done.set()
    watcher.join()
    if child.returncode:
        raise SystemExit(f"phase {args[1]} failed with exit status {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.pop("worker_peak_rss_kb")
    memory = {"main": result.pop("peak_rss_kb") / 1024, "tree": peak / 1024}
    return result, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--big", type=int, default=10, help="how many huge messages among them")
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--near-limit", type=int, default=0, metavar="N",
                        help="also backfill a mailbox with N messages just under max_message_bytes among the rest")
    parser.add_argument("--near-limit-mb", type=float, default=24.0)
    parser.add_argument("--only-near", action="store_true", help="skip the 'mixed' mailbox (with --near-limit)")
    parser.add_argument("--unlimited", action="store_true",
                        help="also backfill with max_message_bytes above the huge messages' size")
    parser.add_argument("--fetch-batch-bytes", type=int, help="[sync] fetch_batch_bytes (default: the default)")
    parser.add_argument("--phase", choices=["load", "bare", "backfill"], help=argparse.SUPPRESS)
    parser.add_argument("--arg", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--max-message-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        if args.phase == "load":
            state = json.loads(args.arg)
            result = phase_load(state, state["folder"], {k: tuple(v) for k, v in state["extra"].items()})
        elif args.phase == "bare":
            result = phase_bare()
        else:
            result = phase_backfill(json.loads(args.arg), args.db, args.max_message_bytes, args.fetch_batch_bytes)
        print_phase_result(result)
        return

    from tests.certs import make_tls_files
    from tests.dovecot import Dovecot

    work = Path(tempfile.mkdtemp(prefix="inboxcrm-memory-bench-"))
    server = Dovecot(make_tls_files(work / "tls"))
    results = []
    try:
        server.start()
        mail = work / "mail"
        mail.mkdir()
        generate(mail, args.messages - args.big, 1024)
        extra = {} if args.only_near else {"mixed": (args.big, args.big_mb)}
        extra |= {"near": (args.near_limit, args.near_limit_mb)} if args.near_limit else {}
        users = {name: server.add_user(name, "bench-password") for name in ("small", *extra)}
        t0 = time.perf_counter()
        state = {"port": server.port, "ca": str(server.tls.ca), "password": "bench-password", "folder": str(mail),
                 "extra": extra}
        loaded, _ = run_child(["--phase", "load", "--arg", json.dumps(state)])
        print(f"loaded in {time.perf_counter() - t0:.1f} s: " + ", ".join(
            f"{loaded[user]} messages into '{user}'" + (" ({} of {} MB)".format(*extra[user]) if user in extra else "")
            for user in loaded))
        _, bare = run_child(["--phase", "bare"])
        runs = [("small", "small", None)] + [(user, user, None) for user in extra]
        if args.unlimited and "mixed" in extra:
            runs.append(("mixed, no limit", "mixed", (args.big_mb + 8) * 1024 * 1024))
        for label, user, limit in runs:
            connection = json.dumps(server.connection(users[user], folders=("\\Inbox",)))
            db = work / f"{label.replace(' ', '').replace(',', '-')}.db"
            extra = ["--max-message-bytes", str(limit)] if limit else []
            extra += ["--fetch-batch-bytes", str(args.fetch_batch_bytes)] if args.fetch_batch_bytes else []
            results.append((label, *run_child(["--phase", "backfill", "--arg", connection, "--db", str(db),
                                               *extra])))
    finally:
        server.close()
    print(f"bare python + inboxcrm imports        : peak RSS {bare['main']:.0f} MB")
    small = next(memory for label, _, memory in results if label == "small")
    for label, run, memory in results:
        print(f"backfill {label:<16}             : {run['messages']} messages in {run['seconds']:.1f} s "
              f"({run['messages'] / run['seconds']:.0f} msg/s), {run['truncated']} truncated; peak RSS "
              f"{memory['tree']:.0f} MB process tree (main process {memory['main']:.0f} MB, the rest its parse "
              f"worker); {memory['tree'] / small['tree']:.2f}x the small run (main {memory['main'] / small['main']:.2f}x), "
              f"{memory['tree'] / bare['main']:.1f}x bare (aim < 200 MB)")
        print(f"          outcomes                     : {run['counts']}")
    print(f"cpu cores                              : {os.cpu_count()}")


if __name__ == "__main__":
    main()
