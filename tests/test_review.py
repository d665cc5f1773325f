"""The weekly pipeline review: what a manager reads (pure, from rows and Reports), who gets it and
when, once per manager and week (on SQLite and PostgreSQL), and its commands."""
from __future__ import annotations

import html
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from inboxcrm.app import review as app_review
from inboxcrm.config import build_config
from inboxcrm.core.metrics import Duration, Headline, Move, Period, Rate, Report, StageInfo, Table
from inboxcrm.core.review import (
    LIST_COMMAND,
    DealRow,
    Manager,
    ReviewData,
    build_review,
    charts,
    decide_lists,
    metrics,
    moved_lists,
    owner_subject,
)
from inboxcrm.errors import Invalid
from inboxcrm.mail.render import render_review, template_env
from inboxcrm.store.db import transaction
from inboxcrm.store.models import (
    Contact,
    ContactAddress,
    Deal,
    OutboxMessage,
    Rep,
    RepAddress,
    Stage,
    StageChange,
)

from .conftest import refused

BERLIN = ZoneInfo("Europe/Berlin")
# The review is due on Monday 23 Nov 2026 at 08:00 in Berlin (07:00 UTC); its week is the 7 days before.
REVIEW_AT = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
IN_WEEK = REVIEW_AT - timedelta(days=3)
STAGES = tuple(StageInfo(i, name, i, kind, None, name == "Qualified") for i, (name, kind) in enumerate(
    (("New", "open"), ("Contacted", "open"), ("Qualified", "open"), ("Proposal", "open"), ("Negotiation", "open"),
     ("Won", "won"), ("Lost", "lost")), start=1))
BOSS = Manager("alice", "alice@acme.example", "Europe/Berlin", "crm+tok123@acme.example", True)
OUTSIDER = Manager("boss@holding.example", "boss@holding.example", "Europe/Berlin", None, False)


def row(i: int, **kw) -> DealRow:
    base = dict(id=i, title=f"Deal {i}", contact=f"Person {i}", address=f"p{i}@prospect.example", company="Harbor",
                stage="Proposal", stage_kind="open", value=Decimal("1000"), source="website", owner_rep_id=2,
                owner="bob", owner_address="bob@acme.example", next_step="call",
                created_at=REVIEW_AT - timedelta(days=60),
                last_inbound_at=REVIEW_AT - timedelta(days=1), last_outbound_at=REVIEW_AT - timedelta(days=1),
                last_stage_change_at=REVIEW_AT - timedelta(days=5), closed_at=None, expected_close=None, close_slips=0,
                snoozed_until=None, lost_reason=None)
    return DealRow(**{**base, **kw})


def lists(deals, manager=BOSS, limit=10):
    return {s.key: s for s in decide_lists(tuple(deals), REVIEW_AT, BERLIN, lambda stage: 14, 30, manager, limit)}


# -- deals to decide on ---------------------------------------------------------------------------

def test_each_deal_to_decide_on_is_listed_once_under_its_most_urgent_reason_with_the_others_as_badges():
    old = REVIEW_AT - timedelta(days=40)
    deals = [
        row(1, expected_close=date(2026, 11, 10), close_slips=2, last_stage_change_at=old, last_inbound_at=old,
            last_outbound_at=old, next_step=None),  # all four reasons
        row(2, last_stage_change_at=old),  # stalled only
        row(3, last_inbound_at=REVIEW_AT - timedelta(days=15), last_outbound_at=None),  # quiet only
        row(4, next_step=None),  # no next step only
        row(5),  # fine
        row(6, expected_close=date(2026, 11, 23)),  # closes today: not slipped yet
        row(7, closed_at=REVIEW_AT - timedelta(days=1), stage="Won", stage_kind="won", next_step=None),  # closed
    ]
    found = lists(deals)
    assert [(k, [i.ref for i in s.items]) for k, s in found.items()] == [
        ("slipped", ["D-1"]), ("stalled", ["D-2"]), ("quiet", ["D-3"]), ("no_next_step", ["D-4"])]
    slipped = found["slipped"].items[0]
    assert slipped.detail == "expected to close Tue 10 Nov, 13 days ago; slipped 2 times before"
    assert slipped.also == ("stalled 40 days", "quiet 40 days", "no next step")
    assert found["quiet"].items[0].detail == "no email for 15 days"
    assert sum(s.total for s in found.values()) == 4  # deals, not reasons


