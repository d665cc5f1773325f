"""The daemons and leases tables' statements: who is alive, who holds what; never commits.

A lease changes hands only through a conditional statement (``take``: an UPDATE that matches
only a lease that is ours or expired, or an INSERT that the unique resource lets one daemon win),
so two daemons can never both hold one, whatever their timing. Times come from the database's
clock on PostgreSQL (``clock_timestamp()``), so machines whose clocks disagree still agree on who
holds what; SQLite serves one machine, whose clock is Python's.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, delete, event, func, insert, literal, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from inboxcrm.clock import utcnow
from inboxcrm.core.leases import Holder, Seen
from inboxcrm.errors import DaemonRefused, LeaseLost
from inboxcrm.store.db import make_engine, session_factory
from inboxcrm.store.models import Daemon, Lease, Mailbox


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def one_daemon_only(session: Session) -> bool:
    """SQLite serves one daemon: its one writer at a time and one machine's file allow no more."""
    return session.get_bind().dialect.name == "sqlite"


def db_now(session: Session) -> datetime:
    """Now by the clock every daemon shares: the database server's (not the transaction's start,
    which would lag behind a long transaction), or this machine's on SQLite."""
    if _postgres(session):
        return session.scalar(text("SELECT clock_timestamp()"))
    return utcnow()


# -- daemons -------------------------------------------------------------------------------------

def daemons(session: Session) -> list[Daemon]:
    return list(session.scalars(select(Daemon).order_by(Daemon.name)))


def register(session: Session, name: str, host: str, pid: int, now: datetime, ttl: float,
             replacing: Seen | None = None) -> Holder:
    """This process as daemon ``name``: a new row, the registration the fence checks.
    ``replacing``: the row of that name (expired, or left by a dead process of this host) that
    ``core.leases.refusal`` looked at and allowed to take over.

    Both steps are conditional, so of two processes starting at once under one name one wins and
    the other gets DaemonRefused: the old row is deleted only if it is still the one seen (the
    second finds it gone), and the new row's INSERT meets the unique name. On PostgreSQL that
    DELETE also waits for the old process's fenced transactions (``hold`` locks the row), so none
    of them commits once the name has a new owner."""
    if replacing is not None:
        gone = session.execute(delete(Daemon).where(Daemon.name == name, Daemon.host == replacing.host,
                                                    Daemon.pid == replacing.pid, Daemon.seen_at == replacing.seen_at)
                               .execution_options(synchronize_session=False))
        if gone.rowcount != 1:
            raise DaemonRefused(_raced(name))
    row = Daemon(name=name, host=host, pid=pid, started_at=now, seen_at=now, expires_at=now + timedelta(seconds=ttl))
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise DaemonRefused(_raced(name)) from None
    return Holder(name, host, pid, now)


def _raced(name: str) -> str:
    return (f'another process registered as daemon "{name}" at the same moment; stop one of them, or give this '
            f"one another name with --id NAME or [daemon] id (letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit)")


def _registration(holder: Holder):
    return (Daemon.name == holder.name) & (Daemon.host == holder.host) & (Daemon.pid == holder.pid) \
        & (Daemon.started_at == holder.started_at)


def renew_daemon(session: Session, holder: Holder, now: datetime, ttl: float) -> bool:
    """Still alive; False when the row is no longer this process's (deleted, or taken over by
    another process of the same name after it expired)."""
    done = session.execute(update(Daemon).where(_registration(holder))
                           .values(seen_at=now, expires_at=now + timedelta(seconds=ttl))
                           .execution_options(synchronize_session=False))
    return done.rowcount == 1


def name_taken(session: Session, name: str) -> bool:
    return session.scalar(select(Daemon.id).where(Daemon.name == name)) is not None


def unregister(session: Session, holder: Holder) -> None:
    """A clean stop: every lease of ``holder`` and its row go, so the others take over at once;
    nothing, when another process has the name now (the leases are that one's)."""
    gone = session.execute(delete(Daemon).where(_registration(holder))
                           .execution_options(synchronize_session=False))
    if gone.rowcount == 1:
        session.execute(delete(Lease).where(Lease.holder == holder.name).execution_options(synchronize_session=False))


