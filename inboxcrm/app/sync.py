"""One sync pass over an IMAP mailbox: new messages in each folder through the pipeline, exactly once.

The position in each folder (UIDVALIDITY + last UID) is written in the same transaction as the
records its messages produced (``importer.feed``'s checkpoint), so a pass killed at any point
resumes where its last commit stopped: nothing lost, nothing twice. Never the \\Seen flag: the
mailbox is read with EXAMINE and BODY.PEEK[] and stays exactly as its people left it. Memory
stays bounded whatever the mail: fetches are sized by RFC822.SIZE, and a message over
``sync.max_message_bytes`` is recorded from its headers (see ``mail.imap``).

An OAuth2 grant that the provider revoked (or let expire) is not a passing network fault: no
retry can mend it, only the admin signing in again. It is recorded as such (``revoked_grant_text``:
what ``status`` and the daemon show) and, in the same transaction, an email to the admin is queued
(``alerts.queue_grant_alert``, at most one a day per mailbox), whether ``poll`` or the daemon met it.
A token endpoint that cannot be reached is a connection error like any other.

A folder is fetched only when its STATUS says so (a new UIDNEXT or UIDVALIDITY), so polling an
unchanged mailbox costs a login and one STATUS per folder, whatever its size. A first pass, and
a pass after the server renumbered a folder (new UIDVALIDITY), reads the backfill window only
(``since`` or ``sync.since_days``); copies already stored are recognised by Message-ID.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from inboxcrm.app.importer import feed, resolve_mailbox
from inboxcrm.clock import Clock, utcnow
from inboxcrm.core.leases import Holder, mailbox_resource
from inboxcrm.errors import Invalid, LeaseLost
from inboxcrm.logs import event
from inboxcrm.mail import imap
from inboxcrm.mail.imap import FolderInfo, ImapError, ImapMessage, ImapSettings
from inboxcrm.mail.oauth import GrantRevoked, OAuthError
from inboxcrm.store import mailbox_state
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.store.lease_queries import acquired, hold, live_holder
from inboxcrm.store.mailbox_state import folder_position
from inboxcrm.store.models import FolderPosition
from inboxcrm.store.records import stored_locations

log = logging.getLogger("inboxcrm.app.sync")
BULK = 200  # messages in one folder's pass from which parsing ahead in a worker process pays off


@dataclass
class FolderReport:
    folder: str
    role: str
    fetched: int = 0
    counts: Counter = field(default_factory=Counter)
    resynced: bool = False  # the server renumbered the folder: the backfill window was read again


@dataclass
class SyncReport:
    mailbox: str
    folders: list[FolderReport] = field(default_factory=list)
    total: int = 0


def imap_mailboxes(session: Session) -> list[str]:
    """Names of the mailboxes the daemon syncs (those with a connection), by name."""
    return list(mailbox_state.imap_connections(session))


def daemon_working(session: Session, name: str) -> str | None:
    """The live daemon that works mailbox ``name`` now, described, or None. ``poll`` leaves such
    a mailbox to it: a pass of its own beside the daemon's runs under no lease, so its commits
    could set the folder's position back behind the daemon's (which then reads those messages
    again) and make both wait on each other's messages."""
    holder = live_holder(session, resolve_mailbox(session, name).id)
    return None if holder is None else f'daemon "{holder.name}" (host {holder.host}, pid {holder.pid})'


def load_settings(session: Session, name: str) -> ImapSettings:
    resolve_mailbox(session, name)  # NotFound listing the mailboxes
    connection = mailbox_state.connection_of(session, name)
    if not connection:
        raise Invalid(f'mailbox "{name}" has no IMAP connection, so only "inboxcrm import" feeds it; '
                      f"mailboxes with one are: {', '.join(imap_mailboxes(session)) or 'none yet'}")
    return ImapSettings.from_json(connection)


def check_mailbox(settings: ImapSettings, environ: Mapping[str, str] = os.environ,
                  name: str = "") -> list[FolderInfo]:
    """For ``mailbox test``: connect, log in, find the folders; ImapError names the failing stage
    (and a revoked grant the ``mailbox authorize NAME`` to run)."""
    client = imap.connect(settings, environ, what=f"mailbox {name}" if name else "")
    try:
        return imap.resolve_folders(client, settings)
    finally:
        imap.close(client)


def role_name(role: str) -> str | None:
    """FolderPosition.role: "inbox", "sent", "all"...; None for a folder chosen by name only."""
    return role.lstrip("\\").lower() or None


def backfill_since(settings: ImapSettings, config, now: datetime) -> date:
    return settings.since or (now - timedelta(days=config.sync.since_days)).date()


def revoked_grant_text(name: str) -> str:
    """What ``status`` and the daemon's log say about a mailbox whose grant is gone: the one fix."""
    return f"OAuth grant revoked or expired: run `inboxcrm mailbox authorize {name}`"


