"""OAuth2 for mail: getting a grant (device code or browser + PKCE), keeping it, and buying access tokens.

Google Workspace and Microsoft 365 take an OAuth2 access token (XOAUTH2) instead of a password for
IMAP and SMTP. The long-lived part, the refresh token, lives in a token file only the inboxcrm user
can read (0600 in a 0700 folder; a file others can read is refused, as for any secret); never in the
database and never in a log. Access tokens live an hour: each process caches one per token file and
buys the next when less than a minute remains.

Microsoft rotates the refresh token on every use and revokes the old one once the new one has been
used. So a rotated refresh token is written back (temp file, fsync, rename, fsync of the folder)
BEFORE the access token it came with is returned: the token this process goes on to use is always on
disk first. A crash between the refresh and the write-back leaves the file holding the old token,
which the provider honours until the new one is used, so nothing is lost either way.

Errors say what to do: ``GrantRevoked`` (the provider answered ``invalid_grant``: revoked, expired,
or a token it no longer knows) names the ``inboxcrm mailbox authorize`` command that mends it;
``TokenEndpointUnavailable`` (network, timeout, 5xx, 429) is a connection error, retried with the
house backoff like a server that is down. Only urllib: two form POSTs need no HTTP library.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from inboxcrm.errors import InboxCRMError, SecretError
from inboxcrm.private_files import make_private_dir, new_private_file, refuse_exposed
from inboxcrm.secret import SecretRef

TOKEN_SLACK = 60  # buy a new access token when less than this many seconds remain
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5  # RFC 8628: seconds between polls when the server names none
MIN_INTERVAL = 0.2  # never poll in a tight loop, whatever a server says
TIMEOUT = 30.0
ANSWER_BYTES = 65536  # an endpoint's JSON answer is a few hundred bytes; never hold more than this

Echo = Callable[[str], None]


# -- providers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Provider:
    """Where a provider's OAuth2 endpoints are and which scopes IMAP and SMTP need there."""

    name: str
    device_url: str
    auth_url: str
    token_url: str
    imap_scopes: tuple[str, ...]
    smtp_scopes: tuple[str, ...]

    def scopes(self, smtp: bool = False) -> tuple[str, ...]:
        """The scopes to ask for: IMAP's, plus SMTP's when the grant must also send."""
        wanted = self.imap_scopes + (self.smtp_scopes if smtp else ())
        return tuple(dict.fromkeys(wanted))


def microsoft(tenant: str = "common") -> Provider:
    """Microsoft identity platform v2; ``tenant`` is "common" or the organisation's tenant id (an
    admin's single-tenant app registration needs its own tenant id)."""
    base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    return Provider("microsoft", f"{base}/devicecode", f"{base}/authorize", f"{base}/token",
                    # offline_access is what makes Microsoft hand out a refresh token at all
                    imap_scopes=("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"),
                    smtp_scopes=("https://outlook.office.com/SMTP.Send", "offline_access"))


PROVIDERS: dict[str, Provider] = {
    # Google has one scope for IMAP and SMTP; refresh tokens come with access_type=offline
    "google": Provider("google", "https://oauth2.googleapis.com/device/code",
                       "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
                       imap_scopes=("https://mail.google.com/",), smtp_scopes=("https://mail.google.com/",)),
    "microsoft": microsoft(),
}


@dataclass(frozen=True)
class OAuthClient:
    """The OAuth2 client (app registration) inboxcrm authorizes as, and where to ask."""

    token_url: str
    client_id: str
    client_secret: SecretRef | None = None
    device_url: str | None = None
    auth_url: str | None = None
    scopes: tuple[str, ...] = ()
    provider: str | None = None


# -- errors ----------------------------------------------------------------------------------

class OAuthError(InboxCRMError):
    """An OAuth2 step failed; the message says what to change. Never holds a token."""

    stage = "oauth"


class GrantRevoked(OAuthError):
    """The provider answered invalid_grant: the grant was revoked (password change, admin, user),
    expired, or the token file holds a token the provider no longer knows. Only signing in again
    mends it; the message names the command."""

    def __init__(self, what: str, detail: str):
        self.what, self.detail = what, detail
        super().__init__(what, detail)  # args as given, so it pickles

    def __str__(self) -> str:
        whose = f" of {self.what}" if self.what else ""
        return (f"the OAuth2 grant{whose} was revoked or has expired ({self.detail}); "
                f"run {authorize_hint(self.what)} to sign in again")


