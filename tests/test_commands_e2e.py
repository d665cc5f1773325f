"""Commands by email end to end: a rep's email in the commands mailbox changes the deal and gets
exactly one answer over SMTP; a reply to the digest wins a deal through the daemon; a forwarded
prospect email becomes a lead; a wrong email changes nothing and says why; a reply to a nudge
needs no tag; every change is audited under the email's Message-ID.

The IMAP tests use a private Dovecot and a loopback SMTP server; the others import .eml files
into the commands mailbox (``inboxcrm import --mailbox crm``). All run on both backends. The
helpers here are shared with tests/test_command_attacks.py.
"""
from __future__ import annotations

import hashlib
import json
import re
import signal
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from inboxcrm.app.notify import enqueue_due
from inboxcrm.config import load_config
from inboxcrm.core.verbs import FORMS
from inboxcrm.store.models import AuditEntry, Deal, Message, OutboxMessage

from .conftest import MAIL
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .smtp_server import SmtpServer
from .test_daemon import count, eventually, start  # noqa: F401 - "start" is a fixture

ALICE = "Alice Martin <alice@acme.example>"
CRM = "crm@acme.example"
REP_ADDRESSES = frozenset({"alice@acme.example", "bob@acme.example"})
COMMANDS = MAIL / "commands"


# -- shared with test_command_attacks -------------------------------------------------------------

def command_mail(message_id: str, subject: str, body: str = "", *, sender: str = ALICE, to: str = CRM,
                 headers: str = "") -> bytes:
    """A plain-text email dated now (the burst window counts real time); ``message_id`` without
    a domain gets @acme.example; ``headers``: extra header lines joined by CRLF."""
    message_id = message_id.strip("<>") if "@" in message_id else f"{message_id}@acme.example"
    head = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {format_datetime(datetime.now(UTC))}",
            f"Message-ID: <{message_id}>", *filter(None, headers.split("\r\n")), "MIME-Version: 1.0",
            'Content-Type: text/plain; charset="UTF-8"']
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body.splitlines()) + "\r\n").encode()


def redate(data: bytes, when: datetime | None = None) -> bytes:
    """The message with its own Date header set to ``when`` (default now): command mail dated
    before its mailbox was added is history, not obeyed, so a fixture must look new."""
    head, sep, body = data.partition(b"\r\n\r\n") if b"\r\n\r\n" in data else data.partition(b"\n\n")
    new = f"Date: {format_datetime(when or datetime.now(UTC))}".encode()
    dated, found = re.subn(rb"(?m)^Date: [^\r\n]*", new, head, count=1)
    assert found == 1, "the message has no Date header"
    return dated + sep + body


def enable_commands(cli, config_file, tmp_path, commands: str | None = "", digest: str = "",
                    mailbox: bool = True) -> None:
    """The command address, a reply-token key in the test's own folder, and (``mailbox``) an
    import-only commands mailbox "crm". ``commands`` None: no token_key_file, as a
    new user's file has it (the key is then in the data directory)."""
    key = "" if commands is None else f'token_key_file = "{tmp_path / "reply-token.key"}"\n{commands}\n'
    config_file.write_text(config_file.read_text() + f'\n[digest]\n{digest}\n[commands]\naddress = "{CRM}"\n{key}')
    if mailbox:
        cli("mailbox", "add", "crm", "--role", "commands")


def import_mail(cli, tmp_path, data: bytes, mailbox: str = "crm") -> str:
    """``inboxcrm import --mailbox MAILBOX`` of one message; its output."""
    path = tmp_path / f"mail-{hashlib.sha256(data).hexdigest()[:16]}.eml"
    path.write_bytes(data)
    return cli("import", "--mailbox", mailbox, str(path)).stdout


def deal(cli, ref: str = "D-1") -> dict:
    return json.loads(cli("deal", "show", ref, "--json").stdout)


def reply_token(cli, rep: str) -> str:
    shown = cli("rep", "token", rep).stdout.strip()
    found = re.fullmatch(rf"{rep}: reply address crm\+([a-z2-7]+)@acme\.example", shown)
    assert found, shown
    return found.group(1)


def personal_address(cli, rep: str) -> str:
    """The rep's personal command address, crm+TOKEN@: with nothing under [commands], a fresh
    command is obeyed only when sent there."""
    return f"crm+{reply_token(cli, rep)}@acme.example"


