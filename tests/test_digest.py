"""The digest's content on both backends: each section holds exactly its deals, for the right rep,
on the rep's local date, and each deal once (under its most urgent reason, the others as badges). Deals are made with the real admin and deal functions (and held mail
with the pipeline); the clock is passed in, so the same team is looked at on different days."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import update

from inboxcrm.app import deals, team
from inboxcrm.app.context import context_for
from inboxcrm.app.intake import process
from inboxcrm.app.notify import build_for_rep
from inboxcrm.config import build_config
from inboxcrm.core.digest import span
from inboxcrm.errors import NotFound
from inboxcrm.store.db import transaction
from inboxcrm.store.digest_queries import load_digest_data, team_totals
from inboxcrm.store.models import Deal, Rep
from inboxcrm.store.records import mailbox_info
from inboxcrm.values import RawMessage

from .conftest import mail

UTC = timezone.utc
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)  # when the team and its deals were made
NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # Tue 24 Nov, 08:00 in Berlin
CONFIG = {"team": {"domains": ["acme.example"]}, "commands": {"address": "crm@acme.example"},
          "pipeline": {"quiet_days": 14, "stalled_days": 30, "quiet_days_by_stage": {"Proposal": 5}}}


class Team:
    """alice (Berlin) and bob (Los Angeles), each with a rep mailbox that holds new senders."""

    def __init__(self, factory, config=CONFIG, zones=("Europe/Berlin", "America/Los_Angeles")):
        self.factory, self.config = factory, build_config(config, None)
        self.ids: dict[str, int] = {}
        with transaction(factory) as s:
            for name, zone in zip(("alice", "bob"), zones):
                team.add_rep(s, T0, "admin", name, [f"{name}@acme.example"], zone)
                team.add_mailbox(s, T0, "admin", f"{name}-inbox", name, "rep")
            self.ids = {r.name: r.id for r in s.query(Rep)}
        self.n = 0

    def lead(self, owner: str | None, created: datetime = T0, step: str | None = None, due: date | None = None,
             step_owner: str | None = None, stage: str | None = None, value: str | None = None,
             **columns) -> str:
        """A deal made by hand, then moved the way time and mail would have moved it."""
        self.n += 1
        with transaction(self.factory) as s:
            ref = deals.add_lead(s, created, "admin", f"p{self.n}@prospect{self.n}.example", f"Person {self.n}",
                                 owner=owner, value=value, source="website").ref
            if stage:
                deals.set_stage(s, created, "admin", ref, stage)
            if step:
                deals.set_next(s, created, "admin", ref, step, due, step_owner)
            if columns:
                s.execute(update(Deal).where(Deal.id == int(ref[2:])).values(**columns))
        return ref

    def close(self, ref: str, won: bool = True) -> None:
        with transaction(self.factory) as s:
            if won:
                deals.mark_won(s, T0, "admin", ref)
            else:
                deals.mark_lost(s, T0, "admin", ref, "went elsewhere")

    def hold(self, mailbox: str, subject: str, n: int) -> int:
        """A new sender's mail in a rep's inbox: held for review by the real pipeline."""
        data = (mail("pipeline-new-sender-to-rep.eml")
                .replace(b"Great meeting you at the conference", subject.encode())
                .replace(b"sam-1@", f"sam-{n}@".encode()).replace(b"sam@contoso", f"sam{n}@contoso".encode()))
        with transaction(self.factory) as s:
            ctx = context_for(s, self.config)
            out = process(s, RawMessage(data, f"test:{mailbox}:{n}"), mailbox_info(s, mailbox), ctx, T0)
        assert out.status == "held"
        return out.message_pk

    def digest(self, rep: str, now: datetime = NOW, since: datetime | None = None):
        with self.factory() as s:
            return build_for_rep(s, self.ids[rep], now, self.config, since)


def refs(section) -> list[str]:
    return [item.ref for item in section.items]


def listed(digest) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every deal the digest lists: ref -> (its section, its badges); fails on a deal listed twice."""
    found = [(i.ref, (s.key, i.also)) for s in digest.sections if s.unit == "deal" for i in s.items]
    assert len({ref for ref, _ in found}) == len(found), found
    return dict(found)


@dataclass
class Built:
    team: Team
    refs: dict[str, str]


