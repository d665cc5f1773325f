"""A daemon frozen (SIGSTOP) in the middle of its work, on PostgreSQL with a private Dovecot: the
split-brain paths a SIGKILL never reaches (issue 16).

A killed daemon's transactions end with its connections; a frozen one keeps them open, holding
a commit group's records, and goes on where it stopped when it is let go, long after its
leases went to another daemon. What a team relies on then:

- a daemon frozen in a commit group longer than lease_seconds commits nothing for the mailboxes
  it lost: its open group rolls back at the fence ("lease-lost"), the other daemon records the
  mail, no folder position ever moves back, and the frozen one gets its fair share back;
- a second ``run --id d1`` while d1 is frozen is refused while d1's registration runs, and takes
  the name over once it expired; the old process, let go, writes nothing and stops;
- the holder of job:notify frozen in its nudge transaction: another daemon takes the job, the old
  transaction rolls back, nudges stay within ``[digest] nudges_per_hour``, no digest twice.

Each test freezes the daemon at a moment it chooses from PostgreSQL itself (pg_stat_activity of the
daemon's own connections), so the open transaction is known and its fate (committed or rolled back)
is read from the database, not guessed from timing. On failure the ends of the daemons' logs and
the row locks anyone waits for are printed (a frozen process's lock that stalls the others is the
failure a fence can bring in).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text

from inboxcrm.core.leases import NOTIFY, mailbox_resource
from inboxcrm.store.db import session_factory
from inboxcrm.store.models import Daemon, Lease, Message, MessageCopy, OutboxMessage, Rep

from .chaos_support import (
    Backend,
    Cluster,
    DaemonProcess,
    Holding,
    PositionWatch,
    backends,
    client_ports,
    holding,
    message,
    transaction_status,
)
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .smtp_server import SmtpServer
from .test_daemon_chaos import LEASE_SECONDS as CHAOS_LEASE_SECONDS
from .test_daemon_chaos import MAILBOXES, REPS, _config, _expected_positions, _positions, _server_state, _team, _wait
from .test_daemon_chaos import database, smtp  # noqa: F401 - fixtures: a private PostgreSQL, an SMTP server

LEASE_SECONDS = 4  # the contract's floor is 3; a tick every second
FROZEN_FOR = LEASE_SECONDS + 2.0  # longer than a lease: every lease of the frozen daemon expires
BURST = 300  # new prospects in one mailbox: passes of several commit groups (up to 1 s each)
NUDGES_PER_HOUR = 2
LEADS = 4  # new leads for one rep at once: more than the hour's nudges
# Registration holds lease_seconds/2 from the last renewal: a start during the freeze must meet it
# still valid (3 to 6 s left at the stop) to be refused, then it expires and the name is free.
SAME_NAME_LEASE = 12
START_TIMEOUT = 30.0
SETTLE_TIMEOUT = 60.0


@dataclass
class Scene:
    """The chaos test's team (30 capture mailboxes owned in turn by 6 reps, whose daily digest is
    due since 00:00 UTC) on a private database, Dovecot and SMTP server, and the daemons the test
    starts on them."""

    factory: object
    dovecot: object
    smtp: SmtpServer
    users: dict  # Dovecot user name (also the mailbox's name) -> User
    ids: dict[str, int]  # mailbox name -> id
    cluster: Cluster
    delivered: dict[str, str]  # Message-ID -> the user it went to

    def held(self) -> Holding:
        with self.factory() as session:
            return holding(session, frozenset(self.ids.values()), self.cluster.live())

    def holders(self) -> dict[str, str]:
        """resource -> holder of every unexpired lease, on the database's clock."""
        with self.factory() as session:
            now = session.scalar(select(func.clock_timestamp()))
            return dict(session.execute(select(Lease.resource, Lease.holder).where(Lease.expires_at > now)).all())

    def mailboxes_of(self, daemon: str) -> list[str]:
        by_id = {pk: name for name, pk in self.ids.items()}
        return sorted(by_id[pk] for pk, holder in self.held().covered.items() if holder == daemon)

    def worked_by_only(self, daemon: str, timeout: float, when: str) -> float:
        """Waits until ``daemon`` works every mailbox; the seconds it took. On failure, says who
        works what and why the others are not worked, and who waits for a row lock."""
        def alone() -> bool:
            held = self.held()
            return not held.uncovered and set(held.covered.values()) == {daemon}
        try:
            return _wait(alone, timeout, f"{daemon} working every mailbox {when}")[1]
        except AssertionError as exc:
            held = self.held()
            raise AssertionError(f"{exc}: {held.per_daemon()}; not worked: {held.describe() or 'none'}\n"
                                 f"{_lock_waits(self.factory)}") from None

    def recorded(self, message_ids) -> set[str]:
        with self.factory() as session:
            return set(session.scalars(select(Message.message_id).where(Message.message_id.in_(list(message_ids)))))

    def deliver(self, user: str, tag: str, count: int) -> list[str]:
        """``count`` first messages from new prospects to ``user``'s INBOX, in one MULTIAPPEND."""
        mails = [(f"{tag}-{n}@firm-{tag}-{n}.example",
                  message(f"{tag}-{n}@firm-{tag}-{n}.example", f"Buyer {tag} {n} <buyer@firm-{tag}-{n}.example>",
                          f"{user}@acme.example", f"Quote for {n + 2} seats ({tag})", "Could you send us a quote?"))
                 for n in range(count)]
        self.dovecot.append(self.users[user], "INBOX", [raw for _, raw in mails])
        self.delivered.update((mid, user) for mid, _ in mails)
        return [mid for mid, _ in mails]

    def settled(self) -> bool:
        """Every message delivered on record and every folder position at the end of its folder."""
        if len(self.recorded(self.delivered)) < len(self.delivered):
            return False
        with self.factory() as session:
            return _positions(session, self.ids) == _expected_positions(_server_state(self.dovecot, self.users))

    def digests_sent(self) -> bool:
        with self.factory() as session:
            return session.scalar(select(func.count()).where(OutboxMessage.kind == "digest",
                                                             OutboxMessage.status == "sent")) >= REPS

    def start(self, *names: str) -> None:
        for name in names:
            self.cluster.start(name)
        def shared_out() -> bool:
            held = self.held()
            share = held.per_daemon()
            return not held.uncovered and set(share) == set(names) and max(share.values()) - min(share.values()) <= 1
        _wait(shared_out, START_TIMEOUT, f"every mailbox worked, shared out evenly by {', '.join(names)}")
        _wait(self.digests_sent, START_TIMEOUT, "every rep's digest sent")


