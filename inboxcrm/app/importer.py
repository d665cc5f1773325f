"""``inboxcrm import``: feed a local file, folder, mbox or Maildir through the intake.

Every message is atomic (``intake.Group``: one savepoint per group, replayed a savepoint per
message when one fails); commits group a few messages, bounded by count, bytes and time, because
one fsync'ed commit per message cost more than parsing it. An interrupted import loses at most the open group and resumes where it
stopped: copies already stored are recognised by mailbox and location and change nothing.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from inboxcrm.app.context import context_for
from inboxcrm.app.intake import Group, Outcome
from inboxcrm.clock import Clock, utcnow
from inboxcrm.core.decide import MailboxInfo
from inboxcrm.errors import NotFound
from inboxcrm.mail.local import iter_messages
from inboxcrm.mail.parse_ahead import parse_ahead
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.store.records import mailbox_info
from inboxcrm.store.team_queries import mailbox_names
from inboxcrm.values import RawMessage

GROUP_MESSAGES = 100
GROUP_BYTES = 32 * 1024 * 1024
GROUP_SECONDS = 1.0


@dataclass
class ImportReport:
    total: int = 0
    counts: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): unreadable, not imported


def resolve_mailbox(session: Session, name: str) -> MailboxInfo:
    info = mailbox_info(session, name)
    if info is None:
        names = ", ".join(mailbox_names(session)) or "none yet"
        raise NotFound(f'unknown mailbox "{name}"; mailboxes are: {names} '
                       f'(add one with "inboxcrm mailbox add")')
    return info


def feed(factory: sessionmaker[Session], config, mailbox: MailboxInfo, messages: Iterable[RawMessage],
         now: Clock = utcnow, progress: Callable[[int], None] | None = None,
         parse_workers: int | None = None, checkpoint: Callable[[Session, RawMessage], None] | None = None,
         stop: threading.Event | None = None,
         on_message: Callable[[RawMessage, Outcome], None] | None = None) -> ImportReport:
    """Run raw messages through the pipeline in commit groups; the importer's, demo's and sync's loop.

    ``parse_workers``: processes parsing ahead (None: one per spare core, 0: parse in place).
    ``checkpoint(session, last)`` runs inside each group's transaction with the group's last
    message, so a source's position commits together with the records (exactly once).
    ``stop``: checked between messages; the open group still commits.
    ``on_message(raw, outcome)`` runs for each message of a group once the group has committed,
    so what it reports (a log line, say) is on record; ``raw.data`` is empty by then."""
    report = ImportReport()
    with factory() as session:
        ctx = context_for(session, config)
    iterator = parse_ahead(messages, parse_workers)
    exhausted = False
    while not exhausted:
        with transaction(factory) as session:
            group = Group(session, mailbox, ctx, config.pipeline.store_raw)
            started, size = time.monotonic(), 0
            while (len(group.outcomes) < GROUP_MESSAGES and size < GROUP_BYTES
                   and time.monotonic() - started < GROUP_SECONDS):
                raw, prepared = (None, None) if stop is not None and stop.is_set() else next(iterator, (None, None))
                if raw is None:
                    exhausted = True
                    break
                group.process(raw, prepared, now())
                size += len(raw.data)
                raw = prepared = None
            # Kept without their bytes: neither the checkpoint nor a log line needs the body.
            committed = group.finish()
            if checkpoint is not None and committed:
                checkpoint(session, committed[-1][0])
        report.total += len(committed)
        report.counts.update(outcome.status for _, outcome in committed)
        if on_message is not None:
            for raw, outcome in committed:
                on_message(raw, outcome)
        if progress and committed:
            progress(len(committed))
    iterator.close()  # after a stop: shuts down the parse workers now, not at garbage collection
    return report


def import_path(factory: sessionmaker[Session], config, mailbox: str, path: Path,
                since: datetime | None = None, progress: Callable[[int], None] | None = None,
                now: Clock = utcnow, parse_workers: int | None = None) -> ImportReport:
    """A file that cannot be read is skipped and named in the report's ``skipped``; the rest imports."""
    with factory() as session:
        info = resolve_mailbox(session, mailbox)
    skipped: list[tuple[str, str]] = []
    messages = iter_messages(Path(path), since, config.sync.max_message_bytes,
                             lambda name, why: skipped.append((name, why)))
    report = feed(factory, config, info, messages, now, progress, parse_workers)
    report.skipped = skipped
    return report
