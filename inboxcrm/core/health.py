"""Whether inboxcrm is healthy: the one rule ``status --check`` and the daemon's ``/health`` share.

Pure: the mailboxes' state, the outbox's counts and the thresholds are arguments, and the answer
is one line per problem, none when all is well. The database being unreachable or at another
schema revision is found by the caller (it has no rows to give then) and passed in as ``database``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# Outbox states that need the admin: "failed" gave up, "unknown" may or may not have been sent.
OUTBOX_PROBLEMS = ("failed", "unknown")


@dataclass(frozen=True)
class MailboxHealth:
    name: str
    synced: bool  # has an IMAP connection (a mailbox fed by import only is never stale)
    last_success_at: datetime | None
    failures: int  # consecutive failed passes
    failing_since: datetime | None


@dataclass(frozen=True)
class Thresholds:
    failing_minutes: int = 15
    stale_minutes: int = 60


def _ago(moment: datetime, now: datetime) -> str:
    return f"{max(0, int((now - moment).total_seconds() // 60))} min ago"


def problems(mailboxes: Iterable[MailboxHealth], outbox: Mapping[str, int], now: datetime,
             thresholds: Thresholds = Thresholds(), database: str | None = None) -> tuple[str, ...]:
    """One line per problem, in a stable order; empty means healthy. ``outbox``: status -> rows."""
    if database is not None:
        return (f"database: {database}",)
    found = []
    failing, stale = timedelta(minutes=thresholds.failing_minutes), timedelta(minutes=thresholds.stale_minutes)
    for box in sorted(mailboxes, key=lambda b: b.name):
        if not box.synced:
            continue
        if box.failures and box.failing_since is not None and now - box.failing_since > failing:
            found.append(f"mailbox {box.name}: failing since {box.failing_since:%Y-%m-%d %H:%M} UTC "
                         f"({_ago(box.failing_since, now)}, {box.failures} failed passes in a row)")
        elif box.last_success_at is not None and now - box.last_success_at > stale:
            found.append(f"mailbox {box.name}: last success {box.last_success_at:%Y-%m-%d %H:%M} UTC "
                         f"({_ago(box.last_success_at, now)}); is the daemon running?")
    for state in OUTBOX_PROBLEMS:
        if outbox.get(state):
            found.append(f"outbox: {outbox[state]} {state} (see \"inboxcrm outbox list\")")
    return tuple(found)
