"""OAuth2 against a local authorization server (tests/oauth_server.py): signing a mailbox in with
the device code flow through ``mailbox authorize`` and with the browser flow (PKCE), the token file
(0600, refused when others can read it), rotation written back before the new token is used, a
kill -9 between refresh and write-back losing nothing, a revoked grant naming the command that
mends it, and an outage being a connection error."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from inboxcrm.errors import InboxCRMError, SecretError
from inboxcrm.mail import oauth
from inboxcrm.mail.oauth import (
    GrantRevoked,
    OAuthClient,
    OAuthError,
    TokenEndpointUnavailable,
    TokenFile,
)
from inboxcrm.store.db import session_factory
from inboxcrm.store.models import Mailbox

from .oauth_server import OAuthServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    with OAuthServer(device_interval=0) as running:
        yield running


def client_of(server: OAuthServer, scopes=("https://mail.google.com/",)) -> OAuthClient:
    return OAuthClient(token_url=server.token_url, client_id="client", device_url=server.device_url,
                       auth_url=server.auth_url, scopes=scopes, provider="google")


def granted(server: OAuthServer, path: Path, username: str = "alice@acme.example") -> str:
    """A token file holding a fresh grant for ``username``, as ``mailbox authorize`` leaves it."""
    token = server.grant(username, "client")
    oauth.write_token_file(path, TokenFile(token, "https://mail.google.com/", server.token_url, "client",
                                           "2026-01-01T00:00:00+00:00"))
    oauth.forget_access_token(path)
    return token


def stored_token(path: Path) -> str:
    return json.loads(path.read_text())["refresh_token"]


# -- signing in ----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)  # the database plays no part here
def test_mailbox_authorize_runs_the_device_flow_and_writes_only_the_token_file(team, server, engine):
    team("mailbox", "add", "inbox", "--role", "capture", "--owner", "alice", "--host", "imap.example.com",
         "--user", "alice@acme.example", "--auth", "xoauth2", "--oauth-provider", "google",
         "--oauth-client-id", "client", "--oauth-token-url", server.token_url,
         "--oauth-device-url", server.device_url)
    approved: list[str] = []

    def user_signs_in() -> None:  # on their phone, while the command waits
        deadline = time.monotonic() + 10
        while not server.pending_user_codes() and time.monotonic() < deadline:
            time.sleep(0.02)
        approved.extend(server.pending_user_codes())
        server.approve(approved[0], "alice@acme.example")

    signing_in = threading.Thread(target=user_signs_in)
    signing_in.start()
    out = team("mailbox", "authorize", "inbox").stdout
    signing_in.join()
    assert f"open {server.verification_uri} in a browser (on any device) and enter the code {approved[0]}" in out
    assert 'next: "inboxcrm mailbox test inbox", then "inboxcrm poll inbox --once"' in out
    token_file = Path(os.environ["XDG_DATA_HOME"]) / "inboxcrm" / "oauth" / "inbox.json"
    assert str(token_file) in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    saved = json.loads(token_file.read_text())
    assert server.is_valid_refresh_token(saved["refresh_token"])
    assert saved["client_id"] == "client" and saved["scope"] == "https://mail.google.com/"
    with session_factory(engine)() as session:
        connection = session.scalar(select(Mailbox.connection).where(Mailbox.name == "inbox"))
    assert connection["token_file"] == str(token_file) and connection["secret"] is None
    assert saved["refresh_token"] not in json.dumps(connection)
    assert ("/token", "urn:ietf:params:oauth:grant-type:device_code") in server.requests


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_mailbox_authorize_refuses_a_password_mailbox_naming_the_fix(team):
    team("mailbox", "add", "inbox", "--role", "capture", "--host", "imap.example.com", "--user", "u",
         "--password-env", "PW")
    result = team("mailbox", "authorize", "inbox", code=2)
    assert 'mailbox inbox logs in with a password; to use OAuth2 run "inboxcrm mailbox connect inbox"' in result.stderr


def test_device_flow_waits_the_interval_and_slows_down_when_told(tmp_path):
    now = [1_000_000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the user approves while the client waits the second time
        waits.append(seconds)
        now[0] += seconds
        if len(waits) == 2:
            server.approve(server.pending_user_codes()[0], "alice@acme.example")

    with OAuthServer(device_interval=2, clock=lambda: now[0]) as server:
        server.slow_down(1)
        oauth.device_authorize(client_of(server), tmp_path / "t.json", lambda _: None, sleep=sleep,
                               clock=lambda: now[0])
        assert waits == [2, 7]  # RFC 8628: 5 more seconds after slow_down
        assert server.is_valid_refresh_token(stored_token(tmp_path / "t.json"))


def test_device_flow_declined_writes_nothing(server, tmp_path):
    def sleep(_seconds: float) -> None:
        for code in server.pending_user_codes():
            server.deny(code)

    with pytest.raises(OAuthError, match="the sign-in was declined"):
        oauth.device_authorize(client_of(server), tmp_path / "t.json", lambda _: None, sleep=sleep)
    assert not (tmp_path / "t.json").exists()


def test_browser_flow_with_pkce_comes_back_to_the_loopback_listener(server, tmp_path):
    server.auto_approve = "bob@acme.example"
    opened: list[str] = []

    def browser(url: str) -> None:  # follows the provider's redirect to 127.0.0.1, as a browser does
        opened.append(url)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"authorized" in page.read()

    oauth.browser_authorize(client_of(server), tmp_path / "t.json", lambda _: None, open_browser=browser)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened[0]).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"].startswith("http://127.0.0.1:") and query["access_type"] == "offline"
    assert ("/token", "authorization_code") in server.requests  # the server checked the verifier
    oauth.forget_access_token(tmp_path / "t.json")
    assert server.token_owner(oauth.access_token(client_of(server), tmp_path / "t.json")) == "bob@acme.example"


def test_browser_flow_refuses_a_redirect_with_another_state(server, tmp_path):
    server.auto_approve = "mallory@evil.example"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    def forged(url: str) -> None:  # someone else's code arrives at our listener
        try:
            urllib.request.build_opener(NoRedirect).open(url, timeout=10)
        except urllib.error.HTTPError as redirect:
            location = redirect.headers["Location"]
        parts = urllib.parse.urlsplit(location)
        query = dict(urllib.parse.parse_qsl(parts.query)) | {"state": "not-ours"}
        urllib.request.urlopen(parts._replace(query=urllib.parse.urlencode(query)).geturl(), timeout=10).close()

    with pytest.raises(OAuthError, match="a state this run did not send"):
        oauth.browser_authorize(client_of(server), tmp_path / "t.json", lambda _: None, open_browser=forged)
    assert not (tmp_path / "t.json").exists() and ("/token", "authorization_code") not in server.requests


# -- the token file ------------------------------------------------------------------------------

def test_token_file_is_0600_in_a_0700_folder_and_refused_when_others_can_read_it(server, tmp_path):
    path = tmp_path / "oauth" / "sales.json"
    token = granted(server, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert oauth.read_token_file(path).refresh_token == token
    assert token not in repr(oauth.read_token_file(path))
    path.chmod(0o644)
    with pytest.raises(SecretError) as refused:
        oauth.access_token(client_of(server), path)
    assert f"token file {path}: mode 0644, every user on this machine can read it" in str(refused.value)
    assert f"chmod 600 {path}" in str(refused.value)
    assert server.requests == []  # refused before the token was sent anywhere


def test_a_missing_token_file_says_to_authorize(tmp_path, server):
    with pytest.raises(OAuthError, match='was never authorized; run "inboxcrm mailbox authorize sales"'):
        oauth.access_token(client_of(server), tmp_path / "none.json", what="mailbox sales")


# -- keeping it working ----------------------------------------------------------------------------

def test_access_token_is_cached_and_refreshed_a_minute_before_it_expires(server, tmp_path):
    path = tmp_path / "t.json"
    granted(server, path)
    now = [1_000_000.0]
    first = oauth.access_token(client_of(server), path, clock=lambda: now[0])
    now[0] += 3600 - 61
    assert oauth.access_token(client_of(server), path, clock=lambda: now[0]) == first
    now[0] += 2  # 59 s left: buy the next one now, not during the login
    assert oauth.access_token(client_of(server), path, clock=lambda: now[0]) != first
    assert [grant for _, grant in server.requests] == ["refresh_token", "refresh_token"]


def test_a_rotated_refresh_token_is_on_disk_before_it_is_used(server, tmp_path):
    path = tmp_path / "t.json"
    first = granted(server, path)
    presented_from_disk: list[bool] = []
    server.on_token_request = lambda form: presented_from_disk.append(form["refresh_token"] == stored_token(path))
    now = [1_000_000.0]
    oauth.access_token(client_of(server), path, clock=lambda: now[0])
    rotated = stored_token(path)
    assert rotated != first and rotated == server.latest_refresh_token("alice@acme.example")
    assert json.loads(path.read_text())["rotated_at"] is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    now[0] += 3600
    oauth.access_token(client_of(server), path, clock=lambda: now[0])
    assert presented_from_disk == [True, True]  # every token the server saw used was on disk first
    assert not server.is_valid_refresh_token(first)  # using the rotated one retired the old one
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


CRASH_AT_WRITE_BACK = """
import os, signal, sys
from inboxcrm.mail import oauth