@pytest.fixture
def crm(factory) -> Built:
    """One team with a deal for every case; names say where each deal belongs."""
    t = Team(factory)
    today, yesterday = date(2026, 11, 24), date(2026, 11, 22)
    r = {
        "alice overdue": t.lead("alice", step="send the proposal", due=yesterday),
        "bob due on the 23rd": t.lead("bob", step="call", due=date(2026, 11, 23)),
        "bob due on the 24th": t.lead("bob", step="call", due=today),
        "alice due today": t.lead("alice", step="call back", due=today),
        "alice due tomorrow": t.lead("alice", step="demo", due=today + timedelta(days=1)),
        "alice step without date": t.lead("alice", step="think about it"),
        "alice won overdue": t.lead("alice", step="invoice", due=yesterday),
        "alice lost overdue": t.lead("alice", step="call", due=yesterday),
        "bob deal, alice's step": t.lead("bob", step="intro call", due=yesterday, step_owner="alice"),
        "alice deal, bob's step": t.lead("alice", step="legal review", due=yesterday, step_owner="bob"),
        "bob overdue": t.lead("bob", step="send terms", due=yesterday),
        "unowned, no step owner": t.lead(None, step="triage", due=yesterday),
    }
    t.close(r["alice won overdue"])
    t.close(r["alice lost overdue"], won=False)
    return Built(t, r)


def test_overdue_and_due_today_hold_the_reps_open_steps_only(crm):
    alice, bob = crm.team.digest("alice"), crm.team.digest("bob")
    r = crm.refs
    assert refs(alice.overdue) == [r["alice overdue"], r["bob deal, alice's step"]]
    assert refs(alice.due_today) == [r["alice due today"]]
    assert "deal owned by bob" in alice.overdue.items[1].detail
    assert refs(bob.overdue) == [r["alice deal, bob's step"], r["bob overdue"]]
    # 07:00 UTC on the 24th is still the 23rd in Los Angeles
    assert refs(bob.due_today) == [r["bob due on the 23rd"]] and bob.local_date == date(2026, 11, 23)
    for digest in (alice, bob):
        everywhere = {ref for s in digest.sections if s.key != "held" for ref in refs(s)}
        assert not everywhere & {r["alice won overdue"], r["alice lost overdue"]}


def test_a_step_with_no_owner_belongs_to_the_deals_owner(factory):
    t = Team(factory)
    ref = t.lead("alice", step="follow up", due=date(2026, 11, 20), next_step_owner_id=None)
    assert refs(t.digest("alice").overdue) == [ref]
    assert t.digest("bob").overdue.items == ()


def test_no_next_step_lists_open_owned_deals_without_one(crm):
    t, r = crm.team, crm.refs
    bare = t.lead("alice", last_outbound_at=NOW - timedelta(days=2))
    dull = t.lead("alice")  # no email since T0 either: quiet comes first, "no next step" is its badge
    t.lead("bob")
    t.close(t.lead("alice"))
    digest = t.digest("alice")
    assert refs(digest.no_next_step) == [bare]
    assert listed(digest)[dull] == ("quiet", ("no next step",))
    assert listed(digest)[r["alice deal, bob's step"]] == ("quiet", ())  # it has a step, held by bob


def test_awaiting_reply_oldest_first_with_how_long(factory):
    t = Team(factory)
    hours = lambda n: NOW - timedelta(hours=n)  # noqa: E731
    five_hours = t.lead("alice", last_inbound_at=hours(5))
    three_days = t.lead("alice", last_inbound_at=hours(74), last_outbound_at=hours(80))
    t.lead("alice", last_inbound_at=hours(30), last_outbound_at=hours(2))  # answered
    t.lead("alice", last_outbound_at=hours(3))  # we wrote, they did not
    t.lead("bob", last_inbound_at=hours(9))  # not alice's
    t.close(t.lead("alice", last_inbound_at=hours(100)))  # won: nothing to answer
    waiting = t.digest("alice").awaiting_reply
    assert refs(waiting) == [three_days, five_hours]
    assert [i.detail for i in waiting.items] == ["waiting 3 days for your reply", "waiting 5 hours for your reply"]
    reply = waiting.items[0].actions[0]
    assert reply.label == "reply" and reply.href.startswith("mailto:p2@prospect2.example?")


