"""What ``contact forget``, the retention sweep and the intake's forgotten-sender check ask of the
database, by name. Writes what it is told; which rows name the person is decided in core.forget.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from inboxcrm.store.models import (
    Base,
    Company,
    Contact,
    ContactAddress,
    Deal,
    DealFlag,
    ForgottenAddress,
    Message,
    MessageCopy,
    MessageRaw,
    Note,
    OutboxMessage,
    RejectedSender,
    Rep,
)

BATCH = 500  # rows read per round trip when every row of a table is looked at


# -- the person ----------------------------------------------------------------------------

def contact_by_address(session: Session, address: str) -> Contact | None:
    return session.scalar(select(Contact).join(ContactAddress).where(ContactAddress.address == address))


def other_people_names(session: Session, contact_id: int | None) -> list[str]:
    """Names of every other contact and every rep: words they share with the person are no terms."""
    contacts = select(Contact.name).where(Contact.id != contact_id) if contact_id else select(Contact.name)
    return [*session.scalars(contacts), *session.scalars(select(Rep.name))]


def deals_of(session: Session, contact_id: int | None) -> list[Deal]:
    if contact_id is None:
        return []
    return list(session.scalars(select(Deal).where(Deal.contact_id == contact_id).order_by(Deal.id)))


def messages_of(session: Session, contact_id: int | None, deal_ids: Sequence[int],
                addresses: Sequence[str]) -> list[Message]:
    """Their mail: on their contact or deals, or sent from one of their addresses (held, ignored)."""
    where = [Message.from_address.in_(list(addresses))]
    if contact_id is not None:
        where.append(Message.contact_id == contact_id)
    if deal_ids:
        where.append(Message.deal_id.in_(list(deal_ids)))
    return list(session.scalars(select(Message).where(or_(*where)).order_by(Message.id)))


def copies_of(session: Session, message_ids: Sequence[int]) -> list[MessageCopy]:
    if not message_ids:
        return []
    return list(session.scalars(select(MessageCopy).where(MessageCopy.message_id.in_(list(message_ids)))))


def drop_raw(session: Session, message_ids: Sequence[int]) -> int:
    count = 0
    for start in range(0, len(message_ids), BATCH):
        chunk = list(message_ids[start:start + BATCH])
        count += session.execute(delete(MessageRaw).where(MessageRaw.message_id.in_(chunk))).rowcount or 0
    return count


def raw_batches(session: Session) -> Iterator[list[tuple[int, bytes]]]:
    """Every stored raw message, in batches by primary key: a forget looks at all of them once."""
    after = 0
    while True:
        rows = session.execute(select(MessageRaw.message_id, MessageRaw.data).where(MessageRaw.message_id > after)
                               .order_by(MessageRaw.message_id).limit(BATCH)).all()
        if not rows:
            return
        yield [(pk, bytes(data)) for pk, data in rows]
        after = rows[-1][0]


def delete_addresses(session: Session, contact_id: int) -> int:
    return session.execute(delete(ContactAddress).where(ContactAddress.contact_id == contact_id)).rowcount or 0


def delete_rejected(session: Session, addresses: Sequence[str]) -> int:
    return session.execute(delete(RejectedSender).where(RejectedSender.address.in_(list(addresses)))).rowcount or 0


def notes_on(session: Session, deal_ids: Sequence[int]) -> list[Note]:
    return list(session.scalars(select(Note).where(Note.deal_id.in_(list(deal_ids))))) if deal_ids else []


def all_flags(session: Session) -> list[DealFlag]:
    return list(session.scalars(select(DealFlag)))


def others_at_company(session: Session, company_id: int, contact_id: int | None) -> int:
    return session.scalar(select(func.count(Contact.id)).where(Contact.company_id == company_id,
                                                               Contact.id != contact_id)) or 0


def erase_company(session: Session, company: Company) -> None:
    """Its deals keep their figures without it."""
    session.execute(update(Deal).where(Deal.company_id == company.id).values(company_id=None))
    session.execute(update(Contact).where(Contact.company_id == company.id).values(company_id=None))
    session.delete(company)


def remember(session: Session, address_hash: str, then: str, at: datetime) -> None:
    row = session.scalar(select(ForgottenAddress).where(ForgottenAddress.address_hash == address_hash))
    if row is None:
        session.add(ForgottenAddress(address_hash=address_hash, then=then, at=at))
    else:
        row.then, row.at = then, at


def forgotten_hashes(session: Session) -> dict[str, str]:
    """Hash -> "ignore" | "new-lead", for a pass's Context; few rows."""
    return dict(session.execute(select(ForgottenAddress.address_hash, ForgottenAddress.then)).all())


def outbox_rows(session: Session) -> Iterator[OutboxMessage]:
    return session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).yield_per(BATCH)


# -- every row of a table, for the redaction pass -----------------------------------------

def table_rows(session: Session, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """(id, *columns) of every row, in batches by id, so a large audit log is never held whole."""
    t = Base.metadata.tables[table]
    after = 0
    while True:
        rows = session.execute(select(t.c.id, *(t.c[c] for c in columns)).where(t.c.id > after)
                               .order_by(t.c.id).limit(BATCH)).all()
        if not rows:
            return
        yield from (tuple(r) for r in rows)
        after = rows[-1][0]


def update_row(session: Session, table: str, pk: int, values: dict[str, Any]) -> None:
    t = Base.metadata.tables[table]
    session.execute(update(t).where(t.c.id == pk).values(**values))


def delete_row(session: Session, table: str, pk: int) -> None:
    t = Base.metadata.tables[table]
    session.execute(delete(t).where(t.c.id == pk))


# -- the intake: mail from a forgotten address ---------------------------------------------

def message_with_id(conn: Connection, message_id: str) -> int | None:
    return conn.scalar(select(Message.id).where(Message.message_id == message_id))


def drop_message(conn: Connection, pk: int) -> None:
    """A message just stored that was erased before: its raw bytes and copy go with it."""
    conn.execute(delete(MessageRaw.__table__).where(MessageRaw.message_id == pk))
    conn.execute(delete(MessageCopy.__table__).where(MessageCopy.message_id == pk))
    conn.execute(delete(Message.__table__).where(Message.id == pk))


def keep_only_the_fact(conn: Connection, pk: int, values: dict[str, Any], locations: dict[int, str]) -> None:
    """The message row keeps what says it was ignored; its bytes go, its copies keep hashed locations."""
    conn.execute(delete(MessageRaw.__table__).where(MessageRaw.message_id == pk))
    conn.execute(update(Message.__table__).where(Message.id == pk).values(**values))
    for copy_id, location in locations.items():
        conn.execute(update(MessageCopy.__table__).where(MessageCopy.id == copy_id)
                     .values(location=location, gmail_labels=None))


def copy_locations(conn: Connection, pk: int) -> dict[int, str]:
    return dict(conn.execute(select(MessageCopy.id, MessageCopy.location).where(MessageCopy.message_id == pk)).all())


# -- retention -----------------------------------------------------------------------------

def drop_raw_received_before(session: Session, cutoff: datetime) -> int:
    """Raw bytes of messages received before ``cutoff``, in batches so a first sweep over years of
    mail does not hold one huge delete."""
    count = 0
    while True:
        ids = list(session.scalars(select(MessageRaw.message_id).join(Message, Message.id == MessageRaw.message_id)
                                   .where(Message.received_at < cutoff).limit(BATCH)))
        if not ids:
            return count
        count += session.execute(delete(MessageRaw).where(MessageRaw.message_id.in_(ids))).rowcount or 0
