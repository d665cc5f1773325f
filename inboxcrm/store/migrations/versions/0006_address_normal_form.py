"""Stored addresses in the one normal form; companies keyed by their registrable domain.

Before this revision an address was stored as it was written (``jurgen@xn--mller-bau-q9a.example``
and ``jurgen@müller-bau.example`` were two contacts) and a company was keyed by the mail host
(``mail.acme.co.uk`` beside ``acme.co.uk``). The code now compares the normal form only, so
without this data migration an old spelling would never match again and the next message would
create a second contact or company for someone the team already knows.

This migration imports ``inboxcrm.core.addresses`` and ``inboxcrm.core.match`` although migrations
otherwise import no application code: the target here *is* what the code compares with, and a
frozen copy would drift from it. Only the old default company name is copied, because it is
history (what 0005-era code wrote) and must not change.

What it cannot know: the team's configuration (its domains and added freemail providers) is
not in the database. So a company is merged only into a company the team already had under the
registrable domain, or re-keyed alone; two subdomain companies with no company at their
registrable domain stay apart (they may be two customers of a provider the team declared
freemail) and are named in a warning.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 16:30:00
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from inboxcrm.core.addresses import company_name, normalize, normalize_domain
from inboxcrm.core.match import company_domain
from inboxcrm.errors import Invalid
from inboxcrm.values import Address

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

ACTOR = "migration 0006"
REASON = "one normal form for addresses and company domains"
log = logging.getLogger(__name__)

_AUDIT = sa.table("audit_log", sa.column("at", sa.DateTime(timezone=True)), sa.column("actor", sa.String),
                  sa.column("action", sa.String), sa.column("entity", sa.String), sa.column("entity_id", sa.Integer),
                  sa.column("detail", sa.JSON), sa.column("reason", sa.String))


def upgrade() -> None:
    bind = op.get_bind()
    now = datetime.now(timezone.utc)
    reps = _spellings(bind, "SELECT a.id, a.address, a.rep_id, r.name FROM rep_addresses a JOIN reps r ON r.id = a.rep_id",
                      normalize)
    _refuse_shared_rep_addresses(reps)  # before any write: a refusal leaves the database as it was
    _merge_contacts(bind, now)
    _keep_one_spelling(bind, "rep_addresses", "address", reps)
    _keep_one_spelling(bind, "rejected_senders", "address", _spellings(bind, "SELECT id, address FROM rejected_senders",
                                                                       normalize))
    for old in bind.execute(sa.text("SELECT DISTINCT from_address FROM messages")).scalars().all():
        new = normalize(old)
        if new is not None and new != old:
            bind.execute(sa.text("UPDATE messages SET from_address = :new WHERE from_address = :old"),
                         {"new": new, "old": old})
    _rekey_companies(bind, now)


def downgrade() -> None:
    """Data only: the old spellings are not kept and the 0005 schema holds the new ones as
    they are, so there is nothing to undo; merges are listed in the audit log."""


# -- spellings --------------------------------------------------------------------------------

def _spellings(bind, query: str, normal) -> dict[str, list[sa.Row]]:
    """Rows (id and stored spelling first) grouped by their normal form; a value that has no
    normal form (not an address a registry could issue) is its own group and is left alone."""
    groups: dict[str, list[sa.Row]] = defaultdict(list)
    for row in bind.execute(sa.text(query + " ORDER BY 1")):
        groups[normal(row[1]) or row[1]].append(row)
    return groups


def _keep_one_spelling(bind, table: str, column: str, groups: dict[str, list[sa.Row]]) -> None:
    """One row per normal form, holding that form: the column is unique, so the other spellings'
    rows go (their references must already point at the kept row's owner)."""
    for normal, rows in groups.items():
        keep = next((row for row in rows if row[1] == normal), rows[0])
        for row in rows:
            if row is not keep:
                bind.execute(sa.text(f"DELETE FROM {table} WHERE id = :id"), {"id": row[0]})
        if keep[1] != normal:
            bind.execute(sa.text(f"UPDATE {table} SET {column} = :new WHERE id = :id"), {"new": normal, "id": keep[0]})


def _refuse_shared_rep_addresses(groups: dict[str, list[sa.Row]]) -> None:
    """Two reps holding one address: a rep's address is what commands by email trust, so which
    rep it belongs to is the admin's decision, never a migration's guess."""
    clashes = []
    for normal, rows in groups.items():
        if len({row.rep_id for row in rows}) > 1:
            held = " and ".join(f'"{row.address}" (rep {row.name}, rep_addresses id {row.id})' for row in rows)
            clashes.append(f"{held} are one address, {normal}")
    if clashes:
        raise Invalid("cannot upgrade: " + "; ".join(clashes) + ". Two reps are never merged: decide whose "
                      "address it is, delete the other rows (DELETE FROM rep_addresses WHERE id = ...;), "
                      'then run "inboxcrm db upgrade" again')


# -- contacts ---------------------------------------------------------------------------------

def _merge_contacts(bind, now: datetime) -> None:
    """Contacts that share an address in the normal form are one person: the oldest contact
    stays, so its owner keeps the person (the first rep to own a contact keeps it, as
    ``deals.add_lead`` does), and takes over the others' deals, messages and addresses."""
    groups = _spellings(bind, "SELECT id, address, contact_id FROM contact_addresses", normalize)
    parent: dict[int, int] = {}

    def root(contact: int) -> int:
        while parent.setdefault(contact, contact) != contact:
            contact = parent[contact]
        return contact

    for rows in groups.values():
        for row in rows[1:]:
            parent[root(row.contact_id)] = root(rows[0].contact_id)
    people: dict[int, list[int]] = defaultdict(list)
    for contact in list(parent):
        people[root(contact)].append(contact)
    for ids in people.values():
        if len(ids) > 1:
            _merge_into_oldest(bind, now, ids)
    _keep_one_spelling(bind, "contact_addresses", "address", groups)


def _merge_into_oldest(bind, now: datetime, ids: list[int]) -> None:
    rows = bind.execute(sa.text("SELECT id, name, company_id, owner_rep_id, source FROM contacts "
                                "WHERE id IN :ids ORDER BY first_seen, id").bindparams(sa.bindparam("ids", expanding=True)),
                        {"ids": ids}).all()
    keep, merged = rows[0], rows[1:]
    first = {field: next((getattr(r, field) for r in rows if getattr(r, field)), getattr(keep, field))
             for field in ("name", "company_id", "owner_rep_id", "source")}
    bind.execute(sa.text("UPDATE contacts SET name = :name, company_id = :company_id, owner_rep_id = :owner_rep_id, "
                         "source = :source WHERE id = :id"), {**first, "id": keep.id})
    for old in merged:
        moved = _move(bind, ("deals", "messages", "contact_addresses"), "contact_id", old.id, keep.id)
        bind.execute(sa.text("DELETE FROM contacts WHERE id = :id"), {"id": old.id})
        _audit(bind, now, "merge", "contact", keep.id, merged_contact=old.id, name=old.name,
               owner_rep_id=old.owner_rep_id, **moved)


def _move(bind, tables: tuple[str, ...], column: str, old: int, new: int) -> dict[str, list[int]]:
    """Re-points every reference; returns the ids moved per table, for the audit entry."""
    moved = {}
    for table in tables:
        moved[table] = bind.execute(sa.text(f"SELECT id FROM {table} WHERE {column} = :old ORDER BY id"),
                                    {"old": old}).scalars().all()
        bind.execute(sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old"), {"new": new, "old": old})
    return moved


def _audit(bind, now: datetime, action: str, entity: str, entity_id: int, **detail) -> None:
    bind.execute(_AUDIT.insert(), {"at": now, "actor": ACTOR, "action": action, "entity": entity,
                                   "entity_id": entity_id, "detail": detail, "reason": REASON})


# -- companies --------------------------------------------------------------------------------

def _old_default_name(domain: str) -> str:
    """The name 0005-era code gave a new company (``acme.co.uk`` -> "Co"); a company still
    carrying it was never renamed by a person and takes today's default instead."""
    label = domain.split(".")[-2] if domain.count(".") >= 1 else domain
    return " ".join(part.capitalize() for part in label.replace("_", "-").split("-") if part)


def _company_key(domain: str) -> str:
    """The key today's code gives the domain with no team configuration: the registrable
    domain, or the full domain under a built-in freemail provider; a freemail domain itself
    (kept by an old database) stays what it is."""
    return company_domain(Address(f"company@{domain}"), frozenset(), frozenset()) or domain


def _rekey_companies(bind, now: datetime) -> None:
    rows = bind.execute(sa.text("SELECT id, domain, name FROM companies ORDER BY created_at, id")).all()
    original = {row.id: row for row in rows}
    spelled: dict[str, list[sa.Row]] = defaultdict(list)  # one domain in two spellings: certainly one company
    for row in rows:
        spelled[normalize_domain(row.domain) or row.domain].append(row)
    domain_of: dict[int, str] = {}
    for normal, same in spelled.items():
        for row in same[1:]:
            _merge_company(bind, now, row, same[0].id)
        domain_of[same[0].id] = normal
    by_domain = {domain: company for company, domain in domain_of.items()}  # the companies the team had

    subdomains: dict[str, list[int]] = defaultdict(list)
    for company, domain in list(domain_of.items()):
        key = _company_key(domain)
        if key == domain:
            continue
        if key in by_domain:  # the team already had the registrable domain as a company: safe
            _merge_company(bind, now, original[company], by_domain[key])
            del domain_of[company]
        else:
            subdomains[key].append(company)
    for key, companies in subdomains.items():
        if len(companies) == 1:
            domain_of[companies[0]] = key
        else:
            log.warning("companies %s all belong to %s but were left apart: merging them is safe only if %s is not "
                        "a freemail provider in [team] freemail_domains, which a migration cannot read",
                        ", ".join(domain_of[c] for c in companies), key, key)

    for company, domain in domain_of.items():
        old = original[company]
        name = company_name(domain) if old.name == _old_default_name(old.domain) else old.name
        if (domain, name) != (old.domain, old.name):
            bind.execute(sa.text("UPDATE companies SET domain = :domain, name = :name WHERE id = :id"),
                         {"domain": domain, "name": name, "id": company})
            if domain != (normalize_domain(old.domain) or old.domain) or name != old.name:
                _audit(bind, now, "rekey", "company", company, old_domain=old.domain, domain=domain,
                       old_name=old.name, name=name)


def _merge_company(bind, now: datetime, old: sa.Row, keep: int) -> None:
    moved = _move(bind, ("contacts", "deals"), "company_id", old.id, keep)
    bind.execute(sa.text("DELETE FROM companies WHERE id = :id"), {"id": old.id})
    _audit(bind, now, "merge", "company", keep, merged_company=old.id, domain=old.domain, name=old.name, **moved)
