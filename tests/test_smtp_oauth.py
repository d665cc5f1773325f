"""Sending through Gmail / Microsoft 365 the way they want it: SMTP AUTH XOAUTH2, end to end.

The outbox sends to a real aiosmtpd server (STARTTLS with the test CA) that checks each bearer token
at the introspection endpoint of a real local OAuth2 server (tests/oauth_server.py), which rotates
refresh tokens on every use, revokes grants and has outages on demand. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import logging
import os
import random
import stat
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from inboxcrm.app import outbox
from inboxcrm.config import build_config
from inboxcrm.logs import LogfmtFormatter
from inboxcrm.mail import oauth, smtp
from inboxcrm.store.db import transaction
from inboxcrm.store.models import OutboxMessage

from .oauth_server import OAuthServer
from .smtp_server import SmtpServer

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
ACCOUNT = "crm@acme.example"
CLIENT = "inboxcrm-client"


class Clock:
    """The OAuth server's time, moved by the test (the client's cache runs on real time)."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def provider(clock):
    with OAuthServer(clock=clock) as running:
        yield running


@pytest.fixture
def token_file(tmp_path, provider) -> Path:
    """A grant for ACCOUNT, as `inboxcrm mailbox authorize NAME --smtp` leaves it."""
    path = tmp_path / "tokens" / "crm.json"
    oauth.write_token_file(path, oauth.TokenFile(refresh_token=provider.grant(ACCOUNT, CLIENT), scope="https://mail.google.com/",
                                                 token_url=provider.token_url, client_id=CLIENT,
                                                 obtained_at="2026-11-01T09:00:00+00:00"))
    return path


@pytest.fixture
def server(tls_files, provider):
    with SmtpServer("starttls", tls_files, oauth_introspection_url=provider.introspection_url) as running:
        yield running


def config(server: SmtpServer, provider: OAuthServer, token_file: Path, **smtp_table):
    table = server.config(auth="xoauth2", oauth_token_url=provider.token_url, oauth_client_id=CLIENT,
                          token_file=str(token_file), from_address=ACCOUNT)
    return build_config({"team": {"domains": ["acme.example"]}, "smtp": {**table, **smtp_table}}, None)


def queue(factory, key: str, when: datetime = NOW) -> None:
    with transaction(factory) as s:
        assert outbox.enqueue(s, when, key=key, kind="digest", to_address="alice@acme.example", subject="Your day",
                              text=f"Hello. {key}", from_address=ACCOUNT)


def rows(factory) -> list[OutboxMessage]:
    with factory() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def refresh_requests(provider: OAuthServer) -> int:
    return sum(1 for path, grant in provider.requests if path == "/token" and grant == "refresh_token")


def test_a_digest_goes_out_through_xoauth2_and_the_rotated_refresh_token_is_written_back(
        factory, server, provider, token_file):
    first = oauth.read_token_file(token_file).refresh_token
    queue(factory, "digest:1:2026-11-23")
    cfg = config(server, provider, token_file)
    assert outbox.send_due(factory, cfg, NOW) == outbox.SendReport(sent=1)
    (received,) = server.messages
    assert server.logins == [ACCOUNT] and received.mail_from == ACCOUNT
    assert received.message["X-InboxCRM"] == "digest"
    # The provider rotated the refresh token; the new one is on disk, private, and the next one to use.
    stored = oauth.read_token_file(token_file)
    assert stored.refresh_token != first and stored.rotated_at is not None
    assert stored.refresh_token == provider.latest_refresh_token(ACCOUNT)
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600

    # Within the access token's hour, the next pass logs in with the cached token: no token request.
    queue(factory, "digest:2:2026-11-23")
    assert outbox.send_due(factory, cfg, NOW + timedelta(minutes=5)) == outbox.SendReport(sent=1)
    assert refresh_requests(provider) == 1 and server.logins == [ACCOUNT, ACCOUNT]
    assert [r.status for r in rows(factory)] == ["sent", "sent"]
    assert "logged in as crm@acme.example with XOAUTH2" in smtp.check(cfg.smtp)


def test_a_refused_access_token_is_forgotten_and_a_fresh_one_bought_once(factory, server, provider, token_file, clock):
    cfg = config(server, provider, token_file)
    smtp.check(cfg.smtp)  # caches an access token
    clock.now += 7200  # the provider lets it expire early, as it may (revocation, clock skew)
    queue(factory, "digest:1:2026-11-23")
    assert outbox.send_due(factory, cfg, NOW) == outbox.SendReport(sent=1)
    assert len(server.refused_tokens) == 1 and refresh_requests(provider) == 2
    assert server.logins == [ACCOUNT, ACCOUNT] and len(server.messages) == 1


def test_a_token_for_another_account_is_refused_twice_and_the_error_says_what_to_check(
        factory, server, provider, token_file):
    cfg = config(server, provider, token_file, from_address="sales@acme.example")
    with pytest.raises(smtp.SmtpError) as refused:
        smtp.check(cfg.smtp)
    assert refused.value.stage == "auth" and len(server.refused_tokens) == 2
    message = str(refused.value)
    assert "refused the OAuth2 access token for sales@acme.example, also a fresh one (535 5.7.8" in message
    assert '"status": "401"' in message and f"check that the grant in {token_file} is for sales@acme.example" in message
    assert all(token not in message for token in server.refused_tokens)


