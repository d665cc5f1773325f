"""The moving parts of tests/test_daemon_chaos.py: daemon processes that can be killed, mail that
keeps arriving, and what the database says about who works which mailbox.

Kept apart from the scenario so that the test reads as what a team relies on, and so that a
benchmark or a longer soak run can drive the same parts with other numbers.
"""
from __future__ import annotations

import os
import random
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

from sqlalchemy import func, select

from inboxcrm.store.models import Daemon, Lease

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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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
