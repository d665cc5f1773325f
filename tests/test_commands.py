"""Commands by email as a rep writes them: every verb and form, the prefixes mail clients add,
replies with the digest quoted below, all-or-nothing errors that name what would be valid, and
properties over random text (nothing raises, nothing is invented, Re:/Fwd: change nothing)."""
from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxcrm.core.digest import DealRow, DigestData, RepInfo, StageTotal, build_digest
from inboxcrm.core.verbs import (
    FORMS,
    VERBS,
    Change,
    StageChoice,
    add_months,
    describe,
    has_command,
    parse,
    plan,
    strip_prefixes,
    subject_tag,
)
from inboxcrm.mail.render import render_digest, template_env

TODAY = date(2026, 11, 23)  # a Monday
FRIDAY = date(2026, 11, 27)
STAGES = tuple(StageChoice(name, kind) for name, kind in (
    ("New", "open"), ("Contacted", "open"), ("Qualified", "open"), ("Proposal", "open"), ("Negotiation", "open"),
    ("Won", "won"), ("Lost", "lost"),
))
REPS = {"alice": ["alice@team.example"], "alan": ["alan@team.example"],
        "bob": ["bob@team.example", "robert@team.example"]}


def run(subject: str, body: str = "", default_deal: int | None = None):
    return plan(parse(subject, body, default_deal), STAGES, REPS, TODAY)


def one_change(line: str) -> Change:
    """The change one tagged body line makes (the subject carries no command)."""
    changes, errors = run("commands", line)
    assert errors == ()
    assert len(changes) == 1
    return changes[0]


def problems(subject: str, body: str = "", default_deal: int | None = None) -> list[tuple[str, str]]:
    changes, errors = run(subject, body, default_deal)
    assert changes == (), "with any error nothing may be applied"
    return [(e.where, e.problem) for e in errors]


# -- subjects: prefixes and tags ----------------------------------------------------------------

@pytest.mark.parametrize("subject", [
    "Re: [D-42] won", "RE: RE: re: [D-42] won", "Fwd: [D-42] won", "FW: [D-42] won", "Fw: Re: [D-42] won",
    "AW: WG: [D-42] won", "SV: VS: [D-42] won", "Antw: [D-42] won", "TR : [D-42] won", "RV: RE: [D-42] won",
    "RE[2]: [D-42] won", "Re(3): [D-42] won", "Re^2: [D-42] won", "Réf. : [D-42] won", "RÉF. [D-42] won",
    "Odp: PD: [D-42] won", "R: I: [D-42] won", "回复：[D-42] won", "ΑΠ: [D-42] won", "[EXTERNAL] Re: [D-42] won",
    "  re:fwd:AW:[D-42] won",
])
def test_reply_and_forward_prefixes_in_many_languages_are_stripped(subject):
    assert strip_prefixes(subject) == "[D-42] won"
    assert subject_tag(subject) == 42
    assert has_command(subject)
    changes, errors = run(subject)
    assert errors == ()
    assert [(c.deal, c.stage, c.where, c.text) for c in changes] == [(42, "Won", "subject", "[D-42] won")]


@pytest.mark.parametrize("subject", ["[D-42] won", "[d42] won", "[D 42] won", "[ D-42 ] won", "[d-042] won",
                                     "[D–42] won"])
def test_a_tag_is_written_several_ways(subject):
    assert subject_tag(subject) == 42
    assert run(subject)[0][0].deal == 42


@pytest.mark.parametrize("subject, tag", [
    ("Acme pilot [D-42]", None),  # only a tag at the start (after prefixes) counts
    ("Re: D-42: Carla has waited 2 days", None),  # the nudge's subject is not a tag
    ("[D-42]", 42), ("Re: [D-42] ", 42), ("[D-1234567890] won", None), ("", None),
])
def test_subject_tag(subject, tag):
    assert subject_tag(subject) == tag


