"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the sending tests.

Plain, STARTTLS or implicit TLS with the test CA's certificate, optionally with AUTH. It can be
stopped and started again on the same port (an outage), and ``on_data`` runs inside the
server after a message's data arrived and before the 250 goes back: the moment a client has
sent everything and does not yet know it was accepted.
"""
from __future__ import annotations

import socket
import ssl
import threading
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
    _controller: object = None

    def _authenticate(self, _server, _session, _envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(auth_data, LoginPassword):
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
        if self.users is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.mode != "plain")
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
