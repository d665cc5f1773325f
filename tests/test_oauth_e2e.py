"""OAuth2 mailboxes end to end: the local authorization server (tests/oauth_server.py) and a private
Dovecot that checks XOAUTH2 bearer tokens with its own ``oauth2`` passdb against that server's
RFC 7662 introspection, as Google's and Microsoft's IMAP servers check theirs.

What an admin relies on: ``mailbox authorize`` (device flow) then ``poll`` records mail; a process
killed with SIGKILL between the token endpoint's answer to a refresh and the write-back of the
rotated token loses nothing; a revoked grant is loud (``status``, the daemon's log once, one email
to the admin a day) while the other mailboxes go on, and it is retried at once when re-authorized.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from sqlalchemy import select

from inboxcrm.mail import oauth
from inboxcrm.store.db import session_factory
from inboxcrm.store.models import Deal, Mailbox, OutboxMessage

from .dovecot import started
from .oauth_server import OAuthServer
from .test_daemon import NotifySocket, count, eventually

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "inboxcrm-e2e"
ADMIN = "it@acme.example"
REVOKED = "OAuth grant revoked or expired: run `inboxcrm mailbox authorize {name}`"


def lead(i: int) -> bytes:
    return (f"From: Person {i} <p{i}@company{i}.example>\r\nTo: sales@acme.example\r\n"
            f"Subject: Inquiry {i}\r\nDate: {datetime.now(UTC):%a, %d %b %Y %H:%M:%S +0000}\r\n"
            f"Message-ID: <oauth-lead-{i}-{uuid.uuid4().hex[:8]}@company{i}.example>\r\n\r\n"
            f"Hello, a quote for {i} seats please.\r\n").encode()


@pytest.fixture
def provider():
    # device_interval 0.2 s: the CLI's device flow polls fast; the flow itself is tested in test_oauth.py
    with OAuthServer(device_interval=0.2) as server:
        yield server


@pytest.fixture
def imap(tls_files, provider):
    """A private Dovecot taking passwords (passwd-file) and bearer tokens (oauth2 passdb)."""
    server = started(tls_files, introspection_url=provider.introspection_url)
    yield server
    server.close()


@pytest.fixture
def admin_config(config_file):
    config_file.write_text(config_file.read_text().replace("[team]\n", f'[team]\nadmin_address = "{ADMIN}"\n', 1))
    return config_file


def add_oauth_mailbox(cli, provider, imap, user, name: str, token_file: Path) -> None:
    cli("mailbox", "add", name, "--role", "capture", "--owner", "alice", "--host", imap.host,
        "--port", str(imap.port), "--ca-file", str(imap.tls.ca), "--user", user.name, "--auth", "xoauth2",
        "--oauth-provider", "google", "--oauth-client-id", CLIENT_ID, "--oauth-token-url", provider.token_url,
        "--oauth-device-url", provider.device_url, "--oauth-auth-url", provider.auth_url,
        "--token-file", str(token_file))


def add_password_mailbox(cli, imap, user, name: str) -> None:
    cli("mailbox", "add", name, "--role", "capture", "--owner", "bob", "--host", imap.host, "--port",
        str(imap.port), "--ca-file", str(imap.tls.ca), "--user", user.name,
        "--password-file", str(imap.secret_file(user)))


def grant_file(provider, user, token_file: Path) -> str:
    """A token file as ``mailbox authorize`` leaves it (the flow itself: the first test)."""
    token = provider.grant(user.name, CLIENT_ID)
    oauth.write_token_file(token_file, oauth.TokenFile(token, "https://mail.google.com/", provider.token_url,
                                                       CLIENT_ID, "2026-01-01T00:00:00+00:00"))
    oauth.forget_access_token(token_file)  # this test process's cache: the grant is new
    return token


def stored_token(token_file: Path) -> str:
    return json.loads(token_file.read_text())["refresh_token"]


def inboxcrm(config_file: Path, db_url: str, *args: str, **popen) -> subprocess.Popen:
    """``inboxcrm ARGS`` as its own process, as an admin or systemd starts it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               INBOXCRM_LOG_LEVEL="INFO")
    env.pop("INBOXCRM_CONFIG", None)
    env.pop("INBOXCRM_DATABASE_URL", None)
    env.update(popen.pop("env", {}))
    return subprocess.Popen([sys.executable, "-m", "inboxcrm", "--config", str(config_file), "--database-url", db_url,
                             *args], env=env, stdin=subprocess.DEVNULL, **popen)


def refreshes(provider) -> int:
    return sum(1 for path, grant in provider.requests if path == "/token" and grant == "refresh_token")


# -- Dovecot checks bearer tokens with the provider ------------------------------------------------