def to_personal_address(cli, rep: str, data: bytes) -> bytes:
    """A fixture written to the bare command address, as the rep sends it to their personal one."""
    sent, found = re.subn(rb"(?m)^To: crm@acme\.example\r?$", f"To: {personal_address(cli, rep)}".encode(), data,
                          count=1)
    assert found == 1, "the fixture is not addressed to crm@acme.example"
    return sent


@dataclass(frozen=True)
class Queued:
    """An outbox row as the tests read it."""

    kind: str
    key: str
    to_address: str
    subject: str
    message_id: str
    status: str
    deal_id: int | None
    body: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.body, policy=policy.default)

    @property
    def text(self) -> str:
        return text_of(self.message)


def text_of(message: EmailMessage) -> str:
    """The plain-text part with plain line ends (what the SMTP policy wrote as CRLF)."""
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


def outbox_rows(factory) -> list[Queued]:
    with factory() as s:
        return [Queued(r.kind, r.key, r.to_address, r.subject, r.message_id, r.status, r.deal_id, r.body)
                for r in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]


def answers(factory) -> list[Queued]:
    """The answers to command emails, oldest first."""
    return [row for row in outbox_rows(factory) if row.kind == "reply"]


@dataclass(frozen=True)
class Stored:
    status: str
    reason: str
    detail: str
    deal_id: int | None


def stored(factory, message_id: str) -> Stored:
    with factory() as s:
        row = s.scalar(select(Message).where(Message.message_id == message_id.strip("<>")))
        assert row is not None, f"no stored message {message_id}"
        return Stored(row.status, row.reason, row.detail or "", row.deal_id)


def command_audit(factory) -> list[tuple[int, str, dict]]:
    """(deal, reason, detail) of every audit entry a command email wrote, in order."""
    with factory() as s:
        return [(a.entity_id, a.reason, a.detail) for a in s.scalars(
            select(AuditEntry).where(AuditEntry.action == "command").order_by(AuditEntry.id))]


# -- helpers of this module --------------------------------------------------------------------

def smtp_config(smtp: SmtpServer) -> str:
    return (f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "plain"\n'
            f'from_address = "inboxcrm@acme.example"\n')


def add_commands_mailbox(cli, dovecot, user) -> None:
    """The commands mailbox "crm", read over IMAP from ``user``'s account."""
    cli("mailbox", "add", "crm", "--role", "commands", "--host", dovecot.host, "--port", str(dovecot.port),
        "--ca-file", str(dovecot.tls.ca), "--user", user.name, "--password-file", str(dovecot.secret_file(user)))


def a_friday_within_a_week(text: str) -> bool:
    due = date.fromisoformat(text)
    today = datetime.now(UTC).date()  # the team's time zone is UTC
    return due.weekday() == 4 and today <= due <= today + timedelta(days=7)


# -- a: the commands mailbox on a real IMAP server ------------------------------------------------

