"""The daemon's /metrics and /health, and ``status --check``: on real databases, over real HTTP.

Known rows go into SQLite and PostgreSQL, the endpoint listens on a free loopback port, and the
scrape is parsed with prometheus_client's own parser.
"""
from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from inboxcrm.app.daemon import Daemon, Notifier
from inboxcrm.app.metrics import MetricsServer
from inboxcrm.cli import main
from inboxcrm.config import MetricsConfig, build_config
from inboxcrm.core.health import MailboxHealth, Thresholds, problems
from inboxcrm.errors import ConfigError
from inboxcrm.store.db import transaction
from inboxcrm.store.models import FolderPosition, Mailbox, Message, OutboxMessage

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _now():
    """The health rule compares with the real clock, so NOW is taken as each test starts, not as
    the module is imported: the full suite reached this file 16 minutes after collecting it, when
    a mailbox "failing for 5 minutes" had been failing for 21."""
    global NOW
    NOW = datetime.now(UTC).replace(microsecond=0)
STATUSES = {"processed": 3, "noise": 2, "quarantined": 1, "refused": 2}


def _config(**metrics):
    config = build_config({"team": {"domains": ["acme.example"]}}, None, {"HOME": "/nonexistent"})
    return replace(config, metrics=MetricsConfig(**metrics))


def _fill(factory, failing_since: datetime | None = None, outbox_failed: int = 1) -> None:
    with transaction(factory) as s:
        n = 0
        for status, count in STATUSES.items():
            for _ in range(count):
                n += 1
                s.add(Message(message_id=f"<m{n}@x>", sha256=f"{n:064d}", size=10, received_at=NOW, status=status))
        imap = {"host": "imap.example", "username": "sales"}
        sales = Mailbox(name="sales", role="capture", created_at=NOW, connection=imap, last_success_at=NOW - timedelta(minutes=5),
                        failures=3 if failing_since else 0, failing_since=failing_since)
        quiet = Mailbox(name="archive", role="capture", created_at=NOW)  # import only: no lag, no health
        s.add_all([sales, quiet])
        s.flush()
        s.add_all([FolderPosition(mailbox_id=sales.id, folder="INBOX", last_uid=40, uidnext=51, role="inbox"),
                   FolderPosition(mailbox_id=sales.id, folder="Sent", last_uid=7, uidnext=None, message_count=9)])
        rows = [("digest", "sent")] * 2 + [("digest", "pending"), ("nudge", "pending")] + [("reply", "failed")] * outbox_failed
        for i, (kind, status) in enumerate(rows):
            s.add(OutboxMessage(key=f"k{i}", kind=kind, to_address="alice@acme.example", subject="s",
                                message_id=f"<o{i}@x>", body=b"x", status=status, next_attempt_at=NOW, created_at=NOW))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def server(factory):
    started = []

    def start(config=None, idle=None):
        srv = MetricsServer(factory, config or _config(), "127.0.0.1", 0, idle_connections=idle).start()
        started.append(srv)
        return "http://%s:%d" % srv.address

    yield start
    for srv in started:
        srv.stop()


def test_a_scrape_reads_the_figures_from_the_database(factory, server):
    _fill(factory)
    base = server(idle=lambda: 4)
    status, text = _get(base + "/metrics")
    assert status == 200
    got = _samples(text)
    for state, count in STATUSES.items():
        assert got[("inboxcrm_messages", (("status", state),))] == count
    assert got[("inboxcrm_messages_quarantined", ())] == 1
    assert got[("inboxcrm_command_refusals_total", ())] == 2
    assert got[("inboxcrm_digests_sent_total", ())] == 2
    assert got[("inboxcrm_outbox_pending", ())] == 2
    assert got[("inboxcrm_outbox_failed", ())] == 1
    assert got[("inboxcrm_outbox_messages", (("kind", "reply"), ("status", "failed")))] == 1
    assert got[("inboxcrm_mailbox_backlog_messages", (("folder", "INBOX"), ("mailbox", "sales")))] == 10
    assert got[("inboxcrm_mailbox_backlog_messages", (("folder", "Sent"), ("mailbox", "sales")))] == 9
    assert got[("inboxcrm_mailbox_last_success_timestamp_seconds", (("mailbox", "sales"),))] == \
        (NOW - timedelta(minutes=5)).timestamp()
    assert got[("inboxcrm_mailbox_failures", (("mailbox", "sales"),))] == 0
    assert not any(labels == (("mailbox", "archive"),) for _, labels in got)  # import only
    assert got[("inboxcrm_idle_connections", ())] == 4
    assert got[("inboxcrm_database_up", ())] == 1
    # another scrape sees new rows: nothing is counted in the process
    with transaction(factory) as s:
        s.add(Message(message_id="<late@x>", sha256="f" * 64, size=1, received_at=NOW, status="quarantined"))
    assert _samples(_get(base + "/metrics")[1])[("inboxcrm_messages_quarantined", ())] == 2