def test_dovecot_takes_a_token_the_provider_calls_active_and_refuses_it_once_revoked(provider, imap):
    alice = imap.add_user("alice", "unused-password")
    access = oauth.refresh(oauth.OAuthClient(provider.token_url, CLIENT_ID), provider.grant("alice", CLIENT_ID))
    with IMAPClient(imap.host, imap.port, ssl=True, ssl_context=imap.ssl_context(), timeout=10) as client:
        client.oauth2_login(alice.name, access.access_token)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    assert "Login: user=<alice>, method=XOAUTH2" in imap.log()
    assert ("/introspect", None) in provider.requests  # Dovecot asked the provider, not a list of its own

    provider.revoke("alice")
    with (IMAPClient(imap.host, imap.port, ssl=True, ssl_context=imap.ssl_context(), timeout=10) as client,
          pytest.raises(LoginError, match="AUTHENTICATIONFAILED")):
        client.oauth2_login(alice.name, access.access_token)
    assert "oauth2 failed: Introspection failed: Provided token is not valid" in imap.log()
    with imap.client(alice):  # the password users' passdb is untouched
        pass


# -- connect: authorize, then the first sync --------------------------------------------------------

def test_authorize_with_the_device_flow_then_the_first_poll_records_mail(team, provider, imap, engine, tmp_path,
                                                                         config_file, db_url):
    alice = imap.add_user("alice", "unused-password")
    imap.append(alice, "INBOX", [lead(1)])
    token_file = tmp_path / "grants" / "inbox.json"
    add_oauth_mailbox(team, provider, imap, alice, "inbox", token_file)

    authorize = inboxcrm(config_file, db_url, "mailbox", "authorize", "inbox", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    codes = eventually(provider.pending_user_codes, what="the command asking for a device code")
    provider.approve(codes[0], "alice")  # the admin signs in as alice on a phone
    out, err = authorize.communicate(timeout=30)
    assert authorize.returncode == 0, err
    assert f"enter the code {codes[0]}" in out and 'next: "inboxcrm mailbox test inbox"' in out
    assert provider.is_valid_refresh_token(stored_token(token_file))

    result = team("poll", "--once")
    assert "inbox: 1 new message" in result.stdout
    assert count(engine, Deal.id) == 1
    assert "Login: user=<alice>, method=XOAUTH2" in imap.log()
    status = team("status").stdout
    assert "inbox (capture) alice@127.0.0.1" in status and "FAILING" not in status


# -- keep working: rotation across kill -9 ----------------------------------------------------------

def test_kill_9_between_the_refresh_answer_and_the_write_back_then_a_restart_syncs(
        team, provider, imap, engine, tmp_path, config_file, db_url):
    alice = imap.add_user("alice", "unused-password")
    imap.append(alice, "INBOX", [lead(1)])
    token_file = tmp_path / "grants" / "inbox.json"
    add_oauth_mailbox(team, provider, imap, alice, "inbox", token_file)
    first = grant_file(provider, alice, token_file)

    # The provider answers the refresh, then the process is frozen (SIGSTOP: it runs no further
    # instruction, so it cannot rename a new token file in) and killed with SIGKILL. The answer,
    # with the rotated refresh token, is delivered to a process that never reads it.
    victim: dict[str, subprocess.Popen] = {}
    issued: list[str] = []
    answer = provider.token

    def answer_then_kill(form: dict[str, str]):
        status, body = answer(form)
        if form.get("grant_type") == "refresh_token" and status == 200 and "process" in victim:
            issued.append(body["refresh_token"])
            os.kill(victim["process"].pid, signal.SIGSTOP)
            threading.Timer(0.5, os.kill, (victim["process"].pid, signal.SIGKILL)).start()
        return status, body

    provider.token = answer_then_kill
    victim["process"] = inboxcrm(config_file, db_url, "poll", "--once", stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    assert victim["process"].wait(30) == -signal.SIGKILL
    del victim["process"]
    assert len(issued) == 1 and provider.refresh_tokens_used == [first]  # the provider rotated
    assert stored_token(token_file) == first  # ... and the file never learnt it
    assert count(engine, Deal.id) == 0

    restart = inboxcrm(config_file, db_url, "poll", "--once", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    out, err = restart.communicate(timeout=60)
    assert restart.returncode == 0, err
    assert "inbox: 1 new message" in out and count(engine, Deal.id) == 1
    # The old token still worked (its successor was never used); the file now holds the newest one.
    assert provider.refresh_tokens_used == [first, first]
    rotated = stored_token(token_file)
    assert rotated not in (first, issued[0]) and provider.is_valid_refresh_token(rotated)

    imap.append(alice, "INBOX", [lead(2)])
    oauth.forget_access_token(token_file)  # this process never held one: it refreshes too
    assert "inbox: 1 new message" in team("poll", "--once").stdout
    assert provider.refresh_tokens_used[-1] == rotated
    assert not provider.is_valid_refresh_token(first)  # using the rotated token retired the old one
    assert provider.is_valid_refresh_token(stored_token(token_file))
    assert stat_mode(token_file) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- keep working: a revoked grant is loud, the others go on ----------------------------------------

def test_an_outage_of_the_token_endpoint_is_a_connection_error(team, provider, imap, engine, tmp_path,
                                                               admin_config):
    alice = imap.add_user("alice", "unused-password")
    token_file = tmp_path / "grants" / "inbox.json"
    add_oauth_mailbox(team, provider, imap, alice, "inbox", token_file)
    grant_file(provider, alice, token_file)
    provider.fail_next(1, status=503)
    assert "inbox: error: the OAuth2 endpoint" in team("poll", "--once", code=1).stderr
    status = team("status", code=1).stdout
    assert "answered HTTP 503; trying again later" in status and "authorize" not in status
    assert count(engine, OutboxMessage.id) == 0  # nothing an admin must do: no email
    team("poll", "--once")
    assert "FAILING" not in team("status").stdout


def test_a_revoked_grant_is_loud_once_and_retried_when_authorized_again(
        team, provider, imap, engine, tmp_path, admin_config, db_url):
    provider.access_lifetime = 60  # under a minute of life: every pass buys a token, as after an hour
    alice, bob = imap.add_user("alice", "unused-password"), imap.add_user("bob", "bobs-password")
    token_file = tmp_path / "grants" / "alice.json"
    add_oauth_mailbox(team, provider, imap, alice, "alice-oauth", token_file)
    add_password_mailbox(team, imap, bob, "bob-password")
    grant_file(provider, alice, token_file)
    admin_config.write_text(admin_config.read_text() + "\n[sync]\npoll_interval = 3600\nmax_backoff = 3600\n")

    notify = NotifySocket(f"@inboxcrm-test-{uuid.uuid4().hex}")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log:  # WATCHDOG_USEC: the daemon looks around every 0.5 s
        daemon = inboxcrm(admin_config, db_url, "run", stdout=log, stderr=log,
                          env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"})
    try:
        notify.wait_for("READY=1")
        eventually(lambda: count(engine, Mailbox.id, Mailbox.last_success_at.is_not(None)) == 2,
                   what="both mailboxes synced once")
        eventually(lambda: log_path.read_text().count("event=idle-watching") == 2, what="both on IDLE")

        provider.revoke("alice")
        imap.append(alice, "INBOX", [lead(1)])  # IDLE wakes alice's job: its refresh is refused
        eventually(lambda: "event=grant-revoked" in log_path.read_text(), what="the revoked grant logged")
        imap.append(bob, "INBOX", [lead(2)])
        eventually(lambda: count(engine, Deal.id) == 1, what="bob's mailbox still syncing")

        tries = refreshes(provider)
        imap.append(alice, "INBOX", [lead(3)])  # new mail does not make it hammer the provider
        time.sleep(2.0)
        assert refreshes(provider) == tries
        daemon.send_signal(signal.SIGHUP)  # "try now": refused again, and not logged again
        eventually(lambda: refreshes(provider) == tries + 1, what="a retry after SIGHUP")
        eventually(lambda: count(engine, Mailbox.id, Mailbox.name == "alice-oauth", Mailbox.failures >= 2) == 1)

        log_text = log_path.read_text()
        (line,) = [line for line in log_text.splitlines() if "event=grant-revoked" in line]
        assert "level=error event=grant-revoked mailbox=alice-oauth" in line
        assert f'reason="{REVOKED.format(name="alice-oauth")}"' in line and "retry_in=3600s" in line
        assert "event=sync-failed" not in log_text  # one loud line, not one per try
        notify.wait_for("STATUS=syncing 2 mailboxes; FAILING: alice-oauth")
        status = team("status", code=1).stdout
        assert REVOKED.format(name="alice-oauth") in status and "invalid_grant" in status
        assert status.count("FAILING (") == 1
        beside = team("poll", "--once", "alice-oauth").stdout  # not a second pass beside the daemon's
        assert beside.startswith('alice-oauth: left to daemon "') and "which works it now" in beside
        with session_factory(engine)() as session:
            alerts = session.scalars(select(OutboxMessage).where(OutboxMessage.to_address == ADMIN)).all()
        assert len(alerts) == 1 and "alice-oauth" in alerts[0].subject

        grant_file(provider, alice, token_file)  # "inboxcrm mailbox authorize alice-oauth" again
        eventually(lambda: count(engine, Deal.id) == 3, what="alice's mail, synced once authorized again")
        assert "event=grant-renewed mailbox=alice-oauth" in log_path.read_text()
        assert "FAILING" not in team("status").stdout
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        assert "Traceback" not in log_path.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()
