"""Several daemons on one database: the sharing plan, the lease statements, the sync's fence, and
daemons sharing real mailboxes on PostgreSQL (the kill -9 storm is tests/test_daemon_chaos.py)."""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from inboxcrm.app.daemon import Daemon
from inboxcrm.app.sync import sync_mailbox
from inboxcrm.config import DAEMON_ID, build_config
from inboxcrm.core import leases as sharing
from inboxcrm.core.leases import Held, Holder, Seen
from inboxcrm.errors import DaemonRefused, LeaseLost
from inboxcrm.store import lease_queries
from inboxcrm.store.db import transaction
from inboxcrm.store.models import Daemon as DaemonRow, FolderPosition, Lease, Mailbox, Message

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .test_daemon import _lead, add_imap, eventually

NOW = datetime(2026, 11, 29, 22, 30, tzinfo=UTC)
BOXES = [sharing.mailbox_resource(i) for i in range(1, 7)]


# -- the plan ------------------------------------------------------------------------------------

def test_quotas_split_evenly_and_none_exceeds_the_fair_share():
    assert sharing.quotas(["b", "a"], 6) == {"a": 3, "b": 3}
    assert sharing.quotas(["c", "b", "a"], 7) == {"a": 3, "b": 2, "c": 2}
    for live in range(1, 6):
        for count in range(0, 40):
            split = sharing.quotas([f"d{i}" for i in range(live)], count)
            assert sum(split.values()) == count and max(split.values()) <= math.ceil(count / live)


def _settle(names: list[str], resources: list[str], leases: dict[str, Held], rounds: int = 6) -> dict[str, Held]:
    """Daemons ticking one after another, each applying its plan as the database would."""
    for _ in range(rounds):
        for me in names:
            plan = sharing.plan(resources, names, leases, me, NOW)
            for resource in plan.release:
                del leases[resource]
            for want in plan.take:
                got = [r for r in want.candidates if r not in leases or leases[r].expires_at <= NOW][:want.count]
                leases.update({r: Held(me, NOW + timedelta(seconds=30)) for r in got})
    return leases


def held_by(holders: dict[str, str]) -> dict[str, int]:
    """Resource -> holder, as counts per holder."""
    return dict(Counter(holders.values()))


def test_two_daemons_share_six_mailboxes_three_each_and_the_jobs_one_each():
    leases = _settle(["mail-1", "mail-2"], [*BOXES, *sharing.JOBS], {})
    assert held_by({r: h.holder for r, h in leases.items() if r in BOXES}) == {"mail-1": 3, "mail-2": 3}
    assert {leases[j].holder for j in sharing.JOBS} == {"mail-1", "mail-2"}
    assert sharing.plan([*BOXES, *sharing.JOBS], ["mail-1", "mail-2"], leases, "mail-1", NOW) == \
        sharing.Plan((), (), tuple(sorted(r for r, h in leases.items() if h.holder == "mail-1")))  # settled


def test_rendezvous_preference_keeps_daemons_starting_together_apart():
    """Each daemon reaches first for the mailboxes it ranks highest: mostly different ones."""
    resources = [sharing.mailbox_resource(i) for i in range(1, 31)]
    names = ["d1", "d2", "d3"]
    firsts = {me: set(sharing.plan(resources, names, {}, me, NOW).take[0].candidates[:10]) for me in names}
    overlap = sum(len(firsts[a] & firsts[b]) for a, b in (("d1", "d2"), ("d1", "d3"), ("d2", "d3")))
    assert overlap <= 3  # only where the hash made one daemon the first choice of more than a third
    assert all(len(f) == 10 for f in firsts.values())
    assert {sharing.plan(resources, names, {}, me, NOW).take[0].count for me in names} == {10}  # no more


def test_a_daemon_over_its_share_releases_its_least_preferred_but_never_a_busy_one():
    leases = {r: Held("mail-1", NOW + timedelta(seconds=30)) for r in BOXES}
    plan = sharing.plan(BOXES, ["mail-1", "mail-2"], leases, "mail-1", NOW)
    assert len(plan.release) == 3 and len(plan.keep) == 3 and plan.take == ()
    busy = plan.release[:2]
    again = sharing.plan(BOXES, ["mail-1", "mail-2"], leases, "mail-1", NOW, busy=busy)
    assert not set(busy) & set(again.release) and len(again.release) == 3
    all_busy = sharing.plan(BOXES, ["mail-1", "mail-2"], leases, "mail-1", NOW, busy=BOXES)
    assert all_busy.release == () and len(all_busy.keep) == 6


def test_expired_leases_of_a_dead_daemon_are_taken_and_live_ones_are_not():
    leases = {r: Held("dead", NOW - timedelta(seconds=1)) for r in BOXES[:3]}
    leases |= {r: Held("mail-2", NOW + timedelta(seconds=1)) for r in BOXES[3:]}
    plan = sharing.plan(BOXES, ["mail-1", "mail-2"], leases, "mail-1", NOW)
    assert set(plan.take[0].candidates) == set(BOXES[:3]) and plan.take[0].count == 3


