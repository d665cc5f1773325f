"""The outbox against a real SMTP server on loopback: sent once, across crashes and outages."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from inboxcrm.app import outbox
from inboxcrm.app.context import context_for
from inboxcrm.app.intake import process
from inboxcrm.config import build_config
from inboxcrm.logs import LogfmtFormatter
from inboxcrm.mail import smtp, tls
from inboxcrm.store.db import transaction
from inboxcrm.store.models import Mailbox, OutboxMessage, Rep, RepAddress
from inboxcrm.store.records import mailbox_info
from inboxcrm.values import RawMessage

from .smtp_server import SmtpServer

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
TEAM = {"domains": ["acme.example"]}
ROOT = Path(__file__).resolve().parent.parent


def config(server: SmtpServer | None = None, **smtp_table):
    data = {"team": TEAM, "commands": {"address": "crm-commands@acme.example"}}
    if server is not None:
        data["smtp"] = server.config(**smtp_table)
    return build_config(data, None)


def queue(factory, key="digest:1:2026-11-23", to="alice@acme.example", when=NOW, subject="Your day") -> None:
    with transaction(factory) as s:
        assert outbox.enqueue(s, when, key=key, kind="digest", to_address=to, subject=subject,
                              text=f"Hello.\n.\nA line with a dot above. {key}", html=f"<p>Hello {key}</p>",
                              from_address="crm@acme.example", reply_to="crm-commands@acme.example")


def shown(factory, pk: int) -> outbox.OutboxDetail:
    with factory() as s:
        return outbox.show(s, pk)


def rows(factory) -> list[OutboxMessage]:
    with factory() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


@pytest.fixture
def server():
    with SmtpServer() as running:
        yield running


def test_enqueue_writes_the_whole_message_once_per_key(factory):
    queue(factory)
    with transaction(factory) as s:
        again = outbox.enqueue(s, NOW + timedelta(hours=1), key="digest:1:2026-11-23", kind="digest",
                               to_address="alice@acme.example", subject="Other", text="other",
                               from_address="crm@acme.example")
    assert again is False
    (row,) = rows(factory)
    assert (row.status, row.subject, row.attempts, row.next_attempt_at) == ("pending", "Your day", 0, NOW)
    detail = shown(factory, row.id)
    headers = dict(detail.headers)
    assert headers["Auto-Submitted"] == "auto-generated"
    assert headers["X-Auto-Response-Suppress"] == "All"
    assert headers["X-InboxCRM"] == "digest"
    assert headers["Reply-To"] == "crm-commands@acme.example"
    assert headers["Message-ID"] == row.message_id == outbox.message_id_for("digest:1:2026-11-23", "digest",
                                                                             "crm@acme.example")
    assert row.message_id.endswith("@acme.example>")
    assert "multipart/alternative" in headers["Content-Type"]
    assert "A line with a dot above" in detail.text


def test_a_subject_cannot_smuggle_in_headers(factory):
    queue(factory, subject="Hi\r\nBcc: victim@example.com")
    (row,) = rows(factory)
    headers = dict(shown(factory, row.id).headers)
    assert "Bcc" not in headers and headers["Subject"] == "Hi Bcc: victim@example.com"


def test_our_own_mail_is_noise_when_it_comes_back_through_a_mailbox(factory):
    """A digest to a rep, read back from the rep's inbox: it must never become a lead."""
    with transaction(factory) as s:
        rep = Rep(name="alice", created_at=NOW, addresses=[RepAddress(address="alice@acme.example")])
        s.add(rep)
        s.flush()
        s.add(Mailbox(name="alice", owner_rep_id=rep.id, role="rep", default_source="rep-inbox",
                      new_sender_policy="create", created_at=NOW))
        # From an outside address, so only our own header can tell that it is ours.
        outbox.enqueue(s, NOW, key="nudge:lead:7", kind="nudge", to_address="alice@acme.example",
                       subject="New lead D-7: Jane <jane@prospect.example>", text="New lead",
                       from_address="crm@crm-host.example")
    (row,) = rows(factory)
    with transaction(factory) as s:
        ctx = context_for(s, config())
        outcome = process(s, RawMessage(row.body, "test:alice:1"), mailbox_info(s, "alice"), ctx, NOW)
    assert (outcome.status, outcome.reason, outcome.deal_ref) == ("noise", "own", None)