def _idle_ms(seconds: float) -> str:
    """``idle_in_transaction_session_timeout`` for a bound of ``seconds``: the lease tick's whole
    session (``own_pool``), or a fenced transaction from its fence on (``hold``). Never 0, which
    would turn the bound off."""
    return str(max(1, round(seconds * 1000)))


def own_pool(factory: sessionmaker[Session], idle_seconds: float) -> sessionmaker[Session]:
    """The same database through a connection pool of its own, for the daemon's lease tick. The
    sync passes hold the shared pool's connections while they download mail (a commit group's
    transaction spans its messages' fetch), so with more passes running than the pool has
    connections, a tick queued behind them for the pool's timeout would let the leases of a live
    daemon expire. An in-memory SQLite database cannot be opened twice: it keeps the shared pool.

    On PostgreSQL a transaction of this pool may sit idle for ``idle_seconds`` (the leases' time)
    at most: a tick renews every lease of its daemon in one transaction, locking their rows,
    which the other daemons' ticks skip while they are locked. A daemon frozen in the middle of
    a tick (a paused VM) would otherwise keep every mailbox it held from the others for as long
    as it stays frozen; now the server ends the tick's transaction once those leases have run out."""
    engine = factory.kw["bind"]
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return factory
    own = make_engine(engine.url)
    if own.dialect.name == "postgresql":
        @event.listens_for(own, "connect")
        def _bounded_idle(dbapi_conn, _record) -> None:  # pragma: no cover - exercised by the daemon tests
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                            (_idle_ms(idle_seconds),))
            dbapi_conn.commit()
    return session_factory(own)


def close_own_pool(own: sessionmaker[Session], shared: sessionmaker[Session]) -> None:
    if own is not shared:
        own.kw["bind"].dispose()


# -- leases --------------------------------------------------------------------------------------

def mailbox_resources(session: Session) -> dict[int, str]:
    """Mailbox id -> name of every mailbox the daemons sync (those with an IMAP connection)."""
    rows = session.execute(select(Mailbox.id, Mailbox.name, Mailbox.connection).order_by(Mailbox.id))
    return {mailbox_id: name for mailbox_id, name, connection in rows if connection}


def leases(session: Session) -> list[Lease]:
    return list(session.scalars(select(Lease).order_by(Lease.resource)))


def live_holder(session: Session, mailbox_id: int) -> Daemon | None:
    """The daemon working ``mailbox_id`` now: its lease and its registration both unexpired."""
    now = db_now(session)
    return session.scalar(select(Daemon).join(Lease, Lease.holder == Daemon.name).where(
        Lease.mailbox_id == mailbox_id, Lease.expires_at > now, Daemon.expires_at > now))


def renew_held(session: Session, holder: str, now: datetime, ttl: float) -> None:
    session.execute(update(Lease).where(Lease.holder == holder)
                    .values(expires_at=now + timedelta(seconds=ttl)).execution_options(synchronize_session=False))


