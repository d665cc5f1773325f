"""``inboxcrm run`` as systemd runs it: a subprocess with $NOTIFY_SOCKET, a real Dovecot, signals.

Also the pure parts: the logfmt lines, the notify protocol, and the unit file.
The daemon runs with the kernel's write-xor-execute lock on (PR_SET_MDWE, what the unit's
MemoryDenyWriteExecute=yes asks for) wherever the kernel has it, so these tests also show that
Python and every module the daemon loads live with it.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inboxcrm import logs
from inboxcrm.app.daemon import Notifier, watchdog_period
from inboxcrm.core import leases as sharing
from inboxcrm.store.db import session_factory
from inboxcrm.store.models import Deal, FolderPosition, Mailbox, Message, MessageCopy

from .conftest import mail
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "inboxcrm.service"
LEAD = mail("pipeline-new-lead-company.eml")

# -- logfmt ----------------------------------------------------------------------------------------

def _line(journal: bool = False, level=logging.ERROR, **fields) -> str:
    record = logging.LogRecord("inboxcrm.app.daemon", level, __file__, 1, "sync-failed", None, None)
    record.inboxcrm_fields = fields
    return logs.LogfmtFormatter(journal=journal).format(record)


def test_logfmt_lines_quote_what_needs_it_and_stay_one_line():
    line = _line(mailbox="sales", uid=42, reason='login: the server said "no"\nbye', folder="Sent Items", empty="")
    stamp, rest = line.split(" ", 1)
    assert datetime.fromisoformat(stamp).tzinfo is not None
    assert rest == ('level=error event=sync-failed mailbox=sales uid=42 '
                    'reason="login: the server said \\"no\\"\\nbye" folder="Sent Items" empty=""')
    assert "\n" not in line


def test_logfmt_under_journald_has_a_priority_prefix_and_no_timestamp():
    assert _line(journal=True, mailbox="x") == "<3>level=error event=sync-failed mailbox=x"
    assert _line(journal=True, level=logging.INFO).startswith("<6>level=info ")


def test_logfmt_masks_fields_named_for_secrets_and_wraps_other_libraries():
    # journal lines carry no timestamp, so two of them made a millisecond apart still compare equal
    assert _line(True, password="hunter2", client_secret="s", refresh_token="t") == \
        _line(True, password="***", client_secret="***", refresh_token="***")
    assert "hunter2" not in _line(password="hunter2")
    record = logging.LogRecord("apscheduler.scheduler", logging.WARNING, __file__, 1, "Job %s missed", ("x",), None)
    assert logs.LogfmtFormatter(journal=True).format(record) == \
        '<4>level=warning event=log logger=apscheduler.scheduler msg="Job x missed"'


def test_journal_mode_only_when_stderr_is_the_journal_stream(tmp_path):
    with open(tmp_path / "err", "w") as stream:
        stat = os.fstat(stream.fileno())
        assert logs.on_journal({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, stream)
        assert not logs.on_journal({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}, stream)
        assert not logs.on_journal({}, stream)
    assert not logs.on_journal({"JOURNAL_STREAM": "1:2"}, io.StringIO())


def test_log_level_from_the_environment_is_checked():
    assert logs.level_from({}) == "WARNING" and logs.level_from({"INBOXCRM_LOG_LEVEL": "info"}) == "INFO"
    with pytest.raises(ValueError, match="use one of DEBUG, INFO, WARNING, ERROR"):
        logs.level_from({"INBOXCRM_LOG_LEVEL": "loud"})


# -- systemd notify ------------------------------------------------------------------------------

class NotifySocket:
    """What systemd listens on: a datagram socket, at a path or in the abstract namespace, read
    all the time as systemd does (a full queue would make the sender's datagrams fail)."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(4096).decode())
            except OSError:
                return

    def wait_for(self, line: str, timeout: float = 15.0) -> list[str]:
        """Every datagram up to and including the first holding ``line``."""
        eventually(lambda: any(line in m.splitlines() for m in self.received), timeout,
                   what=f"{line} on the notify socket")
        return self.received[:next(i for i, m in enumerate(self.received) if line in m.splitlines()) + 1]

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_notifier_speaks_to_path_and_abstract_sockets(tmp_path):
    for address in (str(tmp_path / "n.sock"), f"@inboxcrm-test-{uuid.uuid4().hex}"):
        listener = NotifySocket(address)
        assert Notifier({"NOTIFY_SOCKET": address}).send("READY=1", "STATUS=syncing 2 mailboxes")
        assert listener.wait_for("READY=1") == ["READY=1\nSTATUS=syncing 2 mailboxes"]
        listener.close()
    assert not Notifier({}) and not Notifier({}).send("READY=1")
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).send("READY=1")  # logged, not raised


