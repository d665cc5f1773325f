"""The verb table (``core.verbs.TABLE``) is whole: each verb's entry holds its grammar, its help,
its example and the deals function that applies it, and everything that lists verbs (the
parser, the help, the refusal hints, the answer lines, the digest's quick actions) reads it."""
from __future__ import annotations

import inspect
from datetime import date, datetime, timezone

import pytest

from inboxcrm.app import deals
from inboxcrm.core import digest, verbs
from inboxcrm.core.verbs import FORMS, TABLE, VERB, VERBS, StageChoice, parse, plan

TODAY = date(2026, 11, 23)
STAGES = (StageChoice("New", "open"), StageChoice("Proposal", "open"), StageChoice("Won", "won"),
          StageChoice("Lost", "lost"))
REPS = {"bob": ["bob@team.example"]}


@pytest.mark.parametrize("verb", TABLE, ids=lambda v: v.name)
def test_every_verb_is_taught_by_its_entry(verb):
    assert verb.name in VERBS
    assert f"[D-42] {verb.listed or verb.example}" in FORMS and verb.help in FORMS
    assert verb.example.split(":")[0] == verb.name


@pytest.mark.parametrize("verb", TABLE, ids=lambda v: v.name)
def test_the_example_of_every_verb_parses_into_the_change_its_entry_names(verb):
    changes, errors = plan(parse(f"[D-42] {verb.example}", ""), STAGES, REPS, TODAY)
    assert errors == ()
    assert [c.verb for c in changes] == [verb.change]
    assert verbs.describe(changes[0]).startswith("D-42: ")


@pytest.mark.parametrize("verb", [v for v in TABLE if not v.makes], ids=lambda v: v.name)
def test_every_kind_of_change_is_applied_by_a_deals_function_that_takes_its_arguments(verb):
    changes, _ = plan(parse(f"[D-42] {verb.example}", ""), STAGES, REPS, TODAY)
    function = getattr(deals, verb.applies)
    arguments = verb.arguments(changes[0], TODAY)
    inspect.signature(function).bind(None, datetime(2026, 11, 23, tzinfo=timezone.utc), "alice", "D-42", **arguments)
    assert verb.describe is not None


def test_a_verb_that_makes_another_verbs_change_names_one_that_exists():
    for verb in TABLE:
        assert VERB[verb.change].applies and VERB[verb.change].describe


def test_a_verb_that_needs_nothing_may_stand_alone_and_the_others_say_what_they_need():
    for verb in TABLE:
        _, errors = plan(parse(f"[D-42] {verb.name}", ""), STAGES, REPS, TODAY)
        if verb.needs is None:
            assert errors == ()
        else:
            assert [e.problem for e in errors] == [f'"{verb.name}" needs {verb.needs}: [D-42] {verb.example}']


def test_the_refusal_hint_lists_the_verbs_of_the_table():
    _, errors = plan(parse("[D-7] promote: x", ""), STAGES, REPS, TODAY)
    assert f"commands are {', '.join(VERBS)}, as in [D-7] {VERB['next'].example}" in errors[0].problem


def test_the_digests_quick_actions_are_the_tables():
    for name, action in digest.ACTIONS.items():
        assert action("D-5") == verbs.quick_action(name, "D-5")