def test_a_command_in_the_commands_mailbox_changes_the_deal_and_is_answered_once(team, dovecot, factory, config_file,
                                                                                 tmp_path):
    crm_account = dovecot.add_user("crm", "crm-imap-pw")
    with SmtpServer() as smtp:
        config_file.write_text(config_file.read_text() + smtp_config(smtp))
        enable_commands(team, config_file, tmp_path, mailbox=False)
        add_commands_mailbox(team, dovecot, crm_account)
        team("lead", "add", "--email", "nora@fieldworks.example", "--name", "Nora Field", "--owner", "alice")
        token = reply_token(team, "alice")
        command = command_mail("stage-and-next", "[D-1] stage: proposal", "next: send the quote by friday\r\n\r\n"
                               "--\r\nAlice Martin, Acme", to=f"crm+{token}@acme.example")
        dovecot.append(crm_account, "INBOX", [command])
        dovecot.append(crm_account, "INBOX", [command_mail("already-read", "[D-1] note: seen before",
                                                           to=f"crm+{token}@acme.example")], flags=[b"\\Seen"])
        flags = dovecot.flags(crm_account, "INBOX")

        assert team("poll", "--once", "crm").stdout.splitlines()[:2] == [
            "crm: 2 new messages", "  INBOX (\\Inbox): 2 messages: 2 command"]
        shown = deal(team)
        assert (shown["stage"], shown["next_step"], shown["next_step_owner"]) == ("Proposal", "send the quote", "alice")
        assert a_friday_within_a_week(shown["next_step_due"])
        assert [n["text"] for n in shown["notes"]] == ["seen before"]
        assert team("outbox", "send").stdout == "outbox: 2 sent\n"

        mine = [m for m in smtp.messages if m.message["In-Reply-To"] == "<stage-and-next@acme.example>"]
        assert len(smtp.messages) == 2 and len(mine) == 1
        assert mine[0].rcpt_tos == ("alice@acme.example",)
        answer = mine[0].message
        assert answer["To"] == "alice@acme.example" and answer["From"] == "inboxcrm@acme.example"
        assert answer["Subject"] == "inboxcrm: done (D-1)"
        assert answer["Reply-To"] == f"crm+{token}@acme.example"
        assert answer["Auto-Submitted"] == "auto-generated" and answer["X-InboxCRM"] == "reply"
        text = text_of(answer)
        assert text.startswith("Hi alice,\n\nDone:\n\n  D-1: moved to Proposal (was New)\n"
                               '  D-1: next step "send the quote" due Fri ')

        # Exactly once: the next poll, and the same email imported by hand, change and send nothing.
        before = deal(team)
        assert team("poll", "--once", "crm").stdout.splitlines()[0] == "crm: 0 new messages"
        assert import_mail(team, tmp_path, command) == "imported 1 message into crm: 1 duplicate\n"
        assert team("outbox", "send").stdout == "outbox: nothing due\n"
        assert len(smtp.messages) == 2 and len(answers(factory)) == 2
        assert deal(team) == before
        assert dovecot.flags(crm_account, "INBOX") == flags  # read, never marked
        assert [reason for _, reason, _ in command_audit(factory)] == [
            "message <stage-and-next@acme.example>"] * 2 + ["message <already-read@acme.example>"]


# -- b: the whole loop through the daemon ------------------------------------------------------

def test_a_reply_to_the_digest_wins_the_deal_through_the_daemon(
        team, dovecot, engine, factory, start, config_file, tmp_path):  # noqa: F811 - "start" is a fixture
    crm_account = dovecot.add_user("crm", "crm-imap-pw")
    with SmtpServer() as smtp:
        config_file.write_text(config_file.read_text() + smtp_config(smtp))
        enable_commands(team, config_file, tmp_path, digest='days = "daily"\ntime = "00:00"', mailbox=False)
        add_commands_mailbox(team, dovecot, crm_account)
        team("lead", "add", "--email", "nora@fieldworks.example", "--name", "Nora Field", "--owner", "alice")
        daemon = start()
        daemon.notify.wait_for("READY=1")

        def sent(kind: str):
            return [m for m in list(smtp.messages) if m.message["X-InboxCRM"] == kind]

        digest = eventually(lambda: sent("digest"), timeout=20.0, what="alice's digest at the SMTP server")[0]
        assert digest.rcpt_tos == ("alice@acme.example",)
        token = reply_token(team, "alice")
        assert digest.message["Reply-To"] == f"crm+{token}@acme.example"
        assert f"set next step: mailto:crm%2B{token}@acme.example?subject=%5BD-1%5D%20next%3A%20" in \
            text_of(digest.message)  # the quick actions carry the token too
        quoted = "\r\n".join(f"> {line}" for line in text_of(digest.message).splitlines())
        reply = command_mail("alice-wins", f"Re: {digest.message['Subject']}", f"[D-1] won\r\n\r\n"
                             f"On Mon, inboxcrm <inboxcrm@acme.example> wrote:\r\n{quoted}",
                             to=digest.message["Reply-To"],
                             headers=f"In-Reply-To: {digest.message['Message-ID']}\r\n"
                                     f"References: {digest.message['Message-ID']}")
        eventually(lambda: "event=idle-watching mailbox=crm folder=INBOX" in daemon.log(), what="IDLE on crm")
        dovecot.append(crm_account, "INBOX", [reply])

        answer = eventually(lambda: sent("reply"), timeout=20.0, what="the answer at the SMTP server")[0]
        assert count(engine, Deal.id, Deal.closed_at.is_not(None)) == 1
        assert deal(team)["stage"] == "Won"
        assert answer.rcpt_tos == ("alice@acme.example",)
        assert answer.message["In-Reply-To"] == "<alice-wins@acme.example>"
        assert answer.message["Subject"] == "inboxcrm: done (D-1)"
        assert "D-1: moved to Won (was New)" in text_of(answer.message)
        time.sleep(1.0)  # a second pass would have answered again by now
        assert len(sent("reply")) == 1
        assert stored(factory, "alice-wins@acme.example") == Stored("command", "command-applied",
                                                                    "D-1: moved to Won (was New)", None)

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        log = daemon.log()
        assert "Traceback" not in log
        assert "event=command mailbox=crm message=alice-wins@acme.example sender=alice@acme.example " \
               "status=command reason=command-applied deals=D-1 answered=True" in log


