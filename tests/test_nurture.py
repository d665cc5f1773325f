"""Cold deals to Nurture and back, on SQLite and PostgreSQL: deals archive picks exactly the cold
open deals, Nurture counts as neither open nor lost anywhere, new mail (imported through the real
intake) brings a deal back and its owner is told, and the quarter's first review says how many
deals have gone cold."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from inboxcrm.app import deals as deals_app
from inboxcrm.app import notify, nurture, review
from inboxcrm.app.context import context_for
from inboxcrm.app.intake import process
from inboxcrm.app.reports import run_report
from inboxcrm.core import nurture as rules
from inboxcrm.core.metrics import Period
from inboxcrm.errors import Invalid
from inboxcrm.mail import render
from inboxcrm.store.db import transaction
from inboxcrm.store.digest_queries import load_digest_data
from inboxcrm.store.models import AuditEntry, Deal, OutboxMessage, Rep
from inboxcrm.store.records import mailbox_info
from inboxcrm.values import RawMessage

from .test_pipeline import CRM

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
LATER = T0 + timedelta(days=120)  # when deals archive runs
DAYS = 90


def message(mid: str, sender: str, to: str, sent: datetime, subject: str = "Quote please",
            reply_to: str | None = None) -> bytes:
    lines = [f"Message-ID: <{mid}>", f"From: {sender}", f"To: {to}", f"Subject: {subject}",
             f"Date: {format_datetime(sent)}"]
    if reply_to:
        lines += [f"In-Reply-To: <{reply_to}>", f"References: <{reply_to}>"]
    return ("\r\n".join(lines) + "\r\n\r\nHello, about the quote.\r\n").encode()


class Team(CRM):
    def feed_at(self, data: bytes, now: datetime, mailbox: str = "sales"):
        with transaction(self.factory) as s:
            info = mailbox_info(s, mailbox)
            return process(s, RawMessage(data, f"test:{mailbox}:{hash(data)}"), info, context_for(s, self.config), now)

    def lead(self, address: str, at: datetime, **changes) -> int:
        """A lead by hand at ``at``, then the columns ``changes`` names set as they would be."""
        with transaction(self.factory) as s:
            ref = deals_app.add_lead(s, at, "test", address, owner="alice").ref
            deal = s.get(Deal, int(ref[2:]))
            for column, value in changes.items():
                setattr(deal, column, value)
            return deal.id

    def deal(self, pk: int) -> Deal:
        with self.factory() as s:
            deal = s.get(Deal, pk)
            s.expunge(deal)
            return deal


@pytest.fixture
def crm(factory):
    return Team(factory)


def archived_ids(result) -> set[int]:
    return {int(d.ref[2:]) for d in result.deals}


# -- which deals go ---------------------------------------------------------------------------------

def test_archive_moves_exactly_the_cold_open_deals_and_keeps_their_stage(crm):
    cutoff = LATER - timedelta(days=DAYS)
    cold = crm.lead("cold@bigcorp.example", T0, last_activity_at=cutoff)  # exactly 90 days: cold
    almost = crm.lead("almost@bigcorp.example", T0, last_activity_at=cutoff + timedelta(minutes=1))
    recent = crm.lead("recent@bigcorp.example", LATER - timedelta(days=2))
    snoozed = crm.lead("snoozed@bigcorp.example", T0, snoozed_until=LATER.date() + timedelta(days=3))
    woke = crm.lead("woke@bigcorp.example", T0, snoozed_until=LATER.date() - timedelta(days=3))
    won = crm.lead("won@bigcorp.example", T0)
    lost = crm.lead("lost@bigcorp.example", T0)
    with transaction(crm.factory) as s:
        deals_app.mark_won(s, T0, "test", f"D-{won}")
        deals_app.mark_lost(s, T0, "test", f"D-{lost}", "no budget")
        deals_app.set_stage(s, T0, "test", f"D-{cold}", "proposal")
    proposal = crm.deal(cold).stage_id
    before = {pk: crm.deal(pk) for pk in (almost, recent, snoozed, won, lost)}

    with crm.factory() as s:
        dry = nurture.archive(s, LATER, "test", DAYS, dry_run=True)
    assert archived_ids(dry) == {cold, woke} and dry.dry_run
    assert "would move" in dry.summary and crm.deal(cold).nurtured_at is None  # nothing changed

    with transaction(crm.factory) as s:
        done = nurture.archive(s, LATER, "test", DAYS)
    assert archived_ids(done) == {cold, woke}
    moved = crm.deal(cold)
    assert moved.nurtured_at == moved.closed_at == LATER and moved.stage_id == proposal
    for pk, was in before.items():
        now = crm.deal(pk)
        assert (now.nurtured_at, now.closed_at, now.stage_id) == (None, was.closed_at, was.stage_id)
    with crm.factory() as s:
        entries = s.scalars(select(AuditEntry.entity_id).where(AuditEntry.action == "nurture")).all()
        listed = nurture.list_nurtured(s)
    assert sorted(entries) == sorted([cold, woke])
    assert {(r.ref, r.stage) for r in listed} == {(f"D-{cold}", "Proposal"), (f"D-{woke}", "New")}
    assert all(r.nurtured_at == LATER for r in listed)

    with transaction(crm.factory) as s:  # a second run finds nothing more: the deals are closed
        assert nurture.archive(s, LATER, "test", DAYS).deals == ()


def test_archive_refuses_a_number_of_days_below_one(crm):
    with crm.factory() as s:
        with pytest.raises(Invalid, match="1 or more, such as 90"):
            nurture.archive(s, LATER, "test", 0, dry_run=True)


# -- neither open nor lost --------------------------------------------------------------------------

def headline(report, key):
    return next(h.value for h in report.headlines if h.key == key)


def test_reports_pipeline_and_digest_do_not_count_nurtured_deals_as_open_or_lost(crm):
    cold = crm.lead("cold@bigcorp.example", T0, value=5000)
    crm.lead("warm@bigcorp.example", LATER - timedelta(days=1), value=700)
    lost = crm.lead("lost@bigcorp.example", T0)
    won = crm.lead("won@bigcorp.example", T0)
    with transaction(crm.factory) as s:
        deals_app.mark_lost(s, LATER - timedelta(days=3), "test", f"D-{lost}", "no budget")
        deals_app.mark_won(s, LATER - timedelta(days=3), "test", f"D-{won}")
        for pk in (lost, won):  # closing is activity; only D-cold is cold
            s.get(Deal, pk).last_activity_at = T0
        s.get(Deal, cold).last_activity_at = T0
    period = Period(LATER - timedelta(days=28), LATER + timedelta(days=1))
    now = LATER + timedelta(hours=1)

    def figures():
        with crm.factory() as s:
            pipeline = run_report(s, crm.config, "pipeline", period, None, now)
            wins = run_report(s, crm.config, "wins", period, None, now)
            activity = run_report(s, crm.config, "activity", period, None, now)
            alice = s.scalar(select(Rep.id).where(Rep.name == "alice"))
            digest = load_digest_data(s, alice, now - timedelta(days=1))
            summary = {row.stage: row.deals for row in deals_app.pipeline_summary(s)}
        return (headline(pipeline, "open_deals"), headline(pipeline, "open_value"), str(headline(wins, "win_rate")),
                headline(activity, "lost"), {d.id for d in digest.deals}, sum(t.deals for t in digest.team),
                summary["New"])

    before = figures()
    assert before[0] == 2 and cold in before[4] and before[6] == 2
    with transaction(crm.factory) as s:
        assert archived_ids(nurture.archive(s, LATER, "test", DAYS)) == {cold}
    after = figures()
    assert after[0] == 1 and after[1] == before[1] - 5000  # out of the open pipeline
    assert after[2] == before[2] and after[3] == before[3] == 1  # not lost: win rate and lost count unchanged
    assert cold not in after[4] and after[5] == before[5] - 1  # out of the digest
    assert after[6] == 1  # inboxcrm pipeline: the New stage holds the warm deal only
    with crm.factory() as s:  # the weekly review's closed deals: not in "lost", not anywhere
        data = review.review_queries.load_review_data(s, LATER - timedelta(days=7), LATER + timedelta(days=1))
    assert cold not in {d.id for d in data.closed} and lost in {d.id for d in data.closed}


# -- coming back ------------------------------------------------------------------------------------

def owner_notices(crm, now):
    notify.enqueue_due(crm.factory, crm.config, now)
    with crm.factory() as s:
        return [(r.key, r.to_address, r.subject, r.body) for r in
                s.scalars(select(OutboxMessage).where(OutboxMessage.key.like("nudge:revived:%")))]


def test_a_reply_from_the_contact_brings_the_deal_back_to_its_stage_and_tells_its_owner(crm):
    first = crm.feed_at(message("q1@bigcorp.example", "Jane Roe <jane@bigcorp.example>", "sales@acme.example",
                                T0), T0)
    pk = int(first.deal_ref[2:])
    with transaction(crm.factory) as s:
        deals_app.set_stage(s, T0, "test", first.deal_ref, "proposal")
        assert archived_ids(nurture.archive(s, LATER, "test", DAYS)) == {pk}
    stage = crm.deal(pk).stage_id

    old = crm.feed_at(message("old@bigcorp.example", "Jane Roe <jane@bigcorp.example>", "sales@acme.example",
                              T0 + timedelta(days=1), reply_to="q1@bigcorp.example"), LATER + timedelta(hours=1))
    assert old.deal_ref == first.deal_ref and crm.deal(pk).nurtured_at == LATER  # older mail read late: stays

    back_at = LATER + timedelta(days=1)
    reply = crm.feed_at(message("r1@bigcorp.example", "Jane Roe <jane@bigcorp.example>", "sales@acme.example",
                                back_at, subject="Re: Quote please", reply_to="q1@bigcorp.example"), back_at)
    assert reply.deal_ref == first.deal_ref
    deal = crm.deal(pk)
    assert (deal.nurtured_at, deal.closed_at, deal.stage_id) == (None, None, stage)
    with crm.factory() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "nurture-revive")).one()
    assert entry.entity_id == pk and entry.detail["stage"] == "Proposal" and entry.detail["direction"] == "inbound"

    notices = owner_notices(crm, back_at + timedelta(minutes=1))
    assert len(notices) == 1
    key, to, subject, body = notices[0]
    assert key == f"nudge:revived:{pk}:{int(back_at.timestamp())}" and to == "alice@acme.example"
    assert subject == f"D-{pk} is back from Nurture: Jane Roe wrote"
    assert b"back in Proposal" in body
    assert owner_notices(crm, back_at + timedelta(minutes=2)) == notices  # told once


def test_mail_reviving_many_deals_at_once_is_held_to_the_nudge_caps(crm):
    """Mail drives revivals, so a burst of it ("from" many cold contacts, forged or not) must not
    flood the owner: the hour's cap holds the rest back for a later pass."""
    cap = crm.config.digest.nudges_per_hour
    for n in range(cap + 3):
        crm.feed_at(message(f"q{n}@bigcorp.example", f"Person {n} <p{n}@bigcorp{n}.example>", "sales@acme.example",
                            T0), T0)
    with transaction(crm.factory) as s:
        assert len(archived_ids(nurture.archive(s, LATER, "test", DAYS))) == cap + 3
    back_at = LATER + timedelta(days=1)
    for n in range(cap + 3):
        crm.feed_at(message(f"r{n}@bigcorp.example", f"Person {n} <p{n}@bigcorp{n}.example>", "sales@acme.example",
                            back_at, subject="Back again"), back_at)
    assert len(owner_notices(crm, back_at + timedelta(minutes=1))) == cap  # the hour's cap
    assert len(owner_notices(crm, back_at + timedelta(minutes=2))) == cap  # still full
    assert len(owner_notices(crm, back_at + timedelta(hours=1, minutes=2))) == cap + 3  # the rest, an hour on


