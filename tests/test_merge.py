"""Merging contacts and companies and undoing it, on SQLite and PostgreSQL.

The promise checked here is the issue's: a merge followed by its undo leaves every table exactly
as it was (every column of every row, found from ``Base.metadata``, not from a list), except the
merge's own row (now marked undone) and the two audit entries that say what happened.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from inboxcrm.app import deals, merge
from inboxcrm.app import team as admin
from inboxcrm.app.importer import import_path
from inboxcrm.config import build_config
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.store.db import transaction
from inboxcrm.store.models import (
    AuditEntry,
    Base,
    Company,
    Contact,
    ContactAddress,
    Deal,
    DealFlag,
    Message,
)

from .conftest import refused

CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)
TEAM = frozenset({"acme.example"})
JAN = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
MAR = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
ACTOR = "cli:tester"


def run(factory, fn, *args, at: datetime = NOW, **kwargs):
    with transaction(factory) as session:
        return fn(session, at, ACTOR, *args, **kwargs)


def snapshot(factory) -> dict[str, list[dict]]:
    """Every column of every row of every table, in key order."""
    with factory() as session:
        return {table.name: [dict(row) for row in session.execute(
                    select(table).order_by(*table.primary_key.columns)).mappings()]
                for table in Base.metadata.sorted_tables}


def eml(path: Path, n: int, sender: str, to: str, subject: str, when: datetime) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    file = path / f"{n:03d}.eml"
    file.write_bytes(
        f"Message-ID: <m{n}@mail.example>\r\nFrom: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: {when:%a, %d %b %Y %H:%M:%S +0000}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello, about {subject}.\r\n".encode())
    return file


def contact_of(factory, address: str) -> int:
    with factory() as s:
        return s.scalar(select(ContactAddress.contact_id).where(ContactAddress.address == address))


def company_of(factory, domain: str) -> int:
    with factory() as s:
        return s.scalar(select(Company.id).where(Company.domain == domain))


@pytest.fixture
def crm(factory, tmp_path):
    """Two records of one person at Northwind, and a second Northwind company (northwind.de):
    each with addresses (one bouncing), deals with notes, stage history and flags, messages
    seen in two mailboxes with their raw bytes, and the audit entries all of that wrote.

    Jane's older record (j.doe@, first seen in January, owned by bob) is the one merged into the
    younger (jane@, March, alice), so the merge has an owner to hand over."""
    run(factory, admin.add_rep, "alice", ["alice@acme.example"], at=JAN)
    run(factory, admin.add_rep, "bob", ["bob@acme.example"], at=JAN)
    run(factory, admin.add_mailbox, "sales", "alice", "capture", at=JAN)
    run(factory, admin.add_mailbox, "inbox-bob", "bob", "rep", at=JAN)
    old = run(factory, deals.add_lead, "j.doe@northwind.example", "Jane Doe", owner="bob", source="fair",
              value="1200", team_domains=TEAM, at=JAN)
    second = run(factory, deals.add_lead, "j.doe@northwind.example", owner="bob", team_domains=TEAM, at=JAN)
    new = run(factory, deals.add_lead, "jane@northwind.example", "Jane Doe", owner="alice", team_domains=TEAM, at=MAR)
    other = run(factory, deals.add_lead, "max@northwind.de", "Max Muster", owner="alice", team_domains=TEAM, at=MAR)
    run(factory, deals.set_stage, old.ref, "Contacted", at=MAR)
    run(factory, deals.set_stage, second.ref, "Lost", "no budget", at=MAR)
    for ref, text in ((old.ref, "met at the fair"), (new.ref, "asked for a demo"), (other.ref, "sister company")):
        run(factory, deals.add_note, ref, text, at=MAR)
    with transaction(factory) as s:
        jane_old = s.scalar(select(ContactAddress.contact_id).where(ContactAddress.address == "j.doe@northwind.example"))
        s.add(ContactAddress(contact_id=jane_old, address="jane.doe@northwind.example", bounced_at=MAR,
                             bounce_reason="550 5.1.1 mailbox unknown"))
    mails = tmp_path / "mail"
    eml(mails, 1, "Jane Doe <j.doe@northwind.example>", "sales@acme.example", "pricing", MAR)
    eml(mails, 2, "bob <bob@acme.example>", "j.doe@northwind.example", "Re: pricing", MAR + timedelta(hours=1))
    eml(mails, 3, "Jane Doe <jane@northwind.example>", "sales@acme.example", "demo", MAR + timedelta(hours=2))
    eml(mails, 4, "Max <max@northwind.de>", "sales@acme.example", "group terms", MAR + timedelta(hours=3))
    import_path(factory, CONFIG, "sales", mails, parse_workers=0)
    import_path(factory, CONFIG, "inbox-bob", mails, parse_workers=0)
    with transaction(factory) as s:
        for ref in (old.ref, new.ref):
            deal_id = deals.parse_ref(ref)
            message = s.scalar(select(Message.id).where(Message.deal_id == deal_id).limit(1))
            s.add(DealFlag(deal_id=deal_id, kind="ambiguous-match", detail="check", message_id=message, created_at=MAR))
    return factory


def test_the_fixture_is_as_rich_as_it_claims(crm):
    state = snapshot(crm)
    jane_old, jane_new = contact_of(crm, "j.doe@northwind.example"), contact_of(crm, "jane@northwind.example")
    assert {a["address"] for a in state["contact_addresses"] if a["contact_id"] == jane_old} == {
        "j.doe@northwind.example", "jane.doe@northwind.example"}
    assert sum(d["contact_id"] == jane_old for d in state["deals"]) == 2
    assert {m["contact_id"] for m in state["messages"]} >= {jane_old, jane_new}
    assert len(state["message_copies"]) == 2 * len(state["messages"]) == 8
    assert len(state["message_raw"]) == 4 and state["notes"] and state["deal_flags"] and state["stage_history"]
    assert len(state["companies"]) == 2


def audit_since(factory, after: int) -> list[tuple]:
    with factory() as s:
        return [(a.actor, a.action, a.entity, a.entity_id, a.reason, a.detail) for a in
                s.scalars(select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id))]


def undone_exactly(before: dict, after: dict, merge_id: int, expected_audit: list[dict]) -> None:
    """``after`` is ``before`` but for the merge row (undone) and the audit entries of merge and undo."""
    for table in before:
        if table not in ("merges", "audit_log"):
            assert after[table] == before[table], f"{table} differs after undo"
    assert before["merges"] == [] and [(m["id"], m["undone_at"], m["undone_by"]) for m in after["merges"]] == [
        (merge_id, NOW + timedelta(hours=1), ACTOR)]
    added = after["audit_log"][len(before["audit_log"]):]
    assert after["audit_log"][:len(before["audit_log"])] == before["audit_log"]
    assert [{k: a[k] for k in ("at", "actor", "action", "entity", "entity_id", "detail", "reason")} for a in added] \
        == expected_audit


def test_contact_merge_moves_everything_keeps_the_older_owner_and_undo_restores_every_table(crm):
    kept, merged = contact_of(crm, "jane@northwind.example"), contact_of(crm, "j.doe@northwind.example")
    before = snapshot(crm)
    done = run(crm, merge.merge_contacts, "jane@northwind.example", str(merged))
    assert (done.kept_id, done.merged_id) == (kept, merged)
    assert done.moved == {"contact_addresses": 2, "deals": 2, "messages": 2}

    state = snapshot(crm)
    (jane,) = [c for c in state["contacts"] if c["name"] == "Jane Doe"]
    bob = next(r["id"] for r in state["reps"] if r["name"] == "bob")
    assert (jane["id"], jane["owner_rep_id"], jane["first_seen"], jane["source"]) == (kept, bob, JAN, "fair")
    assert done.changed == {"owner_rep_id": (before_owner(before, kept), bob), "first_seen": (MAR, JAN),
                            "source": ("manual", "fair")}
    assert sorted(a["address"] for a in state["contact_addresses"] if a["contact_id"] == kept) == [
        "j.doe@northwind.example", "jane.doe@northwind.example", "jane@northwind.example"]
    bounced = next(a for a in state["contact_addresses"] if a["address"] == "jane.doe@northwind.example")
    assert bounced["bounce_reason"] == "550 5.1.1 mailbox unknown"  # moved as it was
    assert all(m["contact_id"] in (kept, None) for m in state["messages"] if "northwind.example" in m["from_address"])
    assert sum(d["contact_id"] == kept for d in state["deals"]) == 3
    assert state["notes"] == before["notes"] and state["deal_flags"] == before["deal_flags"]  # they follow their deals
    assert state["message_copies"] == before["message_copies"] and state["message_raw"] == before["message_raw"]
    (row,) = state["merges"]
    assert (row["kind"], row["kept_id"], row["merged_id"], row["actor"], row["undone_at"]) == (
        "contact", kept, merged, ACTOR, None)
    assert {(m["table"], m["column"]) for m in row["undo"]["moved"]} == {
        ("contact_addresses", "contact_id"), ("deals", "contact_id"), ("messages", "contact_id")}
    assert [d["values"]["id"] for d in row["undo"]["deleted"]] == [merged]
    assert [m.id for m in read(crm, merge.list_merges)] == [done.merge_id]

    undone = run(crm, merge.undo_merge, at=NOW + timedelta(hours=1))
    assert (undone.merge_id, undone.restored) == (done.merge_id, 6 + 1 + 3)
    undone_exactly(before, snapshot(crm), done.merge_id, [
        dict(at=NOW, actor=ACTOR, action="merge", entity="contact", entity_id=kept, reason=f"merge {done.merge_id}",
             detail=dict(merge=done.merge_id, merged=merged, changed=["first_seen", "owner_rep_id", "source"],
                         moved={"contact_addresses": 2, "deals": 2, "messages": 2})),
        dict(at=NOW + timedelta(hours=1), actor=ACTOR, action="undo-merge", entity="contact", entity_id=kept,
             reason=f"merge {done.merge_id}", detail=dict(merge=done.merge_id, merged=merged))])


def before_owner(state: dict, contact_id: int) -> int:
    return next(c["owner_rep_id"] for c in state["contacts"] if c["id"] == contact_id)


def read(factory, fn, *args):
    with factory() as session:
        return fn(session, *args)


def test_company_merge_moves_contacts_and_deals_and_undo_restores_every_table(crm):
    kept, merged = company_of(crm, "northwind.example"), company_of(crm, "northwind.de")
    before = snapshot(crm)
    done = run(crm, merge.merge_companies, "northwind.example", "northwind.de")
    assert (done.kept_id, done.merged_id, done.moved) == (kept, merged, {"contacts": 1, "deals": 1})
    assert done.changed == {}  # northwind.example was known first, and keeps its name and domain
    state = snapshot(crm)
    assert [c["domain"] for c in state["companies"]] == ["northwind.example"]
    assert {c["company_id"] for c in state["contacts"]} == {kept}
    assert {d["company_id"] for d in state["deals"]} == {kept}
    assert state["merges"][0]["undo"]["deleted"][0]["values"]["domain"] == "northwind.de"

    run(crm, merge.undo_merge, done.merge_id, at=NOW + timedelta(hours=1))
    undone_exactly(before, snapshot(crm), done.merge_id, [
        dict(at=NOW, actor=ACTOR, action="merge", entity="company", entity_id=kept, reason=f"merge {done.merge_id}",
             detail=dict(merge=done.merge_id, merged=merged, changed=[], moved={"contacts": 1, "deals": 1})),
        dict(at=NOW + timedelta(hours=1), actor=ACTOR, action="undo-merge", entity="company", entity_id=kept,
             reason=f"merge {done.merge_id}", detail=dict(merge=done.merge_id, merged=merged))])


def test_a_company_merged_into_a_younger_one_hands_over_its_first_date(crm):
    with transaction(crm) as s:
        s.execute(update(Company).where(Company.domain == "northwind.de").values(created_at=JAN - timedelta(days=1)))
    done = run(crm, merge.merge_companies, "northwind.example", "northwind.de")
    assert done.changed == {"created_at": (JAN, JAN - timedelta(days=1))}
    before_undo = snapshot(crm)["companies"]
    assert before_undo[0]["created_at"] == JAN - timedelta(days=1)
    run(crm, merge.undo_merge)
    assert [c["created_at"] for c in snapshot(crm)["companies"]] == [JAN, JAN - timedelta(days=1)]


def test_mail_from_a_merged_address_lands_with_the_kept_contact(crm, tmp_path):
    kept = contact_of(crm, "jane@northwind.example")
    run(crm, merge.merge_contacts, "jane@northwind.example", "j.doe@northwind.example")
    eml(tmp_path / "later", 9, "Jane <jane.doe@northwind.example>", "sales@acme.example", "order", NOW)
    import_path(crm, CONFIG, "sales", tmp_path / "later", parse_workers=0)
    with crm() as s:
        message = s.scalar(select(Message).where(Message.message_id == "m9@mail.example"))
        assert message.contact_id == kept and s.get(Deal, message.deal_id).contact_id == kept


# -- refusals -----------------------------------------------------------------------------------

def test_merge_refusals_say_what_would_be_valid(crm):
    jane = contact_of(crm, "jane@northwind.example")
    with pytest.raises(Invalid, match=f"contact {jane} cannot be merged into itself"):
        run(crm, merge.merge_contacts, str(jane), "jane@northwind.example")
    with pytest.raises(Invalid, match="cannot be merged into itself"):  # two addresses of one contact
        run(crm, merge.merge_contacts, "j.doe@northwind.example", "jane.doe@northwind.example")
    with pytest.raises(NotFound, match="no contact 999; give a contact's id or one of its addresses"):
        run(crm, merge.merge_contacts, str(jane), "999")
    with pytest.raises(NotFound, match="no contact has the address nobody@x.example"):
        run(crm, merge.merge_contacts, str(jane), "Nobody@X.example")
    with pytest.raises(Invalid, match='"jane" is neither a contact id'):
        run(crm, merge.merge_contacts, "jane", str(jane))
    with pytest.raises(NotFound, match="no company has the domain gone.example"):
        run(crm, merge.merge_companies, "northwind.example", "gone.example")
    with pytest.raises(Invalid, match="cannot be merged into itself"):
        run(crm, merge.merge_companies, "northwind.example", "www.northwind.example")
    assert snapshot(crm)["merges"] == []


def test_undo_twice_or_with_nothing_to_undo_is_refused(crm):
    with pytest.raises(Invalid, match="there is no merge to undo"):
        run(crm, merge.undo_merge)
    done = run(crm, merge.merge_contacts, "jane@northwind.example", "j.doe@northwind.example")
    run(crm, merge.undo_merge, done.merge_id)
    with pytest.raises(Invalid, match=f"merge {done.merge_id} was undone already, at 2026-05-04 09:00 UTC by {ACTOR}"):
        run(crm, merge.undo_merge, done.merge_id)
    with pytest.raises(Invalid, match="there is no merge to undo"):
        run(crm, merge.undo_merge)
    with pytest.raises(NotFound, match=f"no merge 77; merges: {done.merge_id}"):
        run(crm, merge.undo_merge, 77)


def test_undo_refuses_when_a_moved_row_was_deleted_or_moved_again(crm):
    done = run(crm, merge.merge_contacts, "jane@northwind.example", "j.doe@northwind.example")
    with transaction(crm) as s:
        gone = s.scalar(select(ContactAddress.id).where(ContactAddress.address == "jane.doe@northwind.example"))
        s.execute(delete(ContactAddress).where(ContactAddress.id == gone))
        deal = s.scalar(select(Deal.id).where(Deal.contact_id == done.kept_id).order_by(Deal.id).limit(1))
        other = s.scalar(select(Contact.id).where(Contact.name == "Max Muster"))
        s.execute(update(Deal).where(Deal.id == deal).values(contact_id=other))
    before = snapshot(crm)
    with pytest.raises(Invalid) as refusal:
        run(crm, merge.undo_merge)
    assert f"merge {done.merge_id} cannot be undone safely" in str(refusal.value)
    assert f"contact_addresses row {gone} was deleted since" in str(refusal.value)
    assert f"deals row {deal} has contact_id {other} now, not {done.kept_id} as the merge left it" in str(refusal.value)
    assert snapshot(crm) == before  # refused whole: nothing put back


def test_undo_refuses_when_the_merged_company_s_domain_was_taken_again(crm, tmp_path):
    """Mail from a new person at the merged company's domain makes that company anew: the old
    row cannot come back beside it."""
    done = run(crm, merge.merge_companies, "northwind.example", "northwind.de")
    eml(tmp_path / "later", 10, "Eva <eva@northwind.de>", "sales@acme.example", "hello", NOW)
    import_path(crm, CONFIG, "sales", tmp_path / "later", parse_workers=0)
    anew = company_of(crm, "northwind.de")
    with pytest.raises(Invalid, match=f"companies row {done.merged_id} cannot come back: "
                                      f"its domain northwind.de is taken by row {anew}"):
        run(crm, merge.undo_merge)


def test_undo_refuses_when_the_kept_contact_was_merged_away_and_names_that_merge(crm):
    original = snapshot(crm)
    first = run(crm, merge.merge_contacts, "jane@northwind.example", "j.doe@northwind.example")
    second = run(crm, merge.merge_contacts, "max@northwind.de", "jane@northwind.example")
    with pytest.raises(Invalid, match=f"contact {first.kept_id}, the one kept, no longer exists "
                                      fr"\(merge {second.merge_id} merged it into contact {second.kept_id}: "
                                      "undo that first\\)"):
        run(crm, merge.undo_merge, first.merge_id)
    run(crm, merge.undo_merge)  # the latest: the second
    run(crm, merge.undo_merge)  # then the first
    after = snapshot(crm)
    assert {t: rows for t, rows in after.items() if t not in ("merges", "audit_log")} == {
        t: rows for t, rows in original.items() if t not in ("merges", "audit_log")}
    assert [(m["id"], m["undone_at"] is not None) for m in after["merges"]] == [(first.merge_id, True),
                                                                               (second.merge_id, True)]


def test_undo_refuses_when_a_field_the_merge_set_was_changed_since(crm):
    done = run(crm, merge.merge_contacts, "jane@northwind.example", "j.doe@northwind.example")
    with transaction(crm) as s:
        s.execute(update(Contact).where(Contact.id == done.kept_id).values(source="referral"))
    with pytest.raises(Invalid, match=f"contacts row {done.kept_id}'s source was changed since the merge "
                                      r"\(to referral; the merge set fair\)"):
        run(crm, merge.undo_merge)


# -- the command line -----------------------------------------------------------------------------

def test_cli_merge_list_and_undo(team, factory):
    for email, owner in (("ann@globex.example", "bob"), ("ann.lee@globex.example", "alice")):
        team("lead", "add", "--email", email, "--name", "Ann Lee", "--owner", owner)
    kept, merged = contact_of(factory, "ann@globex.example"), contact_of(factory, "ann.lee@globex.example")
    out = team("contact", "merge", "ann@globex.example", "ann.lee@globex.example").stdout
    assert f"merged contact {merged} Ann Lee <ann.lee@globex.example> into contact {kept} " in out
    assert "moved: 1 contact_addresses, 1 deals" in out and "undo: inboxcrm merge undo 1" in out
    listed = team("merge", "list").stdout.splitlines()
    assert listed[0].split()[:4] == ["ID", "KIND", "KEPT", "MERGED"] and listed[1].split()[:4] == [
        "1", "contact", str(kept), str(merged)]
    assert '"undone_at": null' in team("merge", "list", "--json").stdout
    assert "undid merge 1: contact" in team("merge", "undo").stdout
    assert "merge 1 was undone already" in refused(team, "merge", "undo", "1")
    assert "no contact 42" in refused(team, "contact", "merge", "42", str(kept))
    assert "no company has the domain globex.test" in refused(team, "company", "merge", "globex.example", "globex.test")
    assert "Invalid value for '[MERGE_ID]'" in team("merge", "undo", "x", code=2).stderr


def test_every_lazy_summary_is_its_command_s_first_sentence():
    import click

    from inboxcrm.cli import deals as deal_commands
    from inboxcrm.cli import people

    for group in (people.contact, people.company, people.merge, deal_commands.contacts):
        ctx = click.Context(group, info_name=group.name)
        for name, lazy in group.lazy.items():
            if not lazy.path.startswith("inboxcrm.cli.merge:"):
                continue  # another command's module
            real = group.get_command(ctx, name)
            for width in (30, 45, 80, 1000):
                assert click.Command(name, help=lazy.summary).get_short_help_str(width) == \
                    real.get_short_help_str(width), f"{group.name} {name}"