# -- c: a forwarded prospect email ---------------------------------------------------------------

def test_a_forwarded_prospect_email_becomes_a_lead_of_the_rep_who_forwarded_it(team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path)
    forward = to_personal_address(team, "bob", redate((COMMANDS / "forward-gmail-inline.eml").read_bytes()))
    assert import_mail(team, tmp_path, forward) == "imported 1 message into crm: 1 command\n"

    lead = deal(team)
    assert lead["addresses"] == ["carla@northwind.example"]  # the prospect, not bob who forwarded it
    assert (lead["owner"], lead["source"], lead["company"]) == ("bob", "forwarded", "Northwind")
    assert (lead["next_step"], lead["value"]) == ("send her the price list", 15000)  # the lines above the forward
    assert [n["text"] for n in lead["notes"]] == [
        "Forwarded by bob: Pricing for 50 seats (sent Mon, Nov 23, 2026 at 9:12 AM)"]
    assert stored(factory, "CAFwd-gmail-0001@mail.gmail.com").status == "command"
    [answer] = answers(factory)
    assert (answer.to_address, answer.subject) == ("bob@acme.example", "inboxcrm: done (D-1)")
    assert "D-1: new lead Carla Prospect <carla@northwind.example> owned by bob at Northwind" in answer.text
    assert 'D-1: next step "send her the price list", no due date' in answer.text
    assert [(d, reason, detail.get("command")) for d, reason, detail in command_audit(factory)] == [
        (1, "message <CAFwd-gmail-0001@mail.gmail.com>", "forward"),
        (1, "message <CAFwd-gmail-0001@mail.gmail.com>", "next: send her the price list"),
        (1, "message <CAFwd-gmail-0001@mail.gmail.com>", "value: 15000")]

    # Carla's next email to sales@ is on her deal: the lead is a real one.
    follow_up = command_mail("carla-2@northwind.example", "Re: Pricing for 50 seats", "Any news?",
                             sender="Carla Prospect <carla@northwind.example>", to="sales@acme.example")
    assert import_mail(team, tmp_path, follow_up, "sales") == "imported 1 message into sales: 1 processed\n"
    assert stored(factory, "carla-2@northwind.example").deal_id == 1


# -- d: all or nothing, and an answer that says what would be valid --------------------------------

def test_an_email_with_two_problems_changes_nothing_and_the_answer_lists_both_and_the_valid_forms(
        team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path)
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    before = deal(team)
    wrong = to_personal_address(team, "alice", redate((COMMANDS / "ambiguous-stage-and-unknown-rep.eml").read_bytes()))
    assert import_mail(team, tmp_path, wrong) == "imported 1 message into crm: 1 command\n"

    assert deal(team) == before  # not even the valid "next:" line
    found = stored(factory, "two-problems-0001@acme.example")
    assert (found.status, found.reason) == ("command", "command-invalid")
    [answer] = answers(factory)
    assert (answer.to_address, answer.subject) == ("alice@acme.example", "inboxcrm: nothing changed (2 problems)")
    text = answer.text
    assert "Nothing was changed: your email had 2 problems, and commands apply all or nothing." in text
    assert ('  subject: [D-1] stage: n\n    ambiguous stage "n": it could be New, Negotiation; type more of the name'
            in text)
    assert '  line 1: owner: carol\n    unknown rep "carol"; reps are: alice, bob' in text
    assert FORMS in text
    assert command_audit(factory) == []