def test_mail_from_the_contact_without_a_thread_revives_their_nurtured_deal_not_a_new_one(crm):
    first = crm.feed_at(message("q1@bigcorp.example", "Jane Roe <jane@bigcorp.example>", "sales@acme.example",
                                T0), T0)
    with transaction(crm.factory) as s:
        nurture.archive(s, LATER, "test", DAYS)
    back_at = LATER + timedelta(days=2)
    fresh = crm.feed_at(message("new@bigcorp.example", "Jane Roe <jane@bigcorp.example>", "sales@acme.example",
                                back_at, subject="Back with budget"), back_at)
    assert fresh.deal_ref == first.deal_ref and fresh.reason == "contact"
    assert crm.deal(int(first.deal_ref[2:])).closed_at is None
    with crm.factory() as s:
        assert s.scalar(select(Deal.id).where(Deal.id != int(first.deal_ref[2:]))) is None  # no new deal


def test_a_rep_writing_to_a_nurtured_contact_revives_the_deal_and_the_owner_learns_who(crm):
    first = crm.feed_at(message("q1@bigcorp.example", "Jane Roe <jane@bigcorp.example>", "sales@acme.example",
                                T0), T0)
    pk = int(first.deal_ref[2:])
    with transaction(crm.factory) as s:
        nurture.archive(s, LATER, "test", DAYS)
    back_at = LATER + timedelta(days=3)
    crm.feed_at(message("b1@acme.example", "Bob <bob@acme.example>", "Jane Roe <jane@bigcorp.example>", back_at,
                        subject="Re: Quote please", reply_to="q1@bigcorp.example"), back_at, mailbox="bob")
    assert crm.deal(pk).nurtured_at is None and crm.deal(pk).closed_at is None
    (_, to, subject, _), = owner_notices(crm, back_at + timedelta(minutes=1))
    assert to == "alice@acme.example" and subject == f"D-{pk} is back from Nurture: bob wrote to Jane Roe"


