"""Parsing ahead in worker processes: same results, same order, nothing lost if a worker dies."""
from __future__ import annotations

import multiprocessing
import os
import signal

from inboxcrm.errors import ParseError
from inboxcrm.parse_ahead import CHUNK_BYTES, CHUNK_MESSAGES, WINDOW_BYTES, parse_ahead, prepare
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


def test_large_messages_are_held_ahead_by_bytes_not_only_by_chunks():
    """Two workers may hold three chunks by count; with 5 MB messages two chunks are already over
    the 8 MB window, so only one message is ever read ahead of the one the consumer has."""
    body = b"From: a@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 5000
    assert CHUNK_BYTES < len(body) <= WINDOW_BYTES < 2 * len(body)
    produced = 0

    def source():
        nonlocal produced
        for i in range(5):
            produced += 1
            yield RawMessage(body, f"big:{i}")

    ahead = [produced - consumed for consumed, _ in enumerate(parse_ahead(source(), workers=2), start=1)]
    assert max(ahead) == 1 and len(ahead) == 5
