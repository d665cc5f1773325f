"""Bounces: who a delivery failure names (pure, on our own samples, hostile bytes and the Discourse
corpus), and what it does to the records (SQLite and PostgreSQL): the contact's address marked
once with the bounce's date and reason, nothing else changed, the mark cleared by the person's
next real message, the deal's owner told in the digest, ``contacts list --bouncing``."""
from __future__ import annotations

import html
import json
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from inboxcrm.app import deals, team
from inboxcrm.app.context import context_for
from inboxcrm.app.intake import decide_and_record, process
from inboxcrm.app.notify import build_for_rep
from inboxcrm.config import build_config
from inboxcrm.core import bounces
from inboxcrm.core.bounces import MAX_PARTS, MAX_RECIPIENTS, read_bounce
from inboxcrm.core.classify import classify
from inboxcrm.core.parse import identify, parse
from inboxcrm.mail.render import render_digest, template_env
from inboxcrm.store.db import transaction
from inboxcrm.store.models import AuditEntry, ContactAddress, Deal, Message, Rep
from inboxcrm.store.records import Store, StoredMessage, mailbox_info
from inboxcrm.values import RawMessage

from .test_corpus import TEAM
from .test_corpus import corpus  # noqa: F401 - a fixture: the Discourse files (read there, never copied), or a skip

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)


# -- samples, written here ------------------------------------------------------------------------

def dsn(*blocks: str, date: datetime = NOW - timedelta(hours=2), mid: str = "dsn-1@mx.acme.example",
        per_message: str = "Reporting-MTA: dns; mx.acme.example\nArrival-Date: Mon, 23 Nov 2026 09:00:00 +0000\n",
        cte: str = "") -> bytes:
    """An RFC 3464 report as Postfix writes it, one block of fields per recipient."""
    report = per_message + "\n" + "\n".join(blocks)
    if cte == "base64":
        import base64
        report = base64.encodebytes(report.encode()).decode()
    return (f"From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\nTo: alice@acme.example\n"
            f"Subject: Undelivered Mail Returned to Sender\nDate: {format_datetime(date)}\nMessage-ID: <{mid}>\n"
            f"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\nI'm sorry to have to inform you that your message could not be "
            f"delivered.\n\n--B\nContent-Type: message/delivery-status\n"
            + (f"Content-Transfer-Encoding: {cte}\n" if cte else "") + f"\n{report}\n"
            f"--B\nContent-Type: message/rfc822\n\nFrom: alice@acme.example\nTo: anna@prospect.example\n"
            f"Subject: Our offer\n\nFinal-Recipient: rfc822; trap@prospect.example\nAction: failed\nStatus: 5.1.1\n\n"
            f"--B--\n").encode()


def failed(address: str, status: str = "5.1.1", action: str = "failed", original: str | None = None,
           said: str = "smtp; 550 5.1.1 <{a}>: Recipient address rejected: User unknown") -> str:
    lines = [f"Final-Recipient: rfc822; {address}"]
    if original:
        lines.append(f"Original-Recipient: rfc822;{original}")
    lines += [f"Action: {action}", f"Status: {status}", f"Diagnostic-Code: {said.format(a=address)}"]
    return "\n".join(lines) + "\n"


EXIM = (b"From: Mail Delivery System <Mailer-Daemon@mail.prospect.example>\nTo: alice@acme.example\n"
        b"Subject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: anna@prospect.example\n"
        b"Auto-Submitted: auto-replied\n\nThis message was created automatically by mail delivery software.\n\n"
        b"A message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent "
        b"error. The following address(es) failed:\n\n  anna@prospect.example\n    SMTP error from remote mail "
        b"server after RCPT TO:<anna@prospect.example>:\n    550 5.1.1 No such user here\n\n"
        b"------ This is a copy of the message, including all the headers. ------\n\nTo: ben@prospect.example\n")
QMAIL = (b"From: MAILER-DAEMON@mail.prospect.example\nTo: alice@acme.example\nSubject: failure notice\n\n"
         b"Hi. This is the qmail-send program at mail.prospect.example.\nI'm afraid I wasn't able to deliver your "
         b"message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work "
         b"out.\n\n<anna@prospect.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
         b"--- Below this line is a copy of the message.\n\n<ben@prospect.example>:\nquoted, not failed\n")
