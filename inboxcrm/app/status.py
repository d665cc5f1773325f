"""What ``inboxcrm status`` shows: each mailbox's sync health, read from the database alone.

The daemon and ``poll`` write their outcome on the mailbox row and the folder positions, so the
admin can ask from any shell, while the daemon runs or after it died, without talking to it or
to the mail server. A mailbox whose last pass failed is marked FAILING in capitals: a mailbox
that silently stopped syncing is the one failure a CRM fed by mail must not hide. For the same
reason ``status`` exits with ``FAILING_EXIT`` then, so a monitor needs no parsing. It also says
what a command email must prove, since commands by email change deals, and, with several daemons
on one database, which daemon works each mailbox: judged by the database's clock, as the daemons
judge it, so a mailbox shown without a live daemon is one that no daemon works.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from inboxcrm.app.team import find_mailbox, imap_address
from inboxcrm.config import Config
from inboxcrm.core.views import plural
from inboxcrm.store import lease_queries, mailbox_state, outbox_queries
from inboxcrm.store.db import Session
from inboxcrm.store.mailbox_state import has_commands_mailbox
from inboxcrm.store.models import FolderPosition

FAILING_EXIT = 1  # as ``poll``'s: a mailbox failed; 2 stays "status itself could not run"


@dataclass(frozen=True)
class FolderStatus:
    folder: str
    role: str | None  # inbox | sent | all | None (named by the admin)
    uidvalidity: int | None
    last_uid: int
    backlog: int | None  # messages on the server beyond the position, as last seen; None: unknown
    updated_at: datetime | None


@dataclass(frozen=True)
class MailboxDaemon:
    """Who works a mailbox: its lease."""

    holder: str  # the daemon's name (``run --id``)
    since: datetime  # when this daemon took the mailbox
    expires_at: datetime
    alive: bool  # the lease is current; past it, no daemon works the mailbox


@dataclass(frozen=True)
class DaemonStatus:
    name: str
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime  # its last renewal
    alive: bool  # renewed in time; a daemon gone without stopping (kill -9, a cut network) is not


@dataclass(frozen=True)
class MailboxStatus:
    name: str
    role: str
    imap: str | None  # user@host:port, or None for a mailbox fed by import only
    folders: tuple[FolderStatus, ...]
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    failures: int  # consecutive failed passes
    failing_since: datetime | None
    failing: bool  # the last pass failed: shown loudly until a pass succeeds
    daemon: MailboxDaemon | None = None  # None: no daemon has ever held it, or its last one stopped


@dataclass(frozen=True)
class CommandsStatus:
    enabled: bool  # a command address or a commands mailbox exists
    proof: str  # [commands] proof
    rule: str  # what a command email must prove (CommandsConfig.describe), or why they are off
    warning: bool  # "address-only": a forged From changes deals


@dataclass(frozen=True)
class Status:
    mailboxes: tuple[MailboxStatus, ...]
    outbox: dict[str, int]  # status -> rows; empty when nothing was ever queued
    commands: CommandsStatus
    daemons: tuple[DaemonStatus, ...] = ()

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(box.name for box in self.mailboxes if box.failing)


def commands_status(config: Config, has_commands_mailbox: bool) -> CommandsStatus:
    proof = config.commands.proof
    if not (config.commands.address or has_commands_mailbox):
        return CommandsStatus(False, proof, "off (no [commands] address and no commands mailbox)", False)
    return CommandsStatus(True, proof, config.commands.describe(), proof == "address-only")


def backlog(position: FolderPosition) -> int | None:
    """UIDs are ascending, so UIDNEXT - 1 - last UID bounds what is still to read (deleted UIDs
    make it an upper bound); before the first UIDNEXT is seen, the folder's message count."""
    if position.uidnext is not None:
        return max(0, position.uidnext - 1 - position.last_uid)
    return position.message_count