def test_a_lease_on_a_resource_gone_is_released():
    leases = {"mailbox:99": Held("mail-1", NOW + timedelta(seconds=9))}
    assert sharing.plan(BOXES, ["mail-1"], leases, "mail-1", NOW).release == ("mailbox:99",)


def test_the_default_name_is_the_host_name_made_valid():
    for host, name in (("mail-2.example.com", "mail-2.example.com"), ("My Mac (2)", "My-Mac-2-"),
                       ("--x", "x"), ("", "inboxcrm"), ("ünï", "n-"), ("a" * 300, "a" * 100)):
        assert sharing.name_from_host(host) == name and DAEMON_ID.fullmatch(name)


def _seen(name: str, host: str = "here", pid: int = 7, alive: bool = True) -> Seen:
    return Seen(name, host, pid, NOW - timedelta(seconds=3), NOW + timedelta(seconds=(5 if alive else -5)))


def test_who_may_start():
    running = {7}.__contains__
    assert sharing.refusal("mail-1", "here", [], NOW, True, running) is None
    # the same name: refused while its process runs or when it lives on another host
    assert 'named "mail-1" is already running here (pid 7, seen 3 s ago)' in \
        sharing.refusal("mail-1", "here", [_seen("mail-1")], NOW, False, running)
    assert "already running on host there" in sharing.refusal("mail-1", "here", [_seen("mail-1", "there")], NOW,
                                                                False, running)
    # ...but a restart after kill -9 on the same host, or after the row expired, takes it over
    assert sharing.refusal("mail-1", "here", [_seen("mail-1", pid=8)], NOW, True, running) is None
    assert sharing.refusal("mail-1", "here", [_seen("mail-1", "there", alive=False)], NOW, False, running) is None
    # another name: welcome on PostgreSQL, refused by SQLite while it lives
    assert sharing.refusal("mail-2", "here", [_seen("mail-1")], NOW, False, running) is None
    assert sharing.refusal("mail-2", "here", [_seen("mail-1")], NOW, True, running) == (
        'SQLite serves one daemon: "mail-1" (host here, pid 7) was seen 3 s ago. Stop it first, or move to '
        "PostgreSQL to run several (docs/operations.md#several-daemons).")
    assert sharing.refusal("mail-2", "here", [_seen("mail-1", alive=False)], NOW, True, running) is None


# -- the statements, on both backends ------------------------------------------------------------

def _mailbox(factory, name: str = "box") -> int:
    with transaction(factory) as session:
        row = Mailbox(name=name, role="capture", connection={"host": "127.0.0.1"}, created_at=NOW)
        session.add(row)
        session.flush()
        return row.id


def _take(factory, resource, holder, count=1, ttl=30.0, mailbox_id=None) -> list[str]:
    with transaction(factory) as session:
        return lease_queries.take(session, [(resource, mailbox_id)], count, holder, lease_queries.db_now(session), ttl)


def _registered(factory, name: str, host: str = "here", pid: int = 7) -> Holder:
    with transaction(factory) as session:
        return lease_queries.register(session, name, host, pid, lease_queries.db_now(session), 30)


def _holders(factory) -> dict[str, str]:
    with factory() as session:
        return {lease.resource: lease.holder for lease in lease_queries.leases(session)}


def test_take_renew_release_and_expiry(factory):
    box = sharing.mailbox_resource(_mailbox(factory))
    assert _take(factory, box, "mail-1") == [box]
    assert _take(factory, box, "mail-2") == []  # held and current
    with factory() as session:
        first = session.scalar(select(Lease).where(Lease.resource == box))
    time.sleep(0.01)
    assert _take(factory, box, "mail-1") == [box]  # its own: renewed, held since the first take
    with factory() as session:
        again = session.scalar(select(Lease).where(Lease.resource == box))
    assert again.acquired_at == first.acquired_at and again.expires_at > first.expires_at

    with transaction(factory) as session:  # mail-1 stops renewing: its lease runs out
        past = lease_queries.db_now(session) - timedelta(seconds=1)
        session.execute(Lease.__table__.update().values(expires_at=past))
    assert _take(factory, box, "mail-2") == [box] and _holders(factory) == {box: "mail-2"}
    with transaction(factory) as session:
        lease_queries.release(session, [box], "mail-1")  # not its own any more: nothing happens
    assert _holders(factory) == {box: "mail-2"}
    with transaction(factory) as session:
        lease_queries.release(session, [box], "mail-2")
    assert _holders(factory) == {}


