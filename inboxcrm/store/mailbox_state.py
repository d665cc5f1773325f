"""Where each IMAP mailbox's sync stands: its connection, each folder's position, its last outcome.

The sync writes the positions inside the same transactions as the records their messages made
(exactly once), and the outcome of every pass on the mailbox row, so ``status`` can tell the admin
from the database alone. Each function runs in the session it is given and never commits.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from inboxcrm.store.models import FolderPosition, Mailbox

ERROR_CHARS = 2000  # of the last error kept on the mailbox row


def has_commands_mailbox(session: Session) -> bool:
    """Whether a mailbox with role ``commands`` exists: commands by email are on even without a
    command address then."""
    return session.scalar(select(Mailbox.id).where(Mailbox.role == "commands").limit(1)) is not None


def imap_connections(session: Session) -> dict[str, dict]:
    """Name -> IMAP connection settings of every mailbox that has one, by name."""
    rows = session.execute(select(Mailbox.name, Mailbox.connection).order_by(Mailbox.name))
    return {name: connection for name, connection in rows if connection}


def connection_of(session: Session, name: str) -> dict | None:
    return session.scalar(select(Mailbox.connection).where(Mailbox.name == name))


def folder_positions(session: Session, mailbox_id: int) -> dict[str, FolderPosition]:
    """Folder name -> position, for the folders of one mailbox synced before."""
    rows = session.scalars(select(FolderPosition).where(FolderPosition.mailbox_id == mailbox_id))
    return {row.folder: row for row in rows}


def folder_position(session: Session, mailbox_id: int, folder: str) -> FolderPosition:
    """The folder's position row to change, new (at UID 0) if the folder was never synced."""
    row = session.scalar(select(FolderPosition).where(FolderPosition.mailbox_id == mailbox_id,
                                                      FolderPosition.folder == folder))
    if row is None:
        row = FolderPosition(mailbox_id=mailbox_id, folder=folder, last_uid=0)
        session.add(row)
    return row


def record_success(session: Session, mailbox_id: int, at: datetime) -> None:
    row = session.get(Mailbox, mailbox_id)
    row.last_success_at, row.failures, row.failing_since = at, 0, None


def record_failure(session: Session, mailbox_id: int, error: str, at: datetime) -> None:
    """One more failed pass in a row; ``failing_since`` keeps the first one's time."""
    row = session.get(Mailbox, mailbox_id)
    row.last_error_at, row.last_error = at, error[:ERROR_CHARS]
    row.failures = (row.failures or 0) + 1
    row.failing_since = row.failing_since or at


# -- what ``status`` reads --------------------------------------------------------------------

def mailboxes(session: Session, mailbox_id: int | None = None) -> list[Mailbox]:
    """Every mailbox by name, or the one with ``mailbox_id``."""
    query = select(Mailbox).order_by(Mailbox.name)
    return list(session.scalars(query if mailbox_id is None else query.where(Mailbox.id == mailbox_id)))


def all_folder_positions(session: Session) -> list[FolderPosition]:
    """Every folder's position, by mailbox and folder name."""
    return list(session.scalars(select(FolderPosition).order_by(FolderPosition.mailbox_id, FolderPosition.folder)))

