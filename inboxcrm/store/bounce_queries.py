"""The bouncing mark on contact addresses: read, set and cleared by statements named here.

The intake calls these for every message from a bouncing address (clearing; which addresses
bounce is read once per pass) and for every bounce (marking), so they
speak Core, built once, and each is served by an index: the unique address, and
``messages.from_address``. A mark or a clearing only ever moves forward in time (``bounced_at``
is the bounce's own date): a second copy of a bounce, a re-run, or an older bounce read after
a newer one changes nothing.
"""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from inboxcrm.store.models import Company, Contact, ContactAddress, Deal, Message, Rep

# Kinds of mail that say nothing about whether an address works: bounces are about it, and
# spam may carry anybody's address in From.
NOT_FROM_THE_PERSON = ("bounce", "spam")

_ADDRESSES = select(ContactAddress.id, ContactAddress.contact_id, ContactAddress.address,
                    ContactAddress.bounced_at).where(ContactAddress.address.in_(bindparam("addresses", expanding=True)))
_LAST_MAIL_FROM = select(func.max(Message.sent_at)).where(
    Message.from_address == bindparam("address"),
    or_(Message.kind.is_(None), Message.kind.not_in(NOT_FROM_THE_PERSON)))
_MARK = (update(ContactAddress)
         .where(ContactAddress.id == bindparam("pk"),
                or_(ContactAddress.bounced_at.is_(None), ContactAddress.bounced_at < bindparam("at")))
         .values(bounced_at=bindparam("at"), bounce_reason=bindparam("reason")))
_CLEAR = (update(ContactAddress)
          .where(ContactAddress.address == bindparam("sender"), ContactAddress.bounced_at.is_not(None),
                 ContactAddress.bounced_at < bindparam("before"))
          .values(bounced_at=None, bounce_reason=None)
          .returning(ContactAddress.id, ContactAddress.contact_id))


def contact_addresses(conn: Connection, addresses: Sequence[str]) -> list[tuple[int, int, str, datetime | None]]:
    """(id, contact id, address, bounced at) of those of ``addresses`` that belong to a contact."""
    if not addresses:
        return []
    return [tuple(r) for r in conn.execute(_ADDRESSES, {"addresses": list(addresses)})]


def last_mail_from(conn: Connection, address: str) -> datetime | None:
    """When the person last wrote from ``address`` (by the messages' dates), if ever."""
    return conn.scalar(_LAST_MAIL_FROM, {"address": address})


def mark(conn: Connection, address_id: int, at: datetime, reason: str) -> bool:
    """Marks the address as bouncing since ``at``; False when a bounce as recent or newer
    marked it already."""
    return conn.execute(_MARK, {"pk": address_id, "at": at, "reason": reason}).rowcount == 1


def clear(conn: Connection, address: str, before: datetime) -> tuple[int, int] | None:
    """Clears the mark of ``address`` if it bounced before ``before``: (address id, contact id),
    or None when it was not marked (the usual case: one indexed statement that changes nothing)."""
    row = conn.execute(_CLEAR, {"sender": address, "before": before}).first()
    return (row[0], row[1]) if row else None


def bouncing_addresses(session: Session) -> set[str]:
    """The addresses marked bouncing now (ix_contact_addresses_bounced_at: a handful of rows)."""
    return set(session.scalars(select(ContactAddress.address).where(ContactAddress.bounced_at.is_not(None))))


def bouncing(session: Session) -> list[tuple]:
    """(address, contact id, contact name, company, owner, bounced at, reason, open deals) of
    every bouncing address, the most recent bounce first."""
    open_deals = (select(func.count(Deal.id)).where(Deal.contact_id == Contact.id, Deal.closed_at.is_(None))
                  .scalar_subquery())
    return [tuple(r) for r in session.execute(
        select(ContactAddress.address, Contact.id, Contact.name, Company.name, Rep.name, ContactAddress.bounced_at,
               ContactAddress.bounce_reason, open_deals)
        .join(Contact, Contact.id == ContactAddress.contact_id)
        .outerjoin(Company, Company.id == Contact.company_id)
        .outerjoin(Rep, Rep.id == Contact.owner_rep_id)
        .where(ContactAddress.bounced_at.is_not(None))
        .order_by(ContactAddress.bounced_at.desc(), ContactAddress.address))]