@pytest.mark.parametrize("subject, expected", [
    ("[D-42] won", True), ("Re: [D-42] stage: proposal", True), ("[D-42] lost", True), ("[D-42] Won!", True),
    ("[D-42] next step: call", True),
    ("[D-42] next steps for Acme", False),  # a team mail about a deal, not a command
    ("[D-42] stage proposal", False), ("[D-42] wonderful news", False), ("[D-42]", False),
    ("won", False), ("Re: next: call", False), ("Acme [D-42] won", False),
])
def test_has_command_is_tag_verb_and_colon(subject, expected):
    assert has_command(subject) is expected


def test_a_subject_tag_without_a_command_only_says_which_deal():
    parsed = parse("Re: [D-42]", "next: call them by friday\nnote: asked for 50 seats")
    assert parsed.subject_deal == 42
    changes, errors = plan(parsed, STAGES, REPS, TODAY)
    assert errors == ()
    assert [describe(c) for c in changes] == ['D-42: next step "call them" due Fri 2026-11-27',
                                              'D-42: note added "asked for 50 seats"']


# -- every verb and form ------------------------------------------------------------------------

@pytest.mark.parametrize("line, fields", [
    ("[D-42] stage: proposal", dict(verb="stage", stage="Proposal")),
    ("[D-42] stage: PROP", dict(verb="stage", stage="Proposal")),
    ("[D-42] Stage : negotiation", dict(verb="stage", stage="Negotiation")),
    ("[D-42] stage:qualified", dict(verb="stage", stage="Qualified")),
    ("[D-42] stage: won", dict(verb="stage", stage="Won", reason=None)),
    ("[D-42] won", dict(verb="stage", stage="Won", reason=None)),
    ("[D-42] WON!", dict(verb="stage", stage="Won", reason=None)),
    ("[D-42] won: signed for two years", dict(verb="stage", stage="Won", reason="signed for two years")),
    ("[D-42] lost: chose a competitor", dict(verb="stage", stage="Lost", reason="chose a competitor")),
    ("[D-42] next: send the quote by friday", dict(verb="next", reason="send the quote", due=FRIDAY)),
    ("[D-42] next: send the quote by Fri.", dict(verb="next", reason="send the quote", due=FRIDAY)),
    ("[D-42] NEXT: send the quote, due friday", dict(verb="next", reason="send the quote", due=FRIDAY)),
    ("[D-42] next step: call them due: tomorrow", dict(verb="next", reason="call them", due=date(2026, 11, 24))),
    ("[D-42] next: follow up by today", dict(verb="next", reason="follow up", due=TODAY)),
    ("[D-42] next: demo due in 2 weeks", dict(verb="next", reason="demo", due=date(2026, 12, 7))),
    ("[D-42] next: contract due in 1 month", dict(verb="next", reason="contract", due=date(2026, 12, 23))),
    ("[D-42] next: renewal talk by 2027-01-15", dict(verb="next", reason="renewal talk", due=date(2027, 1, 15))),
    ("[D-42] next: call by phone", dict(verb="next", reason="call by phone", due=None)),
    ("[D-42] next: call back in 3 days", dict(verb="next", reason="call back in 3 days", due=None)),
    ("[D-42] next: drop it by the door by monday", dict(verb="next", reason="drop it by the door",
                                                        due=date(2026, 11, 30))),
    ("[D-42] owner: bob", dict(verb="owner", rep="bob")),
    ("[D-42] owner: BOB", dict(verb="owner", rep="bob")),
    ("[D-42] owner: ali", dict(verb="owner", rep="alice")),
    ("[D-42] owner: Robert@Team.example", dict(verb="owner", rep="bob")),
    ("[D-42] owner: robert@team.example<mailto:robert@team.example>", dict(verb="owner", rep="bob")),
    ("[D-42] value: 12000", dict(verb="value", value=Decimal("12000.00"))),
    ("[D-42] value: $12,000.50", dict(verb="value", value=Decimal("12000.50"))),
    ("[D-42] value: 12000 EUR", dict(verb="value", value=Decimal("12000.00"))),
    ("[D-42] value: €9.5", dict(verb="value", value=Decimal("9.50"))),
    ("[D-42] value: usd 70", dict(verb="value", value=Decimal("70.00"))),
    ("[D-42] value: £ 1,000", dict(verb="value", value=Decimal("1000.00"))),
    ("[D-42] note: they   want a\tdemo", dict(verb="note", reason="they want a demo")),
    ("[D-42] note: see: the attached: plan", dict(verb="note", reason="see: the attached: plan")),
    ("[D-42] snooze: 2 weeks", dict(verb="snooze", due=date(2026, 12, 7))),
    ("[D-42] snooze: 3 days", dict(verb="snooze", due=date(2026, 11, 26))),
    ("[D-42] snooze: 1 day", dict(verb="snooze", due=date(2026, 11, 24))),
    ("[D-42] snooze: 1 month", dict(verb="snooze", due=date(2026, 12, 23))),
    ("[D-42] snooze: in 2 weeks", dict(verb="snooze", due=date(2026, 12, 7))),
    ("[D-42] snooze: in 2 months", dict(verb="snooze", due=date(2027, 1, 23))),
    ("[D-42] snooze: until friday", dict(verb="snooze", due=FRIDAY)),
    ("[D-42] snooze: fri", dict(verb="snooze", due=FRIDAY)),
    ("[D-42] snooze: tomorrow", dict(verb="snooze", due=date(2026, 11, 24))),
    ("[D-42] snooze: 2026-12-24", dict(verb="snooze", due=date(2026, 12, 24))),
    ("[D-42] snooze: 365 days", dict(verb="snooze", due=date(2027, 11, 23))),
    ("[D-42] snooze: off", dict(verb="snooze", due=None)),
])
def test_each_verb_and_form(line, fields):
    change = one_change(line)
    assert (change.deal, change.where, change.text) == (42, "line 1", line)
    for name, expected in fields.items():
        assert getattr(change, name) == expected, name


