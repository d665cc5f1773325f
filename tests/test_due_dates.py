"""One due-date grammar: the CLI's ``deal next --due WHEN`` and a command email's
``[D-42] next: ... by WHEN`` read the same words into the same date, and refuse the same words
(a date that has passed included) with the same message."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from inboxcrm.app import deals
from inboxcrm.core.inputs import DUE_FORMS
from inboxcrm.core.verbs import StageChoice, parse, plan
from inboxcrm.errors import Invalid

TODAY = date(2026, 11, 23)  # a Monday
STAGES = (StageChoice("New", "open"), StageChoice("Won", "won"), StageChoice("Lost", "lost"))

# (what a person types, the date it means, or None: refused)
TABLE = [
    ("today", TODAY),
    ("Tomorrow", date(2026, 11, 24)),
    ("friday", date(2026, 11, 27)),
    ("fri", date(2026, 11, 27)),
    ("monday", date(2026, 11, 30)),  # a weekday is its next occurrence after today
    ("in 3 days", date(2026, 11, 26)),
    ("in 1 day", date(2026, 11, 24)),
    ("in 2 weeks", date(2026, 12, 7)),
    ("in 1 month", date(2026, 12, 23)),
    ("in 3 months", date(2027, 2, 23)),
    ("2026-12-01", date(2026, 12, 1)),
    ("2026-11-23", TODAY),
    ("friday.", date(2026, 11, 27)),
    ("2026-11-22", None),  # passed
    ("2020-01-06", None),
    ("someday", None),
    ("in three days", None),
    ("2026-13-01", None),
    ("fr", None),
]


def by_cli(text: str) -> date | str:
    try:
        return deals.parse_due(text, TODAY)
    except Invalid as refused:
        return str(refused)


def by_email(text: str) -> date | str:
    """The due date of "[D-42] next: call by TEXT", or the refusal. A line whose trailing words are
    not a date keeps them as text, so that case is told apart by the missing due date."""
    changes, errors = plan(parse("[D-42] next: call by " + text, ""), STAGES, {}, TODAY)
    if errors:
        return errors[0].problem
    return changes[0].due if changes[0].due is not None else f"not a date: {changes[0].reason}"


@pytest.mark.parametrize("text, expected", TABLE)
def test_the_cli_and_email_read_a_due_date_alike(text, expected):
    cli, email = by_cli(text), by_email(text)
    if expected is not None:
        assert cli == email == expected
        return
    assert isinstance(cli, str) and isinstance(email, str)
    assert DUE_FORMS in cli
    passed = text[:1].isdigit() and text != "2026-13-01"
    if passed:  # a real date that has passed: both refuse it with the same words
        assert cli == email == f"the due date {text} has passed; expected today or later: {DUE_FORMS}"
    else:  # not a date at all: the CLI says so, and an email line keeps the words as its text
        assert cli == f'invalid due date "{text}"; expected {DUE_FORMS}'
        assert email == f"not a date: call by {text}"


def test_the_command_line_refuses_a_past_due_date_and_takes_months(team):
    team("lead", "add", "--email", "ann@northwind.example", "--owner", "alice")
    today = datetime.now(timezone.utc).date()
    past = (today - timedelta(days=3)).isoformat()
    result = team("deal", "next", "D-1", "call", "--due", past, code=2)
    assert f"the due date {past} has passed; expected today or later: {DUE_FORMS}" in result.stderr
    out = team("deal", "next", "D-1", "call", "--due", "in 1 month").stdout
    assert out.startswith("D-1: next-step (none) -> call (due ")