def read_status(session: Session, config: Config, name: str | None = None) -> Status:
    boxes = mailbox_state.mailboxes(session, None if name is None else find_mailbox(session, name).id)
    positions: dict[int, list[FolderStatus]] = {}
    for p in mailbox_state.all_folder_positions(session):
        positions.setdefault(p.mailbox_id, []).append(
            FolderStatus(p.folder, p.role, p.uidvalidity, p.last_uid, backlog(p), p.updated_at))
    outbox = outbox_queries.outbox_counts(session)
    now = lease_queries.db_now(session)
    held = {lease.mailbox_id: MailboxDaemon(lease.holder, lease.acquired_at, lease.expires_at, lease.expires_at > now)
            for lease in lease_queries.leases(session) if lease.mailbox_id is not None}
    daemons = tuple(DaemonStatus(d.name, d.host, d.pid, d.started_at, d.seen_at, d.expires_at > now)
                    for d in lease_queries.daemons(session))
    return Status(tuple(MailboxStatus(m.name, m.role, imap_address(m.connection), tuple(positions.get(m.id, ())),
                                      m.last_success_at, m.last_error_at, m.last_error, m.failures or 0,
                                      m.failing_since, bool(m.failures), held.get(m.id)) for m in boxes), outbox,
                  commands_status(config, has_commands_mailbox(session)), daemons)


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{moment:%Y-%m-%d %H:%M} UTC ({seconds // size} {unit} ago)"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({seconds} s ago)"


def _worked_by(daemon: MailboxDaemon | None, now: datetime) -> str:
    if daemon is None or not daemon.alive:
        return "no live daemon" + (f" (the last, {daemon.holder}, stopped renewing its lease)" if daemon else "")
    today = daemon.since.date() == now.astimezone(daemon.since.tzinfo).date()
    since = f"{daemon.since:%H:%M}" if today else f"{daemon.since:%Y-%m-%d %H:%M}"
    return f"worked by {daemon.holder} since {since} UTC"


def _daemon_line(daemon: DaemonStatus, now: datetime) -> str:
    return (f"{daemon.name} on {daemon.host}, pid {daemon.pid}: started {_when(daemon.started_at, now)}, "
            f"last seen {_when(daemon.seen_at, now)}, {'alive' if daemon.alive else 'gone'}")


def render(status: Status, now: datetime) -> str:
    """The text ``status`` prints: a block per mailbox, its folders indented under it."""
    lines: list[str] = []
    for box in status.mailboxes:
        mark = f"  FAILING ({plural(box.failures, 'failed pass', 'failed passes')} in a row)" if box.failing else ""
        lines.append(f"{box.name} ({box.role}) {box.imap or 'import only (no IMAP connection)'}{mark}")
        if box.imap is None:
            continue
        lines.append(f"  last success: {_when(box.last_success_at, now)}")
        if box.last_error_at is not None:
            lines.append(f"  last error:   {_when(box.last_error_at, now)}: {box.last_error}")
        if box.failing_since is not None and box.failing:
            lines.append(f"  failing since {_when(box.failing_since, now)}")
        lines.append(f"  {_worked_by(box.daemon, now)}")
        if not box.folders:
            lines.append("  no folder synced yet")
        for f in box.folders:
            left = "unknown" if f.backlog is None else str(f.backlog)
            lines.append(f"  {f.folder}" + (f" [{f.role}]" if f.role else "")
                         + f": uidvalidity {f.uidvalidity if f.uidvalidity is not None else '-'}, "
                           f"last uid {f.last_uid}, backlog {left}")
    if not status.mailboxes:
        lines.append('no mailboxes yet; add one with "inboxcrm mailbox add NAME --role capture --host HOST ..."')
    if status.daemons:
        lines += ["daemons:", *(f"  {_daemon_line(d, now)}" for d in status.daemons)]
    else:
        lines.append('daemons: none running (start one with "inboxcrm run")')
    if status.outbox:
        lines.append("outbox: " + ", ".join(f"{n} {state}" for state, n in status.outbox.items()))
    lines.append(("WARNING: " if status.commands.warning else "") + f"commands by email: {status.commands.rule}")
    if status.failing:
        lines.append(f"failing: {', '.join(status.failing)}")
    return "\n".join(lines)