def unchanged(position: FolderPosition | None, info: FolderInfo) -> bool:
    """Nothing to fetch: same UIDVALIDITY and no UID handed out since the last completed pass."""
    return (position is not None and position.uidnext is not None and position.uidvalidity == info.uidvalidity
            and info.uidnext <= position.uidnext)


def sync_mailbox(factory: sessionmaker[Session], config, name: str, now: Clock = utcnow,
                 progress: Callable[[int], None] | None = None, stop: threading.Event | None = None,
                 environ: Mapping[str, str] = os.environ, parse_workers: int | None = -1,
                 holder: Holder | None = None, lease_ttl: float = 0.0) -> SyncReport:
    """One pass over the mailbox's folders. Records success or failure on the mailbox row;
    on failure re-raises the ImapError after recording it.

    ``parse_workers``: as for ``importer.feed``; -1 (the default) chooses per folder: parse
    workers for a backlog of at least ``BULK`` messages (a first backfill), none for the few
    messages of a routine pass, where starting a process would cost more than it saves.

    ``holder``: the daemon process whose lease on the mailbox this pass works under. Every
    transaction that writes to the mailbox's rows renews the lease for ``lease_ttl`` seconds only
    while that process still holds the very lease the pass began with, else raises LeaseLost and
    rolls back: a daemon that stalled past its lease (and lost the mailbox to another, perhaps to
    get it back later) cannot record a message the other records too, nor move a position back.
    None (``poll``): no lease, as with one process."""
    with factory() as session:
        info = resolve_mailbox(session, name)
        settings = load_settings(session, name)
        since = acquired(session, mailbox_resource(info.id), holder) if holder is not None else None
    report = SyncReport(name)

    def fence(session: Session) -> None:
        if holder is not None:
            hold(session, mailbox_resource(info.id), holder, lease_ttl, since)

    try:
        client = imap.connect(settings, environ, what=f"mailbox {name}")
        try:
            folders = imap.resolve_folders(client, settings)
            with factory() as session:
                known = mailbox_state.folder_positions(session, info.id)
            for folder in folders:
                if stop is not None and stop.is_set():
                    break
                position = known.get(folder.name)
                if unchanged(position, folder):
                    _note_unchanged(factory, info.id, folder, now(), fence)
                    report.folders.append(FolderReport(folder.name, folder.role))
                    continue
                report.folders.append(_sync_folder(factory, config, client, info, settings, folder, position,
                                                   now, progress, stop, parse_workers, fence))
        finally:
            imap.close(client)
    except GrantRevoked as exc:
        _record_revoked_grant(factory, config, info.id, name, exc, now(), fence)
        event(log, logging.DEBUG, "sync-failed", mailbox=name, stage=exc.stage, error=str(exc))
        raise
    except (ImapError, OAuthError) as exc:  # OAuthError: TokenEndpointUnavailable, a refused client
        _record_failure(factory, info.id, str(exc), now(), fence)
        event(log, logging.DEBUG, "sync-failed", mailbox=name, stage=exc.stage, error=str(exc))
        raise
    except LeaseLost:
        raise  # not a failure of the mailbox: another daemon works it now
    except Exception as exc:
        # Not the server's fault (the database, a bug): still shown in `status`, then raised. When
        # the fence refuses even that, the mailbox is another daemon's now and what failed was this
        # stale pass (the server ends a transaction left idle past its fence, say): lost, not failed.
        try:
            _record_failure(factory, info.id, f"internal: {type(exc).__name__}: {exc}", now(), fence)
        except LeaseLost as lost:
            raise LeaseLost(f"{lost} (the pass had stopped on {type(exc).__name__}: {exc})") from exc
        except Exception:  # noqa: BLE001 - the database itself may be what failed
            log.debug("could not record the failure", exc_info=True)
        raise
    report.total = sum(f.fetched for f in report.folders)
    _record_success(factory, info.id, now(), fence)
    return report


