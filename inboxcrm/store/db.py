"""The database adapter's plumbing: engines, pragmas and Alembic upgrades.

Everything else receives a Session or an Engine from here; nothing opens its own connection.
"""
from __future__ import annotations

import getpass
import logging
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import URL, Engine, Table, bindparam, create_engine, event, inspect, make_url, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from inboxcrm.config import DatabaseConfig, Environ
from inboxcrm.errors import Invalid
from inboxcrm.private_files import make_private_dir, new_private_file, others_can_read

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
BACKENDS = ("sqlite", "postgresql")  # the two the migrations and the test suite run on
VALID_URLS = "sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE (inboxcrm runs on SQLite and PostgreSQL)"
WRITE_OPTION = "inboxcrm_writes"  # execution option: this transaction will write (see _sqlite_begin)


def database_url(cfg: DatabaseConfig, environ: Environ = os.environ) -> URL:
    """The configured URL with its password: the secret is resolved only here, when connecting,
    and never stored in the file's URL; log the result with ``url.render_as_string(hide_password=True)``."""
    url = make_url(cfg.url)
    return url.set(password=cfg.password.resolve(environ)) if cfg.password else url


# The daemon runs up to 32 passes at once (its scheduler's threads), and a pass holds a connection
# through each commit group, while its messages download: with SQLAlchemy's default 5 + 10, passes
# waited up to 30 s for a connection and failed. Connections beyond 5 close when they come back,
# so a quiet daemon keeps 5 (see docs/operations.md, "PostgreSQL connections").
POOL = {"pool_size": 5, "max_overflow": 30}


def make_engine(url: URL | str) -> Engine:
    """An engine with the settings the pipeline relies on for each backend.

    A URL inboxcrm cannot use, or a SQLite file it cannot create or write, is refused here with
    what would work, rather than as a driver's traceback at the first query."""
    url = _usable_url(url)
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    try:  # loads the driver; connects only when first used
        engine = create_engine(url, future=True, **({} if in_memory else POOL))
    except (NoSuchModuleError, ImportError) as e:
        raise Invalid(f'{_setting(url)}: no database driver "{url.get_driver_name()}" for {url.get_backend_name()} '
                      f"is installed ({e}); expected {VALID_URLS}") from None
    if engine.dialect.name == "sqlite":
        prepare_sqlite_path(url)
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
    else:
        event.listen(engine, "connect", _postgresql_session)
    return engine


# The server notices a client that vanished (its machine gone, the network cut) within about a
# minute, instead of the system's two hours: the transaction it had open ends, and with it the
# locks a daemon taking over its mailbox would wait for (the rows of the messages it was
# recording). Ignored on a Unix socket; tcp_user_timeout only where the server has it (12+).
TCP_SETTINGS = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3",
                "tcp_user_timeout": "60000"}


