"""Expected close dates as reps set them, on SQLite and PostgreSQL: ``inboxcrm deal close`` and
``[D-42] close: dec 15`` by email (through the real import and command path), what each refuses
and says instead, the history and slip count the forecast is built from, the audit log, where
``deals list`` and ``deal show`` show the date, and the digest's quick action."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import select

from inboxcrm.app import deals
from inboxcrm.core.forecast import read_close
from inboxcrm.core.inputs import weekday_abbreviation
from inboxcrm.core.views import render_deal
from inboxcrm.errors import Invalid
from inboxcrm.store.db import transaction
from inboxcrm.store.models import AuditEntry, CloseDateChange, Deal

from .conftest import refused
from .test_commands_e2e import answers, command_audit, command_mail, deal, enable_commands, import_mail, \
    personal_address
from .test_digest import NOW as DIGEST_NOW
from .test_digest import Team


def today() -> date:
    return datetime.now(UTC).date()  # the test team's time zone is UTC


def next_dec_15() -> date:
    this_year = date(today().year, 12, 15)
    return this_year if this_year >= today() else date(today().year + 1, 12, 15)


def history(factory, deal_id: int = 1) -> list[tuple[date | None, bool]]:
    with factory() as s:
        return [(h.close_date, h.slipped) for h in s.scalars(
            select(CloseDateChange).where(CloseDateChange.deal_id == deal_id).order_by(CloseDateChange.id))]


def close_audit(factory) -> list[tuple[str | None, str | None]]:
    with factory() as s:
        return [(a.detail["old"], a.detail["new"]) for a in s.scalars(
            select(AuditEntry).where(AuditEntry.action == "close-date").order_by(AuditEntry.id))]


# -- the command line -----------------------------------------------------------------------------

def test_deal_close_sets_shows_moves_and_clears_the_date(team, factory):
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice", "--value", "9000")
    in_3_weeks = today() + timedelta(weeks=3)
    assert team("deal", "close", "D-1", "in", "3", "weeks").stdout == f"D-1: close-date (none) -> {in_3_weeks}\n"

    listing = team("deals", "list").stdout.splitlines()
    assert "CLOSE" in listing[0].split() and in_3_weeks.isoformat() in listing[1].split()
    assert json.loads(team("deals", "list", "--json").stdout)[0]["expected_close"] == in_3_weeks.isoformat()
    assert f"  Close date:    {in_3_weeks}\n" in team("deal", "show", "D-1").stdout
    assert deal(team)["expected_close"] == in_3_weeks.isoformat() and deal(team)["close_slips"] == 0

    assert team("deal", "close", "1", "dec", "15").stdout == f"D-1: close-date {in_3_weeks} -> {next_dec_15()}\n"
    assert team("deal", "close", "D-1", "none").stdout == f"D-1: close-date {next_dec_15()} -> (none)\n"
    assert deal(team)["expected_close"] is None
    assert 'Close date:    none: set one with "inboxcrm deal close D-1 DATE"' in team("deal", "show", "D-1").stdout
    # every date it had, for rebuilding past forecasts; none of these moves was a slip
    assert history(factory) == [(in_3_weeks, False), (next_dec_15(), False), (None, False)]
    assert close_audit(factory) == [(None, in_3_weeks.isoformat()), (in_3_weeks.isoformat(), next_dec_15().isoformat()),
                                    (next_dec_15().isoformat(), None)]


def test_a_past_or_unreadable_close_date_is_refused_with_the_valid_forms(team, factory):
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    err = refused(team, "deal", "close", "D-1", "2020-01-01")
    assert "error: the close date 2020-01-01 has passed; expected today or later: YYYY-MM-DD, today" in err
    assert "dec 15" in err and "none to clear it" in err
    err = refused(team, "deal", "close", "D-1", "soonish")
    assert err.startswith('error: invalid close date "soonish"; expected YYYY-MM-DD, today, tomorrow')
    assert "no deal D-7" in refused(team, "deal", "close", "D-7", "friday")
    assert history(factory) == [] and deal(team)["expected_close"] is None


def test_a_closed_deal_refuses_a_close_date(team, factory):
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    team("deal", "won", "D-1")
    for when in ("friday", "none"):
        err = refused(team, "deal", "close", "D-1", when)
        assert err == "error: D-1 is closed (Won); reopen it first: inboxcrm deal stage D-1 STAGE\n"
    assert history(factory) == []


# -- slips ---------------------------------------------------------------------------------------------

def test_a_passed_date_moved_later_is_a_slip_and_clearing_it_first_does_not_hide_one(factory):
    def close(on: date, when: date | None) -> str:
        with transaction(factory) as s:
            return deals.set_close(s, datetime.combine(on, time(10), tzinfo=UTC), "alice", "D-1", when,
                                   today=on).new

    with transaction(factory) as s:
        deals.add_lead(s, datetime(2026, 10, 30, tzinfo=UTC), "alice", "nora@fieldworks.example", value="100")
    close(date(2026, 11, 1), date(2026, 11, 10))
    close(date(2026, 11, 5), date(2026, 11, 20))  # moved before the date came: no slip
    close(date(2026, 11, 20), date(2026, 11, 27))  # moved on the day itself: it has not passed yet
    close(date(2026, 11, 28), date(2026, 12, 5))  # Nov 27 had passed: slip 1
    close(date(2026, 12, 10), None)  # cleared after Dec 5 passed: not a slip by itself...
    close(date(2026, 12, 12), date(2026, 12, 20))  # ...but the next date is one: slip 2
    close(date(2026, 12, 13), date(2026, 12, 18))  # earlier, not later: no slip
    with pytest.raises(Invalid, match="the close date 2026-12-01 of D-1 has passed; expected today"):
        close(date(2026, 12, 13), date(2026, 12, 1))

    assert history(factory) == [(date(2026, 11, 10), False), (date(2026, 11, 20), False),
                                (date(2026, 11, 27), False), (date(2026, 12, 5), True), (None, False),
                                (date(2026, 12, 20), True), (date(2026, 12, 18), False)]
    with factory() as s:
        row = s.get(Deal, 1)
        assert (row.expected_close, row.close_slips) == (date(2026, 12, 18), 2)
        shown = deals.show_deal(s, "D-1")
    text = render_deal(shown, datetime(2026, 12, 19, 9, tzinfo=UTC))
    assert "  Close date:    2026-12-18 (passed), slipped 2 times\n" in text


# -- by email --------------------------------------------------------------------------------------------

def test_close_by_email_sets_clears_and_refuses_like_the_cli(team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path)
    team("lead", "add", "--email", "nora@fieldworks.example", "--owner", "alice")
    to = personal_address(team, "alice")

    assert import_mail(team, tmp_path, command_mail("close-1", "[D-1] close: dec 15", to=to)) == \
        "imported 1 message into crm: 1 command\n"
    dec_15 = next_dec_15()
    assert deal(team)["expected_close"] == dec_15.isoformat()
    [answer] = answers(factory)
    assert (answer.subject, answer.deal_id) == ("inboxcrm: done (D-1)", 1)
    assert f"  D-1: expected to close {weekday_abbreviation(dec_15)} {dec_15}\n" in answer.text

    # an untagged line in a reply to the answer is about its deal, as with every verb
    reply = command_mail("close-2", f"Re: {answer.subject}", "close: end of next month", to=to,
                         headers=f"In-Reply-To: {answer.message_id}")
    import_mail(team, tmp_path, reply)
    end_of_next = read_close("end of next month", today())
    assert deal(team)["expected_close"] == end_of_next.isoformat()
    assert f"D-1: expected to close {weekday_abbreviation(end_of_next)} {end_of_next} (was {dec_15})" \
        in answers(factory)[-1].text
    import_mail(team, tmp_path, command_mail("close-3", "[D-1] close: none", to=to))
    assert deal(team)["expected_close"] is None
    assert f"D-1: close date cleared (was {end_of_next})" in answers(factory)[-1].text
    assert [(d, detail["field"], detail["old"], detail["new"]) for d, _, detail in command_audit(factory)] == [
        (1, "close-date", None, dec_15.isoformat()),
        (1, "close-date", dec_15.isoformat(), end_of_next.isoformat()),
        (1, "close-date", end_of_next.isoformat(), None)]

    # A past date changes nothing, not even the good line with it, and the answer teaches the forms.
    import_mail(team, tmp_path, command_mail("close-4", "[D-1] close: 2020-01-01", "[D-1] note: signed soon",
                                             to=to))
    last = answers(factory)[-1]
    assert last.subject == "inboxcrm: nothing changed (1 problem)"
    assert "  subject: [D-1] close: 2020-01-01\n    the close date 2020-01-01 has passed; expected today or later" \
        in last.text
    assert "[D-42] close: dec 15" in last.text  # the verb's line in the list of commands
    assert deal(team)["notes"] == [] and history(factory)[-1] == (None, False)

    # A closed deal: the deals function refuses, and the email is answered with why.
    team("deal", "won", "D-1")
    import_mail(team, tmp_path, command_mail("close-5", "[D-1] close: friday", to=to))
    last = answers(factory)[-1]
    assert last.subject == "inboxcrm: nothing changed (1 problem)"
    assert "D-1 is closed (Won); reopen it first" in last.text
    assert len(history(factory)) == 3


# -- the digest -------------------------------------------------------------------------------------------

def test_a_stalled_deal_in_the_digest_offers_a_close_date_quick_action(factory):
    t = Team(factory)
    ref = t.lead("alice", created=DIGEST_NOW - timedelta(days=40), step="think about it")
    [item] = t.digest("alice").stalled.items
    assert item.ref == ref
    action = next(a for a in item.actions if a.label == "set close date")
    assert unquote(urlsplit(action.href).query.partition("=")[2]) == f"[{ref}] close: "