def test_new_leads_since_the_last_digest_with_source_and_score(factory):
    t = Team(factory)
    old = t.lead("alice", created=NOW - timedelta(hours=30))
    fresh = t.lead("alice", created=NOW - timedelta(hours=3))
    hot = t.lead("alice", created=NOW - timedelta(hours=2), score=40)
    t.lead("bob", created=NOW - timedelta(hours=1))
    t.close(t.lead("alice", created=NOW - timedelta(hours=1)))
    assert refs(t.digest("alice").new_leads) == [hot, fresh]
    assert t.digest("alice").new_leads.items[0].detail == "from website, score 40"
    assert refs(t.digest("alice", since=NOW - timedelta(hours=48)).new_leads) == [hot, old, fresh]  # best score first, then oldest


def test_quiet_by_email_activity_with_a_per_stage_override_and_stalled_by_stage_change(factory):
    t = Team(factory)
    days = lambda n: NOW - timedelta(days=n)  # noqa: E731
    quiet = t.lead("alice", last_inbound_at=days(20), last_outbound_at=days(15))
    emailed = t.lead("alice", last_inbound_at=days(20), last_outbound_at=days(13))  # 13 days ago: not quiet
    proposal_quiet = t.lead("alice", stage="Proposal", last_outbound_at=days(6), last_stage_change_at=days(6))
    t.lead("alice", created=days(4), stage="Proposal")  # no email yet, but only 4 days old
    never_emailed = t.lead("alice", created=days(16))
    t.lead("bob", last_outbound_at=days(40))
    t.close(t.lead("alice", last_outbound_at=days(40)))
    digest = t.digest("alice")
    assert refs(digest.quiet) == [never_emailed, quiet, proposal_quiet]
    assert "Proposal counts as quiet after 5 days" in digest.quiet.items[2].detail
    # stage changes: the T0 deals (23 days) are not stalled at 30 days; 31 days on they are
    assert digest.stalled.items == ()
    later = t.digest("alice", now=T0 + timedelta(days=31))
    assert refs(later.stalled) == [quiet, emailed] and later.stalled.items[0].detail == "in New for 31 days"


def test_a_snooze_silences_quiet_stalled_and_no_next_step_but_not_work_or_the_pipeline(factory):
    t = Team(factory)
    days = lambda n: NOW - timedelta(days=n)  # noqa: E731
    dull = dict(last_outbound_at=days(20), last_stage_change_at=days(40))  # quiet, stalled, no next step
    snoozed = t.lead("alice", **dull)
    overdue = t.lead("alice", step="send terms", due=date(2026, 11, 20), **dull)
    owed = t.lead("alice", last_inbound_at=days(20), last_outbound_at=days(21), last_stage_change_at=days(40))
    with transaction(factory) as s:
        for ref in (snoozed, overdue, owed):  # the real function, on the day it was said
            deals.set_snooze(s, T0, "alice", ref, date(2026, 12, 7), today=T0.date())
    awake = t.lead("alice", **dull)
    digest = t.digest("alice")
    assert listed(digest) == {  # real work still shows, without the snoozed reasons as badges
        overdue: ("overdue", ()), owed: ("awaiting_reply", ()),
        awake: ("stalled", ("quiet 20 days", "no next step"))}
    assert digest.pipeline.deals == 4 and digest.pipeline.team_deals == 4
    back = t.digest("alice", now=datetime(2026, 12, 6, 23, 0, tzinfo=UTC))  # 00:00 on the 7th in Berlin
    assert listed(back)[snoozed] == ("stalled", ("quiet 32 days", "no next step"))
    assert listed(back)[owed][1] == ("stalled 52 days", "quiet 32 days", "no next step")


def test_a_snooze_ends_on_the_reps_local_date(factory):
    """07:00 UTC on the 24th: Berlin's 24th has begun, Los Angeles is still on the 23rd."""
    t = Team(factory)
    quiet = dict(created=NOW - timedelta(days=30), snoozed_until=date(2026, 11, 24))
    berlin, angeles = t.lead("alice", **quiet), t.lead("bob", **quiet)
    assert refs(t.digest("alice").quiet) == [berlin]
    assert t.digest("bob").quiet.items == () and t.digest("bob").is_empty  # asleep until LA's midnight
    assert listed(t.digest("bob", now=NOW + timedelta(hours=1)))[angeles][1] == ("quiet 30 days", "no next step")


def test_held_for_review_in_the_reps_own_mailboxes(factory):
    t = Team(factory)
    mine = t.hold("alice-inbox", "Hello from a stranger", 1)
    t.hold("bob-inbox", "For bob", 2)
    held = t.digest("alice").held
    assert [(i.id, i.subject, i.sender) for i in held.items] == [(mine, "Hello from a stranger",
                                                                  "sam1@contoso-dental.example")]
    assert held.items[0].accept == f"inboxcrm held accept {mine}"