class TokenEndpointUnavailable(OAuthError):
    """The token endpoint could not be reached or answered 5xx/429: a connection error, retried
    with backoff like a mail server that is down."""


def authorize_hint(what: str) -> str:
    """The command that gives ``what`` ("mailbox sales", "[smtp]") a new grant."""
    if what.startswith("mailbox "):
        return f'"inboxcrm mailbox authorize {what.removeprefix("mailbox ")}"'
    if what == "[smtp]":
        return ('"inboxcrm mailbox authorize NAME --smtp" for the mailbox of the sending account '
                '(its token file is the one [smtp] token_file names)')
    return '"inboxcrm mailbox authorize NAME"'


# -- the token file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenFile:
    """What a token file holds: the refresh token and whom it belongs to. Secret as a whole."""

    refresh_token: str
    scope: str
    token_url: str
    client_id: str
    obtained_at: str  # ISO UTC: when the grant was made
    rotated_at: str | None = None  # ISO UTC: when the provider last replaced the refresh token

    def __repr__(self) -> str:  # never the token, whatever prints it
        return f"TokenFile(client_id={self.client_id!r}, scope={self.scope!r}, obtained_at={self.obtained_at!r})"


def default_token_file(data_dir: Path, mailbox: str) -> Path:
    """Where a mailbox's grant lives unless the admin chose a file: <data dir>/oauth/<mailbox>.json."""
    return Path(data_dir) / "oauth" / f"{mailbox}.json"


FILE_KEYS = ("refresh_token", "scope", "token_url", "client_id", "obtained_at", "rotated_at")


def read_token_file(path: Path | str, what: str = "") -> TokenFile:
    """The token file's contents. Refused when others can read it (it may have leaked), missing
    (never authorized) or not what ``write_token_file`` writes."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise OAuthError(f"token file {path} does not exist: {what or 'this account'} was never authorized; "
                         f"run {authorize_hint(what)}") from None
    except OSError as exc:
        raise SecretError(f"token file {path}: cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        refuse_exposed(os.fstat(handle.fileno()), path, "token file")
        raw = handle.read()
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str) or not data["refresh_token"]:
            raise ValueError
        return TokenFile(**{key: data.get(key) for key in FILE_KEYS})
    except (ValueError, TypeError):
        raise OAuthError(f"token file {path}: not a token file inboxcrm wrote (expected JSON with "
                         f"{', '.join(FILE_KEYS)}); run {authorize_hint(what)} to write a new one") from None


def write_token_file(path: Path | str, token: TokenFile) -> None:
    """Replace the token file atomically: a new 0600 file beside it, fsync, rename over, fsync the
    folder. A crash at any point leaves either the old file or the new one, whole."""
    path = Path(path)
    make_private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = new_private_file(temp)
    if fd is None:
        raise SecretError(f"token file {path}: {temp} exists already; remove it")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(json.dumps({key: getattr(token, key) for key in FILE_KEYS}, indent=2).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _now_iso(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")


# -- access tokens -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Refreshed:
    """A token endpoint's answer: the access token, its lifetime, and a rotated refresh token."""

    access_token: str
    expires_in: float
    refresh_token: str | None
    scope: str | None


_cache: dict[tuple, tuple[str, float]] = {}  # key -> (access token, when it expires by the clock)
_locks: dict[tuple, threading.Lock] = {}
_locks_guard = threading.Lock()


def _file_key(token_file: Path | str) -> tuple:
    return ("file", os.path.abspath(token_file))


def _lock(key: tuple) -> threading.Lock:
    """One lock per token file: two threads (a sync and an IDLE watcher) must not both spend the
    same refresh token, or the second could present one the first has just made obsolete."""
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _fresh(key: tuple, clock: Callable[[], float]) -> str | None:
    """The cached access token while more than TOKEN_SLACK seconds of it remain (call under the key's lock)."""
    cached = _cache.get(key)
    return cached[0] if cached is not None and cached[1] - TOKEN_SLACK > clock() else None