def killed(*_args):
    os.kill(os.getpid(), signal.SIGKILL)  # between the refresh and the write-back

oauth.write_token_file = killed
oauth.access_token(oauth.OAuthClient(token_url=sys.argv[1], client_id="client"), sys.argv[2])
"""


def test_kill_9_between_refresh_and_write_back_loses_nothing(server, tmp_path):
    path = tmp_path / "t.json"
    first = granted(server, path)
    child = subprocess.run([sys.executable, "-c", CRASH_AT_WRITE_BACK, server.token_url, str(path)],
                           check=False, cwd=ROOT, capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert server.refresh_tokens_used == [first]  # the provider rotated; the new token died with the process
    assert stored_token(path) == first
    oauth.forget_access_token(path)  # a fresh process
    access = oauth.access_token(client_of(server), path)
    assert server.token_owner(access) == "alice@acme.example"
    assert server.is_valid_refresh_token(stored_token(path))


def test_a_revoked_grant_says_which_mailbox_to_authorize_again(server, tmp_path):
    path = tmp_path / "t.json"
    token = granted(server, path)
    server.revoke("alice@acme.example")
    with pytest.raises(GrantRevoked) as revoked:
        oauth.access_token(client_of(server), path, what="mailbox sales")
    message = str(revoked.value)
    assert message.startswith("the OAuth2 grant of mailbox sales was revoked or has expired (invalid_grant: ")
    assert message.endswith('run "inboxcrm mailbox authorize sales" to sign in again')
    assert token not in message
    assert stored_token(path) == token  # kept: what it was is evidence, and authorize replaces it


@pytest.mark.parametrize("status", [503, 429])
def test_an_outage_is_a_connection_error_and_the_grant_survives_it(server, tmp_path, status):
    path = tmp_path / "t.json"
    token = granted(server, path)
    server.fail_next(1, status)
    with pytest.raises(TokenEndpointUnavailable, match=f"answered HTTP {status}; trying again later"):
        oauth.access_token(client_of(server), path)
    assert stored_token(path) == token
    assert server.token_owner(oauth.access_token(client_of(server), path)) == "alice@acme.example"


def test_an_unreachable_token_endpoint_is_a_connection_error(tmp_path):
    with OAuthServer() as gone:
        path = tmp_path / "t.json"
        granted(gone, path)
        client = client_of(gone)
    with pytest.raises(TokenEndpointUnavailable, match="cannot reach the OAuth2 endpoint") as down:
        oauth.access_token(client, path)
    assert isinstance(down.value, InboxCRMError)
