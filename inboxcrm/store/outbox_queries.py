"""The outbox table's statements: what ``app.outbox`` and ``app.notify`` ask of it, by name.

Each function runs in the session it is given and never commits: the caller owns the
transaction, because the outbox's guarantees (a decision made once, a row sent once) live in
where those transactions begin and end, and that is the use case's business, not the store's.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from inboxcrm.store.db import insert_new
from inboxcrm.store.models import OutboxMessage

KEY_BATCH = 500  # keys per IN (...) lookup: each one a probe of the unique index on outbox.key


def batches(items: Sequence, size: int = KEY_BATCH) -> Iterator[Sequence]:
    """``items`` in slices short enough for one ``IN (...)`` list on either backend."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- deciding once ---------------------------------------------------------------------------

def insert_if_new(session: Session, **values) -> bool:
    """INSERT ... ON CONFLICT (key) DO NOTHING: False (nothing written) when the key was already decided."""
    stmt = insert_new(session.get_bind().dialect.name, OutboxMessage.__table__, "key")
    return session.execute(stmt, values).scalar() is not None


def by_key(session: Session, key: str) -> OutboxMessage | None:
    return session.scalar(select(OutboxMessage).where(OutboxMessage.key == key))


def existing_keys(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` have a row already (the decisions taken), in batches of ``KEY_BATCH``."""
    found: set[str] = set()
    for batch in batches(list(keys)):
        found.update(session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.in_(batch))))
    return found


# -- listing ---------------------------------------------------------------------------------

def newest(session: Session, limit: int, status: str | None = None,
           excluding: Sequence[str] = ()) -> list[OutboxMessage]:
    """Rows newest first, of one status or of every status but ``excluding``."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    if excluding:
        query = query.where(OutboxMessage.status.not_in(excluding))
    return list(session.scalars(query))


def all_with_status(session: Session, statuses: Sequence[str]) -> list[OutboxMessage]:
    """Every row in one of ``statuses``, oldest first, with no limit: the few that need the admin."""
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.status.in_(statuses))
                                .order_by(OutboxMessage.id)))


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(OutboxMessage)
                          .where(OutboxMessage.status == "pending")) or 0


# -- sending ---------------------------------------------------------------------------------

def due_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Pending rows whose next attempt has come, the longest waiting first."""
    return list(session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)))


def claim(session: Session, pk: int, now: datetime, lease_until: datetime) -> tuple[str, bytes] | None:
    """Pushes a due row's next attempt to ``lease_until`` with one conditional UPDATE, so of two
    senders only one changes the row; its recipient and message, or None when another was first."""
    taken = (update(OutboxMessage).values(next_attempt_at=lease_until)
             .where(OutboxMessage.id == pk, OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now))
    if session.execute(taken).rowcount != 1:
        return None
    return tuple(session.execute(select(OutboxMessage.to_address, OutboxMessage.body)
                                 .where(OutboxMessage.id == pk)).one())


def mark_sending(session: Session, pk: int, lease_until: datetime) -> bool:
    """pending -> sending, only while the lease taken by ``claim`` still holds."""
    return session.execute(update(OutboxMessage).values(status="sending").where(
        OutboxMessage.id == pk, OutboxMessage.status == "pending",
        OutboxMessage.next_attempt_at == lease_until)).rowcount == 1


def mark_sent(session: Session, pk: int, now: datetime) -> None:
    session.execute(update(OutboxMessage).where(OutboxMessage.id == pk).values(
        status="sent", sent_at=now, attempts=OutboxMessage.attempts + 1, last_error=None))


def mark_unknown(session: Session, pk: int, error: str) -> None:
    """The connection failed during DATA: one more attempt, which may or may not have delivered."""
    session.execute(update(OutboxMessage).where(OutboxMessage.id == pk).values(
        status="unknown", attempts=OutboxMessage.attempts + 1, last_error=error))


def stale_sending(session: Session, now: datetime) -> list[tuple[int, str]]:
    """(id, key) of the rows left in "sending" past their lease."""
    return [(pk, key) for pk, key in session.execute(select(OutboxMessage.id, OutboxMessage.key).where(
        OutboxMessage.status == "sending", OutboxMessage.next_attempt_at <= now))]


def sending_to_unknown(session: Session, pk: int, error: str) -> None:
    """sending -> unknown, unless the row has left "sending" meanwhile."""
    session.execute(update(OutboxMessage).where(OutboxMessage.id == pk, OutboxMessage.status == "sending")
                    .values(status="unknown", last_error=error))


def outbox_counts(session: Session) -> dict[str, int]:
    """Outbox status -> rows; empty when nothing was ever queued."""
    return dict(session.execute(select(OutboxMessage.status, func.count(OutboxMessage.id))
                                .group_by(OutboxMessage.status).order_by(OutboxMessage.status)).all())