# -- e: a reply to a nudge is about the nudge's deal ------------------------------------------------

def test_an_untagged_note_in_a_reply_to_a_nudge_goes_to_the_nudges_deal(team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path)
    for address in ("nora@fieldworks.example", "carla@northwind.example"):
        team("lead", "add", "--email", address, "--owner", "alice")
    enqueue_due(factory, load_config(config_file, True), datetime.now(UTC))  # a new-lead nudge for each deal
    nudge = next(row for row in outbox_rows(factory) if row.kind == "nudge" and row.deal_id == 2)
    token = reply_token(team, "alice")
    assert nudge.message["Reply-To"] == f"crm+{token}@acme.example"
    assert f"mailto:crm%2B{token}@acme.example?subject=%5BD-2%5D" in nudge.text
    quoted = "\r\n".join(f"> {line}" for line in nudge.text.splitlines())
    reply = command_mail("nudge-reply", f"Re: {nudge.subject}", f"note: called them\r\n\r\nOn Mon inboxcrm wrote:"
                         f"\r\n{quoted}", to=nudge.message["Reply-To"],
                         headers=f"In-Reply-To: {nudge.message_id}\r\nReferences: {nudge.message_id}")
    assert import_mail(team, tmp_path, reply) == "imported 1 message into crm: 1 command\n"

    assert [n["text"] for n in deal(team, "D-2")["notes"]] == ["called them"]
    assert deal(team, "D-1")["notes"] == []
    [answer] = answers(factory)
    assert (answer.to_address, answer.subject, answer.deal_id) == ("alice@acme.example", "inboxcrm: done (D-2)", 2)
    assert 'D-2: note added "called them"' in answer.text

    # "reply with more commands if you like": a reply to that answer is about D-2 as well.
    more = command_mail("answer-reply", f"Re: {answer.subject}", "value: 7000", to=answer.message["Reply-To"],
                        headers=f"In-Reply-To: {answer.message_id}")
    assert import_mail(team, tmp_path, more) == "imported 1 message into crm: 1 command\n"
    assert (deal(team, "D-2")["value"], deal(team, "D-1")["value"]) == (7000, None)
    assert [a.subject for a in answers(factory)] == ["inboxcrm: done (D-2)"] * 2


# -- f: the audit trail ------------------------------------------------------------------------

def test_every_change_by_email_is_audited_under_the_emails_message_id(team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path)
    for address in ("nora@fieldworks.example", "carla@northwind.example"):
        team("lead", "add", "--email", address, "--owner", "alice", "--value", "5000")
    mail = command_mail("many-changes", "[D-1] stage: qualified", "[D-1] value: 12000\r\nowner: bob\r\n"
                        "[D-1] next: call them by friday\r\n[D-2] note: budget approved\r\n[D-2] snooze: 2 weeks\r\n"
                        "[D-2] lost: chose a competitor", to=personal_address(team, "alice"))
    assert import_mail(team, tmp_path, mail) == "imported 1 message into crm: 1 command\n"

    why = "message <many-changes@acme.example>"
    one, two = deal(team, "D-1"), deal(team, "D-2")
    assert (one["stage"], one["value"], one["owner"], one["next_step"]) == ("Qualified", 12000, "bob", "call them")
    assert a_friday_within_a_week(one["next_step_due"])
    entries = command_audit(factory)
    assert {reason for _, reason, _ in entries} == {why}
    assert [(d, detail["command"], detail["field"], detail["old"], detail["new"]) for d, _, detail in entries] == [
        (1, "[D-1] stage: qualified", "stage", "New", "Qualified"),
        (1, "[D-1] value: 12000", "value", "5000.00", "12000.00"),
        (1, "owner: bob", "owner", "alice", "bob"),
        (1, "[D-1] next: call them by friday", "next-step", None, f"call them (due {one['next_step_due']}, owner bob)"),
        (2, "[D-2] note: budget approved", "note", None, "budget approved"),
        (2, "[D-2] snooze: 2 weeks", "snooze", None, (datetime.now(UTC).date() + timedelta(weeks=2)).isoformat()),
        (2, "[D-2] lost: chose a competitor", "stage", "New", "Lost")]
    assert (two["stage"], two["lost_reason"]) == ("Lost", "chose a competitor")