def test_calendar_months_end_on_the_last_day_of_a_shorter_month():
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    assert add_months(date(2026, 12, 15), 1) == date(2027, 1, 15)


@pytest.mark.parametrize("line, problem", [
    ("[D-42] stage: n", 'ambiguous stage "n": it could be New, Negotiation; type more of the name'),
    ("[D-42] stage: closed",
     'unknown stage "closed"; stages are: New, Contacted, Qualified, Proposal, Negotiation, Won, Lost'),
    ("[D-42] stage: lost", "a lost deal needs a reason: [D-42] lost: chose a competitor"),
    ("[D-42] stage proposal", 'write a colon after "stage": [D-42] stage: proposal'),
    ("[D-42] stage = proposal", 'write a colon after "stage": [D-42] stage: proposal'),
    ("[D-42] stage:", '"stage" needs a stage name: [D-42] stage: proposal'),
    ("[D-42] lost", '"lost" needs a reason: [D-42] lost: chose a competitor'),
    ("[D-42] lost:   ", '"lost" needs a reason: [D-42] lost: chose a competitor'),
    ("[D-42] won the deal", 'write a colon after "won": [D-42] won'),
    ("[D-42] promote: x",
     'unknown command "promote"; commands are stage, won, lost, next, owner, value, note, snooze, close, '
     "as in [D-42] next: send the quote by friday"),
    ("[D-42] 2 weeks", 'unknown command "2"'),
    ("[D-42]", "[D-42] says which deal but not what to do; commands are stage, won, lost"),
    ("[D-42] next:", '"next" needs what to do: [D-42] next: send the quote by friday'),
    ("[D-42] next: by friday", "say what the next step is before the date: [D-42] next: send the quote by friday"),
    ("[D-42] next: call due 2020-01-01", "the due date 2020-01-01 has passed; expected today or later"),
    ("[D-42] owner: al", 'ambiguous rep "al": it could be alice, alan; type more of the name'),
    ("[D-42] owner: carol", 'unknown rep "carol"; reps are: alice, alan, bob'),
    ("[D-42] owner: carol@team.example", 'unknown rep "carol@team.example"; reps are: alice, alan, bob'),
    ("[D-42] owner:", '"owner" needs a rep\'s name or address: [D-42] owner: bob'),
    ("[D-42] value: 12k", 'invalid value "12k"; expected a number'),
    ("[D-42] value: -5", 'invalid value "-5"'),
    ("[D-42] value: 12.000,00 EUR", 'invalid value "12.000,00"'),
    ("[D-42] snooze: forever", 'invalid snooze "forever"; expected 3 days, 2 weeks or 1 month'),
    ("[D-42] snooze: 400 days", "at most 365 days ahead (2027-11-23)"),
    ("[D-42] snooze: today", "expected a date after today (2026-11-23)"),
    ("[D-42] snooze: 2026-01-01", "cannot snooze until 2026-01-01: expected a date after today"),
    ("[D-42] snooze:", '"snooze" needs how long: [D-42] snooze: 2 weeks'),
    ("[D-42] note:", '"note" needs text: [D-42] note: they want a demo next week'),
    ("[D-42] next: " + "x" * 501, "the next step is 501 characters long; expected at most 500"),
    ("[D-42] lost: " + "x" * 501, "the reason is 501 characters long; expected at most 500"),
    ("[D-42] note: " + "x" * 2000, "at most 2000 are read"),
])
def test_each_error_says_what_is_wrong_and_what_is_valid(line, problem):
    found = problems("commands", line)
    assert len(found) == 1
    where, text = found[0]
    assert where == "line 1"
    assert problem in text


