"""What the intake asks of the records outside its per-message hot path: re-runs, review, explain.

Each function runs in the session it is given and never commits: the caller's command owns the
transaction.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from inboxcrm.store.models import Mailbox, RejectedSender


def reject_sender(session: Session, address: str, at: datetime, actor: str) -> None:
    """Later mail from ``address`` is ignored; rejecting a sender twice keeps the first rejection."""
    if session.scalar(select(RejectedSender.id).where(RejectedSender.address == address)) is None:
        session.add(RejectedSender(address=address, at=at, actor=actor))


def first_mailbox_name(session: Session) -> str | None:
    """The mailbox added first: where ``rule explain`` imagines a message nobody stored arriving."""
    return session.scalar(select(Mailbox.name).order_by(Mailbox.id).limit(1))