def test_take_stops_at_the_count_and_skips_what_another_holds(factory):
    ids = [_mailbox(factory, f"box{i}") for i in range(4)]
    candidates = [(sharing.mailbox_resource(i), i) for i in ids]
    _take(factory, candidates[0][0], "mail-2", mailbox_id=ids[0])
    with transaction(factory) as session:
        got = lease_queries.take(session, candidates, 2, "mail-1", lease_queries.db_now(session), 30.0)
    assert got == [candidates[1][0], candidates[2][0]]  # the first is mail-2's: the next ones instead


def test_two_daemons_taking_one_free_lease_at_once_one_wins(factory):
    """The second waits for the first's transaction, then finds the lease taken (on PostgreSQL its
    INSERT meets the first's on the unique resource: a lost race, not an error)."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    results: dict[str, list[str]] = {}
    with transaction(factory) as session:
        results["mail-1"] = lease_queries.take(session, [(box, box_id)], 1, "mail-1", lease_queries.db_now(session), 30)
        second = threading.Thread(target=lambda: results.setdefault("mail-2", _take(factory, box, "mail-2",
                                                                                    mailbox_id=box_id)))
        second.start()
        time.sleep(0.5)  # mail-2 is inside take(), waiting for this transaction
        assert "mail-2" not in results
    second.join(30)
    assert results == {"mail-1": [box], "mail-2": []} and _holders(factory) == {box: "mail-1"}


def test_the_fence_renews_its_own_lease_and_raises_lease_lost_for_one_taken(factory):
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    one, two = _registered(factory, "mail-1"), _registered(factory, "mail-2")
    _take(factory, box, "mail-1", ttl=1.0, mailbox_id=box_id)
    with transaction(factory) as session:
        lease_queries.hold(session, box, one, 60.0)
        expires = session.scalar(select(Lease.expires_at))
        assert expires > lease_queries.db_now(session) + timedelta(seconds=50)
    with pytest.raises(LeaseLost, match=f"{box} is no longer held by daemon 'mail-2'"), \
            transaction(factory) as session:
        lease_queries.hold(session, box, two, 60.0)


def _expire_daemon(factory, name: str) -> Seen:
    """The row of ``name`` as a process that stalled past its registration leaves it."""
    with transaction(factory) as session:
        row = session.scalar(select(DaemonRow).where(DaemonRow.name == name))
        row.seen_at = row.seen_at - timedelta(seconds=60)
        row.expires_at = lease_queries.db_now(session) - timedelta(seconds=1)
        return Seen(row.name, row.host, row.pid, row.seen_at, row.expires_at)


def _take_over(factory, name: str, seen: Seen, host: str, pid: int) -> Holder:
    with transaction(factory) as session:
        return lease_queries.register(session, name, host, pid, lease_queries.db_now(session), 30, seen)


def test_the_fence_refuses_the_process_whose_name_another_took_over(factory):
    """The old process (stalled past its registration, then back) still finds its name on the
    lease; the fence knows it by its registration, so it cannot write under the new one's."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    old = _registered(factory, "mail-1", "h1", 100)
    _take(factory, box, "mail-1", mailbox_id=box_id)
    new = _take_over(factory, "mail-1", _expire_daemon(factory, "mail-1"), "h2", 200)
    with pytest.raises(LeaseLost, match="daemon 'mail-1' was taken over by another process"), \
            transaction(factory) as session:
        lease_queries.hold(session, box, old, 60.0)
    with transaction(factory) as session:
        lease_queries.hold(session, box, new, 60.0)  # the new process holds it under the same name
        assert not lease_queries.renew_daemon(session, old, lease_queries.db_now(session), 30)
    with pytest.raises(LeaseLost), factory() as session:
        lease_queries.acquired(session, box, old)