def _postgresql_session(dbapi_conn, _record) -> None:  # pragma: no cover - exercised by every test
    """lz4 for values PostgreSQL compresses, where the server has it (PostgreSQL 14 and later,
    built with lz4). The default, pglz, spent about 35 ms of server CPU on each 1 MB message
    trying to compress its base64 attachment and failing (lz4: 6 ms); on the import benchmark
    that was more than all the intake's statements together. And ``TCP_SETTINGS``."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SELECT set_config(s.name, v.value, false) FROM pg_settings s"
                    " JOIN unnest(%s::text[], %s::text[]) AS v(name, value) ON v.name = s.name",
                    (list(TCP_SETTINGS), list(TCP_SETTINGS.values())))
        cur.execute("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cur.fetchone()
        if row is not None and "lz4" in (row[0] or ()):
            cur.execute("SET default_toast_compression = lz4")
    dbapi_conn.commit()


def _setting(url: URL) -> str:
    return f'database.url "{url.render_as_string(hide_password=True)}"'


def _usable_url(url: URL | str) -> URL:
    try:
        url = make_url(url)
    except ArgumentError:
        raise Invalid(f'database.url "{url}" is not a database URL; expected {VALID_URLS}') from None
    if url.get_backend_name() not in BACKENDS:
        raise Invalid(f'{_setting(url)}: unknown or unsupported database "{url.get_backend_name()}"; '
                      f"expected {VALID_URLS}")
    return url


def _sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database or a ``file:`` URI, which
    SQLite opens itself."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def prepare_sqlite_path(url: URL | str) -> None:
    """The data directory and the database file, created private (0700, 0600) before SQLite
    opens them; SQLite gives its -wal, -shm and -journal files the database file's mode.

    An existing file or folder keeps the mode its admin gave it. A world-readable database only
    draws a warning: it may be shared on purpose (a backup group, a reporting user), and refusing
    would stop a working CRM on upgrade; but every user can read the team's mail, so say so."""
    url = make_url(url)
    path = _sqlite_file(url)
    if path is None:
        return
    folder, user = path.absolute().parent, getpass.getuser()
    fix = f"expected a folder the user {user} can write: sudo install -d -m 0700 -o {user} {folder}, or another database.url"
    try:
        make_private_dir(folder)
    except OSError as e:
        raise Invalid(f"{_setting(url)}: cannot create the data directory {folder} ({e.strerror}); {fix}") from None
    if not os.access(folder, os.W_OK | os.X_OK):  # SQLite writes its -wal and -shm files beside the database
        raise Invalid(f"{_setting(url)}: the data directory {folder} is not writable by the user {user}; {fix}")
    try:
        fd = new_private_file(path)
        if fd is not None:
            os.close(fd)
            return
        status = path.stat()
    except OSError as e:
        raise Invalid(f"{_setting(url)}: cannot create the database file {path} ({e.strerror}); {fix}") from None
    if not stat.S_ISREG(status.st_mode) or not os.access(path, os.R_OK | os.W_OK):
        raise Invalid(f"{_setting(url)}: {path} is not a database file the user {user} can read and write; "
                      f"expected a SQLite file owned by {user} (sudo chown {user}: {path}), or another database.url")
    if others_can_read(status.st_mode):
        log.warning("the database %s is readable by every user on this machine (mode %04o); "
                    "unless that is meant, run: chmod 600 %s", path, stat.S_IMODE(status.st_mode), path)


# The newest migration. Every command checks the database against it before it reads or writes;
# Alembic, which knows it from the revision files, costs a third of a second to import, so the
# commands read it here and only "db upgrade" and "init" load Alembic (tests/test_migrations.py
# checks that this is Alembic's head).
HEAD_REVISION = "0010"


def alembic_config(engine: Engine):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (Alembic's version table), None for a database without
    inboxcrm's tables."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(versions)) or None


def head_revision() -> str:
    return HEAD_REVISION


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def column_binds(table: Table, columns: Iterable[str]) -> dict[str, Any]:
    """A bind parameter per column, named and typed as the column: for a statement that names
    its columns, as one run by ``driver_rows`` must (it fills in no others but their defaults)."""
    return {column: bindparam(column, type_=table.c[column].type) for column in columns}


@cache
def insert_new(dialect: str, table: Table, key: str, columns: tuple[str, ...] = ()):
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id, built once per table: one round trip
    that both writes a new row and says whether the key existed (no id back), on both backends.
    The raw message store and the outbox both decide "once" this way. ``columns``: the ones it
    names (``column_binds``), for ``driver_rows``; none, for SQLAlchemy's execution."""
    dialect_insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = dialect_insert(table).values(column_binds(table, columns)) if columns else dialect_insert(table)
    return statement.on_conflict_do_nothing(index_elements=[key]).returning(table.c.id)


# -- the hot path's statements on the driver's cursor ------------------------------------------------

@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once for the driver, with its types' conversions (``UTCDateTime``,
    JSON) and its columns' Python-side defaults looked up once: see ``driver_rows``."""

    sql: str
    binds: tuple[tuple[str, Any, Any, bool], ...]  # (name, bind processor or None, value when not given, call it)
    order: tuple[str, ...] | None  # a positional driver's (SQLite's) placeholders, by bind name
    results: tuple[Any, ...]  # a result processor or None per column