@contextmanager
def _scene(database, dovecot, smtp: SmtpServer, tmp_path: Path, lease_seconds: int = LEASE_SECONDS) -> Iterator[Scene]:
    factory = session_factory(database)
    users, ids, _ = _team(factory, dovecot)
    config = _config(tmp_path, smtp)  # the chaos test's, with our lease time and nudge cap
    config.write_text(config.read_text().replace(f"lease_seconds = {CHAOS_LEASE_SECONDS}",
                                                 f"lease_seconds = {lease_seconds}")
                      + f"\n[digest]\nnudges_per_hour = {NUDGES_PER_HOUR}\n")
    cluster = Cluster(tmp_path, config, database.url.render_as_string(hide_password=False))
    try:
        yield Scene(factory, dovecot, smtp, users, ids, cluster, {})
    except BaseException:
        print(f"daemon logs under {tmp_path}:\n{cluster.tails(40)}\n{_lock_waits(factory)}")
        raise
    finally:
        cluster.kill_all()


def _lock_waits(factory) -> str:
    """Who waits for whom on a row lock now: what to read first when a daemon stalls."""
    with factory() as session:
        rows = session.execute(text(
            "SELECT pid, client_port, pg_blocking_pids(pid), left(query, 150) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'")).all()
    return "--- waiting on locks (backend, client port, blocked by, query) ---\n" + \
        ("\n".join(map(str, rows)) or "none")