def forget_access_token(source: Path | str | SecretRef) -> None:
    """Drop the cached access token (after a server refused it), so the next login buys one."""
    key = ("secret", source) if isinstance(source, SecretRef) else _file_key(source)
    with _lock(key):
        _cache.pop(key, None)


def access_token(client: OAuthClient, token_file: Path | str, environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.time, what: str = "") -> str:
    """An access token for the grant in ``token_file``: the cached one while more than a minute
    remains, else a new one; a rotated refresh token is on disk before this returns."""
    key = _file_key(token_file)
    with _lock(key):
        cached = _fresh(key, clock)
        if cached is not None:
            return cached
        stored = read_token_file(token_file, what)
        if stored.client_id and stored.client_id != client.client_id:
            raise OAuthError(f"token file {token_file} holds a grant for client id {stored.client_id}, but "
                             f"{what or 'the account'} uses client id {client.client_id}; run "
                             f"{authorize_hint(what)} to authorize this client")
        refreshed = refresh(client, stored.refresh_token, environ, what)
        if refreshed.refresh_token and refreshed.refresh_token != stored.refresh_token:
            write_token_file(token_file, replace(stored, refresh_token=refreshed.refresh_token,
                                                 scope=refreshed.scope or stored.scope, rotated_at=_now_iso(clock)))
        _cache[key] = (refreshed.access_token, clock() + refreshed.expires_in)
        return refreshed.access_token


def access_token_from_secret(client: OAuthClient, refresh_token: SecretRef, environ: Mapping[str, str] = os.environ,
                             clock: Callable[[], float] = time.time, what: str = "") -> str:
    """The same for a refresh token kept in a secret source (env, file, command), as mailboxes
    set up before token files did. A rotated token cannot be written back there; providers that
    rotate (Microsoft) then need ``mailbox authorize``, which moves the grant to a token file."""
    key = ("secret", refresh_token)
    with _lock(key):
        cached = _fresh(key, clock)
        if cached is not None:
            return cached
        refreshed = refresh(client, refresh_token.resolve(environ), environ, what)
        _cache[key] = (refreshed.access_token, clock() + refreshed.expires_in)
        return refreshed.access_token


def refresh(client: OAuthClient, refresh_token: str, environ: Mapping[str, str] = os.environ,
            what: str = "") -> Refreshed:
    """One refresh-token grant at the token endpoint; writes nothing, caches nothing."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client.client_id}
    answer = _answer(client.token_url, _with_secret(form, client, environ), what)
    return _refreshed(client.token_url, answer)


def _with_secret(form: dict[str, str], client: OAuthClient, environ: Mapping[str, str]) -> dict[str, str]:
    if client.client_secret is not None:
        form["client_secret"] = client.client_secret.resolve(environ)
    return form


def _refreshed(url: str, answer: dict) -> Refreshed:
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuthError(f"the token endpoint {url} answered without an access_token")
    try:
        lifetime = float(answer.get("expires_in") or 3600)
    except (TypeError, ValueError):
        lifetime = 3600.0
    rotated = answer.get("refresh_token")
    scope = answer.get("scope")
    return Refreshed(access, lifetime, rotated if isinstance(rotated, str) and rotated else None,
                     scope if isinstance(scope, str) else None)


# -- talking to the endpoints ---------------------------------------------------------------------

def post_form(url: str, form: Mapping[str, str], timeout: float = TIMEOUT) -> tuple[int, dict]:
    """POST a form; (HTTP status, JSON answer). TokenEndpointUnavailable when the endpoint cannot
    be reached or says it is overloaded or broken (5xx, 429), or answers with something not JSON."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read(ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(ANSWER_BYTES + 1)
        if status >= 500 or status == 429:
            raise TokenEndpointUnavailable(f"the OAuth2 endpoint {url} answered HTTP {status}; "
                                           f"trying again later") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TokenEndpointUnavailable(f"cannot reach the OAuth2 endpoint {url} ({reason}); "
                                       f"trying again later") from None
    try:
        if len(raw) > ANSWER_BYTES:
            raise ValueError("too long")
        body = json.loads(raw)
    except ValueError:
        raise TokenEndpointUnavailable(f"the OAuth2 endpoint {url} answered HTTP {status} with something "
                                       f"that is not JSON; trying again later") from None
    if not isinstance(body, dict):
        raise OAuthError(f"the OAuth2 endpoint {url} answered HTTP {status} with JSON that is not an object")
    return status, body


