"""When reps get their digest and nudges: their local time and days, once each, on both backends."""
from __future__ import annotations

import email
import logging
import re
import threading
from datetime import UTC, date, datetime, time, timedelta
from email import policy
from email.utils import format_datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from inboxcrm.app import importer, notify, outbox
from inboxcrm.app import team as admin
from inboxcrm.config import build_config
from inboxcrm.core.business_time import at_wall
from inboxcrm.errors import Invalid
from inboxcrm.store.db import transaction
from inboxcrm.store.models import (
    Contact,
    ContactAddress,
    Deal,
    OutboxMessage,
    Rep,
    RepAddress,
    Stage,
)
from inboxcrm.values import RawMessage

from .smtp_server import SmtpServer

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_0800_BERLIN = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def make_config(**digest):
    return build_config({"team": {"domains": ["acme.example"], "timezone": "Europe/Berlin"}, "digest": digest,
                         "commands": {"address": "crm@acme.example"}}, None)


class Team:
    def __init__(self, factory):
        self.factory, self.config = factory, make_config()

    def rep(self, name, tz="Europe/Berlin", **digest) -> int:
        with transaction(self.factory) as s:
            rep = Rep(name=name, timezone=tz, created_at=MONDAY_0800_BERLIN - timedelta(days=60), **digest)
            rep.addresses.append(RepAddress(address=f"{name}@acme.example"))
            s.add(rep)
            s.flush()
            return rep.id

    def deal(self, owner: int | None, contact="Jane Doe", address="jane@prospect.example", *, created,
             inbound=None, outbound=None, step=None, due=None) -> int:
        with transaction(self.factory) as s:
            person = s.scalar(select(Contact).join(ContactAddress).where(ContactAddress.address == address))
            if person is None:
                person = Contact(name=contact, first_seen=created, addresses=[ContactAddress(address=address)])
                s.add(person)
                s.flush()
            stage = s.scalar(select(Stage).where(Stage.kind == "open").order_by(Stage.position))
            deal = Deal(title=f"{contact} enquiry", contact_id=person.id, stage_id=stage.id, owner_rep_id=owner,
                        created_at=created, last_activity_at=inbound or created, last_stage_change_at=created,
                        last_inbound_at=inbound, last_outbound_at=outbound, next_step=step, next_step_due=due,
                        next_step_owner_id=owner if step else None, inbound_count=1 if inbound else 0)
            s.add(deal)
            s.flush()
            return deal.id

    def answer(self, deal_id: int, at: datetime) -> None:
        with transaction(self.factory) as s:
            s.get(Deal, deal_id).last_outbound_at = at

    def write(self, deal_id: int, at: datetime) -> None:
        with transaction(self.factory) as s:
            s.get(Deal, deal_id).last_inbound_at = at

    def run(self, now: datetime, config=None) -> int:
        return notify.enqueue_due(self.factory, config or self.config, now)

    def outbox(self, kind: str | None = None) -> list[OutboxMessage]:
        with self.factory() as s:
            query = select(OutboxMessage).order_by(OutboxMessage.id)
            return list(s.scalars(query.where(OutboxMessage.kind == kind) if kind else query))


@pytest.fixture
def team(factory):
    return Team(factory)


def overdue_work(team: Team, rep: int) -> int:
    """A deal with an overdue next step, old enough to nudge nobody."""
    old = MONDAY_0800_BERLIN - timedelta(days=30)
    return team.deal(rep, "Tom Becker", "tom@northwind.example", created=old, inbound=old, outbound=old,
                     step="Send the contract", due=date(2026, 11, 20))


