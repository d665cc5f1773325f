"""``digest``, ``outbox`` and ``rep digest`` on the command line, against a real SMTP server."""
from __future__ import annotations

import json
import re
from datetime import date

import pytest
from sqlalchemy import update

from inboxcrm.store.db import make_engine, session_factory, transaction
from inboxcrm.store.models import Deal, OutboxMessage

from .conftest import refused
from .smtp_server import SmtpServer


@pytest.fixture
def server():
    with SmtpServer() as running:
        yield running


@pytest.fixture
def mailing(team, config_file, server, db_url):
    """The team with an SMTP server in its config, and alice with an overdue next step."""
    config_file.write_text(config_file.read_text() + "\n[smtp]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in server.config().items())
        + '\n[commands]\naddress = "crm@acme.example"\n')
    team("lead", "add", "--email", "jane@prospect.example", "--name", "Jane <b>Doe</b>", "--owner", "alice")
    team("deal", "next", "D-1", "Send the proposal", "--due", "tomorrow")
    engine = make_engine(db_url)  # overdue since long ago: a due date a person can no longer give
    with transaction(session_factory(engine)) as s:
        s.execute(update(Deal).where(Deal.id == 1).values(next_step_due=date(2020, 1, 6)))
    engine.dispose()
    return team


def test_rep_digest_shows_and_changes_the_schedule(team):
    out = team("rep", "digest", "bob").stdout
    assert out.startswith("bob: digest at 08:00 Europe/Berlin, mon-fri, only when there is something to say; next ")
    out = team("rep", "digest", "bob", "--time", "07:30", "--days", "mon,wed", "--always").stdout
    assert "digest at 07:30 Europe/Berlin, mon,wed, always, even when empty" in out
    assert re.search(r"next \d{4}-\d\d-\d\d 07:30 CES?T to bob@acme.example", out)
    assert team("rep", "digest", "bob", "--off").stdout.strip() == "bob: digest off"
    assert "digest at 07:30" in team("rep", "digest", "bob", "--on", "--when-needed").stdout


def test_rep_digest_refuses_bad_values_saying_what_would_do(team):
    assert 'expected a time of day as "HH:MM"' in refused(team, "rep", "digest", "bob", "--time", "7pm")
    assert '"mon-fri", "mon,wed,fri" or "daily"' in refused(team, "rep", "digest", "bob", "--days", "workdays")
    assert 'unknown rep "carol"; reps are: alice, bob' in refused(team, "rep", "digest", "carol")


def test_digest_preview_renders_without_queueing(mailing, tmp_path):
    page = tmp_path / "alice.html"
    out = mailing("digest", "preview", "alice", "--date", "2026-11-23", "--html", str(page)).stdout
    assert out.startswith("Subject: inboxcrm: 1 deal: 1 overdue")
    assert "D-1" in out and "Send the proposal" in out and "Jane <b>Doe</b>" in out
    assert f"HTML version: {page.resolve()}" in out
    html = page.read_text()
    assert "Jane &lt;b&gt;Doe&lt;/b&gt;" in html and "<b>Doe</b>" not in html
    assert "the outbox is empty" in mailing("outbox", "list").stdout


def test_digest_send_sends_once_per_rep_and_day(mailing, server):
    out = mailing("digest", "send", "alice", "--date", "2026-11-23").stdout
    assert "queued digest for alice on 2026-11-23 (outbox 1)" in out and "outbox: 1 sent" in out
    again = mailing("digest", "send", "alice", "--date", "2026-11-23").stdout
    assert "already sent: digest for alice on 2026-11-23 is outbox 1, status sent" in again
    assert "outbox: nothing due" in again
    assert len(server.messages) == 1 and server.messages[0].rcpt_tos == ("alice@acme.example",)
    everyone = mailing("digest", "send", "--date", "2026-11-23").stdout
    assert "already sent: digest for alice" in everyone
    assert "queued digest for bob on 2026-11-23 (outbox 2): nothing needs them, sent anyway" in everyone
    assert len(server.messages) == 2


def test_digest_send_without_smtp_keeps_the_mail_waiting(team):
    team("lead", "add", "--email", "jane@prospect.example", "--owner", "alice")
    out = team("digest", "send", "alice").stdout
    assert "queued digest for alice" in out and "no SMTP server is configured" in out
    (row,) = json.loads(team("outbox", "list", "--json").stdout)
    assert row["status"] == "pending" and row["kind"] == "digest"


