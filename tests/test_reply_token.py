"""The per-rep reply token and its key file.

Tokens already mailed in digests must keep matching: the same key, rep and generation always give
the same token, and a key file, once made, is never replaced, even when several processes start at once.
"""
from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from inboxcrm.core.sender_gate import token_in
from inboxcrm.errors import Invalid, SecretError
from inboxcrm.mail.reply_token import (
    KEY_BYTES,
    TOKEN_LENGTH,
    load_key,
    reply_address,
    token_for,
)
from inboxcrm.values import Address, Email

KEY = bytes(range(32))
BASE32 = set("abcdefghijklmnopqrstuvwxyz234567")


def write_key(path: Path, content: bytes, mode: int = 0o600) -> Path:
    """A key file as an admin restores it from a backup: the mode is set, not the umask's."""
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_a_token_never_changes_for_the_same_key_rep_and_generation():
    # Pinned: a change here would refuse every reply to every digest already sent.
    assert token_for(KEY, 1, 0) == token_for(KEY, 1, 0) == "tcf7afjwzg"
    assert token_for(KEY, 42, 3) == "suerbthryn"


def test_tokens_differ_per_rep_generation_and_key():
    tokens = {token_for(KEY, rep, generation) for rep in range(1, 301) for generation in range(4)}
    assert len(tokens) == 300 * 4
    assert token_for(bytes(32), 1, 0) != token_for(KEY, 1, 0)


def test_the_alphabet_survives_an_address_and_a_url():
    for rep in range(1, 200):
        token = token_for(KEY, rep, 0)
        assert len(token) == TOKEN_LENGTH == 10
        assert set(token) <= BASE32


def test_reply_address_carries_the_token_back_to_the_command_address():
    token = token_for(KEY, 7, 1)
    address = reply_address("crm@team.example", token)
    assert address == f"crm+{token}@team.example"
    reply = Email(message_id="r@team.example", subject="Re: digest", from_=Address("alice@team.example"),
                  to=(Address(address),))
    assert token_in(reply, frozenset({"crm@team.example"})) == token
    # a command address that already uses plus addressing still works
    plus = Email(message_id="r@team.example", subject="", from_=Address("alice@team.example"),
                 to=(Address(reply_address("crm+sales@team.example", token)),))
    assert token_in(plus, frozenset({"crm+sales@team.example"})) == token


@pytest.mark.parametrize("address", ["crm", "@team.example", "crm@"])
def test_reply_address_refuses_a_non_address(address):
    with pytest.raises(Invalid, match="expected an address such as crm@team.example"):
        reply_address(address, "abc")


def test_a_new_key_is_private_and_reused(tmp_path):
    path = tmp_path / "secrets" / "reply-token.key"
    key = load_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(path) == key
    assert load_key(path, create=False) == key
    assert os.listdir(path.parent) == ["reply-token.key"]  # no temporary file left behind
    assert load_key(tmp_path / "other.key") != key


def test_the_key_file_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0o277)  # one that would even take the owner's write bit
    try:
        path = tmp_path / "reply-token.key"
        load_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_key_file_is_used_as_it_is(tmp_path):
    path = write_key(tmp_path / "reply-token.key", KEY)
    assert load_key(path) == KEY
    assert path.read_bytes() == KEY


def test_a_missing_key_without_create(tmp_path):
    path = tmp_path / "reply-token.key"
    with pytest.raises(SecretError, match=f"reply token key {path}: the file does not exist; expected a file of 32"):
        load_key(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize("content, found", [(b"", "0 bytes"), (KEY[:16], "16 bytes"), (KEY + b"\n", "more than 32")])
def test_a_key_of_the_wrong_size_is_refused_without_showing_it(tmp_path, content, found):
    path = write_key(tmp_path / "reply-token.key", content)
    with pytest.raises(SecretError) as refused:
        load_key(path)
    message = str(refused.value)
    assert message.startswith(f"reply token key {path}: found {found}")
    assert "expected exactly 32 random bytes" in message
    assert KEY[:16].hex() not in message and repr(KEY[:16]) not in message
    assert path.read_bytes() == content  # never replaced: tokens already mailed depend on it


@pytest.mark.parametrize("mode, problem", [(0o644, "every user on this machine can read it"),
                                           (0o604, "every user on this machine can read it"),
                                           (0o602, "every user on this machine can get at it"),
                                           (0o640, "its group can read it"), (0o620, "its group can write it")])
def test_a_key_others_can_get_at_is_refused_with_the_fix(tmp_path, mode, problem):
    """Whoever reads the key can mint every rep's token: refuse it and say how to fix it, rather
    than use it (it may have leaked) or chmod it behind the admin's back (they must know)."""
    path = write_key(tmp_path / "reply-token.key", KEY, mode)
    with pytest.raises(SecretError) as refused:
        load_key(path)
    message = str(refused.value)
    assert message.startswith(f"reply token key {path}: mode {mode:04o}, {problem}")
    assert f"chmod 600 {path}" in message
    assert KEY.hex() not in message
    assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_bytes() == KEY  # left as the admin made it
    path.chmod(0o600)
    assert load_key(path) == KEY  # the fix the message names works


def test_an_unreadable_key_names_the_path(tmp_path):
    path = tmp_path / "reply-token.key"
    path.mkdir()
    with pytest.raises(SecretError, match=f"reply token key {path}: cannot read it"):
        load_key(path)


def _load_together(path: str, barrier, results) -> None:
    barrier.wait()
    results.put(load_key(Path(path)))


def test_processes_creating_the_key_at_once_all_get_the_one_that_won(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(3):
        path = tmp_path / f"round{attempt}" / "reply-token.key"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        workers = [ctx.Process(target=_load_together, args=(str(path), barrier, results)) for _ in range(6)]
        for worker in workers:
            worker.start()
        keys = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
        assert len(set(keys)) == 1
        assert keys[0] == path.read_bytes()
        assert os.listdir(path.parent) == ["reply-token.key"]
