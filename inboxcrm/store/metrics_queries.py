"""What a metrics scrape and a health check read: counts and the small tables, nothing per message.

Every query here is bounded whatever the size of the database: counts by ``messages.status``
and by ``outbox.status`` (both indexed), and the ``mailboxes`` and ``folder_positions`` tables,
a row per mailbox or folder. Each function runs in the session it is given and never writes.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inboxcrm.store.models import FolderPosition, Mailbox, Message, OutboxMessage


class MailboxRow(NamedTuple):
    name: str
    role: str
    has_connection: bool
    last_success_at: datetime | None
    failures: int
    failing_since: datetime | None


class FolderRow(NamedTuple):
    mailbox: str
    folder: str
    last_uid: int
    uidnext: int | None
    message_count: int | None


def message_counts(session: Session) -> dict[str, int]:
    """Message status -> rows (processed, noise, quarantined, refused, ...), on the status index."""
    return dict(session.execute(select(Message.status, func.count()).group_by(Message.status)).all())


def outbox_counts(session: Session) -> dict[tuple[str, str], int]:
    """(kind, status) -> outbox rows."""
    rows = session.execute(select(OutboxMessage.kind, OutboxMessage.status, func.count())
                           .group_by(OutboxMessage.kind, OutboxMessage.status)).all()
    return {(kind, status): n for kind, status, n in rows}


def mailbox_rows(session: Session) -> list[MailboxRow]:
    rows = session.execute(select(Mailbox.name, Mailbox.role, Mailbox.connection, Mailbox.last_success_at,
                                  Mailbox.failures, Mailbox.failing_since).order_by(Mailbox.name))
    return [MailboxRow(name, role, bool(connection), success, failures or 0, since)
            for name, role, connection, success, failures, since in rows]


def folder_rows(session: Session) -> list[FolderRow]:
    rows = session.execute(select(Mailbox.name, FolderPosition.folder, FolderPosition.last_uid,
                                  FolderPosition.uidnext, FolderPosition.message_count)
                           .join(Mailbox, Mailbox.id == FolderPosition.mailbox_id)
                           .order_by(Mailbox.name, FolderPosition.folder))
    return [FolderRow(*row) for row in rows]


def schema_problem(session: Session) -> str | None:
    """Why the database is not this version's (no tables, another revision), None when it is."""
    from inboxcrm.store.db import current_revision, head_revision

    current, head = current_revision(session.get_bind()), head_revision()
    if current is None:
        return 'no inboxcrm tables; run "inboxcrm init"'
    if current != head:
        return f'schema revision {current}, this inboxcrm needs {head}; run "inboxcrm db upgrade"'
    return None