def test_a_revoked_grant_keeps_the_mail_with_the_authorize_hint_and_it_goes_out_once_renewed(
        factory, server, provider, token_file, caplog):
    provider.revoke(ACCOUNT)
    queue(factory, "digest:1:2026-11-23")
    cfg = config(server, provider, token_file)
    assert outbox.send_due(factory, cfg, NOW, rng=random.Random(1)) == outbox.SendReport(deferred=1)
    (row,) = rows(factory)
    assert row.status == "pending" and row.next_attempt_at > NOW and server.messages == []
    assert "auth: the OAuth2 grant of [smtp] was revoked or has expired (invalid_grant" in row.last_error
    assert '"inboxcrm mailbox authorize NAME --smtp"' in row.last_error
    logged = [LogfmtFormatter().format(r) for r in caplog.records if r.levelno == logging.ERROR]
    assert any("event=smtp-grant-revoked" in line and str(token_file) in line for line in logged)
    assert all(token not in "\n".join(logged) for token in provider.refresh_tokens_used)

    # The admin signs in again (the browser flow, the browser played by urllib); the mail goes out.
    provider.auto_approve = ACCOUNT
    client = oauth.OAuthClient(token_url=provider.token_url, client_id=CLIENT, auth_url=provider.auth_url,
                               scopes=("https://mail.google.com/",))
    oauth.browser_authorize(client, token_file, echo=lambda _line: None,
                            open_browser=lambda url: urllib.request.urlopen(url, timeout=10).read())
    assert outbox.send_due(factory, cfg, row.next_attempt_at) == outbox.SendReport(sent=1)
    assert server.logins == [ACCOUNT] and len(server.messages) == 1


@pytest.mark.parametrize("status", [503, 429])
def test_a_token_endpoint_outage_defers_with_backoff_and_the_mail_goes_out_after(
        factory, server, provider, token_file, status):
    provider.fail_next(2, status)
    queue(factory, "digest:1:2026-11-23")
    cfg = config(server, provider, token_file)
    rng, now, waits = random.Random(3), NOW, []
    for _ in range(2):
        assert outbox.send_due(factory, cfg, now, rng=rng) == outbox.SendReport(deferred=1)
        (row,) = rows(factory)
        assert row.status == "pending" and f"answered HTTP {status}; trying again later" in row.last_error
        assert outbox.send_due(factory, cfg, row.next_attempt_at - timedelta(seconds=1)) == outbox.SendReport()
        waits.append(row.next_attempt_at - now)
        now = row.next_attempt_at
    assert timedelta(seconds=40) <= waits[0] <= timedelta(seconds=80) < waits[1]  # the house backoff
    assert outbox.send_due(factory, cfg, now) == outbox.SendReport(sent=1)
    assert rows(factory)[0].attempts == 3 and len(server.messages) == 1


def test_smtp_auth_disabled_on_a_microsoft_365_mailbox_says_how_to_enable_it(tls_files, provider, token_file):
    refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
    with SmtpServer("starttls", tls_files, oauth_introspection_url=provider.introspection_url,
                    xoauth2_refusal=refusal) as server:
        with pytest.raises(smtp.SmtpError) as refused:
            smtp.check(config(server, provider, token_file).smtp)
    message = str(refused.value)
    assert "5.7.139" in message and "SMTP AUTH is disabled for this Microsoft 365 mailbox or tenant" in message
    assert refresh_requests(provider) == 1  # no fresh token can help: not bought
    assert f"Set-CASMailbox -Identity {ACCOUNT} -SmtpClientAuthenticationDisabled $false" in message


def test_a_server_without_xoauth2_is_named_before_any_token_is_bought(tls_files, provider, token_file):
    with SmtpServer("starttls", tls_files, users={"crm": "pw"}) as server:
        with pytest.raises(smtp.SmtpError, match=r"auth: the server does not offer AUTH XOAUTH2 \(it offers: LOGIN PLAIN\)"):
            smtp.check(config(server, provider, token_file).smtp)
    assert refresh_requests(provider) == 0


def test_a_token_endpoint_over_plain_http_to_another_machine_is_refused(server, provider, token_file):
    cfg = config(server, provider, token_file, oauth_token_url="http://login.example.com/token")
    with pytest.raises(smtp.SmtpError, match="is not https://; the client secret and the refresh token would cross"):
        smtp.check(cfg.smtp)


def test_the_provider_names_its_token_endpoint_and_smtp_scopes():
    cfg = build_config({"smtp": {"host": "smtp.office365.com", "from_address": ACCOUNT, "auth": "xoauth2",
                                 "oauth_provider": "microsoft", "oauth_client_id": CLIENT}}, None)
    client = smtp.oauth_client(cfg.smtp)
    assert client.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert "https://outlook.office.com/SMTP.Send" in client.scopes and client.client_id == CLIENT
