"""The SMTP adapter: the only module that speaks to a mail server for sending (smtplib).

It exists apart from the outbox because "did the server take the message?" has three answers,
not two, and the outbox needs to know which one it got: definitely not (a refusal, or the
connection failed before the message went out: safe to retry), definitely yes (250 after the
data), or unknown (the line broke after the message's bytes were sent: retrying could deliver
it twice). ``Connection.send`` calls ``before_data`` once the envelope is accepted and before
the message goes out, so the caller can record "sending" first.

TLS is verified by default. ``security = "plain"`` is only accepted for a relay on this
machine; ``verify = false`` works but is logged at warning on every connection. Errors name
host, port and stage (connect, tls, auth, envelope, data) and never carry the password.

``auth = "xoauth2"`` logs in with an OAuth2 access token (``mail.oauth``) after TLS, as Gmail and
Microsoft 365 want. A refused token may just be stale (revoked early, clock skew): it is
forgotten and a fresh one tried once. A revoked grant and an unreachable token endpoint both
become ``SmtpError`` at stage "auth", not a new kind of error, because to the outbox they are what
a refused login or a server that is down already are: the mail waits and is tried again with
backoff. Only the revoked grant's message differs: it names the command that mends it.
"""
from __future__ import annotations

import logging
import os
import re
import smtplib
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self

from inboxcrm.config import SmtpConfig
from inboxcrm.errors import InboxCRMError, SecretError
from inboxcrm.logs import event
from inboxcrm.mail import oauth
from inboxcrm.mail.tls import client_context, is_loopback

log = logging.getLogger(__name__)
STAGES = ("connect", "tls", "auth", "envelope", "data")


class SmtpError(InboxCRMError):
    """``definite``: the server certainly did not take the message; ``permanent``: a 5xx refusal
    that will not change by retrying; ``connection_lost``: later messages need a new connection."""

    def __init__(self, host: str, port: int, stage: str, detail: str, *, definite: bool = True,
                 permanent: bool = False, connection_lost: bool = False):
        self.host, self.port, self.stage, self.detail = host, port, stage, detail
        self.definite, self.permanent, self.connection_lost = definite, permanent, connection_lost
        super().__init__(f"SMTP {host}:{port}: {stage}: {detail}")


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {' '.join(text.split())}"


def tls_context(cfg: SmtpConfig) -> ssl.SSLContext:
    return client_context(cfg.ca_file, cfg.verify)


_PERIOD = re.compile(rb"(?m)^\.")


