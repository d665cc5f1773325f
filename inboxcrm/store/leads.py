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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

from sqlalchemy import String, bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from inboxcrm.core import scoring
from inboxcrm.core.addresses import company_name
from inboxcrm.store import audit
from inboxcrm.store.csv_queries import insert_rows
from inboxcrm.store.db import driver_rows
from inboxcrm.store.models import Company, Contact, ContactAddress, Deal, StageChange
from inboxcrm.values import Address

NAME_CHARS = 200  # contacts.name and companies.name
Later = Callable[[type, Sequence[dict[str, Any]]], None]  # (model, rows): written before the commit
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
    next_step: str | None = None  # a first next step (a spreadsheet's); its audit entry is the caller's
    next_step_due: date | None = None
    next_step_owner_id: int | None = None


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


_CONTACTS = select(Contact.id, Contact.company_id, Contact.name, Contact.owner_rep_id).where(
    Contact.id.in_(bindparam("pks", expanding=True)))
_CONTACT_CHUNK = 500  # ids per IN list: under SQLite's bound-parameter limit


def create_lead(db: Session | Connection, lead: NewLead, now: datetime, when: datetime | None = None,
                log: list[dict] | None = None, later: Later | None = None) -> CreatedLead:
    """Writes the lead: ``create_leads`` with one. ``now`` stamps the audit and a new company;
    ``when`` (default ``now``) is when the lead began: the contact's first sight and the deal's
    dates (the mail's date on intake).

    The audit entries go to ``log`` when given (the intake writes a message's entries in one
    statement), else they are written here. ``later(model, rows)`` takes the stage history, which
    nothing reads before the commit (the intake writes a commit group's in one statement)."""
    return create_leads(db, now, (lead,), when, log, later=later)[0]


def create_leads(db: Session | Connection, now: datetime, leads: Sequence[NewLead], when: datetime | None = None,
                 log: list[dict] | None = None,
                 then: Callable[[int, CreatedLead], Iterable[dict]] | None = None,
                 later: Later | None = None) -> list[CreatedLead]:
    """Writes many leads with one statement per table (a spreadsheet's 100,000 rows one by one
    spent their time on round trips), the same rows, ids and audit entries, in the same order, as
    ``create_lead`` called for each in turn. Leads naming the same new ``company_domain`` share
    the one company, made (and named) by the first of them, as that first ``create_lead`` would
    have made it for the others to join.

    ``then(i, created)`` gives the caller's own audit entries about lead ``i`` (the import's
    next step and note); they follow that lead's entries, so the log reads lead by lead."""
    if not leads:
        return []
    if isinstance(db, Session):
        db.flush()
    when = when or now
    conn = db.connection() if isinstance(db, Session) else db
    if conn.dialect.name == "postgresql" and len(leads) == 1 and leads[0].contact_id is None:
        written = _insert_new_contact_lead_postgresql(conn, now, leads[0], when)
    else:
        written = _insert_leads(db, now, leads, when)
    made_companies, contact_ids, company_ids, names, fits, deal_ids = written
    history = [dict(deal_id=deal_id, from_stage=None, to_stage=lead.stage_name, at=when, actor=lead.actor,
                    reason=lead.history_reason) for lead, deal_id in zip(leads, deal_ids)]
    if later is not None:
        later(StageChange, history)
    else:
        insert_rows(db, StageChange.__table__, history)
    created = [CreatedLead(*row, when) for row in zip(deal_ids, contact_ids, company_ids, names,
                                                       (lead.contact_id is None for lead in leads), fits)]
    entries: list[dict] = [] if log is None else log
    announced: set[str] = set()
    for i, (lead, made) in enumerate(zip(leads, created)):
        domain = lead.company_domain if lead.company_id is None else None
        if domain and domain not in announced:
            announced.add(domain)
            entries.append(audit.entry(now, lead.actor, "create", "company", made.company_id, lead.why,
                                       domain=domain, name=_company_name(lead)))
        if made.new_contact:
            entries.append(audit.entry(now, lead.actor, "create", "contact", made.contact_id, lead.why,
                                       address=lead.prospect.email, name=made.contact_name, owner=lead.owner_name,
                                       source=lead.source))
        entries.append(audit.entry(now, lead.actor, "create", "deal", made.deal_id, lead.why, ref=made.ref,
                                   contact=lead.prospect.email, stage=lead.stage_name, owner=lead.owner_name,
                                   source=lead.source, value=None if lead.value is None else str(lead.value),
                                   rules=list(lead.rules)))
        if then is not None:
            entries.extend(then(i, made))
    if log is None:
        audit.write_batch(db, entries)
    if isinstance(db, Session):
        _expire(db, *((Contact, made.contact_id) for made in created),
                *((Company, pk) for pk in made_companies.values()))
    return created