def test_sends_due_mail_once_and_the_server_gets_it_intact(factory, server):
    queue(factory)
    queue(factory, key="digest:1:2026-11-24", when=NOW + timedelta(days=1))  # not due yet
    report = outbox.send_due(factory, config(server), NOW)
    assert report == outbox.SendReport(sent=1)
    (received,) = server.messages
    assert received.mail_from == "crm@acme.example" and received.rcpt_tos == ("alice@acme.example",)
    message = received.message
    assert message["X-InboxCRM"] == "digest" and message["Auto-Submitted"] == "auto-generated"
    assert "\n.\n" in message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # dot-stuffing undone
    first, later = rows(factory)
    assert (first.status, first.sent_at, first.attempts, later.status) == ("sent", NOW, 1, "pending")
    assert message["Message-ID"] == first.message_id
    assert outbox.send_due(factory, config(server), NOW + timedelta(minutes=5)) == outbox.SendReport()
    assert len(server.messages) == 1


def test_starttls_with_the_private_ca_and_auth_from_the_environment(factory, tls_files):
    queue(factory)
    with SmtpServer("starttls", tls_files, users={"crm": "s3cret-pw"}) as server:
        cfg = config(server, username="crm", password_env="SMTP_PASSWORD")
        report = outbox.send_due(factory, cfg, NOW, environ={"SMTP_PASSWORD": "s3cret-pw"})
    assert report.sent == 1 and server.logins == ["crm"] and len(server.messages) == 1


def test_implicit_tls(factory, tls_files):
    queue(factory)
    with SmtpServer("tls", tls_files) as server:
        assert outbox.send_due(factory, config(server), NOW).sent == 1
        assert "connected with tls, certificate verified" in smtp.check(config(server).smtp)
    assert len(server.messages) == 1


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_a_certificate_from_another_ca_is_refused_and_nothing_is_sent(factory, tls_files, mode):
    queue(factory)
    with SmtpServer(mode, tls_files) as server:
        cfg = config(server, ca_file=str(tls_files.other_ca))
        with pytest.raises(smtp.SmtpError) as refused:
            smtp.check(cfg.smtp)
        report = outbox.send_due(factory, cfg, NOW)
    assert refused.value.stage == "tls" and "certificate verification failed" in str(refused.value)
    assert f"127.0.0.1:{server.port}" in str(refused.value)
    assert report == outbox.SendReport(deferred=1) and server.messages == []
    (row,) = rows(factory)
    assert row.status == "pending" and row.attempts == 1 and "tls: certificate verification failed" in row.last_error


def test_verify_false_connects_but_says_so(factory, tls_files, caplog):
    with SmtpServer("starttls", tls_files) as server:
        cfg = config(server, ca_file=str(tls_files.other_ca), verify=False)
        assert "certificate NOT verified" in smtp.check(cfg.smtp)
    lines = [LogfmtFormatter().format(r) for r in caplog.records if r.levelname == "WARNING"]
    assert any("event=smtp-insecure" in line and "verification is off" in line for line in lines)


def test_a_wrong_password_is_an_auth_error_without_the_password(factory, tls_files):
    queue(factory)
    with SmtpServer("starttls", tls_files, users={"crm": "right-one"}) as server:
        cfg = config(server, username="crm", password_env="SMTP_PASSWORD")
        with pytest.raises(smtp.SmtpError) as refused:
            smtp.check(cfg.smtp, {"SMTP_PASSWORD": "wrong-guess"})
        outbox.send_due(factory, cfg, NOW, environ={"SMTP_PASSWORD": "wrong-guess"})
        with pytest.raises(smtp.SmtpError, match="auth: secret from env SMTP_PASSWORD: the environment variable"):
            smtp.check(cfg.smtp, {})
    assert refused.value.stage == "auth" and "wrong-guess" not in str(refused.value)
    (row,) = rows(factory)
    assert row.status == "pending" and "auth" in row.last_error and "wrong-guess" not in row.last_error