POSTFIX_TEXT = (b"From: MAILER-DAEMON@mail.prospect.example (Mail Delivery System)\nTo: alice@acme.example\n"
                b"Subject: Undelivered Mail Returned to Sender\n\nThis is the mail system at host "
                b"mail.prospect.example."
                b"\n\nI'm sorry to have to inform you that your message could not\nbe delivered to one or more "
                b"recipients.\n\n                   The mail system\n\n<anna@prospect.example>: host "
                b"mx.prospect.example[192.0.2.7] said: 550\n    5.1.1 <anna@prospect.example>: Recipient address "
                b"rejected: User unknown (in reply to RCPT TO command)\n")
POSTFIX_DELAY = (b"From: MAILER-DAEMON@mail.prospect.example\nTo: alice@acme.example\nSubject: Delayed Mail (still "
                 b"being retried)\n\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\n"
                 b"                   The mail system\n\n<anna@prospect.example>: connect to mx.prospect.example"
                 b"[192.0.2.7]:25: Connection timed out (421 4.4.2)\n")


# -- pure: the forms ------------------------------------------------------------------------------

def test_a_delivery_status_report_names_each_recipient_with_status_and_what_the_server_said():
    report = read_bounce(dsn(failed("anna@prospect.example"),
                             failed("ben@prospect.example", "4.2.2", "delayed", said="smtp; 452 mailbox full"),
                             failed("cara@prospect.example", action="delivered", status="2.0.0")))
    assert report.form == "dsn"
    anna, ben, cara = report.recipients
    assert (anna.address, anna.action, anna.status, anna.permanent) == (
        "anna@prospect.example", "failed", "5.1.1", True)
    assert anna.diagnostic == "550 5.1.1 <anna@prospect.example>: Recipient address rejected: User unknown"
    assert anna.reason == "5.1.1 550 5.1.1 <anna@prospect.example>: Recipient address rejected: User unknown"
    assert not ben.permanent and not cara.permanent
    assert [r.address for r in report.failed] == ["anna@prospect.example"]  # only given up for good
    # the returned message quotes report fields: they are the original mail, not the report
    assert "trap@prospect.example" not in {a for r in report.recipients for a in r.candidates}


def test_the_address_the_sender_wrote_comes_first_and_a_temporary_status_never_marks():
    forwarded = failed("anna.b@mail.prospect.example", original="Anna@Prospect.example")
    (anna,) = read_bounce(dsn(forwarded)).failed
    assert anna.candidates == ("anna@prospect.example", "anna.b@mail.prospect.example")  # normal form, as stored
    given_up_soft = read_bounce(dsn(failed("anna@prospect.example", "4.4.7", said="smtp; retry timeout exceeded")))
    assert given_up_soft.recipients and not given_up_soft.failed


def test_a_report_in_base64_or_with_odd_address_types_is_read_or_named_nobody():
    assert [r.address for r in read_bounce(dsn(failed("anna@prospect.example"), cte="base64")).failed] == [
        "anna@prospect.example"]
    x400 = "Final-Recipient: x400; /C=DE/ADMD=x/S=Anna/\nAction: failed\nStatus: 5.1.1\n"
    junk = "Final-Recipient: rfc822; not an address\nAction: failed\nStatus: 5.1.1\n"
    assert read_bounce(dsn(x400, junk)) == bounces.NOTHING


@pytest.mark.parametrize(("data", "form", "status"), [(EXIM, "exim", "5.1.1"), (QMAIL, "qmail", "5.1.1"),
                                                      (POSTFIX_TEXT, "postfix", "5.1.1")])
def test_the_plain_text_forms_of_exim_qmail_and_postfix(data, form, status):
    report = read_bounce(data)
    assert report.form == form
    assert [(r.address, r.status, r.permanent) for r in report.recipients] == [("anna@prospect.example", status, True)]
    assert "5.1.1" in report.recipients[0].reason


def test_warnings_and_notices_that_say_nothing_permanent_name_nobody():
    assert read_bounce(POSTFIX_DELAY).failed == ()
    assert read_bounce(QMAIL.replace(b"This is a permanent error; I've given up.", b"I'm still trying.")).failed == ()
    assert read_bounce(EXIM.replace(b"X-Failed-Recipients: anna@prospect.example\n", b"")).failed == ()
    person = b"From: anna@prospect.example\nTo: alice@acme.example\nSubject: hi\n\nSee you at 5.1.1 on Monday.\n"
    assert read_bounce(person) == bounces.NOTHING