Written = tuple[dict[str, int], list[int], list[int | None], list[str], list[int], list[int]]
"""What the lead rows got: companies made (domain -> id), and per lead the contact, the company,
the contact's name, the fit score and the deal."""


def _insert_leads(db: Session | Connection, now: datetime, leads: Sequence[NewLead], when: datetime) -> Written:
    made_companies = _insert_companies(db, now, leads)
    made_contacts = iter(insert_rows(db, Contact.__table__, [_contact_row(lead, made_companies, when)
                                                         for lead in leads if lead.contact_id is None], ids=True))
    contact_ids = [lead.contact_id if lead.contact_id is not None else next(made_contacts) for lead in leads]
    addresses = [dict(contact_id=pk, address=lead.prospect.email)
                 for lead, pk in zip(leads, contact_ids) if lead.contact_id is None]
    if addresses:
        insert_rows(db, ContactAddress.__table__, addresses)
    names = _complete_contacts(db, leads, contact_ids, made_companies)
    company_ids = [_company_of(lead, made_companies) for lead in leads]
    fits = [scoring.fit_points(company_id is not None, lead.score_points)
            for lead, company_id in zip(leads, company_ids)]
    deal_ids = insert_rows(db, Deal.__table__, [_deal_row(lead, contact_id, company_id, fit, when) for
                                               lead, contact_id, company_id, fit in
                                               zip(leads, contact_ids, company_ids, fits)], ids=True)
    return made_companies, contact_ids, company_ids, names, fits, deal_ids


def _insert_new_contact_lead_postgresql(conn: Connection, now: datetime, lead: NewLead, when: datetime) -> Written:
    """One lead with a new contact (the intake's new sender) on PostgreSQL: its company when new,
    contact, address and deal in one statement, where four round trips were a third of a new
    lead's message's statements. The same rows as ``_insert_leads``."""
    domain = lead.company_domain if lead.company_id is None and lead.company_domain else None
    fit = scoring.fit_points(lead.company_id is not None or domain is not None, lead.score_points)
    company = dict(domain=domain, name=_company_name(lead), created_at=now) if domain else {}
    contact = _contact_row(lead, {}, when)
    deal = _deal_row(lead, None, None, fit, when)
    params = {**_prefixed("company_", company), **_prefixed("contact_", contact), **_prefixed("deal_", deal),
              "address": lead.prospect.email}
    (contact_id, company_id, deal_id), = driver_rows(
        conn, _new_contact_lead_postgresql(tuple(company), tuple(contact), tuple(deal)), params)
    return ({domain: company_id} if domain else {}), [contact_id], [company_id], [contact["name"]], [fit], [deal_id]


def _prefixed(prefix: str, row: dict[str, Any]) -> dict[str, Any]:
    return {prefix + key: value for key, value in row.items()}


@cache
def _new_contact_lead_postgresql(company_columns: tuple[str, ...], contact_columns: tuple[str, ...],
                                 deal_columns: tuple[str, ...]):
    """INSERTs chained by data-modifying CTEs, built once per shape: each takes the ids RETURNING
    from the one before (the company's into the contact, the contact's into address and deal)."""
    def values(table, prefix: str, columns: tuple[str, ...], **given) -> dict[str, Any]:
        return {c: given[c] if c in given else bindparam(prefix + c, type_=table.c[c].type) for c in columns}

    companies, contacts, deals = Company.__table__, Contact.__table__, Deal.__table__
    company_id = {}
    if company_columns:
        company = insert(companies).values(values(companies, "company_", company_columns)).returning(
            companies.c.id).cte("company")
        company_id = {"company_id": select(company.c.id).scalar_subquery()}
    contact = insert(contacts).values(values(contacts, "contact_", contact_columns, **company_id)).returning(
        contacts.c.id, contacts.c.company_id).cte("contact")
    address = insert(ContactAddress.__table__).from_select(
        ["contact_id", "address"], select(contact.c.id, bindparam("address", type_=String))).cte("address")
    deal_values = values(deals, "deal_", deal_columns, contact_id=contact.c.id, company_id=contact.c.company_id)
    deal = insert(deals).from_select(list(deal_values), select(*deal_values.values())).returning(deals.c.id).cte("deal")
    return select(contact.c.id, contact.c.company_id, select(deal.c.id).scalar_subquery()).add_cte(address)


