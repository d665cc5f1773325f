"""The one writer of a new lead: company, contact and address, deal, first stage history, audit.

A lead is made by the intake of a prospect's mail (``Store``, once per new sender on the import's
hot path), by hand (``deals.add_lead``) and by a forwarded email (``commands``). All three write
through ``create_lead``, so a lead has the same rows and the same audit entries whoever made it.
It speaks SQLAlchemy Core with statements built once, because the intake calls it per message;
the ORM callers pass their Session (its pending objects are flushed first, since a Core
statement does not autoflush) and must load what they show afterwards, not reuse objects the
session held before (they would not see these rows).

It decides nothing: who owns the deal, its stage, its title and whether the company exists were
settled by the caller (the routing rules, or what a person typed and ``deals`` checked).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from inboxcrm.core import scoring
from inboxcrm.core.addresses import company_name
from inboxcrm.store import audit
from inboxcrm.store.models import Company, Contact, ContactAddress, Deal, StageChange
from inboxcrm.values import Address

NAME_CHARS = 200  # contacts.name and companies.name
TITLE_CHARS = 300  # deals.title


@dataclass(frozen=True)
class NewLead:
    """What a new lead is, settled by the caller. ``company_id`` is an existing company; else
    ``company_domain`` (a registrable domain nobody has yet) makes one named ``company_name``
    (default: from the domain); neither means no company. ``contact_id`` is an existing contact,
    which gains the company and the name if it had none; else ``prospect`` makes one."""

    actor: str  # who the stage history names: a rep, or the pipeline
    prospect: Address
    title: str
    stage_id: int
    stage_name: str
    source: str
    owner_id: int | None = None
    owner_name: str | None = None
    contact_id: int | None = None
    company_id: int | None = None
    company_domain: str | None = None
    company_name: str | None = None
    value: Any = None  # a Decimal, already read and checked
    score_points: int = 0  # a routing rule's extra fit points
    claim_contact: bool = False  # an existing contact without an owner gets the deal's owner
    history_reason: str = ""  # the first stage-history row's reason
    why: str = ""  # the audit entries' reason (a message's Message-ID); "" for a person's own act
    rules: tuple[str, ...] = ()  # the routing rules that fired, for the audit


@dataclass(frozen=True)
class CreatedLead:
    deal_id: int
    contact_id: int
    company_id: int | None
    contact_name: str
    new_contact: bool
    fit: int
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"D-{self.deal_id}"


def _returning_id(model):
    table = model.__table__
    return insert(table).returning(table.c.id)


_INSERT_COMPANY = _returning_id(Company)
_INSERT_CONTACT = _returning_id(Contact)
_INSERT_ADDRESS = insert(ContactAddress.__table__)
_INSERT_DEAL = _returning_id(Deal)
_INSERT_HISTORY = insert(StageChange.__table__)
_CONTACT = select(Contact.company_id, Contact.name, Contact.owner_rep_id).where(Contact.id == bindparam("pk"))
_UPDATE_CONTACT = update(Contact.__table__).where(Contact.__table__.c.id == bindparam("pk"))


def create_lead(db: Session | Connection, lead: NewLead, now: datetime, when: datetime | None = None,
                log: list[dict] | None = None) -> CreatedLead:
    """Writes the lead. ``now`` stamps the audit and a new company; ``when`` (default ``now``) is
    when the lead began: the contact's first sight and the deal's dates (the mail's date on intake).

    The audit entries go to ``log`` when given (the intake writes a message's entries in one
    statement), else they are written here."""
    if isinstance(db, Session):
        db.flush()
    when = when or now
    entries: list[dict] = [] if log is None else log

    def note(entity: str, entity_id: int, **detail: Any) -> None:
        entries.append(audit.entry(now, lead.actor, "create", entity, entity_id, lead.why, **detail))

    company_id = lead.company_id
    if company_id is None and lead.company_domain:
        name = (lead.company_name or company_name(lead.company_domain))[:NAME_CHARS]
        company_id = db.execute(_INSERT_COMPANY, dict(domain=lead.company_domain, name=name,
                                                      created_at=now)).scalar_one()
        note("company", company_id, domain=lead.company_domain, name=name)
    contact_name = lead.prospect.name[:NAME_CHARS]
    contact_id = lead.contact_id
    if contact_id is None:
        contact_id = db.execute(_INSERT_CONTACT, dict(name=contact_name, company_id=company_id,
                                                      owner_rep_id=lead.owner_id, source=lead.source,
                                                      first_seen=when)).scalar_one()
        db.execute(_INSERT_ADDRESS, dict(contact_id=contact_id, address=lead.prospect.email))
        note("contact", contact_id, address=lead.prospect.email, name=contact_name, owner=lead.owner_name,
             source=lead.source)
    else:
        contact_name = _complete_contact(db, lead, contact_id, company_id, contact_name)
    fit = scoring.fit_points(company_id is not None, lead.score_points)
    deal_id = db.execute(_INSERT_DEAL, dict(
        title=lead.title[:TITLE_CHARS], contact_id=contact_id, company_id=company_id, stage_id=lead.stage_id,
        owner_rep_id=lead.owner_id, source=lead.source, value=lead.value, fit_score=fit, score=fit,
        inbound_count=0, outbound_count=0, created_at=when, last_activity_at=when,
        last_stage_change_at=when)).scalar_one()
    db.execute(_INSERT_HISTORY, dict(deal_id=deal_id, from_stage=None, to_stage=lead.stage_name, at=when,
                                     actor=lead.actor, reason=lead.history_reason))
    note("deal", deal_id, ref=f"D-{deal_id}", contact=lead.prospect.email, stage=lead.stage_name,
         owner=lead.owner_name, source=lead.source, value=None if lead.value is None else str(lead.value),
         rules=list(lead.rules))
    if log is None:
        audit.write_batch(db, entries)
    if isinstance(db, Session):
        _expire(db, (Contact, contact_id), (Company, company_id))
    return CreatedLead(deal_id, contact_id, company_id, contact_name, lead.contact_id is None, fit, when)


def _complete_contact(db: Session | Connection, lead: NewLead, contact_id: int, company_id: int | None,
                      name: str) -> str:
    """An existing contact keeps what it has and gains what it lacked; returns its name."""
    row = db.execute(_CONTACT, {"pk": contact_id}).one()
    fill: dict[str, Any] = {}
    if row.company_id is None and company_id is not None:
        fill["company_id"] = company_id
    if not row.name and name:
        fill["name"] = name
    if lead.claim_contact and row.owner_rep_id is None and lead.owner_id is not None:
        fill["owner_rep_id"] = lead.owner_id
    if fill:
        db.execute(_UPDATE_CONTACT, {"pk": contact_id, **fill})
    return row.name or name


def _expire(session: Session, *rows: tuple[type, int | None]) -> None:
    """The session's copies of rows written here behind its back (a contact it had loaded gained a
    company, a deal) are read again on their next use."""
    for model, pk in rows:
        held = session.identity_map.get(identity_key(model, pk)) if pk is not None else None
        if held is not None:
            session.expire(held)