def _nested(depth: int) -> bytes:
    head = b"From: MAILER-DAEMON@x.example\nMIME-Version: 1.0\n"
    body = b""
    for n in range(depth):
        body += f"Content-Type: multipart/mixed; boundary=\"b{n}\"\n\n--b{n}\n".encode()
    return head + body + b"Content-Type: text/plain\n\nx\n"


def test_hostile_bytes_never_raise_and_stay_within_bounds():
    many = dsn(*(failed(f"p{n}@prospect.example") for n in range(500)))
    assert len(read_bounce(many).recipients) == MAX_RECIPIENTS
    parts = (b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; "
             b"boundary=B\n\n" + b"--B\nContent-Type: text/plain\n\nx\n" * (MAX_PARTS * 20)
             + b"--B\nContent-Type: message/delivery-status\n\n" + failed("late@prospect.example").encode()
             + b"\n--B--\n")
    assert read_bounce(parts) == bounces.NOTHING  # past the part limit: not looked at, not an error
    big = dsn(failed("anna@prospect.example")).replace(b"--B\nContent-Type: message/rfc822",
                                                        b"--B\nContent-Type: text/plain\n\n" + b"x" * 3_000_000
                                                        + b"\n--B\nContent-Type: message/rfc822")
    assert [r.address for r in read_bounce(big).failed] == ["anna@prospect.example"]  # the report comes first
    samples = [b"", b"\x00\xff" * 1000, _nested(5000), b"Content-Type: message/delivery-status\n\n" + b":\n" * 10000,
               b"X-Failed-Recipients: " + b"a@b.example," * 100_000 + b"\n\n",
               b"The mail system\n\n<" + b"a" * 400 + b"@x.example>: 550\n",
               dsn(failed("anna@prospect.example")).replace(b"text/plain", b"text/plain; charset=x-nonsense")]
    rng = random.Random(15)
    for _ in range(300):
        base = bytearray(rng.choice([dsn(failed("anna@prospect.example")), EXIM, QMAIL, POSTFIX_TEXT]))
        for _ in range(rng.randint(1, 40)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        samples.append(bytes(base[:rng.randint(0, len(base))]))
    for sample in samples:
        assert isinstance(read_bounce(sample), bounces.Report)


# -- pure: the Discourse corpus -------------------------------------------------------------------

DISCOURSE_FAILED = {  # Discourse: each raises BouncedEmailError (a bounce); what our reader says of it
    "bounced_email.eml": [("linux-admin@b-s-c.co.jp", "5.1.1", True)],
    "bounced_email_multiple_status_codes.eml": [("linux-admin@b-s-c.co.jp", "5.1.1", True)] * 2,
    "hard_bounce_via_verp.eml": [("linux-admin@b-s-c.co.jp", "5.1.1", True)],
    "hard_bounce_via_verp_2.eml": [("linux-admin@b-s-c.co.jp", "5.1.1", True)],
    # a 4.x.x status: Discourse counts a soft bounce, we mark nothing
    "verp_bounce_different_final_recipient.eml": [("linux-admin@b-s-c.co.jp", "4.1.1", False)],
}


def test_the_discourse_corpus_bounces_are_read_and_nothing_else_names_a_failed_recipient(corpus):  # noqa: F811
    bounced = {name for name, (_, row) in corpus.items() if row["category"] == "bounce"}
    assert bounced == set(DISCOURSE_FAILED)
    for name, (raw, row) in corpus.items():
        report = read_bounce(raw)
        if name in DISCOURSE_FAILED:
            assert classify(parse(raw, identify(raw)[0]), TEAM).kind == "bounce", name
            assert report.form == "dsn", name
            assert [(r.address, r.status, r.permanent) for r in report.recipients] == DISCOURSE_FAILED[name], name
        else:  # bounced_email_2 has no delivery-status part (Discourse asserts nothing of it): nobody either
            assert report.failed == (), (name, row["category"], report)
    final = read_bounce(corpus["verp_bounce_different_final_recipient.eml"][0]).recipients[0]
    assert final.candidates == ("linux-admin@b-s-c.co.jp", "catchall@b-s-c.co.jp")


# -- the records ----------------------------------------------------------------------------------

class Crm:
    """alice owns anna's deal; bob is a colleague; the sales@ capture mailbox reads bounces."""

    def __init__(self, factory):
        self.factory = factory
        with transaction(factory) as s:
            team.add_rep(s, NOW, "admin", "alice", ["alice@acme.example"], "Europe/Berlin")
            team.add_rep(s, NOW, "admin", "bob", ["bob@acme.example"])
            team.add_mailbox(s, NOW, "admin", "sales", None, "capture")
            self.ref = deals.add_lead(s, NOW - timedelta(days=10), "admin", "anna@prospect.example", "Anna Berg",
                                      owner="alice").ref
            self.rep_ids = {r.name: r.id for r in s.scalars(select(Rep))}
        self.n = 0

    def feed(self, data: bytes, location: str | None = None, now: datetime = NOW, ctx=None):
        """One message through the intake; ``ctx``: the pass's context, shared by several feeds
        (default: a pass of its own)."""
        self.n += 1
        with transaction(self.factory) as s:
            return process(s, RawMessage(data, location or f"test:{self.n}"), mailbox_info(s, "sales"),
                           ctx or context_for(s, CONFIG), now)

    def mark(self) -> tuple[datetime | None, str | None]:
        with self.factory() as s:
            row = s.scalar(select(ContactAddress).where(ContactAddress.address == "anna@prospect.example"))
            return row.bounced_at, row.bounce_reason

    def audit(self, action: str) -> list[AuditEntry]:
        with self.factory() as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))

    def deal(self) -> tuple:
        with self.factory() as s:
            d = s.get(Deal, int(self.ref[2:]))
            return d.stage_id, d.closed_at, d.inbound_count, d.last_activity_at, d.owner_rep_id


