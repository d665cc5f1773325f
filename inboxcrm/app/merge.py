"""Keeping people and companies one each: finding likely duplicates, merging one into another,
and undoing a merge exactly.

A merge moves every row that points at the merged contact (or company) to the kept one,
changes what the kept row takes over (``duplicates.kept_contact_changes``), deletes the merged
row, and writes a ``merges`` row with everything an undo needs: each row moved (table, id,
column, old and new value), each row deleted (all its values) and each field of the kept row
changed (old and new). Undo puts those back as they were, with the same ids, after checking that
nothing since made that unsafe; it refuses, naming what changed, rather than undo half.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inboxcrm.app.team import audit
from inboxcrm.core import duplicates
from inboxcrm.core.addresses import normalize, normalize_domain, registrable_domain
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.store import deal_queries
from inboxcrm.store import merge_queries as queries
from inboxcrm.store.db import Session

TABLES = {"contact": "contacts", "company": "companies"}
MAX_PROBLEMS = 10  # an undo refused for thousands of rows names the first ones and counts the rest


# -- finding duplicates ------------------------------------------------------------------------

def find_duplicates(session: Session, team_domains: frozenset[str] = frozenset(),
                    freemail: frozenset[str] = frozenset(),
                    min_score: int = duplicates.DEFAULT_MIN_SCORE) -> duplicates.Found:
    addresses: dict[int, list[str]] = defaultdict(list)
    people: dict[int, tuple[str, datetime]] = {}
    for contact_id, name, first_seen, address in queries.contact_facts(session):
        people[contact_id] = (name, first_seen)
        if address is not None:
            addresses[contact_id].append(address)
    contacts = [duplicates.ContactFacts(i, name, tuple(addresses[i]), seen) for i, (name, seen) in people.items()]
    companies = [duplicates.CompanyFacts(*row) for row in queries.company_facts(session)]
    return duplicates.duplicates(contacts, companies, team_domains, freemail, min_score)


# -- merging ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MergeDone:
    merge_id: int
    kind: str
    kept_id: int
    kept: str
    merged_id: int
    merged: str
    moved: dict[str, int]  # table -> rows moved to the kept record
    changed: dict[str, tuple[Any, Any]]  # field of the kept record -> (old, new)


def _contact_id(session: Session, given: str) -> int:
    text = (given or "").strip()
    if text.isdigit():
        if queries.row_values(session, "contacts", int(text)) is None:
            raise NotFound(f"no contact {text}; give a contact's id or one of its addresses "
                           f"(inboxcrm contacts list --json shows both)")
        return int(text)
    address = normalize(text)
    if address is None:
        raise Invalid(f'"{given}" is neither a contact id (a number) nor an email address')
    found = deal_queries.contact_by_address(session, address)
    if found is None:
        raise NotFound(f"no contact has the address {address}; give a contact's id or one of its addresses "
                       f"(inboxcrm contacts list shows them)")
    return found[0]


def _company_id(session: Session, given: str) -> int:
    text = (given or "").strip()
    if text.isdigit():
        if queries.row_values(session, "companies", int(text)) is None:
            raise NotFound(f"no company {text}; give a company's id or its domain (inboxcrm companies list --json)")
        return int(text)
    domain = normalize_domain(text.rpartition("@")[2])
    if domain is None:
        raise Invalid(f'"{given}" is neither a company id (a number) nor a domain such as acme.com')
    found = deal_queries.company_by_domain(session, domain) or deal_queries.company_by_domain(
        session, registrable_domain(domain))
    if found is None:
        raise NotFound(f"no company has the domain {domain}; give a company's id or its domain "
                       f"(inboxcrm companies list shows them)")
    return found[0]


def _label(session: Session, kind: str, values: dict[str, Any]) -> str:
    if kind == "company":
        return f"{values['name']} ({values['domain']})"
    address = queries.first_address(session, values["id"]) or ""
    return f"{values['name']} <{address}>" if values["name"] else address or f"contact {values['id']}"


def _merge(session: Session, now: datetime, actor: str, kind: str, kept_id: int, merged_id: int) -> MergeDone:
    table = TABLES[kind]
    if kept_id == merged_id:
        raise Invalid(f"{kind} {kept_id} cannot be merged into itself; give two different {kind}s")
    kept = queries.row_values(session, table, kept_id)
    merged = queries.row_values(session, table, merged_id)
    kept_label, merged_label = _label(session, kind, kept), _label(session, kind, merged)
    changes = (duplicates.kept_contact_changes if kind == "contact" else duplicates.kept_company_changes)(kept, merged)
    moved = queries.move_references(session, table, merged_id, kept_id)
    queries.set_values(session, table, kept_id, changes)
    queries.delete_row(session, table, merged_id)
    undo = {
        "moved": [{**m, "old": queries.encode_value(m["old"]), "new": queries.encode_value(m["new"])} for m in moved],
        "deleted": [{"table": table, "values": queries.encode_row(merged)}],
        "changed": [{"table": table, "id": kept_id, "column": field, "old": queries.encode_value(kept[field]),
                     "new": queries.encode_value(value)} for field, value in changes.items()],
    }
    merge_id = queries.add_merge(session, kind, kept_id, merged_id, now, actor, undo)
    counts: dict[str, int] = defaultdict(int)
    for m in moved:
        counts[m["table"]] += 1
    audit(session, now, actor, "merge", kind, kept_id, f"merge {merge_id}", merge=merge_id, merged=merged_id,
          moved=dict(counts), changed=sorted(changes))
    return MergeDone(merge_id, kind, kept_id, kept_label, merged_id, merged_label, dict(counts),
                     {field: (kept[field], value) for field, value in changes.items()})


def merge_contacts(session: Session, now: datetime, actor: str, kept: str, merged: str) -> MergeDone:
    """Contact ``merged`` (an id or address) into ``kept``: its addresses, messages and deals (with
    their notes, flags and history) become the kept contact's, and the older owner stays."""
    return _merge(session, now, actor, "contact", _contact_id(session, kept), _contact_id(session, merged))