# -- freezing at a chosen moment -------------------------------------------------------------------

@dataclass
class Frozen:
    """A daemon stopped with a transaction open: its log up to the stop, and that transaction."""

    daemon: DaemonProcess
    backend: Backend
    log_at: int  # len(daemon.log()) at the stop: what it logs from here on, it did after
    at: float  # time.monotonic() of the stop

    def status(self, factory) -> str:
        with factory() as session:
            return transaction_status(session, self.backend.xid)

    def thaw(self) -> float:
        """SIGCONT; how long it was stopped."""
        self.daemon.thaw()
        return time.monotonic() - self.at


def _freeze_when(daemon: DaemonProcess, factory, wanted: Callable[[Backend], bool], what: str,
                 timeout: float = 30.0, then: Callable[[], None] = lambda: None) -> Frozen:
    """SIGSTOP ``daemon`` the moment one of its connections shows a backend ``wanted`` picks, then
    ``then()`` (the test lets go of a lock, say); kept only if after that the backend still has a
    transaction open that wrote (``xid``): a COMMIT sent just before the stop ends it, and the next
    chance is taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as session:
            seen = [b for b in backends(session, client_ports(daemon.pid)) if wanted(b)]
        if not seen:
            time.sleep(0.01)
            continue
        daemon.freeze()
        at = time.monotonic()
        then()
        time.sleep(0.3)  # a statement the server was running finishes meanwhile
        with factory() as session:
            now = [b for b in backends(session, {*client_ports(daemon.pid)}) if b.pid == seen[0].pid]
        if now and now[0].xid is not None and now[0].state == "idle in transaction":
            return Frozen(daemon, now[0], len(daemon.log()), at)
        daemon.thaw()
    raise AssertionError(f"not within {timeout:.0f} s: {daemon.name} stopped {what}")


def _in_commit_group(backend: Backend) -> bool:
    """A sync pass's commit group: an open transaction that has recorded messages."""
    return backend.xid is not None and "messages" in backend.written


def _commits_after_loss(frozen: Frozen, ids: dict[str, int]) -> list[str]:
    """Messages the frozen daemon recorded (its "message" lines come after the commit) in a
    mailbox before it took that mailbox's lease again."""
    taken, found = set(), []
    for line in frozen.daemon.events(frozen.log_at):
        if line.get("event") == "leases-taken":
            taken.update(line.get("resources", "").split())
        elif line.get("event") == "message" and mailbox_resource(ids[line["mailbox"]]) not in taken:
            found.append(f"{line['at']} {line['mailbox']} uid {line.get('uid')} id {line.get('id')}")
    return found


def _assert_recorded_once(scene: Scene) -> None:
    with scene.factory() as session:
        messages = Counter(session.scalars(select(Message.message_id)))
        copies = Counter(session.execute(select(MessageCopy.mailbox_id, MessageCopy.location)).all())
    assert messages == Counter(set(scene.delivered)), "each delivered message on record once, nothing else"
    assert len(copies) == len(scene.delivered) and max(copies.values()) == 1


def _assert_stopped_cleanly(scene: Scene) -> None:
    codes = scene.cluster.terminate()
    with scene.factory() as session:
        left = (session.scalar(select(func.count(Lease.id))), session.scalar(select(func.count(Daemon.id))))
    assert set(codes.values()) == {0}, f"exit statuses after SIGTERM: {codes}"
    assert left == (0, 0), "after SIGTERM the daemons give their leases up and remove their rows"


# -- the tests ---------------------------------------------------------------------------------------

