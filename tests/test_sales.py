"""The sales rules of intake as plain values: what one more message does to its deal.

The store writes what ``sales.plan`` returns, so these are the rules a rep sees in the digest:
counters and scores, New -> Contacted on the first reply, the rep's cold email joining the deal
its answer starts, flags for two reps on one customer, a snoozed deal waking when the prospect
writes, the round-robin's turn.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from inboxcrm.core import sales
from inboxcrm.core.classify import TeamContext
from inboxcrm.core.decide import Context, Decision, MailboxInfo
from inboxcrm.core.match import ContactInfo, Match
from inboxcrm.core.rules import Routing
from inboxcrm.values import Address

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
REPS = {"alice@acme.example": "alice", "bob@acme.example": "bob"}
CTX = Context(team=TeamContext(frozenset({"acme.example"}), frozenset(REPS)), rep_by_address=REPS,
              rep_ids={"alice": 1, "bob": 2},
              stages=((10, "New", "open"), (11, "Contacted", "open"), (12, "Won", "won"), (13, "Lost", "lost")))
SALES = MailboxInfo(1, "sales", "capture", "alice", "sales-inbox", "create")
TOM = Address("tom@northwind.example", "Tom Becker")


def deal(**changes) -> sales.DealState:
    """D-5 of Tom's, owned by alice, in New, one inbound message an hour ago."""
    base = sales.DealState(id=5, contact_id=3, stage_id=10, owner_rep_id=1, fit_score=10, inbound_count=1,
                           outbound_count=0, created_at=NOW - HOUR, last_activity_at=NOW - HOUR,
                           last_inbound_at=NOW - HOUR, last_outbound_at=None, first_response_at=None)
    return replace(base, **changes)


def inbound(found: Match | None = None, **kw) -> Decision:
    found = found or Match("contact", "contact", TOM, deal_id=5, contact=ContactInfo(3, "alice"))
    return Decision("processed", found.reason, match=found, direction="inbound", **kw)


def outbound(rep: str = "alice", found: Match | None = None) -> Decision:
    found = found or Match("contact", "contact", TOM, deal_id=5, contact=ContactInfo(3, "alice"))
    return Decision("processed", found.reason, match=found, direction="outbound", sender_rep=rep)


def plan(decision: Decision, state: sales.DealState | None = None, when: datetime = NOW, **kw) -> sales.Plan:
    return sales.plan(sales.Activity(decision, state or deal(), when, "m1@mail.example", **kw), CTX)


# -- counters, score, snooze --------------------------------------------------------------------

def test_the_prospects_mail_counts_scores_and_wakes_a_snoozed_deal():
    result = plan(inbound())
    changes = result.deal_changes
    assert (changes["inbound_count"], changes["outbound_count"], changes["score"]) == (2, 0, 10 + 2 * 5)
    assert changes["last_inbound_at"] == changes["last_activity_at"] == NOW
    assert changes["snoozed_until"] is None
    assert (result.stage_moves, result.flags, result.adopted, result.new_address) == ((), (), (), None)


def test_a_reps_mail_never_wakes_a_snoozed_deal():
    assert "snoozed_until" not in plan(outbound()).deal_changes


def test_old_mail_arriving_late_never_moves_the_deals_latest_activity_back():
    changes = plan(inbound(), when=NOW - 5 * HOUR).deal_changes
    assert changes["last_activity_at"] == changes["last_inbound_at"] == NOW - HOUR


def test_engagement_is_capped_so_a_chatty_thread_cannot_outweigh_fit_forever():
    assert plan(inbound(), deal(inbound_count=40)).deal_changes["score"] == 10 + 50


# -- first reply ------------------------------------------------------------------------------

def test_the_first_reply_to_a_new_deal_records_the_response_time_and_makes_it_contacted():
    result = plan(outbound("alice"), when=NOW)
    changes = result.deal_changes
    assert (changes["first_response_at"], changes["first_response_seconds"]) == (NOW, 3600)
    assert (changes["stage_id"], changes["last_stage_change_at"]) == (11, NOW)
    assert result.stage_moves == (sales.StageMove("New", "Contacted", NOW, "alice",
                                                  "first reply, message <m1@mail.example>"),)
    assert changes["outbound_count"] == 1 and changes["last_outbound_at"] == NOW


def test_a_second_reply_or_a_deal_past_new_keeps_its_stage_and_first_response():
    answered = plan(outbound(), deal(first_response_at=NOW - HOUR / 2, outbound_count=1))
    assert "first_response_at" not in answered.deal_changes and answered.stage_moves == ()
    later_stage = plan(outbound(), deal(stage_id=12))
    assert later_stage.deal_changes["first_response_at"] == NOW  # a response, but no stage move from Won
    assert later_stage.stage_moves == () and "stage_id" not in later_stage.deal_changes


def test_a_rep_writing_before_the_prospect_ever_did_is_no_response():
    changes = plan(outbound(), deal(inbound_count=0)).deal_changes
    assert "first_response_at" not in changes and "stage_id" not in changes


# -- flags ------------------------------------------------------------------------------------

def test_another_rep_writing_to_a_prospect_whose_deal_alice_owns_is_flagged():
    result = plan(outbound("bob"))
    assert result.flags == (sales.Flag("duplicate-outreach",
                                       "bob wrote to tom@northwind.example, whose deal alice owns"),)
    assert plan(outbound("alice")).flags == ()