def person(sender: str, when: datetime, mid: str, extra: str = "") -> bytes:
    return (f"From: Anna Berg <{sender}>\nTo: alice@acme.example\nSubject: Re: Our offer\nDate: "
            f"{format_datetime(when)}\nMessage-ID: <{mid}>\n{extra}\nWe moved to a new server, all good now.\n"
            ).encode()


@pytest.fixture
def crm(factory) -> Crm:
    return Crm(factory)


def test_a_bounce_marks_the_contacts_address_once_and_changes_nothing_else(crm):
    deal_before = crm.deal()
    out = crm.feed(dsn(failed("anna@prospect.example")))
    assert (out.status, out.reason) == ("noise", "delivery-status")  # still stored as noise
    at, reason = crm.mark()
    assert at == NOW - timedelta(hours=2)  # the bounce's own date
    assert reason == "5.1.1 550 5.1.1 <anna@prospect.example>: Recipient address rejected: User unknown"
    (entry,) = crm.audit("bounce")
    assert entry.reason == "message <dsn-1@mx.acme.example>" and entry.actor == "pipeline"
    assert entry.detail["address"] == "anna@prospect.example" and entry.detail["status"] == "5.1.1"
    assert crm.deal() == deal_before

    # a second copy elsewhere, a re-run of the stored message, an older bounce: no new mark, no new date
    assert crm.feed(dsn(failed("anna@prospect.example")), "other:1").status == "duplicate"
    with transaction(crm.factory) as s:
        row = s.scalar(select(Message).where(Message.message_id == "dsn-1@mx.acme.example"))
        decide_and_record(Store(s, NOW + timedelta(days=1)), StoredMessage(row.id, row.message_id, row.status, None),
                          row.raw, mailbox_info(s, "sales"), context_for(s, CONFIG))
    crm.feed(dsn(failed("anna@prospect.example", said="smtp; 550 old"), date=NOW - timedelta(days=3), mid="old@x"))
    assert crm.mark() == (at, reason) and len(crm.audit("bounce")) == 1
    # a newer bounce moves the date on, and says so
    crm.feed(dsn(failed("anna@prospect.example", said="smtp; 550 gone"), date=NOW - timedelta(hours=1), mid="new@x"))
    assert crm.mark() == (NOW - timedelta(hours=1), "5.1.1 550 gone") and len(crm.audit("bounce")) == 2