def test_a_daemon_frozen_in_a_commit_group_commits_nothing_for_the_mailboxes_it_lost(
        database, dovecot, smtp, tmp_path):
    with _scene(database, dovecot, smtp, tmp_path) as scene, PositionWatch(scene.factory) as positions:
        scene.start("d1", "d2")
        victim = next(d for d in scene.cluster.live() if d.name == "d1")
        target = scene.mailboxes_of("d1")[0]
        burst = scene.deliver(target, "burst", BURST)
        frozen = _freeze_when(victim, scene.factory, _in_commit_group, "in a commit group of the burst")
        at_freeze = len(scene.recorded(burst))

        others = [name for name in scene.users if name != target]
        meanwhile = [mid for name in others for mid in scene.deliver(name, f"while-{name}", 2)]
        taken_after = scene.worked_by_only("d2", 3 * LEASE_SECONDS, "while d1 is frozen")
        _, recorded_after = _wait(lambda: scene.recorded(meanwhile) == set(meanwhile), 3 * LEASE_SECONDS,
                                  "d2 recording the mail of the mailboxes it took, while d1 is frozen")
        time.sleep(max(0.0, FROZEN_FOR - (time.monotonic() - frozen.at)))
        frozen_for = frozen.thaw()

        fate, _ = _wait(lambda: (s := frozen.status(scene.factory)) != "in progress" and s, 15,
                        "d1's open commit group ended after SIGCONT")
        _, settle = _wait(scene.settled, SETTLE_TIMEOUT, "every message on record, every position at the end",
                          step=0.25)
        half = MAILBOXES // 2
        _, fair = _wait(lambda: scene.held().per_daemon() == {"d1": half, "d2": half}, 6 * LEASE_SECONDS,
                        f"d1 back to its fair share ({half} of {MAILBOXES})")
        print(f"d1 frozen {frozen_for:.1f} s (lease_seconds={LEASE_SECONDS}) in a commit group of {target} "
              f"(transaction {frozen.backend.xid}, {at_freeze} of {BURST} on record at the stop): {fate}; "
              f"d2 worked every mailbox {taken_after:.1f} s after the stop and recorded the "
              f"{len(meanwhile)} messages sent meanwhile {recorded_after:.1f} s later; all on record "
              f"{settle:.1f} s after SIGCONT, shares {half}/{half} {fair:.1f} s after that; "
              f"{positions.samples} samples of the positions")
        stale = _commits_after_loss(frozen, scene.ids)
        lost = [e for e in victim.events(frozen.log_at) if e.get("event") == "lease-lost"]
        print(f"after SIGCONT d1 logged {len(lost)} lease-lost, recorded {len(stale)} messages in mailboxes it "
              f"had lost; {len(positions.backwards)} positions moved back")
        _assert_stopped_cleanly(scene)

    assert fate == "aborted", "the frozen commit group must roll back at the fence, not commit"
    assert not stale, f"d1 recorded mail in mailboxes it had lost: {stale[:5]}"
    assert not positions.errors and not positions.backwards, positions.backwards[:5] or positions.errors[:5]
    assert lost, 'd1 says why its pass ended: "lease-lost"'
    _assert_recorded_once(scene)


