"""Alembic's history and the models describe the same schema, on both backends."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select, text

from inboxcrm.errors import Invalid
from inboxcrm.store import db
from inboxcrm.store.models import Base, Stage
from tests.conftest import PG_ADMIN_URL, server_missing

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


# -- 0006: stored addresses in the normal form, companies by registrable domain ---------------

def database_at(request, tmp_path, revision: str):
    """An empty database of ``revision`` on the backend ``request.param`` names."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        db.upgrade(engine, revision)
        yield engine
        engine.dispose()
        return
    try:
        admin = db.make_engine(PG_ADMIN_URL)
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not available"
        server_missing("PostgreSQL at 127.0.0.1:5432", str(exc).splitlines()[0])
    name = f"inboxcrm_{revision}_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(admin.url.set(database=name))
    try:
        db.upgrade(engine, revision)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def at_0005(request, tmp_path):
    """An empty database of revision 0005 (before the normal form) on each backend."""
    yield from database_at(request, tmp_path, "0005")


def insert(conn, table: str, **values) -> int:
    columns = ", ".join(values)
    marks = ", ".join(f":{c}" for c in values)
    return conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id"), values).scalar_one()


def day(n: int) -> datetime:
    return datetime(2026, 1, n, tzinfo=timezone.utc)


def old_crm(engine) -> dict[str, int]:
    """What a team's 0005 database holds after a year of mixed spellings; the ids by name."""
    with engine.begin() as conn:
        stage = conn.execute(text("SELECT id FROM stages ORDER BY position")).scalars().first()
        ids = {"stage": stage}

        def deal(name: str, contact: str, company: str | None) -> None:
            ids[name] = insert(conn, "deals", title=name, contact_id=ids[contact], company_id=company and ids[company],
                               stage_id=stage, source="email", fit_score=0, score=0, inbound_count=1,
                               outbound_count=0, created_at=day(3), last_activity_at=day(3),
                               last_stage_change_at=day(3))

        for n, name in enumerate(("alice", "bob"), 1):
            ids[name] = insert(conn, "reps", name=name, timezone="UTC", active=True, created_at=day(n))
        insert(conn, "rep_addresses", rep_id=ids["bob"], address="BOB@XN--BCHER-KVA.EXAMPLE")
        companies = {"host": ("mail.acme.co.uk", "Co", 2), "acme": ("acme.co.uk", "Co", 4),
                     "puny": ("xn--mller-bau-q9a.example", "Xn Mller Bau Q9a", 1),
                     "eu": ("eu.globex.example", "Globex EU", 1), "us": ("us.globex.example", "Globex", 2),
                     "shop": ("shop.yahoo.co.jp", "Shop", 1)}
        for key, (domain, name, created) in companies.items():
            ids[key] = insert(conn, "companies", domain=domain, name=name, created_at=day(created))
        # the older contact has the punycode spelling: the survivor is chosen by age, not by spelling
        ids["older"] = insert(conn, "contacts", name="", company_id=ids["puny"], owner_rep_id=ids["alice"],
                              source="import", first_seen=day(5))
        ids["newer"] = insert(conn, "contacts", name="Jürgen", company_id=None, owner_rep_id=ids["bob"],
                              source="email", first_seen=day(9))
        ids["pat"] = insert(conn, "contacts", name="Pat", company_id=ids["host"], owner_rep_id=ids["bob"],
                            source="email", first_seen=day(6))
        for contact, address in (("older", "jurgen@xn--mller-bau-q9a.example"), ("newer", "Jurgen@Müller-Bau.example"),
                                 ("pat", "pat@mail.acme.co.uk")):
            insert(conn, "contact_addresses", contact_id=ids[contact], address=address)
        deal("first deal", "older", "puny")
        deal("second deal", "newer", None)
        deal("pat's deal", "pat", "host")
        ids["message"] = insert(conn, "messages", message_id="<m1@müller-bau.example>", synthetic_id=False,
                                sha256="0" * 64, size=100, subject="Angebot", received_at=day(9), status="processed",
                                from_address="JURGEN@XN--MLLER-BAU-Q9A.EXAMPLE", contact_id=ids["newer"],
                                deal_id=ids["second deal"])
        for n, address in enumerate(("spam@xn--mller-bau-q9a.example", "spam@müller-bau.example"), 1):
            insert(conn, "rejected_senders", address=address, at=day(n), actor="alice")
    return ids


def rows(conn, query: str) -> set[tuple]:
    """As a set, comparable on both backends: PostgreSQL gives JSON as a dict, SQLite as text."""
    return {tuple(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in row)
            for row in conn.execute(text(query))}


