"""Moving in from a spreadsheet: ``import-csv`` plans every row of a file, then writes the plan
in one transaction, or writes nothing; and ``deals list --csv`` writes the same columns back.

Why a plan first: a file is all or nothing (unless ``skip_bad``), so every row must be judged
before the first is written, and ``--dry-run`` is the same plan without the writing. Each row
is one of:

- ``create``: a new contact (and company, from the address's domain) and a deal, written by
  ``store.leads.create_lead`` like any other lead, with its next step and a note;
- ``unchanged``: the address is a contact whose open deal already says what the row says;
- ``differs``: the address is a contact whose open deal says something else; reported with
  each difference and left alone, because a spreadsheet is older than the mail the CRM has
  seen since; ``update`` makes it ``update``, which changes the deal through the same
  ``app.deals`` functions (and audit entries) as ``deal stage``/``value``/``owner``/``next``/``note``;
- ``refused``: what is wrong, every problem of the row, with its line.

An empty cell never clears what is stored, and a contact's name, company and source are kept
(the mail and the people who worked the contact since know better); only the deal's stage,
owner, value, next step and notes are compared and updated. So importing the same file twice
changes nothing the second time: every row is ``unchanged``, and nothing, not even an audit
entry, is written.

A due date in the past is accepted (unlike ``deal next --due``): a spreadsheet carries history,
and a step that was due last week is exactly what the digest should now show as overdue. Only
open stages are accepted: a won or lost deal needs its close date and reason, which a row does
not carry.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from inboxcrm.app import deals
from inboxcrm.app.team import find_rep, find_stage, first_stage
from inboxcrm.core import csv_rows
from inboxcrm.core.addresses import company_name, normalize, normalize_domains
from inboxcrm.core.csv_rows import LeadRow, RowError
from inboxcrm.core.match import company_domain
from inboxcrm.core.views import clip, printable
from inboxcrm.errors import InboxCRMError
from inboxcrm.store import audit, csv_queries
from inboxcrm.store.db import Session
from inboxcrm.store.leads import CreatedLead, NewLead, create_lead, create_leads
from inboxcrm.store.models import Rep, Stage
from inboxcrm.values import Address

NOTES_JOIN = "\n\n"  # a deal's notes in one cell, oldest first
ACTIONS = ("create", "update", "unchanged", "differs", "refused")


@dataclass(frozen=True)
class Outcome:
    line: int
    email: str
    action: str  # one of ACTIONS
    detail: str
    ref: str | None = None

    def text(self) -> str:
        return f"line {self.line}: {self.detail}"


@dataclass(frozen=True)
class ImportResult:
    encoding: str
    delimiter: str
    rows: int
    ignored_columns: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    written: bool  # False on a dry run and on a file refused whole

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(o.action for o in self.outcomes)
        return {a: found.get(a, 0) for a in ACTIONS}


@dataclass
class _Plan:
    row: LeadRow
    action: str
    detail: str
    stage: Stage | None = None
    rep: Rep | None = None
    contact_id: int | None = None
    deal_id: int | None = None
    company_id: int | None = None
    company_domain: str | None = None
    company_name: str | None = None
    changes: list[tuple[str, str | None, str | None]] = field(default_factory=list)


class _Names:
    """Stages and owners as rows name them, each distinct spelling looked up once (a file of
    100,000 rows names a handful), through the command line's own ``find_stage``/``find_rep``
    so a row is refused with the same words."""

    def __init__(self, session: Session):
        self.session = session
        self.stages: dict[str, Stage | str] = {}
        self.reps: dict[str, Rep | str] = {}
        self.rep_addresses: dict[str, str] | None = None

    def problems(self, stage: str | None, owner: str | None) -> tuple[str, ...]:
        found = (self.stage(stage) if stage else None, self.rep(owner) if owner else None)
        return tuple(x for x in found if isinstance(x, str))

    def stage(self, name: str) -> Stage | str:
        if name not in self.stages:
            try:
                self.stages[name] = find_stage(self.session, name, ("open",))
            except InboxCRMError as exc:
                self.stages[name] = f"Stage: {exc} (an import starts deals in open stages only)"
        return self.stages[name]

    def rep(self, name: str) -> Rep | str:
        if name not in self.reps:
            wanted = name
            if "@" in name:
                if self.rep_addresses is None:
                    self.rep_addresses = csv_queries.reps_by_address(self.session)
                wanted = self.rep_addresses.get(normalize(name) or name, name)
            try:
                self.reps[name] = find_rep(self.session, wanted)
            except InboxCRMError as exc:
                self.reps[name] = f"Owner: {exc}, or a rep's address"
        return self.reps[name]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _differences(row: LeadRow, stage: Stage | None, rep: Rep | None, deal: tuple, notes: list[str]
                 ) -> list[tuple[str, str | None, str | None]]:
    """(field, stored, in the file) for each field the row gives and the deal has otherwise."""
    _deal_id, stage_name, owner_name, value, next_step, due = deal
    found: list[tuple[str, str | None, str | None]] = []
    if stage is not None and stage.name != stage_name:
        found.append(("stage", stage_name, stage.name))
    if rep is not None and rep.name != owner_name:
        found.append(("owner", owner_name, rep.name))
    if row.value is not None and (value is None or Decimal(value) != row.value):
        found.append(("value", _money(value), _money(row.value)))
    if row.next_step is not None and row.next_step != next_step:
        found.append(("next step", next_step, row.next_step))
    if row.due is not None and row.due != due:
        found.append(("due date", due and due.isoformat(), row.due.isoformat()))
    if row.notes is not None and row.notes not in notes and row.notes != NOTES_JOIN.join(notes):
        found.append(("notes", None, clip(row.notes, 40)))
    return found


def _changes_text(changes: Sequence[tuple[str, str | None, str | None]]) -> str:
    def shown(v: str | None) -> str:
        return "(none)" if v is None else clip(printable(v), 40)

    return "; ".join(f"{name} {shown(old)} -> {shown(new)}" if name != "notes" else f"notes + {shown(new)}"
                     for name, old, new in changes)


def import_csv(session: Session, now: datetime, actor: str, data: bytes, *, maps: Iterable[str] = (),
               delimiter: str | None = None, encoding: str | None = None, dry_run: bool = False,
               update: bool = False, skip_bad: bool = False, today: date,
               team_domains: frozenset[str] = frozenset(), freemail_extra: frozenset[str] = frozenset(),
               file_name: str = "", lead_by_lead: bool = False) -> ImportResult:
    """Plans every row, then writes (unless ``dry_run``, or a row is refused and not
    ``skip_bad``). ``today`` is the team's date, for due dates typed as words ("tomorrow");
    ``lead_by_lead`` is for the tests, which check that it writes what the bulk writer does."""
    text, used = csv_rows.decode(data, encoding)
    layout, records = csv_rows.read_layout(text, used, delimiter, csv_rows.parse_maps(maps))
    read = [r for r in (csv_rows.read_row(line, fields, layout, today) for line, fields in records) if r is not None]
    plans = _plan(session, [r for r in read if isinstance(r, LeadRow)], update, team_domains, freemail_extra)
    names = _Names(session)
    outcomes = sorted([Outcome(e.line, e.email, "refused", "; ".join(e.problems + names.problems(e.stage, e.owner)))
                       for e in read if isinstance(e, RowError)]
                      + [Outcome(p.row.line, p.row.email, p.action, p.detail,
                                 p.deal_id and f"D-{p.deal_id}") for p in plans],
                      key=lambda o: o.line)
    refused = any(o.action == "refused" for o in outcomes)
    result = ImportResult(used, layout.delimiter, len(read), layout.ignored, tuple(outcomes), False)
    if dry_run or (refused and not skip_bad):
        return result
    created = _write(session, now, actor, [p for p in plans if p.action in ("create", "update")], file_name,
                     lead_by_lead)
    outcomes = [Outcome(o.line, o.email, o.action, o.detail, created.get(o.line, o.ref)) for o in outcomes]
    return ImportResult(used, layout.delimiter, len(read), layout.ignored, tuple(outcomes), True)


def _plan(session: Session, rows: list[LeadRow], update: bool, team_domains: frozenset[str],
          freemail_extra: frozenset[str]) -> list[_Plan]:
    names = _Names(session)
    ours = normalize_domains(team_domains)
    dups = csv_rows.duplicates(rows)
    later = {first: line for line, first in sorted(dups.items(), reverse=True)}
    contacts = csv_queries.contacts_by_address(session, (r.email for r in rows))
    open_deals = csv_queries.latest_open_deals(session, contacts.values())
    notes = csv_queries.notes_by_deal(session, (d[0] for d in open_deals.values()))
    domains = {r.line: company_domain(Address(r.email, r.name), team_domains, freemail_extra) for r in rows}
    by_domain = csv_queries.companies_by_domain(session, filter(None, domains.values()))
    by_name = csv_queries.companies_by_name(session, (r.company for r in rows if r.company))
    planned_domains: dict[str, str] = {}  # companies this file makes: domain -> name (its first row's)
    for row in rows:  # first, so that a freemail row may name a company a later row makes
        domain = domains[row.line]
        if domain is not None and domain not in by_domain and row.email not in contacts:
            name = planned_domains.setdefault(domain, row.company or company_name(domain))
            by_name.setdefault(name.lower(), (None, name))
    plans: list[_Plan] = []
    for row in rows:
        problems: list[str] = []
        if row.line in dups:
            problems.append(f"{row.email} is also on line {dups[row.line]}; one row per contact: "
                            f"merge the rows into one")
        elif row.line in later:
            problems.append(f"{row.email} is also on line {later[row.line]}; one row per contact: "
                            f"merge the rows into one")
        if row.email.rpartition("@")[2] in ours:
            problems.append(f"{row.email} is a team address; a lead needs an outside address")
        stage = names.stage(row.stage) if row.stage else None
        rep = names.rep(row.owner) if row.owner else None
        problems += [x for x in (stage, rep) if isinstance(x, str)]
        plan = _Plan(row, "refused", "", stage if isinstance(stage, Stage) else None,
                     rep if isinstance(rep, Rep) else None)
        contact_id = contacts.get(row.email)
        if contact_id is None and not problems:
            problems += _company_plan(plan, domains[row.line], by_domain, by_name, planned_domains)
        if problems:
            plan.detail = "; ".join(problems)
        elif contact_id is None:
            plan.action = "create"
            company = plan.company_name and f" at {plan.company_name}"
            plan.detail = f"new lead {row.email}{company or ''}"
        else:
            _match(plan, contact_id, open_deals.get(contact_id), notes, update)
        plans.append(plan)
    return plans


def _company_plan(plan: _Plan, domain: str | None, by_domain: dict, by_name: dict,
                  planned: dict[str, str]) -> list[str]:
    """The company a new contact joins, as ``deals.add_lead`` picks it: the address's domain's
    (made if new, named by the row), else an existing one the row names (freemail addresses)."""
    row = plan.row
    if domain is not None:
        if domain in by_domain:
            plan.company_id, plan.company_name = by_domain[domain]
        else:
            plan.company_domain, plan.company_name = domain, planned[domain]
        return []
    if not row.company:
        return []
    found = by_name.get(row.company.lower())
    if found is None:
        return [f'Company: no company "{clip(row.company, 40)}", and {row.email.rpartition("@")[2]} is not a '
                f"company domain (freemail or the team's), so it cannot be made from this address; add a row "
                f"with an address at the company's domain, or leave the company empty"]
    plan.company_id, plan.company_name = found
    if found[0] is None:  # made by an earlier row of this file: known by name once written
        plan.company_domain = next(d for d, n in planned.items() if n == found[1])
    return []


def _match(plan: _Plan, contact_id: int, deal: tuple | None, notes: dict[int, list[str]], update: bool) -> None:
    row = plan.row
    plan.contact_id = contact_id
    if deal is None:
        plan.action = "update" if update else "differs"
        plan.detail = (f"{row.email} matches contact {contact_id}, which has no open deal; "
                       + ("a new deal is added" if update else "use --update to add one"))
        return
    plan.deal_id = deal[0]
    plan.changes = _differences(row, plan.stage, plan.rep, deal, notes.get(deal[0], []))
    where = f"{row.email} matches contact {contact_id} (deal D-{deal[0]})"
    if not plan.changes:
        plan.action, plan.detail = "unchanged", f"{where}; unchanged"
    elif update:
        plan.action, plan.detail = "update", f"{where}; updates {_changes_text(plan.changes)}"
    else:
        plan.action, plan.detail = "differs", f"{where}; differs in: {_changes_text(plan.changes)}; use --update"


def _write(session: Session, now: datetime, actor: str, plans: list[_Plan], file_name: str,
           lead_by_lead: bool = False) -> dict[int, str]:
    """Writes the plans; returns line -> the new deal's reference. Updates go through
    ``app.deals`` (one audit entry per change, as by hand); new leads through
    ``store.leads.create_leads``, the whole file's in one statement per table, with their next
    steps, notes and audit entries (each lead's next-step and note entries right after its own)
    also in one statement each. ``lead_by_lead`` writes each new lead with ``create_lead``, as
    the intake does: slower, and the same rows (the tests compare the two)."""
    for plan in plans:
        if plan.deal_id is not None:
            _update(session, now, actor, plan)
    session.flush()
    conn = session.connection()
    reason = f"imported from {clip(file_name, 200)}" if file_name else "imported from a CSV file"
    new = [plan for plan in plans if plan.deal_id is None]
    if any(plan.stage is None for plan in new):
        start = first_stage(session, "open")
        for plan in new:
            plan.stage = plan.stage or start
    notes: list[dict] = []

    def follow_up(i: int, lead: CreatedLead) -> list[dict]:
        """The row's note, and the audit entries of its next step and note, as ``deal next``/``note``
        write them."""
        row, rep = new[i].row, new[i].rep
        entries = []
        if row.next_step:
            entries.append(audit.entry(now, actor, "next-step", "deal", lead.deal_id, reason, ref=lead.ref, old=None,
                                       new=deals._next_text(row.next_step, row.due, rep and rep.name)))
        if row.notes:
            notes.append(dict(deal_id=lead.deal_id, text=row.notes, actor=actor, at=now))
            entries.append(audit.entry(now, actor, "note", "deal", lead.deal_id, reason, ref=lead.ref, old=None,
                                       new=row.notes))
        return entries

    leads = [_new_lead(plan, actor, reason) for plan in new]
    log: list[dict] = []
    if lead_by_lead:  # the rows after the one that made a company join it, by id
        created, made = [], {}
        for i, lead in enumerate(leads):
            if lead.company_domain in made:
                lead = replace(lead, company_id=made[lead.company_domain], company_domain=None)
            created.append(create_lead(conn, lead, now, log=log))
            if lead.company_domain:
                made[lead.company_domain] = created[-1].company_id
            log.extend(follow_up(i, created[-1]))
    else:
        created = create_leads(conn, now, leads, log=log, then=follow_up)
    csv_queries.add_notes(conn, notes)
    audit.write_many(conn, log)
    return {plan.row.line: lead.ref for plan, lead in zip(new, created)}


def _new_lead(plan: _Plan, actor: str, reason: str) -> NewLead:
    """A new contact's lead, or a new deal for a known contact without an open one (--update);
    a company the file makes is named by ``company_domain`` on every row that joins it, and made
    by the first."""
    row, rep = plan.row, plan.rep
    return NewLead(
        actor=actor, prospect=Address(row.email, row.name), title=plan.company_name or row.name or row.email,
        stage_id=plan.stage.id, stage_name=plan.stage.name, source=row.source or csv_rows.DEFAULT_SOURCE,
        owner_id=rep and rep.id, owner_name=rep and rep.name, contact_id=plan.contact_id,
        company_id=plan.company_id, company_domain=None if plan.company_id is not None else plan.company_domain,
        company_name=plan.company_name, value=row.value, claim_contact=True, history_reason=reason,
        next_step=row.next_step, next_step_due=row.due, next_step_owner_id=rep and row.next_step and rep.id)


def _update(session: Session, now: datetime, actor: str, plan: _Plan) -> None:
    ref, row = f"D-{plan.deal_id}", plan.row
    for name, _old, _new in plan.changes:
        if name == "stage":
            deals.set_stage(session, now, actor, ref, plan.stage.name, "imported from a CSV file")
        elif name == "owner":
            deals.set_owner(session, now, actor, ref, plan.rep.name)
        elif name == "value":
            deals.set_value(session, now, actor, ref, str(row.value))
        elif name == "notes":
            deals.add_note(session, now, actor, ref, row.notes)
    if any(name in ("next step", "due date") for name, _o, _n in plan.changes):
        deal = deals.get_deal(session, ref)
        deals.set_next(session, now, actor, ref, row.next_step or deal.next_step, row.due or deal.next_step_due)


# -- the export -----------------------------------------------------------------------------------

def export_deals(session: Session, rows: Sequence[deals.DealRow]) -> str:
    """``deals list``'s rows as the import reads them (``csv_rows.HEADER``): export, import into
    an empty database and export again gives the same bytes."""
    ids = [int(r.ref[2:]) for r in rows]
    sources = csv_queries.sources_by_deal(session, ids)
    notes = csv_queries.notes_by_deal(session, ids)
    return csv_rows.write_csv(csv_rows.deal_header(), (
        (r.contact, r.address, r.company, r.stage, r.owner,
         None if r.value is None else Decimal(r.value).quantize(Decimal("0.01")),
         r.next_step, r.next_step_due, sources.get(i), NOTES_JOIN.join(notes.get(i, [])) or None)
        for r, i in zip(rows, ids)))


def export_contacts(rows: Sequence[deals.ContactRow]) -> str:
    return csv_rows.write_csv(("Name", "Email", "Other addresses", "Company", "Owner", "Source", "Open deals",
                               "Deals"),
                              ((r.name, r.addresses[0] if r.addresses else None, "; ".join(r.addresses[1:]) or None,
                                r.company, r.owner, r.source, r.open_deals, r.deals) for r in rows))


def export_companies(rows: Sequence[deals.CompanyRow]) -> str:
    return csv_rows.write_csv(("Name", "Domain", "Contacts", "Open deals", "Deals"),
                              ((r.name, r.domain, r.contacts, r.open_deals, r.deals) for r in rows))
