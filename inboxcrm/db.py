"""The database adapter's plumbing: engines, pragmas and Alembic upgrades.

Everything else receives a Session or an Engine from here; nothing opens its own connection.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from functools import cache

from sqlalchemy import URL, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
WRITE_OPTION = "inboxcrm_writes"  # execution option: this transaction will write (see _sqlite_begin)


def make_engine(url: URL | str) -> Engine:
    """An engine with the settings the pipeline relies on for each backend."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            cur = dbapi_conn.cursor()
            # Takes effect only on a new database: 16 KB pages store raw messages in a quarter
            # of the overflow pages (measured: a third faster for 1 MB messages).
            cur.execute("PRAGMA page_size=16384")
            # WAL + NORMAL: a crash loses at most the last transaction, never corrupts; much
            # faster than one fsync per message. Foreign keys are off by default in SQLite.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so that
            # SAVEPOINTs (one per message, for quarantine on failure) behave as documented.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - exercised by every test
            # A unit of work (``transaction``) takes the write lock at BEGIN (IMMEDIATE): a
            # deferred transaction that read first and writes after another connection committed
            # fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT), whatever the busy
            # timeout, and the daemon's threads (sync passes, digests, the outbox) write at the
            # same time. Reading sessions stay deferred, so in WAL mode they never wait for a writer.
            immediate = conn.get_execution_options().get(WRITE_OPTION)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head() or ""


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


@cache
def insert_new(dialect: str, table: Table, key: str):
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id, built once per table: one round trip
    that both writes a new row and says whether the key existed (no id back), on both backends.
    The raw message store and the outbox both decide "once" this way."""
    dialect_insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c.id)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception. Every transaction that
    writes goes through here, so that SQLite queues writers instead of failing one."""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session