def take(session: Session, candidates: list[tuple[str, int | None]], count: int, holder: str, now: datetime,
         ttl: float) -> list[str]:
    """Up to ``count`` of ``candidates`` (resource, mailbox id; best first) for ``holder``: leases
    that are free, expired or its own already. Returns those it got; one another daemon takes in
    the same instant is skipped for the next candidate.

    Rows are locked, and new rows inserted, in resource order, so daemons taking at once wait for
    each other (and then see what the first took) but never deadlock. A unique violation on the
    insert is a lost race, undone by its savepoint without ending the transaction."""
    names = [resource for resource, _ in candidates]
    if count <= 0 or not names:
        return []
    takeable = (Lease.holder == holder) | (Lease.expires_at < now)
    # SKIP LOCKED: a row locked by a fenced commit in progress (its holder is alive and writing)
    # is not free; waiting for it would stall this tick, and with it this daemon's renewals.
    free = set(session.scalars(select(Lease.resource).where(Lease.resource.in_(names), takeable)
                               .order_by(Lease.resource).with_for_update(skip_locked=True)))
    existing = set(session.scalars(select(Lease.resource).where(Lease.resource.in_(names))))
    chosen = [(r, mailbox_id) for r, mailbox_id in candidates if r in free or r not in existing][:count]
    renewed = sorted(r for r, _ in chosen if r in free)
    expires = now + timedelta(seconds=ttl)
    if renewed:
        session.execute(update(Lease).where(Lease.resource.in_(renewed), takeable).values(
            acquired_at=case((Lease.holder == holder, Lease.acquired_at),
                             else_=literal(now, Lease.acquired_at.type)),
            holder=holder, expires_at=expires).execution_options(synchronize_session=False))
    taken = set(renewed)
    for resource, mailbox_id in sorted((c for c in chosen if c[0] not in existing), key=lambda c: c[0]):
        try:
            with session.begin_nested():
                session.execute(insert(Lease).values(resource=resource, mailbox_id=mailbox_id, holder=holder,
                                                     acquired_at=now, expires_at=expires))
            taken.add(resource)
        except IntegrityError:
            pass  # another daemon inserted it first (or the mailbox was just deleted)
    return [r for r in names if r in taken]


def release(session: Session, resources: list[str], holder: str) -> None:
    if resources:
        session.execute(delete(Lease).where(Lease.resource.in_(resources), Lease.holder == holder)
                        .execution_options(synchronize_session=False))


def acquired(session: Session, resource: str, holder: Holder) -> datetime:
    """When ``holder`` took ``resource``: the token a pass reads as it starts and hands to ``hold``.
    Raises LeaseLost when this process does not hold it, so a pass that has no lease never starts."""
    since = session.scalar(select(Lease.acquired_at).join(Daemon, Daemon.name == Lease.holder).where(
        Lease.resource == resource, _registration(holder)))
    if since is None:
        raise LeaseLost(f"{resource} is not held by daemon {holder.name!r} (this process's registration)")
    return since


def hold(session: Session, resource: str, holder: Holder, ttl: float, since: datetime | None = None) -> None:
    """The fence: renews ``resource`` if ``holder`` still has it, else raises LeaseLost, so the
    transaction this runs in (a group of records and its position) rolls back.

    Three things are checked. The name holds the lease. The name's registration is still this
    process's: another process may have taken the name over after this one stalled past its
    expiry; on PostgreSQL the row is locked (FOR KEY SHARE) until this transaction ends, so such a
    takeover's DELETE waits instead of slipping in before the commit, while this daemon's own
    renewals (an UPDATE of other columns) do not. And ``since``: the lease is still the one taken
    when the pass began (``acquired``), not one that went to another daemon and came back, whose
    newer work the stale pass would undo.

    On PostgreSQL the lease row stays locked until this transaction ends, and a taker skips a
    locked row (``take``). So from here on the transaction may sit idle for ``ttl`` at most: a
    holder frozen or cut off between its fence and its COMMIT (a paused VM, a lost network) has
    its session ended by the server once the lease it just renewed has run out, instead of
    keeping the mailbox from every other daemon for as long as the stall lasts. Before the fence
    a transaction may wait longer (a commit group downloads its messages); after it only the
    last statements and the COMMIT remain."""
    mine = select(Daemon.id).where(_registration(holder))
    if _postgres(session):
        session.execute(text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
                        {"ms": _idle_ms(ttl)})
        mine = mine.with_for_update(read=True, key_share=True)
    if session.scalar(mine) is None:
        raise LeaseLost(f"daemon {holder.name!r} was taken over by another process (or its registration deleted): "
                        f"{resource} is not this process's any more")
    expires = (func.clock_timestamp() + timedelta(seconds=ttl)) if _postgres(session) \
        else utcnow() + timedelta(seconds=ttl)
    held = update(Lease).where(Lease.resource == resource, Lease.holder == holder.name)
    if since is not None:
        held = held.where(Lease.acquired_at == since)
    done = session.execute(held.values(expires_at=expires).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise LeaseLost(f"{resource} is no longer held by daemon {holder.name!r}"
                        f"{'' if since is None else ' under the lease this pass began with'}: another daemon took it "
                        f"over")
