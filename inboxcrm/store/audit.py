"""The audit log's one writer: who did what to which record, when and why.

Every change to a record (by a rep on the command line, by a command email, by the intake of a
message, by a migration's merge) is written through here, so an entry always has the same shape
and ``audit`` listings never meet a row a second writer shaped differently. The intake collects
its entries and writes them in one statement per message (``write_batch``): on the import's hot
path one INSERT per entry cost more than the entries themselves.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from inboxcrm.store import csv_queries
from inboxcrm.store.models import AuditEntry


def entry(at: datetime, actor: str, action: str, entity: str, entity_id: int | None, reason: str = "",
          /, **detail: Any) -> dict[str, Any]:
    """One audit row as values. ``detail`` holds what changed (old and new values, the reference
    a person typed, even one called "reason": the fixed fields are positional only); ``reason`` is the
    human why ("lead added by hand", "message <id>")."""
    return dict(at=at, actor=actor, action=action, entity=entity, entity_id=entity_id, detail=detail, reason=reason)


def write(session: Session, at: datetime, actor: str, action: str, entity: str, entity_id: int | None,
          reason: str = "", /, **detail: Any) -> None:
    session.add(AuditEntry(**entry(at, actor, action, entity, entity_id, reason, **detail)))


def write_batch(conn: Connection | Session, entries: list[dict[str, Any]]) -> None:
    if entries:
        conn.execute(insert(AuditEntry.__table__), entries)


def write_many(conn: Connection | Session, entries: list[dict[str, Any]]) -> None:
    """``write_batch`` for a whole file's entries (an import's 400,000): at the driver's speed."""
    csv_queries.insert_rows(conn, AuditEntry.__table__, entries)
