"""A bounce captured from a real Dovecot mailbox marks the contact's address and shows in the
owner's digest; a second copy changes nothing; the person's next mail, synced the same way,
clears the mark. On both database backends."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from inboxcrm.app import deals, team
from inboxcrm.app.notify import build_for_rep
from inboxcrm.app.sync import sync_mailbox
from inboxcrm.config import build_config
from inboxcrm.store.db import transaction
from inboxcrm.store.models import AuditEntry, ContactAddress, Deal, Message, Rep

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .test_bounces import dsn, failed, person

CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)


def clock() -> datetime:
    return datetime.now(UTC)


def mark(factory) -> tuple[datetime | None, str | None]:
    with factory() as s:
        row = s.scalar(select(ContactAddress).where(ContactAddress.address == "anna@prospect.example"))
        return row.bounced_at, row.bounce_reason


def audit(factory, action: str) -> list[AuditEntry]:
    with factory() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_bounce_synced_from_dovecot_marks_the_address_shows_in_the_digest_and_the_next_mail_clears_it(
        factory, dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    started = clock()
    with transaction(factory) as s:
        team.add_rep(s, started, "admin", "alice", ["alice@acme.example"])
        team.add_mailbox(s, started, "admin", "sales", "alice", "capture",
                         connection=dovecot.connection(alice, folders=("\\Inbox",)))
        ref = deals.add_lead(s, started - timedelta(days=3), "admin", "anna@prospect.example", "Anna Berg",
                             owner="alice").ref
        alice_id = s.scalar(select(Rep.id).where(Rep.name == "alice"))
        before = s.get(Deal, int(ref[2:]))
        deal_before = (before.stage_id, before.closed_at, before.inbound_count, before.last_activity_at)

    bounced = started - timedelta(minutes=30)
    bounce = dsn(failed("anna@prospect.example"), date=bounced, mid="imap-dsn@mx.acme.example").replace(b"\n", b"\r\n")
    dovecot.append(alice, "INBOX", [bounce])
    assert sync_mailbox(factory, CONFIG, "sales", now=clock).total == 1
    at, reason = mark(factory)
    assert at == bounced.replace(microsecond=0) and reason.startswith("5.1.1 550 5.1.1")
    (entry,) = audit(factory, "bounce")
    assert entry.reason == "message <imap-dsn@mx.acme.example>"
    with factory() as s:
        stored = s.scalar(select(Message).where(Message.message_id == "imap-dsn@mx.acme.example"))
        assert (stored.status, stored.reason) == ("noise", "delivery-status")
        after = s.get(Deal, int(ref[2:]))
        assert (after.stage_id, after.closed_at, after.inbound_count, after.last_activity_at) == deal_before
        digest = build_for_rep(s, alice_id, clock(), CONFIG)
    (item,) = digest.bouncing.items
    assert item.ref == ref and item.detail.startswith("anna@prospect.example bounced on ")
    assert digest.subject.startswith("inboxcrm: 1 deal: 1 bouncing")

    # a second copy of the same bounce (forwarded to sales@ again): no new mark, no new date
    dovecot.append(alice, "INBOX", [bounce])
    assert sync_mailbox(factory, CONFIG, "sales", now=clock).total == 1
    assert mark(factory) == (at, reason) and len(audit(factory, "bounce")) == 1

    # anna writes again: the mark goes, and the audit names her message
    dovecot.append(alice, "INBOX", [person("anna@prospect.example", clock(), "anna-back@prospect.example")
                                    .replace(b"\n", b"\r\n")])
    assert sync_mailbox(factory, CONFIG, "sales", now=clock).total == 1
    assert mark(factory) == (None, None)
    (cleared,) = audit(factory, "bounce-cleared")
    assert cleared.reason == "message <anna-back@prospect.example>"
    with factory() as s:
        assert build_for_rep(s, alice_id, clock(), CONFIG).bouncing.total == 0
