"""Cold deals to Nurture and back: which open deals have gone cold, and when mail brings one back.

A deal nobody has written about for months clutters the pipeline, the digest and the forecast,
but deleting it loses the history, and calling it lost is not true either. So Nurture keeps the
deal as it is (its stage, values, history) and closes it: ``nurtured_at`` and ``closed_at`` both
become the time of the move. Every query of open deals (``closed_at IS NULL``) leaves it out
without knowing about Nurture; the queries of deals closed in a period leave it out by
``nurtured_at``, so it counts as neither won nor lost. Mail on the deal after the move (from the
contact, or a rep writing to them) clears both: the deal is back in its stage, open again.

Pure: the store hands over plain rows, this module decides.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from inboxcrm.core.views import plural
from inboxcrm.errors import Invalid

QUARTER_MONTHS = frozenset({1, 4, 7, 10})
ARCHIVE_COMMAND = "inboxcrm deals archive --dry-run"


@dataclass(frozen=True)
class Candidate:
    """An open deal as ``deals archive`` looks at it."""

    id: int
    title: str
    stage: str
    owner: str | None
    last_activity_at: datetime
    snoozed_until: date | None


def checked_days(days: int) -> int:
    """``--inactive DAYS``: a day or more (0 would sweep every deal written to before today)."""
    if days < 1:
        raise Invalid(f"--inactive {days} is not a number of days; expected a whole number of days, 1 or more, "
                      f"such as 90 (deals with no activity for 90 days)")
    return days


def inactive_before(now: datetime, days: int) -> datetime:
    """A deal whose last activity is at or before this has had none for ``days`` days."""
    return now - timedelta(days=checked_days(days))


def is_cold(deal: Candidate, now: datetime, days: int) -> bool:
    """No activity (email either way, a rep's update) for ``days`` days, and not snoozed into the
    future: a snooze is a rep's plan to come back to it, which is not the same as forgetting it.
    The caller hands over open deals only; won and lost deals never go to Nurture."""
    snoozed = deal.snoozed_until is not None and deal.snoozed_until > now.date()
    return deal.last_activity_at <= inactive_before(now, days) and not snoozed


def cold(deals: list[Candidate], now: datetime, days: int) -> list[Candidate]:
    """The deals to move, oldest activity first: the coldest lead the listing."""
    return sorted((d for d in deals if is_cold(d, now, days)), key=lambda d: (d.last_activity_at, d.id))


def revives(nurtured_at: datetime | None, when: datetime) -> bool:
    """Mail on a deal in Nurture brings it back when it was written after the move. Older mail
    read later (a mailbox's backfill, an import of an archive) was there before the deal went
    cold in the records' eyes, and moving it back for that would undo every archive at the next
    import."""
    return nurtured_at is not None and when >= nurtured_at


def first_review_of_quarter(day: date) -> bool:
    """The weekly review of ``day`` (the manager's local date) is the quarter's first: in January,
    April, July or October, within its first seven days, so exactly one review day qualifies."""
    return day.month in QUARTER_MONTHS and day.day <= 7


def quarterly_reminder(day: date, cold_deals: int, days: int) -> str:
    """The one line the quarter's first review carries when open deals have gone cold; empty
    otherwise (nothing to do is not worth a line)."""
    if not first_review_of_quarter(day) or cold_deals <= 0:
        return ""
    have = "has" if cold_deals == 1 else "have"
    return (f"{plural(cold_deals, 'open deal')} {have} had no activity for {days} days: "
            f"{ARCHIVE_COMMAND} lists them")


def revival_subject(ref: str, who: str, by_rep: str | None) -> str:
    """The owner's notice: who brought the deal back."""
    if by_rep:
        return f"{ref} is back from Nurture: {by_rep} wrote to {who}"
    return f"{ref} is back from Nurture: {who} wrote"


def deals_for_contact(open_deals: list[int], nurtured: list[int]) -> list[int]:
    """Where a contact's mail goes when no thread names a deal: their open deals; with none, the
    deal of theirs in Nurture active most recently (it comes back) rather than a new deal that
    would start over without its history. Both lists come most recently active first."""
    return open_deals if open_deals else nurtured[:1]
