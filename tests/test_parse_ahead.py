"""Parsing ahead in worker processes: same results, same order, nothing lost if a worker dies."""
from __future__ import annotations

import multiprocessing
import os
import signal

from inboxcrm.core.parse import SKELETON_FROM
from inboxcrm.errors import ParseError
from inboxcrm.mail.parse_ahead import (
    CHUNK_BYTES,
    CHUNK_MESSAGES,
    IN_PLACE_FROM,
    WINDOW_BYTES,
    Prepared,
    parse_ahead,
    prepare,
)
from inboxcrm.values import Email, RawMessage

from .conftest import MAIL


def _messages(copies: int) -> list[RawMessage]:
    fixtures = sorted(MAIL.glob("pipeline-*.eml"))
    return [RawMessage(path.read_bytes(), f"{i}:{path.name}") for i in range(copies) for path in fixtures]


def test_workers_return_what_parsing_in_place_returns_in_order():
    messages = _messages(8)
    ahead = list(parse_ahead(messages, workers=1))
    assert [raw.location for raw, _ in ahead] == [raw.location for raw in messages]
    for raw, prepared in ahead:
        assert prepared == prepare(raw.data)
    assert any(isinstance(p.parsed, ParseError) for _, p in ahead)  # the no-sender fixture
    assert any(isinstance(p.parsed, Email) for _, p in ahead)


def test_no_workers_means_parse_in_place():
    messages = _messages(1)
    assert list(parse_ahead(messages, workers=0)) == [(raw, None) for raw in messages]


def test_a_killed_worker_loses_nothing():
    messages = _messages(CHUNK_MESSAGES // 4)  # several chunks
    seen = []
    for raw, prepared in parse_ahead(messages, workers=1):
        if not seen:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
        seen.append((raw, prepared))
    assert [raw.location for raw, _ in seen] == [raw.location for raw in messages]
    assert any(prepared is None for _, prepared in seen)  # the rest is parsed in place by the caller


def _read_ahead(body: bytes, count: int, workers: int) -> list[tuple[int, Prepared | None]]:
    """(messages read from the source beyond the one being consumed, its Prepared) per message."""
    produced = 0

    def source():
        nonlocal produced
        for i in range(count):
            produced += 1
            yield RawMessage(body, f"m:{i}")

    return [(produced - consumed, prepared)
            for consumed, (_, prepared) in enumerate(parse_ahead(source(), workers=workers), start=1)]


def test_messages_are_held_ahead_by_bytes_not_only_by_chunks():
    """Four workers may hold five chunks by count; with messages of 1 MB (three to a chunk) the
    8 MB window stops at fewer: what is read ahead of the message in hand stays within it."""
    body = b"From: a@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1040
    per_chunk = CHUNK_BYTES // len(body) + 1
    assert len(body) <= SKELETON_FROM and 5 * per_chunk * len(body) > WINDOW_BYTES
    ahead = _read_ahead(body, 6 * per_chunk, workers=4)
    assert max(n for n, _ in ahead) * len(body) <= WINDOW_BYTES
    assert max(n for n, _ in ahead) >= per_chunk  # but it does read ahead
    assert all(isinstance(prepared, Prepared) for _, prepared in ahead)


def test_a_large_message_is_parsed_in_place_with_nothing_read_ahead():
    """Handing a 10 MB message to a worker would copy it twice; its skeleton is parsed in place."""
    body = b"From: a@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 10000
    assert len(body) > IN_PLACE_FROM
    ahead = _read_ahead(body, 5, workers=2)
    assert ahead == [(0, None)] * 5