def test_watchdog_pings_at_half_the_timeout_for_this_process_only():
    assert watchdog_period({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({}) is None and watchdog_period({"WATCHDOG_USEC": "0"}) is None


# -- the unit file -------------------------------------------------------------------------------

def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def test_the_unit_file_is_hardened_and_runs_the_daemon_as_notify():
    keys = _unit_keys()
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "ExecStart": "/usr/local/bin/inboxcrm run",
        "ExecReload": "/bin/kill -HUP $MAINPID", "User": "inboxcrm", "StateDirectory": "inboxcrm",
        "ConfigurationDirectory": "inboxcrm", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
        "Restart": "on-failure",
    }
    assert {k: keys.get(k, [None])[0] for k in expected} == expected
    assert "@system-service" in keys["SystemCallFilter"]
    assert "INBOXCRM_CONFIG=/etc/inboxcrm/config.toml" in keys["Environment"]
    assert "DynamicUser" not in keys


def test_systemd_accepts_the_unit_file(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the keys are checked above")
    command = shutil.which("inboxcrm") or sys.executable  # verify wants an executable ExecStart
    unit = tmp_path / "inboxcrm.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/inboxcrm", command))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr.strip(), done.stdout.strip()) == (0, "", "")
    broken = tmp_path / "broken.service"  # the check is not blind: a typo is reported
    broken.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomes=yes"))
    assert "Unknown key" in subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                                            check=False).stderr


# -- the daemon as a process -----------------------------------------------------------------------

