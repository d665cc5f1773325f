"""How an IDLE wait ends: the server going away, and a stop that wakes it, against a real Dovecot.

With hundreds of mailboxes in one daemon (bench/idle_bench.py) both decide the figures: a dead
connection that reads as "nothing yet" keeps its thread spinning until the wait's deadline, and a
stop looked at twice a second wakes every watcher twice a second for nothing.
"""
from __future__ import annotations

import threading
import time

import pytest

from inboxcrm.mail import imap
from inboxcrm.mail.imap import ImapError

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"


def test_a_server_going_away_during_idle_ends_the_wait_at_once(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    client = imap.connect(dovecot.settings(alice))
    stopped: list[float] = []

    def restart() -> None:
        time.sleep(0.3)
        dovecot.stop()  # SIGTERM: the sessions are closed, as in a service restart
        stopped.append(time.monotonic())

    threading.Thread(target=restart).start()
    cpu = time.thread_time()
    with pytest.raises(ImapError) as failed:
        imap.wait_for_change(client, "INBOX", timeout=60, stop=threading.Event())
    assert failed.value.stage == "connection-lost"
    assert time.monotonic() - stopped[0] < 2.0  # not at the deadline, a minute later
    assert time.thread_time() - cpu < 1.0  # and not spinning meanwhile
    imap.close(client)


def test_a_waking_stop_ends_the_wait_without_waiting_for_a_slice(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    client = imap.connect(dovecot.settings(alice))
    for stop, at_most in ((imap.WakingEvent(), 0.25), (threading.Event(), imap.IDLE_SLICE + 0.5)):
        threading.Timer(0.05, stop.set).start()
        started = time.monotonic()
        assert imap.wait_for_change(client, "INBOX", timeout=30, stop=stop) is False
        assert time.monotonic() - started < at_most
    # cleared, it waits again; mail still ends the wait
    stop = imap.WakingEvent()
    stop.set()
    stop.clear()
    threading.Timer(0.3, dovecot.append, (alice, "INBOX", [b"From: a@b.example\r\nSubject: hi\r\n\r\nhi\r\n"])).start()
    assert imap.wait_for_change(client, "INBOX", timeout=30, stop=stop) is True
    imap.close(client)