def _deal_row(lead: NewLead, contact_id: int | None, company_id: int | None, fit: int, when: datetime) -> dict[str, Any]:
    return dict(title=lead.title[:TITLE_CHARS], contact_id=contact_id, company_id=company_id, stage_id=lead.stage_id,
                owner_rep_id=lead.owner_id, source=lead.source, value=lead.value, fit_score=fit, score=fit,
                inbound_count=0, outbound_count=0, created_at=when, last_activity_at=when, last_stage_change_at=when,
                next_step=lead.next_step, next_step_due=lead.next_step_due, next_step_owner_id=lead.next_step_owner_id)


def _company_name(lead: NewLead) -> str:
    return (lead.company_name or company_name(lead.company_domain))[:NAME_CHARS]


def _insert_companies(db: Session | Connection, now: datetime, leads: Sequence[NewLead]) -> dict[str, int]:
    """domain -> id of each company the leads make, in the order they first name it."""
    wanted: dict[str, str] = {}
    for lead in leads:
        if lead.company_id is None and lead.company_domain and lead.company_domain not in wanted:
            wanted[lead.company_domain] = _company_name(lead)
    ids = insert_rows(db, Company.__table__, [dict(domain=domain, name=name, created_at=now)
                                              for domain, name in wanted.items()], ids=True)
    return dict(zip(wanted, ids))


def _company_of(lead: NewLead, made: dict[str, int]) -> int | None:
    if lead.company_id is not None:
        return lead.company_id
    return made.get(lead.company_domain) if lead.company_domain else None


def _contact_row(lead: NewLead, made: dict[str, int], when: datetime) -> dict[str, Any]:
    return dict(name=lead.prospect.name[:NAME_CHARS], company_id=_company_of(lead, made), owner_rep_id=lead.owner_id,
                source=lead.source, first_seen=when)


def _complete_contacts(db: Session | Connection, leads: Sequence[NewLead], contact_ids: list[int],
                       made: dict[str, int]) -> list[str]:
    """Each lead's contact name. An existing contact keeps what it has and gains what it
    lacked, from its leads in turn (the first to give a company gives it)."""
    known = [pk for lead, pk in zip(leads, contact_ids) if lead.contact_id is not None]
    stored: dict[int, dict[str, Any]] = {}
    for start in range(0, len(known), _CONTACT_CHUNK):
        for row in db.execute(_CONTACTS, {"pks": known[start:start + _CONTACT_CHUNK]}):
            stored[row.id] = dict(company_id=row.company_id, name=row.name, owner_rep_id=row.owner_rep_id)
    fills: dict[int, dict[str, Any]] = {}
    names: list[str] = []
    for lead, pk in zip(leads, contact_ids):
        name = lead.prospect.name[:NAME_CHARS]
        if lead.contact_id is None:
            names.append(name)
            continue
        row, fill = stored[pk], fills.setdefault(pk, {})
        company_id = _company_of(lead, made)
        if row["company_id"] is None and company_id is not None:
            fill["company_id"] = row["company_id"] = company_id
        if not row["name"] and name:
            fill["name"] = row["name"] = name
        if lead.claim_contact and row["owner_rep_id"] is None and lead.owner_id is not None:
            fill["owner_rep_id"] = row["owner_rep_id"] = lead.owner_id
        names.append(row["name"] or name)
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for pk, fill in fills.items():
        if fill:
            by_columns.setdefault(tuple(sorted(fill)), []).append({"pk": pk, **fill})
    for columns, rows in by_columns.items():
        table = Contact.__table__
        db.execute(update(table).where(table.c.id == bindparam("pk")).values({c: bindparam(c) for c in columns}), rows)
    return names


def _expire(session: Session, *rows: tuple[type, int | None]) -> None:
    """The session's copies of rows written here behind its back (a contact it had loaded gained a
    company, a deal) are read again on their next use."""
    for model, pk in rows:
        held = session.identity_map.get(identity_key(model, pk)) if pk is not None else None
        if held is not None:
            session.expire(held)
