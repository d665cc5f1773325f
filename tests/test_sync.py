"""Sync passes against a real Dovecot, on both database backends: exactly once, never modifying
the mailbox, surviving a renumbered folder, a server restart and kill -9."""
from __future__ import annotations

import imaplib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from inboxcrm.app import team
from inboxcrm.app.sync import imap_mailboxes, sync_mailbox
from inboxcrm.config import build_config
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.mail.imap import ImapError
from inboxcrm.store.db import make_engine, transaction
from inboxcrm.store.models import Deal, FolderPosition, Mailbox, Message, MessageCopy

from .conftest import mail
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .test_import import counts, records
from .test_import_crash import by_content, generated, reference_crm

CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
EVERY_FOLDER = ("\\Inbox", "\\Sent", "\\Junk")


def clock():
    return datetime.now(UTC)


@pytest.fixture
def alice(dovecot):
    return dovecot.add_user("alice", "s3cret")


@pytest.fixture
def crm(factory, dovecot, alice):
    """alice and bob, and a capture mailbox "sales" read from alice's account on the Dovecot."""
    with transaction(factory) as s:
        team.add_rep(s, NOW, "test", "alice", ["alice@acme.example"])
        team.add_rep(s, NOW, "test", "bob", ["bob@acme.example"], "Europe/Berlin")
        team.add_mailbox(s, NOW, "test", "sales", "alice", "capture",
                          connection=dovecot.connection(alice, folders=EVERY_FOLDER))
        team.add_mailbox(s, NOW, "test", "imported", None, "capture")
    return factory


def sync(factory, **kw):
    return sync_mailbox(factory, CONFIG, "sales", now=clock, **kw)


def positions(factory) -> dict[str, tuple]:
    with factory() as s:
        return {p.folder: (p.uidvalidity, p.last_uid, p.uidnext, p.role)
                for p in s.scalars(select(FolderPosition))}


def mailbox_row(factory) -> Mailbox:
    with factory() as s:
        return s.scalar(select(Mailbox).where(Mailbox.name == "sales"))


def message(mid: str, sender: str = "Jane Roe <jane@bigcorp.example>", to: str = "sales@acme.example",
            extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: About {mid}\r\nMessage-ID: <{mid}@test.example>\r\n{extra}"
            f"Date: Mon, 02 Nov 2026 09:00:00 +0000\r\n\r\nWe would like a quote.\r\n").encode()


def test_only_mailboxes_with_a_connection_are_synced(crm):
    with crm() as s:
        assert imap_mailboxes(s) == ["sales"]
    with pytest.raises(Invalid, match='mailbox "imported" has no IMAP connection.*mailboxes with one are: sales'):
        sync_mailbox(crm, CONFIG, "imported")
    with pytest.raises(NotFound, match='unknown mailbox "nope"'):
        sync_mailbox(crm, CONFIG, "nope")


def test_first_sync_reads_every_folder_and_an_unchanged_mailbox_costs_no_fetch(crm, dovecot, alice, monkeypatch):
    dovecot.append(alice, "INBOX", [mail("pipeline-new-lead-company.eml"), mail("pipeline-freemail-lead.eml")])
    dovecot.append(alice, "Junk", [message("junk-1")])
    first = sync(crm)
    assert first.total == 3
    by_folder = {f.folder: f for f in first.folders}
    assert by_folder["INBOX"].counts["processed"] == 2 and by_folder["Junk"].counts["noise"] == 1
    assert by_folder["Sent"].fetched == 0 and not any(f.resynced for f in first.folders)
    uidvalidity = positions(crm)["INBOX"][0]
    assert positions(crm)["INBOX"] == (uidvalidity, 2, 3, "inbox")
    assert positions(crm)["Sent"][1:] == (0, 1, "sent")
    with crm() as s:
        assert s.scalar(select(func.count()).select_from(Deal)) == 2
        junk = s.scalar(select(Message).where(Message.message_id == "junk-1@test.example"))
        assert (junk.status, junk.reason) == ("noise", "junk-folder")
    row = mailbox_row(crm)
    assert row.last_success_at is not None and row.failures == 0 and row.last_error is None

    sent: list[str] = []
    command = imaplib.IMAP4._command

    def counting(self, name, *args):  # a spy on the real connection: the server still answers
        sent.append(name)
        return command(self, name, *args)

    monkeypatch.setattr(imaplib.IMAP4, "_command", counting)
    before = records(crm)
    again = sync(crm)
    assert again.total == 0 and records(crm) == before
    assert "FETCH" not in sent and "SELECT" not in sent and "EXAMINE" not in sent and "SEARCH" not in sent
    assert sent.count("STATUS") == 3 and len(sent) <= 3 + 4  # + LOGIN, CAPABILITY, LIST, LOGOUT


