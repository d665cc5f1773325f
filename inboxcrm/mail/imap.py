"""The IMAP source: connect, find the folders to read, fetch new messages, wait for new ones.

Only this module speaks IMAP (imapclient). It reads and never writes: folders are opened with
EXAMINE (read-only), bodies fetched with BODY.PEEK[] (which does not set \\Seen), and no STORE,
COPY, MOVE or EXPUNGE is ever sent, because the mailbox belongs to the people working in it.
Every failure becomes an ImapError naming the stage (dns, connect, tls, login, folder, protocol,
connection-lost) and what to change, so ``mailbox test`` and ``status`` can tell an admin exactly
what is wrong; no message ever contains a secret.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from inboxcrm.errors import InboxCRMError, Invalid, SecretError
from inboxcrm.logs import event
from inboxcrm.mail import gmail, oauth
from inboxcrm.mail.partial_fetch import (
    WHOLE,
    FetchPlan,
    attachment_limit,
    batches,
    how_to_fetch,
    stored_bytes,
)
from inboxcrm.mail.tls import client_context, is_loopback
from inboxcrm.secret import SecretRef
from inboxcrm.values import RawMessage

log = logging.getLogger("inboxcrm.imap")

SECURITY = ("tls", "starttls", "plain")
AUTH = ("password", "xoauth2")
DEFAULT_PORTS = {"tls": 993, "starttls": 143, "plain": 143}
# SPECIAL-USE attributes (RFC 6154) a folder can be chosen by, plus \Inbox for INBOX itself.
ROLES = ("\\Inbox", "\\Sent", "\\All", "\\Archive", "\\Junk", "\\Trash", "\\Drafts", "\\Flagged", "\\Important")
DEFAULT_FOLDERS = ("\\Inbox", "\\Sent")
# The folder name the pipeline is told for a role: it knows junk by name, and Gmail localises names.
PIPELINE_FOLDER = {"\\Junk": "Junk", "\\Trash": "Trash", "\\Sent": "Sent"}
FETCH_BATCH = 200  # UIDs per FETCH at most: few round trips; bytes bound it too (see plan_batches)
SIZE_BATCH = 2000  # UIDs per RFC822.SIZE FETCH: some 40 bytes of answer each
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # as [sync] max_message_bytes; callers pass the configured value
BATCH_BYTES = 8 * 1024 * 1024  # as [sync] fetch_batch_bytes
IDLE_RENEW = 29 * 60  # RFC 2177: servers may drop an IDLE after 30 minutes
IDLE_SLICE = 0.5  # seconds between looks at a plain threading.Event ``stop`` while idling
STAGES = ("dns", "connect", "tls", "login", "folder", "protocol", "connection-lost")


class ImapError(InboxCRMError):
    """A mailbox cannot be read; ``stage`` says where it failed, the message what to do."""

    def __init__(self, stage: str, message: str):
        self.stage, self.message = stage, message
        super().__init__(stage, message)  # args as given, so it pickles

    def __str__(self) -> str:
        return f"{self.stage}: {self.message}"


@dataclass(frozen=True, kw_only=True)
class ImapSettings:
    """How to reach one mailbox. Holds where the secret is (SecretRef), never the secret."""

    host: str
    port: int = 993
    security: str = "tls"
    verify: bool = True
    ca_file: str | None = None
    user: str
    auth: str = "password"
    secret: SecretRef | None = None  # the password; for xoauth2 a refresh token kept before token files
    oauth_client_id: str | None = None
    oauth_client_secret: SecretRef | None = None
    oauth_token_url: str | None = None
    oauth_provider: str | None = None  # google | microsoft: the scopes "mailbox authorize" asks for
    oauth_device_url: str | None = None  # where "mailbox authorize" starts the device flow
    oauth_auth_url: str | None = None  # where "mailbox authorize --browser" sends the browser
    token_file: str | None = None  # xoauth2: the refresh token's 0600 file, written by "mailbox authorize"
    folders: tuple[str, ...] = DEFAULT_FOLDERS
    since: date | None = None
    max_attachment_bytes: int | None = None  # a part over it stays on the server (see partial_fetch); None: off

    def to_json(self) -> dict:
        """What Mailbox.connection stores."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["secret"] = _ref_json(self.secret)
        data["oauth_client_secret"] = _ref_json(self.oauth_client_secret)
        data["folders"] = list(self.folders)
        data["since"] = self.since.isoformat() if self.since else None
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> ImapSettings:
        values = dict(data)
        values["secret"] = _ref(values.get("secret"))
        values["oauth_client_secret"] = _ref(values.get("oauth_client_secret"))
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise Invalid(f"stored connection has unknown keys {sorted(unknown)}; "
                          f"known are {sorted(cls.__dataclass_fields__)}")
        # A connection stored before plain text to other machines was refused still loads: it
        # then fails at connect, on record in `status`, instead of breaking every command.
        return build_settings(**values, refuse_plain_remote=False)

    def describe(self) -> str:
        """Safe to log."""
        checks = "" if self.verify or self.security == "plain" else ", certificate NOT verified"
        source = f"token file {self.token_file}" if self.token_file else self.secret.describe() if self.secret else "?"
        return (f"{self.user} at {self.host}:{self.port} ({self.security}{checks}), "
                f"{self.auth} from {source}, folders {', '.join(self.folders)}")