def test_rep_timezones_around_midnight_utc(factory):
    """23:30 UTC on the 23rd is already the 24th in Auckland and still the 23rd in Los Angeles."""
    t = Team(factory, zones=("Pacific/Auckland", "America/Los_Angeles"))
    due = date(2026, 11, 23)
    kiwi, angeleno = t.lead("alice", step="call", due=due), t.lead("bob", step="call", due=due)
    at = datetime(2026, 11, 23, 11, 30, tzinfo=UTC)  # Auckland 00:30 on the 24th, LA 03:30 on the 23rd
    assert refs(t.digest("alice", at).overdue) == [kiwi] and t.digest("alice", at).local_date == date(2026, 11, 24)
    assert refs(t.digest("bob", at).due_today) == [angeleno] and t.digest("bob", at).overdue.items == ()
    before = at - timedelta(hours=1)  # Auckland 23:30 on the 23rd: due today there too
    assert refs(t.digest("alice", before).due_today) == [kiwi]


@pytest.mark.parametrize("now, local", [
    (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), date(2026, 3, 29)),  # 00:30 CET, the night clocks go forward
    (datetime(2026, 3, 29, 21, 59, tzinfo=UTC), date(2026, 3, 29)),  # 23:59 CEST
    (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), date(2026, 3, 30)),  # midnight CEST
    (datetime(2026, 10, 24, 22, 30, tzinfo=UTC), date(2026, 10, 25)),  # 00:30 CEST, the night clocks go back
    (datetime(2026, 10, 25, 22, 59, tzinfo=UTC), date(2026, 10, 25)),  # 23:59 CET
    (datetime(2026, 10, 25, 23, 0, tzinfo=UTC), date(2026, 10, 26)),
])
def test_berlin_dst_days_use_the_local_date(factory, now, local):
    t = Team(factory)
    today = t.lead("alice", step="call", due=local)
    before = t.lead("alice", step="call", due=local - timedelta(days=1))
    digest = t.digest("alice", now)
    assert digest.local_date == local
    assert refs(digest.due_today) == [today] and refs(digest.overdue) == [before]


def test_waits_across_a_dst_change_are_real_hours(factory):
    t = Team(factory)
    t.lead("alice", last_inbound_at=datetime(2026, 10, 24, 22, 0, tzinfo=UTC))  # 00:00 CEST
    at = datetime(2026, 10, 25, 5, 0, tzinfo=UTC)  # 06:00 CET: the wall clock says 6 hours, 7 have passed
    assert t.digest("alice", at).awaiting_reply.items[0].detail == "waiting 7 hours for your reply"


def test_empty_digest_and_its_subject(factory):
    t = Team(factory)
    t.lead("alice", step="later", due=date(2026, 12, 20), created=NOW - timedelta(days=2),
           last_outbound_at=NOW - timedelta(days=1), last_stage_change_at=NOW - timedelta(days=2))
    digest = t.digest("alice")
    assert digest.is_empty and digest.pipeline.deals == 1  # the summary alone is no reason to mail
    assert digest.subject == "inboxcrm: nothing needs you today - Tue 24 Nov"
    busy = t.digest("alice", now=datetime(2026, 12, 21, 7, 0, tzinfo=UTC))
    # one deal, overdue and quiet: counted once, in the subject and in the sections
    assert not busy.is_empty and busy.subject == "inboxcrm: 1 deal: 1 overdue - Mon 21 Dec"
    assert busy.overdue.counted == "1 deal" and busy.overdue.items[0].also == ("quiet 28 days",)
    assert busy.quiet.total == 0 and busy.deals == 1


def test_subject_counts_whole_sections_even_when_items_are_cut(factory):
    t = Team(factory)
    for _ in range(30):
        t.lead("alice", step="call", due=date(2026, 11, 20))
    digest = t.digest("alice")
    assert digest.overdue.total == 30 and len(digest.overdue.items) == 25 and digest.overdue.hidden == 5
    assert digest.subject.startswith("inboxcrm: 30 deals: 30 overdue - ")  # quiet too, but counted once
    assert digest.shortened(3).overdue.hidden == 27 and digest.shortened(3).deals == 30