def _why(body: dict) -> str:
    error = str(body.get("error") or "error")
    description = str(body.get("error_description") or "").strip().splitlines()
    return f"{error}: {description[0]}" if description else error


def _answer(url: str, form: Mapping[str, str], what: str) -> dict:
    """The JSON of a successful token request; the refusals as OAuthErrors saying what to do."""
    status, body = post_form(url, form)
    if status == 200:
        return body
    error = body.get("error")
    if error == "invalid_grant":
        raise GrantRevoked(what, _why(body))
    if error in ("invalid_client", "unauthorized_client"):
        raise OAuthError(f"the token endpoint {url} refused client id {form.get('client_id')} ({_why(body)}); "
                         f"check the client id and secret of the OAuth2 app registration")
    raise OAuthError(f"the token endpoint {url} refused the request (HTTP {status}, {_why(body)})")


def _token_file_from(client: OAuthClient, answer: dict, clock: Callable[[], float]) -> TokenFile:
    refreshed = _refreshed(client.token_url, answer)
    if refreshed.refresh_token is None:
        hint = (' (Microsoft sends one only with the scope "offline_access")' if client.provider == "microsoft"
                else ' (Google sends one only with access_type=offline)' if client.provider == "google" else "")
        raise OAuthError(f"the token endpoint {client.token_url} granted access but sent no refresh token{hint}")
    return TokenFile(refresh_token=refreshed.refresh_token, scope=refreshed.scope or " ".join(client.scopes),
                     token_url=client.token_url, client_id=client.client_id, obtained_at=_now_iso(clock))


def _save_grant(client: OAuthClient, token_file: Path | str, answer: dict,
                clock: Callable[[], float]) -> TokenFile:
    granted = _token_file_from(client, answer, clock)
    write_token_file(token_file, granted)
    key = _file_key(token_file)
    with _lock(key):  # the new grant's access token is good: the next login needs no refresh
        _cache[key] = (answer["access_token"], clock() + _refreshed(client.token_url, answer).expires_in)
    return granted


# -- device authorization grant (RFC 8628): for a server without a browser -----------------------

def device_authorize(client: OAuthClient, token_file: Path | str, echo: Echo,
                     sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                     environ: Mapping[str, str] = os.environ) -> TokenFile:
    """Shows a URL and a code for the user to enter on any device, polls the token endpoint until
    they have signed in (honouring the interval and slow_down), writes the token file."""
    if not client.device_url:
        raise OAuthError(f"the OAuth2 client {client.client_id} has no device authorization endpoint; "
                         f"use --browser, or give the provider")
    start = {"client_id": client.client_id, "scope": " ".join(client.scopes)}
    status, answer = post_form(client.device_url, _with_secret(start, client, environ))
    if status != 200:
        raise OAuthError(f"the device authorization endpoint {client.device_url} refused (HTTP {status}, "
                         f"{_why(answer)}); check the client id, that the app registration allows public "
                         f"client / device flows, and the scopes {start['scope']}"
                         + ("; Google refuses mail scopes in the device flow: use --browser"
                            if client.provider == "google" else ""))
    device_code = answer.get("device_code")
    user_code = answer.get("user_code")
    uri = answer.get("verification_uri") or answer.get("verification_url")  # Google says _url
    if not (isinstance(device_code, str) and isinstance(user_code, str) and isinstance(uri, str)):
        raise OAuthError(f"the device authorization endpoint {client.device_url} answered without "
                         f"device_code, user_code and verification_uri")
    interval = answer.get("interval")
    interval = max(float(DEFAULT_INTERVAL if interval is None else interval), MIN_INTERVAL)
    deadline = clock() + float(answer.get("expires_in") or 900)
    echo(f"To authorize, open {uri} in a browser (on any device) and enter the code {user_code}")
    echo("Waiting for you to sign in and consent...")
    poll = _with_secret({"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client.client_id},
                        client, environ)
    while clock() < deadline:
        sleep(interval)
        try:
            status, answer = post_form(client.token_url, poll)
        except TokenEndpointUnavailable:
            continue  # a passing outage: the code is valid until the deadline
        if status == 200:
            return _save_grant(client, token_file, answer, clock)
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5  # RFC 8628 3.5
            continue
        if error in ("access_denied", "authorization_declined"):
            raise OAuthError("the sign-in was declined, so nothing was authorized; run the command again "
                             "and accept the consent screen")
        if error in ("expired_token", "code_expired"):
            break
        raise OAuthError(f"the token endpoint {client.token_url} refused the device code ({_why(answer)})")
    raise OAuthError(f"the code {user_code} expired before anyone signed in with it; run the command again")


# -- authorization code grant with PKCE (RFC 7636) and a loopback redirect (RFC 8252) ----------

def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge): the verifier never leaves this process until the
    code is exchanged, so a code intercepted on the way back is useless to anyone else."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-], within 43..128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Callback:
    """What the browser brought back to the loopback listener: the first request with a state."""

    def __init__(self) -> None:
        self.query: dict[str, str] | None = None
        self.arrived = threading.Event()