def _ref_json(ref: SecretRef | None) -> dict | None:
    return None if ref is None else {k: v for k, v in vars(ref).items() if v is not None}


def _ref(value) -> SecretRef | None:
    if value is None or isinstance(value, SecretRef):
        return value
    try:
        return SecretRef(**value)
    except (TypeError, ValueError):
        raise Invalid(f"stored secret source {value!r} is not one of env, file, command") from None


def _role(folder: str) -> str:
    """A role given in any case ("\\sent") in its RFC 6154 spelling, or Invalid."""
    for role in ROLES:
        if folder.lower() == role.lower():
            return role
    raise Invalid(f"--folder {folder}: unknown special-use role; roles are {', '.join(ROLES)} "
                  f"(or give a folder's literal name)")


def build_settings(host: str, port: int | None = None, security: str = "tls", verify: bool = True,
                   ca_file: str | None = None, user: str = "", auth: str = "password",
                   secret: SecretRef | None = None, oauth_client_id: str | None = None,
                   oauth_client_secret: SecretRef | None = None, oauth_provider: str | None = None,
                   oauth_token_url: str | None = None, folders=(), since: date | str | None = None,
                   refuse_plain_remote: bool = True, oauth_device_url: str | None = None,
                   oauth_auth_url: str | None = None, oauth_tenant: str | None = None,
                   token_file: str | None = None, max_attachment_bytes: int | None = None) -> ImapSettings:
    """Validated settings; each refusal names the option and what would be valid."""
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
        raise Invalid(f"--host {host!r}: expected a host name or IP address")
    if security not in SECURITY:
        raise Invalid(f"--security {security!r}: expected one of {', '.join(SECURITY)}")
    if refuse_plain_remote:
        check_plain_is_local(host.strip(), security)
    port = DEFAULT_PORTS[security] if port is None else port
    if type(port) is not int or not 1 <= port <= 65535:
        raise Invalid(f"--port {port!r}: expected a number from 1 to 65535")
    if ca_file is not None and not os.path.isfile(ca_file):
        raise Invalid(f"--ca-file {ca_file}: no such file; expected a PEM file of CA certificates")
    if not isinstance(user, str) or not user.strip():
        raise Invalid("--user: expected the IMAP login name (often the email address)")
    if auth not in AUTH:
        raise Invalid(f"--auth {auth!r}: expected one of {', '.join(AUTH)}")
    if auth == "xoauth2":
        oauth = _oauth_endpoints(oauth_client_id, oauth_provider, oauth_tenant, oauth_token_url,
                                 oauth_device_url, oauth_auth_url, secret, token_file)
    elif (oauth_client_id or oauth_client_secret or oauth_provider or oauth_token_url or oauth_device_url
          or oauth_auth_url or oauth_tenant or token_file):
        raise Invalid("--oauth-* and --token-file: only with --auth xoauth2")
    else:
        oauth = {}
    if not isinstance(secret, SecretRef) and not (auth == "xoauth2" and token_file):
        raise Invalid("the password source is missing; give one of --password-env, --password-file, "
                      "--password-command")
    if isinstance(folders, str):
        folders = (folders,)
    chosen: list[str] = []
    for folder in folders or DEFAULT_FOLDERS:
        if not isinstance(folder, str) or not folder.strip():
            raise Invalid(f"--folder {folder!r}: expected a special-use role ({', '.join(ROLES)}) or a folder name")
        folder = _role(folder) if folder.startswith("\\") else folder
        if folder not in chosen:
            chosen.append(folder)
    if isinstance(since, datetime):
        since = since.date()
    elif isinstance(since, str):
        try:
            since = date.fromisoformat(since)
        except ValueError:
            raise Invalid(f"--since {since!r}: expected a date as YYYY-MM-DD") from None
    max_attachment_bytes = attachment_limit(max_attachment_bytes)
    if security == "plain" or not verify:
        event(log, logging.WARNING, "insecure", host=host, security=security, verify=verify,
              risk="passwords and mail can be read on the way")
    return ImapSettings(host=host.strip(), port=port, security=security, verify=bool(verify), ca_file=ca_file,
                        user=user.strip(), auth=auth, secret=secret, oauth_client_id=oauth_client_id,
                        oauth_client_secret=oauth_client_secret, **oauth, folders=tuple(chosen), since=since,
                        max_attachment_bytes=max_attachment_bytes)