def test_a_second_daemon_under_the_name_of_a_frozen_one_is_refused_then_takes_over_alone(
        database, dovecot, smtp, tmp_path):
    with _scene(database, dovecot, smtp, tmp_path, SAME_NAME_LEASE) as scene, \
            PositionWatch(scene.factory) as positions:
        scene.start("d1")
        old = scene.cluster.live()[0]
        target = scene.mailboxes_of("d1")[0]
        scene.deliver(target, "burst", BURST)
        frozen = _freeze_when(old, scene.factory, _in_commit_group, "in a commit group of the burst")

        with scene.factory() as session:
            left = session.scalar(text("SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM daemons"
                                       " WHERE name = 'd1'"))
        refused = scene.cluster.start("d1")
        status = refused.process.wait(START_TIMEOUT)
        refused_log = refused.log()
        print(f"run --id d1 with d1 (pid {old.pid}) frozen, its registration valid {left:.1f} s "
              f"more: exit status {status}: {refused_log.strip()[-300:]}")
        assert status == 1 and f'a daemon named "d1" is already running here (pid {old.pid}' in refused_log

        def expired() -> bool:
            with scene.factory() as session:
                return session.scalar(select(Daemon.expires_at <= func.clock_timestamp())
                                      .where(Daemon.name == "d1"))
        _wait(expired, SAME_NAME_LEASE, "d1's registration expiring while it is frozen")
        new = scene.cluster.start("d1")
        _, took = _wait(lambda: not (h := scene.held()).uncovered and h.alive == {"d1"}, START_TIMEOUT,
                        "the new d1 registered and working every mailbox")
        time.sleep(max(0.0, SAME_NAME_LEASE + 1 - (time.monotonic() - frozen.at)))
        frozen_for = frozen.thaw()

        fate, _ = _wait(lambda: (s := frozen.status(scene.factory)) != "in progress" and s, 15,
                        "the old d1's open commit group ended after SIGCONT")
        try:
            code = old.process.wait(SAME_NAME_LEASE)
        except Exception:  # noqa: BLE001 - still running: asserted below
            code = None
        after = old.events(frozen.log_at)
        _, settle = _wait(scene.settled, SETTLE_TIMEOUT, "every message on record, every position at the end",
                          step=0.25)
        print(f"old d1 frozen {frozen_for:.1f} s in a commit group of {target} (transaction "
              f"{frozen.backend.xid}): {fate}; new d1 (pid {new.pid}) worked every mailbox {took:.1f} s after "
              f"its start; old d1 exit status {code}, its events after SIGCONT: "
              + ", ".join(e.get("event", "?") for e in after[:12]))
        recorded = [f"{e['at']} {e['mailbox']} uid {e.get('uid')}" for e in after if e.get("event") == "message"]
        with scene.factory() as session:
            row = session.execute(select(Daemon.host, Daemon.pid).where(Daemon.name == "d1")).one()
        _assert_stopped_cleanly(scene)

    assert fate == "aborted", "the old d1's commit group must roll back: its name belongs to another process now"
    assert not recorded, f"the old d1 recorded mail after another process took its name: {recorded[:5]}"
    assert code == 1 and any(e.get("event") in ("daemon-name-taken", "lease-lost") for e in after), \
        "the old d1 stops on its own, saying why"
    assert row.pid == new.pid, "the name stays the new process's"
    assert not positions.errors and not positions.backwards, positions.backwards[:5] or positions.errors[:5]
    _assert_recorded_once(scene)


