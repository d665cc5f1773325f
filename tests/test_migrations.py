"""Alembic's history and the models describe the same schema, on both backends."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select

from inboxcrm import db
from inboxcrm.models import Base, Stage

DEFAULT_STAGES = [("New", "open"), ("Contacted", "open"), ("Qualified", "open"), ("Proposal", "open"),
                  ("Negotiation", "open"), ("Won", "won"), ("Lost", "lost")]


def stages(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(Stage.name, Stage.kind).order_by(Stage.position))]


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], "models and migrations differ; write a migration:\n" + "\n".join(map(str, diff))


def test_the_comparison_sees_a_model_change(engine):
    """The check above can fail: a column only the models have is a difference."""
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    Table("stages", changed, Column("color", Integer), extend_existing=True)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), changed)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "stages", "color")]


def test_default_stages_in_order_with_kinds(engine):
    assert stages(engine) == DEFAULT_STAGES
    with engine.connect() as conn:
        positions = conn.scalars(select(Stage.position).order_by(Stage.position)).all()
    assert positions == sorted(set(positions))


def test_upgrade_downgrade_upgrade_on_a_fresh_sqlite_file(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert db.current_revision(engine) is None and not db.is_current(engine)
        db.upgrade(engine)
        assert db.is_current(engine) and db.current_revision(engine) == db.head_revision()
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}

        command.downgrade(db.alembic_config(engine), "base")
        assert db.current_revision(engine) is None and not db.is_current(engine)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        db.upgrade(engine)
        assert db.is_current(engine)
        assert stages(engine) == DEFAULT_STAGES  # inserted once again, not twice
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_rows_and_fills_new_columns(tmp_path):
    """A populated database of the first release upgrades in place: the new NOT NULL columns
    (mailbox failures, rep digest switches) get their defaults on existing rows."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        db.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO reps (name, timezone, active, created_at) "
                                 "VALUES ('alice', 'UTC', 1, '2026-01-01 00:00:00')")
            conn.exec_driver_sql("INSERT INTO mailboxes (name, role, default_source, new_sender_policy, created_at) "
                                 "VALUES ('sales', 'capture', 'sales', 'create', '2026-01-01 00:00:00')")
        db.upgrade(engine)
        with engine.connect() as conn:
            rep = conn.exec_driver_sql("SELECT name, digest_always, digest_enabled, digest_time FROM reps").one()
            box = conn.exec_driver_sql("SELECT name, failures, connection FROM mailboxes").one()
        assert tuple(rep) == ("alice", 0, 1, None)
        assert tuple(box) == ("sales", 0, None)
    finally:
        engine.dispose()