def test_a_snooze_silences_drifting_but_not_a_passed_close_date():
    old = REVIEW_AT - timedelta(days=40)
    asleep = dict(snoozed_until=date(2026, 12, 1), last_stage_change_at=old, next_step=None)
    found = lists([row(1, **asleep), row(2, **asleep, expected_close=date(2026, 11, 1))])
    assert [i.ref for i in found["slipped"].items] == ["D-2"] and found["slipped"].items[0].also == ()
    assert all(found[k].total == 0 for k in ("stalled", "quiet", "no_next_step"))


def test_a_long_list_is_cut_counted_and_names_the_command_that_lists_it_whole():
    deals = [row(i, next_step=None, value=Decimal(100)) for i in range(1, 26)]
    section = lists(deals, limit=10)["no_next_step"]
    assert (len(section.items), section.total, section.hidden, section.value) == (10, 25, 15, Decimal(2500))
    assert section.more == f"{LIST_COMMAND} --reason no_next_step"
    assert lists(deals, limit=None)["no_next_step"].hidden == 0


def test_quick_actions_reach_the_owner_and_reassign_with_the_managers_token():
    (item,) = lists([row(42, title="Acme & co renewal", next_step=None)])["no_next_step"].items
    email, reassign = item.actions
    assert email.label == "Email bob" and reassign.label == "Reassign"
    assert unquote(email.href) == "mailto:bob@acme.example?subject=[D-42] Acme & co renewal"
    assert "%26" in email.href  # the title's & cannot end the subject early
    assert unquote(reassign.href) == "mailto:crm+tok123@acme.example?subject=[D-42] owner: "


def test_a_manager_who_is_not_a_rep_gets_no_command_links_and_the_text_says_why():
    (item,) = lists([row(42, next_step=None)], manager=OUTSIDER)["no_next_step"].items
    assert [a.label for a in item.actions] == ["Email bob"]
    review = build_review(week_data(), REVIEW_AT, OUTSIDER, {}, {}, lambda s: 14, 30, has_command_address=True)
    assert "boss@holding.example is not a rep's address" in review.no_actions_reason
    assert "inboxcrm deal owner D-42 REP" in review.no_actions_reason
    mail = render_review(review, template_env())
    assert review.no_actions_reason in mail.text
    assert ">Reassign<" not in mail.html and "Email bob" not in mail.text  # week_data has nothing to decide on


def test_an_owner_without_an_address_gets_no_email_link():
    (item,) = lists([row(1, next_step=None, owner_address=None, owner=None, owner_rep_id=None)])["no_next_step"].items
    assert [a.label for a in item.actions] == ["Reassign"] and item.owner == "nobody"


def test_the_mail_to_an_owner_never_reads_as_a_command():
    assert owner_subject("D-7", "Won") == "[D-7] about Won"  # "[D-7] Won" would mark it won if sent to crm@
    assert owner_subject("D-7", "next: quote") == "[D-7] about next: quote"
    assert owner_subject("D-7", "Next steps for Acme") == "[D-7] Next steps for Acme"


# -- what moved ---------------------------------------------------------------------------------------

def move(pk: int, deal: int, before: str | None, after: str, at: datetime) -> Move:
    return Move(pk, deal, before, after, at)


def week_data() -> ReviewData:
    """New D-1 (5,000) and D-2 (no value); D-3 advanced twice (counted once, 12,000), D-4 moved
    back (not advanced), D-5 advanced before the week (not counted); D-6 won (30,000) straight from
    Negotiation, so it also advanced; D-7 lost (8,000)."""
    created = (row(1, created_at=IN_WEEK, value=Decimal(5000), source="web-form"),
               row(2, created_at=IN_WEEK + timedelta(hours=1), value=None, source=""))
    won = row(6, stage="Won", stage_kind="won", value=Decimal(30000), closed_at=IN_WEEK)
    lost = row(7, stage="Lost", stage_kind="lost", value=Decimal(8000), closed_at=IN_WEEK, lost_reason="price")
    moved = (row(3, value=Decimal(12000)), row(4), won, lost)
    moves = (move(1, 3, "New", "Contacted", IN_WEEK), move(2, 3, "Contacted", "Proposal", IN_WEEK + timedelta(hours=2)),
             move(3, 4, "Proposal", "Contacted", IN_WEEK), move(4, 5, "New", "Proposal", REVIEW_AT - timedelta(days=8)),
             move(5, 6, "Negotiation", "Won", IN_WEEK), move(6, 7, "Proposal", "Lost", IN_WEEK),
             move(7, 1, None, "New", IN_WEEK))
    return ReviewData(STAGES, (), created, (won, lost), moves, moved)