MDWE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_MDWE (65), PR_MDWE_REFUSE_EXEC_GAIN (1): no memory may become writable and executable
if {strict} and libc.prctl(65, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
from inboxcrm.cli import main
main(prog_name="inboxcrm")
"""


def _mdwe_supported() -> bool:
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, ctypes.c_ulong(1), " \
            "ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


MDWE_SUPPORTED = sys.platform == "linux" and _mdwe_supported()


class Daemon:
    """``inboxcrm run`` in a subprocess, as systemd would start it."""

    def __init__(self, tmp_path: Path, config: Path, db_url: str, notify: NotifySocket, name: str = "daemon"):
        self.log_path = tmp_path / f"{name}.log"
        env = dict(os.environ, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="1000000", INBOXCRM_LOG_LEVEL="INFO",
                   PYTHONPATH=str(ROOT))
        env.pop("INBOXCRM_CONFIG", None)
        env.pop("INBOXCRM_DATABASE_URL", None)
        self.notify = notify
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", MDWE.format(strict=MDWE_SUPPORTED), "--config", str(config),
                 "--database-url", db_url, "run"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start(tmp_path, config_file, db_url):
    """Starts daemons on the test database; kills whatever is left at the end."""
    config_file.write_text(config_file.read_text() + "\n[sync]\npoll_interval = 300\nmax_backoff = 2\n")
    started: list[Daemon] = []
    sockets: list[NotifySocket] = []

    def launch(name: str = "daemon") -> Daemon:
        notify = NotifySocket(f"@inboxcrm-test-{uuid.uuid4().hex}")
        sockets.append(notify)
        started.append(Daemon(tmp_path, config_file, db_url, notify, name))
        return started[-1]

    yield launch
    for daemon in started:
        daemon.kill()
    for notify in sockets:
        notify.close()


def eventually(check, timeout: float = 15.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.05)


def count(engine, column, *where) -> int:
    with session_factory(engine)() as session:
        return session.scalar(select(func.count(column)).where(*where))


def add_imap(cli, server, user, name: str, password_file=None, owner: str = "alice"):
    cli("mailbox", "add", name, "--role", "capture", "--owner", owner, "--host", server.host,
        "--port", str(server.port), "--ca-file", str(server.tls.ca), "--user", user.name,
        "--password-file", str(password_file or server.secret_file(user)))


def _lead(i: int) -> bytes:
    return (f"From: Person {i} <p{i}@company{i}.example>\r\nTo: sales@acme.example\r\n"
            f"Subject: Inquiry {i}\r\nDate: {datetime.now(UTC):%a, %d %b %Y %H:%M:%S +0000}\r\n"
            f"Message-ID: <lead-{i}@company{i}.example>\r\n\r\nHello, quote for {i} seats please.\r\n").encode()


def test_run_is_ready_records_new_mail_within_seconds_by_idle_and_stops_on_sigterm(team, dovecot, engine, start):
    alice = dovecot.add_user("alice", "pw")
    add_imap(team, dovecot, alice, "inbox")
    daemon = start()
    first = daemon.notify.wait_for("READY=1")
    assert "STATUS=syncing 1 mailbox" in first[-1].splitlines()
    eventually(lambda: count(engine, FolderPosition.id, FolderPosition.uidnext.is_not(None)) == 2,
               what="the first pass over INBOX and Sent")
    eventually(lambda: "event=idle-watching mailbox=inbox folder=INBOX" in daemon.log(), what="IDLE")

    sent = time.monotonic()
    dovecot.append(alice, "INBOX", [LEAD])  # poll_interval is 300 s: only IDLE can be this quick
    eventually(lambda: count(engine, Deal.id) == 1, timeout=5.0, what="a deal from the new message")
    latency = time.monotonic() - sent
    assert latency < 5.0
    daemon.notify.wait_for("WATCHDOG=1")  # WATCHDOG_USEC=1 s: a ping every 0.5 s

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    daemon.notify.wait_for("STOPPING=1", timeout=1.0)  # already queued on the socket
    log = daemon.log()
    assert "level=info event=synced mailbox=inbox folder=INBOX fetched=1 status_processed=1" in log
    assert "event=stopped" in log and "Traceback" not in log
    assert all(line.split(" ", 1)[1].startswith("level=") for line in log.splitlines())


def test_sighup_picks_up_a_mailbox_added_while_running(team, dovecot, engine, start):
    alice, bob = dovecot.add_user("alice", "pw"), dovecot.add_user("bob", "pw")
    add_imap(team, dovecot, alice, "alice-inbox")
    daemon = start()
    daemon.notify.wait_for("READY=1")
    eventually(lambda: count(engine, Mailbox.id, Mailbox.last_success_at.is_not(None)) == 1)

    dovecot.append(bob, "INBOX", [LEAD])
    add_imap(team, dovecot, bob, "bob-inbox", owner="bob")
    time.sleep(0.5)
    assert count(engine, Deal.id) == 0  # not yet: the daemon does not know the mailbox
    daemon.signal(signal.SIGHUP)
    eventually(lambda: count(engine, Deal.id) == 1, what="the new mailbox synced after SIGHUP")
    assert "event=mailbox-added mailbox=bob-inbox" in daemon.log() and "event=reloaded mailboxes=2" in daemon.log()
    eventually(lambda: count(engine, Mailbox.id, Mailbox.last_success_at.is_not(None)) == 2)
    positions = count(engine, FolderPosition.id, FolderPosition.uidnext.is_not(None))
    assert positions == 4
    daemon.signal(signal.SIGHUP)  # a second reload changes nothing and keeps every position
    eventually(lambda: daemon.log().count("event=reloaded") == 2)
    assert count(engine, FolderPosition.id, FolderPosition.uidnext.is_not(None)) == positions
    assert daemon.process.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_failing_mailbox_is_loud_and_the_other_keeps_syncing(team, dovecot, engine, start, tmp_path):
    alice, bob = dovecot.add_user("alice", "pw"), dovecot.add_user("bob", "bobs-real-pw")
    wrong = tmp_path / "wrong"
    wrong.write_text("bobs-wrong-pw\n")
    wrong.chmod(0o600)
    add_imap(team, dovecot, alice, "good")
    add_imap(team, dovecot, bob, "bad", password_file=wrong, owner="bob")
    daemon = start()
    daemon.notify.wait_for("READY=1")
    eventually(lambda: count(engine, Mailbox.id, Mailbox.name == "bad", Mailbox.failures >= 2) == 1,
               what="two failed passes of the bad mailbox")
    dovecot.append(alice, "INBOX", [LEAD])
    eventually(lambda: count(engine, Deal.id) == 1, what="the good mailbox still syncing")

    log = daemon.log()
    assert "level=error event=sync-failed mailbox=bad failures=1 stage=login reason=\"login: the server refused " \
           "user bob" in log
    assert "level=error event=sync-failed mailbox=bad failures=2 " in log
    assert "bobs-wrong-pw" not in log and "bobs-real-pw" not in log
    daemon.notify.wait_for("STATUS=syncing 2 mailboxes; FAILING: bad", timeout=1.0)
    text = team("status", code=1).stdout  # non-zero while a mailbox fails, for monitoring
    assert "bad (capture) bob@127.0.0.1" in text and "FAILING (" in text
    assert "good (capture)" in text and text.count("FAILING") == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_kill_9_mid_sync_then_restart_loses_nothing_and_duplicates_nothing(team, dovecot, engine, start):
    total = 1500
    alice = dovecot.add_user("alice", "pw")
    dovecot.append(alice, "INBOX", [_lead(i) for i in range(total)])
    add_imap(team, dovecot, alice, "inbox")
    daemon = start("first")
    eventually(lambda: count(engine, Message.id) >= 100, timeout=30.0, what="the sync under way")
    daemon.process.send_signal(signal.SIGKILL)
    daemon.wait()
    stored = count(engine, Message.id)
    assert stored < total, "the sync finished before the kill; nothing was shown"

    again = start("second")
    again.notify.wait_for("READY=1")
    eventually(lambda: count(engine, FolderPosition.id, FolderPosition.folder == "INBOX",
                             FolderPosition.uidnext == total + 1) == 1, timeout=60.0, what="the rest synced")
    assert count(engine, Message.id) == total
    assert count(engine, MessageCopy.id) == total
    assert count(engine, Deal.id) == total  # one deal per lead: none lost, none twice
    assert count(engine, Message.id, Message.status != "processed") == 0
    again.signal(signal.SIGTERM)
    assert again.wait() == 0


def _holding_notify(factory):
    """An in-process daemon as its tick leaves it when it holds the notify job's lease."""
    from inboxcrm.app.daemon import Daemon as InProcessDaemon
    from inboxcrm.config import build_config

    config = build_config({}, None)
    daemon = InProcessDaemon(factory, config, lambda: config, environ={})
    daemon.held = {sharing.NOTIFY}
    return daemon


def test_a_job_asked_for_while_it_runs_goes_round_once_more_without_a_skipped_run(factory, caplog):
    """A pass that records mail asks for the notify job at once; with hundreds of mailboxes that
    often happens while it runs. The request is kept (the new lead's nudge is not left for the
    next interval) and APScheduler never logs a skipped run."""
    daemon = _holding_notify(factory)
    runs = []

    def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:  # asked for twice while running: one more round, not two
            daemon._run_now("notify")
            daemon._run_now("notify")

    with caplog.at_level(logging.WARNING):
        daemon._guarded("notify", job)
    assert runs == [0, 1]
    assert "notify" not in daemon._jobs_running and not daemon._jobs_again
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]