def _sync_folder(factory, config, client, info, settings: ImapSettings, status: FolderInfo,
                 position: FolderPosition | None, now: Clock, progress, stop, parse_workers,
                 fence: Callable[[Session], None]) -> FolderReport:
    folder = imap.examine(client, status.name)
    folder = FolderInfo(status.name, status.role, folder.messages, folder.uidvalidity, folder.uidnext,
                        folder.highestmodseq)
    report = FolderReport(folder.name, folder.role)
    backfill = position is None or position.uidnext is None or position.uidvalidity != folder.uidvalidity
    report.resynced = position is not None and position.uidvalidity not in (None, folder.uidvalidity)
    after = 0 if position is None or position.uidvalidity != folder.uidvalidity else position.last_uid
    if report.resynced:
        event(log, logging.WARNING, "uidvalidity-changed", mailbox=info.name, folder=folder.name,
              old=position.uidvalidity, new=folder.uidvalidity,
              action="reading the backfill window again; stored messages are recognised")
        with transaction(factory) as session:
            fence(session)
            row = folder_position(session, info.id, folder.name)
            row.uidvalidity, row.last_uid, row.uidnext, row.highest_modseq = folder.uidvalidity, 0, None, None
    since = backfill_since(settings, config, now()) if backfill else None
    uids = imap.new_uids(client, after, since)
    event(log, logging.INFO, "fetch", mailbox=info.name, folder=folder.name, uids=len(uids), after_uid=after,
          since=since)

    def checkpoint(session: Session, last: ImapMessage) -> None:
        fence(session)
        row = folder_position(session, info.id, folder.name)
        row.uidvalidity, row.last_uid, row.role = folder.uidvalidity, last.uid, role_name(folder.role)
        row.updated_at = now()
        event(log, logging.DEBUG, "committed", mailbox=info.name, folder=folder.name, uid=last.uid)

    def logged(raw: ImapMessage, outcome) -> None:
        event(log, logging.INFO, "message", mailbox=info.name, folder=folder.name, uid=raw.uid,
              status=outcome.status, reason=outcome.reason, deal=outcome.deal_ref, id=outcome.message_pk)

    if parse_workers == -1:
        parse_workers = None if len(uids) >= BULK else 0
    messages = imap.fetch(client, folder, uids, config.sync.max_message_bytes, config.sync.fetch_batch_bytes,
                          already_stored=_stored_copies(factory, info.id),
                          max_attachment_bytes=settings.max_attachment_bytes)
    result = feed(factory, config, info, messages, now, progress, parse_workers,
                  checkpoint=checkpoint, stop=stop, on_message=logged)
    report.fetched, report.counts = result.total, result.counts
    if stop is None or not stop.is_set():
        # Every UID below UIDNEXT was read or is gone for good: the next pass starts after them.
        with transaction(factory) as session:
            fence(session)
            row = folder_position(session, info.id, folder.name)
            row.uidvalidity, row.role = folder.uidvalidity, role_name(folder.role)
            row.last_uid = max(row.last_uid or 0, folder.uidnext - 1)
            row.uidnext, row.message_count = folder.uidnext, folder.messages
            row.highest_modseq, row.updated_at = folder.highestmodseq, now()
    return report


def _stored_copies(factory, mailbox_id: int) -> Callable[[list[str]], set[str]]:
    """What ``imap.fetch`` asks a Gmail server's messages before it reads bodies: which copies the
    mailbox holds already. One message under several labels (INBOX, Sent, a custom label) is one
    copy there, so it is downloaded once (see ``mail.gmail``)."""
    def ask(locations: list[str]) -> set[str]:
        with factory() as session:
            return stored_locations(session, mailbox_id, locations)
    return ask


def _note_unchanged(factory, mailbox_id: int, folder: FolderInfo, at: datetime,
                    fence: Callable[[Session], None]) -> None:
    """A folder with nothing new: its count and MODSEQ as seen now, and when we looked."""
    with transaction(factory) as session:
        fence(session)
        row = folder_position(session, mailbox_id, folder.name)
        row.message_count, row.highest_modseq, row.updated_at = folder.messages, folder.highestmodseq, at


def _record_success(factory, mailbox_id: int, at: datetime, fence: Callable[[Session], None]) -> None:
    """``fence``: a stale daemon's pass (another works the mailbox now) must not write its
    success or failure over the live one's, which ``status`` shows."""
    with transaction(factory) as session:
        fence(session)
        mailbox_state.record_success(session, mailbox_id, at)


def _record_failure(factory, mailbox_id: int, error: str, at: datetime, fence: Callable[[Session], None]) -> None:
    with transaction(factory) as session:
        fence(session)
        mailbox_state.record_failure(session, mailbox_id, error, at)


def _record_revoked_grant(factory, config, mailbox_id: int, name: str, exc: GrantRevoked, at: datetime,
                          fence: Callable[[Session], None]) -> None:
    """On record for ``status`` first, then the admin's email: an email that cannot be queued (the
    database, a template) is logged and never hides the revoked grant. The alert is keyed per day,
    so the next failed pass queues it if this one could not."""
    from inboxcrm.app.alerts import queue_grant_alert

    _record_failure(factory, mailbox_id, f"{revoked_grant_text(name)} ({exc.detail})", at, fence)
    try:
        with transaction(factory) as session:
            queue_grant_alert(session, config, at, name, str(exc))
    except Exception as alert_failed:  # noqa: BLE001 - the alert is the extra; the failure is on record
        event(log, logging.ERROR, "grant-alert-failed", mailbox=name,
              reason=f"{type(alert_failed).__name__}: {alert_failed}")