def test_two_processes_taking_over_one_name_one_is_refused(factory):
    """Both saw the same expired row and were allowed by ``refusal``: the second finds it gone."""
    _registered(factory, "mail-1", "h1", 100)
    seen = _expire_daemon(factory, "mail-1")
    _take_over(factory, "mail-1", seen, "h2", 200)
    with pytest.raises(DaemonRefused, match='another process registered as daemon "mail-1" at the same moment'):
        _take_over(factory, "mail-1", seen, "h3", 300)
    with pytest.raises(DaemonRefused, match='another process registered as daemon "mail-1"'):
        _registered(factory, "mail-1", "h4", 400)  # a new row for a name that has one: the unique name
    with factory() as session:
        assert [(d.host, d.pid) for d in lease_queries.daemons(session)] == [("h2", 200)]


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_takeover_waits_for_the_old_process_fenced_transaction(factory):
    """Not a commit by the old process after the new one took its name: the takeover's DELETE
    waits for the fence's lock on the row, and the old process's next fence then fails."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    old = _registered(factory, "mail-1", "h1", 100)
    _take(factory, box, "mail-1", mailbox_id=box_id)
    seen = _expire_daemon(factory, "mail-1")
    done = threading.Event()
    with transaction(factory) as session:
        lease_queries.hold(session, box, old, 60.0)  # the old process's group, not committed yet
        taker = threading.Thread(target=lambda: (_take_over(factory, "mail-1", seen, "h2", 200), done.set()))
        taker.start()
        assert not done.wait(0.5)  # waiting for this transaction
    taker.join(30)
    assert done.is_set()
    with pytest.raises(LeaseLost), transaction(factory) as session:
        lease_queries.hold(session, box, old, 60.0)


def _taken_over_from(stalled, factory, box_id: int) -> None:
    """``stalled`` (a session of mail-1 that locked the lease row of mailbox ``box_id`` for a
    lease of one second, then went quiet) loses its transaction to the server after that second,
    and mail-2 then takes the lease."""
    box = sharing.mailbox_resource(box_id)
    began = time.monotonic()
    taken = eventually(lambda: _take(factory, box, "mail-2", mailbox_id=box_id), timeout=15)
    waited = time.monotonic() - began
    assert taken == [box] and 0.9 < waited < 10, f"taken after {waited:.1f} s"
    with pytest.raises(DBAPIError, match="idle-in-transaction timeout"):
        stalled.commit()
    stalled.close()


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_holder_stalled_between_its_fence_and_its_commit_loses_the_lease_after_its_time(factory):
    """A daemon frozen (a paused VM) or cut off after its fence and before its COMMIT keeps the
    lease row locked, and takers skip a locked row: without a bound the mailbox would wait for it
    as long as the stall lasts. The server ends such a transaction once it has sat idle for the
    lease time, nothing it wrote is kept, and another daemon takes the lease."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    old = _registered(factory, "mail-1")
    _take(factory, box, "mail-1", ttl=1.0, mailbox_id=box_id)
    stalled = factory()
    stalled.begin()
    stalled.add(Mailbox(name="written-before-the-stall", role="capture", created_at=NOW))
    lease_queries.hold(stalled, box, old, 1.0)
    stalled.flush()
    _taken_over_from(stalled, factory, box_id)
    for _ in range(8):  # every pooled connection works: the ended one was thrown away, not reused
        with factory() as session:
            assert session.scalar(select(Mailbox.id).where(Mailbox.name == "written-before-the-stall")) is None


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_daemon_frozen_in_its_lease_tick_loses_the_tick_after_the_lease_time(factory):
    """A tick renews every lease of its daemon in one transaction, locking their rows: frozen
    there (a paused VM), the daemon would keep all its mailboxes from the others for as long as
    it stays frozen. Its own pool's transactions end once idle for the lease time."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    _registered(factory, "mail-1")
    _take(factory, box, "mail-1", ttl=1.0, mailbox_id=box_id)
    ticks = lease_queries.own_pool(factory, 1.0)
    try:
        frozen = ticks()
        frozen.begin()
        lease_queries.renew_held(frozen, "mail-1", lease_queries.db_now(frozen), 1.0)
        _taken_over_from(frozen, factory, box_id)
        with transaction(ticks) as session:  # the pool goes on: the ended connection was thrown away
            assert lease_queries.renew_daemon(session, _registered(factory, "mail-3"), lease_queries.db_now(session), 30)
    finally:
        lease_queries.close_own_pool(ticks, factory)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_transaction_may_wait_before_its_fence_and_the_bound_ends_with_it(factory):
    """A commit group downloads its messages inside its transaction: only after the fence is its
    idle time bounded, and the bound does not stay on the pooled connection."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    holder = _registered(factory, "mail-1")
    _take(factory, box, "mail-1", mailbox_id=box_id)
    with factory.kw["bind"].connect() as connection, Session(bind=connection) as session:
        with session.begin():
            session.add(Mailbox(name="written-slowly", role="capture", created_at=NOW))
            session.flush()
            time.sleep(1.5)  # longer than the lease time below: a slow download
            lease_queries.hold(session, box, holder, 1.0)
            assert session.scalar(text("SHOW idle_in_transaction_session_timeout")) == "1s"
        assert session.scalar(text("SHOW idle_in_transaction_session_timeout")) == "0"  # same connection
    with factory() as session:
        assert session.scalar(select(Mailbox.id).where(Mailbox.name == "written-slowly")) is not None


def test_the_fence_refuses_a_lease_that_went_away_and_came_back(factory):
    """A pass stalled; the mailbox went to mail-2, which moved it on, then came back to mail-1.
    The stale pass holds the token of the lease it began with, which is not this one."""
    box_id = _mailbox(factory)
    box = sharing.mailbox_resource(box_id)
    one, _ = _registered(factory, "mail-1"), _registered(factory, "mail-2")
    _take(factory, box, "mail-1", mailbox_id=box_id)
    with factory() as session:
        stale = lease_queries.acquired(session, box, one)
    for holder in ("mail-1", "mail-2"):
        with transaction(factory) as session:
            lease_queries.release(session, [box], holder)
        time.sleep(0.01)
        _take(factory, box, "mail-2" if holder == "mail-1" else "mail-1", mailbox_id=box_id)
    assert _holders(factory) == {box: "mail-1"}
    with pytest.raises(LeaseLost, match="under the lease this pass began with"), transaction(factory) as session:
        lease_queries.hold(session, box, one, 60.0, since=stale)
    with factory() as session:
        current = lease_queries.acquired(session, box, one)
    with transaction(factory) as session:
        lease_queries.hold(session, box, one, 60.0, since=current)


