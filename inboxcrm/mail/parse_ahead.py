"""Parse the next messages in worker processes while the main process writes the database.

Parsing is pure and CPU-bound, the database work is sequential; overlapping them is what
lets an import keep up with a bare parse loop on a small server. Order is preserved (a reply
must be applied after the message it answers) and the window is bounded by count and bytes, so
neither a huge mbox nor a run of large messages sits in memory. A message over
``IN_PLACE_FROM`` never goes to a worker: parsing its skeleton costs little wherever it runs, while
handing it over would copy it twice (pickled, then unpickled in the worker); it is parsed in place,
and nothing is read ahead of it. Below that a message goes to a worker like any other: a lower
bound would drain the pipeline at every attachment and lose the overlap. If a worker dies,
parsing falls back to the main process: nothing is lost. If the main process dies (kill -9), its workers notice
within a second and exit: a killed ``poll`` or ``run`` leaves no orphan behind.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Iterable, Iterator

from inboxcrm.core.parse import content_hash, identify, parse
from inboxcrm.errors import ParseError
from inboxcrm.values import Email, RawMessage


@dataclass(frozen=True)
class Prepared:
    """Everything about a message that needs only its bytes, computed off the main process."""

    message_id: str
    synthetic: bool
    sha256: str
    parsed: Email | ParseError


# A chunk is one task for a worker; at most workers + 1 chunks are in memory at once, and beyond
# the oldest one no more than WINDOW_BYTES: a chunk may hold one message up to the size limit.
CHUNK_MESSAGES = 64
CHUNK_BYTES = 2 * 1024 * 1024
WINDOW_BYTES = 8 * 1024 * 1024
IN_PLACE_FROM = 8 * 1024 * 1024  # import_bench: 1 MB here (5% of mail) halved the import rate
PARENT_CHECK_SECONDS = 0.5


def default_workers() -> int:
    """One core stays with the database writer; at most two parsers. On two cores a second
    parser measured no faster (bench/import_bench.py --workers 2) and costs ~70 MB more."""
    return max(0, min(2, (os.cpu_count() or 1) - 1))


def prepare(data: bytes) -> Prepared:
    message_id, synthetic = identify(data)
    try:
        parsed: Email | ParseError = parse(data, message_id)
    except ParseError as exc:
        parsed = exc
    except Exception as exc:  # noqa: BLE001 - returned, so the main process quarantines it
        parsed = ParseError("unparseable", f"{type(exc).__name__}: {exc}")
    return Prepared(message_id, synthetic, content_hash(data), parsed)


def prepare_chunk(chunk: list[bytes]) -> list[Prepared]:
    return [prepare(data) for data in chunk]


def watch_parent(parent: int) -> None:
    """Runs in each worker: exit once the process that started it is gone. A worker blocks on its
    task queue, whose write end it holds itself, so the parent's death alone never wakes it.
    Polling the parent id works whatever thread started the pool (PR_SET_PDEATHSIG fires when
    that thread ends, and the daemon runs syncs in pool threads) and on every platform."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _finished(chunk: list[RawMessage], future: Future | None) -> Iterator[tuple[RawMessage, Prepared | None]]:
    """The chunk with its results, or with None (parse in place) if its worker died."""
    try:
        results = future.result() if future is not None else None
    except BrokenProcessPool:
        results = None
    return zip(chunk, results or [None] * len(chunk))


def _size(chunk: list[RawMessage]) -> int:
    return sum(len(raw.data) for raw in chunk)


def _chunks(messages: Iterable[RawMessage]) -> Iterator[tuple[list[RawMessage], bool]]:
    """(chunk, in place): chunks for the workers, and each message over IN_PLACE_FROM alone."""
    chunk: list[RawMessage] = []
    size = 0
    for raw in messages:
        large = len(raw.data) > IN_PLACE_FROM
        if large and chunk:
            yield chunk, False
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw.data)
        del raw  # the source reads the next message while this one may already be gone
        if large or len(chunk) >= CHUNK_MESSAGES or size >= CHUNK_BYTES:
            yield chunk, large
            chunk, size = [], 0
    if chunk:
        yield chunk, False


def parse_ahead(messages: Iterable[RawMessage],
                workers: int | None = None) -> Iterator[tuple[RawMessage, Prepared | None]]:
    """Yields each message with its Prepared value, or None where it must be parsed in place.

    Work goes to the pool in chunks: one task per message cost more in pickling and queueing
    than parsing a small message takes. No chunk is referenced here once it is handed on, so a
    large message is freed as soon as its consumer lets go of it."""
    workers = default_workers() if workers is None else workers
    if workers <= 0:
        yield from ((raw, None) for raw in messages)
        return
    pending: deque[tuple[list[RawMessage], Future | None]] = deque()
    # spawn, not fork: a worker needs only the parser, not a copy of the writer's database
    # connections and memory (fork also copies threads' locks, which can deadlock).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=watch_parent, initargs=(os.getpid(),)) as pool:
        chunks = _chunks(messages)
        held = 0  # bytes of the chunks in ``pending``
        broken = False
        for chunk, in_place in chunks:
            future = None
            if not in_place:
                try:
                    future = pool.submit(prepare_chunk, [raw.data for raw in chunk])
                except BrokenProcessPool:  # a worker died (out of memory, killed): parse in place
                    broken = True
            pending.append((chunk, future))
            held += _size(chunk)
            del chunk, future
            while pending and (in_place or broken or len(pending) > workers
                               or (len(pending) > 1 and held > WINDOW_BYTES)):
                held -= _size(pending[0][0])
                yield from _finished(*pending.popleft())
            if broken:
                break
        while pending:
            yield from _finished(*pending.popleft())
        for chunk, _ in chunks:  # only left over after a broken pool
            yield from _finished(chunk, None)
