"""The daemons and leases tables' statements: who is alive, who holds what; never commits.

A lease changes hands only through a conditional statement (``take``: an UPDATE that matches
only a lease that is ours or expired, or an INSERT that the unique resource lets one daemon win),
so two daemons can never both hold one, whatever their timing. Times come from the database's
clock on PostgreSQL (``clock_timestamp()``), so machines whose clocks disagree still agree on who
holds what; SQLite serves one machine, whose clock is Python's.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, insert, literal, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inboxcrm.clock import utcnow
from inboxcrm.errors import LeaseLost
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


def register(session: Session, name: str, host: str, pid: int, now: datetime, ttl: float) -> None:
    """This process as daemon ``name``: a new row, or the old one of that name taken over (the
    caller checked that it may, with ``core.leases.refusal``)."""
    row = session.scalar(select(Daemon).where(Daemon.name == name))
    if row is None:
        row = Daemon(name=name)
        session.add(row)
    row.host, row.pid, row.started_at, row.seen_at = host, pid, now, now
    row.expires_at = now + timedelta(seconds=ttl)
    session.flush()  # a race for the same name fails here, on the unique name


def renew_daemon(session: Session, name: str, host: str, pid: int, now: datetime, ttl: float) -> bool:
    """Still alive; False when the row is no longer this process's (deleted, or taken over by
    another process of the same name after it expired)."""
    done = session.execute(update(Daemon).where(Daemon.name == name, Daemon.host == host, Daemon.pid == pid)
                           .values(seen_at=now, expires_at=now + timedelta(seconds=ttl))
                           .execution_options(synchronize_session=False))
    return done.rowcount == 1


def name_taken(session: Session, name: str) -> bool:
    return session.scalar(select(Daemon.id).where(Daemon.name == name)) is not None


def unregister(session: Session, name: str, host: str, pid: int) -> None:
    """A clean stop: every lease of ``name`` and its row go, so the others take over at once."""
    session.execute(delete(Lease).where(Lease.holder == name).execution_options(synchronize_session=False))
    session.execute(delete(Daemon).where(Daemon.name == name, Daemon.host == host, Daemon.pid == pid)
                    .execution_options(synchronize_session=False))


# -- leases --------------------------------------------------------------------------------------

def mailbox_resources(session: Session) -> dict[int, str]:
    """Mailbox id -> name of every mailbox the daemons sync (those with an IMAP connection)."""
    rows = session.execute(select(Mailbox.id, Mailbox.name, Mailbox.connection).order_by(Mailbox.id))
    return {mailbox_id: name for mailbox_id, name, connection in rows if connection}


def leases(session: Session) -> list[Lease]:
    return list(session.scalars(select(Lease).order_by(Lease.resource)))


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
    free = set(session.scalars(select(Lease.resource).where(Lease.resource.in_(names), takeable)
                               .order_by(Lease.resource).with_for_update()))
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


def hold(session: Session, resource: str, holder: str, ttl: float) -> None:
    """The fence: renews ``resource`` if ``holder`` still has it, else raises LeaseLost, so the
    transaction this runs in (a group of records and its position) rolls back. One statement:
    on PostgreSQL the expiry is computed by the server."""
    expires = (func.clock_timestamp() + timedelta(seconds=ttl)) if _postgres(session) \
        else utcnow() + timedelta(seconds=ttl)
    done = session.execute(update(Lease).where(Lease.resource == resource, Lease.holder == holder)
                           .values(expires_at=expires).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise LeaseLost(f"{resource} is no longer held by daemon {holder!r}: another daemon took it over")
