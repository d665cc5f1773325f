"""Admin operations against a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from inboxcrm.app import deals
from inboxcrm.app import team as admin
from inboxcrm.app.importer import import_path
from inboxcrm.config import build_config
from inboxcrm.core import rules
from inboxcrm.core.rules import Action, Condition
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.store import team_queries
from inboxcrm.store.db import transaction
from inboxcrm.store.models import (
    AuditEntry,
    Deal,
    Mailbox,
    Message,
    MessageCopy,
    MessageRaw,
    Rep,
    RoutingRule,
    StageChange,
)
from inboxcrm.values import Address, Email

from .conftest import mail, refused

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
ACTOR = "test"


def run(factory, fn, *args, **kwargs):
    """``fn(session, NOW, ACTOR, ...)`` in its own transaction, like one CLI command."""
    with transaction(factory) as session:
        return fn(session, NOW, ACTOR, *args, **kwargs)


def read(factory, fn, *args, **kwargs):
    with factory() as session:
        return fn(session, *args, **kwargs)


def stage_names(factory) -> list[str]:
    return [s.name for s in read(factory, admin.list_stages)]


@pytest.fixture
def team(factory):
    run(factory, admin.add_rep, "alice", ["Alice@Acme.example"])
    run(factory, admin.add_rep, "bob", ["bob@acme.example"], "Europe/Berlin")
    run(factory, admin.add_mailbox, "sales", "alice", "capture")
    return factory


def add_message(factory, status: str, mailbox: str = "sales", raw: bytes = b"Subject: hi\r\n\r\nbody",
                **fields) -> int:
    with transaction(factory) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.name == mailbox))
        msg = Message(message_id=fields.pop("message_id", f"m{NOW.timestamp()}-{status}@x.example"), sha256="0" * 64,
                      raw_row=MessageRaw(data=raw), size=len(raw), received_at=NOW, status=status, **fields)
        s.add(msg)
        s.flush()
        s.add(MessageCopy(message_id=msg.id, mailbox_id=box.id, folder="INBOX", location=f"INBOX/{msg.id}",
                          seen_at=NOW))
        return msg.id


# -- reps -----------------------------------------------------------------------------------

def test_reps_are_listed_with_lower_case_addresses_and_audited(team):
    reps = read(team, admin.list_reps)
    assert [(r.name, r.emails, r.timezone, r.active, r.open_deals) for r in reps] == [
        ("alice", ("alice@acme.example",), "UTC", True, 0),
        ("bob", ("bob@acme.example",), "Europe/Berlin", True, 0),
    ]
    assert read(team, admin.rep_names) == ["alice", "bob"]
    with team() as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.entity == "rep").order_by(AuditEntry.id))
        assert (entry.actor, entry.action, entry.detail["emails"]) == (ACTOR, "create", ["alice@acme.example"])


@pytest.mark.parametrize("name, emails, tz, message", [
    ("ALICE", ["new@acme.example"], "UTC", 'rep "alice" already exists'),
    ("carol", ["BOB@acme.example"], "UTC", "address bob@acme.example already belongs to rep bob"),
    ("carol", ["carol"], "UTC", 'invalid address "carol"; expected an address such as'),
    ("carol", ["carol@acme.example"], "Mars/Olympus", 'unknown timezone "Mars/Olympus"; expected an IANA name'),
    ("carol smith", ["carol@acme.example"], "UTC", 'invalid rep name "carol smith"; use letters'),
    ("carol", [], "UTC", "needs at least one address"),
])
def test_add_rep_refusals_say_what_is_valid(team, name, emails, tz, message):
    with pytest.raises(Invalid, match=message):
        run(team, admin.add_rep, name, emails, tz)


def test_removing_a_rep_without_records_deletes_them(team):
    removed = run(team, admin.remove_rep, "BOB")
    assert (removed.name, removed.deactivated) == ("bob", False)
    assert read(team, admin.rep_names) == ["alice"]


def test_removing_a_rep_who_owns_things_deactivates_them(team):
    removed = run(team, admin.remove_rep, "alice")
    assert removed.deactivated and "1 mailbox" in removed.note
    assert [(r.name, r.active) for r in read(team, admin.list_reps)] == [("alice", False), ("bob", True)]
    assert read(team, admin.rep_names) == ["bob"]
    with pytest.raises(NotFound, match='unknown rep "alice" is deactivated; reps are: bob'):
        run(team, deals.add_lead, "x@northwind.example", owner="alice")
    with pytest.raises(Invalid, match="already deactivated"):
        run(team, admin.remove_rep, "alice")


def test_a_rep_named_in_a_rule_cannot_be_removed(team):
    run(team, admin.add_rule, "rr", [], ["owner=round-robin:alice,bob"])
    with pytest.raises(Invalid, match='rep "bob" is named in rule rr'):
        run(team, admin.remove_rep, "bob")


def test_unknown_rep_lists_the_reps(team):
    with pytest.raises(NotFound, match='unknown rep "carol"; reps are: alice, bob'):
        run(team, admin.remove_rep, "carol")


# -- mailboxes ------------------------------------------------------------------------------

def test_mailbox_defaults_depend_on_role(team):
    run(team, admin.add_mailbox, "bob-inbox", "bob", "rep")
    run(team, admin.add_mailbox, "web", None, "capture", "website", "review")
    rows = {m.name: m for m in read(team, admin.list_mailboxes)}
    assert rows["sales"] == admin.MailboxRow("sales", "capture", "alice", "sales", "create", 0)
    assert rows["bob-inbox"] == admin.MailboxRow("bob-inbox", "rep", "bob", "rep-inbox", "review", 0)
    assert rows["web"] == admin.MailboxRow("web", "capture", None, "website", "review", 0)


@pytest.mark.parametrize("args, error, message", [
    (("x", "alice", "boss"), Invalid, 'invalid role "boss"; expected one of: capture, rep'),
    (("x", "alice", "capture", None, "maybe"), Invalid,
     'invalid policy "maybe"; expected one of: create, review, ignore'),
    (("x", None, "rep"), Invalid, "a rep mailbox needs --owner; reps are: alice, bob"),
    (("x", "carol", "rep"), NotFound, 'unknown rep "carol"; reps are: alice, bob'),
    (("sales", "alice", "capture"), Invalid, 'mailbox "sales" already exists'),
])
def test_add_mailbox_refusals(team, args, error, message):
    with pytest.raises(error, match=message):
        run(team, admin.add_mailbox, *args)


def test_a_mailbox_with_stored_copies_is_removed_only_with_force(team):
    pk = add_message(team, "processed")
    with pytest.raises(Invalid, match='mailbox "sales" has 1 stored message copy; use --force'):
        run(team, admin.remove_mailbox, "sales")
    removed = run(team, admin.remove_mailbox, "sales", force=True)
    assert removed.note == "dropped 1 message copy"
    assert read(team, admin.list_mailboxes) == []
    with team() as s:
        assert s.get(Message, pk) is not None
        assert s.scalars(select(MessageCopy)).all() == []


def test_unknown_mailbox_lists_the_mailboxes(team):
    with pytest.raises(NotFound, match='unknown mailbox "crm"; mailboxes are: sales'):
        run(team, admin.remove_mailbox, "crm")


# -- stages ---------------------------------------------------------------------------------

DEFAULT = ["New", "Contacted", "Qualified", "Proposal", "Negotiation", "Won", "Lost"]


def test_default_stages_with_kinds_and_counts(factory):
    rows = read(factory, admin.list_stages)
    assert [(r.position, r.name, r.kind, r.deals) for r in rows][:1] == [(1, "New", "open", 0)]
    assert [r.name for r in rows] == DEFAULT
    assert [r.kind for r in rows][-2:] == ["won", "lost"]


def test_a_new_open_stage_goes_before_the_closed_ones_unless_placed(factory):
    row = run(factory, admin.add_stage, "Demo")
    assert (row.position, row.kind) == (6, "open")
    run(factory, admin.add_stage, "Discovery", after="cont")
    run(factory, admin.add_stage, "Lost - no budget", kind="lost")
    assert stage_names(factory) == ["New", "Contacted", "Discovery", "Qualified", "Proposal", "Negotiation", "Demo",
                                    "Won", "Lost", "Lost - no budget"]
    assert [r.position for r in read(factory, admin.list_stages)] == list(range(1, 11))


@pytest.mark.parametrize("name, kind, message", [
    ("proposal", "open", 'stage "Proposal" already exists'),
    ("", "open", 'invalid stage name ""'),
    ("Demo", "pending", 'invalid kind "pending"; expected one of: open, won, lost'),
])
def test_add_stage_refusals(factory, name, kind, message):
    with pytest.raises(Invalid, match=message):
        run(factory, admin.add_stage, name, kind=kind)


def test_stage_names_match_by_any_case_or_unique_prefix(factory):
    with factory() as s:
        assert admin.find_stage(s, "PROP").name == "Proposal"
        assert admin.find_stage(s, "won").name == "Won"
        with pytest.raises(Invalid, match='ambiguous stage "n": it could be New, Negotiation'):
            admin.find_stage(s, "n")
        with pytest.raises(NotFound, match='unknown stage "proposl"; stages are: ' + ", ".join(DEFAULT)):
            admin.find_stage(s, "proposl")


def test_move_stage_renumbers(factory):
    run(factory, admin.move_stage, "neg", before="prop")
    run(factory, admin.move_stage, "new", after="qual")
    rows = read(factory, admin.list_stages)
    assert [(r.position, r.name) for r in rows] == list(enumerate(
        ["Contacted", "Qualified", "New", "Negotiation", "Proposal", "Won", "Lost"], start=1))
    with pytest.raises(Invalid, match="exactly one of --after STAGE or --before STAGE"):
        run(factory, admin.move_stage, "new")


def test_removing_a_stage_with_deals_needs_a_target_of_the_same_kind(team):
    ref = run(team, deals.add_lead, "ann@northwind.example", stage="prop").ref
    with pytest.raises(Invalid, match="stage Proposal has 1 deal; move them with --move-to STAGE"):
        run(team, admin.remove_stage, "proposal")
    with pytest.raises(NotFound, match='unknown open stage "won"'):
        run(team, admin.remove_stage, "proposal", move_to="won")
    removed = run(team, admin.remove_stage, "proposal", move_to="neg")
    assert removed.note == "moved 1 deal to Negotiation"
    assert "Proposal" not in stage_names(team)
    with team() as s:
        history = s.scalars(select(StageChange).order_by(StageChange.id)).all()
        assert [(h.from_stage, h.to_stage, h.reason) for h in history][-1] == (
            "Proposal", "Negotiation", "stage Proposal removed")
        assert s.get(Deal, deals.parse_ref(ref)).stage.name == "Negotiation"


@pytest.mark.parametrize("name", ["won", "lost"])
def test_the_last_stage_of_a_kind_stays(factory, name):
    with pytest.raises(Invalid, match="only .* stage, and the pipeline needs at least one open, one won and one lost"):
        run(factory, admin.remove_stage, name)


def test_the_last_open_stage_stays(factory):
    for name in DEFAULT[1:5]:
        run(factory, admin.remove_stage, name)
    with pytest.raises(Invalid, match="it is the only open stage"):
        run(factory, admin.remove_stage, "new")


# -- rules ----------------------------------------------------------------------------------

def test_rules_store_canonical_names_in_order(team):
    row = run(team, admin.add_rule, "web", ["from-domain=formmailer.example", "mailbox=sales"],
              ["form", "owner=round-robin:ALICE,bob", "stage=qual", "score+=5"])
    assert row.actions == ("form", "owner=round-robin:alice,bob", "stage=Qualified", "score+=5")
    run(team, admin.add_rule, "catch-all", [], ["source=other"])
    assert [(r.position, r.name) for r in read(team, admin.list_rules)] == [(1, "web"), (2, "catch-all")]
    specs = read(team, team_queries.load_rule_specs)
    assert specs[0].conditions == (Condition("from-domain", "formmailer.example"), Condition("mailbox", "sales"))
    assert specs[0].actions[1] == Action("owner", "round-robin:alice,bob")
    assert specs[1].conditions == ()
    run(team, admin.remove_rule, "web")
    assert [(r.position, r.name) for r in read(team, admin.list_rules)] == [(1, "catch-all")]


@pytest.mark.parametrize("when, then, error, message", [
    ([], [], Invalid, "a rule needs at least one --then ACTION; actions are: source=NAME"),
    ([], ["frob"], Invalid, 'invalid action "frob"; actions are: source=NAME'),
    (["colour=red"], ["ignore"], Invalid, 'invalid condition "colour=red"; conditions are: from=VALUE'),
    ([], ["owner=carol"], NotFound, 'unknown rep "carol"; reps are: alice, bob'),
    ([], ["stage=won"], NotFound, 'unknown open stage "won"; open stages are: New'),
    (["mailbox=crm"], ["ignore"], NotFound, 'unknown mailbox "crm"; mailboxes are: sales'),
])
def test_add_rule_refusals(team, when, then, error, message):
    with pytest.raises(error, match=message):
        run(team, admin.add_rule, "r", when, then)


SCORE_RANGE = "score+=N adds from -1000 to 1000 points"


@pytest.mark.parametrize("when, then, message", [
    ([], ["score+=99999999999999999999999"], SCORE_RANGE),
    ([], ["score+=" + "9" * 5000], SCORE_RANGE),  # more digits than int() converts
    ([], ["score+=1001"], SCORE_RANGE),
    ([], ["score+=-1001"], SCORE_RANGE),
    ([], ["source=" + "s" * 101], "a source value is at most 100 characters, found 101"),
    (["subject-contains=" + "x" * 501], ["ignore"], "a subject-contains value is at most 500 characters, found 501"),
    (["header=X-Campaign:" + "x" * 500], ["ignore"], "a header value is at most 500 characters, found 511"),
    (["from=*@a.example"] * 21, ["ignore"], "a rule has at most 20 conditions and 20 actions; found 21 and 1"),
])
def test_rule_values_are_bounded_at_rule_add(team, when, then, message):
    with pytest.raises(Invalid, match=re.escape(message)) as refused_rule:
        run(team, admin.add_rule, "r", when, then)
    assert len(str(refused_rule.value)) < 400  # the huge value is clipped, not echoed back
    assert read(team, admin.list_rules) == []


def test_rule_values_at_the_bounds_are_accepted(team):
    row = run(team, admin.add_rule, "edges", ["subject-contains=" + "x" * 500] * 20,
              ["score+=1000", "score += -1000", "score+=+7", "source=" + "s" * 100])
    assert row.actions[:3] == ("score+=1000", "score+=-1000", "score+=7")


def test_rule_add_on_the_command_line_names_the_range(cli):
    message = refused(cli, "rule", "add", "huge", "--then", "score+=99999999999999999999999")
    assert message == ('error: invalid action "score+=99999999999999999999999"; score+=N adds from -1000 to 1000 '
                       "points (a business domain is worth 10)\n")


def test_a_stored_rule_out_of_bounds_is_skipped_not_quarantining_mail(team, tmp_path, caplog):
    """A rule stored before the bounds (or edited in the database) must not fail every message:
    it is skipped with a warning, the other rules still apply, and rule explain says why."""
    with transaction(team) as s:
        s.add(RoutingRule(name="huge", position=1, conditions=[], actions=[["score", "99999999999999999999999"]],
                          round_robin_next=0, created_at=NOW))
    run(team, admin.add_rule, "referrals", [], ["source=referral", "score+=15"])
    eml = tmp_path / "quote.eml"
    eml.write_bytes(mail("classify-prospect.eml"))
    rules.unusable.cache_clear()  # the warning is logged once per rule and process
    with caplog.at_level(logging.WARNING, logger="inboxcrm.core.rules"):
        import_path(team, build_config({"team": {"domains": ["acme.example"]}}, None), "sales", eml)
    with team() as s:
        assert s.scalar(select(Message.status).where(Message.message_id == "quote-40@northwind.example")) != "quarantined"
        assert s.execute(select(Deal.source, Deal.fit_score)).one() == ("referral", 10 + 15)
    assert caplog.text.count("rule huge skipped") == 1
    assert 'score+=N adds from -1000 to 1000' in caplog.text and "inboxcrm rule remove huge" in caplog.text
    [huge, referrals] = read(team, team_queries.load_rule_specs)
    quote = Email(message_id="q@northwind.example", subject="Quote", from_=Address("buyer@northwind.example"))
    explained = rules.evaluate((huge, referrals), quote, "sales").explanations
    assert [(e.rule, e.fired) for e in explained] == [("huge", False), ("referrals", True)]
    assert explained[0].detail.startswith('skipped: invalid action "score+=99999999999999999999999"')


def test_a_stage_or_mailbox_named_in_a_rule_cannot_be_removed(team):
    run(team, admin.add_rule, "r", ["mailbox=sales"], ["stage=proposal"])
    with pytest.raises(Invalid, match='stage "Proposal" is named in rule r'):
        run(team, admin.remove_stage, "proposal")
    with pytest.raises(Invalid, match='mailbox "sales" is named in rule r'):
        run(team, admin.remove_mailbox, "sales")
    with pytest.raises(NotFound, match='unknown rule "x"; rules are: r'):
        run(team, admin.remove_rule, "x")


# -- review and quarantine ------------------------------------------------------------------

def test_held_messages_are_listed_for_review(team):
    pk = add_message(team, "held", from_address="new@northwind.example", subject="Hello",
                     sent_at=NOW - timedelta(hours=1), reason="new-sender-review")
    add_message(team, "processed", message_id="other@x.example")
    assert read(team, admin.list_review) == [admin.ReviewRow(pk, NOW - timedelta(hours=1), "new@northwind.example",
                                                             "Hello", ("sales",), "new-sender-review")]


def test_quarantined_message_shows_the_start_of_its_raw_bytes(team):
    raw = b"Subject: broken\r\n\r\n" + b"\xff" + b"x" * 5000
    pk = add_message(team, "quarantined", raw=raw, reason="unparseable", detail="boom")
    [row] = read(team, admin.list_quarantine)
    assert (row.id, row.reason, row.detail, row.size, row.date) == (pk, "unparseable", "boom", len(raw), NOW)
    shown = read(team, admin.show_quarantined, pk)
    assert shown.message == row and shown.mailboxes == ("sales",) and shown.truncated
    assert shown.preview.startswith("Subject: broken\r\n\r\n\ufffdxxx") and len(shown.preview) == admin.PREVIEW_BYTES
    with pytest.raises(NotFound, match=f"no quarantined message {pk + 1}; quarantined messages are: {pk}"):
        read(team, admin.show_quarantined, pk + 1)


def test_stored_raw_by_message_id(team):
    add_message(team, "processed", message_id="abc@x.example", raw=b"Subject: a\r\n\r\nb")
    assert read(team, admin.stored_raw, "<abc@x.example>") == b"Subject: a\r\n\r\nb"
    with pytest.raises(NotFound, match="no stored message with Message-ID <nope@x>"):
        read(team, admin.stored_raw, "nope@x")


def test_rep_with_deals_counts_open_deals(team):
    run(team, deals.add_lead, "ann@northwind.example", owner="bob")
    ref = run(team, deals.add_lead, "joe@contoso.example", owner="bob").ref
    run(team, deals.mark_won, ref)
    assert {r.name: r.open_deals for r in read(team, admin.list_reps)} == {"alice": 0, "bob": 1}
    with team() as s:
        assert s.scalar(select(Rep).where(Rep.name == "bob")).active


def test_many_wildcards_cannot_stall_the_pipeline():
    """fnmatch matches in linear time, so the longest pattern rule add allows against the
    longest address stays instant; a backtracking regex matcher would not finish this pair."""
    pattern = rules.parse_condition("from=" + "*a" * 240 + "b")
    spec = rules.RuleSpec("stars", (pattern,), (Action("ignore"),))
    sender = Email(message_id="s@x.example", subject="", from_=Address("a" * 64 + "@" + "a" * 180 + ".example"))
    started = time.perf_counter()
    assert rules.evaluate((spec,), sender, "sales").fired == ()
    assert time.perf_counter() - started < 0.5