def test_deal_revive_by_hand_and_a_stage_move_take_a_deal_out_of_nurture(crm):
    one = crm.lead("one@bigcorp.example", T0)
    two = crm.lead("two@bigcorp.example", T0)
    with transaction(crm.factory) as s:
        nurture.archive(s, LATER, "test", DAYS)
    with transaction(crm.factory) as s:
        back = nurture.revive(s, LATER + timedelta(hours=1), "test", f"D-{one}")
        deals_app.mark_won(s, LATER + timedelta(hours=1), "test", f"D-{two}")
    assert back.stage == "New" and crm.deal(one).closed_at is None and crm.deal(one).nurtured_at is None
    won = crm.deal(two)  # won now, counted as won now: not at the archive's time, not as nurtured
    assert won.nurtured_at is None and won.closed_at == LATER + timedelta(hours=1)
    with crm.factory() as s:
        with pytest.raises(Invalid, match="not in Nurture"):
            nurture.revive(s, LATER, "test", f"D-{one}")


# -- the quarter's reminder --------------------------------------------------------------------------

@pytest.mark.parametrize("day,first", [
    (date(2026, 1, 5), True), (date(2026, 4, 6), True), (date(2026, 7, 6), True), (date(2026, 10, 5), True),
    (date(2026, 1, 7), True), (date(2026, 1, 12), False), (date(2026, 2, 2), False), (date(2026, 3, 30), False),
])
def test_only_the_first_weekly_review_of_a_quarter_is_its_first(day, first):
    assert rules.first_review_of_quarter(day) is first
    line = rules.quarterly_reminder(day, 3, 90)
    assert (line == "3 open deals have had no activity for 90 days: inboxcrm deals archive --dry-run lists them"
            ) is first and (line == "") is (not first)
    assert rules.quarterly_reminder(day, 0, 90) == ""


