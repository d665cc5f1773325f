"""Shared fixtures: the same test cases run on SQLite and on PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, user postgres). Where it is not
running the PostgreSQL cases skip with the reason, unless INBOXCRM_REQUIRE_SERVERS=1 (set by
.ci/run), which turns that skip into a failure.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from inboxcrm.cli import main
from inboxcrm.store.db import make_engine, session_factory, upgrade
from inboxcrm.store.models import Base

MAIL = Path(__file__).parent / "mail"
PG_ADMIN_URL = os.environ.get("INBOXCRM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_SERVERS = os.environ.get("INBOXCRM_REQUIRE_SERVERS") == "1"


def server_missing(what: str, why: str) -> None:
    """Skip on a user's machine; fail in CI, where every server must be there."""
    message = f"{what} not available: {why}"
    if REQUIRE_SERVERS:
        pytest.fail(message + " (INBOXCRM_REQUIRE_SERVERS=1 makes this a failure)")
    pytest.skip(message)


@pytest.fixture(autouse=True, scope="session")
def _data_home(tmp_path_factory):
    """Defaults that live in the data directory (the reply-token key) go to a temporary one,
    never to the home directory of whoever runs the tests."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


def mail(name: str) -> bytes:
    """The bytes of a fixture under tests/mail/."""
    return (MAIL / name).read_bytes()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database():
    """One throw-away database per test session, migrated once; tables emptied per test."""
    try:
        admin = make_engine(PG_ADMIN_URL)
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not available"
        yield exc
        return
    name = f"inboxcrm_test_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name)
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        stages = [dict(r._mapping) for r in conn.execute(text("select * from stages"))]
    yield engine, stages
    engine.dispose()
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_postgres(engine, stages) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(Base.metadata.tables["stages"].insert(), stages)
        conn.execute(text("SELECT setval(pg_get_serial_sequence('stages', 'id'), (SELECT max(id) FROM stages))"))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path, sqlite_template):
    """A migrated, empty database (default stages only) on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "inboxcrm.store.db"
        shutil.copy(sqlite_template, path)
        eng = make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
        return
    pg = request.getfixturevalue("pg_database")
    if isinstance(pg, Exception):
        server_missing("PostgreSQL at 127.0.0.1:5432", str(pg).splitlines()[0])
    eng, stages = pg
    _reset_postgres(eng, stages)
    yield eng


@pytest.fixture
def factory(engine):
    return session_factory(engine)


@pytest.fixture
def db_url(engine) -> str:
    """The test database's URL as a string, for CLI tests that take --database-url."""
    return engine.url.render_as_string(hide_password=False)


# -- the command line on the test database -------------------------------------------------

@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[team]\ndomains = ["acme.example"]\n\n[pipeline]\nquiet_days = 10\n')
    return path


@pytest.fixture
def cli(db_url, config_file):
    """Runs ``inboxcrm --config ... --database-url ... ARGS``; asserts the exit code."""
    runner = CliRunner(env={"INBOXCRM_CONFIG": None, "INBOXCRM_DATABASE_URL": None})

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(main, ["--config", str(config_file), "--database-url", db_url, *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, result.output
        return result

    return invoke


@pytest.fixture
def team(cli):
    cli("rep", "add", "alice", "--email", "alice@acme.example")
    cli("rep", "add", "bob", "--email", "bob@acme.example", "--timezone", "Europe/Berlin")
    cli("mailbox", "add", "sales", "--role", "capture", "--owner", "alice")
    return cli


def refused(cli, *args: str) -> str:
    """An error: exit status 2, one line on stderr, no traceback."""
    result = cli(*args, code=2)
    assert "Traceback" not in result.output and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 or result.stderr.startswith("Usage:")
    return result.stderr


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A private CA and a certificate for 127.0.0.1/localhost signed by it (tests/certs.py)."""
    from .certs import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))