@dataclass
class Connection:
    """An open, authenticated SMTP session; one message at a time."""

    client: smtplib.SMTP
    host: str
    port: int

    def _error(self, stage: str, exc: BaseException, *, definite: bool = True) -> SmtpError:
        if isinstance(exc, smtplib.SMTPResponseException):
            return SmtpError(self.host, self.port, stage, _reply(exc), definite=definite,
                             permanent=exc.smtp_code >= 500, connection_lost=exc.smtp_code == 421)
        return SmtpError(self.host, self.port, stage, _describe(exc), definite=definite, connection_lost=True)

    def _command(self, stage: str, send: Callable[[], tuple[int, bytes]], accepted: tuple[int, ...]) -> None:
        try:
            code, reply = send()
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(stage, exc) from None
        if code not in accepted:
            self._reset()
            raise self._error(stage, smtplib.SMTPResponseException(code, reply))

    def _reset(self) -> None:
        try:
            self.client.rset()
        except (smtplib.SMTPException, OSError):
            pass

    def send(self, sender: str, recipient: str, body: bytes, before_data: Callable[[], None] = lambda: None) -> None:
        """Sends one complete message (CRLF line ends). Raises SmtpError; ``definite`` False
        only when the bytes went out and no answer came back."""
        self._command("envelope", lambda: self.client.mail(sender), (250,))
        self._command("envelope", lambda: self.client.rcpt(recipient), (250, 251))
        try:
            before_data()
        except BaseException:
            self._reset()
            raise
        self._command("data", lambda: (self.client.putcmd("data"), self.client.getreply())[1], (354,))
        data = _PERIOD.sub(b"..", body)
        data += (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n"
        try:
            self.client.send(data)
            code, reply = self.client.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error("data", exc, definite=False) from None
        if code != 250:
            raise self._error("data", smtplib.SMTPResponseException(code, reply))

    def close(self) -> None:
        try:
            self.client.quit()
        except (smtplib.SMTPException, OSError):
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed ({exc.verify_message}); set ca_file to the CA that signed it"
    if isinstance(exc, socket.timeout):
        return "no answer (timed out)"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def connect(cfg: SmtpConfig, environ: Mapping[str, str] = os.environ) -> Connection:
    """Connects, secures and logs in as configured; the password is read here and only here."""
    if not cfg.host:
        raise InboxCRMError("no SMTP server configured; set [smtp] host and from_address in the configuration")
    host, port = cfg.host, cfg.effective_port

    def fail(stage: str, exc: BaseException) -> SmtpError:
        if isinstance(exc, smtplib.SMTPResponseException):
            return SmtpError(host, port, stage, _reply(exc), permanent=exc.smtp_code >= 500)
        return SmtpError(host, port, stage, _describe(exc))

    if cfg.security == "plain" and not is_loopback(host):
        raise SmtpError(host, port, "connect", 'security "plain" sends mail and passwords unencrypted; it is only '
                        'allowed for a relay on this machine (localhost, 127.0.0.1, ::1); use "starttls" or "tls"')
    if cfg.security != "plain" and not cfg.verify:
        event(log, logging.WARNING, "smtp-insecure", host=host, port=port,
              why="TLS certificate verification is off ([smtp] verify = false)")
    context = tls_context(cfg) if cfg.security != "plain" else None
    try:
        if cfg.security == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=cfg.timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=cfg.timeout)
    except (smtplib.SMTPException, OSError) as exc:
        raise fail("tls" if isinstance(exc, ssl.SSLError) else "connect", exc) from None
    try:
        stage = "connect"
        client.ehlo()
        if cfg.security == "starttls":
            stage = "tls"
            if not client.has_extn("starttls"):
                raise SmtpError(host, port, "tls", 'the server does not offer STARTTLS; use security = "tls" '
                                '(implicit TLS, usually port 465) or check the port')
            client.starttls(context=context)
            client.ehlo()
        if cfg.auth == "xoauth2":
            stage = "auth"
            _xoauth2_login(client, cfg, environ, host, port)
        elif cfg.username:
            stage = "auth"
            if cfg.password is None:
                raise SmtpError(host, port, "auth", "username is set but no password_env, password_file or "
                                "password_command")
            try:
                password = cfg.password.resolve(environ)
            except SecretError as exc:
                raise SmtpError(host, port, "auth", str(exc)) from None
            client.login(cfg.username, password)
    except SmtpError:
        client.close()
        raise
    except (smtplib.SMTPException, OSError) as exc:
        client.close()
        raise fail(stage, exc) from None
    event(log, logging.INFO, "smtp-connected", host=host, port=port, security=cfg.security)
    return Connection(client, host, port)


# -- XOAUTH2 -----------------------------------------------------------------------------------

# Microsoft 365 answers this when SMTP AUTH is off for the tenant or the mailbox (the default).
_SMTP_AUTH_DISABLED = ("5.7.139", "SmtpClientAuthentication is disabled")


def oauth_client(cfg: SmtpConfig) -> oauth.OAuthClient:
    """The OAuth2 client [smtp] names; the token endpoint is the provider's unless given."""
    provider = oauth.PROVIDERS.get(cfg.oauth_provider or "")
    return oauth.OAuthClient(token_url=cfg.oauth_token_url or (provider.token_url if provider else ""),
                             client_id=cfg.oauth_client_id or "", client_secret=cfg.oauth_client_secret,
                             device_url=provider.device_url if provider else None,
                             auth_url=provider.auth_url if provider else None,
                             scopes=provider.smtp_scopes if provider else (), provider=cfg.oauth_provider)