def test_the_managers_review_carries_the_reminder_only_in_the_quarters_first_week(crm):
    with transaction(crm.factory) as s:
        s.scalar(select(Rep).where(Rep.name == "alice")).manager = True
    for n in range(3):
        crm.lead(f"cold{n}@bigcorp.example", datetime(2026, 1, 1, tzinfo=timezone.utc) - timedelta(days=200))
    env = render.template_env()
    line = "3 open deals have had no activity for 90 days: inboxcrm deals archive --dry-run lists them"
    with crm.factory() as s:
        manager = review.recipients(s, crm.config)[0]
        first = review.preview(s, crm.config, manager, date(2026, 4, 6), datetime(2026, 4, 6, 12, tzinfo=timezone.utc),
                               env)
        second = review.preview(s, crm.config, manager, date(2026, 4, 13),
                                datetime(2026, 4, 13, 12, tzinfo=timezone.utc), env)
    assert line in first.text and line in first.html
    assert "no activity for 90 days" not in second.text and "deals archive" not in second.html


# -- the command line -------------------------------------------------------------------------------

def test_the_command_line_archives_lists_and_revives(team, factory):
    from .conftest import refused

    team("lead", "add", "--email", "cold@bigcorp.example", "--owner", "alice")
    team("lead", "add", "--email", "warm@bigcorp.example", "--owner", "alice")
    with transaction(factory) as s:
        cold = s.scalar(select(Deal).order_by(Deal.id))
        cold.last_activity_at -= timedelta(days=91)
        ref = cold.ref

    dry = team("deals", "archive", "--dry-run").output
    assert ref in dry and "D-2" not in dry and "1 deal with no activity for 90 days would move" in dry
    assert "nothing in Nurture" in team("deals", "list", "--nurture").output
    done = team("deals", "archive", "--inactive", "90").output
    assert "1 deal with no activity for 90 days moved to Nurture" in done
    listed = team("deals", "list", "--nurture").output
    assert ref in listed and "New" in listed and "IN NURTURE SINCE" in listed
    assert ref not in team("deals", "list").output
    assert "--stage" in refused(team, "deals", "list", "--nurture", "--stage", "new")
    assert "1 or more" in refused(team, "deals", "archive", "--inactive", "0")
    assert "in Nurture since" in team("deal", "show", ref).output
    assert f"inboxcrm deal revive {ref}" in refused(team, "deal", "next", ref, "call them")
    assert f"{ref}: back from Nurture" in team("deal", "revive", ref).output
    assert ref in team("deals", "list").output
