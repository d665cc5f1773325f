"""Benchmark: one ``inboxcrm run`` daemon keeping hundreds of IMAP mailboxes current with IDLE.

Starts a private Dovecot (tests/dovecot.py, real TLS verified against a private CA) with one user
per mailbox (INBOX and Sent each, a little history in both), then for a baseline daemon watching
a few mailboxes and for the daemon under test watching all of them, each a real ``python -m
inboxcrm run`` subprocess on a fresh database, measures in turn:
  watched   seconds from start until the /metrics IDLE gauge counts every mailbox; then peak RSS
            (VmHWM, children's added), RSS, threads and open sockets of the process
  idle      CPU seconds (utime + stime, children's included) the daemon spends over --idle-seconds
            with no mail, per minute, and the logins Dovecot saw meanwhile
  delivery  APPEND --rate messages a second for --deliver-seconds to random INBOXes; the time from
            each APPEND's OK until its messages row is visible in the database (p50/p95/max)
  reconnect restart Dovecot (SIGTERM, the sessions go, start again); seconds until the IDLE gauge
            is back to every mailbox, seconds until a message APPENDed right after the restart to
            each of --after-restart mailboxes is on record, and Dovecot's logins per second meanwhile
Prints a table with the per-mailbox cost (figure minus baseline, over the added mailboxes).

    python bench/idle_bench.py [--mailboxes 200] [--baseline 10] [--idle-seconds 60] [--rate 5]
        [--deliver-seconds 60] [--after-restart 20] [--poll-interval S] [--postgres [URL]]
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree's code, without installing
sys.path.insert(0, str(ROOT / "bench"))

from imap_bench import percentile
from import_bench import TEAM, throwaway_database

HISTORY = 10  # messages already in each INBOX (and half as many in Sent): the first pass reads them
WATCH_TIMEOUT = 600.0  # seconds for every IDLE to be up; longer means something is broken
RECORD_TIMEOUT = 180.0  # seconds for a delivered message to be on record
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGIN = re.compile(r"^\w{3} +\d+ (\d\d:\d\d:\d\d) imap-login: Info: Login: ")


@dataclass
class Figures:
    """What one daemon run measured; None where a phase did not finish."""

    label: str
    mailboxes: int
    start_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    children_peak_rss_mb: float = 0.0
    rss_mb: float = 0.0
    threads: int = 0
    sockets: int = 0
    idle_cpu_per_min: float = 0.0
    idle_logins_per_min: float = 0.0
    latencies: list[float] = field(default_factory=list)
    undelivered: int = 0
    delivery_cpu_per_min: float = 0.0
    reconnect_cpu: float = 0.0
    reconnect_idle_seconds: float | None = None
    reconnect_record_seconds: float | None = None
    reconnect_peak_logins: int = 0
    reconnect_login_seconds: int = 0
    stop_seconds: float = 0.0
    warnings: collections.Counter = field(default_factory=collections.Counter)


# -- mail ------------------------------------------------------------------------------------

def lead(tag: str, rep: str) -> tuple[str, bytes]:
    """(Message-ID, bytes) of a new prospect's first message to ``rep``."""
    mid = f"{tag}@bench.example"
    return mid, (f"From: Person {tag} <p-{tag}@company-{tag}.example>\r\nTo: {rep}@{TEAM}\r\n"
                 f"Subject: Quote for {tag}\r\nDate: {format_datetime(datetime.now(UTC))}\r\n"
                 f"Message-ID: <{mid}>\r\n\r\nHello, a quote for 20 seats please.\r\n").encode()


def history(user: str) -> tuple[list[bytes], list[bytes]]:
    """A week of INBOX and Sent mail for one mailbox, so the first pass has something to read."""
    start = datetime.now(UTC) - timedelta(days=7)
    inbox, sent = [], []
    for i in range(HISTORY):
        when = format_datetime(start + timedelta(hours=9 * i))
        inbox.append((f"From: Old {i} <old{i}@firm-{user}-{i}.example>\r\nTo: {user}@{TEAM}\r\nSubject: Hello {i}\r\n"
                      f"Date: {when}\r\nMessage-ID: <h{i}-{user}@bench.example>\r\n\r\nHi there.\r\n").encode())
        if i % 2 == 0:
            sent.append((f"From: {user} <{user}@{TEAM}>\r\nTo: old{i}@firm-{user}-{i}.example\r\nSubject: Re: Hello {i}"
                         f"\r\nDate: {when}\r\nIn-Reply-To: <h{i}-{user}@bench.example>\r\n"
                         f"Message-ID: <s{i}-{user}@bench.example>\r\n\r\nThanks.\r\n").encode())
    return inbox, sent


def fill(server, users: list) -> None:
    def one(user) -> None:
        inbox, sent = history(user.name)
        server.append(user, "INBOX", inbox)
        server.append(user, "Sent", sent)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, users))


