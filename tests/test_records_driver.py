"""The intake's hottest statements on PostgreSQL run on the driver's cursor (``records._run``),
not through SQLAlchemy's execution: these hold that path to what SQLAlchemy did for it — the
columns' own conversions (a UTC timestamp, a JSON list) both ways, and a database failure raised
as the failure the intake stops on rather than a bug it quarantines the message for."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from inboxcrm.app import team
from inboxcrm.core.parse import content_hash
from inboxcrm.store.db import transaction
from inboxcrm.store.models import MessageCopy
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
        pytest.skip("the driver's own path is PostgreSQL's")
    with factory() as s:
        pid = s.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DATABASE_FAILURES):
            Store(s, NOW).contact_for_address("tom@northwind.example")
        s.rollback()
