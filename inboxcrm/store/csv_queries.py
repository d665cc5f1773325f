"""What a spreadsheet import and the deals export ask of the store, by name, for a whole file at once.

A file of 100,000 rows asked one question per row would spend its time on round trips, so
every lookup here takes the file's addresses, domains or deal ids together (in chunks that
stay under SQLite's bound-parameter limit) and the import's extra rows (next steps, notes) go
out as one executemany each. Never commits: the use case owns the transaction.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, cast, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, aliased

from inboxcrm.store.db import column_binds, driver_rows
from inboxcrm.store.models import Company, ContactAddress, Deal, Note, Rep, RepAddress, Stage

CHUNK = 1000
T = TypeVar("T")


def _chunks(items: Iterable[T]) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def contacts_by_address(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    """address -> contact id, for those of ``addresses`` a contact has."""
    found: dict[str, int] = {}
    for batch in _chunks(sorted(set(addresses))):
        found.update(session.execute(select(ContactAddress.address, ContactAddress.contact_id)
                                     .where(ContactAddress.address.in_(batch))).all())
    return found


def latest_open_deals(session: Session, contact_ids: Iterable[int]) -> dict[int, tuple]:
    """contact id -> (deal id, stage, owner, value, next step, due) of its most recently active
    open deal, the one a reply would be filed on."""
    owner = aliased(Rep)
    found: dict[int, tuple] = {}
    for batch in _chunks(sorted(set(contact_ids))):
        rows = session.execute(
            select(Deal.contact_id, Deal.id, Stage.name, owner.name, Deal.value, Deal.next_step, Deal.next_step_due)
            .join(Stage, Stage.id == Deal.stage_id).outerjoin(owner, owner.id == Deal.owner_rep_id)
            .where(Deal.contact_id.in_(batch), Deal.closed_at.is_(None))
            .order_by(Deal.contact_id, Deal.last_activity_at.desc(), Deal.id.desc()))
        for row in rows:
            found.setdefault(row[0], tuple(row[1:]))
    return found


def notes_by_deal(session: Session, deal_ids: Iterable[int]) -> dict[int, list[str]]:
    """deal id -> its notes' texts, oldest first."""
    found: dict[int, list[str]] = {}
    for batch in _chunks(sorted(set(deal_ids))):
        for deal_id, text in session.execute(select(Note.deal_id, Note.text).where(Note.deal_id.in_(batch))
                                             .order_by(Note.deal_id, Note.at, Note.id)):
            found.setdefault(deal_id, []).append(text)
    return found


def sources_by_deal(session: Session, deal_ids: Iterable[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for batch in _chunks(sorted(set(deal_ids))):
        found.update(session.execute(select(Deal.id, Deal.source).where(Deal.id.in_(batch))).all())
    return found


def companies_by_domain(session: Session, domains: Iterable[str]) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for batch in _chunks(sorted(set(domains))):
        for pk, domain, name in session.execute(select(Company.id, Company.domain, Company.name)
                                                .where(Company.domain.in_(batch))):
            found[domain] = (pk, name)
    return found


def companies_by_name(session: Session, names: Iterable[str]) -> dict[str, tuple[int, str]]:
    """lower-cased name -> (id, name); the oldest company of that name when several share it."""
    found: dict[str, tuple[int, str]] = {}
    for batch in _chunks(sorted({n.lower() for n in names})):
        for pk, name in session.execute(select(Company.id, Company.name).where(func.lower(Company.name).in_(batch))
                                        .order_by(Company.id)):
            found.setdefault(name.lower(), (pk, name))
    return found


def reps_by_address(session: Session) -> dict[str, str]:
    """A rep's address -> the rep's name: an owner column may hold either."""
    return dict(session.execute(select(RepAddress.address, Rep.name)
                                .join(Rep, Rep.id == RepAddress.rep_id)).all())


def add_notes(conn: Connection, notes: Sequence[dict[str, Any]]) -> None:
    """``notes``: dicts of deal_id, text, actor, at; one statement."""
    insert_rows(conn, Note.__table__, notes)


@cache
def _one_row_insert(table: Table, columns: tuple[str, ...], ids: bool):
    """Built once per shape: the intake writes one lead per new sender, and building the statement
    anew each time cost as much as running it (SQLite). Its columns are named, so that the driver
    (``driver_rows``) is given them all."""
    statement = insert(table).values(column_binds(table, columns))
    return statement.returning(table.c.id) if ids else statement


def insert_rows(db: Connection | Session, table: Table, rows: Sequence[dict[str, Any]], ids: bool = False) -> list[int]:
    """Inserts many rows of one shape at the speed of the driver, not of SQLAlchemy's per-row
    work (which took most of a 100,000-row import), and returns their ids in their order when
    asked. SQLite: the values go through the columns' own bind processors (each distinct value
    once: a file's rows share their dates and actor) to one ``executemany``; the first row's
    INSERT takes the write lock, so the others get the ids SQLite itself would give them (the
    highest id plus one, in turn), which it would not promise through RETURNING. PostgreSQL: one
    INSERT ... SELECT FROM unnest() of a column array each, in order, the ids RETURNING in the
    order the sequence gave them. One row: a plain INSERT, as the intake writes a lead."""
    if not rows:
        return []
    conn = db.connection() if isinstance(db, Session) else db
    if len(rows) == 1:
        made = driver_rows(conn, _one_row_insert(table, tuple(rows[0]), ids), rows[0])
        return [made[0][0]] if ids else []
    if conn.dialect.name == "postgresql":
        return _insert_unnest(conn, table, rows, ids)
    made: list[int] = []
    if ids:
        first = conn.execute(insert(table).returning(table.c.id), rows[0]).scalar_one()
        made = list(range(first, first + len(rows)))
        rows = [dict(row, id=pk) for pk, row in zip(made[1:], rows[1:])]
    names = list(rows[0])
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=names)
    order = [compiled.binds[key].key for key in compiled.positiontup]
    columns = []
    for name in order:
        process = table.c[name].type.bind_processor(conn.dialect)
        seen: dict[datetime, Any] = {}
        if name in rows[0]:
            values = [row[name] for row in rows]
        else:  # a column the rows leave to its default, as SQLAlchemy would fill it
            default = table.c[name].default
            if default is None or not default.is_scalar:
                raise ValueError(f"{table.name}.{name}: no value and no constant default")
            values = [default.arg] * len(rows)
        if process is not None:
            values = [_processed(process, seen, v) for v in values]
        columns.append(values)
    conn.exec_driver_sql(compiled.string, list(zip(*columns)))
    return made


def _processed(process, seen: dict[datetime, Any], value: Any) -> Any:
    """Dates only are remembered: equal Decimals (1 and 1.00) may be stored differently."""
    if type(value) is not datetime:
        return process(value)
    if value not in seen:
        seen[value] = process(value)
    return seen[value]


def _insert_unnest(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], ids: bool) -> list[int]:
    names = list(rows[0])
    arrays = [cast(bindparam(n, type_=ARRAY(table.c[n].type)), ARRAY(table.c[n].type)) for n in names]
    unnested = func.unnest(*arrays).table_valued(*names, with_ordinality="row_number").render_derived()
    statement = insert(table).from_select(names, select(*[unnested.c[n] for n in names])
                                          .order_by(unnested.c.row_number))
    params = {n: [row[n] for row in rows] for n in names}
    if not ids:
        conn.execute(statement, params)
        return []
    return sorted(conn.execute(statement.returning(table.c.id), params).scalars())