def merge_companies(session: Session, now: datetime, actor: str, kept: str, merged: str) -> MergeDone:
    """Company ``merged`` (an id or domain) into ``kept``: its contacts and deals become the kept one's."""
    return _merge(session, now, actor, "company", _company_id(session, kept), _company_id(session, merged))


# -- undoing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class UndoDone:
    merge_id: int
    kind: str
    kept_id: int
    merged_id: int
    restored: int  # rows put back: moved back, re-inserted and fields restored


def _problems(session: Session, merge) -> list[str]:
    """Why putting ``merge``'s rows back now would break something, or lose a later change."""
    undo, kind, table = merge.undo, merge.kind, TABLES[merge.kind]
    problems: list[str] = []
    if queries.row_values(session, table, merge.kept_id) is None:
        later = queries.merge_absorbing(session, kind, merge.kept_id, merge.id)
        problems.append(f"{kind} {merge.kept_id}, the one kept, no longer exists"
                        + (f" (merge {later.id} merged it into {kind} {later.kept_id}: undo that first)"
                           if later else ""))
    for row in undo["deleted"]:
        values = queries.decode_row(row["table"], row["values"])
        for column, value, holder in queries.holders(session, row["table"], values):
            what = "its id" if column == "id" else f"its {column} {value[0] if len(value) == 1 else value}"
            problems.append(f"{row['table']} row {values['id']} cannot come back: {what} is taken by row {holder}")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for m in undo["moved"]:
        groups[(m["table"], m["column"])].append(m)
    for (t, column), rows in groups.items():
        now = queries.current_values(session, t, column, (m["id"] for m in rows))
        for m in rows:
            if m["id"] not in now:
                problems.append(f"{t} row {m['id']} was deleted since")
            elif queries.encode_value(now[m["id"]]) != m["new"]:
                problems.append(f"{t} row {m['id']} has {column} {now[m['id']]} now, not {m['new']} as the merge left it")
    for c in undo["changed"]:
        current = queries.current_values(session, c["table"], c["column"], [c["id"]])
        if c["id"] in current and queries.encode_value(current[c["id"]]) != c["new"]:
            problems.append(f"{c['table']} row {c['id']}'s {c['column']} was changed since the merge "
                            f"(to {current[c['id']]}; the merge set {c['new']})")
    return problems


def undo_merge(session: Session, now: datetime, actor: str, merge_id: int | None = None) -> UndoDone:
    """Puts back every row ``merge_id`` (default: the latest not undone) moved, deleted or changed."""
    if merge_id is None:
        merge = queries.latest_not_undone(session)
        if merge is None:
            raise Invalid("there is no merge to undo (inboxcrm merge list shows the merges and whether "
                          "each was undone)")
    else:
        merge = queries.merge_by_id(session, merge_id)
        if merge is None:
            ids = [m.id for m in queries.merges(session)[:20]]
            raise NotFound(f"no merge {merge_id}; " + (f"merges: {', '.join(map(str, ids))}" if ids
                                                          else "no merge was made yet"))
    if merge.undone_at is not None:
        raise Invalid(f"merge {merge.id} was undone already, at {merge.undone_at:%Y-%m-%d %H:%M} UTC "
                      f"by {merge.undone_by}")
    problems = _problems(session, merge)
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise Invalid(f"merge {merge.id} cannot be undone safely: " + "; ".join(problems[:MAX_PROBLEMS])
                      + (f"; and {more} more" if more > 0 else ""))
    undo = merge.undo
    for row in undo["deleted"]:
        queries.insert_row(session, row["table"], queries.decode_row(row["table"], row["values"]))
    back: dict[tuple[str, str, Any], list[int]] = defaultdict(list)
    for m in undo["moved"]:
        back[(m["table"], m["column"], m["old"])].append(m["id"])
    for (table, column, old), ids in back.items():
        queries.set_column(session, table, column, queries.decode_value(table, column, old), ids)
    for c in undo["changed"]:
        queries.set_values(session, c["table"], c["id"],
                           {c["column"]: queries.decode_value(c["table"], c["column"], c["old"])})
    merge.undone_at, merge.undone_by = now, actor
    audit(session, now, actor, "undo-merge", merge.kind, merge.kept_id, f"merge {merge.id}", merge=merge.id,
          merged=merge.merged_id)
    return UndoDone(merge.id, merge.kind, merge.kept_id, merge.merged_id,
                    len(undo["moved"]) + len(undo["deleted"]) + len(undo["changed"]))


# -- listing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MergeRow:
    id: int
    kind: str
    kept_id: int
    merged_id: int
    at: datetime
    actor: str
    moved: int  # rows moved to the kept record
    undone_at: datetime | None
    undone_by: str | None


def list_merges(session: Session) -> list[MergeRow]:
    return [MergeRow(m.id, m.kind, m.kept_id, m.merged_id, m.at, m.actor, len(m.undo.get("moved", ())),
                     m.undone_at, m.undone_by) for m in queries.merges(session)]
