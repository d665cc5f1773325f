"""The one writer of a new lead (``store.leads.create_lead``), on SQLite and PostgreSQL: the rows
and audit entries a lead gets whoever makes it, an existing contact gaining what it lacked, and
an ORM session that sees what the Core statements wrote."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from inboxcrm.app import deals
from inboxcrm.app import team as admin
from inboxcrm.store.db import transaction
from inboxcrm.store.leads import NewLead, create_lead
from inboxcrm.store.models import AuditEntry, Company, Contact, ContactAddress, Deal, Stage, StageChange
from inboxcrm.values import Address

from .test_admin import NOW, run

WHEN = NOW - timedelta(hours=3)  # when the prospect wrote, before the intake saw it


@pytest.fixture
def crm(factory):
    run(factory, admin.add_rep, "alice", ["alice@acme.example"])
    return factory


def first_stage(session) -> Stage:
    return session.scalars(select(Stage).order_by(Stage.position)).first()


def lead(session, **fields) -> NewLead:
    stage = first_stage(session)
    alice = admin.find_rep(session, "alice")
    values = dict(actor="pipeline", prospect=Address("ann@northwind.example", "Ann Smith"), title="Pricing?",
                  stage_id=stage.id, stage_name=stage.name, source="website", owner_id=alice.id, owner_name="alice",
                  company_domain="northwind.example", history_reason="new lead from message <m1@x>",
                  why="message <m1@x>", rules=("web",))
    return NewLead(**{**values, **fields})


def test_a_lead_gets_company_contact_deal_history_and_audit(crm):
    with transaction(crm) as s:
        made = create_lead(s, lead(s, score_points=5), NOW, WHEN)
    assert made.ref == f"D-{made.deal_id}" and made.new_contact and made.contact_name == "Ann Smith"
    with crm() as s:
        deal = s.get(Deal, made.deal_id)
        assert (deal.title, deal.stage.name, deal.owner.name, deal.source, deal.fit_score, deal.score) == (
            "Pricing?", "New", "alice", "website", made.fit, made.fit)
        assert made.fit > 5 and deal.created_at == deal.last_activity_at == deal.last_stage_change_at == WHEN
        assert (deal.company.domain, deal.company.name, deal.company.created_at) == (
            "northwind.example", "Northwind", NOW)
        assert (deal.contact.name, deal.contact.owner.name, deal.contact.first_seen) == ("Ann Smith", "alice", WHEN)
        assert [a.address for a in deal.contact.addresses] == ["ann@northwind.example"]
        history = s.scalars(select(StageChange).where(StageChange.deal_id == deal.id)).all()
        assert [(h.from_stage, h.to_stage, h.actor, h.reason, h.at) for h in history] == [
            (None, "New", "pipeline", "new lead from message <m1@x>", WHEN)]
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        created = [(e.entity, e.actor, e.reason, e.at) for e in entries if e.action == "create" and e.entity != "rep"]
        assert created == [(what, "pipeline", "message <m1@x>", NOW) for what in ("company", "contact", "deal")]
        assert entries[-1].detail == {"ref": made.ref, "contact": "ann@northwind.example", "stage": "New",
                                      "owner": "alice", "source": "website", "value": None, "rules": ["web"]}


def test_the_audit_goes_to_the_callers_batch_when_it_keeps_one(crm):
    log: list[dict] = []
    with transaction(crm) as s:
        before = s.scalars(select(AuditEntry)).all()
        create_lead(s, lead(s), NOW, WHEN, log=log)
        assert s.scalars(select(AuditEntry)).all() == before  # nothing written: the caller writes its batch
    assert [(e["entity"], e["action"]) for e in log] == [("company", "create"), ("contact", "create"),
                                                         ("deal", "create")]


def test_an_existing_company_and_contact_are_joined_not_made_again(crm):
    with transaction(crm) as s:
        first = create_lead(s, lead(s), NOW, WHEN)
    with transaction(crm) as s:
        second = create_lead(s, lead(s, contact_id=first.contact_id, company_id=first.company_id,
                                     company_domain=None), NOW)
    assert (second.contact_id, second.company_id, second.new_contact) == (first.contact_id, first.company_id, False)
    with crm() as s:
        assert len(s.scalars(select(Company)).all()) == len(s.scalars(select(Contact)).all()) == 1
        assert len(s.scalars(select(ContactAddress)).all()) == 1


def test_an_existing_contact_gains_what_it_lacked_and_keeps_what_it_had(crm):
    with transaction(crm) as s:
        bare = create_lead(s, lead(s, prospect=Address("ann@gmail.example", ""), company_domain=None, owner_id=None,
                                   owner_name=None), NOW)
    with transaction(crm) as s:
        contact = s.get(Contact, bare.contact_id)  # loaded before the Core writes: must not go stale
        assert (contact.name, contact.company, contact.owner) == ("", None, None)
        made = create_lead(s, lead(s, prospect=Address("ann@gmail.example", "Ann"), contact_id=bare.contact_id,
                                   claim_contact=True), NOW)
        assert made.contact_name == "Ann"
        assert (contact.name, contact.company.domain, contact.owner.name) == ("Ann", "northwind.example", "alice")
    with transaction(crm) as s:  # without claim_contact the owner stays as it was (none here)
        create_lead(s, lead(s, prospect=Address("bob@gmail.example", "Bob"), company_domain=None, owner_id=None,
                            owner_name=None), NOW)
        bob = s.scalar(select(Contact).where(Contact.name == "Bob"))
        create_lead(s, lead(s, prospect=Address("bob@gmail.example", "Robert"), contact_id=bob.id,
                            company_domain=None), NOW)
        assert (bob.name, bob.owner) == ("Bob", None)


def test_values_are_cut_to_their_columns(crm):
    with transaction(crm) as s:
        made = create_lead(s, lead(s, prospect=Address("ann@northwind.example", "A" * 300), title="T" * 400,
                                   value=Decimal("12000.50")), NOW)
    with crm() as s:
        deal = s.get(Deal, made.deal_id)
        assert (len(deal.title), len(deal.contact.name), deal.value) == (300, 200, Decimal("12000.50"))


def test_a_lead_by_hand_writes_through_the_same_writer(crm):
    """``deals.add_lead`` checks what a person typed, then writes what the intake writes."""
    added = run(crm, deals.add_lead, "ann@northwind.example", "Ann Smith", owner="alice", value="12000",
                team_domains=frozenset({"acme.example"}))
    with crm() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action == "create", AuditEntry.entity != "rep")
                            .order_by(AuditEntry.id)).all()
        assert [(e.entity, e.reason) for e in entries] == [("company", ""), ("contact", ""), ("deal", "")]
        assert entries[0].detail == {"domain": "northwind.example", "name": "Northwind"}
        assert entries[1].detail == {"address": "ann@northwind.example", "name": "Ann Smith", "owner": "alice",
                                     "source": "manual"}
        assert entries[2].detail["value"] == "12000" and entries[2].detail["ref"] == added.ref
        history = s.scalars(select(StageChange)).all()
        assert [(h.to_stage, h.actor, h.reason) for h in history] == [("New", "test", "lead added by hand")]