# -- the daemon ------------------------------------------------------------------------------

def prepare(url: str, server, users: list) -> None:
    """Reps and one capture mailbox per user, each read by the daemon over IMAP."""
    from inboxcrm.app import team
    from inboxcrm.store.db import make_engine, session_factory, transaction, upgrade

    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    with transaction(session_factory(engine)) as s:
        for user in users:
            team.add_rep(s, now, "bench", user.name, [f"{user.name}@{TEAM}"])
            team.add_mailbox(s, now, "bench", user.name, user.name, "capture", None, "create",
                             connection=server.connection(user))
    engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``python -m inboxcrm run`` as an operator starts it, with /metrics on a loopback port."""

    def __init__(self, work: Path, label: str, url: str, poll_interval: int | None):
        self.port = free_port()
        config = work / f"{label}.toml"
        text = f'[team]\ndomains = ["{TEAM}"]\n\n[metrics]\nport = {self.port}\n'
        if poll_interval is not None:
            text += f"\n[sync]\npoll_interval = {poll_interval}\n"
        config.write_text(text)
        self.log_path = work / f"{label}.log"
        env = dict(os.environ, INBOXCRM_LOG_LEVEL="INFO", PYTHONPATH=str(ROOT))
        env.pop("INBOXCRM_CONFIG", None)
        env.pop("INBOXCRM_DATABASE_URL", None)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "inboxcrm", "--config", str(config),
                                             "--database-url", url, "run"], env=env, cwd=work,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.pid = self.process.pid

    def idle_connections(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        found = re.search(r"^inboxcrm_idle_connections (\S+)$", text, re.M)
        return int(float(found.group(1))) if found else None

    def wait_watching(self, count: int, timeout: float = WATCH_TIMEOUT) -> float:
        """Seconds until the IDLE gauge reads ``count``."""
        t0 = time.monotonic()
        while self.idle_connections() != count:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.process.returncode}): {self.log()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.idle_connections()} of {count} IDLE connections after {timeout:.0f} s")
            time.sleep(0.25)
        return time.monotonic() - t0

    def status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def children(self) -> list[int]:
        found = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                found += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return found

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon and of its children (live and waited for)."""
        total = 0
        for pid in [self.pid, *self.children()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / CLK_TCK

    def sockets(self) -> int:
        count = 0
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except OSError:
                pass
        return count

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_rewatching(self, count: int, log_mark: int, timeout: float) -> float | None:
        """Seconds until ``count`` mailboxes logged a new IDLE since ``log_mark`` (the gauge alone
        cannot tell: it counts a dead connection until its watcher notices), or None."""
        t0 = time.monotonic()
        while len(set(re.findall(r"event=idle-watching mailbox=(\S+)", self.log()[log_mark:]))) < count:
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.1)
        return time.monotonic() - t0

    def stop(self) -> float:
        t0 = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - t0


# -- measuring -------------------------------------------------------------------------------