def test_what_moved_this_week_counts_new_advanced_won_and_lost_with_their_values():
    found = {s.key: s for s in moved_lists(week_data(), Period(REVIEW_AT - timedelta(days=7), REVIEW_AT), BERLIN)}
    assert {k: (s.total, s.value) for k, s in found.items()} == {
        "new": (2, Decimal(5000)), "advanced": (2, Decimal(42000)), "won": (1, Decimal(30000)),
        "lost": (1, Decimal(8000))}
    assert [i.detail for i in found["advanced"].items] == ["Negotiation -> Won, Fri 20 Nov 08:00",
                                                           "New -> Proposal, Fri 20 Nov 10:00"]
    assert found["new"].items[0].detail == "from web-form, Fri 20 Nov 08:00"
    assert found["new"].items[1].detail == "from an unknown source, Fri 20 Nov 09:00"
    assert found["lost"].items[0].detail == "lost Fri 20 Nov 08:00: price"


# -- charts and figures ------------------------------------------------------------------------------

PERIOD = Period(REVIEW_AT - timedelta(days=28), REVIEW_AT)


def report(name: str, tables: tuple[Table, ...], headlines: tuple[Headline, ...] = ()) -> Report:
    return Report(name, PERIOD, None, tables, headlines)


def test_charts_scale_bars_to_the_largest_figure_and_keep_the_numbers_as_text():
    reports = {
        "pipeline": report("pipeline", (Table("by_stage", "", ("stage", "deals", "value", "probability", "weighted"),
                                              (("New", 4, Decimal(40000), 10, Decimal(4000)),
                                               ("Proposal", 1, Decimal(10000), 45, Decimal(4500)),
                                               ("Negotiation", 0, Decimal(0), 80, Decimal(0)))),)),
        "response": report("response", (Table("first_response", "",
                                              ("rep", "answered", "median", "p90", "within target"),
                                              (("alice", 6, Duration(3600, 6), Duration(7200, 6), Rate(5, 6, 5)),
                                               ("bob", 2, Duration(None, 2), Duration(None, 2), Rate(1, 2, 5)))),)),
    }
    found = {c.key: c for c in charts(reports)}
    assert [(b.label, b.percent, b.text) for b in found["pipeline"].bars] == [
        ("New", 100, "40,000"), ("Proposal", 25, "10,000"), ("Negotiation", 0, "0")]
    assert [(b.label, b.percent, b.text) for b in found["response"].bars] == [("alice", 100, "1h"),
                                                                            ("bob", 0, "too few (2)")]


def test_metrics_compare_with_the_previous_period_but_not_snapshots():
    now = {"wins": report("wins", (), (Headline("win_rate", "Win rate", Rate(6, 10, 5)),)),
           "activity": report("activity", (), (Headline("leads_created", "Leads created", 12),)),
           "pipeline": report("pipeline", (), (Headline("open_value", "Open value", Decimal(50000)),))}
    before = {"wins": report("wins", (), (Headline("win_rate", "Win rate", Rate(2, 10, 5)),)),
              "activity": report("activity", (), (Headline("leads_created", "Leads created", 8),)),
              "pipeline": report("pipeline", (), (Headline("open_value", "Open value", Decimal(50000)),))}
    assert [(m.label, m.current, m.previous, m.change) for m in metrics(now, before)] == [
        ("Open value", "50,000", "-", ""),
        ("Win rate", "60% (6 of 10)", "20% (2 of 10)", "+40 pts"),
        ("Leads created", "12", "8", "+4 (+50%)")]


def test_the_subject_counts_what_moved_and_the_deals_to_decide_on():
    data = replace(week_data(), open_deals=(row(9, next_step=None),))
    review = build_review(data, REVIEW_AT, BOSS, {}, {}, lambda s: 14, 30, has_command_address=True)
    assert review.subject == ("Pipeline review, week to Mon 23 Nov: 2 new, 2 advanced, 1 won, 1 lost; "
                              "1 deal to decide on")