def check_plain_is_local(host: str, security: str) -> None:
    """Invalid for --security plain to another machine: the password and every message would
    cross the network readable. On this machine (a local Dovecot, an SSH tunnel) nothing does."""
    if security == "plain" and not is_loopback(host):
        raise Invalid(f"--security plain: refused for {host}, which is not this machine (the password and "
                      f"mail would cross the network unencrypted); use --security tls (port 993) or "
                      f"starttls (port 143), or reach the server through a tunnel on 127.0.0.1")


# -- connecting --------------------------------------------------------------------------------

def ssl_context(settings: ImapSettings) -> ssl.SSLContext:
    return client_context(settings.ca_file, settings.verify)


def _tls_error(settings: ImapSettings, exc: ssl.SSLError) -> ImapError:
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapError("tls", f"certificate verify failed for {where} ({exc.verify_message}); if the server "
                                f"uses a private CA, set --ca-file to its certificate (turning verification "
                                f"off with --no-verify lets anyone on the way read the password)")
    return ImapError("tls", f"TLS handshake with {where} failed ({exc.reason or exc}); check --security "
                            f"(tls on port 993, starttls on port 143)")


def _open(settings: ImapSettings, timeout: float) -> IMAPClient:
    where = f"{settings.host}:{settings.port}"
    try:
        socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImapError("dns", f"cannot resolve {settings.host} ({exc.strerror}); check --host") from None
    context = ssl_context(settings)
    try:
        client = IMAPClient(settings.host, settings.port, ssl=settings.security == "tls",
                            ssl_context=context, timeout=timeout)
    except ssl.SSLError as exc:
        raise _tls_error(settings, exc) from None
    except (OSError, IMAPClientError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ImapError("connect", f"cannot connect to {where} ({reason}); is the server up, and is the "
                                   f"port right (993 for tls, 143 for starttls)?") from None
    quiet_protocol_log(client)
    if settings.security == "starttls":
        try:
            if b"STARTTLS" not in client.capabilities():
                raise ImapError("tls", f"{where} does not offer STARTTLS; use --security tls (port 993)")
            client.starttls(context)
        except ssl.SSLError as exc:
            _drop(client)
            raise _tls_error(settings, exc) from None
        except (OSError, IMAPClientError) as exc:
            _drop(client)
            raise ImapError("tls", f"STARTTLS with {where} failed ({exc})") from None
    return client


def quiet_protocol_log(client: IMAPClient) -> None:
    """imapclient turns imaplib's protocol trace on (debug level 5) and sends it to a logger; at
    that level imaplib formats the repr of every response it reads, whole literals included,
    whether or not the logger would print it: a 24 MB message cost another 58 MB and the time to
    format it. Our own events say what a pass did; the trace stays off."""
    client._imap.debug = 0


def _drop(client: IMAPClient) -> None:
    """Close the socket of a connection that failed; a second failure there changes nothing."""
    try:
        client.shutdown()
    except (OSError, IMAPClientError):
        pass


def close(client: IMAPClient) -> None:
    """LOGOUT if the connection still works, else just close it."""
    try:
        client.logout()
    except (OSError, IMAPClientError, ssl.SSLError):
        _drop(client)


def connect(settings: ImapSettings, environ: Mapping[str, str] = os.environ, timeout: float = 30.0,
            what: str = "") -> IMAPClient:
    """A logged-in client (password or XOAUTH2); ImapError names the stage that failed.

    ``what`` ("mailbox sales") names the mailbox in an OAuth2 error, so its message can say which
    ``mailbox authorize`` to run."""
    try:
        check_plain_is_local(settings.host, settings.security)  # a connection stored before the rule
    except Invalid as exc:
        raise ImapError("connect", str(exc)) from None
    client = _open(settings, timeout)
    login(client, settings, environ, what)
    return client


def login(client: IMAPClient, settings: ImapSettings, environ: Mapping[str, str] = os.environ,
          what: str = "") -> None:
    """LOGIN, or AUTHENTICATE XOAUTH2 with an access token from ``mail.oauth``. On failure the
    connection is closed and the error raised: ImapError, or the OAuthError of the token endpoint
    as it is (GrantRevoked: sign in again; TokenEndpointUnavailable: a connection error)."""
    try:
        if settings.auth == "password":
            client.login(settings.user, settings.secret.resolve(environ))
        else:
            client.oauth2_login(settings.user, access_token(settings, environ, what=what))
    except SecretError as exc:
        _drop(client)
        raise ImapError("login", str(exc)) from None
    except oauth.OAuthError:
        _drop(client)
        raise
    except LoginError as exc:
        _drop(client)
        answer = str(exc).strip("b'\"")
        if settings.auth == "password":
            raise ImapError("login", f"the server refused user {settings.user} ({answer}); check the password "
                                     f"from {settings.secret.describe()}") from None
        forget_token(settings)
        raise ImapError("login", f"the server refused the OAuth2 access token for {settings.user} ({answer}); "
                                 f"check that IMAP is on for this account (Gmail: Settings > Forwarding and "
                                 f"POP/IMAP; Microsoft 365: the mailbox's IMAP and the app's admin consent) and "
                                 f"that the grant has the IMAP scope (run \"inboxcrm mailbox authorize\")") from None
    except (OSError, IMAPClientError) as exc:
        _drop(client)
        raise ImapError("connection-lost", f"{settings.host}:{settings.port} closed the connection during "
                                           f"login ({exc})") from None


# -- OAuth2 (XOAUTH2): a refresh token buys short-lived access tokens (see mail.oauth) ---------

def _oauth_endpoints(client_id: str | None, provider: str | None, tenant: str | None, token_url: str | None,
                     device_url: str | None, auth_url: str | None, secret: SecretRef | None,
                     token_file: str | None) -> dict:
    """The xoauth2 fields of ImapSettings, checked: the provider's endpoints unless given one by
    one (a tenant's own, or a test's local server), and exactly one place for the refresh token."""
    if not client_id:
        raise Invalid("--oauth-client-id: required with --auth xoauth2 (the OAuth2 app registration's "
                      "client id)")
    if provider is not None and provider not in oauth.PROVIDERS:
        raise Invalid(f"--oauth-provider {provider!r}: expected one of {', '.join(oauth.PROVIDERS)} "
                      f"(or give --oauth-token-url)")
    if tenant is not None and provider != "microsoft":
        raise Invalid("--oauth-tenant: only with --oauth-provider microsoft")
    known = oauth.microsoft(tenant) if tenant else oauth.PROVIDERS.get(provider or "")
    urls = {"--oauth-token-url": token_url or (known and known.token_url),
            "--oauth-device-url": device_url or (known and known.device_url),
            "--oauth-auth-url": auth_url or (known and known.auth_url)}
    if not urls["--oauth-token-url"]:
        raise Invalid(f"--oauth-provider or --oauth-token-url: required with --auth xoauth2; "
                      f"providers are {', '.join(oauth.PROVIDERS)}")
    for option, url in urls.items():
        parts = urllib.parse.urlsplit(url or "https://unset")
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            raise Invalid(f"{option} {url}: expected an https:// URL (http:// only on loopback)")
    if secret is not None and token_file:
        raise Invalid("--token-file and --password-*: give one place for the refresh token (--token-file, "
                      "written by \"inboxcrm mailbox authorize\")")
    if secret is None and not token_file:
        raise Invalid("--token-file: required with --auth xoauth2 (the file \"inboxcrm mailbox authorize\" "
                      "writes the refresh token to)")
    if token_file and not os.path.isabs(token_file):
        raise Invalid(f"--token-file {token_file}: expected an absolute path")
    return {"oauth_token_url": urls["--oauth-token-url"], "oauth_device_url": urls["--oauth-device-url"],
            "oauth_auth_url": urls["--oauth-auth-url"], "oauth_provider": provider, "token_file": token_file}


def oauth_client(settings: ImapSettings, smtp: bool = False) -> oauth.OAuthClient:
    """The OAuth2 client a mailbox authorizes and logs in as; scopes for IMAP (and SMTP)."""
    provider = oauth.PROVIDERS.get(settings.oauth_provider or "")
    return oauth.OAuthClient(token_url=settings.oauth_token_url or "", client_id=settings.oauth_client_id or "",
                             client_secret=settings.oauth_client_secret, device_url=settings.oauth_device_url,
                             auth_url=settings.oauth_auth_url, scopes=provider.scopes(smtp) if provider else (),
                             provider=settings.oauth_provider)


def access_token(settings: ImapSettings, environ: Mapping[str, str] = os.environ, what: str = "") -> str:
    """The access token to log in with: from the token file, or from a refresh token kept as a
    secret (mailboxes set up before token files)."""
    client = oauth_client(settings)
    if settings.token_file:
        return oauth.access_token(client, settings.token_file, environ, what=what)
    return oauth.access_token_from_secret(client, settings.secret, environ, what=what)


def forget_token(settings: ImapSettings) -> None:
    """The server refused the access token: the next login buys a new one."""
    oauth.forget_access_token(settings.token_file or settings.secret)


# -- folders -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FolderInfo:
    name: str
    role: str  # the SPECIAL-USE attribute ("\\Sent"), "\\Inbox" for INBOX, "" for none
    messages: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int | None = None


def folder_roles(listing: list[tuple[tuple[bytes, ...], bytes, str]]) -> dict[str, str]:
    """Folder name -> role from a LIST answer; \\Noselect folders cannot be read and are left out."""
    roles: dict[str, str] = {}
    for flags, _delimiter, name in listing:
        attributes = {f.decode() if isinstance(f, bytes) else f for f in flags}
        if any(a.lower() == "\\noselect" for a in attributes):
            continue
        if name.upper() == "INBOX":
            roles[name] = "\\Inbox"
            continue
        roles[name] = next((role for role in ROLES if any(a.lower() == role.lower() for a in attributes)), "")
    return roles


def choose_folders(roles: Mapping[str, str], wanted: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, role) for each wanted role or name, in order, once each; ImapError if one is missing."""
    chosen: list[tuple[str, str]] = []
    for want in wanted:
        if want.startswith("\\"):
            name = next((n for n, r in roles.items() if r == want), None)
        else:
            name = next((n for n in roles if n == want or (n.upper() == "INBOX" == want.upper())), None)
        if name is None:
            listed = ", ".join(f"{n} ({r})" if r else n for n, r in roles.items()) or "none"
            what = f"no folder with {want}" if want.startswith("\\") else f'no folder named "{want}"'
            raise ImapError("folder", f"{what}; folders are: {listed}")
        if name not in (n for n, _ in chosen):
            chosen.append((name, roles[name]))
    return chosen


def is_gmail(client: IMAPClient) -> bool:
    return gmail.offered(client.capabilities())


def supports_idle(client: IMAPClient) -> bool:
    return b"IDLE" in client.capabilities()


def _status_items(client: IMAPClient) -> list[str]:
    items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
    return items + ["HIGHESTMODSEQ"] if b"CONDSTORE" in client.capabilities() else items


def folder_info(client: IMAPClient, name: str, role: str) -> FolderInfo:
    """One STATUS: what an unchanged-folder check costs, whatever the folder holds."""
    with protocol("STATUS " + name):
        status = client.folder_status(name, _status_items(client))
    return FolderInfo(name, role, status[b"MESSAGES"], status[b"UIDVALIDITY"], status[b"UIDNEXT"],
                      status.get(b"HIGHESTMODSEQ"))


def resolve_folders(client: IMAPClient, settings: ImapSettings) -> list[FolderInfo]:
    """The folders ``settings.folders`` names, found by SPECIAL-USE (Gmail localises names)."""
    with protocol("LIST"):
        listing = client.list_folders()
    return [folder_info(client, name, role) for name, role in choose_folders(folder_roles(listing), settings.folders)]


class protocol:
    """Maps a failure during ``what`` to ImapError: a lost connection or a refused command."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, ImapError):
            return False
        if isinstance(exc, (IMAPClientAbortError, OSError, ssl.SSLError)):
            raise ImapError("connection-lost", f"the server closed the connection during {self.what} "
                                               f"({exc or type(exc).__name__})") from None
        if isinstance(exc, IMAPClientError):
            raise ImapError("protocol", f"the server refused {self.what} ({exc})") from None
        return False


# -- reading -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImapMessage(RawMessage):
    """A fetched message with its UID, so the sync can advance its position to it."""

    uid: int = 0


def copy_location(folder: str, uidvalidity: int, uid: int, gmail_id: int | None = None) -> str:
    """A copy's stable name. On Gmail one message in INBOX and All Mail has one X-GM-MSGID:
    naming the copy by it makes the second sighting the same copy, not a new one."""
    return f"gmail:{gmail_id}" if gmail_id is not None else f"imap:{folder}:{uidvalidity}:{uid}"


def pipeline_folder(name: str, role: str) -> str:
    """The folder name the pipeline is given: it recognises Junk and Trash by name."""
    return PIPELINE_FOLDER.get(role, name)


def examine(client: IMAPClient, name: str) -> FolderInfo:
    """EXAMINE: the read-only SELECT; nothing in the folder can change, \\Recent stays."""
    with protocol(f"EXAMINE {name}"):
        answer = client.select_folder(name, readonly=True)
    return FolderInfo(name, "", answer.get(b"EXISTS", 0), answer[b"UIDVALIDITY"], answer.get(b"UIDNEXT", 0),
                      answer.get(b"HIGHESTMODSEQ"))


def new_uids(client: IMAPClient, after_uid: int, since: date | None) -> list[int]:
    """UIDs above ``after_uid`` in the examined folder, received on or after ``since`` if given."""
    criteria: list = ["UID", f"{after_uid + 1}:*"]
    if since is not None:
        criteria += ["SINCE", since]
    with protocol("UID SEARCH"):
        found = client.search(criteria)
    # "n:*" matches the highest UID even when it is below n (RFC 3501 6.4.8)
    return sorted(uid for uid in found if uid > after_uid)


def plan_batches(sizes: list[tuple[int, int]], max_message_bytes: int = MAX_MESSAGE_BYTES,
                 batch_bytes: int = BATCH_BYTES, batch: int = FETCH_BATCH) -> list[tuple[bool, list[int]]]:
    """(whole, UIDs) FETCHes for (UID, RFC822.SIZE) pairs, in UID order, without an attachment
    limit: bounded by ``batch_bytes`` and ``batch`` (see partial_fetch.batches); messages over
    ``max_message_bytes`` go in headers-only batches (whole=False) and cost only their headers."""
    plans = ((uid, how_to_fetch(size, None, max_message_bytes)) for uid, size in sizes)
    return [(items == WHOLE, uids) for items, uids in batches(plans, batch_bytes, batch)]


def fetch(client: IMAPClient, folder: FolderInfo, uids: list[int], max_message_bytes: int = MAX_MESSAGE_BYTES,
          batch_bytes: int = BATCH_BYTES, batch: int = FETCH_BATCH,
          max_attachment_bytes: int | None = None,
          already_stored: Callable[[list[str]], set[str]] | None = None) -> Iterator[ImapMessage]:
    """Messages in UID order: sizes first (RFC822.SIZE), then BODY.PEEK[] in batches bounded by
    bytes and count; a message over ``max_message_bytes`` is read as BODY.PEEK[HEADER] and
    BODYSTRUCTURE only and comes truncated (``full_size`` set). With ``max_attachment_bytes``,
    a message over it has its BODYSTRUCTURE read first, and one with a part over it is read
    without that part and comes truncated too (see partial_fetch). A message gone meanwhile is skipped."""
    # already_stored: which copy locations the mailbox holds; on Gmail those are not fetched
    # again (a message read under another label already: see mail.gmail)
    extra = list(gmail.FETCH_ITEMS) if is_gmail(client) else []
    label = pipeline_folder(folder.name, folder.role)
    for start in range(0, len(uids), SIZE_BATCH):
        window = uids[start:start + SIZE_BATCH]
        with protocol(f"FETCH RFC822.SIZE in {folder.name}"):
            answer = client.fetch(window, ["RFC822.SIZE", gmail.MESSAGE_ID] if extra else ["RFC822.SIZE"])
        sizes = [(uid, answer[uid][b"RFC822.SIZE"]) for uid in window if b"RFC822.SIZE" in answer.get(uid, {})]
        if extra and already_stored is not None:
            sizes = _not_stored(sizes, answer, folder, already_stored)
        del answer
        structures = _structures(client, folder, [uid for uid, size in sizes if max_attachment_bytes is not None
                                                  and size > max_attachment_bytes])
        plans = {uid: how_to_fetch(size, structures.get(uid), max_message_bytes, max_attachment_bytes)
                 for uid, size in sizes}
        del structures
        for items, chunk in batches(((uid, plans[uid]) for uid, _ in sizes), batch_bytes, batch):
            with protocol(f"FETCH in {folder.name}"):
                found = client.fetch(chunk, list(items) + extra)
            for uid in chunk:
                # popped, and no name here keeps it: a message through the pipeline is freed at
                # once, not held while the next FETCH reads the next one
                message = _message(found.pop(uid, {}), folder, label, uid, plans.pop(uid))
                if message is not None:
                    yield message
                    del message
            del found


def _not_stored(sizes: list[tuple[int, int]], answer: dict, folder: FolderInfo,
                already_stored: Callable[[list[str]], set[str]]) -> list[tuple[int, int]]:
    """(UID, size) pairs whose copy the mailbox has not stored yet, asked before any body is read."""
    where = {uid: copy_location(folder.name, folder.uidvalidity, uid, answer[uid].get(b"X-GM-MSGID"))
             for uid, _ in sizes}
    stored = already_stored(list(where.values())) if where else set()
    return [(uid, size) for uid, size in sizes if where[uid] not in stored]


def _structures(client: IMAPClient, folder: FolderInfo, uids: list[int]) -> dict[int, object]:
    """UID -> BODYSTRUCTURE: a few hundred bytes each, asked only of messages that may carry
    an attachment over the mailbox's limit."""
    found: dict[int, object] = {}
    for start in range(0, len(uids), FETCH_BATCH):
        with protocol(f"FETCH BODYSTRUCTURE in {folder.name}"):
            answer = client.fetch(uids[start:start + FETCH_BATCH], ["BODYSTRUCTURE"])
        found.update((uid, data[b"BODYSTRUCTURE"]) for uid, data in answer.items() if b"BODYSTRUCTURE" in data)
    return found


def _message(item: dict, folder: FolderInfo, label: str, uid: int, plan: FetchPlan) -> ImapMessage | None:
    """One FETCH answer as a message, whole or as ``plan`` rebuilds it; None when it was
    expunged by someone else between SEARCH and FETCH."""
    data = stored_bytes(item, plan)
    if data is None:
        return None
    location = copy_location(folder.name, folder.uidvalidity, uid, item.get(b"X-GM-MSGID"))
    found_in = gmail.copy_of(item, gmail.folder_label(folder.name, folder.role))
    if plan.full_size is None:
        return ImapMessage(data, location, label, uid=uid, gmail=found_in)
    if plan.root is None:
        event(log, logging.WARNING, "truncated", folder=folder.name, uid=uid, size=plan.full_size,
              limit=plan.limit, action="recorded from its headers; the body stays in the mailbox")
    else:
        event(log, logging.INFO, "attachments-left", folder=folder.name, uid=uid, size=plan.full_size,
              stored=len(data), limit=plan.limit, action="attachments over the limit stay in the mailbox")
    return ImapMessage(data, location, label, full_size=plan.full_size, uid=uid, gmail=found_in)


class WakingEvent(threading.Event):
    """A threading.Event that also wakes a ``wait_for_change`` blocked in IDLE the moment it is set.

    With a plain Event the wait must look at it every ``IDLE_SLICE`` seconds; a daemon holding
    hundreds of IDLE connections then wakes hundreds of threads a second for nothing, which was
    most of its CPU at rest (bench/idle_bench.py). One eventfd (a pipe where there is none)."""

    def __init__(self) -> None:
        super().__init__()
        if hasattr(os, "eventfd"):
            self._read = self._write = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        else:  # pragma: no cover - not Linux
            self._read, self._write = os.pipe()
            os.set_blocking(self._read, False)
        weakref.finalize(self, _close_fds, {self._read, self._write})

    def fileno(self) -> int:
        return self._read

    def set(self) -> None:
        super().set()
        os.write(self._write, (1).to_bytes(8, sys.byteorder))  # eventfd takes 8 bytes; a pipe any

    def clear(self) -> None:
        super().clear()
        try:
            while os.read(self._read, 8):
                pass
        except BlockingIOError:
            pass


def _close_fds(fds: set[int]) -> None:
    for fd in fds:
        os.close(fd)


def _readable(client: IMAPClient, stop: threading.Event | None, timeout: float) -> bool:
    """Whether the connection has something to read within ``timeout`` seconds. A ``stop`` with a
    file descriptor (WakingEvent) ends the wait when set; a plain one is looked at every slice."""
    connection = client.socket().fileno()
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    if isinstance(stop, WakingEvent):
        poller.register(stop.fileno(), select.POLLIN)
    elif stop is not None:
        timeout = min(timeout, IDLE_SLICE)
    return any(fd == connection for fd, _ in poller.poll(max(0.0, timeout) * 1000))


def _announces_mail(answers: list) -> bool:
    return any(len(answer) >= 2 and answer[1] in (b"EXISTS", b"RECENT") for answer in answers)


def wait_for_change(client: IMAPClient, folder: str, timeout: float, stop: threading.Event | None = None,
                    known_uidnext: int | None = None) -> bool:
    """IDLE on the examined folder until the server announces mail (True), ``timeout`` or ``stop``.

    ``known_uidnext``: the UIDNEXT the last sync saw; mail that came in since returns True at
    once, so nothing arriving between a sync and the IDLE waits for the next one. A connection
    the server closed raises ImapError("connection-lost") as soon as it closes."""
    deadline = time.monotonic() + timeout
    info = examine(client, folder)
    if known_uidnext is not None and info.uidnext > known_uidnext:
        return True
    with protocol(f"IDLE in {folder}"):
        client.idle()
        renew = time.monotonic() + IDLE_RENEW
        try:
            while True:
                now = time.monotonic()
                if now >= deadline or (stop is not None and stop.is_set()):
                    return False
                if now >= renew:
                    client.idle_done()
                    client.idle()
                    renew = now + IDLE_RENEW
                if not _readable(client, stop, min(deadline, renew) - now):
                    continue
                answers = client.idle_check(timeout=0)
                if not answers:
                    # Readable, yet not one whole answer: imapclient reads a closed connection (EOF,
                    # reset) as "no answers yet", and the loop would spin on it until the deadline.
                    # Ending the IDLE asks the server: a dead connection raises here.
                    _, answers = client.idle_done()
                    client.idle()
                if _announces_mail(answers):
                    return True
        finally:
            try:
                client.idle_done()
            except (IMAPClientError, OSError):
                pass  # the connection is gone; the caller finds out on its next command