def test_a_deal_with_every_reason_is_listed_once_under_the_most_urgent(factory):
    """Overdue beats awaiting reply, which beats stalled, quiet and no next step; the subject
    counts deals, so the busy deal counts once however many reasons it has."""
    t = Team(factory)
    days = lambda n: NOW - timedelta(days=n)  # noqa: E731
    drifting = dict(last_inbound_at=days(20), last_outbound_at=days(21), last_stage_change_at=days(40))
    busy = t.lead("alice", step="send terms", due=date(2026, 11, 20), **drifting)  # overdue, owed, stalled, quiet
    owed = t.lead("alice", **drifting)  # awaiting reply, stalled, quiet, no next step
    stuck = t.lead("alice", step="wait", last_outbound_at=days(2), last_stage_change_at=days(40))  # stalled only
    fresh = t.lead("alice", created=NOW - timedelta(hours=2))  # new lead without a next step
    digest = t.digest("alice")
    assert listed(digest) == {
        busy: ("overdue", ("awaiting reply 20 days", "stalled 40 days", "quiet 20 days")),
        owed: ("awaiting_reply", ("stalled 40 days", "quiet 20 days", "no next step")),
        stuck: ("stalled", ()),
        fresh: ("new_leads", ("no next step",)),
    }
    reply, *commands = digest.awaiting_reply.items[0].actions  # the section's quick actions stay
    assert reply.label == "reply" and [a.label for a in commands] == ["set next step", "move stage"]
    assert [s.total for s in digest.sections] == [0, 1, 0, 1, 1, 1, 0, 0, 0]  # bouncing first
    assert digest.deals == 4 and digest.subject == (
        "inboxcrm: 4 deals: 1 overdue, 1 awaiting reply, 1 new leads, 1 more - Tue 24 Nov")


def test_quick_actions_decode_to_the_intended_command(crm):
    item = crm.team.digest("alice").overdue.items[0]
    decoded = {}
    for action in item.actions:
        parts = urlsplit(action.href)
        # the command address with the rep's reply token: the rep's commands prove where they came from
        assert parts.scheme == "mailto" and re.fullmatch(r"crm%2B[a-z2-7]{10}@acme\.example", parts.path)
        key, _, value = parts.query.partition("=")
        assert key == "subject" and "&" not in value and " " not in value
        decoded[action.label] = unquote(value)
    assert decoded == {"set next step": f"[{item.ref}] next: ", "move stage": f"[{item.ref}] stage: ",
                       "won": f"[{item.ref}] won"}


def test_no_command_address_no_quick_actions(factory):
    t = Team(factory, config={"team": {"domains": ["acme.example"]}})
    t.lead("alice", step="call", due=date(2026, 11, 20))
    item = t.digest("alice").overdue.items[0]
    assert item.actions == () and item.link is None


def test_pipeline_summary_counts_the_reps_open_deals_and_the_team(factory):
    t = Team(factory)
    t.lead("alice", value="1000")
    t.lead("alice", value="500", stage="Proposal")
    t.lead("alice")
    t.lead("bob", value="7000")
    t.close(t.lead("alice", value="9999"))
    p = t.digest("alice").pipeline
    bars = {b.stage: (b.deals, b.value, b.team_deals, b.team_value, b.percent) for b in p.bars}
    assert list(bars) == ["New", "Contacted", "Qualified", "Proposal", "Negotiation"]  # open stages, in order
    assert bars["New"] == (2, Decimal(1000), 3, Decimal(8000), 100)
    assert bars["Proposal"] == (1, Decimal(500), 1, Decimal(500), 50)
    assert bars["Contacted"] == (0, 0, 0, 0, 0)
    assert (p.deals, p.value, p.team_deals, p.team_value) == (3, Decimal(1500), 4, Decimal(8500))
    with factory() as s:
        assert team_totals(s) == load_digest_data(s, t.ids["bob"], NOW - timedelta(days=1)).team


def test_unknown_rep_is_not_found(factory):
    t = Team(factory)
    with factory() as s, pytest.raises(NotFound, match="reps are: alice, bob"):
        build_for_rep(s, 999, NOW, t.config)


@pytest.mark.parametrize("seconds, said", [(0, "1 minute"), (59, "1 minute"), (3599, "59 minutes"),
                                           (3600, "1 hour"), (86399, "23 hours"), (86400, "1 day"),
                                           (3 * 86400 + 5, "3 days")])
def test_span_says_whole_units(seconds, said):
    assert span(seconds) == said