def test_mail_attached_to_the_most_recent_of_several_open_deals_is_flagged_for_a_rep_to_check():
    found = Match("contact", "contact-ambiguous", TOM, deal_id=5, contact=ContactInfo(3, "alice"),
                  other_open_deals=(4, 2))
    [flag] = plan(inbound(found)).flags
    assert flag.kind == "ambiguous-match"
    assert "D-4, D-2" in flag.detail and "D-5" in flag.detail


# -- a new deal adopting the rep's earlier mail -------------------------------------------------

def new_deal_state(when: datetime = NOW) -> sales.DealState:
    return sales.DealState(7, 3, 10, 1, 10, 0, 0, when, when, None, None, None)


def test_a_reps_cold_email_joins_the_deal_its_answer_starts_which_then_began_when_the_rep_wrote():
    cold = sales.ThreadMail(41, "outbound", NOW - 3 * HOUR, "bob@acme.example")
    result = plan(inbound(Match("new", "new-lead", TOM)), new_deal_state(), earlier=(cold,))
    changes = result.deal_changes
    assert result.adopted == (41,)
    assert (changes["created_at"], changes["first_response_at"], changes["last_outbound_at"]) == (
        NOW - 3 * HOUR, NOW - 3 * HOUR, NOW - 3 * HOUR)
    assert (changes["inbound_count"], changes["outbound_count"], changes["stage_id"]) == (1, 1, 11)
    assert result.stage_moves == (sales.StageMove("New", "Contacted", NOW - 3 * HOUR, "bob",
                                                  "the rep wrote first, message <m1@mail.example>"),)


def test_earlier_inbound_mail_of_the_thread_joins_without_making_the_deal_contacted():
    earlier = sales.ThreadMail(40, "inbound", NOW - 2 * HOUR, "tom@northwind.example")
    result = plan(inbound(Match("new", "new-lead", TOM)), new_deal_state(), earlier=(earlier,))
    assert result.adopted == (40,) and result.stage_moves == ()
    assert result.deal_changes["created_at"] == NOW - 2 * HOUR
    assert "first_response_at" not in result.deal_changes


def test_only_a_deal_this_message_creates_looks_for_earlier_mail():
    assert sales.adopts_thread(True, ("<cold@acme.example>",))
    assert not sales.adopts_thread(False, ("<cold@acme.example>",))
    assert not sales.adopts_thread(True, ())


# -- a contact learning an address ------------------------------------------------------------

def thread_reply_from(sender: Address) -> Decision:
    return inbound(Match("thread", "thread", sender, deal_id=5))


def test_the_contact_answering_in_their_thread_from_a_new_address_gains_it():
    decision = thread_reply_from(Address("tom@becker-home.example", "Tom  becker"))
    assert sales.may_learn_address(decision)
    assert plan(decision, contact_name="Tom Becker").new_address == "tom@becker-home.example"


def test_a_colleague_answering_in_the_same_thread_is_someone_else():
    decision = thread_reply_from(Address("jane@northwind.example", "Jane Roe"))
    assert plan(decision, contact_name="Tom Becker").new_address is None
    nameless = thread_reply_from(Address("tom@becker-home.example"))
    assert plan(nameless, contact_name="").new_address is None


def test_only_an_unknown_address_replying_in_a_thread_may_teach_one():
    assert not sales.may_learn_address(inbound())  # matched by address: already known
    assert not sales.may_learn_address(replace(thread_reply_from(TOM), direction="outbound"))


# -- a new lead: owner, stage, source, round robin --------------------------------------------

def test_a_new_lead_starts_in_the_first_open_stage_from_the_mailboxs_source():
    lead = sales.new_deal(inbound(owner="alice"), SALES, CTX, turn=None)
    assert lead == sales.NewDeal("alice", 1, "sales-inbox", 10, "New")


def test_routing_rules_choose_a_new_leads_stage_and_source():
    routing = Routing(source="partner", owner="bob", stage="Contacted")
    lead = sales.new_deal(inbound(owner="bob", routing=routing), SALES, CTX, turn=None)
    assert lead == sales.NewDeal("bob", 2, "partner", 11, "Contacted")


def test_a_round_robin_rule_takes_the_turn_the_store_counted():
    routing = Routing(owner="alice", round_robin_rule="rr", round_robin_reps=("alice", "bob"))
    decision = inbound(owner="alice", routing=routing)
    assert sales.turn_to_take(decision) == "rr"
    assert [sales.new_deal(decision, SALES, CTX, turn).owner for turn in (1, 2, 3)] == ["alice", "bob", "alice"]
    assert sales.new_deal(decision, SALES, CTX, None).owner == "alice"  # the rule was removed meanwhile


def test_a_contacts_own_rep_takes_no_turn():
    routing = Routing(owner="alice", round_robin_rule="rr", round_robin_reps=("alice", "bob"))
    assert sales.turn_to_take(inbound(owner="bob", routing=routing)) is None
    assert sales.turn_to_take(inbound(owner="alice")) is None  # no round-robin rule


def test_a_date_far_in_the_future_is_a_broken_clock_not_the_time_of_the_mail():
    assert sales.activity_time(NOW + 2 * HOUR, NOW) == NOW + 2 * HOUR
    assert sales.activity_time(NOW + timedelta(days=3), NOW) == NOW
    assert sales.activity_time(None, NOW) == NOW