_DRIVER_STATEMENTS: dict[tuple[int, str], tuple[object, _DriverStatement | None]] = {}


def _driver_statement(dialect: Dialect, stmt) -> _DriverStatement | None:
    """None for what the driver cannot take as it is: a list bound to IN (rendered at execution),
    a bind with escaped characters in its name, or a default that is SQL."""
    compiled = stmt.compile(dialect=dialect)
    if compiled.escaped_bind_names:
        return None
    defaults = {column.key: column.default for column in compiled.insert_prefetch}
    defaults.update({column.key: column.onupdate for column in compiled.update_prefetch})
    binds = []
    for name, bind in compiled.binds.items():
        if bind.expanding or bind.literal_execute or bind.callable is not None:
            return None
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        default = defaults.get(name)
        if default is None:
            binds.append((name, process, bind.value, False))
        elif default.is_scalar or default.is_callable:
            binds.append((name, process, default.arg, default.is_callable))  # callables take a context
        else:
            return None
    results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in stmt.exported_columns)
    order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    return _DriverStatement(compiled.string, tuple(binds), order, results)


def driver_rows(conn: Connection, stmt, params: dict[str, Any]) -> list[tuple] | None:
    """Runs one of the intake's hot statements on the driver's cursor, within the connection's
    transaction: SQLAlchemy's execution cost about 90 us of CPU per statement around the driver's
    30 us, a third of the importing process on SQLite, and on PostgreSQL the importer shares the
    CPU with the server. The statement is compiled once; its values are converted and its
    columns' defaults filled in as SQLAlchemy would, its results converted back. Driver errors
    are raised as SQLAlchemy's (the intake stops on ``DATABASE_FAILURES`` as before). Returns the
    rows of a statement that returns any. A statement the driver cannot take as it is, or a
    connection outside a transaction (which SQLAlchemy would begin), goes through SQLAlchemy."""
    key = (id(stmt), conn.dialect.name)
    found = _DRIVER_STATEMENTS.get(key)
    if found is None:  # holds the statement, so its id stays its own
        found = _DRIVER_STATEMENTS[key] = (stmt, _driver_statement(conn.dialect, stmt))
    prepared = found[1]
    if prepared is None or not conn.in_transaction():
        result = conn.execute(stmt, params)
        return [tuple(row) for row in result] if result.returns_rows else None
    values = {}
    for name, process, default, call in prepared.binds:
        value = params[name] if name in params else default(None) if call else default
        values[name] = value if process is None else process(value)
    bound = values if prepared.order is None else tuple(values[name] for name in prepared.order)
    driver = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    cursor = driver.cursor()
    try:
        cursor.execute(prepared.sql, bound)
        rows = None if cursor.description is None else cursor.fetchall()
    except dbapi.Error as e:
        if conn.dialect.is_disconnect(e, driver, cursor):
            conn.invalidate(e)
        raise DBAPIError.instance(prepared.sql, bound, e, dbapi.Error) from e
    finally:
        cursor.close()
    if rows and any(prepared.results):
        return [tuple(value if process is None else process(value)
                      for process, value in zip(prepared.results, row)) for row in rows]
    return rows


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception. Every transaction that
    writes goes through here, so that SQLite queues writers instead of failing one."""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session


def unusable_database(exc: BaseException) -> str | None:
    """Why the database cannot be used, when ``exc`` says so (an OperationalError: server down,
    file locked or unreadable, disk full), else None. The store's word on its own failures, so
    that the command line refuses in one line without knowing SQLAlchemy's exceptions."""
    from sqlalchemy.exc import OperationalError

    return str(exc.orig or exc) if isinstance(exc, OperationalError) else None