def test_plain_smtp_is_only_for_a_relay_on_this_machine():
    cfg = build_config({"smtp": {"host": "smtp.example.com", "security": "plain",
                                 "from_address": "crm@acme.example"}}, None)
    with pytest.raises(smtp.SmtpError, match='security "plain" .* only allowed for a relay on this machine'):
        smtp.connect(cfg.smtp)


@pytest.mark.parametrize("host, here", [
    ("localhost", True), ("LocalHost", True), ("localhost.localdomain", True), ("127.0.0.1", True),
    ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost.attacker.example", False), ("127.0.0.1.nip.io", False), ("10.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("smtp.example.com", False), ("", False),
])
def test_plain_text_may_go_only_to_this_machine_named_by_name_or_address(host, here):
    """The one loopback rule of SMTP and IMAP (``mail.tls``): a name is never resolved."""
    assert tls.is_loopback(host) is here


def test_an_outage_retries_with_growing_backoff_then_delivers_once(factory, server):
    queue(factory)
    cfg = config(server)
    server.stop()
    rng = __import__("random").Random(5)
    now, delays = NOW, []
    for _ in range(4):
        report = outbox.send_due(factory, cfg, now, rng=rng)
        assert report == outbox.SendReport(deferred=1)
        (row,) = rows(factory)
        assert row.status == "pending" and f"127.0.0.1:{server.port}: connect:" in row.last_error
        delays.append((row.next_attempt_at - now).total_seconds())
        assert outbox.send_due(factory, cfg, row.next_attempt_at - timedelta(seconds=1)) == outbox.SendReport()
        now = row.next_attempt_at
    for attempt, delay in enumerate(delays):  # about 1, 2, 4, 8 minutes: a third less to a third more
        assert 40 * 2 ** attempt <= delay <= 80 * 2 ** attempt
    server.start()
    assert outbox.send_due(factory, cfg, now) == outbox.SendReport(sent=1)
    assert outbox.send_due(factory, cfg, now + timedelta(hours=2)) == outbox.SendReport()
    assert len(server.messages) == 1 and rows(factory)[0].attempts == 5


def test_backoff_starts_at_about_a_minute_settles_at_about_an_hour_and_gives_up_after_about_a_day():
    class Fixed:  # the jitter's extremes and its middle
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value

    def waits(rng):
        return [outbox.backoff(n, rng) for n in range(1, outbox.MAX_ATTEMPTS)]

    least, middle, most = waits(Fixed(0.0)), waits(Fixed(0.5)), waits(Fixed(1.0))
    assert (least[0], middle[0], most[0]) == (timedelta(seconds=40), timedelta(seconds=60), timedelta(seconds=80))
    assert middle[:6] == [timedelta(minutes=m) for m in (1, 2, 4, 8, 16, 32)]
    assert set(middle[6:]) == {timedelta(hours=1)} and max(most) == timedelta(minutes=80)
    given_up_after = [sum(w, timedelta()) for w in (least, middle, most)]
    assert given_up_after == [timedelta(hours=16, minutes=2), timedelta(hours=24, minutes=3),
                              timedelta(hours=32, minutes=4)]
    waited = sum((outbox.backoff(n) for n in range(1, outbox.MAX_ATTEMPTS)), timedelta())  # the real random source
    assert timedelta(hours=18) <= waited <= timedelta(hours=30)


def test_a_transient_refusal_is_retried_and_a_permanent_one_fails_at_once(factory, server):
    queue(factory, key="a")
    server.reply = "451 Try again later"
    assert outbox.send_due(factory, config(server), NOW) == outbox.SendReport(deferred=1)
    assert rows(factory)[0].status == "pending" and "451 Try again later" in rows(factory)[0].last_error
    server.reply = "550 No such user here"
    later = NOW + timedelta(minutes=2)
    assert outbox.send_due(factory, config(server), later) == outbox.SendReport(failed=1)
    (row,) = rows(factory)
    assert row.status == "failed" and "data: 550 No such user here" in row.last_error
    with transaction(factory) as s:
        assert [r.id for r in outbox.retry(s, later, "cli:admin")] == [row.id]
    server.reply = "250 OK"
    assert outbox.send_due(factory, config(server), later).sent == 1


