"""What a person types for a deal, read into values: references, amounts, due dates.

Pure (stdlib only), because the CLI and commands by email read the same words and must agree
on what they mean; each refusal says what would have been valid.
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Sequence

from inboxcrm.errors import Invalid

_REF = re.compile(r"(?:d-?)?(\d{1,9})", re.I)
REF_HINT = 'deal references look like D-42 (see "inboxcrm deals list")'
_VALUE = re.compile(r"(\d{1,12}|\d{1,3}(,\d{3}){1,3})(\.\d{1,2})?")  # "12,000.50" yes, "12,5" no
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DUE_FORMS = "YYYY-MM-DD, today, tomorrow, in N days, in N weeks, or a weekday such as friday or fri"


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


def parse_due(text: str, today: date) -> date:
    """A weekday means its next occurrence after today: "friday" said on a Friday is a week away."""
    word = " ".join((text or "").lower().split())
    relative = re.fullmatch(r"in (\d{1,4}) (day|week)s?", word)
    if relative:
        return today + timedelta(**{relative.group(2) + "s": int(relative.group(1))})
    if word in ("today", "tomorrow"):
        return today + timedelta(days=word == "tomorrow")
    days = [i for i, name in enumerate(_WEEKDAYS) if len(word) >= 3 and name.startswith(word)]
    if days:
        return today + timedelta(days=(days[0] - today.weekday() - 1) % 7 + 1)
    try:
        return date.fromisoformat(word)
    except ValueError:
        raise Invalid(f'invalid due date "{text}"; expected {DUE_FORMS}') from None


def matching_names(wanted: str, names: Sequence[str]) -> list[str]:
    """Exact name in any case, else every name it starts ("prop" -> Proposal): one answer means
    found, several mean ambiguous, none unknown. Stages and reps are named this way everywhere."""
    key = " ".join((wanted or "").split()).casefold()
    exact = [n for n in names if " ".join(n.split()).casefold() == key]
    return exact or [n for n in names if key and " ".join(n.split()).casefold().startswith(key)]
