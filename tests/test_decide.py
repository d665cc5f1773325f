"""What the intake decides about one message, with the records as dicts: no database.

Each test is something a rep or an admin relies on: mail reaches the right deal, a new sender
becomes a lead where the mailbox says so, noise and colleagues make no records, a rejected sender
stays out, routing rules win, and command mail goes to the gate, not to a deal.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from inboxcrm.core.classify import RULES, TeamContext
from inboxcrm.core.decide import CommandSettings, Context, MailboxInfo, decide, second_look
from inboxcrm.core.match import ContactInfo
from inboxcrm.core.rules import Action, Condition, RuleSpec
from inboxcrm.core.sender_gate import Gate
from inboxcrm.values import Address, Email

from .test_match import Records

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
REPS = {"alice@acme.example": "alice", "bob@acme.example": "bob"}
TEAM = TeamContext(team_domains=frozenset({"acme.example"}), rep_addresses=frozenset(REPS))
CTX = Context(team=TEAM, rep_by_address=REPS, rep_ids={"alice": 1, "bob": 2},
              stages=((1, "New", "open"), (2, "Contacted", "open"), (3, "Won", "won")))
SALES = MailboxInfo(1, "sales", "capture", "alice", "sales-inbox", "create", created_at=NOW - timedelta(days=30))
ALICE = MailboxInfo(2, "alice", "rep", "alice", "rep-inbox", "review", created_at=NOW - timedelta(days=30))
BOB = MailboxInfo(3, "bob", "rep", "bob", "rep-inbox", "ignore", created_at=NOW - timedelta(days=30))
COMMANDS = MailboxInfo(4, "crm", "commands", None, "email", "ignore", created_at=NOW - timedelta(days=30))


@dataclass
class DecisionRecords(Records):
    """``Records`` plus what ``decide`` asks beyond matching: implements ``DecisionLookup``."""

    rejected: set[str] = field(default_factory=set)
    commands_sent: dict[str, int] = field(default_factory=dict)  # address -> command mails lately
    unmatched_outreach: dict[str, str] = field(default_factory=dict)  # Message-ID -> the rep who wrote it

    def is_rejected_sender(self, address):
        return address in self.rejected

    def recent_commands(self, address, minutes):
        return self.commands_sent.get(address, 0)

    def thread_outreach(self, message_ids):
        return next((self.unmatched_outreach[m] for m in message_ids if m in self.unmatched_outreach), None)


def mail(sender: str = "tom@northwind.example", to: str = "sales@acme.example", subject: str = "Pricing?",
         in_reply_to: tuple[str, ...] = (), headers: tuple[tuple[str, str], ...] = (), name: str = "Tom",
         date: datetime = NOW) -> Email:
    return Email(message_id="<m1@mail.example>", subject=subject, from_=Address(sender, name),
                 to=(Address(to),), in_reply_to=in_reply_to, headers=headers, date=date, text="Hello")


def test_a_reply_in_a_deals_thread_is_processed_into_that_deal():
    records = DecisionRecords(thread_deals={"<offer@acme.example>": 7})
    decision = decide(mail(in_reply_to=("<offer@acme.example>",)), ALICE, CTX, records)
    assert (decision.status, decision.reason, decision.match.deal_id) == ("processed", "thread", 7)
    assert (decision.direction, decision.create_deal) == ("inbound", False)


def test_a_new_sender_in_a_capture_mailbox_is_a_new_lead_for_the_mailboxs_owner():
    decision = decide(mail(), SALES, CTX, DecisionRecords())
    assert (decision.status, decision.reason, decision.create_deal, decision.owner) == (
        "processed", "new-lead", True, "alice")


def test_a_new_sender_in_a_review_mailbox_is_held_until_a_rep_accepts():
    decision = decide(mail(to="alice@acme.example"), ALICE, CTX, DecisionRecords())
    assert (decision.status, decision.reason, decision.create_deal) == ("held", "policy-review", False)
    accepted = decide(mail(to="alice@acme.example"), ALICE, CTX, DecisionRecords(), force_create=True)
    assert (accepted.status, accepted.create_deal, accepted.owner) == ("processed", True, "alice")


def test_a_new_sender_in_an_ignoring_mailbox_makes_no_record():
    decision = decide(mail(to="bob@acme.example"), BOB, CTX, DecisionRecords())
    assert (decision.status, decision.reason) == ("ignored", "policy-ignore")


def test_a_rejected_sender_stays_out_even_in_a_capture_mailbox():
    decision = decide(mail(), SALES, CTX, DecisionRecords(rejected={"tom@northwind.example"}))
    assert (decision.status, decision.reason, decision.create_deal) == ("ignored", "sender-rejected", False)


def test_a_known_contact_without_an_open_deal_gets_a_new_deal_for_the_rep_who_owns_them():
    records = DecisionRecords(contacts={"tom@northwind.example": ContactInfo(3, "bob")}, rejected={"tom@northwind.example"})
    decision = decide(mail(to="alice@acme.example"), ALICE, CTX, records)  # neither policy nor rejection counts
    assert (decision.status, decision.reason, decision.create_deal, decision.owner) == (
        "processed", "returning-contact", True, "bob")


def test_an_answer_to_a_reps_cold_email_is_that_reps_lead_whatever_the_mailbox_policy():
    records = DecisionRecords(unmatched_outreach={"<cold@acme.example>": "bob@acme.example"})
    decision = decide(mail(to="bob@acme.example", in_reply_to=("<cold@acme.example>",)), BOB, CTX, records)
    assert (decision.status, decision.reason, decision.create_deal, decision.owner) == (
        "processed", "reply-to-outreach", True, "bob")


def test_a_reps_mail_to_a_prospect_with_a_deal_counts_on_the_deal_and_names_the_rep():
    records = DecisionRecords(contacts={"tom@northwind.example": ContactInfo(3, "alice")}, open_deals_of={3: [9]})
    email = mail(sender="bob@acme.example", to="tom@northwind.example", name="Bob")
    decision = decide(email, BOB, CTX, records)
    assert (decision.status, decision.direction, decision.sender_rep, decision.match.deal_id) == (
        "processed", "outbound", "bob", 9)
    assert decision.match.prospect.email == "tom@northwind.example"


def test_a_reps_cold_email_is_kept_unmatched_until_the_prospect_answers():
    email = mail(sender="bob@acme.example", to="tom@northwind.example", name="Bob")
    decision = decide(email, SALES, CTX, DecisionRecords())
    assert (decision.status, decision.reason, decision.create_deal) == ("unmatched", "outbound-unmatched", False)


def test_mail_among_colleagues_makes_no_record():
    decision = decide(mail(sender="alice@acme.example", to="bob@acme.example", name="Alice"), SALES, CTX,
                      DecisionRecords())
    assert (decision.status, decision.match) == ("internal", None)


def test_an_auto_reply_is_noise_even_from_a_known_contact():
    records = DecisionRecords(contacts={"tom@northwind.example": ContactInfo(3, "alice")}, open_deals_of={3: [9]})
    decision = decide(mail(headers=(("auto-submitted", "auto-replied"),)), SALES, CTX, records)
    assert (decision.status, decision.reason, decision.match) == ("noise", "auto-submitted", None)


def test_mail_found_in_a_junk_folder_is_noise():
    decision = decide(mail(), SALES, CTX, DecisionRecords(), folder="Spam")
    assert (decision.status, decision.reason) == ("noise", "junk-folder")


def rule(name: str, conditions: list[tuple[str, str]], actions: list[tuple[str, str]], turn: int = 0) -> RuleSpec:
    return RuleSpec(name, tuple(Condition(k, v) for k, v in conditions), tuple(Action(k, v) for k, v in actions),
                    round_robin_next=turn)


def test_an_ignore_rule_wins_over_a_known_deal():
    ctx = replace(CTX, rules=(rule("vendors", [("from-domain", "northwind.example")], [("ignore", "")]),))
    records = DecisionRecords(thread_deals={"<offer@acme.example>": 7})
    decision = decide(mail(in_reply_to=("<offer@acme.example>",)), SALES, ctx, records)
    assert (decision.status, decision.reason) == ("ignored", "rule-ignore")
    assert "vendors" in decision.detail


def test_routing_rules_choose_the_owner_source_and_stage_of_a_new_lead():
    ctx = replace(CTX, rules=(rule("partners", [("subject-contains", "pricing")],
                                   [("owner", "bob"), ("source", "partner"), ("stage", "Contacted")]),))
    decision = decide(mail(), SALES, ctx, DecisionRecords())
    assert (decision.owner, decision.routing.source, decision.routing.stage, decision.routing.fired) == (
        "bob", "partner", "Contacted", ("partners",))


def test_a_review_rule_holds_a_new_sender_in_a_capture_mailbox():
    ctx = replace(CTX, rules=(rule("careful", [("from-domain", "northwind.example")], [("review", "")]),))
    decision = decide(mail(), SALES, ctx, DecisionRecords())
    assert (decision.status, decision.reason) == ("held", "policy-review")
    assert "rule careful" in decision.detail


def test_explain_lists_every_classification_rule_fired_or_not():
    decision = decide(mail(), SALES, CTX, DecisionRecords(), explain=True)
    classify_lines = [e for e in decision.explanations if e.stage == "classify"]
    assert [e.rule for e in classify_lines] == [r.name for r in RULES]
    assert not any(e.fired for e in classify_lines)  # none fired: a prospect's mail
    assert (decision.explanations[-1].stage, decision.explanations[-1].rule) == ("match", "new-lead")


# -- commands by email ------------------------------------------------------------------------

def with_commands(has_commands_mailbox: bool = True) -> Context:
    gate = Gate(team=TEAM, rep_by_address=REPS, tokens={"alice": "t0k", "bob": "t1k"},
                command_addresses=frozenset({"crm@acme.example"}), own_addresses=frozenset({"crm@acme.example"}),
                address_only=True)
    return replace(CTX, commands=CommandSettings(gate=gate, has_commands_mailbox=has_commands_mailbox))


def test_a_reps_mail_in_the_commands_mailbox_is_a_command_not_a_deals_mail():
    email = mail(sender="alice@acme.example", to="crm@acme.example", subject="[D-9] stage: won", name="Alice")
    decision = decide(email, COMMANDS, with_commands(), DecisionRecords())
    assert (decision.status, decision.verdict.obey, decision.verdict.rep, decision.match) == (
        "command", True, "alice", None)


def test_a_prospect_writing_to_the_commands_mailbox_is_refused():
    email = mail(to="crm@acme.example", subject="[D-9] stage: won")
    decision = decide(email, COMMANDS, with_commands(), DecisionRecords())
    assert (decision.status, decision.reason, decision.verdict.obey) == ("refused", "refused-not-rep", False)


def test_a_prospects_tagged_subject_elsewhere_is_ordinary_mail():
    records = DecisionRecords(contacts={"tom@northwind.example": ContactInfo(3, "alice")}, open_deals_of={3: [9]})
    decision = decide(mail(subject="[D-9] won"), SALES, with_commands(), records)
    assert (decision.status, decision.match.deal_id, decision.verdict) == ("processed", 9, None)


def test_a_copy_of_a_command_found_outside_the_commands_mailbox_is_left_to_that_mailbox():
    email = mail(sender="alice@acme.example", to="crm@acme.example", subject="[D-9] stage: won", name="Alice")
    decision = decide(email, ALICE, with_commands(), DecisionRecords())
    assert (decision.status, decision.reason) == ("internal", "command-copy")
    without_mailbox = decide(email, ALICE, with_commands(has_commands_mailbox=False), DecisionRecords())
    assert without_mailbox.status == "command"


def test_a_command_from_before_the_mailbox_was_added_is_history_not_an_order():
    email = mail(sender="alice@acme.example", to="crm@acme.example", subject="[D-9] stage: won", name="Alice",
                 date=NOW - timedelta(days=40))
    decision = decide(email, COMMANDS, with_commands(), DecisionRecords())
    assert (decision.status, decision.reason) == ("ignored", "command-history")


def test_too_many_commands_in_a_burst_are_refused():
    email = mail(sender="alice@acme.example", to="crm@acme.example", subject="[D-9] stage: won", name="Alice")
    decision = decide(email, COMMANDS, with_commands(), DecisionRecords(commands_sent={"alice@acme.example": 99}))
    assert (decision.status, decision.reason) == ("refused", "refused-burst")


# -- a second copy of a stored message --------------------------------------------------------

def test_a_copy_in_a_capture_mailbox_takes_a_sender_a_reps_mailbox_held_or_ignored():
    for reason in ("policy-review", "policy-ignore"):
        assert second_look(reason, SALES).name == "capture-takes-held"
        assert second_look(reason, ALICE) is None  # another rep's mailbox decides the same


def test_a_command_stored_from_the_reps_sent_folder_is_obeyed_from_the_commands_mailbox():
    assert second_look("command-copy", COMMANDS).name == "commands-mailbox-obeys"
    assert second_look("command-copy", SALES) is None


def test_a_prospects_mail_refused_in_the_commands_mailbox_is_captured_from_its_other_copy():
    assert second_look("refused-not-rep", SALES).name == "captured-elsewhere"
    assert second_look("refused-not-rep", COMMANDS) is None


def test_any_other_copy_is_a_duplicate():
    for reason in ("new-lead", "thread", "auto-submitted", "refused-burst", None):
        assert second_look(reason, SALES) is None
        assert second_look(reason, COMMANDS) is None