def test_no_smtp_server_configured_keeps_the_mail_waiting(factory, caplog):
    queue(factory)
    assert outbox.send_due(factory, config(), NOW) == outbox.SendReport(deferred=1)
    assert rows(factory)[0].status == "pending"


def test_two_senders_at_once_never_send_the_same_row(factory, server):
    for n in range(30):
        queue(factory, key=f"digest:{n}:2026-11-23", to=f"rep{n}@acme.example")
    cfg, reports = config(server), []
    threads = [threading.Thread(target=lambda: reports.append(outbox.send_due(factory, cfg, NOW))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.sent for r in reports) == 30
    ids = [m.message["Message-ID"] for m in server.messages]
    assert len(ids) == 30 == len(set(ids))
    assert {r.status for r in rows(factory)} == {"sent"}


SENDER = """
import json, sys
from datetime import datetime
from inboxcrm.config import build_config
from inboxcrm.store.db import make_engine, session_factory
from inboxcrm.app.outbox import send_due
url, table, now = sys.argv[1:]
send_due(session_factory(make_engine(url)), build_config(json.loads(table), None), datetime.fromisoformat(now))
print("marked as sent")
"""


def test_a_crash_after_the_server_took_the_message_never_sends_it_again(factory, db_url, server):
    """The sender is SIGKILLed after the data went out and before it learns of the 250."""
    queue(factory)
    queue(factory, key="digest:2:2026-11-23", to="bob@acme.example")
    victim: list[subprocess.Popen] = []

    def kill_sender(_received):
        os.kill(victim[0].pid, signal.SIGKILL)
        victim[0].wait()

    server.on_data = kill_sender
    table = json.dumps({"team": TEAM, "smtp": server.config()})
    victim.append(subprocess.Popen([sys.executable, "-c", SENDER, db_url, table, NOW.isoformat()],
                                   stdout=subprocess.PIPE, cwd=ROOT))
    out, _ = victim[0].communicate(timeout=60)
    assert victim[0].returncode == -signal.SIGKILL and b"marked as sent" not in out
    assert len(server.messages) == 1
    first, second = rows(factory)
    assert (first.status, second.status) == ("sending", "pending")

    server.on_data = None
    cfg = config(server)
    # Within the lease the dead sender might still be alive: nobody touches its row.
    assert outbox.send_due(factory, cfg, NOW + timedelta(minutes=1)) == outbox.SendReport(sent=1)
    assert rows(factory)[0].status == "sending"
    after_lease = NOW + outbox.LEASE + timedelta(seconds=1)
    assert outbox.send_due(factory, cfg, after_lease) == outbox.SendReport()
    first, second = rows(factory)
    assert (first.status, second.status) == ("unknown", "sent")
    assert "may or may not have been delivered" in first.last_error
    assert outbox.send_due(factory, cfg, after_lease + timedelta(days=1)) == outbox.SendReport()
    assert [m.rcpt_tos for m in server.messages] == [("alice@acme.example",), ("bob@acme.example",)]
    with factory() as s:
        assert [r.status for r in outbox.list_outbox(s, "unknown")] == ["unknown"]
        assert outbox.retry(s, after_lease, "cli:admin") == []  # --all leaves unknown rows to the admin


def test_a_connection_lost_after_the_data_is_unknown_not_retried(factory, server):
    queue(factory)

    def hang_up(_received):
        server._controller.smtpd.transport.close()

    server.on_data = hang_up
    report = outbox.send_due(factory, config(server), NOW)
    assert report == outbox.SendReport(unknown=1)
    assert rows(factory)[0].status == "unknown"
    server.on_data = None
    assert outbox.send_due(factory, config(server), NOW + timedelta(days=1)) == outbox.SendReport()
    assert len(server.messages) == 1
