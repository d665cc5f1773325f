"""Bouncing addresses: a delivery failure for a contact's address marks it, their next mail clears it.

The intake calls ``after_message`` for every message, in the message's savepoint, after the
message is recorded (a bounce is still recorded as noise). A bounce is read with
``core.bounces.read_bounce``; each recipient it says failed for good (a 5.x.x status) marks
the address of a known contact, with the bounce's date and what the server said. An address
of the team, or one no contact has, changes nothing (logged, and counted in the message's
event). Anyone can send a message that looks like a bounce, so a mark only marks: it deletes
nothing, changes no deal, is cleared by the person's next real message, and the audit log names
the message that set it. The mark carries the bounce's own date, so a second copy, a re-run or
an older bounce read later marks nothing again; a bounce older than the person's latest mail
from that address marks nothing at all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Sequence
from datetime import datetime

from inboxcrm.core.bounces import Recipient, read_bounce
from inboxcrm.core.csv_rows import write_csv
from inboxcrm.core.decide import Context, Decision
from inboxcrm.core.sales import activity_time
from inboxcrm.logs import event
from inboxcrm.store import bounce_queries
from inboxcrm.store.db import Session
from inboxcrm.store.records import Store, StoredMessage
from inboxcrm.values import Email

log = logging.getLogger("inboxcrm.app.bounces")


@dataclass(frozen=True)
class BounceOutcome:
    """What one message did to the marks, address by address."""

    marked: tuple[str, ...] = ()
    already: tuple[str, ...] = ()  # marked before, by this bounce or a newer one
    wrote_since: tuple[str, ...] = ()  # the person wrote from it after the bounce's date
    not_contacts: tuple[str, ...] = ()  # the team's own, or no contact's
    cleared: tuple[str, ...] = ()


def after_message(store: Store, msg: StoredMessage, email: Email, data: bytes, decision: Decision,
                  ctx: Context) -> BounceOutcome:
    """Marks what a bounce names, or clears the mark of the address a person wrote from."""
    kind = decision.classification.kind if decision.classification else None
    when = activity_time(email.date, store.now)
    if kind == "bounce":
        return _mark(store, msg, read_bounce(data).failed, when, ctx)
    sender = email.from_.email if email.from_ else ""
    if (not sender or kind in bounce_queries.NOT_FROM_THE_PERSON or decision.direction == "outbound"
            or decision.reason == "junk-folder" or sender not in ctx.bouncing):
        return BounceOutcome()
    cleared = bounce_queries.clear(store.conn, sender, when)
    if cleared is None:
        return BounceOutcome()
    address_id, contact_id = cleared
    ctx.bouncing.discard(sender)
    store.audit("bounce-cleared", "contact", contact_id, f"message <{msg.message_id}>", address=sender)
    store.flush_audit()
    event(log, logging.INFO, "bounce-cleared", address=sender, message=msg.message_id)
    return BounceOutcome(cleared=(sender,))


def _mark(store: Store, msg: StoredMessage, failed: tuple[Recipient, ...], when: datetime,
          ctx: Context) -> BounceOutcome:
    team = ctx.team
    candidates = {r: [a for a in r.candidates if a not in team.rep_addresses
                      and a.rpartition("@")[2] not in team.team_domains] for r in failed}
    known = {address: (pk, contact_id, at) for pk, contact_id, address, at in bounce_queries.contact_addresses(
        store.conn, sorted({a for addresses in candidates.values() for a in addresses}))}
    marked: list[str] = []
    already: list[str] = []
    wrote_since: list[str] = []
    not_contacts: list[str] = []
    for recipient, addresses in candidates.items():
        address = next((a for a in addresses if a in known), None)
        if address is None:
            not_contacts.append(recipient.address)
            continue
        if address in marked or address in already or address in wrote_since:
            continue  # named twice in one report
        pk, contact_id, _ = known[address]
        last = bounce_queries.last_mail_from(store.conn, address)
        if last is not None and last > when:
            wrote_since.append(address)
        elif bounce_queries.mark(store.conn, pk, when, recipient.reason):
            marked.append(address)
            ctx.bouncing.add(address)
            store.audit("bounce", "contact", contact_id, f"message <{msg.message_id}>", address=address,
                        bounced_at=when.isoformat(), status=recipient.status, diagnostic=recipient.diagnostic)
        else:
            already.append(address)
    store.flush_audit()
    outcome = BounceOutcome(tuple(marked), tuple(already), tuple(wrote_since), tuple(dict.fromkeys(not_contacts)))
    if failed:
        event(log, logging.INFO, "bounce", message=msg.message_id, marked=",".join(outcome.marked) or None,
              already=len(outcome.already) or None, wrote_since=len(outcome.wrote_since) or None,
              not_contacts=len(outcome.not_contacts) or None)
    return outcome


# -- the listing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BouncingRow:
    address: str
    contact_id: int
    contact: str
    company: str | None
    owner: str | None
    bounced_at: datetime
    reason: str
    open_deals: int


def list_bouncing(session: Session) -> list[BouncingRow]:
    """Every bouncing address, the most recent bounce first (``contacts list --bouncing``)."""
    return [BouncingRow(*row[:6], row[6] or "", row[7]) for row in bounce_queries.bouncing(session)]


def export_bouncing(rows: Sequence[BouncingRow]) -> str:
    """``contacts list --bouncing --csv``: the addresses to fix, for a spreadsheet."""
    return write_csv(("Email", "Contact", "Company", "Owner", "Bounced", "Reason", "Open deals"),
                     ((r.address, r.contact, r.company, r.owner, r.bounced_at.date(), r.reason, r.open_deals)
                      for r in rows))