# -- on the database ---------------------------------------------------------------------------------

def make_config(managers=(), commands=True, **review):
    data = {"team": {"domains": ["acme.example"], "timezone": "Europe/Berlin"},
            "review": {"managers": list(managers), **review}}
    if commands:
        data["commands"] = {"address": "crm@acme.example"}
    return build_config(data, None)


class Crm:
    """Reps and deals with their history written straight into the tables, as capture would leave them."""

    def __init__(self, factory):
        self.factory = factory
        with factory() as s:
            self.stages = {st.name: st.id for st in s.scalars(select(Stage))}

    def rep(self, name: str, tz: str = "Europe/Berlin", manager: bool = False, active: bool = True,
            address: str | None = "") -> int:
        with transaction(self.factory) as s:
            rep = Rep(name=name, timezone=tz, created_at=REVIEW_AT - timedelta(days=90), manager=manager, active=active)
            if address is not None:
                rep.addresses.append(RepAddress(address=address or f"{name}@acme.example"))
            s.add(rep)
            s.flush()
            return rep.id

    def deal(self, title: str, owner: int | None, *, created: datetime, stage: str = "New", value=None,
             source: str = "website", step: str | None = "call back", last_email: datetime | None = None,
             stage_changed: datetime | None = None, closed: datetime | None = None, expected_close: date | None = None,
             lost_reason: str | None = None, moves: tuple[tuple[str, str, datetime], ...] = ()) -> int:
        with transaction(self.factory) as s:
            address = f"{title.split()[0].lower()}@prospect.example"
            person = Contact(name=f"{title.split()[0]} Buyer", first_seen=created,
                             addresses=[ContactAddress(address=address)])
            s.add(person)
            s.flush()
            deal = Deal(title=title, contact_id=person.id, stage_id=self.stages[stage], owner_rep_id=owner,
                        value=value, source=source, created_at=created, last_activity_at=last_email or created,
                        last_inbound_at=last_email, last_outbound_at=last_email,
                        last_stage_change_at=stage_changed or (moves[-1][2] if moves else created),
                        next_step=step, next_step_owner_id=owner if step else None, closed_at=closed,
                        expected_close=expected_close, lost_reason=lost_reason)
            s.add(deal)
            s.flush()
            s.add(StageChange(deal_id=deal.id, from_stage=None, to_stage="New", at=created, actor="test"))
            for before, after, at in moves:
                s.add(StageChange(deal_id=deal.id, from_stage=before, to_stage=after, at=at, actor="test"))
            return deal.id

    def outbox(self) -> list[OutboxMessage]:
        with self.factory() as s:
            return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def history(crm: Crm, reps: dict[str, int]) -> dict[str, int]:
    """A week of a small team (the week before Monday 23 Nov, 08:00 Berlin): one new lead, one
    advanced, one won, one lost, and one deal that drifts in every way."""
    week_ago = REVIEW_AT - timedelta(days=7)
    bob, carol = reps["bob"], reps["carol"]
    return {
        "new": crm.deal("Northwind pilot", carol, created=IN_WEEK, value=Decimal(5000), source="web-form",
                        last_email=IN_WEEK),
        "advanced": crm.deal("Harbor renewal", bob, created=week_ago - timedelta(days=20), stage="Proposal",
                             value=Decimal(12000), last_email=IN_WEEK,
                             moves=(("New", "Proposal", IN_WEEK),)),
        "won": crm.deal("Globex rollout", bob, created=week_ago - timedelta(days=30), stage="Won", value=Decimal(30000),
                        closed=IN_WEEK, last_email=IN_WEEK, moves=(("New", "Negotiation", week_ago - timedelta(days=9)),
                                                                   ("Negotiation", "Won", IN_WEEK))),
        "lost": crm.deal("Initech upgrade", carol, created=week_ago - timedelta(days=25), stage="Lost",
                         value=Decimal(8000), closed=IN_WEEK + timedelta(hours=5), lost_reason="price",
                         moves=(("New", "Lost", IN_WEEK + timedelta(hours=5)),)),
        "drifting": crm.deal("Stale enquiry", bob, created=week_ago - timedelta(days=60), stage="Proposal",
                             value=Decimal(20000), step=None, last_email=week_ago - timedelta(days=20),
                             expected_close=date(2026, 11, 10),
                             moves=(("New", "Proposal", week_ago - timedelta(days=40)),)),
    }


