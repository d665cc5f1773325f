"""Several daemons on one database: the sharing plan, the lease statements, the sync's fence, and
daemons sharing real mailboxes on PostgreSQL (the kill -9 storm is tests/test_daemon_chaos.py)."""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from inboxcrm.app.daemon import Daemon
from inboxcrm.app.sync import sync_mailbox
from inboxcrm.config import DAEMON_ID, build_config
from inboxcrm.core import leases as sharing
from inboxcrm.core.leases import Held, Seen
from inboxcrm.errors import DaemonRefused, LeaseLost
from inboxcrm.store import lease_queries
from inboxcrm.store.db import transaction
from inboxcrm.store.models import FolderPosition, Lease, Mailbox, Message

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
    _take(factory, box, "mail-1", ttl=1.0, mailbox_id=box_id)
    with transaction(factory) as session:
        lease_queries.hold(session, box, "mail-1", 60.0)
        expires = session.scalar(select(Lease.expires_at))
        assert expires > lease_queries.db_now(session) + timedelta(seconds=50)
    with pytest.raises(LeaseLost, match=f"{box} is no longer held by daemon 'mail-2'"), \
            transaction(factory) as session:
        lease_queries.hold(session, box, "mail-2", 60.0)


def test_registration_renewal_and_a_clean_stop(factory):
    with transaction(factory) as session:
        now = lease_queries.db_now(session)
        lease_queries.register(session, "mail-1", "here", 7, now, 30)
        assert lease_queries.renew_daemon(session, "mail-1", "here", 7, now, 30)
        assert not lease_queries.renew_daemon(session, "mail-1", "here", 8, now, 30)  # not this process's row
    box_id = _mailbox(factory)
    _take(factory, sharing.mailbox_resource(box_id), "mail-1", mailbox_id=box_id)
    with transaction(factory) as session:
        lease_queries.unregister(session, "mail-1", "here", 7)
    with factory() as session:
        assert lease_queries.daemons(session) == [] and lease_queries.leases(session) == []


# -- the fence in a real sync --------------------------------------------------------------------

def test_a_pass_whose_lease_was_taken_records_nothing_and_is_no_failure(team, dovecot, factory):
    alice = dovecot.add_user("alice", "pw")
    dovecot.append(alice, "INBOX", [_lead(i) for i in range(3)])
    add_imap(team, dovecot, alice, "inbox")
    config = build_config({"team": {"domains": ["acme.example"]}}, None)
    with factory() as session:
        box_id = session.scalar(select(Mailbox.id).where(Mailbox.name == "inbox"))
    _take(factory, sharing.mailbox_resource(box_id), "mail-2", mailbox_id=box_id)
    with pytest.raises(LeaseLost):
        sync_mailbox(factory, config, "inbox", environ={}, holder="mail-1", lease_ttl=30.0, parse_workers=0)
    with factory() as session:
        assert session.scalar(select(func.count(Message.id))) == 0  # the group rolled back
        assert session.scalar(select(func.count(FolderPosition.id)).where(FolderPosition.last_uid > 0)) == 0
        assert session.get(Mailbox, box_id).failures == 0  # another daemon works it: not a failure
    report = sync_mailbox(factory, config, "inbox", environ={}, holder="mail-2", lease_ttl=30.0, parse_workers=0)
    assert report.total == 3  # the holder's pass records them, once
    sync_mailbox(factory, config, "inbox", environ={}, parse_workers=0)  # poll: no lease, as ever


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
        two._registered = False
        _stop(two, threads.pop(two.name))
        died = time.monotonic()
        eventually(lambda: set(_mailbox_holders(factory).values()) == {"mail-1"} and len(_mailbox_holders(factory))
                   == 6, timeout=2 * LEASE_SECONDS, what="mail-1 holding all six")
        assert time.monotonic() - died < LEASE_SECONDS
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