def test_won_and_lost_need_such_a_stage_to_exist():
    only_open = (StageChoice("New", "open"), StageChoice("Demo", "open"))
    _, errors = plan(parse("[D-42] won", ""), only_open, REPS, TODAY)
    assert [e.problem for e in errors] == [
        'there is no won stage; stages are: New, Demo (an admin adds one with "inboxcrm stage add NAME --kind won")']


def test_an_exact_name_wins_over_a_longer_one_it_starts():
    stages = (StageChoice("Demo", "open"), StageChoice("Demo done", "open"), StageChoice("Won", "won"))
    changes, _ = plan(parse("[D-1] stage: demo", ""), stages, REPS, TODAY)
    assert changes[0].stage == "Demo"
    changes, _ = plan(parse("[D-1] stage: demo   DONE", ""), stages, REPS, TODAY)
    assert changes[0].stage == "Demo done"


# -- which deal ---------------------------------------------------------------------------------

def test_untagged_lines_use_the_subject_tag_then_the_default_deal():
    assert {c.deal for c in run("Re: [D-42] note: a", "won", default_deal=7)[0]} == {42}
    assert [c.deal for c in run("Fwd: Pricing", "note: wants 50 seats", default_deal=7)[0]] == [7]
    assert [(c.deal, c.verb) for c in run("[D-1]", "[D-2] won\nnote: x")[0]] == [(2, "stage"), (1, "note")]


def test_an_untagged_line_with_no_deal_anywhere_is_an_error():
    parsed = parse("Re: inboxcrm: 3 overdue - Tue 24 Nov", "next: call them\n[D-43] won")
    assert [(c.deal, c.where) for c in parsed.commands] == [(None, "line 1"), (43, "line 2")]
    assert problems("Re: inboxcrm: 3 overdue - Tue 24 Nov", "next: call them\n[D-43] won") == [
        ("line 1", "say which deal this is for: [D-42] next: call them")]


# -- what the body scan reads, and what it never reads -------------------------------------------

def test_blank_lines_are_skipped_and_the_first_other_line_ends_the_commands():
    body = "\n\n  [D-42] stage: proposal\n\n[D-42] note: sent it\r\nThanks, Bob\n[D-43] won\n"
    parsed = parse("commands", body)
    assert [(c.where, c.text) for c in parsed.commands] == [("line 3", "[D-42] stage: proposal"),
                                                            ("line 5", "[D-42] note: sent it")]


@pytest.mark.parametrize("body", [
    "Next week we will call them.\n", "Note that the quote went out.", "Won't make it on Friday",
    "won over by the demo", "Stage fright: none", "Hi,\n[D-42] won", "> [D-42] won", "-- \n[D-42] won", "Value - 12000",
])
def test_prose_is_never_a_command(body):
    assert parse("Re: lunch", body).empty


def _row(i: int, **kw) -> DealRow:
    now = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
    base = dict(id=i, title=f"Deal {i}", contact=f"Person {i}", address=f"p{i}@prospect.example", company="Harbor",
                stage="New", value=Decimal("12000.50"), source="website", score=10, owner_rep_id=1, owner="alice",
                next_step=None, next_step_due=None, next_step_owner_id=None, created_at=now - timedelta(days=40),
                last_inbound_at=None, last_outbound_at=None, last_stage_change_at=now - timedelta(days=40))
    return DealRow(**{**base, **kw})