def test_a_leased_job_asked_for_again_stops_when_its_lease_is_gone(factory):
    """Another daemon runs the notify job now: the round asked for is left to it."""
    daemon = _holding_notify(factory)
    runs = []

    def job() -> None:
        runs.append(len(runs))
        daemon.held = set()  # the tick found the lease gone while the run went on
        if len(runs) < 3:
            daemon._run_now("notify")

    daemon._guarded("notify", job)
    assert runs == [0] and "notify" not in daemon._jobs_running and not daemon._jobs_again


def test_a_job_asked_for_again_before_it_starts_runs_once_without_a_skipped_run(factory, caplog):
    """Passes finishing together ask for the notify job while it still waits for a thread of the
    pool (busy with passes): one run, not one "skipped" warning per pass."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    daemon = _holding_notify(factory)
    # One thread, kept busy: the notify job, once submitted, waits in the pool as it does when
    # 32 passes run.
    daemon.scheduler = BackgroundScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(1)},
                                           job_defaults={"coalesce": True, "max_instances": 1})
    busy, release, started = threading.Event(), threading.Event(), threading.Event()
    runs: list[int] = []

    def job() -> None:
        runs.append(len(runs))
        started.set()

    daemon.scheduler.start()
    try:
        daemon.scheduler.add_job(lambda: (busy.set(), release.wait(10)), id="pass", name="pass")
        assert busy.wait(10)
        daemon.scheduler.add_job(lambda: daemon._guarded("notify", job), id="notify", name="notify",
                                 trigger="interval", seconds=3600, next_run_time=None)
        with caplog.at_level(logging.WARNING):
            for _ in range(20):  # twenty passes recorded mail while the pool was busy
                daemon._run_now("notify")
                time.sleep(0.02)  # the scheduler's thread submits what each request asked for
            release.set()
            assert started.wait(10)
            time.sleep(0.3)
        assert runs == [0]
        assert not [r for r in caplog.records if "skipped" in r.getMessage()]
    finally:
        release.set()
        daemon.scheduler.shutdown(wait=True)
