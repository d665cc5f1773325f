"""The sync commands against a real Dovecot: ``mailbox add`` with a connection, ``mailbox test``
naming exactly what is wrong, ``poll --once`` with its figures, ``status`` and ``status --json``."""
from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func, select, update

from inboxcrm.core.leases import mailbox_resource
from inboxcrm.store import lease_queries
from inboxcrm.store.db import session_factory, transaction
from inboxcrm.store.models import AuditEntry, Daemon, Deal, FolderPosition, Mailbox, Message

from .conftest import mail, refused
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"

LEAD = mail("pipeline-new-lead-company.eml")


def private(path, text: str):
    """A secret file as an admin writes one: readable by its owner only (others are refused)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def add_imap(cli, server, user, name: str = "inbox", *extra: str, password_file=None):
    return cli("mailbox", "add", name, "--role", "capture", "--owner", "alice", "--host", server.host,
               "--port", str(server.port), "--ca-file", str(server.tls.ca), "--user", user.name,
               "--password-file", str(password_file or server.secret_file(user)), *extra)


def test_mailbox_add_stores_where_the_secret_is_never_the_secret(team, dovecot, engine):
    alice = dovecot.add_user("alice", "s3cret-pw")
    out = add_imap(team, dovecot, alice, "inbox", "--folder", "\\Inbox", "--since", "2026-01-05").stdout
    assert f"IMAP: alice@127.0.0.1:{dovecot.port} (tls), folders \\Inbox, since 2026-01-05" in out
    with session_factory(engine)() as session:
        row = session.scalar(select(Mailbox).where(Mailbox.name == "inbox"))
        audit = session.scalar(select(AuditEntry).where(AuditEntry.entity == "mailbox",
                                                        AuditEntry.entity_id == row.id))
    assert row.connection["secret"] == {"file": str(dovecot.secret_file(alice))}
    assert "s3cret-pw" not in json.dumps(row.connection) and "s3cret-pw" not in json.dumps(audit.detail)
    assert audit.detail["imap"] == f"alice@127.0.0.1:{dovecot.port}"
    listed = {m["name"]: m for m in json.loads(team("mailbox", "list", "--json").stdout)}
    assert listed["inbox"]["imap"] == f"alice@127.0.0.1:{dovecot.port}" and listed["sales"]["imap"] is None


def test_mailbox_add_refuses_connection_options_without_host_and_two_secret_sources(team, tmp_path):
    assert "need --host" in refused(team, "mailbox", "add", "x", "--role", "capture", "--user", "u")
    assert "give only one of --password-env, --password-file, --password-command" in refused(
        team, "mailbox", "add", "x", "--role", "capture", "--host", "h", "--user", "u",
        "--password-env", "A", "--password-file", str(tmp_path / "pw"))
    assert "--password-env, --password-file, --password-command" in refused(
        team, "mailbox", "add", "x", "--role", "capture", "--host", "h", "--user", "u")


def test_mailbox_test_lists_the_folders_it_would_read(team, dovecot):
    alice = dovecot.add_user("alice", "pw")
    dovecot.append(alice, "INBOX", [LEAD])
    dovecot.append(alice, "Sent", [mail("pipeline-outbound-cold.eml")] * 2)
    add_imap(team, dovecot, alice)
    out = team("mailbox", "test", "inbox").stdout
    assert out.startswith(f"inbox: logged in as alice at 127.0.0.1:{dovecot.port} (tls)")
    assert "  INBOX (\\Inbox): 1 message, uidvalidity" in out
    assert "  Sent (\\Sent): 2 messages, uidvalidity" in out


def test_mailbox_test_says_exactly_what_is_wrong(team, dovecot, tmp_path):
    alice = dovecot.add_user("alice", "pw")
    wrong = tmp_path / "wrong-password"
    private(wrong, "not-it\n")
    add_imap(team, dovecot, alice, "wrong-password", password_file=wrong)
    team("mailbox", "add", "wrong-port", "--role", "capture", "--host", "127.0.0.1", "--port", str(dovecot.starttls_port),
         "--security", "tls", "--user", "alice", "--ca-file", str(dovecot.tls.ca),
         "--password-file", str(dovecot.secret_file(alice)))
    team("mailbox", "add", "closed-port", "--role", "capture", "--host", "127.0.0.1", "--port", "1",
         "--user", "alice", "--password-file", str(dovecot.secret_file(alice)))
    team("mailbox", "add", "other-ca", "--role", "capture", "--host", "127.0.0.1", "--port", str(dovecot.port),
         "--ca-file", str(dovecot.tls.other_ca), "--user", "alice", "--password-file", str(dovecot.secret_file(alice)))
    add_imap(team, dovecot, alice, "no-folder", "--folder", "Proposals")
    add_imap(team, dovecot, alice, "no-role", "--folder", "\\Flagged")
    team("mailbox", "add", "no-dns", "--role", "capture", "--host", "imap.invalid", "--user", "alice",
         "--password-file", str(dovecot.secret_file(alice)))
    expected = {
        "closed-port": "error: connect: cannot connect to 127.0.0.1:1",
        "wrong-port": "error: tls: TLS handshake with 127.0.0.1",  # a plain-text listener answers TLS
        "other-ca": "error: tls: certificate verify failed for 127.0.0.1",
        "wrong-password": "error: login: the server refused user alice",
        "no-folder": 'error: folder: no folder named "Proposals"; folders are: ',
        "no-role": "error: folder: no folder with \\Flagged; folders are: ",
        "no-dns": "error: dns: cannot resolve imap.invalid",
    }
    for name, line in expected.items():
        assert refused(team, "mailbox", "test", name).startswith(line), name
    assert "not-it" not in refused(team, "mailbox", "test", "wrong-password")
    assert 'has no IMAP connection' in refused(team, "mailbox", "test", "sales")
    assert 'unknown mailbox "nope"' in refused(team, "mailbox", "test", "nope")


def test_poll_once_syncs_reports_and_a_failing_mailbox_does_not_stop_the_others(team, dovecot, engine, tmp_path):
    alice, bob = dovecot.add_user("alice", "pw"), dovecot.add_user("bob", "pw")
    dovecot.append(alice, "INBOX", [LEAD, mail("classify-newsletter.eml")])
    dovecot.append(alice, "Sent", [mail("pipeline-outbound-cold.eml")])
    wrong = tmp_path / "wrong"
    private(wrong, "nope\n")
    add_imap(team, dovecot, alice, "a-inbox")
    add_imap(team, dovecot, bob, "b-broken", password_file=wrong)
    before = dovecot.flags(alice, "INBOX")

    result = team("poll", "--once", code=1)
    assert "a-inbox: 3 new messages\n  INBOX (\\Inbox): 2 messages: 1 noise, 1 processed\n" \
           "  Sent (\\Sent): 1 message: 1 unmatched\n" in result.stdout
    assert "b-broken: error: login: the server refused user bob" in result.stderr
    assert 'failed: b-broken (see "inboxcrm status")' in result.stderr
    assert dovecot.flags(alice, "INBOX") == before  # read, not touched
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count(Deal.id))) == 1  # the lead; the newsletter is noise

    again = team("poll", "--once", "a-inbox")  # exit 0: only the healthy one
    assert again.stdout == "a-inbox: 0 new messages\n  INBOX (\\Inbox): 0 messages\n  Sent (\\Sent): 0 messages\n"
    assert "has no IMAP connection" in refused(team, "poll", "--once", "sales")


def test_poll_leaves_a_mailbox_a_running_daemon_works_to_it(team, dovecot, engine):
    """A pass beside the daemon's would run under no lease: ``poll`` says who works the mailbox
    and touches nothing, and works it again once that daemon is gone."""
    alice = dovecot.add_user("alice", "pw")
    dovecot.append(alice, "INBOX", [LEAD])
    add_imap(team, dovecot, alice, "inbox")
    factory = session_factory(engine)
    with transaction(factory) as session:
        box_id = session.scalar(select(Mailbox.id).where(Mailbox.name == "inbox"))
        now = lease_queries.db_now(session)
        lease_queries.register(session, "d1", "crm", 4242, now, 30)
        assert lease_queries.take(session, [(mailbox_resource(box_id), box_id)], 1, "d1", now, 30)

    result = team("poll", "--once")
    assert 'inbox: left to daemon "d1" (host crm, pid 4242), which works it now (see "inboxcrm status")\n' \
           in result.stdout
    with factory() as session:
        assert session.scalar(select(func.count(Message.id))) == 0
        assert session.scalar(select(func.count(FolderPosition.id))) == 0

    with transaction(factory) as session:  # d1 stopped renewing: gone (kill -9) and its lease with it
        session.execute(update(Daemon).values(expires_at=lease_queries.db_now(session) - timedelta(seconds=1)))
    assert "inbox: 1 new message\n" in team("poll", "--once", "inbox").stdout


def test_status_shows_positions_backlog_and_a_loud_failing_mark(team, dovecot, tmp_path):
    alice, bob = dovecot.add_user("alice", "pw"), dovecot.add_user("bob", "pw")
    dovecot.append(alice, "INBOX", [LEAD])
    wrong = tmp_path / "wrong"
    private(wrong, "nope\n")
    add_imap(team, dovecot, alice, "a-inbox")
    add_imap(team, dovecot, bob, "b-broken", password_file=wrong)
    team("poll", "--once", code=1)
    team("poll", "--once", "b-broken", code=1)

    text = team("status", code=1).stdout  # 1: a mailbox is failing
    assert f"a-inbox (capture) alice@127.0.0.1:{dovecot.port}\n  last success: " in text
    assert "  INBOX [inbox]: uidvalidity " in text and "last uid 1, backlog 0" in text
    assert f"b-broken (capture) bob@127.0.0.1:{dovecot.port}  FAILING (2 failed passes in a row)" in text
    assert "  last success: never\n  last error:   " in text and "login: the server refused user bob" in text
    assert "sales (capture) import only (no IMAP connection)" in text
    assert "nope" not in text

    rows = {m["name"]: m for m in json.loads(team("status", "--json", code=1).stdout)["mailboxes"]}
    assert rows["b-broken"]["failing"] is True and rows["b-broken"]["failures"] == 2
    assert rows["b-broken"]["last_error"].startswith("login: the server refused user bob")
    assert rows["a-inbox"]["failing"] is False and rows["a-inbox"]["last_success_at"]
    inbox = next(f for f in rows["a-inbox"]["folders"] if f["folder"] == "INBOX")
    assert (inbox["last_uid"], inbox["backlog"], inbox["role"]) == (1, 0, "inbox")

    dovecot.append(alice, "INBOX", [mail("pipeline-freemail-lead.eml")])
    team("poll", "--once", "a-inbox")
    rows = {m["name"]: m for m in json.loads(team("status", "--json", code=1).stdout)["mailboxes"]}
    assert next(f for f in rows["a-inbox"]["folders"] if f["folder"] == "INBOX")["last_uid"] == 2


def test_mailbox_connect_gives_an_import_mailbox_imap_and_replaces_a_connection(team, dovecot, engine, tmp_path):
    # Passwords no temporary folder name can contain by chance: the stored connection must hold neither.
    alice, bob = dovecot.add_user("alice", "alice-Secret-7"), dovecot.add_user("bob", "bob-Secret-9")
    dovecot.append(alice, "INBOX", [LEAD])
    server = ["--host", dovecot.host, "--port", str(dovecot.port), "--ca-file", str(dovecot.tls.ca)]
    assert "needs --host" in refused(team, "mailbox", "connect", "sales")
    assert 'unknown mailbox "nope"' in refused(team, "mailbox", "connect", "nope", *server, "--user", "alice",
                                               "--password-file", str(dovecot.secret_file(alice)))

    # "sales" (from the team fixture) was import-only; now it is read over IMAP.
    out = team("mailbox", "connect", "sales", *server, "--user", "alice",
               "--password-file", str(dovecot.secret_file(alice))).stdout
    assert out.startswith(f"mailbox sales now reads IMAP alice@{dovecot.host}:{dovecot.port} (tls)")
    assert "sales: 1 new message" in team("poll", "--once", "sales").stdout

    # A new secret source for the same account keeps the positions: nothing is read again.
    moved = tmp_path / "moved-secret"
    private(moved, dovecot.secret_file(alice).read_text())
    team("mailbox", "connect", "sales", *server, "--user", "alice", "--password-file", str(moved))
    assert "sales: 0 new messages" in team("poll", "--once", "sales").stdout

    # Another account starts afresh from its since date; mail already stored is not doubled.
    dovecot.append(bob, "INBOX", [LEAD])
    team("mailbox", "connect", "sales", *server, "--user", "bob", "--password-file", str(dovecot.secret_file(bob)))
    assert "sales: 1 new message" in team("poll", "--once", "sales").stdout
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count(Deal.id))) == 1
        box = session.scalar(select(Mailbox).where(Mailbox.name == "sales"))
        stored = json.dumps(box.connection)
        assert box.connection["user"] == "bob" and "Secret-7" not in stored and "Secret-9" not in stored
        actions = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "connect")).all()
    assert [a["positions"] for a in actions] == ["reset", "kept", "reset"]


def test_status_exits_1_while_a_mailbox_fails_and_0_once_it_recovers(team, tmp_path):
    """What monitoring relies on: the exit status alone, with or without --json."""
    secret = private(tmp_path / "pw", "pw\n")
    team("mailbox", "add", "remote", "--role", "capture", "--host", "127.0.0.1", "--port", "1", "--user", "alice",
         "--password-file", str(secret))
    assert team("status").stdout.endswith("commands by email: off (no [commands] address and no "
                                          "commands mailbox)\n")  # never polled: not failing
    team("poll", "--once", code=1)
    text = team("status", code=1).stdout
    assert "remote (capture) alice@127.0.0.1:1  FAILING (1 failed pass in a row)" in text
    assert text.endswith("failing: remote\n")
    assert json.loads(team("status", "--json", code=1).stdout)["mailboxes"][0]["failing"] is True
    team("mailbox", "remove", "remote")
    assert "failing" not in team("status").stdout


def test_status_says_what_commands_by_email_accept(team, config_file):
    base = config_file.read_text()
    config_file.write_text(base + '\n[commands]\naddress = "crm@acme.example"\n')
    line = team("status").stdout.splitlines()[-1]
    assert line.startswith("commands by email: a command email needs the rep's reply token")
    assert "no trusted server is configured ([commands] trusted_authserv_ids)" in line

    config_file.write_text(base + '\n[commands]\naddress = "crm@acme.example"\n'
                                  'trusted_authserv_ids = ["mx.acme.example"]\n')
    line = team("status").stdout.splitlines()[-1]
    assert line == ("commands by email: a command email needs a pass from a trusted receiving server "
                    "(mx.acme.example) or the rep's reply token (their crm+TOKEN@ address; see `inboxcrm rep token`)")

    config_file.write_text(base + '\n[commands]\naddress = "crm@acme.example"\n'
                                  'proof = "address-only"\n')
    assert team("status").stdout.splitlines()[-1].startswith(
        "WARNING: commands by email: a command email needs only a rep's From address")
    report = json.loads(team("status", "--json").stdout)["commands"]
    assert (report["enabled"], report["proof"], report["warning"]) == (True, "address-only", True)

    config_file.write_text(base)  # a commands mailbox alone turns them on too
    team("mailbox", "add", "crm", "--role", "commands")
    assert json.loads(team("status", "--json").stdout)["commands"]["enabled"] is True