def _digest_text() -> tuple[str, str]:
    """A real digest (subject, text) as the template writes it, with won:/lost: quick actions."""
    now = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
    rows = (_row(42, title="Acme pilot", next_step="send the quote", next_step_due=date(2026, 11, 20)),
            _row(43, title="Harbor renewal", last_inbound_at=now - timedelta(hours=5)),
            _row(44, title="Old lead"))  # only stalled: its item carries the won:/lost: actions
    data = DigestData(RepInfo(1, "alice", "alice@team.example", "Europe/Berlin"), rows, (),
                      (StageTotal("New", 4, Decimal(1000)),), now - timedelta(hours=24))
    digest = build_digest(data, now, ZoneInfo("Europe/Berlin"), lambda stage: 14, 30, "crm@team.example")
    mail = render_digest(digest, template_env())
    assert "  won: mailto:" in mail.text and "  lost: mailto:" in mail.text  # would read as commands if reached
    return mail.subject, mail.text


def test_a_reply_to_the_digest_reads_the_reps_lines_not_the_quoted_digest_or_the_signature():
    subject, digest = _digest_text()
    quoted = "\n".join("> " + line if line else ">" for line in digest.splitlines())
    body = ("[D-42] next: send the quote by friday\n"
            "[D-43] won: signed this morning\n"
            "\n"
            "-- \n"
            "Alice Rep | Team Example\n"
            "won: mailto:crm@team.example\n"
            "\n"
            f"On Tue, 24 Nov 2026 at 08:00, inboxcrm <crm@team.example> wrote:\n{quoted}\n")
    changes, errors = run("Re: " + subject, body)
    assert errors == ()
    assert [describe(c) for c in changes] == ['D-42: next step "send the quote" due Fri 2026-11-27',
                                              'D-43: moved to Won ("signed this morning")']


def test_an_outlook_reply_with_the_digest_unquoted_below_a_from_sent_block():
    subject, digest = _digest_text()
    body = ("[D-43] lost: went with a competitor\r\n"
            "\r\n"
            "________________________________\r\n"
            "From: inboxcrm <crm@team.example>\r\n"
            "Sent: Tuesday, November 24, 2026 8:00 AM\r\n"
            "To: Alice Rep <alice@team.example>\r\n"
            f"Subject: {subject}\r\n\r\n" + digest.replace("\n", "\r\n"))
    changes, errors = run("RE: " + subject, body)
    assert errors == ()
    assert [(c.deal, c.stage, c.reason) for c in changes] == [(43, "Lost", "went with a competitor")]
    # Without the underscore line (the text of an HTML mail), "From:" still ends the commands.
    changes, errors = run("RE: " + subject, body.replace("________________________________\r\n", ""))
    assert [(c.deal, c.stage) for c in changes] == [(43, "Lost")]


@pytest.mark.parametrize("separator", [
    "-----Original Message-----", "On Mon, Nov 23, 2026 at 9:12 AM Carla <carla@acme.example> wrote:",
    "Sent from my iPhone", "Am 23.11.2026 um 09:12 schrieb Carla <carla@acme.example>:", "-- ",
])
def test_quoted_text_after_the_usual_separators_is_not_read(separator):
    body = f"[D-42] note: called\n\n{separator}\n[D-42] lost: x\nnext: y\n> [D-42] won"
    assert [c.text for c in parse("Re: x", body).commands] == ["[D-42] note: called"]


def test_the_digest_itself_at_the_top_of_a_body_is_no_command():
    _, digest = _digest_text()
    assert parse("Fwd: inboxcrm", digest).empty


def test_at_most_twenty_commands_are_read():
    body = "\n".join(f"[D-{i}] note: n{i}" for i in range(1, 26))
    parsed = parse("bulk", body)
    assert len(parsed.commands) == 20
    assert [(e.where, e.problem) for e in parsed.errors] == [
        ("line 21", "one email carries at most 20 commands; send the rest in another email")]
    assert plan(parsed, STAGES, REPS, TODAY)[0] == ()