def test_registration_renewal_and_a_clean_stop(factory):
    mine = _registered(factory, "mail-1")
    with transaction(factory) as session:
        now = lease_queries.db_now(session)
        assert lease_queries.renew_daemon(session, mine, now, 30)
        assert not lease_queries.renew_daemon(session, Holder("mail-1", "here", 8, mine.started_at), now, 30)
    box_id = _mailbox(factory)
    _take(factory, sharing.mailbox_resource(box_id), "mail-1", mailbox_id=box_id)
    with transaction(factory) as session:
        lease_queries.unregister(session, mine)
    with factory() as session:
        assert lease_queries.daemons(session) == [] and lease_queries.leases(session) == []


# -- the fence in a real sync --------------------------------------------------------------------

def _inbox_with_three_leads(team, dovecot, factory):
    """A config and the id of mailbox "inbox": alice's IMAP INBOX, with three new leads in it."""
    alice = dovecot.add_user("alice", "pw")
    dovecot.append(alice, "INBOX", [_lead(i) for i in range(3)])
    add_imap(team, dovecot, alice, "inbox")
    config = build_config({"team": {"domains": ["acme.example"]}}, None)
    with factory() as session:
        box_id = session.scalar(select(Mailbox.id).where(Mailbox.name == "inbox"))
    return config, box_id


def test_a_pass_whose_lease_was_taken_records_nothing_and_is_no_failure(team, dovecot, factory):
    config, box_id = _inbox_with_three_leads(team, dovecot, factory)
    one, two = _registered(factory, "mail-1"), _registered(factory, "mail-2")
    _take(factory, sharing.mailbox_resource(box_id), "mail-2", mailbox_id=box_id)
    with pytest.raises(LeaseLost):
        sync_mailbox(factory, config, "inbox", environ={}, holder=one, lease_ttl=30.0, parse_workers=0)
    with factory() as session:
        assert session.scalar(select(func.count(Message.id))) == 0  # the group rolled back
        assert session.scalar(select(func.count(FolderPosition.id)).where(FolderPosition.last_uid > 0)) == 0
        assert session.get(Mailbox, box_id).failures == 0  # another daemon works it: not a failure
    report = sync_mailbox(factory, config, "inbox", environ={}, holder=two, lease_ttl=30.0, parse_workers=0)
    assert report.total == 3  # the holder's pass records them, once
    sync_mailbox(factory, config, "inbox", environ={}, parse_workers=0)  # poll: no lease, as ever


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_pass_stalled_after_its_fence_until_another_took_the_mailbox_is_lost_not_failed(team, dovecot, factory):
    """The server ends the stalled transaction (the fence's bound), the other daemon takes the
    mailbox, and the pass's COMMIT then fails: the daemon must read that as a lease lost (retry
    when the lease comes back), not as a failure of the mailbox to back off from and show."""
    config, box_id = _inbox_with_three_leads(team, dovecot, factory)
    box = sharing.mailbox_resource(box_id)
    one, _ = _registered(factory, "mail-1"), _registered(factory, "mail-2")
    _take(factory, box, "mail-1", ttl=1.0, mailbox_id=box_id)
    taken = []

    def clock() -> datetime:
        if sys._getframe(1).f_code.co_name == "checkpoint" and not taken:  # after the fence
            time.sleep(1.5)  # frozen past the lease time the fence renewed
            taken.append(_take(factory, box, "mail-2", ttl=30.0, mailbox_id=box_id))
        return datetime.now(UTC)

    with pytest.raises(LeaseLost, match="the pass had stopped on .*idle-in-transaction timeout"):
        sync_mailbox(factory, config, "inbox", now=clock, environ={}, holder=one, lease_ttl=1.0, parse_workers=0)
    assert taken == [[box]]
    with factory() as session:
        assert session.scalar(select(func.count(Message.id))) == 0
        assert session.get(Mailbox, box_id).failures == 0


# -- daemons sharing real mailboxes -------------------------------------------------------------

LEASE_SECONDS = 4


def _daemon(factory, name: str) -> Daemon:
    config = build_config({"team": {"domains": ["acme.example"]}, "sync": {"poll_interval": 300, "max_backoff": 2},
                           "daemon": {"lease_seconds": LEASE_SECONDS}}, None)
    return Daemon(factory, config, lambda: config, environ={}, name=name)


