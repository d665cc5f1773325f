"""Parse the next messages in worker processes while the main process writes the database.

Parsing is pure and CPU-bound, the database work is sequential; overlapping them is what
lets an import keep up with a bare parse loop on a small server. Order is preserved (a reply
must be applied after the message it answers) and the window is bounded, so a huge mbox never
sits in memory. If a worker dies, parsing falls back to the main process: nothing is lost.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from .errors import ParseError
from .parse import identify, parse
from .values import Email, RawMessage

Parsed = Email | ParseError | None  # None: not parsed ahead, parse in place
WINDOW_MESSAGES = 32
WINDOW_BYTES = 16 * 1024 * 1024


def default_workers() -> int:
    """One core stays with the database writer; at most two parsers."""
    return max(0, min(2, (os.cpu_count() or 1) - 1))


def safe_parse(data: bytes) -> Email | ParseError:
    try:
        return parse(data, identify(data)[0])
    except ParseError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - returned, so the main process quarantines it
        return ParseError("unparseable", f"{type(exc).__name__}: {exc}")


def _result(future: Future) -> Parsed:
    try:
        return future.result()
    except BrokenProcessPool:
        return None


def parse_ahead(messages: Iterable[RawMessage], workers: int | None = None) -> Iterator[tuple[RawMessage, Parsed]]:
    workers = default_workers() if workers is None else workers
    if workers <= 0:
        yield from ((raw, None) for raw in messages)
        return
    pending: deque[tuple[RawMessage, Future]] = deque()
    in_flight = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for raw in messages:
            pending.append((raw, pool.submit(safe_parse, raw.data)))
            in_flight += len(raw.data)
            while pending and (len(pending) >= WINDOW_MESSAGES or in_flight > WINDOW_BYTES):
                done, future = pending.popleft()
                in_flight -= len(done.data)
                yield done, _result(future)
        while pending:
            done, future = pending.popleft()
            yield done, _result(future)