def test_health_is_ok_then_names_each_problem(factory, server):
    base = server()
    assert _get(base + "/health") == (200, "ok\n")
    _fill(factory, failing_since=NOW - timedelta(hours=1))
    status, text = _get(base + "/health")
    assert status == 503
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("mailbox sales: failing since") and "3 failed passes" in lines[0]
    assert lines[1] == 'outbox: 1 failed (see "inboxcrm outbox list")'
    assert _get(base + "/nowhere")[0] == 404


def test_health_within_the_thresholds_is_ok(factory, server):
    _fill(factory, failing_since=NOW - timedelta(minutes=5), outbox_failed=0)
    assert _get(server() + "/health") == (200, "ok\n")


def test_the_health_rule():
    box = MailboxHealth("sales", True, NOW - timedelta(hours=3), 0, None)
    assert problems([box], {}, NOW) == ("mailbox sales: last success %s UTC (180 min ago); is the daemon running?"
                                        % f"{NOW - timedelta(hours=3):%Y-%m-%d %H:%M}",)
    assert problems([box], {}, NOW, Thresholds(stale_minutes=240)) == ()
    assert problems([replace(box, synced=False)], {"unknown": 2}, NOW) == \
        ('outbox: 2 unknown (see "inboxcrm outbox list")',)
    assert problems([box], {"failed": 1}, NOW, database="down") == ("database: down",)


def test_status_check_exit_codes(cli, factory):
    assert cli("status", "--check").output == "ok\n"
    _fill(factory, failing_since=NOW - timedelta(hours=1))
    result = cli("status", "--check", code=1)
    assert result.output.splitlines()[0].startswith("mailbox sales: failing since")
    assert result.output.splitlines()[1].startswith("outbox: 1 failed")
    assert '"healthy": false' in cli("status", "--check", "--json", code=1).output


def test_status_check_on_a_database_without_tables(tmp_path, config_file):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner(env={"INBOXCRM_CONFIG": None, "INBOXCRM_DATABASE_URL": None}).invoke(
        main, ["--config", str(config_file), "--database-url", url, "status", "--check"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("database: ") and "inboxcrm init" in result.output


def test_the_daemon_starts_and_stops_the_endpoint(factory):
    _fill(factory)
    with socket.socket() as probe:  # a free port: [metrics] port takes 1-65535, not 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _config(port=port)
    daemon = Daemon(factory, config, lambda: config, environ={}, notifier=Notifier({}))
    daemon.start()
    try:
        got = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1])
        assert got[("inboxcrm_idle_connections", ())] == 0
        assert got[("inboxcrm_messages", (("status", "processed"),))] == 3
    finally:
        daemon.shutdown()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_no_port_no_endpoint(factory):
    config = _config()
    daemon = Daemon(factory, config, lambda: config, environ={}, notifier=Notifier({}))
    daemon.start()
    try:
        assert daemon.metrics is None
    finally:
        daemon.shutdown()


def test_a_non_loopback_host_needs_allow_remote():
    env = {"HOME": "/nonexistent"}
    with pytest.raises(ConfigError, match="allow_remote"):
        build_config({"metrics": {"port": 9464, "host": "0.0.0.0"}}, None, env)
    cfg = build_config({"metrics": {"port": 9464, "host": "0.0.0.0", "allow_remote": True}}, None, env)
    assert (cfg.metrics.host, cfg.metrics.port) == ("0.0.0.0", 9464)
    assert build_config({"metrics": {"host": "::1"}}, None, env).metrics.host == "::1"
    assert build_config({}, None, env).metrics == MetricsConfig()