def test_incremental_sync_reads_only_new_messages(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", [message("m1"), message("m2")])
    assert sync(crm).total == 2
    dovecot.append(alice, "INBOX", [message("m3", "Max <max@other.example>")])
    report = sync(crm)
    assert report.total == 1 and report.folders[0].counts == {"processed": 1}
    assert positions(crm)["INBOX"][1:3] == (3, 4)
    assert counts(crm)["messages"] == 3 and counts(crm)["message_copies"] == 3


def test_a_full_sync_changes_no_flag(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", [message("unread-1"), message("unread-2")])
    dovecot.append(alice, "INBOX", [message("read")], flags=[b"\\Seen"])
    dovecot.append(alice, "INBOX", [message("flagged")], flags=[b"\\Flagged", b"$Label1"])
    dovecot.append(alice, "Sent", [message("sent", "Alice <alice@acme.example>", "jane@bigcorp.example")],
                   flags=[b"\\Seen", b"\\Answered"])
    before = {folder: dovecot.flags(alice, folder) for folder in ("INBOX", "Sent", "Junk")}
    assert sync(crm).total == 5
    after = {folder: dovecot.flags(alice, folder) for folder in ("INBOX", "Sent", "Junk")}
    assert after == before
    assert [uid for uid, flags in after["INBOX"].items() if b"\\Seen" not in flags] == [1, 2, 4]


def test_a_message_in_sent_joins_its_deal(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", [message("ask")])
    sync(crm)
    reply = message("answer", "Alice <alice@acme.example>", "Jane Roe <jane@bigcorp.example>",
                    "In-Reply-To: <ask@test.example>\r\nReferences: <ask@test.example>\r\n")
    dovecot.append(alice, "Sent", [reply], flags=[b"\\Seen"])
    report = sync(crm)
    assert {f.folder: f.fetched for f in report.folders} == {"INBOX": 0, "Sent": 1, "Junk": 0}
    with crm() as s:
        ask, answer = (s.scalar(select(Message).where(Message.message_id == f"{m}@test.example"))
                       for m in ("ask", "answer"))
        assert answer.deal_id == ask.deal_id is not None and answer.direction == "outbound"
        assert s.get(Deal, ask.deal_id).outbound_count == 1
        assert s.scalar(select(MessageCopy.folder).where(MessageCopy.message_id == answer.id)) == "Sent"


def test_a_broken_message_is_quarantined_while_the_rest_sync(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", [message("before"), mail("pipeline-no-sender.eml"), message("after")])
    report = sync(crm)
    assert report.folders[0].counts == {"processed": 2, "quarantined": 1}
    assert positions(crm)["INBOX"][1] == 3
    with crm() as s:
        quarantined = s.scalar(select(Message).where(Message.status == "quarantined"))
        assert quarantined.reason == "no-sender" and quarantined.raw is not None


def test_backfill_reads_the_since_window_not_the_whole_history(crm, dovecot, alice):
    old = datetime.now(UTC) - timedelta(days=60)
    dovecot.append(alice, "INBOX", [message("old-1"), message("old-2")], date=old)
    dovecot.append(alice, "INBOX", [message("recent")])
    assert sync(crm).total == 1  # sync.since_days = 30
    dovecot.append(alice, "INBOX", [message("old-but-new-here")], date=old)
    assert sync(crm).total == 1  # after the backfill, every new UID counts, whatever its date
    with transaction(crm) as s:  # an explicit --since, on a mailbox read for the first time
        s.execute(update(Mailbox).where(Mailbox.name == "sales").values(connection=dovecot.connection(
            alice, folders=EVERY_FOLDER, since=(old - timedelta(days=1)).date())))
        s.execute(FolderPosition.__table__.delete())
    assert sync(crm).total == 4
    assert counts(crm)["messages"] == 4


def test_a_new_uidvalidity_resyncs_without_duplicates(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", [message(f"m{i}", f"P{i} <p{i}@c{i}.example>") for i in range(5)])
    sync(crm)
    before, old = records(crm), positions(crm)["INBOX"][0]
    dovecot.new_uidvalidity(alice, "INBOX")
    dovecot.append(alice, "INBOX", [message("m5", "P5 <p5@c5.example>")])
    report = sync(crm)
    inbox = report.folders[0]
    assert inbox.resynced and inbox.fetched == 6 and inbox.counts == {"duplicate": 5, "processed": 1}
    assert positions(crm)["INBOX"][:3] != (old, 5, 6) and positions(crm)["INBOX"][1:3] == (6, 7)
    after = records(crm)
    assert len(after["messages"]) == 6 and len(after["deals"]) == 6
    assert {k: v for k, v in after["messages"].items() if k != "m5@test.example"} == before["messages"]


def test_a_server_stopping_mid_sync_is_recorded_and_the_next_pass_completes(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", generated()[:600])
    stopped = []

    def stop_server(done):
        if not stopped:
            stopped.append(done)
            dovecot.stop()

    with pytest.raises(ImapError) as lost:
        sync(crm, progress=stop_server)
    assert lost.value.stage == "connection-lost"
    row = mailbox_row(crm)
    assert row.failures == 1 and row.failing_since is not None and row.last_error.startswith("connection-lost: ")
    with pytest.raises(ImapError) as down:  # still down: a second failure, same failing_since
        sync(crm)
    assert down.value.stage == "connect" and mailbox_row(crm).failures == 2
    assert mailbox_row(crm).failing_since == row.failing_since
    partial = counts(crm)["messages"]
    assert 0 < partial < 600 and positions(crm)["INBOX"][1] == partial

    dovecot.start()
    report = sync(crm)
    assert report.total == 600 - partial
    assert counts(crm)["messages"] == 600 and counts(crm)["message_copies"] == 600
    row = mailbox_row(crm)
    assert row.failures == 0 and row.failing_since is None and row.last_success_at > row.last_error_at


def test_stop_finishes_the_current_group_and_the_next_pass_resumes(crm, dovecot, alice):
    dovecot.append(alice, "INBOX", generated()[:300])
    stop = threading.Event()
    first = sync(crm, stop=stop, progress=lambda done: stop.set())
    assert 0 < first.total < 300 and positions(crm)["INBOX"][1] == first.total
    assert sync(crm).total == 300 - first.total
    assert counts(crm)["messages"] == 300


# -- kill -9 in the middle of a pass -------------------------------------------------------------

CHILD = """
import sys
from inboxcrm.config import build_config
from inboxcrm.store.db import make_engine, session_factory
from inboxcrm.app.sync import sync_mailbox
sync_mailbox(session_factory(make_engine(sys.argv[1])), build_config({"team": {"domains": ["acme.example"]}}, None),
             "sales")
"""


def synced_crm(path: Path, connection: dict):
    factory = reference_crm(path)
    with transaction(factory) as s:
        s.execute(update(Mailbox).where(Mailbox.name == "sales").values(connection=connection))
    return factory


def test_a_sync_killed_mid_pass_resumes_exactly_once(dovecot, alice, tmp_path):
    messages = generated()
    dovecot.append(alice, "INBOX", messages)
    connection = dovecot.connection(alice)
    path = tmp_path / "killed.db"
    factory = synced_crm(path, connection)
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"sqlite:///{path}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    stored, deadline = 0, time.monotonic() + 120
    while stored < 300 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        with factory() as s:
            stored = s.scalar(select(func.count()).select_from(Message))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the sync finished before it could be killed"
    assert 0 < stored < len(messages)

    sync_mailbox(factory, CONFIG, "sales")
    reference = synced_crm(tmp_path / "reference.db", connection)
    sync_mailbox(reference, CONFIG, "sales")

    resumed = by_content(factory)
    assert len(resumed) == len(messages) and "pending" not in {status for status, _, _ in resumed.values()}
    assert resumed == by_content(reference)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(MessageCopy)) == len(messages)
    make_engine(f"sqlite:///{path}").dispose()


def process_tree(pid: int) -> set[int]:
    """The live descendants of ``pid``, from /proc (zombies count as gone: they hold no memory)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue  # ended while we looked
        if state != "Z":
            children.setdefault(int(parent), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_a_killed_sync_leaves_no_parse_worker_behind(dovecot, alice, tmp_path, sig):
    """A backfill (1,500 messages: parse workers start) killed mid-pass: its workers and helper
    processes are gone within seconds, not left holding memory until the next reboot."""
    dovecot.append(alice, "INBOX", generated())
    path = tmp_path / "killed.db"
    factory = synced_crm(path, dovecot.connection(alice))
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"sqlite:///{path}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    workers, stored, deadline = set(), 0, time.monotonic() + 120
    while not (workers and stored) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = process_tree(child.pid)
        with factory() as s:
            stored = s.scalar(select(func.count()).select_from(Message))
    os.kill(child.pid, sig)
    child.wait()
    assert child.returncode == -sig, "the sync finished before it could be killed"
    assert workers, "no parse worker was started"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]
    make_engine(f"sqlite:///{path}").dispose()
