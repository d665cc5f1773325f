"""Gmail done right, against a server without X-GM-EXT-1 (the private Dovecot as it is) and one
with it (the same Dovecot behind tests/gmail_proxy.py, which fakes only the Gmail extensions,
because Dovecot cannot offer them), on both database backends.

What a rep relies on: a prospect's reply lands on its deal even when their phone dropped the
References header and they wrote from another address, as long as Gmail kept it in the thread;
a message under two labels is downloaded and stored once; and a server without the extension
syncs exactly as before.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from inboxcrm.app import team
from inboxcrm.app.sync import sync_mailbox
from inboxcrm.config import build_config
from inboxcrm.store.db import transaction
from inboxcrm.store.models import Message

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .gmail_proxy import Facts, GmailProxy

CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
FOLDERS = ("\\Inbox", "\\Sent", "Clients")
THREAD = 1790000000000000001  # a Gmail X-GM-THRID: 64-bit, and above 2**60

OFFER_REQUEST = (b"From: Jane Roe <jane@bigcorp.example>\r\nTo: alice@acme.example\r\nSubject: Quote for 40 seats\r\n"
                 b"Message-ID: <ask@bigcorp.example>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n\r\n"
                 b"Could you send us a quote?\r\n")
# From her phone and private address; the app sent neither In-Reply-To nor References.
BARE_REPLY = (b"From: Jane <jane.roe@gmail.com>\r\nTo: alice@acme.example\r\nSubject: Re: Quote for 40 seats\r\n"
              b"Message-ID: <phone@mail.gmail.com>\r\nDate: Tue, 03 Nov 2026 08:00:00 +0000\r\n\r\n"
              b"Forgot to say: we need it by Friday.\r\n")
THREADED_REPLY = (b"From: Jane Roe <jane@bigcorp.example>\r\nTo: alice@acme.example\r\nSubject: Re: Quote for 40 seats\r\n"
                  b"Message-ID: <followup@bigcorp.example>\r\nIn-Reply-To: <ask@bigcorp.example>\r\n"
                  b"References: <ask@bigcorp.example>\r\nDate: Tue, 03 Nov 2026 09:00:00 +0000\r\n\r\nAny news?\r\n")


@pytest.fixture
def alice(dovecot):
    """alice's account: the request in INBOX and, as Gmail shows a labelled message, in "Clients"."""
    user = dovecot.add_user("alice", "s3cret")
    with dovecot.client(user) as client:
        client.create_folder("Clients")
    dovecot.append(user, "INBOX", [OFFER_REQUEST])
    dovecot.append(user, "Clients", [OFFER_REQUEST])
    return user


@pytest.fixture
def proxy(dovecot, tls_files):
    with GmailProxy(dovecot, tls_files) as server:
        yield server


def crm(factory, connection: dict):
    with transaction(factory) as s:
        team.add_rep(s, NOW, "test", "alice", ["alice@acme.example"])
        team.add_mailbox(s, NOW, "test", "sales", "alice", "capture", connection=connection)
    return factory


def sync(factory):
    return sync_mailbox(factory, CONFIG, "sales", now=lambda: datetime.now(UTC))


def stored(factory) -> dict[str, tuple]:
    """Message-ID -> (deal id, reason, [(folder, location kind, Gmail thread, labels) per copy])."""
    with factory() as s:
        return {m.message_id: (m.deal_id, m.reason, [(c.folder, c.location.split(":")[0], c.gmail_thread_id,
                                                       c.gmail_labels) for c in m.copies])
                for m in s.scalars(select(Message))}


def test_without_x_gm_ext_1_threads_by_headers_and_reads_every_folder(factory, dovecot, alice):
    factory = crm(factory, dovecot.connection(alice, folders=FOLDERS))
    sync(factory)
    dovecot.append(alice, "INBOX", [THREADED_REPLY, BARE_REPLY])
    report = sync(factory)
    assert [(f.folder, f.fetched) for f in report.folders] == [("INBOX", 2), ("Sent", 0), ("Clients", 0)]
    found = stored(factory)
    deal = found["ask@bigcorp.example"][0]
    # a copy in each folder it is in, read from each: the server gives no way to know it is one message
    assert found["ask@bigcorp.example"][2] == [("INBOX", "imap", None, None), ("Clients", "imap", None, None)]
    assert found["followup@bigcorp.example"][:2] == (deal, "thread")
    # without Gmail's thread, a bare reply from an unknown private address is someone new
    assert found["phone@mail.gmail.com"][0] not in (None, deal)


def test_with_x_gm_ext_1_a_bare_reply_joins_its_thread_and_a_labelled_message_is_read_once(
        factory, alice, proxy):
    proxy.facts.update({
        "ask@bigcorp.example": Facts(THREAD, ("\\Inbox", "Clients", "\\Important", "Q4/Übersee")),
        "phone@mail.gmail.com": Facts(THREAD, ("\\Inbox",)),
    })
    factory = crm(factory, proxy.connection(alice, folders=FOLDERS))
    first = sync(factory)
    assert [(f.folder, f.fetched) for f in first.folders] == [("INBOX", 1), ("Sent", 0), ("Clients", 0)]
    assert not [items for folder, items in proxy.fetches if folder == "Clients" and b"BODY.PEEK[" in items]

    proxy.dovecot.append(alice, "INBOX", [BARE_REPLY])
    sync(factory)
    found = stored(factory)
    deal, _, copies = found["ask@bigcorp.example"]
    # one copy, named by X-GM-MSGID, with every label: Gmail leaves out the folder's own, and
    # sends a label's non-ASCII name in modified UTF-7
    assert copies == [("INBOX", "gmail", str(THREAD), ["\\Inbox", "Clients", "\\Important", "Q4/Übersee"])]
    assert found["phone@mail.gmail.com"] == (deal, "gmail-thread", [("INBOX", "gmail", str(THREAD), ["\\Inbox"])])
