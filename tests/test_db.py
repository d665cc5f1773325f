"""The database adapter: SQLite writers queue and readers never wait; an unusable URL is refused
with what would work."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, text

from inboxcrm.cli import main
from inboxcrm.config import DatabaseConfig
from inboxcrm.errors import Invalid
from inboxcrm.secret import SecretRef
from inboxcrm.store.db import (
    TCP_SETTINGS,
    database_url,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)
from inboxcrm.store.models import Rep

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_the_server_looks_for_a_vanished_client_within_a_minute(engine):
    """A daemon's machine gone or its network cut: with the system's default (two hours of
    silence before the first probe) its open transaction, and the rows a daemon taking over its
    mailbox waits for, would stay locked that long. Each of our connections sets its own."""
    assert engine.url.host == "127.0.0.1"  # TCP: on a Unix socket the server ignores them
    with engine.connect() as connection:
        settings = dict(connection.execute(text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
                                           {"names": list(TCP_SETTINGS)}).all())
    assert settings == TCP_SETTINGS
    idle, interval, count = (int(TCP_SETTINGS[k]) for k in ("tcp_keepalives_idle", "tcp_keepalives_interval",
                                                            "tcp_keepalives_count"))
    assert idle + interval * count <= 60 and int(TCP_SETTINGS["tcp_user_timeout"]) <= 60_000


def test_the_database_password_is_resolved_only_when_connecting():
    cfg = DatabaseConfig("postgresql+psycopg://crm@db/crm", SecretRef(env="DB_PW"))
    url = database_url(cfg, {"DB_PW": SECRET})
    assert url.password == SECRET and SECRET not in repr(cfg)
    assert url.render_as_string(hide_password=True) == "postgresql+psycopg://crm:***@db/crm"
    assert database_url(DatabaseConfig("sqlite://"), {}).render_as_string() == "sqlite://"


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


VALID = "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE (inboxcrm runs on SQLite and PostgreSQL)"


@pytest.mark.parametrize("url, problem", [
    ("foo://", 'database.url "foo://": unknown or unsupported database "foo"'),
    ("mysql+nosuchdriver://crm@db.example/crm", 'unknown or unsupported database "mysql"'),
    ("mysql://crm@db.example/crm", 'unknown or unsupported database "mysql"'),
    ("postgresql+nosuchdriver://crm@db.example/crm", 'no database driver "nosuchdriver" for postgresql is installed'),
    ("postgresql+psycopg2://crm:hunter2@db.example/crm",
     'database.url "postgresql+psycopg2://crm:***@db.example/crm": no database driver "psycopg2"'),
    ("sqlite+pysqlcipher:///{tmp}/crm.db", 'no database driver "pysqlcipher" for sqlite is installed'),
    ("no url at all", 'database.url "no url at all" is not a database URL'),
])
def test_an_unusable_database_url_is_refused_with_what_would_work(tmp_path, url, problem):
    url = url.format(tmp=tmp_path)
    with pytest.raises(Invalid) as refused:
        make_engine(url)
    message = str(refused.value)
    assert problem in message and message.endswith(VALID)
    assert "hunter2" not in message
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_the_command_line_shows_an_unknown_driver_as_one_line(config_file):
    result = CliRunner(env={"INBOXCRM_CONFIG": None, "INBOXCRM_DATABASE_URL": None}).invoke(
        main, ["--config", str(config_file), "--database-url", "mysql+nosuchdriver://crm@db.example/crm", "init"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == f'error: database.url "mysql+nosuchdriver://crm@db.example/crm": unknown or unsupported ' \
                            f'database "mysql"; {VALID}\n'
