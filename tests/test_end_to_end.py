"""The whole product in one run: ``inboxcrm run`` reads a real Dovecot, records a new lead, and
the rep hears of it through a real SMTP server, once. Our own nudge, delivered back into the
synced mailbox, is recognised as ours and makes no lead.

The parts have their own tests; this one checks that the daemon wires them together.
"""
from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from inboxcrm.store.models import Deal, Message, OutboxMessage

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .smtp_server import SmtpServer
from .test_daemon import add_imap, count, eventually, start  # noqa: F401 - "start" is a fixture

SMTP_PASSWORD = "smtp-secret-4711"


def lead(name: str, address: str, dated: datetime) -> bytes:
    return (f"From: {name} <{address}>\r\nTo: sales@acme.example\r\n"
            f"Subject: Quote for a new office network\r\nDate: {format_datetime(dated)}\r\n"
            f"Message-ID: <e2e-{address}>\r\n\r\nHello, could you send us a quote for 30 seats?\r\n").encode()


def fresh_lead() -> bytes:
    """Dated now: mail that arrives while the mailbox is watched nudges its rep."""
    return lead("Nora Field", "nora@fieldworks.example", datetime.now(UTC))


def backlog() -> list[bytes]:
    """Yesterday's leads, in the mailbox before it was added: the first sync reads them, and
    they nudge nobody (a backfill of last week once queued 798 nudges for one rep)."""
    return [lead(f"Old Lead {n}", f"old{n}@backlog{n}.example", datetime.now(UTC) - timedelta(hours=2 + n))
            for n in range(12)]


def nudges(smtp: SmtpServer) -> list:
    """What reached the SMTP server as nudges (alice's digest, listing the backlog, may too)."""
    return [m for m in smtp.messages if m.message["X-InboxCRM"] == "nudge"]


def test_a_new_lead_reaches_its_rep_by_mail_once_and_our_mail_never_becomes_a_lead(
        team, dovecot, engine, start, config_file, tls_files, monkeypatch):  # noqa: F811 - fixtures
    alice = dovecot.add_user("alice", "pw")
    dovecot.secret_file(alice).chmod(0o600)  # a secret readable by others is refused
    dovecot.append(alice, "INBOX", backlog())
    add_imap(team, dovecot, alice, "inbox")
    smtp = SmtpServer(mode="starttls", tls_files=tls_files, users={"crm": SMTP_PASSWORD}).start()
    try:
        config_file.write_text(config_file.read_text() + (
            f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "starttls"\n'
            f'ca_file = "{tls_files.ca}"\nusername = "crm"\npassword_env = "TEST_SMTP_PASSWORD"\n'
            f'from_address = "crm@acme.example"\n'
            f'\n[commands]\naddress = "crm@acme.example"\n[digest]\ndays = "daily"\ntime = "00:00"\n'))
        monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)  # the daemon inherits it
        daemon = start()
        daemon.notify.wait_for("READY=1")
        # Today's digests are due at once (00:00, daily): decided once each (bob's empty, skipped).
        eventually(lambda: count(engine, OutboxMessage.id, OutboxMessage.kind == "digest") == 2,
                   what="both reps' digests decided")
        eventually(lambda: "event=idle-watching mailbox=inbox" in daemon.log(), what="IDLE")
        assert count(engine, Deal.id) == 12  # the backlog: leads on record, no nudge queued

        arrived = time.monotonic()
        dovecot.append(alice, "INBOX", [fresh_lead()])
        eventually(lambda: len(nudges(smtp)) == 1, timeout=20.0, what="the new-lead nudge at the SMTP server")
        latency = time.monotonic() - arrived
        nudge = nudges(smtp)[0]
        assert nudge.rcpt_tos == ("alice@acme.example",)
        # One login per outbox pass with mail to send, never one without: alice's digest (listing the
        # backlog, when the sync read it before her digest was decided) may go in an earlier pass.
        assert set(smtp.logins) == {"crm"} and len(smtp.logins) <= len(smtp.messages)
        message = nudge.message
        assert message["Subject"].startswith("New lead D-13: Nora Field")
        assert message["Auto-Submitted"] == "auto-generated" and message["X-InboxCRM"] == "nudge"
        assert latency < 10.0, f"the nudge took {latency:.1f} s"
        eventually(lambda: count(engine, OutboxMessage.id, OutboxMessage.status == "sent",
                                 OutboxMessage.kind == "nudge") == 1, what="the nudge marked sent")

        # The nudge lands in a synced mailbox (a rep forwarding it, a copy to sales@): it is ours.
        dovecot.append(alice, "INBOX", [nudge.data])
        eventually(lambda: count(engine, Message.id, Message.reason == "own") == 1, what="our nudge read back")
        assert count(engine, Deal.id) == 13
        time.sleep(1.0)  # a second notify pass would have sent a duplicate, or a backlog nudge, by now
        assert len(nudges(smtp)) == 1 and count(engine, OutboxMessage.id, OutboxMessage.kind == "nudge") == 1

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        log = daemon.log()
        assert SMTP_PASSWORD not in log and "Traceback" not in log
        assert "event=outbox-sent" in log
    finally:
        smtp.stop()
