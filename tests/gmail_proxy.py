"""A fake Gmail: a loopback IMAP proxy in front of the private Dovecot that adds X-GM-EXT-1.

Why a fake at all: Dovecot cannot provide Gmail's extensions. It has folders, not labels; it
announces no X-GM-EXT-1 and refuses the X-GM-MSGID, X-GM-THRID and X-GM-LABELS fetch items, and
no Dovecot setting or plugin adds them. Gmail itself is off limits (no traffic leaves this
machine). So the proxy fakes exactly that and nothing else: TLS, login, LIST with SPECIAL-USE,
EXAMINE, SEARCH, the bodies, IDLE are the real Dovecot's, passed through byte for byte.

What it changes, as Gmail answers (https://developers.google.com/gmail/imap/imap-extensions):

- every CAPABILITY list (the untagged answer and ``[CAPABILITY ...]`` codes) gains X-GM-EXT-1;
- a FETCH asking for X-GM-* items goes to Dovecot with BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] in
  their place, and the answer carries the X-GM-* items instead, from ``facts``, the table a test
  sets per Message-ID: X-GM-MSGID is one number per message in every folder, X-GM-THRID the
  conversation, and X-GM-LABELS leaves out the label of the selected folder, as Gmail does. A
  message without an entry is a conversation of its own with no labels.

``fetches`` records each FETCH as (selected folder, items asked), so a test can see what was
downloaded where. One asyncio loop in a thread serves every connection: TLS on both sides
(verified against the test CA upstream), without two threads sharing an SSL object.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import threading
from dataclasses import dataclass, field

from imapclient.imap_utf7 import encode as encode_utf7

MARKER = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
GM_ITEM = re.compile(rb"X-GM-(?:MSGID|THRID|LABELS)", re.I)
FETCH = re.compile(rb"^(?P<head>\S+ (?:UID )?FETCH \S+ )(?P<items>.*?)\r\n$", re.I)
SELECT = re.compile(rb'^\S+ (?:SELECT|EXAMINE) "?(?P<name>[^"\r\n]*)"?', re.I)
LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.I)
CAPABILITY_LINE = re.compile(rb"^(\* CAPABILITY [^\r\n]*)", re.I)
MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*<([^>\r\n]*)>")
# Dovecot folder (tests/dovecot.py FOLDERS) -> the Gmail label it plays; Archive plays All Mail.
FOLDER_LABELS = {"INBOX": "\\Inbox", "Sent": "\\Sent", "Drafts": "\\Draft", "Junk": "\\Spam", "Archive": None}
LINE_LIMIT = 16 * 1024 * 1024  # a UID SEARCH answer over a big folder is one long line


@dataclass
class Facts:
    """What Gmail knows of one message; ``labels`` as Gmail spells them ("\\\\Inbox", "Clients")."""

    thread_id: int
    labels: tuple[str, ...] = ()


def gmail_message_id(message_id: str) -> int:
    """X-GM-MSGID: the same for a message in every folder, as on Gmail (56 bits of a hash)."""
    return int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:7], "big")


def _label(label: str) -> bytes:
    if label.startswith("\\"):
        return label.encode()  # a system label is an atom
    quoted = encode_utf7(label).replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + quoted + b'"'


@dataclass
class _Connection:
    selected: str = ""
    asked: list[bytes] = field(default_factory=list)  # X-GM items of the FETCH in progress


class GmailProxy:
    """Start with ``GmailProxy(dovecot, tls_files)``; ``settings(user)`` points inboxcrm at it."""

    host = "127.0.0.1"

    def __init__(self, dovecot, tls_files):
        self.dovecot = dovecot
        self.facts: dict[str, Facts] = {}  # Message-ID, without its <>, as inboxcrm stores it -> Facts
        self.fetches: list[tuple[str, bytes]] = []
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.load_cert_chain(str(tls_files.cert), str(tls_files.key))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gmail-proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def settings(self, user, **overrides):
        return self.dovecot.settings(user, port=self.port, **overrides)

    def connection(self, user, **overrides) -> dict:
        return self.settings(user, **overrides).to_json()

    def close(self) -> None:
        async def stop():
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> GmailProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the wire ----------------------------------------------------------------------------

    async def _listen(self):
        return await asyncio.start_server(self._serve, self.host, 0, ssl=self._server_tls, limit=LINE_LIMIT)

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(
                self.dovecot.host, self.dovecot.port, ssl=self.dovecot.ssl_context(), limit=LINE_LIMIT)
        except OSError:
            client_out.close()
            return
        state = _Connection()
        pumps = [asyncio.ensure_future(self._commands(client_in, server_out, state)),
                 asyncio.ensure_future(self._responses(server_in, client_out, state))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_out, server_out):
                writer.close()

    async def _commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection):
        """Client to Dovecot: FETCHes of X-GM items rewritten, literals passed through untouched."""
        continued = False  # the line after a literal continues a command: never a new one
        while line := await reader.readline():
            if not continued:
                line = self._command(line, state)
            writer.write(line)
            literal = LITERAL.search(line)
            if literal:
                writer.write(await reader.readexactly(int(literal[1])))
            continued = literal is not None
            await writer.drain()

    def _command(self, line: bytes, state: _Connection) -> bytes:
        if selected := SELECT.match(line):
            state.selected = selected["name"].decode()
        fetch = FETCH.match(line)
        if fetch is None:
            return line
        items = fetch["items"]
        self.fetches.append((state.selected, items))
        state.asked = [item.upper() for item in GM_ITEM.findall(items)]
        if not state.asked:
            return line
        inner = items[1:-1] if items.startswith(b"(") and items.endswith(b")") else items
        inner = b" ".join(GM_ITEM.sub(b"", inner).split())
        return fetch["head"] + b"(" + (inner + b" " if inner else b"") + b"BODY.PEEK" + MARKER[4:] + b")\r\n"

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection):
        """Dovecot to client, one whole response (line and literals) at a time."""
        while True:
            parts: list[tuple[bytes, bytes | None]] = []
            while True:
                line = await reader.readline()
                if not line:
                    return
                literal = LITERAL.search(line)
                parts.append((line, await reader.readexactly(int(literal[1])) if literal else None))
                if not literal:
                    break
            for line, data in self._response(parts, state):
                writer.write(line + (data or b""))
            await writer.drain()

    def _response(self, parts: list[tuple[bytes, bytes | None]], state: _Connection):
        first = parts[0][0]
        first = CAPABILITY_CODE.sub(lambda m: b"[CAPABILITY " + m[1] + b" X-GM-EXT-1]", first)
        first = CAPABILITY_LINE.sub(lambda m: m[1] + b" X-GM-EXT-1", first)
        parts = [(first, parts[0][1]), *parts[1:]]
        for i, (line, data) in enumerate(parts):
            tail = re.search(re.escape(MARKER) + rb" \{\d+\}\r\n$", line)
            if tail and data is not None and i + 1 < len(parts):
                found = MESSAGE_ID.search(data)
                items = self._gmail_items(found[1].decode() if found else "", state)
                rest, rest_data = parts[i + 1]
                return [*parts[:i], (line[:tail.start()] + items + rest, rest_data), *parts[i + 2:]]
        return parts

    def _gmail_items(self, message_id: str, state: _Connection) -> bytes:
        msgid = gmail_message_id(message_id)
        facts = self.facts.get(message_id, Facts(thread_id=msgid))
        here = FOLDER_LABELS.get(state.selected, state.selected)
        values = {b"X-GM-MSGID": str(msgid).encode(), b"X-GM-THRID": str(facts.thread_id).encode(),
                  b"X-GM-LABELS": b"(" + b" ".join(_label(l) for l in facts.labels if l != here) + b")"}
        return b" ".join(name + b" " + values[name] for name in state.asked)