def _xoauth2_login(client: smtplib.SMTP, cfg: SmtpConfig, environ: Mapping[str, str], host: str, port: int) -> None:
    """AUTH XOAUTH2 with a cached access token, and once more with a fresh one if it is refused."""
    creds = oauth_client(cfg)
    endpoint = urllib.parse.urlsplit(creds.token_url)
    if endpoint.scheme != "https" and not is_loopback(endpoint.hostname or ""):
        raise SmtpError(host, port, "auth", f"the token endpoint {creds.token_url} is not https://; the client "
                        "secret and the refresh token would cross the network readable (http:// only to this "
                        "machine)", permanent=True)
    offered = (client.esmtp_features.get("auth") or "").upper().split()
    if "XOAUTH2" not in offered:
        raise SmtpError(host, port, "auth", f"the server does not offer AUTH XOAUTH2 (it offers: "
                        f"{' '.join(offered) or 'no AUTH at all'}); check host and port, or use auth = \"password\"",
                        permanent=True)
    user = cfg.login or ""
    refused = ""
    for _attempt in range(2):
        token = _access_token(creds, cfg, environ, host, port)
        refused = _sasl_xoauth2(client, user, token)
        if refused is None:
            return
        if any(sign in refused for sign in _SMTP_AUTH_DISABLED):  # no token will do: say what will
            raise SmtpError(host, port, "auth", f"{refused}; SMTP AUTH is disabled for this Microsoft 365 mailbox "
                            f"or tenant: enable Authenticated SMTP for {user} (Microsoft 365 admin center > Active "
                            f"users > Mail > Manage email apps, or Set-CASMailbox -Identity {user} "
                            f"-SmtpClientAuthenticationDisabled $false)", permanent=True)
        oauth.forget_access_token(cfg.token_file or "")
    raise SmtpError(host, port, "auth", f"the server refused the OAuth2 access token for {user}, also a fresh "
                    f"one ({refused}); check that the grant in {cfg.token_file} is for {user} and includes "
                    f"sending mail", permanent=True)


def _access_token(creds: oauth.OAuthClient, cfg: SmtpConfig, environ: Mapping[str, str], host: str,
                  port: int) -> str:
    """oauth's errors as SmtpErrors: a revoked grant permanent and loud, an outage temporary."""
    try:
        return oauth.access_token(creds, cfg.token_file or "", environ, what="[smtp]")
    except oauth.GrantRevoked as exc:
        event(log, logging.ERROR, "smtp-grant-revoked", host=host, file=cfg.token_file, error=exc)
        raise SmtpError(host, port, "auth", str(exc), permanent=True) from None
    except oauth.TokenEndpointUnavailable as exc:
        raise SmtpError(host, port, "auth", str(exc)) from None
    except (oauth.OAuthError, SecretError) as exc:
        raise SmtpError(host, port, "auth", str(exc), permanent=True) from None


def _sasl_xoauth2(client: smtplib.SMTP, user: str, token: str) -> str | None:
    """None when logged in, else the refusal: the reply and the RFC 7628 error the server sent."""
    errors: list[str] = []

    def respond(challenge: bytes | None = None) -> str:
        if challenge is None:
            return f"user={user}\x01auth=Bearer {token}\x01\x01"
        errors.append(challenge.decode("utf-8", "replace"))
        return "\x01"  # RFC 7628 3.2.3: acknowledge the error; the server then says 535

    try:
        client.auth("XOAUTH2", respond, initial_response_ok=True)
        return None
    except smtplib.SMTPAuthenticationError as exc:
        return _reply(exc) + (f", {' '.join(errors[-1].split())}" if errors else "")


def check(cfg: SmtpConfig, environ: Mapping[str, str] = os.environ) -> str:
    """Connect, secure, log in and quit: what ``outbox test`` reports."""
    with connect(cfg, environ):
        pass
    login = f", logged in as {cfg.login}{' with XOAUTH2' if cfg.auth == 'xoauth2' else ''}" if cfg.login else ""
    verified = "" if cfg.security == "plain" else (", certificate verified" if cfg.verify
                                                    else ", certificate NOT verified")
    return f"SMTP {cfg.host}:{cfg.effective_port}: connected with {cfg.security}{verified}{login}"
