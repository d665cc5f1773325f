"""A local OAuth2 authorization server for the tests: loopback HTTP, one thread, no network.

It plays Google's or Microsoft's identity platform closely enough to test what inboxcrm relies on:

- the device authorization grant (RFC 8628): ``POST device_url`` hands out a device code and a user
  code; the token endpoint answers ``authorization_pending`` (and ``slow_down`` to a client that polls
  faster than the interval) until the test, playing the user, calls ``approve(user_code, username)``;
- the authorization code grant with PKCE (RFC 7636, S256 only): ``GET auth_url`` redirects at once to
  the loopback ``redirect_uri`` with a code when ``auto_approve`` names a user (else with
  ``error=access_denied``); the token endpoint checks the ``code_verifier`` against the challenge;
- rotating refresh tokens as Microsoft issues them: every refresh returns a NEW refresh token; the
  one presented stays valid until its successor is used once, and is revoked then. So a client that
  crashes between the refresh and writing the new token back still has a working token, and a client
  that uses the new one commits the rotation;
- revocation (``revoke(username)``, or RFC 7009 ``POST revoke_url``): every token of the user is
  dead and the token endpoint answers ``invalid_grant``, as a provider does after a password change
  or an admin's revocation;
- outages: ``fail_next(n, status)`` makes the next n token requests fail with 5xx or 429;
- token introspection (RFC 7662, ``POST introspection_url`` with ``token=...``): what Dovecot's
  ``oauth2`` passdb and the test SMTP server ask to check a bearer token. ``token_owner(token)`` is the
  same check for code in the test process.

``requests`` lists ``(path, grant_type)`` for every request, ``refresh_tokens_used`` the refresh
tokens presented in order, for assertions. ``on_token_request``, when set, is called with the form of
each token request before it is answered (in the server thread), e.g. to look at the token file at
the moment the server sees a token used.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlencode, urlsplit

DEFAULT_SCOPE = "https://mail.google.com/"


@dataclass
class _Refresh:
    username: str
    client_id: str
    scope: str
    parent: str | None = None  # the token this one replaced: valid until this one is used
    used: bool = False
    revoked: bool = False


@dataclass
class _Access:
    username: str
    client_id: str
    scope: str
    expires_at: float
    revoked: bool = False


@dataclass
class _Device:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    interval: float
    last_poll: float = 0.0
    username: str | None = None
    denied: bool = False
    done: bool = False


@dataclass
class _Code:
    client_id: str
    scope: str
    redirect_uri: str
    challenge: str
    username: str
    used: bool = False


@dataclass
class _Failure:
    remaining: int = 0
    status: int = 503


class OAuthServer:
    """``with OAuthServer() as server:`` an authorization server on 127.0.0.1 at a random port."""

    def __init__(self, access_lifetime: float = 3600, device_interval: float = 1, clock=time.time):
        self.access_lifetime = access_lifetime
        self.device_interval = device_interval  # seconds a device-flow client must wait between polls
        self.auto_approve: str | None = None  # the user who "logs in" on the authorization page
        self.clients: dict[str, str | None] = {}  # client id -> secret; empty: any client id, no secret
        self.requests: list[tuple[str, str | None]] = []
        self.refresh_tokens_used: list[str] = []
        self.on_token_request: Callable[[dict[str, str]], None] | None = None
        self.clock = clock
        self._lock = threading.RLock()
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}
        self._devices: dict[str, _Device] = {}  # by device code
        self._codes: dict[str, _Code] = {}
        self._failure = _Failure()
        self._slow_downs = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        server = self

        class Handler(_Handler):
            oauth = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oauth-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "use OAuthServer as a context manager"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    token_url = property(lambda self: self.url + "/token")
    device_url = property(lambda self: self.url + "/device")
    auth_url = property(lambda self: self.url + "/authorize")
    introspection_url = property(lambda self: self.url + "/introspect")
    revoke_url = property(lambda self: self.url + "/revoke")
    verification_uri = property(lambda self: self.url + "/verify")

    # -- what the test does as the user, the admin or the network ------------------------

    def approve(self, user_code: str, username: str) -> None:
        """The user entered ``user_code`` on the verification page and consented."""
        with self._lock:
            device = self._device_by_user_code(user_code)
            device.username = username

    def deny(self, user_code: str) -> None:
        """The user declined on the consent page."""
        with self._lock:
            self._device_by_user_code(user_code).denied = True

    def pending_user_codes(self) -> list[str]:
        """User codes handed out and not yet approved or denied (a test waits for one)."""
        with self._lock:
            return [d.user_code for d in self._devices.values() if d.username is None and not d.denied]

    def revoke(self, username: str) -> None:
        """Every token of ``username`` stops working (password change, admin revocation)."""
        with self._lock:
            for token in list(self._refresh.values()) + list(self._access.values()):
                if token.username == username:
                    token.revoked = True

    def fail_next(self, n: int, status: int = 503) -> None:
        """The next ``n`` requests to the token endpoint fail with ``status`` (an outage)."""
        with self._lock:
            self._failure = _Failure(n, status)

    def slow_down(self, n: int = 1) -> None:
        """The next ``n`` device-code polls answer slow_down, as a busy provider does."""
        with self._lock:
            self._slow_downs = n

    def grant(self, username: str, client_id: str = "client", scope: str = DEFAULT_SCOPE) -> str:
        """A refresh token for ``username``, as if a flow had run: a shortcut for tests that need
        a working grant and do not test how it was obtained."""
        with self._lock:
            token = _new("rt")
            self._refresh[token] = _Refresh(username, client_id, scope)
            return token

    def token_owner(self, access_token: str) -> str | None:
        """The user an access token is valid for, or None (unknown, expired or revoked)."""
        with self._lock:
            access = self._access.get(access_token)
            if access is None or access.revoked or access.expires_at <= self.clock():
                return None
            return access.username

    def is_valid_refresh_token(self, refresh_token: str) -> bool:
        with self._lock:
            found = self._refresh.get(refresh_token)
            return found is not None and not found.revoked

    def latest_refresh_token(self, username: str) -> str | None:
        """The newest refresh token issued to ``username`` that still works."""
        with self._lock:
            alive = [t for t, r in self._refresh.items() if r.username == username and not r.revoked]
            return alive[-1] if alive else None

    # -- the endpoints ----------------------------------------------------------------------

    def _device_by_user_code(self, user_code: str) -> _Device:
        for device in self._devices.values():
            if device.user_code == user_code.strip().upper():
                return device
        raise KeyError(f"no device authorization with user code {user_code!r}")

    def _check_client(self, form: dict[str, str]) -> tuple[int, dict] | None:
        client_id = form.get("client_id", "")
        if not client_id:
            return 400, {"error": "invalid_request", "error_description": "client_id is missing"}
        if self.clients:
            if client_id not in self.clients:
                return 401, {"error": "invalid_client", "error_description": f"unknown client {client_id}"}
            expected = self.clients[client_id]
            if expected is not None and form.get("client_secret") != expected:
                return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        return None

    def device_authorization(self, form: dict[str, str]) -> tuple[int, dict]:
        refused = self._check_client(form)
        if refused:
            return refused
        with self._lock:
            device_code = _new("dc")
            user_code = "-".join(secrets.token_hex(2).upper() for _ in range(2))
            self._devices[device_code] = _Device(form["client_id"], form.get("scope", ""), user_code,
                                                 self.clock() + 900, self.device_interval)
        return 200, {"device_code": device_code, "user_code": user_code, "verification_uri": self.verification_uri,
                     "verification_uri_complete": f"{self.verification_uri}?user_code={user_code}",
                     "expires_in": 900, "interval": self.device_interval}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str]]:
        """GET auth_url: (302, Location header) to the redirect URI, or (400, error)."""
        redirect_uri = query.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            return 400, {"error": "invalid_request: redirect_uri must be a loopback http:// URI"}
        back = {"state": query["state"]} if "state" in query else {}
        if query.get("response_type") != "code" or not query.get("client_id"):
            back["error"] = "invalid_request"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            back["error"] = "invalid_request"
            back["error_description"] = "PKCE with code_challenge_method=S256 is required"
        elif self.auto_approve is None:
            back["error"] = "access_denied"
        else:
            code = _new("ac")
            with self._lock:
                self._codes[code] = _Code(query["client_id"], query.get("scope", ""), redirect_uri,
                                          query["code_challenge"], self.auto_approve)
            back["code"] = code
        separator = "&" if "?" in redirect_uri else "?"
        return 302, {"Location": redirect_uri + separator + urlencode(back)}

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        if self.on_token_request is not None:
            self.on_token_request(dict(form))
        with self._lock:
            if self._failure.remaining > 0:
                self._failure.remaining -= 1
                return self._failure.status, {"error": "temporarily_unavailable"}
        refused = self._check_client(form)
        if refused:
            return refused
        grant = form.get("grant_type")
        with self._lock:
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                return self._device_grant(form)
            if grant == "authorization_code":
                return self._code_grant(form)
            if grant == "refresh_token":
                return self._refresh_grant(form)
        return 400, {"error": "unsupported_grant_type", "error_description": f"grant_type {grant!r}"}

    def _device_grant(self, form: dict[str, str]) -> tuple[int, dict]:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.done or device.client_id != form["client_id"]:
            return 400, {"error": "invalid_grant", "error_description": "unknown device code"}
        now = self.clock()
        if now >= device.expires_at:
            return 400, {"error": "expired_token"}
        if device.denied:
            return 400, {"error": "access_denied"}
        too_soon = device.last_poll and now - device.last_poll < device.interval * 0.8
        device.last_poll = now
        if self._slow_downs > 0:
            self._slow_downs -= 1
            too_soon = True
        if too_soon:
            device.interval += 5  # RFC 8628 3.5
            return 400, {"error": "slow_down"}
        if device.username is None:
            return 400, {"error": "authorization_pending"}
        device.done = True
        return 200, self._issue(device.username, device.client_id, device.scope, parent=None)

    def _code_grant(self, form: dict[str, str]) -> tuple[int, dict]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used or code.client_id != form["client_id"]:
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if form.get("redirect_uri") != code.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri does not match"}
        if _s256(form.get("code_verifier", "")) != code.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        code.used = True
        return 200, self._issue(code.username, code.client_id, code.scope, parent=None)

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, dict]:
        presented = form.get("refresh_token", "")
        self.refresh_tokens_used.append(presented)
        found = self._refresh.get(presented)
        if found is None or found.revoked or found.client_id != form["client_id"]:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        if not found.used:
            found.used = True
            if found.parent is not None:  # the rotation is committed: the old token dies now
                self._refresh[found.parent].revoked = True
        return 200, self._issue(found.username, found.client_id, found.scope, parent=presented)

    def _issue(self, username: str, client_id: str, scope: str, parent: str | None) -> dict:
        access, refresh = _new("at"), _new("rt")
        self._access[access] = _Access(username, client_id, scope, self.clock() + self.access_lifetime)
        self._refresh[refresh] = _Refresh(username, client_id, scope, parent=parent)
        return {"access_token": access, "token_type": "Bearer", "expires_in": int(self.access_lifetime),
                "refresh_token": refresh, "scope": scope}

    def introspect(self, form: dict[str, str]) -> tuple[int, dict]:
        username = self.token_owner(form.get("token", ""))
        if username is None:
            return 200, {"active": False}
        return 200, {"active": True, "email": username, "username": username, "token_type": "Bearer"}

    def revoke_token(self, form: dict[str, str]) -> tuple[int, dict]:
        """RFC 7009: revoking a refresh token revokes the grant it belongs to."""
        with self._lock:
            token = form.get("token", "")
            found = self._refresh.get(token) or self._access.get(token)
            if found is not None:
                self.revoke(found.username)
        return 200, {}


class _Handler(BaseHTTPRequestHandler):
    oauth: OAuthServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = urlsplit(self.path).path
        self.oauth.requests.append((path, form.get("grant_type")))
        route = {"/token": self.oauth.token, "/device": self.oauth.device_authorization,
                 "/introspect": self.oauth.introspect, "/revoke": self.oauth.revoke_token}.get(path)
        if route is None:
            self._json(404, {"error": "not_found"})
            return
        self._json(*route(form))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.oauth.requests.append((parts.path, None))
        if parts.path != "/authorize":
            self._json(404, {"error": "not_found"})
            return
        status, answer = self.oauth.authorize({k: v[0] for k, v in parse_qs(parts.query).items()})
        if status != 302:
            self._json(status, answer)
            return
        self.send_response(302)
        self.send_header("Location", answer["Location"])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def _new(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(16)}"


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