def test_the_digest_comes_at_the_reps_local_time_once_a_day(team):
    alice = team.rep("alice")
    overdue_work(team, alice)
    assert team.run(MONDAY_0800_BERLIN - timedelta(seconds=1)) == 0 and team.outbox() == []
    assert team.run(MONDAY_0800_BERLIN) == 1
    for later in (timedelta(seconds=30), timedelta(hours=5), timedelta(hours=16)):  # to 23:59 Berlin
        assert team.run(MONDAY_0800_BERLIN + later - timedelta(seconds=1)) == 0
    (row,) = team.outbox()
    assert (row.key, row.kind, row.status, row.to_address) == (f"digest:{alice}:2026-11-23", "digest", "pending",
                                                               "alice@acme.example")
    assert "1 overdue" in row.subject
    body = row.body.decode()
    assert "X-InboxCRM: digest" in body and re.search(r"Reply-To: crm\+[a-z2-7]{10}@acme\.example", body)
    assert team.run(MONDAY_0800_BERLIN + timedelta(days=1)) == 1  # Tuesday's is a new one
    assert [r.key for r in team.outbox()] == [f"digest:{alice}:2026-11-23", f"digest:{alice}:2026-11-24"]


def test_each_rep_has_their_own_time_zone_time_and_days(team):
    berlin = team.rep("alice")
    auckland = team.rep("kiri", "Pacific/Auckland", digest_time="07:30")
    la = team.rep("lee", "America/Los_Angeles", digest_days="mon,wed,fri")
    weekend = team.rep("sam", digest_days="sat-sun", digest_time="10:00")
    for rep in (berlin, auckland, la, weekend):
        overdue_work(team, rep) if rep != auckland else team.deal(
            rep, "Aroha", "aroha@kiwi.example", created=datetime(2026, 10, 1, tzinfo=UTC),
            step="Call", due=date(2026, 11, 1))
    sent = {}
    start = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)  # Friday
    for step in range(5 * 24 * 4):  # every 15 minutes for five days
        now = start + timedelta(minutes=15 * step)
        team.run(now)
        for row in team.outbox("digest"):
            sent.setdefault(row.key, now)
    by_rep = {rep: sorted((k.split(":")[2], t) for k, t in sent.items() if k.split(":")[1] == str(rep))
              for rep in (berlin, auckland, la, weekend)}
    assert [d for d, _ in by_rep[berlin]] == ["2026-11-20", "2026-11-23", "2026-11-24"]
    assert all(t.astimezone(BERLIN).time() == time(8, 0) for _, t in by_rep[berlin][1:])
    # Auckland is 13 hours ahead: Monday 07:30 there is Sunday 18:30 UTC.
    assert [d for d, _ in by_rep[auckland]] == ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"]
    assert by_rep[auckland][1][1] == datetime(2026, 11, 22, 18, 30, tzinfo=UTC)
    assert [d for d, _ in by_rep[la]] == ["2026-11-20", "2026-11-23"]  # Wednesday's is after the walk
    assert by_rep[la][1][1] == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 08:00 PST
    assert [d for d, _ in by_rep[weekend]] == ["2026-11-21", "2026-11-22"]


@pytest.mark.parametrize("zone, day, clock", [
    ("Europe/Berlin", date(2026, 3, 29), "02:30"),  # spring forward: 02:30 does not exist
    ("Europe/Berlin", date(2026, 10, 25), "02:30"),  # fall back: 02:30 happens twice
    ("America/Los_Angeles", date(2026, 11, 1), "01:30"),
    ("Pacific/Auckland", date(2026, 9, 27), "02:15"),
])
def test_a_dst_change_sends_the_digest_once_at_the_first_moment_it_is_due(team, zone, day, clock):
    rep = team.rep("alice", zone, digest_time=clock, digest_days="daily", digest_always=True)
    tz = ZoneInfo(zone)
    start = at_wall(day, time(0, 0), tz)
    first = None
    for step in range(25 * 12):  # every 5 minutes through the whole local day
        now = start + timedelta(minutes=5 * step)
        if team.run(now) and first is None:
            first = now
    keys = [r.key for r in team.outbox("digest")]
    assert keys.count(f"digest:{rep}:{day.isoformat()}") == 1
    assert first == at_wall(day, time.fromisoformat(clock), tz)
    assert first.astimezone(tz).replace(tzinfo=None) >= datetime.combine(day, time.fromisoformat(clock))