def test_commands_beyond_the_fiftieth_line_are_refused_not_dropped():
    body = "\n" * 45 + "[D-1] note: a\n\n\n\n\n[D-2] note: b\n"
    parsed = parse("late", body)
    assert [c.where for c in parsed.commands] == ["line 46"]
    assert [(e.where, e.problem) for e in parsed.errors] == [
        ("line 51", "one email carries at most 50 lines; send the rest in another email")]


def test_a_huge_body_and_subject_are_read_quickly():
    started = time.perf_counter()
    parsed = parse("Re: " * 50_000 + "[D-1] note: " + "x " * 500_000, "[D-2] won\n" + "y" * 20_000_000)
    assert time.perf_counter() - started < 2
    assert [c.deal for c in parsed.commands] == [2]
    assert "at most 2000 are read" in parsed.errors[0].problem


# -- all or nothing -----------------------------------------------------------------------------

def test_one_bad_command_stops_them_all_and_every_problem_is_listed_in_order():
    body = "[D-42] stage: prop\n[D-43] stage: x\n[D-44] owner: carol\n[D-45] note: fine"
    assert problems("[D-41] promote: now", body) == [
        ("subject", 'unknown command "promote"; commands are stage, won, lost, next, owner, value, note, snooze, '
                    "close, as in [D-41] next: send the quote by friday"),
        ("line 2", 'unknown stage "x"; stages are: New, Contacted, Qualified, Proposal, Negotiation, Won, Lost'),
        ("line 3", 'unknown rep "carol"; reps are: alice, alan, bob (a name, the start of one, or a rep\'s address)'),
    ]


def test_two_stage_moves_for_one_deal_are_refused_but_two_notes_are_fine():
    assert problems("Re: [D-42] won", "lost: no budget") == [
        ("line 1", "D-42 gets two stage changes (stage, won, lost) in this email (subject and line 1); "
                   "keep the one you mean")]
    changes, errors = run("[D-42] note: a", "note: b\n[D-43] won\n[D-42] won")
    assert errors == ()
    assert [describe(c) for c in changes] == ['D-42: note added "a"', 'D-42: note added "b"', "D-43: moved to Won",
                                              "D-42: moved to Won"]


def test_several_commands_in_one_email_all_apply():
    body = "[D-42] stage: negotiation\n[D-42] value: 48,000 EUR\n[D-42] owner: alan\n[D-42] snooze: 1 month"
    changes, errors = run("[D-42] next: send the contract by 2026-12-01", body)
    assert errors == ()
    assert [describe(c) for c in changes] == [
        'D-42: next step "send the contract" due Tue 2026-12-01', "D-42: moved to Negotiation",
        "D-42: value set to 48,000", "D-42: owner is now alan", "D-42: snoozed until Wed 2026-12-23"]


def test_an_email_without_commands_is_empty():
    parsed = parse("Lunch on Friday?", "Hi all,\nwho is in?")
    assert parsed.empty and parsed.subject_deal is None
    assert plan(parsed, STAGES, REPS, TODAY) == ((), ())


# -- the answer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, line", [
    (Change(42, "stage", "subject", "[D-42] lost: x", stage="Lost", reason="chose a competitor"),
     'D-42: moved to Lost ("chose a competitor")'),
    (Change(42, "next", "line 1", "t", reason="call", due=None), 'D-42: next step "call", no due date'),
    (Change(42, "owner", "line 1", "t", rep="bob"), "D-42: owner is now bob"),
    (Change(42, "value", "line 1", "t", value=Decimal("12000.50")), "D-42: value set to 12,000.50"),
    (Change(42, "note", "line 1", "t", reason="x" * 100), 'D-42: note added "' + "x" * 79 + '…"'),
    (Change(42, "snooze", "line 1", "t", due=FRIDAY), "D-42: snoozed until Fri 2026-11-27"),
    (Change(42, "snooze", "line 1", "t", due=None), "D-42: snooze ended, the deal is back in the digest"),
])
def test_describe(change, line):
    assert describe(change) == line


