"""SQLite under the daemon's threads: writers queue, readers never wait for a writer."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from inboxcrm.db import make_engine, session_factory, transaction, upgrade
from inboxcrm.models import Rep

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_concurrent_read_then_write_units_of_work_queue_instead_of_failing(tmp_path):
    """Two units of work that read, pause, then write: with deferred BEGINs the second writer
    fails at once with "database is locked" (its snapshot is stale), whatever the busy timeout."""
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    factory, errors, both_read = session_factory(engine), [], threading.Barrier(2, timeout=1)

    def unit(name: str) -> None:
        try:
            with transaction(factory) as session:
                session.scalar(select(func.count(Rep.id)))
                try:
                    both_read.wait()  # IMMEDIATE: the second one is still waiting at BEGIN
                except threading.BrokenBarrierError:
                    pass
                session.execute(insert(Rep).values(name=name, timezone="UTC", active=True, created_at=NOW,
                                                   digest_always=False, digest_enabled=True))
        except Exception as exc:  # noqa: BLE001 - the test reports whatever failed
            errors.append(exc)

    threads = [threading.Thread(target=unit, args=(n,)) for n in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert errors == []
    with factory() as session:
        assert sorted(session.scalars(select(Rep.name))) == ["alice", "bob"]
    engine.dispose()


def test_a_reader_does_not_wait_for_a_writer(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as writer:
        writer.execute(insert(Rep).values(name="alice", timezone="UTC", active=True, created_at=NOW,
                                          digest_always=False, digest_enabled=True))
        started = time.monotonic()
        with factory() as reader:
            assert reader.scalar(select(func.count(Rep.id))) == 0  # the writer has not committed
        assert time.monotonic() - started < 1.0  # not the 10 s busy timeout
    engine.dispose()
