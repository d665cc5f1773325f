"""What a person types for a deal, read into values: references, amounts, due dates, snoozes.

Pure (stdlib only), because the CLI and commands by email read the same words and must agree
on what they mean: one grammar and one set of rules for both (a due date today or later,
a snooze within a year); each refusal says what would have been valid.
"""
from __future__ import annotations

import re
from calendar import monthrange
from datetime import date, timedelta
from decimal import Decimal
from typing import Sequence

from inboxcrm.core.views import clip
from inboxcrm.errors import Invalid

_REF = re.compile(r"(?:d-?)?(\d{1,9})", re.I)
REF_HINT = 'deal references look like D-42 (see "inboxcrm deals list")'
_VALUE = re.compile(r"(\d{1,12}|\d{1,3}(,\d{3}){1,3})(\.\d{1,2})?")  # "12,000.50" yes, "12,5" no
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DUE_FORMS = "YYYY-MM-DD, today, tomorrow, in N days, in N weeks, in N months, or a weekday such as friday or fri"
SNOOZE_FORMS = ("3 days, 2 weeks or 1 month (also with in: in 2 weeks), until DATE, a weekday such as friday, "
                "YYYY-MM-DD, or off to wake the deal")
SNOOZE_MAX_DAYS = 365  # a deal nobody wants to hear of for longer is lost, not snoozed (deals.set_snooze checks it too)
_AHEAD = re.compile(r"in (\d{1,4}) (day|week|month)s?")
_SPAN = re.compile(r"(?:in )?(\d{1,4}) (day|week|month)s?")


def parse_ref(ref: str) -> int:
    found = _REF.fullmatch((ref or "").strip())
    if found is None:
        raise Invalid(f'invalid deal reference "{ref}"; {REF_HINT}')
    return int(found.group(1))


CENTS = Decimal("0.01")


def parse_value(text: str) -> Decimal:
    cleaned = (text or "").strip()
    if not _VALUE.fullmatch(cleaned):
        raise Invalid(f'invalid value "{text}"; expected a number of at least 0 such as 12000 or 12000.50')
    return Decimal(cleaned.replace(",", ""))


def weekday_abbreviation(day: date) -> str:
    """"Fri", whatever the locale (mail must not change with the machine's language)."""
    return _WEEKDAYS[day.weekday()][:3].title()


def add_months(day: date, months: int) -> date:
    """Calendar months: 31 January + 1 month is the last day of February, not 3 March."""
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, monthrange(year, month + 1)[1]))


def _ahead(today: date, count: int, unit: str) -> date:
    return add_months(today, count) if unit == "month" else today + timedelta(**{unit + "s": count})


def _words(text: str) -> str:
    """What a person typed, as the grammar reads it: lower case, one space, no closing punctuation."""
    return " ".join((text or "").lower().split()).rstrip(".!,;")


def read_date(text: str, today: date) -> date:
    """Any date in DUE_FORMS, past or not. A weekday means its next occurrence after today:
    "friday" said on a Friday is a week away."""
    word = _words(text)
    try:
        relative = _AHEAD.fullmatch(word)
        if relative:
            return _ahead(today, int(relative.group(1)), relative.group(2))
        if word in ("today", "tomorrow"):
            return today + timedelta(days=word == "tomorrow")
        days = [i for i, name in enumerate(_WEEKDAYS) if len(word) >= 3 and name.startswith(word)]
        if days:
            return today + timedelta(days=(days[0] - today.weekday() - 1) % 7 + 1)
        return date.fromisoformat(word)
    except (ValueError, OverflowError):
        raise Invalid(f'invalid due date "{clip(text or "", 40)}"; expected {DUE_FORMS}') from None


def refuse_past(due: date, today: date) -> date:
    if due < today:
        raise Invalid(f"the due date {due.isoformat()} has passed; expected today or later: {DUE_FORMS}")
    return due


def parse_due(text: str, today: date) -> date:
    """A due date as the CLI's --due and a command email's "next: ... by WHEN" take it: one of
    DUE_FORMS, today or later (``today`` is the person's own date)."""
    return refuse_past(read_date(text, today), today)


def split_due(arg: str, today: date) -> tuple[str, date | None]:
    """("send the quote", friday) from "send the quote by friday": only a trailing "by" or "due"
    and a date is one, so "call by phone" stays text. The date is not checked against today:
    the caller first says what else is wrong with the line."""
    for m in reversed(list(re.finditer(r"(?:^|\s)(?:by|due)(?:\s*:)?\s+", arg, re.I))):
        try:
            due = read_date(arg[m.end():], today)
        except Invalid:
            continue
        return arg[:m.start()].rstrip(" ,;:-–"), due
    return arg, None


def snooze_until(arg: str, today: date) -> date | None:
    """None for "off"; else a date after today and at most SNOOZE_MAX_DAYS ahead. Besides the
    due dates, a bare span ("2 weeks") and "until DATE" say how long."""
    word = _words(arg)
    if word == "off":
        return None
    span = _SPAN.fullmatch(word)
    try:
        until = _ahead(today, int(span.group(1)), span.group(2)) if span else read_date(word.removeprefix("until "),
                                                                                       today)
    except (Invalid, OverflowError, ValueError):
        raise Invalid(f'invalid snooze "{clip(arg, 40)}"; expected {SNOOZE_FORMS}') from None
    latest = today + timedelta(days=SNOOZE_MAX_DAYS)
    if not today < until <= latest:
        raise Invalid(f"cannot snooze until {until.isoformat()}: expected a date after today ({today.isoformat()}) "
                      f"and at most {SNOOZE_MAX_DAYS} days ahead ({latest.isoformat()}), such as 2 weeks or friday")
    return until


def matching_names(wanted: str, names: Sequence[str]) -> list[str]:
    """Exact name in any case, else every name it starts ("prop" -> Proposal): one answer means
    found, several mean ambiguous, none unknown. Stages and reps are named this way everywhere."""
    key = " ".join((wanted or "").split()).casefold()
    exact = [n for n in names if " ".join(n.split()).casefold() == key]
    return exact or [n for n in names if key and " ".join(n.split()).casefold().startswith(key)]
