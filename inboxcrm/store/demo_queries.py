"""What ``inboxcrm demo`` shows that no use case lists: every flag the sample import raised."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inboxcrm.store.models import DealFlag


def all_flags(session: Session) -> list[tuple[int, str, str]]:
    """(deal id, kind, detail) of every flag, in the order they were raised."""
    return [tuple(row) for row in session.execute(select(DealFlag.deal_id, DealFlag.kind, DealFlag.detail)
                                                  .order_by(DealFlag.id))]