def test_an_empty_digest_is_skipped_once_unless_the_rep_wants_it_always(team):
    quiet = team.rep("alice")
    keen = team.rep("bob", digest_always=True)
    off = team.rep("carol", digest_enabled=False)
    overdue_work(team, off)
    assert team.run(MONDAY_0800_BERLIN) == 1
    assert team.run(MONDAY_0800_BERLIN + timedelta(minutes=1)) == 0
    rows = {r.rep_id: r for r in team.outbox()}
    assert set(rows) == {quiet, keen}
    assert rows[quiet].status == "skipped" and "nothing to say" in rows[quiet].last_error
    assert rows[keen].status == "pending" and "nothing needs you today" in rows[keen].subject


def parts(row: OutboxMessage) -> tuple[str, str]:
    """(text, html) of a queued message."""
    message = email.message_from_bytes(row.body, policy=policy.default)
    text, html = (message.get_body((kind,)).get_content().replace("\r\n", "\n") for kind in ("plain", "html"))
    return text, html


def new_leads(row: OutboxMessage) -> str:
    """The text digest's "New leads" section."""
    return parts(row)[0].split("\nNew leads")[1].split("\n\n")[0]


def test_new_leads_are_those_since_the_last_digest(team):
    alice = team.rep("alice")
    team.deal(alice, "Early Bird", "early@a.example", created=MONDAY_0800_BERLIN - timedelta(hours=3))
    team.run(MONDAY_0800_BERLIN)
    team.deal(alice, "Late Comer", "late@b.example", created=MONDAY_0800_BERLIN + timedelta(hours=2))
    team.run(MONDAY_0800_BERLIN + timedelta(days=1))
    monday, tuesday = (new_leads(r) for r in team.outbox("digest"))
    assert "Early Bird" in monday and "Late Comer" not in monday
    assert "Late Comer" in tuesday and "Early Bird" not in tuesday


def test_a_new_lead_nudges_its_owner_once_but_backfilled_old_leads_do_not(team):
    alice = team.rep("alice")
    now = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    fresh = team.deal(alice, "Jane Doe", "jane@prospect.example", created=now - timedelta(minutes=3),
                      inbound=now - timedelta(minutes=3))
    team.deal(alice, "Old Timer", "old@prospect.example", created=now - timedelta(days=20),
              inbound=now - timedelta(days=20))
    team.deal(None, "Nobody's", "nobody@prospect.example", created=now - timedelta(minutes=1))
    assert team.run(now) == 2  # Tuesday's digest and the nudge
    assert team.run(now + timedelta(minutes=1)) == 0
    (nudge,) = team.outbox("nudge")
    assert (nudge.key, nudge.deal_id, nudge.to_address) == (f"nudge:lead:{fresh}", fresh, "alice@acme.example")
    assert nudge.subject == f"New lead D-{fresh}: Jane Doe"
    message = nudge.body.decode()
    assert "X-InboxCRM: nudge" in message and "Auto-Submitted: auto-generated" in message
    assert re.search(rf"mailto:crm%2B[a-z2-7]{{10}}@acme\.example\?subject=%5BD-{fresh}%5D%20next%3A%20",
                     parts(nudge)[1])


def test_an_unanswered_prospect_nudges_after_business_hours_once_per_message(team):
    alice = team.rep("alice")
    friday_1600 = datetime(2026, 11, 20, 16, 0, tzinfo=BERLIN)
    created = friday_1600 - timedelta(days=10)
    deal = team.deal(alice, created=created, inbound=friday_1600, outbound=created)
    key = f"nudge:unanswered:{deal}:{int(friday_1600.timestamp())}"
    monday_1000 = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)  # 1 h on Friday + 1 h on Monday
    for now in (friday_1600 + timedelta(hours=2), datetime(2026, 11, 22, 12, 0, tzinfo=BERLIN),
                monday_1000 - timedelta(seconds=1)):
        team.run(now)
        assert [r.key for r in team.outbox("nudge")] == []
    team.run(monday_1000)
    team.run(monday_1000 + timedelta(hours=3))
    (nudge,) = team.outbox("nudge")
    assert nudge.key == key and "has waited 2 days for your reply" in nudge.subject
    assert "no answer after 2 business hours" in parts(nudge)[0]
    # She answers; the prospect writes again on Monday at 16:30 and waits until Tuesday 10:30.
    team.answer(deal, monday_1000 + timedelta(hours=1))
    team.run(monday_1000 + timedelta(hours=6))
    assert len(team.outbox("nudge")) == 1
    again = datetime(2026, 11, 23, 16, 30, tzinfo=BERLIN)
    team.write(deal, again)
    team.run(datetime(2026, 11, 24, 10, 29, tzinfo=BERLIN))
    assert len(team.outbox("nudge")) == 1
    team.run(datetime(2026, 11, 24, 10, 30, tzinfo=BERLIN))
    assert [r.key for r in team.outbox("nudge")] == [key, f"nudge:unanswered:{deal}:{int(again.timestamp())}"]


