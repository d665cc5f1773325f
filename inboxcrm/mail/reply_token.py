"""The per-rep reply token: proof that a reply to a digest or nudge came back through the rep's own mail.

A From address is easy to forge, and not every receiving server vouches for it. Each digest
therefore carries a short secret in its Reply-To (``crm+<token>@team.example``, plus
addressing), and a reply must bring it back. The token is an HMAC of the rep's id and a
generation number under one key kept on the server: nothing per rep is stored, the same rep
always gets the same token until the generation is bumped (``inboxcrm rep token`` after a
leak), and one rep's token says nothing about another's.

Not pure core: ``load_key`` reads and creates the key file. It never logs or prints the key,
and no error message carries it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from inboxcrm.errors import Invalid, SecretError
from inboxcrm.private_files import make_private_dir, new_private_file, refuse_exposed

TOKEN_LENGTH = 10  # base32: 50 bits, short enough for an address, far too many to guess by mail
KEY_BYTES = 32
_PURPOSE = b"inboxcrm reply token"  # binds the HMAC to this use, should the key ever serve another


def token_for(key: bytes, rep_id: int, generation: int) -> str:
    """Lower-case base32 without padding, so it survives mail clients that change case or quote
    an address, and contains nothing (``+``, ``=``, ``/``) that plus addressing or a URL would mangle."""
    message = b"%s:%d:%d" % (_PURPOSE, rep_id, generation)
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii").rstrip("=").lower()[:TOKEN_LENGTH]


def reply_address(command_address: str, token: str) -> str:
    """The command address with the token as its ``+`` detail: replies land in the same mailbox,
    and the receiving server records the full address (Delivered-To) even when a client drops To."""
    local, at, domain = command_address.rpartition("@")
    if not at or not local or not domain:
        raise Invalid(f'invalid command address "{command_address}"; expected an address such as crm@team.example')
    return f"{local}+{token}@{domain}"


TOKEN_KEY = ("reply token key", "every rep's reply token changes then, and replies to older digests are refused")


def load_key(path: Path, create: bool = True, kind: tuple[str, str] = TOKEN_KEY) -> bytes:
    """The token key from ``path``; with ``create``, a new random key when the file does not exist.
    ``kind``: what the key is called in errors, and what is lost when it is replaced (other keys,
    such as the forgotten addresses' one, are made and read the same way).

    The new key is written to a private temporary file and linked into place, so no reader ever
    sees a half-written key, and when two processes create it at once the first link wins and
    both use that key (tokens already mailed must keep matching)."""
    path, (what, lost) = Path(path), kind
    try:
        return _read(path, what, lost)
    except FileNotFoundError:
        if not create:
            raise SecretError(f"{what} {path}: the file does not exist; expected a file of "
                              f"{KEY_BYTES} random bytes (inboxcrm creates it on first use)") from None
    _create(path, what)
    try:
        return _read(path, what, lost)
    except FileNotFoundError:
        raise SecretError(f"{what} {path}: the file disappeared right after it was created") from None


def _read(path: Path, what: str, lost: str) -> bytes:
    # "from None": a chained exception could carry the bytes it failed on.
    try:
        with open(path, "rb") as f:
            refuse_exposed(os.fstat(f.fileno()), path, what)
            key = f.read(KEY_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise SecretError(f"{what} {path}: cannot read it ({e.strerror}); expected a file of "
                          f"{KEY_BYTES} random bytes readable by the inboxcrm user") from None
    if len(key) != KEY_BYTES:
        found = f"{len(key)} bytes" if len(key) <= KEY_BYTES else f"more than {KEY_BYTES} bytes"
        raise SecretError(f"{what} {path}: found {found}, expected exactly {KEY_BYTES} random bytes; "
                          f"restore the original file, or delete it to make a new key ({lost})")
    return key


def _create(path: Path, what: str) -> None:
    try:
        make_private_dir(path.parent)
        fd, temporary = _private_file(path)
    except OSError as e:
        raise SecretError(f"{what} {path}: cannot create it ({e.strerror}); expected a writable "
                          f"folder for a file of {KEY_BYTES} random bytes") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # fails if another process linked its key first: theirs wins
        except FileExistsError:
            pass
        except OSError as e:
            raise SecretError(f"{what} {path}: cannot create it ({e.strerror}); expected a folder "
                              f"on a file system with hard links") from None
    finally:
        os.unlink(temporary)
    _sync_folder(path.parent)


def _private_file(path: Path) -> tuple[int, str]:
    """A new file next to ``path``, private from the start, under a name nobody else holds."""
    while True:
        temporary = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = new_private_file(temporary)
        if fd is not None:
            return fd, temporary


def _sync_folder(folder: Path) -> None:
    """The new name survives a crash: without this, a restart could make a second key."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
