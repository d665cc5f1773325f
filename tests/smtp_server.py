"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the sending tests.

Plain, STARTTLS or implicit TLS with the test CA's certificate, optionally with AUTH: PLAIN and
LOGIN against ``users``, and XOAUTH2 (as Gmail and Microsoft 365 offer it) whose bearer token is
checked against an RFC 7662 introspection endpoint (``tests.oauth_server.OAuthServer``), answering
a bad token the RFC 7628 way: a 334 challenge with a JSON error, then 535. It can be stopped and
started again on the same port (an outage), and ``on_data`` runs inside the server after a
message's data arrived and before the 250 goes back: the moment a client has sent everything and
does not yet know it was accepted.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Self

from .conftest import server_missing


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


class _Handler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_DATA(self, _server, _session, envelope):
        received = Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content))
        with self.server.lock:
            self.server.messages.append(received)
        if self.server.on_data is not None:
            self.server.on_data(received)
        return self.server.reply

    async def auth_XOAUTH2(self, smtp, args):
        """RFC 7628 as Gmail speaks it: the initial response "user=U^Aauth=Bearer T^A^A"; a token
        the introspection endpoint does not vouch for U gets a JSON error challenge, then 535."""
        from aiosmtpd.smtp import MISSING, AuthResult

        if self.server.xoauth2_refusal is not None:
            return AuthResult(success=False, handled=False, message=self.server.xoauth2_refusal)
        if len(args) > 1:
            try:
                raw = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await smtp.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            raw = await smtp.challenge_auth("")
            if raw is MISSING:  # "*" or not base64: already answered
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in raw.decode("utf-8", "replace").split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else ""
        owner = await asyncio.get_running_loop().run_in_executor(None, self.server.token_owner, token)
        if owner is not None and owner == user:
            self.server.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        self.server.refused_tokens.append(token)
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        if await smtp.challenge_auth(error) is MISSING:  # the client answers "\x01" (or aborts with "*")
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)  # 535 5.7.8 Authentication credentials invalid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpServer:
    mode: str = "plain"  # plain | starttls | tls
    tls_files: object = None  # tests.certs.TlsFiles, for starttls and tls
    users: dict[str, str] | None = None  # login -> password; AUTH required when given
    port: int = field(default_factory=free_port)
    messages: list[Received] = field(default_factory=list)
    on_data: Callable[[Received], None] | None = None
    reply: str = "250 Message accepted for delivery"
    lock: threading.Lock = field(default_factory=threading.Lock)
    logins: list[str] = field(default_factory=list)
    # XOAUTH2: bearer tokens are checked at this RFC 7662 endpoint (OAuthServer.introspection_url)
    oauth_introspection_url: str | None = None
    refused_tokens: list[str] = field(default_factory=list)
    # Every XOAUTH2 login refused with this reply, whatever the token: e.g. Microsoft 365's
    # "535 5.7.139 ... SmtpClientAuthentication is disabled for the Tenant"
    xoauth2_refusal: str | None = None
    _controller: object = None

    def token_owner(self, token: str) -> str | None:
        """Who the introspection endpoint says the bearer token belongs to; None when inactive."""
        form = urllib.parse.urlencode({"token": token}).encode()
        with urllib.request.urlopen(self.oauth_introspection_url, data=form, timeout=10) as response:
            answer = json.loads(response.read())
        return (answer.get("email") or answer.get("username")) if answer.get("active") else None

    def _authenticate(self, _server, _session, _envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(auth_data, LoginPassword) and self.users is not None:
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(login) == password:
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpServer:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:
            server_missing("aiosmtpd", str(exc))
        kwargs: dict = {}
        if self.mode != "plain":
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls_files.cert), str(self.tls_files.key))
            kwargs["ssl_context" if self.mode == "tls" else "tls_context"] = context
            if self.mode == "starttls":
                kwargs["require_starttls"] = True
        if self.users is not None or self.oauth_introspection_url is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.mode != "plain")
        # Only what is configured is offered: XOAUTH2 alone is Microsoft 365 with basic auth off.
        kwargs["auth_exclude_mechanism"] = (["PLAIN", "LOGIN"] if self.users is None else []) + \
            (["XOAUTH2"] if self.oauth_introspection_url is None else [])
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        try:
            self._controller.start()
        except Exception as exc:  # noqa: BLE001 - whatever stops it from listening
            server_missing("aiosmtpd SMTP server on 127.0.0.1", f"{type(exc).__name__}: {exc}")
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def config(self, **smtp) -> dict:
        """The [smtp] table that reaches this server."""
        table = {"host": "127.0.0.1", "port": self.port, "security": self.mode, "from_address": "crm@acme.example"}
        if self.mode != "plain" and self.tls_files is not None:
            table["ca_file"] = str(self.tls_files.ca)
        table.update(smtp)
        return table