def _serve(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.serve, name=f"daemon:{daemon.name}", daemon=True)
    thread.start()
    eventually(lambda: daemon._registered, what=f"{daemon.name} started")
    return thread


def _stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.stop.set()
    daemon._wake.set()
    thread.join(30)
    assert not thread.is_alive()


def _mailbox_holders(factory) -> dict[str, str]:
    with factory() as session:
        now = lease_queries.db_now(session)
        return {lease.resource: lease.holder for lease in lease_queries.leases(session)
                if lease.mailbox_id is not None and lease.expires_at > now}


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_two_daemons_share_six_mailboxes_and_one_takes_all_when_the_other_dies(team, dovecot, factory):
    users = [dovecot.add_user(f"rep{i}", "pw") for i in range(6)]
    for i, user in enumerate(users):
        add_imap(team, dovecot, user, f"box{i}")
    one, two = _daemon(factory, "mail-1"), _daemon(factory, "mail-2")
    threads = {one.name: _serve(one), two.name: _serve(two)}
    try:
        eventually(lambda: sorted(held_by(_mailbox_holders(factory)).values()) == [3, 3], timeout=20,
                   what="three mailboxes each")
        eventually(lambda: len(one.boxes) == 3 and len(two.boxes) == 3, what="each syncing its own three")
        assert not set(one.boxes) & set(two.boxes)
        status = json.loads(team("status", "--json").stdout)
        assert {m["daemon"]["holder"] for m in status["mailboxes"] if m["daemon"]} == {"mail-1", "mail-2"}
        assert [(d["name"], d["alive"]) for d in status["daemons"]] == [("mail-1", True), ("mail-2", True)]
        text = team("status").stdout
        assert "  worked by mail-1 since " in text and "  worked by mail-2 since " in text
        assert f"mail-1 on {socket.gethostname()}, pid {os.getpid()}: started " in text and ", alive" in text

        # mail-2 dies without a word (as under kill -9: nothing released, its row left behind)
        former = {r for r, holder in _mailbox_holders(factory).items() if holder == "mail-2"}
        two._registered = False
        _stop(two, threads.pop(two.name))
        with factory() as session:  # its last renewal, by the database's clock (the leases' clock)
            last = session.scalar(select(DaemonRow.seen_at).where(DaemonRow.name == "mail-2"))
        eventually(lambda: set(_mailbox_holders(factory).values()) == {"mail-1"} and len(_mailbox_holders(factory))
                   == 6, timeout=2 * LEASE_SECONDS, what="mail-1 holding all six")
        with factory() as session:
            took = min(session.scalars(select(Lease.acquired_at).where(Lease.resource.in_(former))))
        # not before its leases ran out (L/2 after the renewal), and at mail-1's next tick after that
        assert timedelta(seconds=LEASE_SECONDS / 2) <= took - last <= timedelta(seconds=0.75 * LEASE_SECONDS + 0.5)
        eventually(lambda: len(one.boxes) == 6, what="mail-1 syncing all six")
        assert "mail-2 on " in team("status").stdout and ", gone" in team("status").stdout

        for i, user in enumerate(users):  # every mailbox is worked: its new mail is recorded, once
            dovecot.append(user, "INBOX", [_lead(100 + i)])
        eventually(lambda: _count(factory, Message.id) == 6, timeout=20, what="a message from each mailbox")
    finally:
        for name, thread in threads.items():
            _stop(one if name == "mail-1" else two, thread)
    with factory() as session:  # a clean stop leaves nothing behind but the dead daemon's row
        assert [d.name for d in lease_queries.daemons(session)] == ["mail-2"]
        assert lease_queries.leases(session) == []


def test_a_pass_stopped_by_the_fence_runs_again_at_the_next_tick_while_the_lease_is_held(team, dovecot, factory,
                                                                                          monkeypatch):
    """A pass whose lease changed hands meanwhile (and came back, or never left: a renewal late
    on a loaded machine) commits nothing; the mail it would have recorded must not then wait
    for the next poll interval (300 s here) with no IDLE watcher, which starts after a pass."""
    from inboxcrm.app import sync as sync_module

    user = dovecot.add_user("rep0", "pw")
    add_imap(team, dovecot, user, "box0")
    dovecot.append(user, "INBOX", [_lead(1)])
    passes = []

    def fenced_once(*args, **kwargs):
        passes.append(time.monotonic())
        if len(passes) == 1:
            raise LeaseLost("box0 changed hands during this pass")
        return sync_mailbox(*args, **kwargs)

    monkeypatch.setattr(sync_module, "sync_mailbox", fenced_once)
    daemon = _daemon(factory, "mail-1")
    thread = _serve(daemon)
    try:
        eventually(lambda: _count(factory, Message.id) == 1, timeout=3 * LEASE_SECONDS,
                   what="the message recorded by the pass after the fenced one")
    finally:
        _stop(daemon, thread)
    assert len(passes) >= 2 and passes[1] - passes[0] <= LEASE_SECONDS