class Recorder:
    """Watches the messages table for Message-IDs delivered, noting when each becomes visible."""

    def __init__(self, url: str):
        from sqlalchemy import select

        from inboxcrm.store.db import make_engine
        from inboxcrm.store.models import Message

        self.engine = make_engine(url)
        self.select, self.column = select, Message.message_id
        self.appended: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def appended_at(self, mid: str, when: float) -> None:
        with self.lock:
            self.appended[mid] = when

    def poll(self) -> None:
        with self.lock:
            waiting = [m for m in self.appended if m not in self.seen]
        if not waiting:
            return
        with self.engine.connect() as conn:
            found = conn.execute(self.select(self.column).where(self.column.in_(waiting))).scalars().all()
        now = time.monotonic()
        for mid in found:
            self.seen[mid] = now

    def wait(self, mids: list[str], timeout: float, step: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if all(m in self.seen for m in mids):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(step)

    def latencies(self, mids: list[str]) -> list[float]:
        return [self.seen[m] - self.appended[m] for m in mids if m in self.seen and m in self.appended]


def deliver(server, recorder: Recorder, user, tag: str) -> str:
    mid, data = lead(tag, user.name)
    with server.client(user) as client:
        client.append("INBOX", data)
    recorder.appended_at(mid, time.monotonic())
    return mid


def steady_deliveries(server, recorder: Recorder, users: list, rate: float, seconds: float, run: str) -> list[str]:
    """APPENDs at ``rate`` a second to random INBOXes, while the recorder watches the database."""
    rng = random.Random(16)
    total = round(rate * seconds)
    mids: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        t0 = time.monotonic()
        futures = []
        for i in range(total):
            while time.monotonic() < t0 + i / rate:
                recorder.poll()
                time.sleep(min(0.1, max(0.0, t0 + i / rate - time.monotonic())))
            futures.append(pool.submit(deliver, server, recorder, rng.choice(users), f"{run}-d{i}"))
        mids = [f.result() for f in futures]
    return mids


def logins_by_second(log_text: str) -> collections.Counter:
    return collections.Counter(m.group(1) for m in map(LOGIN.match, log_text.splitlines()) if m)


def measure(server, work: Path, label: str, url: str, users: list, args) -> Figures:
    figures = Figures(label, len(users))
    daemon = Daemon(work, label.replace(" ", "-"), url, args.poll_interval)
    recorder = Recorder(url)
    try:
        figures.start_seconds = daemon.wait_watching(len(users))
        time.sleep(args.settle)  # the first passes finish; their peak is in VmHWM already
        status = daemon.status()
        figures.peak_rss_mb = int(status["VmHWM"].split()[0]) / 1024
        figures.rss_mb = int(status["VmRSS"].split()[0]) / 1024
        figures.threads = int(status["Threads"])
        figures.sockets = daemon.sockets()
        figures.children_peak_rss_mb = sum(int(Path(f"/proc/{c}/status").read_text().split("VmHWM:")[1].split()[0])
                                           for c in daemon.children()) / 1024
        print(f"  {label}: {len(users)} watched after {figures.start_seconds:.1f} s; idle for {args.idle_seconds:.0f} s",
              flush=True)

        log_mark = len(server.log())
        cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, t1 = daemon.cpu_seconds(), time.monotonic()
        figures.idle_cpu_per_min = (cpu1 - cpu0) / (t1 - t0) * 60
        figures.idle_logins_per_min = sum(logins_by_second(server.log()[log_mark:]).values()) / (t1 - t0) * 60

        print(f"  {label}: delivering {args.rate:g}/s for {args.deliver_seconds:.0f} s", flush=True)
        cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
        mids = steady_deliveries(server, recorder, users, args.rate, args.deliver_seconds, label.replace(" ", ""))
        recorder.wait(mids, RECORD_TIMEOUT)
        figures.delivery_cpu_per_min = (daemon.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 60
        figures.latencies = recorder.latencies(mids)
        figures.undelivered = len(mids) - len(figures.latencies)

        print(f"  {label}: restarting Dovecot", flush=True)
        log_mark, daemon_mark = len(server.log()), len(daemon.log())
        cpu0 = daemon.cpu_seconds()
        server.restart()
        up = time.monotonic()
        targets = random.Random(2).sample(users, min(args.after_restart, len(users)))
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(lambda u: deliver(server, recorder, u, f"{label.replace(' ', '')}-r{u.name}"),
                                  targets))
        own = collections.Counter(time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - t)))
                                  for t in (recorder.appended[m] for m in after))
        back = daemon.wait_rewatching(len(users), daemon_mark, args.reconnect_timeout)
        figures.reconnect_idle_seconds = None if back is None else time.monotonic() - up
        if recorder.wait(after, args.reconnect_timeout):
            figures.reconnect_record_seconds = max(recorder.seen[m] for m in after) - up
        figures.reconnect_cpu = daemon.cpu_seconds() - cpu0
        by_second = logins_by_second(server.log()[log_mark:])
        by_second.subtract(own)  # our own APPENDs' logins are not the daemon's
        by_second = +by_second
        figures.reconnect_peak_logins = max(by_second.values(), default=0)
        figures.reconnect_login_seconds = len(by_second)
    finally:
        figures.stop_seconds = daemon.stop()
        recorder.engine.dispose()
    for event in re.findall(r"level=(?:warning|error) event=(\S+)", daemon.log()):
        figures.warnings[event] += 1
    if "Traceback" in daemon.log():
        print(f"  {label}: the daemon's log has a traceback: {daemon.log_path}", flush=True)
    return figures


# -- the table -------------------------------------------------------------------------------

