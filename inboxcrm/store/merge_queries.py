"""What ``app.merge`` asks of the database: the facts duplicates are found from, the rows that
point at a contact or company, and the moves, deletions and re-insertions of a merge and its undo.

The rows a merge moves are found from the schema, not from a list kept by hand: every foreign
key of ``Base.metadata`` that points at ``contacts`` (or ``companies``) is followed, so a table
added later that references a contact is moved, recorded and put back without anyone
remembering this module. Values are recorded as JSON by their column's type (a timestamp as ISO
text, an amount as a decimal string, bytes as base64) and read back the same way, so a row put
back compares equal to the row that was there.

Each function runs in the session it is given and never commits.
"""
from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    LargeBinary,
    Numeric,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from inboxcrm.store.models import Base, Company, Contact, ContactAddress, Merge

CHUNK = 500  # ids per IN (...): well under every backend's limit on bound parameters


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _pk(table: Table) -> Column:
    (column,) = table.primary_key.columns  # every table a merge touches has a one-column key
    return column


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


# -- values as JSON and back ----------------------------------------------------------------

def _kind(column: Column):
    kind = column.type
    return kind.impl if isinstance(kind, TypeDecorator) else kind


def encode_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def decode_value(table: str, column: str, value: Any) -> Any:
    """``value`` as ``encode_value`` wrote it, turned back into what the column holds."""
    if value is None:
        return None
    kind = _kind(_table(table).c[column])
    if isinstance(kind, DateTime):
        return datetime.fromisoformat(value)
    if isinstance(kind, Date):
        return date.fromisoformat(value)
    if isinstance(kind, Numeric):
        return Decimal(value)
    if isinstance(kind, LargeBinary):
        return base64.b64decode(value)
    return value


def encode_row(values: dict[str, Any]) -> dict[str, Any]:
    return {name: encode_value(value) for name, value in values.items()}


def decode_row(table: str, values: dict[str, Any]) -> dict[str, Any]:
    return {name: decode_value(table, name, value) for name, value in values.items()}


# -- rows by table name ---------------------------------------------------------------------

def references_to(target: str) -> list[tuple[str, str]]:
    """(table, column) of every foreign key that points at ``target``, in dependency order."""
    return [(table.name, fk.parent.name) for table in Base.metadata.sorted_tables
            for fk in sorted(table.foreign_keys, key=lambda fk: fk.parent.name)
            if fk.column.table.name == target]


def row_values(session: Session, table: str, pk: int) -> dict[str, Any] | None:
    """Every column of one row, as the database holds it; None when there is no such row."""
    t = _table(table)
    row = session.execute(select(t).where(_pk(t) == pk)).mappings().first()
    return dict(row) if row is not None else None


def move_references(session: Session, target: str, from_id: int, to_id: int) -> list[dict[str, Any]]:
    """Points every row that references ``target`` row ``from_id`` at ``to_id``; returns each
    row moved as {table, id, column, old, new}, what an undo needs to point it back."""
    moved = []
    for table, column in references_to(target):
        t = _table(table)
        ids = list(session.scalars(select(_pk(t)).where(t.c[column] == from_id).order_by(_pk(t))))
        for chunk in _chunks(ids):
            session.execute(update(t).where(_pk(t).in_(chunk)).values({column: to_id}))
        moved += [dict(table=table, id=pk, column=column, old=from_id, new=to_id) for pk in ids]
    return moved


def set_values(session: Session, table: str, pk: int, values: dict[str, Any]) -> None:
    if values:
        t = _table(table)
        session.execute(update(t).where(_pk(t) == pk).values(values))


def set_column(session: Session, table: str, column: str, value: Any, ids: list[int]) -> None:
    t = _table(table)
    for chunk in _chunks(ids):
        session.execute(update(t).where(_pk(t).in_(chunk)).values({column: value}))


def delete_row(session: Session, table: str, pk: int) -> None:
    t = _table(table)
    session.execute(delete(t).where(_pk(t) == pk))


def insert_row(session: Session, table: str, values: dict[str, Any]) -> None:
    """Puts a row back with the id it had (PostgreSQL's sequence is already past it)."""
    session.execute(insert(_table(table)).values(values))


def current_values(session: Session, table: str, column: str, ids: Iterable[int]) -> dict[int, Any]:
    """{id: the column's value now} for the rows of ``ids`` that still exist."""
    t = _table(table)
    found: dict[int, Any] = {}
    for chunk in _chunks(sorted(set(ids))):
        found.update((pk, value) for pk, value in session.execute(
            select(_pk(t), t.c[column]).where(_pk(t).in_(chunk))))
    return found


def holders(session: Session, table: str, values: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """(column(s), value, id of the row holding it) for each key or unique value of ``values``
    another row has now: what stops the row from being put back."""
    t = _table(table)
    keys = [tuple(t.primary_key.columns)] + [tuple(c.columns) for c in t.constraints
                                            if isinstance(c, UniqueConstraint)]
    keys += [(c,) for c in t.columns if c.unique]
    taken = []
    for columns in dict.fromkeys(keys):
        if any(values.get(c.name) is None for c in columns):
            continue
        held = session.scalar(select(_pk(t)).where(*(c == values[c.name] for c in columns)))
        if held is not None:
            taken.append(("/".join(c.name for c in columns), tuple(values[c.name] for c in columns), held))
    return taken


# -- what duplicates are found from ----------------------------------------------------------

def contact_facts(session: Session) -> list[tuple[int, str, datetime, str | None]]:
    """(id, name, first seen, address) per address (a contact without one: address None), by id."""
    return [tuple(r) for r in session.execute(
        select(Contact.id, Contact.name, Contact.first_seen, ContactAddress.address)
        .outerjoin(ContactAddress, ContactAddress.contact_id == Contact.id)
        .order_by(Contact.id, ContactAddress.id))]


def company_facts(session: Session) -> list[tuple[int, str, str, datetime]]:
    """(id, name, domain, created) of every company, by id."""
    return [tuple(r) for r in session.execute(
        select(Company.id, Company.name, Company.domain, Company.created_at).order_by(Company.id))]


def first_address(session: Session, contact_id: int) -> str | None:
    return session.scalar(select(ContactAddress.address).where(ContactAddress.contact_id == contact_id)
                          .order_by(ContactAddress.id).limit(1))


# -- the merges table -------------------------------------------------------------------------

def add_merge(session: Session, kind: str, kept_id: int, merged_id: int, at: datetime, actor: str,
              undo: dict[str, Any]) -> int:
    row = Merge(kind=kind, kept_id=kept_id, merged_id=merged_id, at=at, actor=actor, undo=undo)
    session.add(row)
    session.flush()
    return row.id


def merge_by_id(session: Session, merge_id: int) -> Merge | None:
    return session.get(Merge, merge_id)


def latest_not_undone(session: Session) -> Merge | None:
    return session.scalar(select(Merge).where(Merge.undone_at.is_(None)).order_by(Merge.id.desc()).limit(1))


def merge_absorbing(session: Session, kind: str, merged_id: int, after: int) -> Merge | None:
    """The later merge, not undone, that merged ``kind`` ``merged_id`` away, if one did."""
    return session.scalar(select(Merge).where(Merge.kind == kind, Merge.merged_id == merged_id,
                                              Merge.id > after, Merge.undone_at.is_(None))
                          .order_by(Merge.id).limit(1))


def merges(session: Session) -> list[Merge]:
    """Every merge, newest first."""
    return list(session.scalars(select(Merge).order_by(Merge.id.desc())))