# -- regressions found by the attack table ----------------------------------------------------------

def test_a_reps_mail_to_a_prospect_with_crm_in_cc_is_logged_on_the_deal_not_read_as_commands(
        team, factory, config_file, tmp_path):
    """Cc or Bcc to the CRM address is how many teams log mail: it stays the prospect's conversation."""
    enable_commands(team, config_file, tmp_path)
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    data = command_mail("cc-log", "Your quote [D-1] next: call", "Hi Nora, the quote is attached.",
                        to="Nora <nora@fieldworks.example>", headers=f"Cc: {CRM}")
    import_mail(team, tmp_path, data)
    logged = stored(factory, "cc-log@acme.example")
    assert (logged.status, logged.reason, logged.deal_id) == ("processed", "contact", 1)
    assert deal(team)["next_step"] is None and answers(factory) == []


def test_forged_mail_in_a_reps_name_does_not_use_up_the_reps_burst_allowance(team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path,
                    commands='trusted_authserv_ids = ["mx.acme.example"]\nburst_limit = 2\n')
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    failing = "Authentication-Results: mx.acme.example; dmarc=fail header.from=acme.example"
    for n in range(3):
        import_mail(team, tmp_path, command_mail(f"forged-{n}", "[D-1] lost: forged", headers=failing))
        assert stored(factory, f"forged-{n}@acme.example").reason == "refused-failed-auth"
    passing = "Authentication-Results: mx.acme.example; dmarc=pass header.from=acme.example"
    import_mail(team, tmp_path, command_mail("genuine", "[D-1] note: real", headers=passing))
    assert stored(factory, "genuine@acme.example").reason == "command-applied"
    assert deal(team)["stage"] == "New" and [n["text"] for n in deal(team)["notes"]] == ["real"]


# -- a rep's own tagged mail outside the commands mailbox ------------------------------------------

def _feed_into(config_file, factory, mailbox: str, folder: str, data: bytes):
    from inboxcrm.app.importer import feed
    from inboxcrm.store.records import mailbox_info
    from inboxcrm.values import RawMessage

    with factory() as s:
        info = mailbox_info(s, mailbox)
    feed(factory, load_config(config_file, True), info, [RawMessage(data, f"test:{folder}:{len(data)}", folder)])


TRUSTING = 'trusted_authserv_ids = ["mx.acme.example"]'


@pytest.mark.parametrize("folder, trusted, headers, outcome, told", [
    # only alice's own login puts mail in her Sent folder
    ("Sent", "", "", ("command", "command-applied"), ["inboxcrm: done (D-1)"]),
    # anyone can write alice's address in From: a tag alone is not enough
    ("INBOX", "", "", ("internal", "internal"), []),
    ("INBOX", TRUSTING, "Authentication-Results: mx.acme.example; dmarc=pass header.from=acme.example",
     ("command", "command-applied"), ["inboxcrm: done (D-1)"]),
    # vouched for by nobody: the proof is missing, and alice is told how to send it
    ("INBOX", TRUSTING, "", ("refused", "refused-unproven"), ["inboxcrm: not obeyed"]),
    # the team's server failed it: refused even where only alice's login could have put it
    ("Sent", TRUSTING, "Authentication-Results: mx.acme.example; dmarc=fail header.from=acme.example",
     ("refused", "refused-failed-auth"), []),
])
def test_a_reps_tagged_mail_to_a_colleague_is_a_command_only_where_it_is_vouched_for(
        team, factory, config_file, tmp_path, folder, trusted, headers, outcome, told):
    enable_commands(team, config_file, tmp_path, trusted, mailbox=False)
    team("mailbox", "add", "alice-box", "--role", "rep", "--owner", "alice")
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    data = command_mail(f"tagged-{folder}", "[D-1] stage: qualified", to="Bob <bob@acme.example>", headers=headers)
    _feed_into(config_file, factory, "alice-box", folder, data)
    found = stored(factory, f"tagged-{folder}@acme.example")
    assert (found.status, found.reason) == outcome
    assert deal(team)["stage"] == ("Qualified" if found.status == "command" else "New")
    assert [a.subject for a in answers(factory)] == told
    assert {a.to_address for a in answers(factory)} <= {"alice@acme.example"}