def test_forms_show_every_verb():
    for verb in VERBS:
        assert f"[D-42] {verb}" in FORMS


# -- properties ---------------------------------------------------------------------------------

PREFIXES = st.sampled_from(["Re: ", "RE: ", "Fwd: ", "FW: ", "AW: ", "WG: ", "Re[2]: ", "SV: ", "TR : ", "Antw: "])
TAGS = st.sampled_from(["[D-42]", "[d7]", "[D 3]", "[D-0]", "[D-]", "[X-4]", "D-5", "[D-12345678901]", ""])
WORDS = st.sampled_from([*VERBS, "WON", "Next", "next step", "stages", "nxt", "wonder", "note", "Snooze"])
SEPARATORS = st.sampled_from([": ", ":", " : ", " ", "=", "：", "", "!", ":\t"])
ARGS = st.one_of(st.text(max_size=30), st.sampled_from([
    "proposal", "prop", "won", "lost", "n", "bob", "al", "robert@team.example", "$12,000", "12k", "2 weeks",
    "1 month", "until fri", "off", "send the quote by friday", "call by phone", "by tomorrow", "due 2020-01-01",
]))
NOISE = st.sampled_from(["", "> [D-42] won", "-- ", "On Mon, Carla wrote:", "-----Original Message-----",
                         "From: Carla <c@acme.example>", "Thanks!", "   ", "\t"])


@st.composite
def grammar_line(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(NOISE)
    return draw(TAGS) + draw(st.sampled_from(["", " ", "  "])) + draw(WORDS) + draw(SEPARATORS) + draw(ARGS)


BODIES = st.one_of(st.text(max_size=300), st.lists(st.one_of(grammar_line(), st.text(max_size=20)), max_size=12)
                   .map(lambda lines: "\n".join(lines)))
SUBJECTS = st.one_of(st.text(max_size=80), st.builds(lambda ps, line: "".join(ps) + line,
                                                     st.lists(PREFIXES, max_size=3), grammar_line()))
PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(SUBJECTS, BODIES, st.one_of(st.none(), st.integers(1, 10**9)))
def test_nothing_raises_and_nothing_is_invented(subject, body, default_deal):
    parsed = parse(subject, body, default_deal)
    lines = body.splitlines()
    for c in parsed.commands:
        if c.where == "subject":
            assert c.text == strip_prefixes(subject) and c.text in subject
        else:
            assert c.text in lines[int(c.where.removeprefix("line ")) - 1]
        assert c.verb in VERBS and c.verb in c.text.lower()
        assert c.arg == "" or c.arg.split()[0] in c.text
        if c.text.startswith("["):
            assert str(c.deal) in c.text
        else:
            assert c.deal == (parsed.subject_deal if parsed.subject_deal is not None else default_deal)
    changes, errors = plan(parsed, STAGES, REPS, TODAY)
    assert not (changes and errors)
    written = {(c.where, c.text) for c in parsed.commands}
    assert all((ch.where, ch.text) in written for ch in changes)
    for change in changes:
        assert describe(change).startswith(f"D-{change.deal}: ")


@PROPERTY
@given(st.one_of(st.none(), st.just(""), st.text()), st.one_of(st.none(), st.just(""), st.text()))
def test_any_text_or_none_never_raises(subject, body):
    parsed = parse(subject, body)
    plan(parsed, STAGES, REPS, TODAY)
    strip_prefixes(subject)
    has_command(subject)
    subject_tag(subject)


@PROPERTY
@given(st.text().filter(lambda s: "[" not in s),
       BODIES.filter(lambda b: ":" not in b and "：" not in b and "won" not in b.lower()))
def test_without_a_colon_or_won_in_the_body_and_a_tag_in_the_subject_there_are_no_commands(subject, body):
    assert parse(subject, body).commands == ()


@PROPERTY
@given(st.lists(PREFIXES, min_size=1, max_size=5), SUBJECTS, BODIES)
def test_re_and_fwd_prefixes_never_change_what_a_subject_says(prefixes, subject, body):
    assert parse("".join(prefixes) + subject, body) == parse(subject, body)
    assert has_command("".join(prefixes) + subject) == has_command(subject)
