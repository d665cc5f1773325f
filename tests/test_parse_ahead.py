"""Parsing ahead in worker processes: same results, same order, nothing lost if a worker dies."""
from __future__ import annotations

import multiprocessing
import os
import signal

from inboxcrm.errors import ParseError
from inboxcrm.parse_ahead import CHUNK_MESSAGES, parse_ahead, prepare
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
