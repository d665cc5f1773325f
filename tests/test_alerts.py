"""The admin hears by email, once a day per mailbox, that a mailbox's OAuth2 grant is gone."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

from sqlalchemy import select

from inboxcrm.app import alerts, outbox
from inboxcrm.config import build_config
from inboxcrm.store.db import transaction
from inboxcrm.store.models import OutboxMessage

from .smtp_server import SmtpServer

# 23:30 UTC is already the next day in Berlin: the day that counts is the team's.
LATE = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
DETAIL = ("the OAuth2 grant of mailbox sales was revoked or has expired (invalid_grant: Token has been expired or "
          "revoked.); run \"inboxcrm mailbox authorize sales\" to sign in again")


def config(admin: str | None = "IT@acme.example", **smtp_table):
    team = {"domains": ["acme.example"], "timezone": "Europe/Berlin"}
    if admin is not None:
        team["admin_address"] = admin
    data = {"team": team}
    if smtp_table:
        data["smtp"] = smtp_table
    return build_config(data, None)


def alert(factory, now: datetime, mailbox: str = "sales", cfg=None, detail: str = DETAIL) -> bool:
    with transaction(factory) as s:
        return alerts.queue_grant_alert(s, cfg or config(), now, mailbox, detail)


def rows(factory) -> list[OutboxMessage]:
    with factory() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_one_alert_per_mailbox_per_local_day(factory):
    assert alert(factory, LATE) is True
    assert alert(factory, LATE + timedelta(hours=3)) is False  # the sync fails again: same day in Berlin
    assert alert(factory, LATE, mailbox="support") is True  # another mailbox is another alert
    assert alert(factory, LATE + timedelta(days=1)) is True  # still revoked the next day: a reminder
    assert [r.key for r in rows(factory)] == ["alert:grant:sales:2026-11-24", "alert:grant:support:2026-11-24",
                                              "alert:grant:sales:2026-11-25"]
    assert {(r.kind, r.status, r.to_address) for r in rows(factory)} == {("alert", "pending", "it@acme.example")}


def test_without_an_admin_address_nothing_is_queued(factory):
    assert alert(factory, LATE, cfg=config(admin=None)) is False
    assert rows(factory) == []


def test_the_mail_says_which_mailbox_and_what_to_run(factory):
    alert(factory, LATE, detail=DETAIL + "\n<script>alert(1)</script>")
    (row,) = rows(factory)
    assert row.subject == ("inboxcrm: mailbox sales stopped, its OAuth2 grant was revoked; "
                           "run inboxcrm mailbox authorize sales")
    with factory() as s:
        detail = outbox.show(s, row.id)
    headers = dict(detail.headers)
    assert headers["X-InboxCRM"] == "alert" and headers["Auto-Submitted"] == "auto-generated"
    assert headers["From"] == "inboxcrm@acme.example"  # no [smtp] yet: the team's domain
    assert "inboxcrm stopped reading the mailbox sales." in detail.text
    assert "\n  inboxcrm mailbox authorize sales\n" in detail.text.replace("\r\n", "\n")
    assert "2026-11-24 00:30 (Europe/Berlin)" in detail.text and "invalid_grant" in detail.text
    html = message_from_bytes(row.body, policy=policy.default).get_body(("html",)).get_content()
    assert "&lt;script&gt;" in html and "<script>" not in html  # the provider's words are text, never markup
    assert "inboxcrm mailbox authorize sales" in html


def test_the_alert_goes_out_through_the_outbox(factory):
    with SmtpServer() as server:
        cfg = config(**server.config())
        alert(factory, LATE, cfg=cfg)
        assert outbox.send_due(factory, cfg, LATE) == outbox.SendReport(sent=1)
    (received,) = server.messages
    assert received.rcpt_tos == ("it@acme.example",) and received.mail_from == "crm@acme.example"
    assert "mailbox authorize sales" in received.message.get_body(("plain",)).get_content()
    assert alert(factory, LATE, cfg=cfg) is False  # sent today: not again