@pytest.fixture
def crm(factory):
    return Crm(factory)


def test_managers_are_reps_marked_manager_and_configured_addresses_each_once(crm):
    alice = crm.rep("alice", manager=True)
    crm.rep("bob", tz="America/New_York")
    crm.rep("old", manager=True, active=False)
    carol = crm.rep("carol", tz="Asia/Tokyo")
    config = make_config(managers=["boss@holding.example", "alice@acme.example", "carol@acme.example"])
    with crm.factory() as s:
        found = app_review.recipients(s, config)
    assert [(r.ident, r.rep_id, r.address, r.zone.key) for r in found] == [
        (str(alice), alice, "alice@acme.example", "Europe/Berlin"),
        ("boss@holding.example", None, "boss@holding.example", "Europe/Berlin"),  # the team's zone
        (str(carol), carol, "carol@acme.example", "Asia/Tokyo"),  # a rep's address: that rep, with their zone
    ]
    with crm.factory() as s:
        assert app_review.recipient_named(s, config, "ALICE").rep_id == alice
        assert app_review.recipient_named(s, config, "Boss@Holding.example").ident == "boss@holding.example"
        with pytest.raises(Invalid, match=r'"bob" does not get the weekly review; managers are: alice'):
            app_review.recipient_named(s, config, "bob")


def test_without_managers_the_error_says_how_to_name_one(crm):
    crm.rep("bob")
    with crm.factory() as s, pytest.raises(Invalid) as caught:
        app_review.managers(s, make_config())
    assert "inboxcrm rep edit NAME --manager" in str(caught.value) and "[review] managers" in str(caught.value)
    assert app_review.enqueue_due_reviews(crm.factory, make_config(), REVIEW_AT) == 0


def test_the_review_comes_on_the_review_day_at_each_managers_local_time_once_a_week(crm):
    alice = crm.rep("alice", manager=True)
    ny = crm.rep("nina", tz="America/New_York", manager=True)
    config = make_config(managers=["boss@holding.example"])
    run = lambda now: app_review.enqueue_due_reviews(crm.factory, config, now)  # noqa: E731
    assert run(REVIEW_AT - timedelta(seconds=1)) == 0 and crm.outbox() == []
    assert run(REVIEW_AT) == 2  # 08:00 in Berlin: alice and the configured boss (team zone)
    assert run(REVIEW_AT + timedelta(hours=5)) == 0
    new_york_8am = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    assert run(new_york_8am - timedelta(seconds=1)) == 0
    assert run(new_york_8am) == 1
    assert run(new_york_8am + timedelta(hours=10)) == 0  # still Monday in New York
    assert run(REVIEW_AT + timedelta(days=1)) == 0  # Tuesday: not a review day
    assert [(r.key, r.kind, r.status) for r in crm.outbox()] == [
        (f"review:{alice}:2026-11-23", "review", "pending"),
        ("review:boss@holding.example:2026-11-23", "review", "pending"),
        (f"review:{ny}:2026-11-23", "review", "pending")]
    assert run(REVIEW_AT + timedelta(days=7)) == 2  # next Monday: the next week's


def test_the_review_day_and_time_come_from_the_config_and_the_key_names_the_weeks_monday(crm):
    alice = crm.rep("alice", manager=True)
    config = make_config(day="friday", time="16:30")
    friday = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)  # 16:30 in Berlin
    assert app_review.enqueue_due_reviews(crm.factory, config, friday - timedelta(minutes=1)) == 0
    assert app_review.enqueue_due_reviews(crm.factory, config, friday) == 1
    assert [r.key for r in crm.outbox()] == [f"review:{alice}:2026-11-23"]
    assert app_review.enqueue_due_reviews(crm.factory, make_config(enabled=False), friday + timedelta(days=7)) == 0


