"""The moving parts of tests/test_daemon_chaos.py: daemon processes that can be killed, mail that
keeps arriving, and what the database says about who works which mailbox.

Kept apart from the scenario so that the test reads as what a team relies on, and so that a
benchmark or a longer soak run can drive the same parts with other numbers.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import func, select, text

from inboxcrm.store.models import Daemon, FolderPosition, Lease

ROOT = Path(__file__).resolve().parent.parent


def inboxcrm_command() -> list[str]:
    """The installed ``inboxcrm`` script beside this Python, as an admin starts it; the module
    where the script is not installed (a checkout run without ``pip install -e``)."""
    script = Path(sys.executable).parent / "inboxcrm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "inboxcrm"]


# -- daemons ----------------------------------------------------------------------------------------

@dataclass
class DaemonProcess:
    """One incarnation of ``inboxcrm run --id NAME``; its stderr goes to its own file, so the
    log of a daemon killed ten restarts ago is still there to read when something fails."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, then reaped: from here on ``alive`` is False, as it is for the machine."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its pid, its sockets and any open transaction but runs
        nothing, as a paused VM or a process stuck in swap; ``thaw`` lets it go on where it was."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, since: int = 0) -> list[dict[str, str]]:
        """The log's events from character ``since`` on (``len(log())`` at some moment), as
        key -> value, ``at`` the line's time: what the daemon did after that moment, in order."""
        return [parse_event(line) for line in self.log()[since:].splitlines() if " event=" in line]

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Cluster:
    """Every daemon process the test started, on one config file and one database."""

    def __init__(self, folder: Path, config: Path, database_url: str):
        self.folder, self.config, self.database_url = folder, config, database_url
        self.started: list[DaemonProcess] = []
        self.env = dict(os.environ, INBOXCRM_LOG_LEVEL="INFO", PYTHONPATH=str(ROOT))
        for name in ("INBOXCRM_CONFIG", "INBOXCRM_DATABASE_URL", "NOTIFY_SOCKET", "WATCHDOG_USEC"):
            self.env.pop(name, None)

    def start(self, name: str) -> DaemonProcess:
        incarnation = sum(d.name == name for d in self.started) + 1
        log_path = self.folder / f"{name}.{incarnation}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*inboxcrm_command(), "--config", str(self.config), "--database-url", self.database_url,
                 "run", "--id", name], env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.started.append(DaemonProcess(name, process, log_path))
        return self.started[-1]

    def live(self) -> list[DaemonProcess]:
        return [d for d in self.started if d.alive]

    def terminate(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM to every live daemon at once, as a host shutting down; name -> exit status
        (None: still running after ``timeout``, then killed)."""
        live = self.live()
        for daemon in live:
            daemon.process.send_signal(signal.SIGTERM)
        deadline, codes = time.monotonic() + timeout, {}
        for daemon in live:
            try:
                codes[daemon.name] = daemon.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[daemon.name] = None
                daemon.kill()
        return codes

    def kill_all(self) -> None:
        for daemon in self.started:
            daemon.kill()

    def tails(self, lines: int = 25) -> str:
        """The end of the log of each live daemon and of each one that logged an error: what to
        read first when the test fails."""
        shown = [d for d in self.started
                 if d.alive or "level=error" in (log := d.log()) or "Traceback" in log][-12:]
        return "\n".join(f"--- {d.log_path.name} (pid {d.pid}, {'alive' if d.alive else 'gone'}) ---\n{d.tail(lines)}"
                         for d in shown)

    def keep_logs(self, where: Path) -> None:
        """Copies every log out of pytest's temporary folder, for a failure in CI."""
        where.mkdir(parents=True, exist_ok=True)
        for daemon in self.started:
            shutil.copy(daemon.log_path, where / daemon.log_path.name)


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_event(line: str) -> dict[str, str]:
    """One logfmt line of inboxcrm.logs: its key=value pairs (quotes undone), ``at`` its time."""
    stamp, _, rest = line.partition(" ")
    pairs = {key: value[1:-1].replace('\\"', '"') if value.startswith('"') else value
             for key, value in _PAIR.findall(rest)}
    return {"at": stamp, **pairs}


# -- what a process has open in PostgreSQL -----------------------------------------------------------

def client_ports(pid: int) -> set[int]:
    """The local TCP ports of ``pid``'s sockets (Linux /proc): pg_stat_activity.client_port tells
    which PostgreSQL backends serve that process, even while it is stopped."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass(frozen=True)
class Backend:
    """A PostgreSQL backend serving one process: its transaction (``xid`` once it wrote), what it
    does, and the tables it has written in that transaction."""

    pid: int
    xid: int | None
    state: str
    waiting: bool  # on a lock
    query: str
    written: frozenset[str]


def backends(session, ports: set[int]) -> list[Backend]:
    rows = session.execute(text(
        "SELECT a.pid, a.backend_xid::text::bigint, a.state, a.wait_event_type = 'Lock', a.query,"
        "  array(SELECT c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        "        WHERE l.pid = a.pid AND l.mode = 'RowExclusiveLock' AND l.granted)"
        " FROM pg_stat_activity a WHERE a.datname = current_database() AND a.client_port = ANY(:ports)"),
        {"ports": sorted(ports)})
    return [Backend(pid, xid, state or "", bool(waiting), query or "", frozenset(written))
            for pid, xid, state, waiting, query, written in rows]


def transaction_status(session, xid: int) -> str:
    """"in progress", "committed" or "aborted": the fate of a transaction seen open earlier (the
    32-bit xid made whole with the current epoch, as nothing here runs four billion transactions)."""
    return session.scalar(text(
        "SELECT txid_status(((pg_snapshot_xmax(pg_current_snapshot())::text::bigint >> 32) << 32) + :xid)"),
        {"xid": xid})


class PositionWatch:
    """Reads every folder position every 50 ms in a thread of its own, and keeps each move
    backwards: what a writer that lost its mailbox leaves when it commits anyway."""

    def __init__(self, factory):
        self.factory, self.samples = factory, 0
        self.backwards: list[str] = []
        self.errors: list[str] = []
        self._last: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="positions", daemon=True)

    def __enter__(self) -> PositionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                with self.factory() as session:
                    rows = session.execute(select(FolderPosition.mailbox_id, FolderPosition.folder,
                                                  FolderPosition.last_uid)).all()
            except Exception as exc:  # noqa: BLE001 - reported by the test, which fails on any
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            self.samples += 1
            for mailbox, folder, last in rows:
                before = self._last.get((mailbox, folder), 0)
                if (last or 0) < before:
                    self.backwards.append(f"mailbox {mailbox} {folder}: last_uid {before} -> {last} "
                                          f"at {datetime.now(UTC):%H:%M:%S.%f}")
                self._last[(mailbox, folder)] = max(before, last or 0)


# -- who works which mailbox -----------------------------------------------------------------------

@dataclass(frozen=True)
class Holding:
    """The leases on mailboxes as the database has them at one moment."""

    mailboxes: frozenset[int]
    covered: dict[int, str]  # mailbox id -> name of the live daemon working it
    why: dict[int, str]  # mailbox id -> why it is not worked now, for the ones that are not
    alive: frozenset[str]  # daemons registered (row unexpired) whose process is ours and running

    @property
    def uncovered(self) -> set[int]:
        return set(self.mailboxes) - set(self.covered)

    def per_daemon(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for holder in self.covered.values():
            counts[holder] = counts.get(holder, 0) + 1
        return counts

    def describe(self) -> str:
        """The mailboxes not worked now and why, grouped: "3: d2's lease expired 0.4 s ago"."""
        reasons: dict[str, list[int]] = {}
        for mailbox in sorted(self.uncovered):
            reasons.setdefault(self.why.get(mailbox, "no lease"), []).append(mailbox)
        return "; ".join(f"{len(boxes)} ({' '.join(map(str, boxes))}): {why}" for why, boxes in reasons.items())


def holding(session, mailbox_ids: frozenset[int], live: list[DaemonProcess]) -> Holding:
    """A mailbox counts as worked when its lease is unexpired, held by a daemon whose row is
    unexpired, and that row names a process of ours that is running. Times on the database's
    clock, as the daemons read it."""
    now = session.scalar(select(func.clock_timestamp()))
    running = {(d.name, d.pid) for d in live}
    rows = session.execute(
        select(Lease.mailbox_id, Lease.holder, Lease.expires_at, Daemon.pid, Daemon.expires_at)
        .join(Daemon, Daemon.name == Lease.holder, isouter=True)
        .where(Lease.mailbox_id.is_not(None)))
    alive = frozenset(name for name, pid, row_end in session.execute(select(Daemon.name, Daemon.pid, Daemon.expires_at))
                      if row_end > now and (name, pid) in running)
    covered, why = {}, {}
    for mailbox, holder, lease_end, pid, row_end in rows:
        if lease_end <= now:
            why[mailbox] = f"{holder}'s lease expired {(now - lease_end).total_seconds():.1f} s ago"
        elif row_end is None or row_end <= now:
            why[mailbox] = f"{holder}'s lease runs, its daemon row expired or is gone"
        elif (holder, pid) not in running:
            why[mailbox] = f"{holder}'s lease runs {(lease_end - now).total_seconds():.1f} s more, pid {pid} is dead"
        else:
            covered[mailbox] = holder
    return Holding(mailbox_ids, covered, why, alive)


@dataclass
class Takeover:
    """The seconds from one SIGKILL until every mailbox was worked again, and how it went: each
    change in the set of mailboxes not worked, with why, for the report when it is slow."""

    victim: str
    seconds: float = float("inf")  # not within the time watched
    steps: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"kill of {self.victim}: {self.seconds:.2f} s\n    " + "\n    ".join(self.steps)


def watch_takeover(held: Callable[[], Holding], timeout: float, killed_at: float, victim: str) -> Takeover:
    """Polls ``held()`` every 50 ms from the kill (``time.monotonic()``) until every mailbox is
    worked again or ``timeout`` seconds have passed."""
    took, last = Takeover(victim), None
    while time.monotonic() - killed_at < timeout:
        now = held()
        elapsed = time.monotonic() - killed_at
        if now.uncovered != last:
            last = now.uncovered
            took.steps.append(f"+{elapsed:.2f} s: {now.describe() or 'all worked'} {now.per_daemon()}")
        if not now.uncovered:
            took.seconds = elapsed
            break
        time.sleep(0.05)
    return took


# -- mail that keeps arriving ----------------------------------------------------------------------

def message(message_id: str, sender: str, to: str, subject: str, body: str, replying_to: str | None = None) -> bytes:
    thread = f"In-Reply-To: <{replying_to}>\r\nReferences: <{replying_to}>\r\n" if replying_to else ""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {format_datetime(datetime.now(UTC))}\r\n"
            f"Message-ID: <{message_id}>\r\n{thread}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8"
            f"\r\n\r\n{body}\r\n").encode()


@dataclass
class Prospect:
    number: int
    user: str  # the Dovecot user whose INBOX got the first message: the mailbox that made the lead
    first: str  # the first message's Message-ID

    @property
    def address(self) -> str:
        return f"buyer{self.number}@firm{self.number}.example"

    @property
    def header(self) -> str:
        return f"Buyer {self.number} <{self.address}>"


@dataclass
class Mailflow:
    """Mail delivered to random users' INBOX until stopped, one APPEND at a time: new prospects
    (each must become one lead), their follow-ups and their rep's replies in the same thread,
    some of them also delivered to a second mailbox (a Cc: one message, two copies).

    A thread goes on only once its first message is on record, as a real reply comes after the
    rep saw the first mail; so "one deal per prospect" holds whatever order the daemons work in.
    ``recorded(ids)`` says which of ``ids`` the database holds."""

    dovecot: object
    users: dict[str, object]  # Dovecot user name -> User
    rep_of: dict[str, str]  # Dovecot user name -> the address of the rep owning its mailbox
    recorded: Callable[[list[str]], set[str]]
    rng: random.Random
    pause: tuple[float, float] = (0.05, 0.25)
    delivered: dict[str, list[str]] = field(default_factory=dict)  # Message-ID -> users it went to
    prospects: list[Prospect] = field(default_factory=list)
    thread_of: dict[str, int] = field(default_factory=dict)  # Message-ID -> its prospect's number
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _clients: dict = field(default_factory=dict)  # user name -> logged-in IMAPClient

    def start(self) -> Mailflow:
        self._thread = threading.Thread(target=self._run, name="mailflow", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        waiting: list[Prospect] = []  # first message delivered, not yet on record
        ready: list[Prospect] = []
        while not self._stop.is_set():
            try:
                if waiting:
                    known = self.recorded([p.first for p in waiting])
                    ready += [p for p in waiting if p.first in known]
                    waiting = [p for p in waiting if p.first not in known]
                if not ready or self.rng.random() < 0.4:
                    waiting.append(self._new_prospect())
                else:
                    self._follow_up(self.rng.choice(ready))
            except Exception as exc:  # noqa: BLE001 - reported by the test, which fails on any
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.rng.uniform(*self.pause))
        self._close()

    def _deliver(self, prospect: Prospect, message_id: str, raw: bytes, users: list[str]) -> None:
        self.thread_of[message_id] = prospect.number
        for user in users:
            self._append(user, raw)
            self.delivered.setdefault(message_id, []).append(user)

    def _append(self, user: str, raw: bytes) -> None:
        """APPEND on a connection kept per user: a TLS login per message would cost the two CPUs
        the daemons share more than the daemons' own work does."""
        client = self._clients.get(user)
        if client is None:
            client = self._clients[user] = self.dovecot.client(self.users[user])
        client.append("INBOX", raw)

    def _close(self) -> None:
        for client in self._clients.values():
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - the server may be gone already; nothing to keep
                pass
        self._clients.clear()

    def _new_prospect(self) -> Prospect:
        number, user = len(self.prospects), self.rng.choice(sorted(self.users))
        prospect = Prospect(number, user, f"first-{number}@firm{number}.example")
        self.prospects.append(prospect)
        self._deliver(prospect, prospect.first, message(prospect.first, prospect.header, f"{user}@acme.example",
                                              f"Quote for {number + 2} seats", "Could you send us a quote?"),
                      [user])
        return prospect

    def _follow_up(self, prospect: Prospect) -> None:
        """The prospect writes again, or the rep answers; now and then a second mailbox gets it too."""
        n = len(self.delivered)
        if self.rng.random() < 0.5:
            message_id = f"again-{n}@firm{prospect.number}.example"
            raw = message(message_id, prospect.header, f"{prospect.user}@acme.example",
                          f"Re: Quote for {prospect.number + 2} seats", f"Any news? ({n})", prospect.first)
        else:
            message_id = f"answer-{n}@acme.example"
            raw = message(message_id, self.rep_of[prospect.user], prospect.header,
                          f"Re: Quote for {prospect.number + 2} seats", f"Here it is. ({n})", prospect.first)
        users = [prospect.user]
        if self.rng.random() < 0.25:
            users.append(self.rng.choice([u for u in sorted(self.users) if u != prospect.user]))
        self._deliver(prospect, message_id, raw, users)
