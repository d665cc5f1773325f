"""``inboxcrm run``: the wiring that keeps every IMAP mailbox synced, and nothing else.

The work itself is ``sync.sync_mailbox`` (what ``poll`` runs too) and the outbox's and
notifications' own functions; this module decides when they run. APScheduler 3.x holds one
interval job per mailbox, with one instance at a time, so a slow pass is never overtaken by
the next. Where the server has IDLE, a watcher thread per mailbox holds a second connection
on the inbox and runs the mailbox's job the moment the server announces mail, so a message is
on record within seconds instead of a poll interval. That makes two connections per account,
Gmail's polite limit (it allows 15, shared with the user's own clients).

Errors back off exponentially with jitter, per mailbox, so a dead server is not hammered and
many mailboxes failing together (a network outage) do not retry in lockstep. Every failure is
logged at ERROR with its reason and recorded on the mailbox row by the sync, so ``status``
shows it; a failing mailbox never stops the others, because each has its own job and thread.
An OAuth2 grant the provider revoked is different: retrying cannot mend it, and asking the token
endpoint every few seconds for a dead grant only looks like abuse. It is logged at ERROR once
per failure streak, and the mailbox waits at the backoff's cap; it is tried again at once when
its token file changes (``inboxcrm mailbox authorize`` wrote a new grant) or on SIGHUP.

Several daemons may share one PostgreSQL database (see ``core.leases`` and docs/operations.md,
"Several daemons"). Each registers under its name, and on a lease tick every quarter of
``[daemon] lease_seconds`` renews its registration and its leases, then takes or gives up
mailboxes until each live daemon holds its share: a mailbox has a job and an IDLE watcher only
in the daemon holding its lease, and the notify and retention jobs run only where their leases
are held; the outbox job runs everywhere (its claims are exactly once already). The tick runs on
the main thread, never queued behind busy sync jobs (nor behind their database connections: it
has a pool of its own), and a database hiccup in it is logged and tried again at the next one:
the fences (``sync_mailbox(holder=...)``, the notify job's) are what keep a mailbox and the caps
to one writer, not the tick's timing. Still, a daemon that could not renew for as long as its
leases last stops their work (IDLE connections count against the provider's limit) until a
renewal works again.

Signals: SIGTERM (and Ctrl-C) ask the running syncs to stop after their current message, then
the scheduler shuts down and the process exits 0; SIGHUP reloads the configuration and the
list of mailboxes (positions live in the database, so nothing is lost or read twice). systemd
is told READY, STATUS, STOPPING and watchdog pings over ``$NOTIFY_SOCKET`` directly: the
protocol is one datagram of ``KEY=VALUE`` lines, not worth a dependency.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from inboxcrm.clock import utcnow
from inboxcrm.config import Config
from inboxcrm.core import leases as sharing
from inboxcrm.core.backoff import backoff_delay
from inboxcrm.errors import DaemonRefused, InboxCRMError, LeaseLost
from inboxcrm.logs import event
from inboxcrm.mail.imap import WakingEvent
from inboxcrm.mail.oauth import GrantRevoked
from inboxcrm.store import lease_queries
from inboxcrm.store.db import Session, transaction
from inboxcrm.store.mailbox_state import folder_positions, has_commands_mailbox, imap_connections

log = logging.getLogger("inboxcrm.app.daemon")

BACKOFF_BASE = 10.0  # seconds before the first retry (up to half of it less, for jitter)
MAIL_JOBS_INTERVAL = 30  # seconds between runs of the notification and outbox jobs
IDLE_TIMEOUT = 60.0  # seconds per wait_for_change call (servers drop an IDLE after 30 min)
START_SPREAD = 0.05  # seconds between mailboxes' first passes: 200 start over 10 s, not in one storm
JOIN_TIMEOUT = 10.0  # seconds to wait for a watcher thread to leave at shutdown
RETENTION_INTERVAL_HOURS = 24  # the [retention] sweep: daily, and once at start
DEFAULT_TICK = 30.0  # seconds between housekeeping rounds of the main thread without a watchdog
RETRY_SOON = 0.5  # seconds to the next lease tick after one lost races for free leases


# -- systemd ---------------------------------------------------------------------------------

class Notifier:
    """sd_notify(3) without libsystemd: ``KEY=VALUE`` lines in one datagram to ``$NOTIFY_SOCKET``.

    A path, or an abstract socket written with a leading '@'. Without the variable (not under
    systemd, or Type=simple) every call does nothing, so the daemon runs the same everywhere."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        value = environ.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + value[1:]) if value.startswith("@") else value if value.startswith("/") else None

    def __bool__(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a listener that stopped reading must not stall a sync
                sock.connect(self.address)
                sock.sendall("\n".join(assignments).encode("utf-8"))
            return True
        except OSError as exc:
            event(log, logging.WARNING, "notify-failed", reason=exc.strerror or str(exc), sent=assignments[0])
            return False


def watchdog_period(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises; None when systemd wants no pings (or wants them from another process)."""
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


# -- the daemon ------------------------------------------------------------------------------

@dataclass
class _Box:
    """One synced mailbox's moving parts. ``again`` asks a running pass for one more round:
    mail announced by IDLE while the job runs would otherwise wait for the next interval."""

    name: str
    connection: dict
    failures: int = 0
    running: bool = False
    again: threading.Event = field(default_factory=threading.Event)
    # tells the IDLE watcher to leave; wakes its wait at once instead of twice a second per watcher
    quit: threading.Event = field(default_factory=WakingEvent)
    synced: threading.Event = field(default_factory=threading.Event)  # a pass succeeded: worth an IDLE
    watcher: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The grant is revoked: set from the failure to the next success. ``grant_file`` is what the
    # token file looked like then, so a new grant written by ``mailbox authorize`` is noticed.
    revoked: bool = False
    grant_file: tuple | None = None
    closed: bool = False  # its lease is given up: no pass may start any more
    # Its last pass met the fence (the lease changed hands, maybe back to us): if the lease is
    # held at the next tick, the pass runs again then, not at the next interval.
    fenced: bool = False

    def close_if_idle(self) -> bool:
        """No pass runs and none will start: the mailbox may go to another daemon."""
        with self.lock:
            if not self.running:
                self.closed = True
            return self.closed

    def token_file(self) -> str | None:
        return self.connection.get("token_file")


def _job_id(name: str) -> str:
    return f"sync:{name}"


# run-once jobs by their lease: scheduler id -> resource
_LEASED_JOBS = {"notify": sharing.NOTIFY, "retention": sharing.RETENTION}


def _pid_running(pid: int) -> bool:
    """Whether a process of this host has ``pid`` (signal 0 checks without sending anything)."""
    if pid == os.getpid():
        return False  # this process before it registered: an earlier run with our pid (a container's 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class Daemon:
    """``run()`` blocks until SIGTERM or Ctrl-C and returns the exit status.

    ``reload_config`` re-reads the configuration file on SIGHUP; the database stays the one
    the daemon started with (moving it needs a restart, and the log says so). ``name``: this
    daemon's among the others (``run --id``), else ``[daemon] id``, else the host name."""

    def __init__(self, factory, config: Config, reload_config: Callable[[], Config],
                 environ: Mapping[str, str] = os.environ, notifier: Notifier | None = None,
                 name: str | None = None):
        self.factory, self.config, self.reload_config = factory, config, reload_config
        self.host = socket.gethostname()
        self.name = name or config.daemon.id or sharing.name_from_host(self.host)
        self.pid = os.getpid()
        self.holder: sharing.Holder | None = None  # this process's registration, once registered
        self._ticks = factory  # the lease statements' own pool, from registration (lease_queries.own_pool)
        self._alone = False  # SQLite: no other daemon can take what this one holds
        self._renewed = 0.0  # time.monotonic() at the start of the last renewal that worked
        self._dropped_unrenewed = False  # the work was stopped for want of renewals (logged once)
        self.held: set[str] = set()  # the leases held, as of the last tick
        self._held_mailboxes: set[str] = set()  # their mailboxes' names
        self._leaving: dict[str, _Box] = {}  # mailboxes given up while a pass still ran
        self._jobs_running: set[str] = set()
        self._jobs_again: set[str] = set()  # asked for while running: one more round when it ends
        self._jobs_asked: set[str] = set()  # asked for and not started yet: asking again adds nothing
        self._next_tick = 0.0  # time.monotonic() of the next lease tick
        self._tick_soon = False  # a pass lost its lease: look at once
        self._short = False  # the last tick lost races for free leases: the next comes soon
        self._registered = False
        self.exit_status = 0
        self.environ = environ
        self.notifier = notifier if notifier is not None else Notifier(environ)
        self.stop = threading.Event()
        self.boxes: dict[str, _Box] = {}
        self._wake = threading.Event()
        self._active = threading.Condition()  # jobs running now, so shutdown can wait for them
        self._running = 0
        self._reload = False
        self._idle = 0  # IDLE connections open now, for the metrics
        self._idle_lock = threading.Lock()
        self.metrics = None  # the /metrics and /health endpoint, when [metrics] port is set
        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(32)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))

    # -- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            return self.serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def serve(self) -> int:
        """``run`` without the signal handlers (which only the main thread may set): the main
        loop, until ``stop`` is set and ``_wake`` rings."""
        self.start()
        period = watchdog_period(self.environ)
        try:
            while not self.stop.is_set():
                self._wake.wait(min(period or DEFAULT_TICK, max(0.0, self._next_tick - time.monotonic())))
                self._wake.clear()
                if self._reload and not self.stop.is_set():
                    self._reload = False
                    self.reload()
                if not self.stop.is_set() and (self._tick_soon or time.monotonic() >= self._next_tick):
                    self._lease_tick()
                self._retry_renewed_grants()
                if period and self.scheduler.running:  # a dead scheduler earns no ping: systemd restarts us
                    self.notifier.send("WATCHDOG=1")
        finally:  # whatever escaped: the passes end and the leases go, so the others take over at once
            self.shutdown()
        return self.exit_status

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Only flags: the main loop does the work, outside the signal handler."""
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self.stop.set()
        self._wake.set()

    def start(self) -> None:
        self._register()
        if self.config.metrics.port is not None:
            from inboxcrm.app.metrics import MetricsServer

            self.metrics = MetricsServer(self.factory, self.config, self.config.metrics.host, self.config.metrics.port,
                                         idle_connections=lambda: self._idle).start()
        self.scheduler.start()
        self.scheduler.add_job(self._outbox_job, IntervalTrigger(seconds=MAIL_JOBS_INTERVAL), id="outbox",
                               name="outbox", next_run_time=utcnow())
        self._lease_tick()
        event(log, logging.INFO, "started", mailboxes=len(self.boxes), poll_interval=self.config.sync.poll_interval,
              idle=self.config.sync.idle, daemon=self.name, lease_seconds=self.config.daemon.lease_seconds)
        self._tell_deprecations()
        self._tell_command_proof()
        self.notifier.send("READY=1", f"STATUS={self.describe()}", f"MAINPID={os.getpid()}")

    def _tell_deprecations(self) -> None:
        for line in self.config.deprecations:
            event(log, logging.WARNING, "config-deprecated", detail=line)

    def _tell_command_proof(self) -> None:
        """What a command email must prove, where the admin looks when deals change unexpectedly;
        loud when forged mail could get through or only token-bearing mail can."""
        commands, address = self.config.commands, self.config.commands.address
        with self.factory() as session:
            if not address and not has_commands_mailbox(session):
                return  # commands by email are off
        event(log, logging.INFO, "commands-proof", proof=commands.proof, rule=commands.describe())
        if commands.proof == "address-only":
            event(log, logging.WARNING, "commands-address-only", rule=commands.describe(),
                  action='anyone who writes a rep\'s address in From can change deals; remove [commands] proof '
                         '(the default "auth-or-token") unless every path to the command address is trusted')
        if not commands.trusted_authserv_ids:
            event(log, logging.WARNING, "commands-unauthenticated", command_address=address,
                  rule=commands.describe(), action="no receiving server is trusted, so no DMARC verdict is read and "
                  "forged mail cannot be recognised as such; set [commands] trusted_authserv_ids to the team's "
                  "receiving server's authserv-id")

    def shutdown(self) -> None:
        """The running passes see ``stop`` and end after their current message; then we go."""
        event(log, logging.INFO, "stopping", mailboxes=len(self.boxes))
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the current messages")
        self.stop.set()
        for box in self.boxes.values():
            box.quit.set()
        # Pause, wait for the running jobs ourselves, then shut down: APScheduler's shutdown
        # holds the job store lock while it waits, and a job finishing meanwhile that touches
        # its schedule (a failure's backoff) would wait for that lock for ever.
        self.scheduler.pause()
        with self._active:
            self._active.wait_for(lambda: self._running == 0)
        self.scheduler.shutdown(wait=True)
        for box in [*self.boxes.values(), *self._leaving.values()]:
            if box.watcher is not None:
                box.watcher.join(JOIN_TIMEOUT)
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        self._unregister()
        lease_queries.close_own_pool(self._ticks, self.factory)
        self._ticks = self.factory
        event(log, logging.INFO, "stopped")

    def reload(self) -> None:
        """SIGHUP: the new configuration and mailbox list; a broken file keeps the old one."""
        try:
            config = self.reload_config()
        except InboxCRMError as exc:
            event(log, logging.ERROR, "reload-failed", reason=str(exc), kept="the previous configuration")
            return
        if config.database != self.config.database:
            event(log, logging.WARNING, "reload-database-ignored",
                  reason="the database changed; restart the daemon to use the new one")
        interval_changed = config.sync.poll_interval != self.config.sync.poll_interval
        self.config = config
        if interval_changed:
            for box in self.boxes.values():
                self.scheduler.reschedule_job(_job_id(box.name), trigger=self._trigger())
        self._lease_tick()  # a mailbox added is shared out now, not at the next tick
        for box in list(self.boxes.values()):
            if box.revoked:  # the admin may have re-authorized it: SIGHUP is the way to say "now"
                self._retry_now(box)
        event(log, logging.INFO, "reloaded", mailboxes=len(self.boxes), poll_interval=config.sync.poll_interval)
        self._tell_deprecations()
        self._tell_command_proof()  # [commands] proof may have changed with the file
        self.notifier.send(f"STATUS={self.describe()}")

    def describe(self) -> str:
        failing = sorted(b.name for b in self.boxes.values() if b.failures)
        text = f"syncing {len(self.boxes)} mailbox{'es' if len(self.boxes) != 1 else ''}"
        return text + (f"; FAILING: {', '.join(failing)}" if failing else "")

    # -- mailboxes ----------------------------------------------------------------------

    def _trigger(self) -> IntervalTrigger:
        return IntervalTrigger(seconds=self.config.sync.poll_interval)

    def _apply_mailboxes(self, connections: Mapping[str, dict]) -> None:
        """Makes the jobs and watchers match the database and the leases held: new mailboxes
        start, removed or given up ones stop, and a mailbox whose connection changed gets a new
        watcher. ``connections``: every IMAP mailbox's settings, by name, as the tick read them."""
        wanted = {name: connection for name, connection in connections.items() if name in self._held_mailboxes}
        for name in [n for n in self.boxes if n not in wanted or wanted[n] != self.boxes[n].connection]:
            self._drop_box(name)
            event(log, logging.INFO, "mailbox-removed" if name not in wanted else "mailbox-changed", mailbox=name)
        new = 0  # mailboxes added in this call, for their first passes' spread
        for name, connection in wanted.items():
            if name in self.boxes and self.boxes[name].fenced:
                self.boxes[name].fenced = False
                self.trigger(name)
            if name in self.boxes or self._still_leaving(name):
                continue
            box = self.boxes[name] = _Box(name, connection)
            self.scheduler.add_job(self._sync_job, self._trigger(), args=(name,), id=_job_id(name), name=name,
                                   next_run_time=utcnow() + timedelta(seconds=new * START_SPREAD))
            new += 1
            if self.config.sync.idle:
                box.watcher = threading.Thread(target=self._watch, args=(box,), name=f"idle:{name}", daemon=True)
                box.watcher.start()
            event(log, logging.INFO, "mailbox-added", mailbox=name, host=connection.get("host"))

    def _drop_box(self, name: str) -> None:
        """No more passes or IDLE for the mailbox; a pass running now ends on its own (at the fence
        if the lease is gone) and is waited for before the mailbox can start here again."""
        box = self.boxes.pop(name)
        box.quit.set()
        if self.scheduler.get_job(_job_id(name)) is not None:
            self.scheduler.remove_job(_job_id(name))
        if not box.close_if_idle():
            self._leaving[name] = box

    def _still_leaving(self, name: str) -> bool:
        """A pass of the mailbox from before it was dropped still runs: two at once would race."""
        box = self._leaving.get(name)
        if box is not None and box.close_if_idle():
            del self._leaving[name]
            return False
        return box is not None

    def trigger(self, name: str) -> None:
        """Run the mailbox's pass now; if one is running, it goes round once more."""
        box = self.boxes.get(name)
        if box is None:
            return
        with box.lock:
            box.again.set()
            if box.running:
                return
        job = self.scheduler.get_job(_job_id(name))
        if job is not None:
            job.modify(next_run_time=utcnow())

    @contextmanager
    def _job(self) -> Iterator[None]:
        with self._active:
            self._running += 1
        try:
            yield
        finally:
            with self._active:
                self._running -= 1
                self._active.notify_all()

    def _sync_job(self, name: str) -> None:
        with self._job():
            self._sync(name)

    def _sync(self, name: str) -> None:
        from inboxcrm.app.sync import sync_mailbox

        box = self.boxes.get(name)
        if box is None:
            return
        with box.lock:
            if box.closed:
                return
            box.running = True
        try:
            while not self.stop.is_set():
                box.again.clear()
                try:
                    report = sync_mailbox(self.factory, self.config, name, stop=self.stop, environ=self.environ,
                                          holder=self.holder, lease_ttl=self._lease_ttl())
                except LeaseLost as exc:
                    event(log, logging.INFO, "lease-lost", mailbox=name, daemon=self.name, reason=str(exc))
                    box.fenced = True
                    self._tick_soon = True  # stop its job and watcher now, not at the next tick
                    self._wake.set()
                    return
                except Exception as exc:  # noqa: BLE001 - one mailbox's failure must not reach the others
                    self._failed(box, exc)
                    return
                self._succeeded(box, report)
                with box.lock:  # decided and ended under one lock: a trigger now sees it ended
                    if not box.again.is_set():
                        box.running = False
                        return
        finally:
            with box.lock:
                box.running = False

    def _succeeded(self, box: _Box, report) -> None:
        box.revoked, box.grant_file = False, None
        box.synced.set()
        if box.failures:
            event(log, logging.WARNING, "sync-recovered", mailbox=box.name, after_failures=box.failures)
            box.failures = 0
            self.notifier.send(f"STATUS={self.describe()}")
        for folder in report.folders:
            level = logging.INFO if folder.fetched or folder.resynced else logging.DEBUG
            event(log, level, "synced", mailbox=box.name, folder=folder.folder, fetched=folder.fetched,
                  resynced=folder.resynced or None,
                  **{f"status_{status}": n for status, n in sorted(folder.counts.items())})
        if report.total:
            self._run_now("notify")  # a new lead's nudge goes out now, not at the next 30 s tick
        if any(folder.counts.get("command") or folder.counts.get("refused") for folder in report.folders):
            self._run_now("outbox")  # the answer to a command email, while the rep still looks

    def _run_now(self, job_id: str) -> None:
        """A job asked for while it runs goes round once more when it ends, and one asked for again
        before it starts (waiting for a thread of the pool, busy with passes) is not asked twice:
        APScheduler would skip the run (one instance at a time) and log a warning for each of
        hundreds of passes."""
        with self._active:
            if job_id in self._jobs_running:
                self._jobs_again.add(job_id)
                return
            if job_id in self._jobs_asked:
                return
            job = self.scheduler.get_job(job_id)
            if job is None or self.stop.is_set():
                return
            self._jobs_asked.add(job_id)
        job.modify(next_run_time=utcnow())

    def _failed(self, box: _Box, exc: BaseException) -> None:
        box.failures += 1
        if isinstance(exc, GrantRevoked):
            delay = self._grant_revoked(box, exc)
        else:
            delay = backoff_delay(box.failures, self.config.sync.max_backoff, BACKOFF_BASE)
            event(log, logging.ERROR, "sync-failed", mailbox=box.name, failures=box.failures,
                  stage=getattr(exc, "stage", None), reason=_reason(exc), retry_in=f"{delay:.0f}s")
        job = self.scheduler.get_job(_job_id(box.name))
        if job is not None and not self.stop.is_set():
            job.modify(next_run_time=utcnow() + timedelta(seconds=delay))
        self.notifier.send(f"STATUS={self.describe()}")

    def _grant_revoked(self, box: _Box, exc: GrantRevoked) -> float:
        """Loud once per streak, then quiet: the backoff's cap between tries (the sync queued the
        admin's alert). The IDLE watcher stops too: its login would fail just the same."""
        from inboxcrm.app.sync import revoked_grant_text

        delay = float(self.config.sync.max_backoff)
        if not box.revoked:
            event(log, logging.ERROR, "grant-revoked", mailbox=box.name, failures=box.failures,
                  reason=revoked_grant_text(box.name), detail=exc.detail, retry_in=f"{delay:.0f}s")
        else:
            event(log, logging.DEBUG, "grant-still-revoked", mailbox=box.name, failures=box.failures,
                  retry_in=f"{delay:.0f}s")
        box.revoked, box.grant_file = True, _file_stamp(box.token_file())
        box.synced.clear()
        return delay

    def _retry_renewed_grants(self) -> None:
        """A revoked mailbox whose token file changed since (a new grant) is tried at once."""
        for box in list(self.boxes.values()):
            if box.revoked and _file_stamp(box.token_file()) != box.grant_file:
                event(log, logging.INFO, "grant-renewed", mailbox=box.name, file=box.token_file())
                self._retry_now(box)

    def _retry_now(self, box: _Box) -> None:
        box.grant_file = _file_stamp(box.token_file())  # one retry per change, whatever it finds
        job = self.scheduler.get_job(_job_id(box.name))
        if job is not None and not self.stop.is_set():
            job.modify(next_run_time=utcnow())

    # -- IDLE ---------------------------------------------------------------------------

    def _watch(self, box: _Box) -> None:
        """Holds an IDLE on the mailbox's inbox and triggers its job on every change.

        Reconnects with backoff when the connection drops; leaves for good when the server
        has no IDLE (the interval job still polls) or when told to quit."""
        from inboxcrm.mail import imap

        failures, watched_before = 0, False
        while not box.quit.is_set() and not self.stop.is_set():
            # Only after a pass worked: a mailbox that cannot log in would fail twice as often,
            # and servers slow down every login from an address with failures (Dovecot does).
            # A revoked grant clears ``synced``, so the watcher waits here for the next success.
            while not box.synced.wait(1.0):
                if box.quit.is_set() or self.stop.is_set():
                    return
            try:
                settings = imap.ImapSettings.from_json(box.connection)
                client = imap.connect(settings, self.environ, what=f"mailbox {box.name}")
                try:
                    if not imap.supports_idle(client):
                        event(log, logging.INFO, "idle-unavailable", mailbox=box.name,
                              reason="the server has no IDLE; polling", poll_interval=self.config.sync.poll_interval)
                        return
                    folders = imap.resolve_folders(client, settings)
                    watched = next((f for f in folders if f.role == "\\Inbox"), folders[0])
                    folder, known = watched.name, watched.uidnext
                    event(log, logging.INFO, "idle-watching", mailbox=box.name, folder=folder)
                    # mail that came while the connection was down, or since the pass before the
                    # first connection: IDLE announces only what comes after it
                    if watched_before or self._missed_before_idle(box.name, watched):
                        self.trigger(box.name)
                    failures, watched_before = 0, True
                    self._count_idle(+1)
                    try:
                        self._idle_loop(box, client, folder, known)
                    finally:
                        self._count_idle(-1)
                finally:
                    imap.close(client)
            except GrantRevoked:
                box.synced.clear()  # wait for a pass that works; the job says why, loudly, and
                if not box.revoked:  # owns the retries
                    self.trigger(box.name)
            except Exception as exc:  # noqa: BLE001 - the watcher outlives any one connection
                if box.quit.is_set():
                    return
                failures += 1
                delay = backoff_delay(failures, self.config.sync.max_backoff, BACKOFF_BASE)
                event(log, logging.WARNING, "idle-failed", mailbox=box.name, failures=failures,
                      stage=getattr(exc, "stage", None), reason=_reason(exc), retry_in=f"{delay:.0f}s")
                box.quit.wait(delay)

    def _missed_before_idle(self, name: str, watched) -> bool:
        """The folder changed since the last completed pass over it (the sync's own rule)."""
        from inboxcrm.app.importer import resolve_mailbox
        from inboxcrm.app.sync import unchanged

        with self.factory() as session:
            position = folder_positions(session, resolve_mailbox(session, name).id).get(watched.name)
        return not unchanged(position, watched)

    def _idle_loop(self, box: _Box, client, folder: str, known: int | None) -> None:
        from inboxcrm.mail import imap

        while not box.quit.is_set() and box.synced.is_set():
            # ``known``: mail that arrives between two IDLEs is seen by the next one
            if imap.wait_for_change(client, folder, IDLE_TIMEOUT, box.quit, known_uidnext=known):
                known = imap.examine(client, folder).uidnext
                event(log, logging.DEBUG, "idle-change", mailbox=box.name, folder=folder, uidnext=known)
                if not box.revoked:  # new mail does not mend a grant: no refresh per message
                    self.trigger(box.name)

    def _count_idle(self, step: int) -> None:
        with self._idle_lock:
            self._idle += step

    # -- outgoing mail ------------------------------------------------------------------

    def _notify_job(self) -> None:
        def run() -> None:
            from inboxcrm.app.notify import enqueue_due
            from inboxcrm.app.review import enqueue_due_reviews

            fence = self._job_fence(sharing.NOTIFY)
            now = utcnow()
            queued = enqueue_due(self.factory, self.config, now, stop=self.stop, fence=fence)
            queued += enqueue_due_reviews(self.factory, self.config, now, stop=self.stop,  # managers' weekly review
                                          fence=fence)
            if queued:
                self._run_now("outbox")

        self._guarded("notify", run)

    def _outbox_job(self) -> None:
        def run() -> None:
            from inboxcrm.app.outbox import send_due

            send_due(self.factory, self.config, utcnow(), environ=self.environ)

        self._guarded("outbox", run)

    def _retention_job(self) -> None:
        def run() -> None:
            from inboxcrm.app.forget import run_retention

            self._job_fence(sharing.RETENTION)  # an idempotent sweep: only not to run it twice at once
            dropped = run_retention(self.factory, self.config, utcnow())  # what "retention run" does
            if dropped:
                event(log, logging.INFO, "retention", dropped_raw=dropped)

        self._guarded("retention", run)

    def _job_fence(self, resource: str) -> Callable[[Session], None] | None:
        """For a run of a leased job: raises LeaseLost now if this process does not hold
        ``resource``, else returns the fence its transactions call last, just before their
        commit (``lease_queries.hold`` with the lease as it is now, so one that changed hands
        since fails too; it locks the lease row until the commit). None for a
        daemon not registered (a test driving the jobs by hand): no lease, as with ``poll``."""
        if self.holder is None:
            return None
        with self.factory() as session:
            since = lease_queries.acquired(session, resource, self.holder)
        return lambda session: lease_queries.hold(session, resource, self.holder, self._lease_ttl(), since)

    def _guarded(self, job: str, fn: Callable[[], Any]) -> None:
        leased = _LEASED_JOBS.get(job)
        with self._active:
            self._jobs_asked.discard(job)  # a request from now on is one more round
            self._jobs_running.add(job)
        try:
            with self._job():
                while True:
                    fn()
                    with self._active:  # "running" ends under the lock that _run_now reads it under
                        if job not in self._jobs_again or self.stop.is_set() or (leased and leased not in self.held):
                            self._jobs_running.discard(job)
                            break
                        self._jobs_again.discard(job)
        except LeaseLost as exc:  # another daemon runs it now: its next run is there, not here
            event(log, logging.INFO, "lease-lost", job=job, daemon=self.name, reason=str(exc))
            self._tick_soon = True
            self._wake.set()
        except Exception as exc:  # noqa: BLE001 - a job that fails runs again at its next interval
            event(log, logging.ERROR, "job-failed", job=job, reason=_reason(exc))
        finally:
            with self._active:
                self._jobs_running.discard(job)
                self._jobs_again.discard(job)

    # -- sharing the work with other daemons --------------------------------------------

    def _lease_ttl(self) -> float:
        """How long a renewal holds: half the lease time, renewed every quarter of it."""
        return self.config.daemon.lease_seconds / 2

    def _register(self) -> None:
        """Refuses the start (DaemonRefused) when another live daemon has our name, or on SQLite
        when any other daemon is alive."""
        if self._ticks is self.factory:
            self._ticks = lease_queries.own_pool(self.factory, self._lease_ttl())
        with transaction(self._ticks) as session:
            now = lease_queries.db_now(session)
            seen = [sharing.Seen(d.name, d.host, d.pid, d.seen_at, d.expires_at)
                    for d in lease_queries.daemons(session)]
            self._alone = lease_queries.one_daemon_only(session)
            why = sharing.refusal(self.name, self.host, seen, now, self._alone, _pid_running)
            if why is not None:
                raise DaemonRefused(why)
            replacing = next((row for row in seen if row.name == self.name), None)
            self.holder = lease_queries.register(session, self.name, self.host, self.pid, now, self._lease_ttl(),
                                                 replacing)
        self._registered = True
        self._renewed = time.monotonic()
        event(log, logging.INFO, "registered", daemon=self.name, host=self.host, pid=self.pid)

    def _unregister(self) -> None:
        if not self._registered:
            return
        try:
            with transaction(self._ticks) as session:
                lease_queries.unregister(session, self.holder)
            self._registered = False
            self.held = set()
        except Exception as exc:  # noqa: BLE001 - the leases expire on their own; stopping must not fail
            event(log, logging.ERROR, "unregister-failed", daemon=self.name, reason=_reason(exc),
                  action=f"the others take over within {self._lease_ttl():.0f} s, when the leases expire")

    def _lease_tick(self) -> None:
        """Renew, rebalance, then make the jobs match the leases held. Never raises: a failed
        tick is logged, the work goes on as it was (until the leases it holds have run out), and
        the next tick tries again."""
        self._tick_soon = self._short = False
        began = time.monotonic()
        try:
            self.held, connections = self._share_out()
        except _NameTaken as exc:
            event(log, logging.ERROR, "daemon-name-taken", daemon=self.name, reason=str(exc),
                  action="stopping: two processes with one name would both think they hold its mailboxes")
            self.held, self._registered, self.exit_status = set(), False, 1
            self.stop.set()
            return
        except Exception as exc:  # noqa: BLE001 - the database is down or busy: keep working, retry
            event(log, logging.ERROR, "lease-tick-failed", daemon=self.name, reason=_reason(exc),
                  retry_in=f"{self.config.daemon.lease_seconds / 4:.0f}s")
            self._drop_unrenewed()
            self._next_tick = time.monotonic() + self.config.daemon.lease_seconds / 4
            return
        self._renewed = began
        if self._dropped_unrenewed:
            self._dropped_unrenewed = False
            event(log, logging.WARNING, "leases-renewed", daemon=self.name, held=len(self.held),
                  action="the work of the leases held starts again")
        try:
            self._apply_mailboxes(connections)
            self._apply_jobs()
        except Exception as exc:  # noqa: BLE001 - a scheduler or thread hiccup: the next tick applies again
            event(log, logging.ERROR, "lease-apply-failed", daemon=self.name, reason=_reason(exc))
        # Counted from the end, so the next renewal comes within L/4 of this tick's end; a tick that
        # took long (a loaded machine, many takes, jobs and watchers to start) renews once more now.
        period = self.config.daemon.lease_seconds / 4
        if time.monotonic() - began > period / 2:
            self._renew()
        self._next_tick = time.monotonic() + (RETRY_SOON if self._short else period)

    def _drop_unrenewed(self) -> None:
        """Not renewed for as long as a renewal lasts: the leases have expired (or will before
        the next tick), and another daemon may be working the mailboxes and jobs by now. Their
        work stops here until a renewal works again (the fences already refuse its writes; this
        also frees the IDLE connections and stops the notify loop). Not on SQLite, where no other
        daemon can take them."""
        if self._alone or time.monotonic() - self._renewed <= self._lease_ttl():
            return
        if not self._dropped_unrenewed:
            self._dropped_unrenewed = True
            event(log, logging.WARNING, "leases-expired-locally", daemon=self.name, mailboxes=len(self.boxes),
                  jobs=" ".join(sorted(r for r in self.held if r in sharing.JOBS)) or None,
                  reason=f"no renewal worked for {time.monotonic() - self._renewed:.0f} s",
                  action="their work stops until a renewal works again")
        for name in list(self.boxes):
            self._drop_box(name)
        self.held, self._held_mailboxes = set(), set()
        try:
            self._apply_jobs()
        except Exception as exc:  # noqa: BLE001 - the leased jobs' own fences still hold
            event(log, logging.ERROR, "lease-apply-failed", daemon=self.name, reason=_reason(exc))

    def _renew(self) -> None:
        began = time.monotonic()
        try:
            with transaction(self._ticks) as session:
                now = lease_queries.db_now(session)
                if lease_queries.renew_daemon(session, self.holder, now, self._lease_ttl()):
                    lease_queries.renew_held(session, self.name, now, self._lease_ttl())
                    self._renewed = began
        except Exception as exc:  # noqa: BLE001 - the next tick renews, or says why it cannot
            event(log, logging.WARNING, "lease-renew-failed", daemon=self.name, reason=_reason(exc))

    def _share_out(self) -> tuple[set[str], dict[str, dict]]:
        """One round with the database: renew ours, read who is alive and who holds what, give
        up the excess, take our share. Returns the resources held now, and every IMAP mailbox's
        connection settings by name (read in the same transaction: no second round trip)."""
        ttl = self._lease_ttl()
        with transaction(self._ticks) as session:
            now = lease_queries.db_now(session)
            if not lease_queries.renew_daemon(session, self.holder, now, ttl):
                self._register_again(session, now, ttl)
            lease_queries.renew_held(session, self.name, now, ttl)
            live = [d.name for d in lease_queries.daemons(session) if d.expires_at > now]
            current = {lease.resource: sharing.Held(lease.holder, lease.expires_at)
                       for lease in lease_queries.leases(session)}
            mailboxes = lease_queries.mailbox_resources(session)
            connections = imap_connections(session)
        names = {sharing.mailbox_resource(mailbox_id): name for mailbox_id, name in mailboxes.items()}
        plan = sharing.plan([*names, *sharing.JOBS], live, current, self.name, now, self._busy(names))
        given_up = [r for r in plan.release if self._let_go(r, names)]
        if given_up:
            with transaction(self._ticks) as session:
                lease_queries.release(session, given_up, self.name)
            event(log, logging.INFO, "leases-released", daemon=self.name, resources=" ".join(given_up))
        taken: list[str] = []
        for want in plan.take:  # a transaction per pool: its locks are held for the shortest time
            candidates = [(r, int(r.removeprefix(sharing.MAILBOX)) if r in names else None) for r in want.candidates]
            with transaction(self._ticks) as session:
                got = lease_queries.take(session, candidates, want.count, self.name, lease_queries.db_now(session), ttl)
            taken += got
            if len(got) < want.count and len(got) < len(candidates):
                self._short = True  # lost races: the rest may still be free, try again in a moment
        if taken:
            event(log, logging.INFO, "leases-taken", daemon=self.name, resources=" ".join(taken), live=len(live))
        held = (set(plan.keep) | set(plan.release) | set(taken)) - set(given_up)
        self._held_mailboxes = {names[r] for r in held if r in names}
        return held, connections

    def _register_again(self, session: Session, now, ttl: float) -> None:
        """Our row is gone. Another process with our name has it: we stop. Deleted (by hand, to
        evict this daemon?): we come back, loudly, under a new registration, so the passes still
        running under the old one end at their fence."""
        if lease_queries.name_taken(session, self.name):
            raise _NameTaken(f'another process registered as daemon "{self.name}" after this one '
                             f"stopped renewing its registration")
        try:
            self.holder = lease_queries.register(session, self.name, self.host, self.pid, now, ttl)
        except DaemonRefused as exc:
            raise _NameTaken(str(exc)) from None
        event(log, logging.WARNING, "daemon-registered-again", daemon=self.name, host=self.host, pid=self.pid,
              reason="its row in the daemons table was deleted while it ran",
              action="to stop a daemon, send it SIGTERM (or stop its service): deleting its row does not")

    def _busy(self, names: Mapping[str, str]) -> set[str]:
        running = {box.name for box in self.boxes.values() if box.running}
        with self._active:
            jobs = {_LEASED_JOBS[job] for job in self._jobs_running if job in _LEASED_JOBS}
        return {r for r, name in names.items() if name in running} | jobs

    def _let_go(self, resource: str, names: Mapping[str, str]) -> bool:
        """Stops the work under ``resource`` so its lease can go; False when work is running
        (the lease stays until the next tick)."""
        for job, leased in _LEASED_JOBS.items():
            if leased == resource:
                with self._active:
                    if job in self._jobs_running:
                        return False
                if self.scheduler.get_job(job) is not None:
                    self.scheduler.remove_job(job)
                return True
        name = names.get(resource)
        box = self.boxes.get(name) if name is not None else None
        if box is not None:
            if not box.close_if_idle():
                return False
            self._drop_box(name)
            event(log, logging.INFO, "mailbox-handed-over", mailbox=name, daemon=self.name)
        return True

    def _apply_jobs(self) -> None:
        """The run-once jobs where their leases are held: added (and run at once) when taken,
        removed when lost."""
        jobs = {"notify": (self._notify_job, IntervalTrigger(seconds=MAIL_JOBS_INTERVAL)),
                "retention": (self._retention_job, IntervalTrigger(hours=RETENTION_INTERVAL_HOURS))}
        for job, (fn, trigger) in jobs.items():
            scheduled = self.scheduler.get_job(job) is not None
            if _LEASED_JOBS[job] in self.held and not scheduled and not self.stop.is_set():
                self.scheduler.add_job(fn, trigger, id=job, name=job, next_run_time=utcnow())
            elif _LEASED_JOBS[job] not in self.held and scheduled:
                self.scheduler.remove_job(job)


class _NameTaken(Exception):
    """Our registration row belongs to another process now."""


def _file_stamp(path: str | None) -> tuple | None:
    """What changes when a file is rewritten (``write_token_file`` renames a new file in)."""
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _reason(exc: BaseException) -> str:
    """The user-facing message of our own errors; the type too for anything unexpected."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, InboxCRMError) else f"{type(exc).__name__}: {text}"
