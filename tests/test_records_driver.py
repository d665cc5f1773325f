"""The intake's hottest statements run on the driver's cursor (``db.driver_rows``), not through
SQLAlchemy's execution, on both backends: these hold that path to what SQLAlchemy did for it —
the columns' own conversions (a UTC timestamp, a JSON list) both ways, the columns' Python-side
defaults, the transaction it runs in, and a database failure raised as the failure the intake
stops on rather than a bug it quarantines the message for."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select, text

from inboxcrm.app import team
from inboxcrm.core.parse import content_hash
from inboxcrm.store.db import driver_rows, transaction
from inboxcrm.store.models import AuditEntry, Contact, Deal, MessageCopy, Stage
from inboxcrm.store.records import DATABASE_FAILURES, Store, mailbox_info
from inboxcrm.values import GmailCopy, RawMessage

# Not UTC: what is stored and read back must be the same instant, returned in UTC.
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=2)))
RAW = b"From: ann@northwind.example\r\nTo: sales@acme.example\r\nMessage-ID: <d1@northwind.example>\r\n\r\nHi\r\n"


@pytest.fixture
def sales(factory):
    with transaction(factory) as s:
        team.add_rep(s, NOW, "test", "alice", ["alice@acme.example"])
        team.add_mailbox(s, NOW, "test", "sales", "alice", "capture", None, "create")
    with factory() as s:
        return mailbox_info(s, "sales")


def test_a_saved_copy_keeps_its_gmail_labels_and_its_time(factory, sales):
    raw = RawMessage(RAW, "INBOX:1", "INBOX", gmail=GmailCopy("17", "42", ("\\Inbox", "Clients")))
    with transaction(factory) as s:
        stored, is_new = Store(s, NOW).save_raw(raw, sales.id, "<d1@northwind.example>", False, content_hash(RAW))
    assert is_new
    with factory() as s:
        labels, seen_at, thread = s.execute(select(MessageCopy.gmail_labels, MessageCopy.seen_at,
                                                   MessageCopy.gmail_thread_id)).one()
    assert (labels, thread) == (["\\Inbox", "Clients"], "42")
    assert seen_at == NOW and seen_at.tzinfo == timezone.utc


def test_a_company_found_with_the_sender_is_the_company_of_its_domain(factory, sales):
    with transaction(factory) as s:
        s.execute(text("INSERT INTO companies (domain, name, created_at) VALUES ('northwind.example', 'Northwind', :at)"),
                  {"at": NOW})
        store = Store(s, NOW)
        assert store.contact_for_address("tom@mail.northwind.example") is None
        company = store.company_for_domain("northwind.example")
        assert company is not None and store.company_for_domain("other.example") is None


def test_a_lost_connection_stops_the_intake_instead_of_quarantining(engine, factory, sales):
    if engine.dialect.name != "postgresql":
        pytest.skip("a lost connection is a server's; SQLite has none to lose")
    with factory() as s:
        pid = s.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DATABASE_FAILURES):
            Store(s, NOW).contact_for_address("tom@northwind.example")
        s.rollback()


def test_columns_left_out_get_their_defaults_as_through_sqlalchemy(factory, sales):
    """A lead's deal names only some columns: the counters and scores it leaves out must be the
    model's defaults (0), not NULL; an audit entry's JSON detail left out is {} read back."""
    deals, audit = Deal.__table__, AuditEntry.__table__
    new_deal = insert(deals).values(title=bindparam("title"), contact_id=bindparam("contact_id"),
                                    stage_id=bindparam("stage_id"), created_at=bindparam("at"),
                                    last_activity_at=bindparam("at"), last_stage_change_at=bindparam("at")
                                    ).returning(deals.c.id)
    new_entry = insert(audit).values(at=bindparam("at"), actor=bindparam("actor"), action=bindparam("action"),
                                     entity=bindparam("entity")).returning(audit.c.id)
    with transaction(factory) as s:
        stage = s.scalar(select(Stage.id).order_by(Stage.position).limit(1))
        contact = Contact(name="Ann", first_seen=NOW)
        s.add(contact)
        s.flush()
        conn = s.connection()
        (deal_id,), = driver_rows(conn, new_deal, {"title": "Pumps", "contact_id": contact.id, "stage_id": stage,
                                                   "at": NOW})
        (entry_id,), = driver_rows(conn, new_entry, {"at": NOW, "actor": "test", "action": "note", "entity": "deal"})
    with factory() as s:
        deal = s.get(Deal, deal_id)
        assert (deal.fit_score, deal.score, deal.inbound_count, deal.outbound_count, deal.source) == (0, 0, 0, 0, "")
        assert deal.created_at == NOW
        assert s.get(AuditEntry, entry_id).detail == {}


def test_a_list_bound_to_in_and_a_connection_outside_a_transaction_go_through_sqlalchemy(engine, factory, sales):
    """What the driver cannot take as it is still runs, and a statement outside a transaction is
    not left to the driver's own autocommit: its write is rolled back with the connection's."""
    in_list = select(MessageCopy.id).where(MessageCopy.location.in_(bindparam("locations", expanding=True)))
    with factory() as s:
        assert driver_rows(s.connection(), in_list, {"locations": ["INBOX:1", "INBOX:2"]}) == []
    stage_insert = insert(Stage.__table__).values(name=bindparam("name"), position=bindparam("position"))
    with engine.connect() as conn:
        assert not conn.in_transaction()
        driver_rows(conn, stage_insert, {"name": "Never", "position": 99})
        assert conn.in_transaction()  # begun by SQLAlchemy, as conn.execute would have
        conn.rollback()
    with factory() as s:
        assert s.scalar(select(Stage.id).where(Stage.name == "Never")) is None