def test_command_mail_from_before_the_mailbox_was_added_is_history_and_not_obeyed(team, factory, config_file,
                                                                                  tmp_path):
    """A first sync backfills a month: last month's "[D-1] lost" must not replay today."""
    enable_commands(team, config_file, tmp_path)
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    import_mail(team, tmp_path, redate(command_mail("old-order", "[D-1] lost: went quiet"),
                                       datetime.now(UTC) - timedelta(days=20)))
    found = stored(factory, "old-order@acme.example")
    assert (found.status, found.reason) == ("ignored", "command-history") and "before mailbox crm" in found.detail
    assert deal(team)["stage"] == "New" and answers(factory) == []


# -- fail closed: what a rep and the admin are told ---------------------------------------------

def test_a_fresh_command_without_proof_is_answered_with_the_reps_own_address_and_a_reply_to_that_works(
        team, factory, config_file, tmp_path):
    """Nothing under [commands]: a command to the bare address proves nothing, so it changes
    nothing; the rep's answer (to her address on record) says what is needed and hands her
    personal address, and answering it is enough."""
    enable_commands(team, config_file, tmp_path, commands=None)
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    bare = command_mail("bare", "[D-1] stage: qualified", headers="Reply-To: Collector <collector@evil.example>")
    assert import_mail(team, tmp_path, bare) == "imported 1 message into crm: 1 refused\n"
    assert stored(factory, "bare@acme.example").reason == "refused-unproven" and deal(team)["stage"] == "New"

    [answer] = answers(factory)
    personal = personal_address(team, "alice")
    assert (answer.to_address, answer.subject) == ("alice@acme.example", "inboxcrm: not obeyed")
    assert answer.message["Reply-To"] == personal
    assert answer.text.startswith(
        "Hi alice,\n\nNothing was changed: this email did not prove that it came from you.\n\n"
        "Here, " + load_config(config_file, True).commands.describe() + ".\n\n"
        "To retry, send the same commands to your personal command address:\n\n  " + personal + "\n")

    retry = command_mail("retry", "Re: inboxcrm: not obeyed", "[D-1] stage: qualified", to=answer.message["Reply-To"],
                         headers=f"In-Reply-To: {answer.message_id}")
    assert import_mail(team, tmp_path, retry) == "imported 1 message into crm: 1 command\n"
    assert deal(team)["stage"] == "Qualified"


def test_under_proof_auth_the_answer_asks_for_the_reps_own_mailbox_not_the_token(team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path, 'trusted_authserv_ids = ["mx.acme.example"]\nproof = "auth"')
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    import_mail(team, tmp_path, command_mail("unsigned", "[D-1] won", to=personal_address(team, "alice")))
    assert stored(factory, "unsigned@acme.example").reason == "refused-unproven" and deal(team)["stage"] == "New"
    [answer] = answers(factory)
    assert "Here, a command email needs a pass from a trusted receiving server (mx.acme.example) or must come " \
           "from the rep's own Sent folder.\n\nTo retry, send the same commands from your own mailbox" in answer.text
    assert "crm+" not in answer.text  # the token alone would be refused again


@pytest.mark.parametrize("commands, told, warned", [
    (None, "proof=auth-or-token rule=\"a command email needs the rep's reply token", ["commands-unauthenticated"]),
    ('trusted_authserv_ids = ["mx.acme.example"]',
     "proof=auth-or-token rule=\"a command email needs a pass from a trusted receiving server (mx.acme.example) or "
     "the rep's reply token", []),
    ('trusted_authserv_ids = ["mx.acme.example"]\nproof = "address-only"', "proof=address-only",
     ["commands-address-only"]),
    ('proof = "address-only"', "proof=address-only", ["commands-address-only", "commands-unauthenticated"]),
])
def test_the_daemon_says_at_start_what_a_command_must_prove_and_warns_when_it_is_weak(
        team, start, config_file, tmp_path, commands, told, warned):  # noqa: F811 - "start" is a fixture
    enable_commands(team, config_file, tmp_path, commands, mailbox=False)
    daemon = start()
    daemon.notify.wait_for("READY=1")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    log = daemon.log()
    assert f"level=info event=commands-proof {told}" in log
    assert re.findall(r"level=warning event=(commands-[a-z-]+)", log) == warned