def _callback_handler(callback: _Callback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).items()}
            if "state" not in query:  # favicon.ico and the like
                self.send_error(404)
                return
            ok = "code" in query
            page = (b"<html><body><p>inboxcrm is authorized. You can close this window.</p></body></html>" if ok
                    else b"<html><body><p>Authorization failed; see the terminal.</p></body></html>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            if callback.query is None:
                callback.query = query
                callback.arrived.set()

        def log_message(self, *args) -> None:  # the query holds the code: never logged
            pass

    return Handler


def browser_authorize(client: OAuthClient, token_file: Path | str, echo: Echo,
                      open_browser: Callable[[str], object] = webbrowser.open, port: int = 0,
                      timeout: float = 300.0, clock: Callable[[], float] = time.time,
                      environ: Mapping[str, str] = os.environ) -> TokenFile:
    """Opens the provider's sign-in page; its redirect comes back to a listener on 127.0.0.1, and
    the code is exchanged with the PKCE verifier; writes the token file."""
    if not client.auth_url:
        raise OAuthError(f"the OAuth2 client {client.client_id} has no authorization endpoint; use the "
                         f"device flow (without --browser), or give the provider")
    callback = _Callback()
    try:
        listener = HTTPServer(("127.0.0.1", port), _callback_handler(callback))
    except OSError as exc:
        raise OAuthError(f"cannot listen on 127.0.0.1:{port} for the browser's redirect ({exc.strerror})") from None
    thread = threading.Thread(target=listener.serve_forever, args=(0.05,), name="oauth-callback", daemon=True)
    thread.start()
    try:
        redirect_uri = f"http://127.0.0.1:{listener.server_address[1]}/"
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        query = {"response_type": "code", "client_id": client.client_id, "redirect_uri": redirect_uri,
                 "scope": " ".join(client.scopes), "state": state, "code_challenge": challenge,
                 "code_challenge_method": "S256"}
        if client.provider == "google":
            query |= {"access_type": "offline", "prompt": "consent"}  # else no refresh token
        separator = "&" if "?" in client.auth_url else "?"
        url = client.auth_url + separator + urllib.parse.urlencode(query)
        echo(f"Opening the sign-in page in a browser; if none opens, open this URL on this machine:\n{url}")
        open_browser(url)
        if not callback.arrived.wait(timeout):
            raise OAuthError(f"no answer from the browser within {timeout:.0f} s; run the command again "
                             f"(or use the device flow, without --browser)")
    finally:
        listener.shutdown()
        listener.server_close()
    answer_query = callback.query or {}
    if not secrets.compare_digest(answer_query.get("state", ""), state):
        raise OAuthError("the browser came back with a state this run did not send (another sign-in, or a "
                         "forged redirect); nothing was authorized; run the command again")
    if "code" not in answer_query:
        raise OAuthError(f"the sign-in failed ({_why(answer_query)}); nothing was authorized")
    exchange = {"grant_type": "authorization_code", "code": answer_query["code"], "redirect_uri": redirect_uri,
                "client_id": client.client_id, "code_verifier": verifier}
    try:
        answer = _answer(client.token_url, _with_secret(exchange, client, environ), "")
    except GrantRevoked as exc:  # invalid_grant here: the code, not a grant, was refused
        raise OAuthError(f"the token endpoint {client.token_url} refused the sign-in's code ({exc.detail}); "
                         f"run the command again") from None
    return _save_grant(client, token_file, answer, clock)
