"""Deal operations and listings against a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import event, select, update

from inboxcrm.app import deals
from inboxcrm.app import team as admin
from inboxcrm.core import verbs
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.store.db import transaction
from inboxcrm.store.models import (
    AuditEntry,
    Deal,
    DealFlag,
    Mailbox,
    Message,
    MessageCopy,
)

from .conftest import refused
from .test_admin import ACTOR, NOW, read, run

TEAM = frozenset({"acme.example"})


@pytest.fixture
def crm(factory):
    run(factory, admin.add_rep, "alice", ["alice@acme.example"])
    run(factory, admin.add_rep, "bob", ["bob@acme.example"])
    return factory


def lead(factory, email: str, **kwargs) -> str:
    return run(factory, deals.add_lead, email, team_domains=TEAM, **kwargs).ref


def deal_of(factory, ref: str) -> Deal:
    with factory() as s:
        deal = s.get(Deal, deals.parse_ref(ref))
        _ = deal.stage, deal.owner  # loaded while the session is open
        return deal


def audit_actions(factory, ref: str) -> list[tuple[str, dict]]:
    with factory() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.entity == "deal",
                                                  AuditEntry.entity_id == deals.parse_ref(ref)).order_by(AuditEntry.id))
        return [(r.action, r.detail) for r in rows]


def set_activity(factory, ref: str, when: datetime) -> None:
    with transaction(factory) as s:
        s.execute(update(Deal).where(Deal.id == deals.parse_ref(ref)).values(last_activity_at=when))


# -- parsing --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("D-42", 42), ("d-7", 7), ("42", 42), (" D42 ", 42)])
def test_parse_ref(text, expected):
    assert deals.parse_ref(text) == expected


@pytest.mark.parametrize("text", ["", "X-1", "D-", "deal"])
def test_bad_ref_says_what_refs_look_like(text):
    with pytest.raises(Invalid, match='deal references look like D-42 \\(see "inboxcrm deals list"\\)'):
        deals.parse_ref(text)


@pytest.mark.parametrize("text, expected", [("12000", "12000"), ("12000.5", "12000.5"), ("12,000.50", "12000.50"),
                                            ("0", "0")])
def test_parse_value(text, expected):
    assert deals.parse_value(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["12k", "-5", "12,5", "1.234", "", "1e5"])
def test_bad_value_says_what_a_value_looks_like(text):
    with pytest.raises(Invalid, match=f'invalid value "{text}"; expected a number of at least 0 such as 12000'):
        deals.parse_value(text)


MONDAY = date(2026, 11, 23)


@pytest.mark.parametrize("text, expected", [
    ("2026-12-01", date(2026, 12, 1)), ("today", MONDAY), ("Tomorrow", date(2026, 11, 24)),
    ("in 3 days", date(2026, 11, 26)), ("in 1 day", date(2026, 11, 24)), ("in 2 weeks", date(2026, 12, 7)),
    ("friday", date(2026, 11, 27)), ("fri", date(2026, 11, 27)), ("monday", date(2026, 11, 30)),
    ("Tue", date(2026, 11, 24)),
])
def test_parse_due(text, expected):
    assert deals.parse_due(text, MONDAY) == expected


@pytest.mark.parametrize("text", ["someday", "in three days", "2026-13-01", "fr"])
def test_bad_due_lists_the_accepted_forms(text):
    with pytest.raises(Invalid, match="expected YYYY-MM-DD, today, tomorrow, in N days, in N weeks, in N months, or a weekday"):
        deals.parse_due(text, MONDAY)


# -- leads ----------------------------------------------------------------------------------

def test_a_lead_gets_contact_company_deal_history_and_audit(crm):
    added = run(crm, deals.add_lead, "Ann@Northwind-Traders.example", "Ann Smith", owner="alice", value="12000",
                source="fair", team_domains=TEAM)
    assert (added.contact, added.address, added.company, added.stage, added.owner, added.new_contact) == (
        "Ann Smith", "ann@northwind-traders.example", "Northwind Traders", "New", "alice", True)
    detail = read(crm, deals.show_deal, added.ref)
    assert (detail.company_domain, detail.value, detail.source, detail.fit, detail.score) == (
        "northwind-traders.example", Decimal("12000"), "fair", 10, 10)
    assert [(h.from_stage, h.to_stage, h.actor) for h in detail.history] == [(None, "New", ACTOR)]
    with crm() as s:
        entities = [e.entity for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "create"))]
    assert entities[-3:] == ["company", "contact", "deal"]


def test_freemail_leads_have_no_company_and_team_addresses_are_refused(crm):
    added = run(crm, deals.add_lead, "joe@gmail.com", team_domains=TEAM)
    assert added.company is None and read(crm, deals.list_companies) == []
    with pytest.raises(Invalid, match="joe@acme.example is a team address"):
        lead(crm, "joe@acme.example")
    with pytest.raises(Invalid, match='no company "Contoso", and gmail.com is not a company domain'):
        lead(crm, "sue@gmail.com", company="Contoso")
    lead(crm, "sue@contoso.example", company="Contoso Ltd")
    assert run(crm, deals.add_lead, "ceo@gmail.com", company="contoso ltd").company == "Contoso Ltd"


def test_an_existing_contact_is_reused_and_keeps_its_first_owner(crm):
    first = lead(crm, "ann@northwind.example", owner="alice")
    again = run(crm, deals.add_lead, "ANN@northwind.example", name="Ann", team_domains=TEAM)
    assert (again.new_contact, again.owner, again.other_open_deals, again.contact) == (False, "alice", (first,), "Ann")
    by_bob = run(crm, deals.add_lead, "ann@northwind.example", owner="bob", team_domains=TEAM)
    assert by_bob.owner == "bob"
    [contact] = read(crm, deals.list_contacts)
    assert (contact.owner, contact.open_deals, contact.deals) == ("alice", 3, 3)


def test_lead_refusals(crm):
    with pytest.raises(Invalid, match='ambiguous open stage "n": it could be New, Negotiation'):
        lead(crm, "a@b.example", stage="n")
    with pytest.raises(NotFound, match='unknown open stage "won"'):
        lead(crm, "a@b.example", stage="won")
    with pytest.raises(NotFound, match='unknown rep "carol"; reps are: alice, bob'):
        lead(crm, "a@b.example", owner="carol")
    with pytest.raises(Invalid, match='invalid value "lots"'):
        lead(crm, "a@b.example", value="lots")


def test_lead_add_takes_an_idn_address_in_either_spelling_as_one_contact(crm):
    first = run(crm, deals.add_lead, "Anna@XN--MLLER-BAU-Q9A.example", "Anna Müller", team_domains=TEAM)
    again = run(crm, deals.add_lead, "anna@Müller-Bau.example", team_domains=TEAM)
    colleague = run(crm, deals.add_lead, "jürgen@mail.müller-bau.example", team_domains=TEAM)
    assert (first.address, first.company, again.new_contact, again.contact) == (
        "anna@müller-bau.example", "Müller Bau", False, "Anna Müller")
    assert (colleague.address, colleague.company, colleague.new_contact) == (
        "jürgen@mail.müller-bau.example", "Müller Bau", True)
    assert [(c.name, c.domain, c.contacts) for c in read(crm, deals.list_companies)] == [
        ("Müller Bau", "müller-bau.example", 2)]


def test_lead_add_refuses_a_team_idn_address_and_bad_punycode(crm):
    with pytest.raises(Invalid, match="joe@bäckerei.example is a team address"):
        run(crm, deals.add_lead, "joe@xn--bckerei-5wa.example", team_domains=frozenset({"Bäckerei.example"}))
    with pytest.raises(Invalid, match='invalid address "anna@xn--zz.example"; expected an address such as'):
        lead(crm, "anna@xn--zz.example")


def test_lead_add_on_the_command_line_accepts_idn_and_shows_unicode(team):
    out = team("lead", "add", "--email", "Anna@XN--MLLER-BAU-Q9A.example", "--name", "Anna Müller").output
    assert out.startswith("D-1: Anna Müller <anna@müller-bau.example> at Müller Bau, New")
    again = team("lead", "add", "--email", "anna@müller-bau.example").output
    assert again.startswith("D-2: Anna Müller <anna@müller-bau.example> at Müller Bau") and "existing contact" in again
    refused(team, "lead", "add", "--email", "anna@müller bau.example")


# -- changes --------------------------------------------------------------------------------

def test_stage_moves_write_history_close_and_reopen(crm):
    ref = lead(crm, "ann@northwind.example", owner="alice")
    change = run(crm, deals.set_stage, ref.lower(), "prop", "sent the quote")
    assert change == deals.DealChange(ref, "stage", "New", "Proposal")
    won = run(crm, deals.mark_won, ref, "signed")
    assert (won.old, won.new) == ("Proposal", "Won")
    assert deal_of(crm, ref).closed_at == NOW
    run(crm, deals.set_stage, ref, "negotiation", "they want a discount")
    reopened = deal_of(crm, ref)
    assert reopened.closed_at is None and reopened.stage.name == "Negotiation"
    run(crm, deals.mark_lost, ref, "went with a competitor")
    lost = deal_of(crm, ref)
    assert (lost.stage.name, lost.lost_reason, lost.closed_at) == ("Lost", "went with a competitor", NOW)
    history = read(crm, deals.show_deal, ref).history
    assert [(h.from_stage, h.to_stage, h.reason) for h in history] == [
        (None, "New", "lead added by hand"), ("New", "Proposal", "sent the quote"), ("Proposal", "Won", "signed"),
        ("Won", "Negotiation", "they want a discount"), ("Negotiation", "Lost", "went with a competitor")]
    stages = [(d["old"], d["new"]) for action, d in audit_actions(crm, ref) if action == "stage"]
    assert stages == [("New", "Proposal"), ("Proposal", "Won"), ("Won", "Negotiation"), ("Negotiation", "Lost")]


def test_stage_refusals(crm):
    ref = lead(crm, "ann@northwind.example")
    with pytest.raises(Invalid, match="a lost deal needs a reason"):
        run(crm, deals.mark_lost, ref, " ")
    with pytest.raises(Invalid, match="a lost deal needs a reason"):
        run(crm, deals.set_stage, ref, "lost")
    with pytest.raises(Invalid, match=f"{ref} is already in New"):
        run(crm, deals.set_stage, ref, "new")
    with pytest.raises(NotFound, match='unknown stage "proposl"; stages are: New, Contacted'):
        run(crm, deals.set_stage, ref, "proposl")
    with pytest.raises(NotFound, match='no deal D-99; deal references look like D-42'):
        run(crm, deals.set_stage, "D-99", "won")


def test_next_step_owner_value_and_note(crm):
    ref = lead(crm, "ann@northwind.example", owner="alice")
    change = run(crm, deals.set_next, ref, "send the proposal", date(2026, 11, 27))
    assert change.new == "send the proposal (due 2026-11-27, owner alice)" and change.old is None
    run(crm, deals.set_next, ref, "call", None, "bob")
    run(crm, deals.set_owner, ref, "BOB")
    assert run(crm, deals.set_value, ref, "9500.50") == deals.DealChange(ref, "value", None, "9500.50")
    run(crm, deals.add_note, ref, "they liked the demo")
    detail = read(crm, deals.show_deal, ref)
    assert (detail.next_step, detail.next_step_due, detail.next_step_owner, detail.owner, detail.value) == (
        "call", None, "bob", "bob", Decimal("9500.50"))
    assert [(n.actor, n.text) for n in detail.notes] == [(ACTOR, "they liked the demo")]
    assert [a for a, _ in audit_actions(crm, ref)] == ["create", "next-step", "next-step", "owner", "value", "note"]
    run(crm, deals.mark_won, ref)
    with pytest.raises(Invalid, match=f"{ref} is closed \\(Won\\); reopen it first"):
        run(crm, deals.set_next, ref, "invoice")
    with pytest.raises(Invalid, match="a note needs text"):
        run(crm, deals.add_note, ref, "")


def test_rep_actions_count_as_activity(crm):
    ref = lead(crm, "ann@northwind.example")
    set_activity(crm, ref, NOW - timedelta(days=30))
    run(crm, deals.add_note, ref, "called")
    assert deal_of(crm, ref).last_activity_at == NOW


def snooze(factory, ref: str, until: date | None, reason: str = "", today: date = MONDAY) -> deals.DealChange:
    return run(factory, deals.set_snooze, ref, until, reason, today=today)


def test_snooze_sets_and_clears_with_audit_and_activity(crm):
    ref = lead(crm, "ann@northwind.example", owner="alice")
    set_activity(crm, ref, NOW - timedelta(days=30))
    assert snooze(crm, ref.lower(), date(2026, 12, 7), "<cmd-1@acme.example>") == deals.DealChange(
        ref, "snooze", None, "2026-12-07")
    snoozed = deal_of(crm, ref)
    assert (snoozed.snoozed_until, snoozed.last_activity_at) == (date(2026, 12, 7), NOW)
    assert read(crm, deals.show_deal, ref).snoozed_until == date(2026, 12, 7)
    assert snooze(crm, ref, date(2026, 12, 1)) == deals.DealChange(ref, "snooze", "2026-12-07", "2026-12-01")
    assert snooze(crm, ref, None, "<cmd-2@acme.example>") == deals.DealChange(ref, "snooze", "2026-12-01", None)
    assert deal_of(crm, ref).snoozed_until is None and read(crm, deals.show_deal, ref).snoozed_until is None
    with crm() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "snooze").order_by(AuditEntry.id))
        assert [(a.reason, a.detail["old"], a.detail["new"]) for a in rows] == [
            ("<cmd-1@acme.example>", None, "2026-12-07"), ("", "2026-12-07", "2026-12-01"),
            ("<cmd-2@acme.example>", "2026-12-01", None)]


@pytest.mark.parametrize("until", [MONDAY - timedelta(days=3), MONDAY, MONDAY + timedelta(days=366)])
def test_snooze_must_end_after_today_and_within_a_year(crm, until):
    ref = lead(crm, "ann@northwind.example")
    with pytest.raises(Invalid, match=f"cannot snooze {ref} until {until}: expected a date after today "
                                      r"\(2026-11-23\) and at most 365 days ahead \(2027-11-23\), such as in 2 weeks"):
        snooze(crm, ref, until)
    assert deal_of(crm, ref).snoozed_until is None


def test_snooze_today_is_the_callers_date(crm):
    """At 09:00 UTC on the 23rd it is already the 24th in Auckland: "tomorrow" there is the 25th."""
    ref = lead(crm, "ann@northwind.example")
    with pytest.raises(Invalid, match="after today \\(2026-11-24\\)"):
        snooze(crm, ref, date(2026, 11, 24), today=date(2026, 11, 24))
    assert snooze(crm, ref, MONDAY + timedelta(days=365)).new == "2027-11-23"  # a year is the most


def test_closed_deals_cannot_be_snoozed_but_can_be_woken(crm):
    ref = lead(crm, "ann@northwind.example")
    snooze(crm, ref, date(2026, 12, 7))
    run(crm, deals.mark_won, ref)
    with pytest.raises(Invalid, match=f"{ref} is closed \\(Won\\); reopen it first: inboxcrm deal stage {ref} STAGE"):
        snooze(crm, ref, date(2026, 12, 8))
    assert snooze(crm, ref, None).new is None
    with pytest.raises(NotFound, match="no deal D-99"):
        snooze(crm, "D-99", date(2026, 12, 8))


@pytest.mark.parametrize("text, expected", [("off", None), (" OFF ", None), ("in 2 weeks", date(2026, 12, 7)),
                                            ("2 weeks", date(2026, 12, 7)), ("fri", date(2026, 11, 27)),
                                            ("2026-12-24", date(2026, 12, 24))])
def test_snooze_forms_of_the_cli_and_of_email_are_one(text, expected):
    assert verbs.snooze_until(text, MONDAY) == expected  # what "deal snooze" and "[D-1] snooze:" both read


@pytest.mark.parametrize("text", ["someday", "", "of"])
def test_bad_snooze_lists_the_forms(text):
    with pytest.raises(Invalid, match="invalid snooze .*; expected 3 days, 2 weeks or 1 month"):
        verbs.snooze_until(text, MONDAY)


# -- listings -------------------------------------------------------------------------------

def test_list_deals_filters_and_sorts(crm):
    a = lead(crm, "ann@northwind.example", name="Ann", owner="alice", stage="prop", value="5000")
    b = lead(crm, "bo@contoso.example", owner="bob")
    c = lead(crm, "cy@fabrikam.example", owner="alice")
    d = lead(crm, "di@gmail.com")
    run(crm, deals.mark_lost, d, "no budget")
    set_activity(crm, b, NOW - timedelta(days=20))
    set_activity(crm, c, NOW - timedelta(days=5))
    rows = read(crm, deals.list_deals, NOW)
    assert [r.ref for r in rows] == [c, b, a]  # New before Proposal; within New most recent first
    first = rows[2]
    assert (first.contact, first.address, first.company, first.stage, first.owner, first.value) == (
        "Ann", "ann@northwind.example", "Northwind", "Proposal", "alice", Decimal("5000"))
    assert [r.ref for r in read(crm, deals.list_deals, NOW, None, "alice")] == [c, a]
    assert [r.ref for r in read(crm, deals.list_deals, NOW, None, None, 14)] == [b]
    assert [r.ref for r in read(crm, deals.list_deals, NOW, None, None, 3)] == [c, b]
    assert [r.ref for r in read(crm, deals.list_deals, NOW, "lost")] == [d]
    assert [r.ref for r in read(crm, deals.list_deals, NOW, None, None, None, True)] == [c, b, a, d]
    with pytest.raises(Invalid, match="invalid number of quiet days 0"):
        read(crm, deals.list_deals, NOW, None, None, 0)


def test_stalled_deals_are_those_whose_stage_has_not_moved(crm):
    moved, stuck = lead(crm, "ann@northwind.example"), lead(crm, "bo@contoso.example")
    with transaction(crm) as s:  # both created 40 days ago, both busy with email since
        for ref in (moved, stuck):
            deal = s.get(Deal, int(ref[2:]))
            deal.last_stage_change_at, deal.last_activity_at = NOW - timedelta(days=40), NOW
    run(crm, deals.set_stage, moved, "Qualified")
    assert [r.ref for r in read(crm, deals.list_deals, NOW, stalled_days=30)] == [stuck]
    assert read(crm, deals.list_deals, NOW, quiet_days=30) == []
    with pytest.raises(Invalid, match="invalid number of stalled days 0"):
        read(crm, deals.list_deals, NOW, stalled_days=0)


def test_quiet_and_stalled_listings_skip_snoozed_deals_until_the_snooze_date(crm):
    asleep, waking, awake = (lead(crm, f"p{i}@company{i}.example") for i in range(3))
    with transaction(crm) as s:  # all three quiet for 40 days and in New for 40 days
        for ref, until in ((asleep, MONDAY + timedelta(days=1)), (waking, MONDAY), (awake, None)):
            deal = s.get(Deal, int(ref[2:]))
            deal.last_stage_change_at = deal.last_activity_at = NOW - timedelta(days=40 + int(ref[2:]))
            deal.snoozed_until = until
    assert [r.ref for r in read(crm, deals.list_deals, NOW, quiet_days=30)] == [waking, awake]
    assert [r.ref for r in read(crm, deals.list_deals, NOW, stalled_days=30)] == [waking, awake]
    assert [r.ref for r in read(crm, deals.list_deals, NOW)] == [asleep, waking, awake]  # only those lists
    # the date is now's in UTC: 05:00 in Auckland on the 24th is still the 23rd
    late = datetime(2026, 11, 24, 5, 0, tzinfo=timezone(timedelta(hours=13)))
    assert [r.ref for r in read(crm, deals.list_deals, late, quiet_days=30)] == [waking, awake]
    assert [r.ref for r in read(crm, deals.list_deals, NOW + timedelta(days=1), quiet_days=30)] == [
        asleep, waking, awake]


def test_list_deals_is_one_query_however_many_deals(crm, engine):
    for i in range(5):
        lead(crm, f"p{i}@company{i}.example", owner="alice")
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        rows = read(crm, deals.list_deals, NOW)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(rows) == 5
    assert len([s for s in statements if "deals" in s.lower()]) == 1


def test_show_deal_has_the_message_timeline_and_flags(crm):
    ref = lead(crm, "ann@northwind.example", owner="alice")
    deal_id = deals.parse_ref(ref)
    with transaction(crm) as s:
        boxes = [Mailbox(name=n, role="capture", default_source=n, new_sender_policy="create", created_at=NOW)
                 for n in ("sales", "alice")]
        s.add_all(boxes)
        s.flush()
        for i, (direction, sender) in enumerate([("inbound", "ann@northwind.example"),
                                                 ("outbound", "alice@acme.example")]):
            msg = Message(message_id=f"m{i}@x.example", sha256="0" * 64, size=10, subject=f"Re: quote {i}",
                          from_address=sender, sent_at=NOW + timedelta(minutes=i), received_at=NOW,
                          status="processed", direction=direction, deal_id=deal_id)
            s.add(msg)
            s.flush()
            for box in boxes[: 2 - i]:
                s.add(MessageCopy(message_id=msg.id, mailbox_id=box.id, location=f"{box.name}/{i}", seen_at=NOW))
        s.add(DealFlag(deal_id=deal_id, kind="ambiguous-match", detail="also D-9", created_at=NOW))
        deal = s.get(Deal, deal_id)
        deal.inbound_count, deal.outbound_count, deal.first_response_seconds = 1, 1, 60
    detail = read(crm, deals.show_deal, ref)
    assert [(m.direction, m.from_address, m.message_id, m.mailboxes) for m in detail.messages] == [
        ("inbound", "ann@northwind.example", "m0@x.example", ("sales", "alice")),
        ("outbound", "alice@acme.example", "m1@x.example", ("sales",))]
    assert [(f.kind, f.detail) for f in detail.flags] == [("ambiguous-match", "also D-9")]
    assert (detail.engagement, detail.first_response_seconds, detail.addresses) == (7, 60, ("ann@northwind.example",))


def test_contacts_companies_and_pipeline_summary(crm):
    lead(crm, "ann@northwind.example", name="Ann", value="1000")
    lead(crm, "bo@northwind.example", name="Bo", value="500.50", stage="prop")
    won = lead(crm, "cy@contoso.example", name="Cy", value="700")
    run(crm, deals.mark_won, won)
    companies = read(crm, deals.list_companies)
    assert [(c.name, c.domain, c.contacts, c.open_deals, c.deals) for c in companies] == [
        ("Contoso", "contoso.example", 1, 0, 1), ("Northwind", "northwind.example", 2, 2, 2)]
    assert [(c.name, c.company, c.open_deals) for c in read(crm, deals.list_contacts)] == [
        ("Ann", "Northwind", 1), ("Bo", "Northwind", 1), ("Cy", "Contoso", 0)]
    summary = {s.stage: (s.kind, s.deals, s.value) for s in read(crm, deals.pipeline_summary)}
    assert summary["New"] == ("open", 1, Decimal("1000"))
    assert summary["Proposal"] == ("open", 1, Decimal("500.50"))
    assert summary["Won"] == ("won", 1, Decimal("700"))
    assert summary["Contacted"] == ("open", 0, Decimal("0"))
    assert list(summary) == ["New", "Contacted", "Qualified", "Proposal", "Negotiation", "Won", "Lost"]


def test_over_long_text_is_refused_not_cut(crm):
    ref = lead(crm, "ann@northwind.example")
    with pytest.raises(Invalid, match='invalid reason "x{39}…"; expected at most 500 characters'):
        run(crm, deals.mark_lost, ref, "x" * 501)
    with pytest.raises(Invalid, match='invalid source ""; expected 1 to 100 characters such as "website"'):
        lead(crm, "bo@northwind.example", source=" ")