ROWS = [  # (label, how to read it from Figures, format, per mailbox: show (full - base) / added)
    ("start -> all IDLE up (s)", lambda f: f.start_seconds, "{:.1f}", True),
    ("peak RSS, daemon (MB)", lambda f: f.peak_rss_mb, "{:.0f}", True),
    ("peak RSS, its children (MB)", lambda f: f.children_peak_rss_mb, "{:.0f}", False),
    ("RSS once watching (MB)", lambda f: f.rss_mb, "{:.0f}", True),
    ("threads", lambda f: f.threads, "{:.0f}", True),
    ("sockets", lambda f: f.sockets, "{:.0f}", True),
    ("CPU s per idle minute", lambda f: f.idle_cpu_per_min, "{:.2f}", True),
    ("Dovecot logins per idle minute", lambda f: f.idle_logins_per_min, "{:.0f}", True),
    ("CPU s per minute of deliveries", lambda f: f.delivery_cpu_per_min, "{:.2f}", False),
    ("delivery -> record p50 (s)", lambda f: percentile(f.latencies, 50), "{:.2f}", False),
    ("delivery -> record p95 (s)", lambda f: percentile(f.latencies, 95), "{:.2f}", False),
    ("delivery -> record max (s)", lambda f: max(f.latencies, default=float("nan")), "{:.2f}", False),
    ("deliveries not on record", lambda f: f.undelivered, "{:.0f}", False),
    ("restart -> all IDLE back (s)", lambda f: f.reconnect_idle_seconds, "{:.1f}", False),
    ("restart -> mail after it on record (s)", lambda f: f.reconnect_record_seconds, "{:.1f}", False),
    ("CPU s from restart to all back", lambda f: f.reconnect_cpu, "{:.1f}", False),
    ("reconnect: peak logins in one second", lambda f: f.reconnect_peak_logins, "{:.0f}", False),
    ("reconnect: seconds with logins", lambda f: f.reconnect_login_seconds, "{:.0f}", False),
    ("SIGTERM -> exit (s)", lambda f: f.stop_seconds, "{:.1f}", False),
]


def table(base: Figures, full: Figures) -> str:
    added = full.mailboxes - base.mailboxes
    head = f"{'':40} {base.label:>14} {full.label:>14} {'ratio':>7} {'per added mailbox':>18}"
    lines = [head, "-" * len(head)]
    for label, read, fmt, per_mailbox in ROWS:
        b, f = read(base), read(full)
        show = lambda v: "-" if v is None else fmt.format(v)  # noqa: E731
        ratio = f"{f / b:.1f}x" if b and f is not None and b == b and f == f else ""
        each = f"{(f - b) / added:.3f}" if per_mailbox and added and b is not None and f is not None else ""
        lines.append(f"{label:40} {show(b):>14} {show(f):>14} {ratio:>7} {each:>18}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=10, help="mailboxes of the baseline daemon")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0, help="deliveries a second")
    parser.add_argument("--deliver-seconds", type=float, default=60.0)
    parser.add_argument("--after-restart", type=int, default=20, help="mailboxes sent one message after the restart")
    parser.add_argument("--reconnect-timeout", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after all IDLE are up, before measuring")
    parser.add_argument("--poll-interval", type=int, help="[sync] poll_interval (default: inboxcrm's)")
    parser.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="also run both daemons on a throw-away database on this PostgreSQL server (default: %(const)s)")
    args = parser.parse_args()
    if not 0 < args.baseline < args.mailboxes:
        parser.error(f"--baseline {args.baseline}: expected 1 to {args.mailboxes - 1} (below --mailboxes)")

    from tests.certs import make_tls_files
    from tests.dovecot import Dovecot

    work = Path(tempfile.mkdtemp(prefix="inboxcrm-idle-bench-"))
    server = Dovecot(make_tls_files(work / "tls"))
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    results: list[tuple[str, Figures, Figures]] = []
    try:
        server.start()
        for backend, target in backends:
            runs = []
            for size in (args.baseline, args.mailboxes):
                # fresh users per daemon: a run never reads the mail delivered during another
                users = [server.add_user(f"{backend[0].lower()}{size}u{i:03d}", "bench-password") for i in range(size)]
                t0 = time.perf_counter()
                fill(server, users)
                print(f"{backend}: {size} mailboxes with {HISTORY} + {HISTORY // 2} messages each in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
                with throwaway_database(target or str(work / f"{backend}-{size}.db")) as url:
                    url = url if "://" in url else f"sqlite:///{url}"
                    prepare(url, server, users)
                    runs.append(measure(server, work, f"{size} mailboxes", url, users, args))
            results.append((backend, *runs))
    finally:
        if server.log_path.exists():
            (work / "dovecot.log").write_text(server.log())
        server.close()
    inotify = (work / "dovecot.log").read_text().count("Inotify instance limit") if (work / "dovecot.log").exists() else 0
    interval = args.poll_interval or "default"
    print(f"\none daemon, IDLE on each INBOX; [sync] poll_interval {interval}; {args.rate:g} deliveries/s for "
          f"{args.deliver_seconds:.0f} s; {args.after_restart} mailboxes sent mail right after the restart; "
          f"{os.cpu_count()} CPUs")
    for backend, base, full in results:
        print(f"\n{backend}\n{table(base, full)}")
        for figures in (base, full):
            if figures.warnings:
                print(f"  warnings/errors logged by the {figures.label} daemon: {dict(figures.warnings)}")
    if inotify:
        print(f"\nDovecot ran out of inotify instances {inotify} times (fs.inotify.max_user_instances): those "
              f"sessions notice mail by looking every mailbox_idle_check_interval instead")
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