def test_business_hours_are_the_reps_own_days_and_zone(team):
    lee = team.rep("lee", "America/Los_Angeles", digest_days="sat-sun")
    saturday_0900_la = datetime(2026, 11, 21, 9, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    created = saturday_0900_la - timedelta(days=3)
    team.deal(lee, created=created, inbound=saturday_0900_la, outbound=created)
    team.run(saturday_0900_la + timedelta(hours=2) - timedelta(seconds=1))
    assert team.outbox("nudge") == []
    team.run(saturday_0900_la + timedelta(hours=2))
    assert len(team.outbox("nudge")) == 1


def test_unanswered_mail_older_than_a_week_nudges_nobody(team):
    alice = team.rep("alice")
    long_ago = MONDAY_0800_BERLIN - timedelta(days=8)
    team.deal(alice, created=long_ago - timedelta(days=1), inbound=long_ago, outbound=long_ago - timedelta(days=1))
    team.run(MONDAY_0800_BERLIN)
    assert team.outbox("nudge") == []


def test_hostile_names_are_escaped_in_the_nudge(team):
    alice = team.rep("alice")
    now = MONDAY_0800_BERLIN + timedelta(hours=1)
    team.deal(alice, '<script>alert("x")</script> & Co', "evil@prospect.example", created=now)
    team.run(now)
    (nudge,) = team.outbox("nudge")
    text, html = parts(nudge)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<script>alert("x")</script> & Co' in text  # plain text shows the name as it is


def test_the_digest_and_nudges_reach_a_real_smtp_server_once_across_an_outage(team):
    alice = team.rep("alice")
    overdue_work(team, alice)
    with SmtpServer() as server:
        config = build_config({"team": {"domains": ["acme.example"]}, "smtp": server.config(),
                               "commands": {"address": "crm@acme.example"}}, None)
        server.stop()  # down at digest time
        now = MONDAY_0800_BERLIN
        for step in range(0, 3 * 60, 2):  # the daemon's two jobs, for three hours
            now = MONDAY_0800_BERLIN + timedelta(minutes=step)
            if step == 60:
                server.start()
            team.run(now, config)
            outbox.send_due(team.factory, config, now)
        assert [m.rcpt_tos for m in server.messages] == [("alice@acme.example",)]
        assert server.messages[0].message["Message-ID"] == team.outbox("digest")[0].message_id
        assert team.outbox("digest")[0].status == "sent"


def test_rep_digest_settings_are_checked_like_the_config_file(factory):
    Team(factory).rep("alice")
    with transaction(factory) as s:
        with pytest.raises(Invalid, match='"25:00"; expected a time of day as "HH:MM"'):
            notify.set_digest(s, MONDAY_0800_BERLIN, "test", "alice", time_="25:00")
        with pytest.raises(Invalid, match='expected weekdays such as "mon-fri", "mon,wed,fri" or "daily"'):
            notify.set_digest(s, MONDAY_0800_BERLIN, "test", "alice", days="weekdays")
        notify.set_digest(s, MONDAY_0800_BERLIN, "test", "alice", time_="07:15", days="Mon,Wed", always=True)
    with factory() as s:
        schedule = notify.schedule_for(s, make_config(), "alice")
        line = notify.describe(schedule, MONDAY_0800_BERLIN)
    assert (schedule.time_text, schedule.days, schedule.always) == ("07:15", frozenset({0, 2}), True)
    assert "next 2026-11-25 07:15 CET" in line


def test_a_shutdown_ends_a_pass_early_and_the_next_pass_decides_the_rest(team):
    """The daemon's SIGTERM waits for the running pass: a backfill's thousand nudges must not hold it."""
    alice = team.rep("alice")
    now = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    for n in range(3):
        team.deal(alice, f"Lead {n}", f"lead{n}@prospect.example", created=now - timedelta(minutes=3))
    stopping = threading.Event()
    stopping.set()
    assert notify.enqueue_due(team.factory, team.config, now, stop=stopping) == 0 and team.outbox() == []
    assert team.run(now) == 4  # Tuesday's digest and the three nudges, once
    assert team.run(now) == 0


# -- no nudge flood: history, and the caps per rep ---------------------------------------------

MONDAY_0900_BERLIN = MONDAY_0800_BERLIN + timedelta(hours=1)


def prospect_mail(n: int, dated: datetime, reply_to: int | None = None) -> RawMessage:
    """Prospect ``n`` writing to sales@ (``reply_to``: answering our mail in their thread)."""
    thread = f"In-Reply-To: <ask-{reply_to}@acme.example>\r\n" if reply_to is not None else ""
    data = (f"From: Person {n} <p{n}@company{n}.example>\r\nTo: sales@acme.example\r\n"
            f"Subject: Quote for {n} seats\r\nDate: {format_datetime(dated)}\r\n"
            f"Message-ID: <m{n}-{int(dated.timestamp())}@company{n}.example>\r\n{thread}\r\n"
            f"Hello, could you send a quote for {n} seats?\r\n").encode()
    return RawMessage(data, f"test:{n}:{int(dated.timestamp())}", "INBOX")


def receive(team: Team, mailbox: str, messages: list[RawMessage], at: datetime) -> None:
    """Through the pipeline (``import`` and the sync use the same loop), recorded at ``at``."""
    with team.factory() as s:
        info = importer.resolve_mailbox(s, mailbox)
    importer.feed(team.factory, team.config, info, messages, now=lambda: at, parse_workers=0)


def add_mailbox(team: Team, name: str, owner: str, added: datetime) -> None:
    with transaction(team.factory) as s:
        admin.add_mailbox(s, added, "test", name, owner, "capture")


def test_a_backfill_of_old_mail_nudges_nobody_and_the_digest_lists_it(team):
    """The 798 nudges of a first sync: last week's mail, read by a mailbox added just now."""
    alice = team.rep("alice")
    team.rep("bob")  # a second rep gets nothing either
    add_mailbox(team, "sales", "alice", MONDAY_0900_BERLIN)
    old = [prospect_mail(n, MONDAY_0900_BERLIN - timedelta(minutes=90 + 97 * n)) for n in range(100)]  # 7 days
    receive(team, "sales", old, MONDAY_0900_BERLIN + timedelta(minutes=1))
    with team.factory() as s:
        assert s.scalar(select(func.count(Deal.id)).where(Deal.owner_rep_id == alice)) == 100
    for later in (timedelta(minutes=2), timedelta(hours=3), timedelta(days=1, hours=2)):
        team.run(MONDAY_0900_BERLIN + later)
    assert team.outbox("nudge") == []
    tuesday = next(r for r in team.outbox("digest") if r.rep_id == alice and r.status == "pending")
    assert "100 awaiting reply" in tuesday.subject  # the digest still shows every one of them


def test_mail_that_arrives_after_the_mailbox_was_added_nudges(team):
    team.rep("alice")
    add_mailbox(team, "sales", "alice", MONDAY_0900_BERLIN - timedelta(days=30))
    add_mailbox(team, "new-box", "alice", MONDAY_0900_BERLIN)
    lead_at = MONDAY_0900_BERLIN + timedelta(minutes=5)
    receive(team, "sales", [prospect_mail(1, lead_at)], lead_at + timedelta(seconds=20))
    # Prospect 2's mail of two days ago, first read by the new mailbox: history.
    receive(team, "new-box", [prospect_mail(2, MONDAY_0900_BERLIN - timedelta(days=2))], lead_at)
    team.run(lead_at + timedelta(minutes=1))
    assert [r.subject for r in team.outbox("nudge")] == ["New lead D-1: Person 1 (Company1)"]
    again = MONDAY_0900_BERLIN + timedelta(minutes=30)  # prospect 2 writes again, now
    receive(team, "new-box", [prospect_mail(2, again)], again + timedelta(seconds=20))
    team.run(again + timedelta(hours=2))  # 2 business hours later: both are owed a reply
    assert sorted(r.key for r in team.outbox("nudge")) == sorted([
        "nudge:lead:1", f"nudge:unanswered:1:{int(lead_at.timestamp())}",
        f"nudge:unanswered:2:{int(again.timestamp())}"])


def test_a_flood_of_new_leads_nudges_up_to_the_hourly_then_the_daily_cap(team, caplog):
    alice = team.rep("alice")
    bob = team.rep("bob")
    start = MONDAY_0900_BERLIN
    leads = [team.deal(alice, f"Lead {n}", f"lead{n}@prospect{n}.example", created=start + timedelta(seconds=72 * n))
             for n in range(50)]  # 50 in an hour
    bobs = team.deal(bob, "Bob's Lead", "b@bob-prospect.example", created=start + timedelta(minutes=30))
    caplog.set_level(logging.INFO, logger="inboxcrm.app.notify")
    sent_by_hour, held_lines = [], []
    for minute in range(0, 6 * 60, 2):  # the daemon's pass (every 30 s; here every 2 minutes) for 6 hours
        now = start + timedelta(minutes=minute)
        for _ in range(2):  # a second daemon, or a pass after a crash: decides nothing twice
            caplog.clear()
            team.run(now)
            held_lines.append(sum(r.msg == "nudges-held" for r in caplog.records))
        if minute % 60 == 58:
            sent_by_hour.append(len([r for r in team.outbox("nudge") if r.rep_id == alice]))
    assert sent_by_hour == [6, 12, 18, 24, 30, 30]
    nudges = [r for r in team.outbox("nudge") if r.rep_id == alice]
    assert [r.deal_id for r in nudges] == leads[:30]  # oldest first, each once
    assert [r.deal_id for r in team.outbox("nudge") if r.rep_id == bob] == [bobs]  # alice's flood is hers
    for row in nudges:  # never more than 6 in any hour
        assert sum(row.created_at <= r.created_at < row.created_at + timedelta(hours=1) for r in nudges) <= 6
    assert max(held_lines) == 1  # one line a pass, not one per nudge
    (held,) = [r for r in caplog.records if r.msg == "nudges-held"]
    assert (held.inboxcrm_fields["held"], held.inboxcrm_fields["reps"]) == (20, "alice")


def test_held_nudges_wait_for_the_digest_and_are_not_sent_after_it(team):
    alice = team.rep("alice")
    team.run(MONDAY_0800_BERLIN)  # Monday's digest: nothing to say yet
    evening = datetime(2026, 11, 23, 18, 0, tzinfo=BERLIN)
    for n in range(10):
        team.deal(alice, f"Lead {n}", f"lead{n}@p{n}.example", created=evening + timedelta(minutes=n))
    team.run(evening + timedelta(minutes=10))
    assert len(team.outbox("nudge")) == 6
    tuesday_0800 = datetime(2026, 11, 24, 8, 0, tzinfo=BERLIN)
    team.run(tuesday_0800)  # the digest lists all ten as new leads
    (digest,) = [r for r in team.outbox("digest") if r.status == "pending"]
    assert digest.key == f"digest:{alice}:2026-11-24"
    assert all(f"Lead {n}" in new_leads(digest) for n in range(10))
    team.run(tuesday_0800 + timedelta(hours=2))  # room again, but the digest has told her
    assert len(team.outbox("nudge")) == 6


@pytest.mark.parametrize("caps", [{"nudges_per_hour": 0}, {"nudges_per_day": 0}])
def test_a_cap_of_zero_turns_nudges_off(team, caps):
    alice = team.rep("alice")
    team.deal(alice, created=MONDAY_0900_BERLIN)
    team.run(MONDAY_0900_BERLIN + timedelta(minutes=1), make_config(**caps))
    assert team.outbox("nudge") == []