def test_a_bounce_for_the_team_or_a_stranger_or_a_soft_failure_changes_nothing(crm):
    crm.feed(dsn(failed("alice@acme.example"), failed("stranger@elsewhere.example"),
                 failed("anna@prospect.example", "4.2.2", said="smtp; 452 mailbox full")))
    crm.feed(EXIM.replace(b"anna@prospect.example", b"bob@acme.example"))
    assert crm.mark() == (None, None) and crm.audit("bounce") == []
    with crm.factory() as s:
        assert s.scalar(select(ContactAddress.address).where(ContactAddress.address == "stranger@elsewhere.example")) \
            is None


def test_the_next_real_message_from_the_address_clears_the_mark_and_the_audit_names_it(crm):
    crm.feed(dsn(failed("anna@prospect.example")))
    crm.feed(person("anna@prospect.example", NOW - timedelta(days=1), "older@prospect.example"))  # sent before it
    crm.feed(person("anna@prospect.example", NOW - timedelta(minutes=5), "spam@x", "X-Spam-Flag: YES\n"))
    assert crm.mark()[0] is not None
    crm.feed(person("anna@prospect.example", NOW - timedelta(minutes=1), "back@prospect.example"))
    assert crm.mark() == (None, None)
    (entry,) = crm.audit("bounce-cleared")
    assert entry.reason == "message <back@prospect.example>" and entry.detail == {"address": "anna@prospect.example"}


def test_a_bounce_and_the_persons_next_message_in_one_pass_mark_and_clear(crm):
    """Which addresses bounce is read once per pass; a mark the pass makes itself must count."""
    with crm.factory() as s:
        one_pass = context_for(s, CONFIG)
    crm.feed(dsn(failed("anna@prospect.example")), ctx=one_pass)
    assert crm.mark()[0] is not None
    crm.feed(person("anna@prospect.example", NOW - timedelta(minutes=1), "back@prospect.example"), ctx=one_pass)
    assert crm.mark() == (None, None) and len(crm.audit("bounce-cleared")) == 1


def test_a_bounce_older_than_the_persons_latest_mail_marks_nothing(crm):
    crm.feed(person("anna@prospect.example", NOW - timedelta(hours=1), "recent@prospect.example"))
    crm.feed(dsn(failed("anna@prospect.example"), date=NOW - timedelta(hours=2)))  # read late, e.g. a backfill
    assert crm.mark() == (None, None)


def test_the_deals_owner_sees_the_bounce_in_the_digest_and_others_do_not(crm):
    crm.feed(dsn(failed("anna@prospect.example")))
    with crm.factory() as s:
        digest = build_for_rep(s, crm.rep_ids["alice"], NOW, CONFIG)
        others = build_for_rep(s, crm.rep_ids["bob"], NOW, CONFIG)
    (item,) = digest.bouncing.items
    assert item.ref == crm.ref and item.detail.startswith("anna@prospect.example bounced on Tue 24 Nov: 5.1.1 550")
    assert digest.subject.startswith("inboxcrm: 1 deal: 1 bouncing")  # the deal counted once, under bouncing
    assert all(crm.ref not in [i.ref for i in s.items] for s in digest.sections if s.key != "bouncing")
    assert "Find a working address" in digest.bouncing.hint  # what to do, once, under the title
    mail = render_digest(digest, template_env())
    for text in ("Bouncing addresses (1 deal)", "anna@prospect.example bounced on Tue 24 Nov",
                 "Find a working address"):
        assert text in mail.text and text in " ".join(html.unescape(re.sub(r"<[^>]+>", " ", mail.html)).split()), text
    assert others.bouncing.total == 0


def test_contacts_list_bouncing(crm, cli):
    assert "no address is bouncing" in cli("contacts", "list", "--bouncing").output
    crm.feed(dsn(failed("anna@prospect.example")))
    table = cli("contacts", "list", "--bouncing").output
    assert "anna@prospect.example" in table and "Anna Berg" in table and "alice" in table and "2026-11-24" in table
    (row,) = json.loads(cli("contacts", "list", "--bouncing", "--json").output)
    assert row["address"] == "anna@prospect.example" and row["open_deals"] == 1 and row["reason"].startswith("5.1.1")
    sheet = cli("contacts", "list", "--bouncing", "--csv").output.splitlines()
    assert sheet[0] == "Email,Contact,Company,Owner,Bounced,Reason,Open deals"
    assert sheet[1].startswith("anna@prospect.example,Anna Berg,") and ",2026-11-24," in sheet[1]
    assert "Anna Berg" in cli("contacts", "list").output  # without the flag: every contact, as before