def test_the_notify_job_of_a_frozen_daemon_goes_to_another_and_nudges_stay_within_the_cap(
        database, dovecot, smtp, tmp_path):
    with _scene(database, dovecot, smtp, tmp_path) as scene:
        scene.start("d1", "d2")
        holder = scene.holders()[NOTIFY]
        victim = next(d for d in scene.cluster.live() if d.name == holder)
        other = ({"d1", "d2"} - {holder}).pop()
        inbox = scene.mailboxes_of(holder)[0]
        rep = int(inbox.removeprefix("u")) % REPS

        # The outbox locked against writes: the holder's notify run, started by the leads it records,
        # stops at its first nudge's INSERT with the hour's room counted; it is frozen there.
        with scene.factory() as session:
            rep_id = session.scalar(select(Rep.id).where(Rep.name == f"rep{rep}"))
        lock = database.connect()
        lock.begin()
        lock.execute(text("LOCK TABLE outbox IN SHARE MODE"))
        try:
            leads = scene.deliver(inbox, "lead", LEADS)

            def nudging(backend: Backend) -> bool:
                return (backend.waiting and backend.query.lstrip().upper().startswith("INSERT INTO OUTBOX")
                        and scene.recorded(leads) == set(leads))
            frozen = _freeze_when(victim, scene.factory, nudging, "in its nudge transaction", then=lock.commit)
        finally:
            lock.close()

        _, moved = _wait(lambda: scene.holders().get(NOTIFY) == other, 3 * LEASE_SECONDS,
                         f"{other} taking job:notify while {holder} is frozen")
        scene.worked_by_only(other, 3 * LEASE_SECONDS, f"while {holder} is frozen")
        time.sleep(max(0.0, FROZEN_FOR - (time.monotonic() - frozen.at)))
        frozen_for = frozen.thaw()

        fate, _ = _wait(lambda: (s := frozen.status(scene.factory)) != "in progress" and s, 15,
                        f"{holder}'s nudge transaction ended after SIGCONT")

        def nudges() -> int:
            with scene.factory() as session:
                return session.scalar(select(func.count(OutboxMessage.id)).where(
                    OutboxMessage.kind == "nudge", OutboxMessage.rep_id == rep_id,
                    OutboxMessage.created_at >= datetime.now(UTC) - timedelta(hours=1)))
        _wait(lambda: nudges() >= NUDGES_PER_HOUR, 6 * LEASE_SECONDS, f"rep{rep}'s nudges queued")
        _wait(lambda: len([m for m in scene.smtp.messages if m.message["X-InboxCRM"] == "nudge"]) >= NUDGES_PER_HOUR,
              SETTLE_TIMEOUT, "the nudges sent")
        _wait(scene.settled, SETTLE_TIMEOUT, "every message on record, every position at the end", step=0.25)
        time.sleep(LEASE_SECONDS)  # a notify run of the frozen one that was to come has come
        with scene.factory() as session:
            per_rep = Counter(session.scalars(select(OutboxMessage.rep_id).where(OutboxMessage.kind == "nudge")))
            digests = Counter(session.scalars(select(OutboxMessage.rep_id).where(OutboxMessage.kind == "digest")))
        stale = _notify_work_after_loss(frozen)
        print(f"{holder} frozen {frozen_for:.1f} s (lease_seconds={LEASE_SECONDS}) in its nudge transaction "
              f"(transaction {frozen.backend.xid}, {LEADS} new leads of rep{rep}, nudges_per_hour="
              f"{NUDGES_PER_HOUR}): {fate}; {other} took job:notify {moved:.1f} s after the stop; "
              f"nudges per rep id: {dict(per_rep)}, digests: {dict(digests)}; {holder}'s events after SIGCONT: "
              + ", ".join(e.get("event", "?") for e in holder_events(frozen)[:12]))
        _assert_stopped_cleanly(scene)

    assert per_rep[rep_id] == NUDGES_PER_HOUR and max(per_rep.values()) <= NUDGES_PER_HOUR, \
        f"nudges per rep id in the hour: {dict(per_rep)} (nudges_per_hour = {NUDGES_PER_HOUR})"
    assert len(digests) == REPS and set(digests.values()) == {1}, f"digest rows per rep id: {dict(digests)}"
    received = Counter(m.message["Message-ID"] for m in scene.smtp.messages)
    assert received and max(received.values()) == 1, "no mail received twice"
    assert fate == "aborted", f"{holder}'s nudge transaction must roll back: job:notify went to {other}"
    assert not stale, f"{holder} did notify work after it lost job:notify: {stale[:5]}"


def holder_events(frozen: Frozen) -> list[dict[str, str]]:
    return frozen.daemon.events(frozen.log_at)


def _notify_work_after_loss(frozen: Frozen) -> list[str]:
    """What the frozen daemon decided in notify runs (digests queued, nudges held back) after
    SIGCONT and before it took job:notify again."""
    again, found = False, []
    for line in holder_events(frozen):
        if line.get("event") == "leases-taken" and NOTIFY in line.get("resources", "").split():
            again = True
        elif line.get("event") in ("digest", "nudges-held") and not again:
            found.append(f"{line['at']} {line['event']}")
    return found