def _count(factory, column) -> int:
    with factory() as session:
        return session.scalar(select(func.count(column)))


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_sqlite_refuses_a_second_daemon_with_the_clear_error(team, factory):
    first = _daemon(factory, "mail-1")
    first.start()
    try:
        with pytest.raises(DaemonRefused, match='SQLite serves one daemon: "mail-1"'):
            _daemon(factory, "mail-2").start()
        result = team("run", "--id", "mail-2", code=1)  # the command line: exit 1, the reason on stderr
        assert result.stderr.startswith('error: SQLite serves one daemon: "mail-1" (host ')
        assert "move to PostgreSQL to run several (docs/operations.md#several-daemons)" in result.stderr
    finally:
        first.shutdown()
    with factory() as session:
        assert lease_queries.daemons(session) == []


def test_run_checks_the_name(team):
    result = team("run", "--id", "mail 2", code=2)
    assert "'mail 2' is not a daemon name: use letters, digits, '.', '_' or '-'" in result.stderr


def test_status_without_daemons_says_so(team):
    text = team("status").stdout
    assert 'daemons: none running (start one with "inboxcrm run")' in text
    assert json.loads(team("status", "--json").stdout)["daemons"] == []


def test_status_shows_a_mailbox_nobody_works(team, dovecot, factory):
    add_imap(team, dovecot, dovecot.add_user("alice", "pw"), "inbox")
    assert "  no live daemon\n" in team("status").stdout
    with factory() as session:
        box_id = session.scalar(select(Mailbox.id).where(Mailbox.name == "inbox"))
    _take(factory, sharing.mailbox_resource(box_id), "mail-7", ttl=-1.0, mailbox_id=box_id)  # expired at once
    assert "  no live daemon (the last, mail-7, stopped renewing its lease)" in team("status").stdout
    box = next(m for m in json.loads(team("status", "--json").stdout)["mailboxes"] if m["name"] == "inbox")
    assert box["daemon"]["holder"] == "mail-7" and box["daemon"]["alive"] is False


# -- a daemon in trouble -------------------------------------------------------------------------

def _events(caplog) -> list[tuple[str, dict]]:
    """The daemon's events as logged: name and fields."""
    return [(r.getMessage(), getattr(r, "inboxcrm_fields", {})) for r in caplog.records]


def _unregister(daemon: Daemon) -> None:
    """The end of a daemon that only registered (no scheduler to stop)."""
    daemon._unregister()
    lease_queries.close_own_pool(daemon._ticks, daemon.factory)


def _one_box(team, dovecot, name: str = "box0") -> None:
    add_imap(team, dovecot, dovecot.add_user(f"rep-{name}", "pw"), name)


def test_a_database_error_in_a_tick_is_logged_and_the_daemon_goes_on(factory, monkeypatch, caplog):
    """Whatever the tick reads, it reads inside the try that logs a failed tick."""
    from sqlalchemy.exc import OperationalError

    from inboxcrm.app import daemon as daemon_module

    def unreachable(session):
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    daemon = _daemon(factory, "mail-1")
    daemon._register()
    monkeypatch.setattr(daemon_module, "imap_connections", unreachable)
    with caplog.at_level(logging.ERROR, logger="inboxcrm.app.daemon"):
        daemon._lease_tick()
    [(name, fields)] = _events(caplog)
    assert name == "lease-tick-failed" and "server closed the connection" in fields["reason"]
    _unregister(daemon)


def test_whatever_escapes_the_main_loop_the_daemon_still_stops_cleanly(factory):
    """Its leases and row go, so the others take over at once instead of after the lease time."""
    daemon = _daemon(factory, "mail-1")

    def broken() -> None:
        raise RuntimeError("a bug in the main loop")

    daemon._retry_renewed_grants = broken
    with pytest.raises(RuntimeError, match="a bug in the main loop"):
        daemon.serve()
    with factory() as session:
        assert lease_queries.daemons(session) == [] and lease_queries.leases(session) == []