def test_the_review_lists_the_week_and_the_deals_to_decide_on_with_the_managers_token(crm):
    reps = {name: crm.rep(name, manager=name == "alice") for name in ("alice", "bob", "carol")}
    deals = history(crm, reps)
    config = make_config()
    assert app_review.enqueue_due_reviews(crm.factory, config, REVIEW_AT + timedelta(minutes=3)) == 1
    (row_,) = crm.outbox()
    assert row_.to_address == "alice@acme.example" and row_.rep_id == reps["alice"]
    assert row_.subject == ("Pipeline review, week to Mon 23 Nov: 1 new, 2 advanced, 1 won, 1 lost; "
                            "1 deal to decide on")
    with crm.factory() as s:
        from inboxcrm.app import outbox

        detail = outbox.show(s, row_.id)
    text = detail.text.replace("\r\n", "\n")
    headers = dict(detail.headers)
    assert headers["X-InboxCRM"] == "review" and headers["Reply-To"].startswith("crm+")
    for line in (f"D-{deals['new']} Northwind pilot", f"D-{deals['advanced']} Harbor renewal",
                 "New -> Proposal, Fri 20 Nov 08:00", f"D-{deals['won']} Globex rollout",
                 f"D-{deals['lost']} Initech upgrade", "lost Fri 20 Nov 13:00: price",
                 f"D-{deals['drifting']} Stale enquiry", "expected to close Tue 10 Nov, 13 days ago",
                 "also: stalled 47 days, quiet 27 days, no next step", "Stage funnel", "Pipeline value by stage",
                 "Leads by source", "First response time by rep", "  Proposal: 32,000", "  web-form: 1"):
        assert line in text, line
    assert f"Reassign: mailto:{headers['Reply-To'].replace('@', '@')}" in unquote(text)
    assert "Won      " in text and "30,000" in text  # the moved table has values


def test_a_review_is_decided_once_per_manager_and_week_even_by_hand(crm):
    alice = crm.rep("alice", manager=True)
    config, env = make_config(), template_env()
    with crm.factory() as s:
        (recipient,) = app_review.managers(s, config)
    with transaction(crm.factory) as s:
        first = app_review.queue_review(s, config, recipient, date(2026, 11, 23), REVIEW_AT, env)
    with transaction(crm.factory) as s:  # Thursday of the same week: the same key
        again = app_review.queue_review(s, config, recipient, date(2026, 11, 26), REVIEW_AT + timedelta(days=3), env)
    assert first.new and not again.new and again.outbox_id == first.outbox_id
    assert first.key == f"review:{alice}:2026-11-23"
    assert app_review.enqueue_due_reviews(crm.factory, config, REVIEW_AT) == 0  # the daemon finds it decided
    assert len(crm.outbox()) == 1


def test_a_manager_rep_without_an_address_is_decided_as_skipped_once(crm):
    crm.rep("alice", manager=True, address=None)
    assert app_review.enqueue_due_reviews(crm.factory, make_config(), REVIEW_AT) == 0
    (row_,) = crm.outbox()
    assert row_.status == "skipped" and "no email address" in row_.last_error
    assert app_review.enqueue_due_reviews(crm.factory, make_config(), REVIEW_AT + timedelta(minutes=1)) == 0
    assert len(crm.outbox()) == 1


def test_preview_writes_nothing(crm):
    reps = {name: crm.rep(name, manager=name == "alice") for name in ("alice", "bob", "carol")}
    history(crm, reps)
    config = make_config()
    with crm.factory() as s:
        (recipient,) = app_review.managers(s, config)
        mail = app_review.preview(s, config, recipient, date(2026, 11, 23), REVIEW_AT, template_env())
    assert "Stale enquiry" in mail.text and "Stale enquiry" in html.unescape(mail.html)
    assert crm.outbox() == []


def test_the_week_is_the_seven_days_before_the_scheduled_time_however_late_the_pass(crm):
    reps = {name: crm.rep(name, manager=name == "alice") for name in ("alice", "bob", "carol")}
    history(crm, reps)
    crm.deal("Late arrival", reps["bob"], created=REVIEW_AT + timedelta(minutes=20))  # after the review's time
    config = make_config()
    with crm.factory() as s:
        (recipient,) = app_review.managers(s, config)
        on_time = app_review.preview(s, config, recipient, date(2026, 11, 23), REVIEW_AT, template_env())
        late = app_review.preview(s, config, recipient, date(2026, 11, 23), REVIEW_AT + timedelta(hours=1),
                                  template_env())
    assert on_time.text == late.text and "Late arrival" not in late.text


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture
def managed(cli, config_file):
    config_file.write_text('[team]\ndomains = ["acme.example"]\ntimezone = "Europe/Berlin"\n\n'
                           '[commands]\naddress = "crm@acme.example"\n\n'
                           '[review]\nmanagers = ["boss@holding.example"]\n')
    cli("rep", "add", "alice", "--email", "alice@acme.example", "--manager")
    cli("rep", "add", "bob", "--email", "bob@acme.example")
    cli("lead", "add", "--email", "jane@prospect.example", "--name", "Jane", "--owner", "bob", "--value", "4000")
    return cli