def test_outbox_list_show_and_retry(mailing, server, db_url):
    server.reply = "550 Mailbox unavailable"
    mailing("digest", "send", "alice", "--date", "2026-11-23")
    listed = mailing("outbox", "list").stdout
    assert "FAILED" in listed and "550 Mailbox unavailable" in listed
    shown = mailing("outbox", "show", "1").stdout
    assert "outbox 1: digest failed, 1 attempt" in shown
    assert "X-InboxCRM: digest" in shown and "Auto-Submitted: auto-generated" in shown and "Send the proposal" in shown
    server.reply = "250 OK"
    out = mailing("outbox", "retry", "--all").stdout
    assert "outbox 1 (digest to alice@acme.example): back in the queue" in out and "outbox: 1 sent" in out
    assert "is sent; only failed or unknown" in refused(mailing, "outbox", "retry", "1")
    assert 'no outbox message 99; see "inboxcrm outbox list"' in refused(mailing, "outbox", "retry", "99")
    assert "give an outbox ID or --all" in refused(mailing, "outbox", "retry")

    # A message whose delivery is unknown is shown loudly and only retried by its id.
    mailing("digest", "send", "bob", "--date", "2026-11-23")
    engine = make_engine(db_url)
    with transaction(session_factory(engine)) as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.id == 2).values(status="unknown"))
    engine.dispose()
    listed = mailing("outbox", "list").stdout
    assert "UNKNOWN" in listed and "may or may not have these (ids 2)" in listed
    assert mailing("outbox", "retry", "--all").stdout.startswith("no failed messages to retry")
    assert "outbox 2 (digest to bob@acme.example): back in the queue" in mailing("outbox", "retry", "2").stdout
    assert [json.loads(mailing("outbox", "list", "--json").stdout)[i]["status"] for i in (0, 1)] == ["sent", "sent"]


def test_outbox_test_reports_the_connection(mailing, server):
    assert mailing("outbox", "test").stdout.strip() == f"SMTP 127.0.0.1:{server.port}: connected with plain"
    server.stop()
    assert f"SMTP 127.0.0.1:{server.port}: connect:" in refused(mailing, "outbox", "test")


def test_outbox_list_filters_by_status(mailing):
    mailing("digest", "send", "--date", "2026-11-23")
    assert [r["status"] for r in json.loads(mailing("outbox", "list", "--status", "sent", "--json").stdout)] == \
        ["sent", "sent"]
    assert "Usage:" in refused(mailing, "outbox", "list", "--status", "lost")


def test_digest_preview_refuses_an_html_path_it_cannot_write_before_printing(mailing, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    said = refused(mailing, "digest", "preview", "alice", "--html", str(blocker / "alice.html"))
    assert said == (f"error: cannot write {blocker / 'alice.html'}: Not a directory; "
                    f"choose a path in a folder you can write to\n")


def test_outbox_list_says_when_it_leaves_rows_out(mailing):
    for day in ("2026-11-23", "2026-11-24", "2026-11-25"):
        mailing("digest", "send", "alice", "--date", day)
    capped = mailing("outbox", "list", "--limit", "2").stdout
    assert [line.split()[0] for line in capped.splitlines()[1:3]] == ["3", "2"]
    assert capped.endswith("\nshowing the newest 2 messages besides the failed and unknown ones; older ones are "
                           "left out (--limit N shows more)\n")
    as_json = mailing("outbox", "list", "--status", "sent", "--limit", "2", "--json")
    assert [r["id"] for r in json.loads(as_json.stdout)] == [3, 2]
    assert as_json.stderr.strip().startswith("showing the newest 2 sent messages; older ones are left out")
    assert "left out" not in mailing("outbox", "list", "--limit", "3").output
    assert "is not in the range x>=1" in refused(mailing, "outbox", "list", "--limit", "0")


def test_the_old_command_address_key_still_works_and_every_command_says_where_it_moved(team, config_file, tmp_path):
    """A file written before [commands] address: digests keep their quick actions, and the admin
    is told (on stderr, so scripts reading stdout are undisturbed) which key to move it to."""
    config_file.write_text(config_file.read_text() + '\n[digest]\ncommand_address = "crm@acme.example"\n')
    team("lead", "add", "--email", "jane@prospect.example", "--owner", "alice")
    result = team("digest", "preview", "alice", "--html", str(tmp_path / "alice.html"))
    warning = f"warning: {config_file}: [digest] command_address is deprecated; move it to [commands] address"
    assert warning in result.stderr and "deprecated" not in result.stdout
    assert re.search(r"mailto:crm%2B\w+@acme.example", (tmp_path / "alice.html").read_text())  # with the rep's token