def _unreachable_database():
    from inboxcrm.store.db import make_engine, session_factory

    return session_factory(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere"))


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_daemon_that_cannot_renew_for_its_lease_time_stops_the_work_until_it_can(team, dovecot, factory, caplog):
    """Its leases have run out: another daemon may work its mailboxes and jobs by now. The
    fences refuse its writes anyway; this frees its IDLE connections and stops its notify job."""
    _one_box(team, dovecot)
    daemon = _daemon(factory, "mail-1")
    daemon.start()
    working, cut_off = daemon._ticks, _unreachable_database()
    try:
        assert set(daemon.boxes) == {"box0"} and daemon.scheduler.get_job("notify") is not None
        daemon._ticks = cut_off
        with caplog.at_level(logging.WARNING, logger="inboxcrm.app.daemon"):
            daemon._lease_tick()  # within the lease time: the work goes on
            assert set(daemon.boxes) == {"box0"}
            daemon._renewed -= LEASE_SECONDS / 2  # as if the last renewal that worked was that long ago
            daemon._lease_tick()
            daemon._lease_tick()
            assert daemon.boxes == {} and daemon.held == set() and daemon.scheduler.get_job("notify") is None
            assert [n for n, _ in _events(caplog)].count("leases-expired-locally") == 1  # once, not every tick
            daemon._ticks = working
            eventually(lambda: daemon._lease_tick() or set(daemon.boxes) == {"box0"}, what="the work back")
        assert daemon.scheduler.get_job("notify") is not None and "leases-renewed" in [n for n, _ in _events(caplog)]
    finally:
        daemon._ticks = working
        cut_off.kw["bind"].dispose()
        daemon.shutdown()


def test_a_daemon_whose_row_was_deleted_registers_again_and_says_so(factory, caplog):
    daemon = _daemon(factory, "mail-1")
    daemon._register()
    before = daemon.holder
    with transaction(factory) as session:
        session.execute(DaemonRow.__table__.delete())
    time.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="inboxcrm.app.daemon"):
        daemon._lease_tick()
    assert [(n, f["daemon"]) for n, f in _events(caplog) if n == "daemon-registered-again"] == [
        ("daemon-registered-again", "mail-1")]
    assert caplog.records[0].levelno == logging.WARNING
    assert daemon.holder != before and not daemon.stop.is_set()
    with factory() as session:
        assert [d.name for d in lease_queries.daemons(session)] == ["mail-1"]
    _unregister(daemon)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_the_tick_is_not_queued_behind_sync_passes_for_a_database_connection(engine, factory):
    """Passes hold the shared pool's connections while they download; the tick has its own."""
    daemon = _daemon(factory, "mail-1")
    daemon._register()
    taken = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]  # all of them
    try:
        ticked = threading.Thread(target=daemon._lease_tick)
        ticked.start()
        ticked.join(10)  # the shared pool would have it wait 30 s, then fail
        assert not ticked.is_alive()
        assert daemon.held == set(sharing.JOBS)
    finally:
        for connection in taken:
            connection.close()
        _unregister(daemon)


def test_a_notify_run_whose_lease_another_took_queues_nothing(factory):
    """Digests, nudges: each enqueue transaction is fenced, so a stale daemon's run stops at its
    first write instead of counting the nudge caps beside the daemon that holds the job now."""
    from inboxcrm.app import notify

    from .test_notify import Team

    crm = Team(factory)
    alice = crm.rep("alice")
    now = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # Tuesday's digest is due, and the nudges
    for n in range(3):
        crm.deal(alice, f"Lead {n}", f"lead{n}@prospect.example", created=now - timedelta(minutes=3))
    one, _ = _registered(factory, "mail-1"), _registered(factory, "mail-2")
    _take(factory, sharing.NOTIFY, "mail-1")
    with factory() as session:
        since = lease_queries.acquired(session, sharing.NOTIFY, one)
    with transaction(factory) as session:  # mail-1 stalled past its lease and mail-2 took the job
        session.execute(Lease.__table__.update().values(expires_at=lease_queries.db_now(session)
                                                        - timedelta(seconds=1)))
    _take(factory, sharing.NOTIFY, "mail-2")
    with pytest.raises(LeaseLost):
        notify.enqueue_due(factory, crm.config, now,
                           fence=lambda session: lease_queries.hold(session, sharing.NOTIFY, one, 30, since))
    assert crm.outbox() == []
    assert crm.run(now) == 4  # the holder's run: the digest and the three nudges


def test_mail_that_came_between_the_pass_and_the_first_idle_is_noticed(team, dovecot, factory):
    """IDLE announces only what comes after it: a message that arrived after the pass read the
    inbox but before the watcher connected would wait for the poll interval (a takeover starts
    a pass and a watcher for each new mailbox at once, so this is common then)."""
    from inboxcrm.mail import imap

    alice = dovecot.add_user("alice", "pw")
    add_imap(team, dovecot, alice, "inbox")
    daemon = _daemon(factory, "mail-1")
    config = build_config({"team": {"domains": ["acme.example"]}}, None)
    sync_mailbox(factory, config, "inbox", environ={}, parse_workers=0)

    def inbox():
        with factory() as session:
            connection = session.scalar(select(Mailbox.connection).where(Mailbox.name == "inbox"))
        settings = imap.ImapSettings.from_json(connection)
        client = imap.connect(settings, {})
        try:
            return next(f for f in imap.resolve_folders(client, settings) if f.role == "\\Inbox")
        finally:
            imap.close(client)

    assert not daemon._missed_before_idle("inbox", inbox())
    dovecot.append(alice, "INBOX", [_lead(1)])
    assert daemon._missed_before_idle("inbox", inbox())