def test_review_preview_prints_the_text_and_writes_html_only_when_asked(managed, tmp_path, factory):
    shown = managed("review", "preview", "--to", "alice")
    assert shown.stdout.startswith("To: alice@acme.example\nSubject: Pipeline review, ")
    assert "Deals to decide on (1)" in shown.stdout and "Jane" in shown.stdout and "<table" not in shown.stdout
    page = tmp_path / "review.html"
    written = managed("review", "preview", "--to", "boss@holding.example", "--html", str(page), "--date", "2026-11-23")
    assert "written to" in written.stdout and page.read_text().startswith("<!DOCTYPE html>")
    assert "Mon 16 Nov 08:00 - Mon 23 Nov 08:00, Europe/Berlin" in page.read_text()
    both = managed("review", "preview")
    assert "also sent to boss@holding.example (choose with --to)" in both.stderr
    with factory() as s:
        assert s.scalars(select(OutboxMessage)).all() == []


def test_review_send_queues_once_per_week_and_says_so(managed, factory):
    first = managed("review", "send")
    assert first.stdout.count("queued review for ") == 2 and "not sent: no SMTP server" in first.stdout
    again = managed("review", "send", "--to", "alice")
    assert "already queued: review for alice, week of" in again.stdout and "once per manager and week" in again.stdout
    with factory() as s:
        assert [(r.kind, r.to_address) for r in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))] == [
            ("review", "alice@acme.example"), ("review", "boss@holding.example")]


def test_review_commands_refuse_clearly(cli, managed):
    assert "does not get the weekly review; managers are: alice" in refused(managed, "review", "send", "--to", "bob")
    assert "is after today" in refused(managed, "review", "preview", "--date", "2999-01-01")
    assert "--reason" in refused(managed, "review", "deals", "--reason", "sleepy")


def test_review_without_managers_says_how_to_name_one(team):
    message = refused(team, "review", "preview")
    assert "inboxcrm rep edit NAME --manager" in message and "[review] managers" in message


def test_review_deals_lists_every_deal_to_decide_on(managed):
    out = managed("review", "deals").stdout
    assert out.startswith("No next step (1 deal)\n  D-1  ") and "owner bob, New: New, no email since it came in" in out
    assert managed("review", "deals", "--reason", "stalled").stdout == "no deals to decide on for the reason stalled\n"


def test_held_senders_moved_to_held_and_the_old_names_still_work_with_a_warning(team):
    assert team("held", "list").stdout
    old = team("review", "list", "--json")
    assert old.stdout.strip() == "[]"
    assert 'warning: "inboxcrm review list" is now "inboxcrm held list"' in old.stderr
    assert "list" not in team("review", "--help").stdout.split("Commands:")[1]  # hidden
    missing = team("review", "accept", "999", code=2)
    assert 'is now "inboxcrm held accept"' in missing.stderr


def test_a_manager_address_too_long_for_the_outbox_key_is_named_by_its_hash():
    from zoneinfo import ZoneInfo

    from inboxcrm.app.review import Recipient, review_key

    long_address = "x" * 240 + "@example.com"
    first = review_key(Recipient(long_address, None, long_address, long_address, ZoneInfo("UTC")), date(2026, 11, 25))
    other = review_key(Recipient("y" + long_address, None, "", "", ZoneInfo("UTC")), date(2026, 11, 25))
    assert len(first) <= 200 and first.startswith("review:sha256-") and first.endswith(":2026-11-23")
    assert first != other
    short = review_key(Recipient("boss@example.com", None, "", "", ZoneInfo("UTC")), date(2026, 11, 25))
    assert short == "review:boss@example.com:2026-11-23"