def test_upgrade_to_0006_merges_spellings_of_one_person_and_one_company(at_0005):
    ids = old_crm(at_0005)
    db.upgrade(at_0005)
    with at_0005.connect() as conn:
        assert rows(conn, "SELECT address, contact_id FROM contact_addresses") == {
            ("jurgen@müller-bau.example", ids["older"]), ("pat@mail.acme.co.uk", ids["pat"])}
        assert rows(conn, "SELECT id, name, owner_rep_id, company_id FROM contacts") == {
            (ids["older"], "Jürgen", ids["alice"], ids["puny"]), (ids["pat"], "Pat", ids["bob"], ids["acme"])}
        assert rows(conn, "SELECT title, contact_id, company_id FROM deals") == {
            ("first deal", ids["older"], ids["puny"]), ("second deal", ids["older"], None),
            ("pat's deal", ids["pat"], ids["acme"])}
        assert rows(conn, "SELECT contact_id, from_address FROM messages") == {
            (ids["older"], "jurgen@müller-bau.example")}
        assert rows(conn, "SELECT rep_id, address FROM rep_addresses") == {(ids["bob"], "bob@bücher.example")}
        assert rows(conn, "SELECT address FROM rejected_senders") == {("spam@müller-bau.example",)}
        # mail.acme.co.uk joins the acme.co.uk the team had, named as today's code names it; two
        # subdomains with no company at globex.example stay apart (a migration cannot read
        # [team] freemail_domains), and a freemail provider's subdomain keeps its full domain
        assert rows(conn, "SELECT id, domain, name FROM companies") == {
            (ids["acme"], "acme.co.uk", "Acme"), (ids["puny"], "müller-bau.example", "Müller Bau"),
            (ids["eu"], "eu.globex.example", "Globex EU"), (ids["us"], "us.globex.example", "Globex"),
            (ids["shop"], "shop.yahoo.co.jp", "Shop")}
        merges = {(entity, entity_id): json.loads(detail) if isinstance(detail, str) else detail
                  for entity, entity_id, detail in conn.execute(text(
                      "SELECT entity, entity_id, detail FROM audit_log WHERE action = 'merge'"))}
    assert merges[("contact", ids["older"])]["merged_contact"] == ids["newer"]
    assert merges[("contact", ids["older"])]["deals"] == [ids["second deal"]]
    assert merges[("contact", ids["older"])]["messages"] == [ids["message"]]
    assert merges[("company", ids["acme"])]["merged_company"] == ids["host"]
    assert merges[("company", ids["acme"])]["contacts"] == [ids["pat"]]
    assert len(merges) == 2


def snapshot(engine) -> dict[str, set[tuple]]:
    with engine.connect() as conn:
        return {table: rows(conn, f"SELECT * FROM {table}") for table in
                ("contacts", "contact_addresses", "companies", "deals", "messages", "rep_addresses",
                 "rejected_senders", "audit_log")}


def test_0006_run_twice_changes_nothing_the_second_time(at_0005):
    old_crm(at_0005)
    command.upgrade(db.alembic_config(at_0005), "0006")
    first = snapshot(at_0005)
    command.downgrade(db.alembic_config(at_0005), "0005")  # data only: nothing to undo
    assert snapshot(at_0005) == first
    command.upgrade(db.alembic_config(at_0005), "0006")
    assert snapshot(at_0005) == first
    db.upgrade(at_0005)  # and on to the head, and back to 0006: later revisions keep its data
    command.downgrade(db.alembic_config(at_0005), "0006")
    assert snapshot(at_0005) == first


def test_0006_refuses_one_address_held_by_two_reps_and_writes_nothing(at_0005):
    ids = old_crm(at_0005)
    with at_0005.begin() as conn:
        insert(conn, "rep_addresses", rep_id=ids["alice"], address="bob@bücher.example")
    before = snapshot(at_0005)
    with pytest.raises(Invalid) as refused:
        db.upgrade(at_0005)
    message = str(refused.value)
    assert "rep alice" in message and "rep bob" in message
    assert '"BOB@XN--BCHER-KVA.EXAMPLE"' in message and '"bob@bücher.example"' in message
    assert "DELETE FROM rep_addresses WHERE id" in message
    assert db.current_revision(at_0005) == "0005" and snapshot(at_0005) == before


def test_the_head_revision_every_command_checks_is_alembics_head():
    """``db.HEAD_REVISION`` saves each command importing Alembic; a new migration must move it."""
    from alembic.script import ScriptDirectory

    assert db.HEAD_REVISION == ScriptDirectory(str(db.MIGRATIONS)).get_current_head(), \
        "a migration was added: set inboxcrm.store.db.HEAD_REVISION to its revision"


# -- 0007: Gmail's thread id and labels on a message's copy ----------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def at_0006(request, tmp_path):
    yield from database_at(request, tmp_path, "0006")


def test_upgrade_to_0007_keeps_copies_and_stores_gmail_threads_and_labels(at_0006):
    with at_0006.begin() as conn:
        box = insert(conn, "mailboxes", name="sales", role="capture", default_source="email",
                     new_sender_policy="create", created_at=day(1), failures=0)
        for n, mid in enumerate(("old@x.example", "new@x.example"), 1):
            insert(conn, "messages", message_id=mid, synthetic_id=False, sha256="0" * 64, size=10, truncated=False,
                   subject="", from_address="", received_at=day(n), status="processed")
        insert(conn, "message_copies", message_id=1, mailbox_id=box, folder="INBOX",
               location="imap:INBOX:1:1", seen_at=day(1))
    db.upgrade(at_0006)
    with at_0006.begin() as conn:
        # an X-GM-THRID is an unsigned 64-bit number: above a signed BIGINT's range, kept exactly
        insert(conn, "message_copies", message_id=2, mailbox_id=box, folder="INBOX", location="gmail:1",
               seen_at=day(2), gmail_thread_id=str(2**64 - 1),
               gmail_labels=json.dumps(["\\Inbox", "Kunden/Ä"]))
        found = rows(conn, "SELECT location, gmail_thread_id, gmail_labels FROM message_copies")
    assert found == {("imap:INBOX:1:1", None, None),
                     ("gmail:1", "18446744073709551615", json.dumps(["\\Inbox", "Kunden/Ä"], sort_keys=True))}
    command.downgrade(db.alembic_config(at_0006), "0006")
    assert "gmail_thread_id" not in {c["name"] for c in inspect(at_0006).get_columns("message_copies")}
