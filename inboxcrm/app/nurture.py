"""Deals in Nurture: ``deals archive`` moves the cold ones there, ``deals list --nurture`` lists
them, and the owner is told when one comes back.

The rules (what is cold, what brings a deal back, the quarter's reminder) are ``core.nurture``'s.
A deal comes back in the intake (``core.sales`` plans it, ``store.records`` writes it with the
audit entry ``nurture-revive``) or by hand (``deal revive``, same entry). The intake sends no mail,
so the owner is told by the notify pass, like every nudge: ``enqueue_revival_notices`` reads the
recent ``nurture-revive`` entries and queues one nudge per return under
``nudge:revived:<deal>:<epoch of the return>``, in the pass's transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from inboxcrm.app.deals import get_deal
from inboxcrm.app.team import audit
from inboxcrm.config import Config
from inboxcrm.core import nurture
from inboxcrm.core.views import plural
from inboxcrm.errors import Invalid
from inboxcrm.mail import render
from inboxcrm.store import nurture_queries
from inboxcrm.store.db import Session
from inboxcrm.store.digest_queries import open_deal_rows
from inboxcrm.store.outbox_queries import existing_keys

NOTICE_LOOKBACK = timedelta(hours=24)  # a return older than this is old news: the digest shows the deal open again
NOTICE_TEMPLATE = "nudge_revived"


@dataclass(frozen=True)
class ColdDeal:
    ref: str
    title: str
    stage: str
    owner: str | None
    last_activity_at: datetime
    quiet_days: int


@dataclass(frozen=True)
class Archived:
    """What ``deals archive`` did (or, ``dry_run``, would do)."""

    deals: tuple[ColdDeal, ...]
    days: int
    dry_run: bool
    at: datetime

    @property
    def summary(self) -> str:
        moved = plural(len(self.deals), "deal")
        if self.dry_run:
            return (f"{moved} with no activity for {self.days} days would move to Nurture (dry run: nothing "
                    f"changed; run it again without --dry-run to move them)")
        return (f"{moved} with no activity for {self.days} days moved to Nurture; "
                f"inboxcrm deals list --nurture lists them")


def cold_deals(session: Session, now: datetime, days: int) -> list[nurture.Candidate]:
    """The open deals ``deals archive --inactive days`` would move at ``now``."""
    return nurture.cold(nurture_queries.quiet_open_deals(session, nurture.inactive_before(now, days)), now, days)


def archive(session: Session, now: datetime, actor: str, days: int, dry_run: bool = False) -> Archived:
    """Moves the open deals with no activity for ``days`` days (and no snooze ahead) to Nurture:
    closed at ``now`` in their stage, one audit entry each. ``dry_run`` lists them, changes nothing."""
    found = cold_deals(session, now, days)
    rows = tuple(ColdDeal(f"D-{d.id}", d.title, d.stage, d.owner, d.last_activity_at,
                          (now - d.last_activity_at).days) for d in found)
    if not dry_run and found:
        nurture_queries.move_to_nurture(session, [d.id for d in found], now)
        for d in found:
            audit(session, now, actor, "nurture", "deal", d.id, f"no activity for {days} days",
                  ref=f"D-{d.id}", stage=d.stage, last_activity_at=d.last_activity_at.isoformat())
    return Archived(rows, days, dry_run, now)


@dataclass(frozen=True)
class NurturedRow:
    ref: str
    title: str
    contact: str
    address: str | None
    company: str | None
    stage: str  # the stage it left the pipeline from, and comes back to
    owner: str | None
    value: Decimal | None
    nurtured_at: datetime
    last_activity_at: datetime


def list_nurtured(session: Session) -> list[NurturedRow]:
    """Every deal in Nurture, the most recently moved first."""
    return [NurturedRow(f"D-{pk}", *rest) for pk, *rest in nurture_queries.nurtured_rows(session)]


@dataclass(frozen=True)
class Revived:
    ref: str
    stage: str
    nurtured_at: datetime


def revive(session: Session, now: datetime, actor: str, ref: str) -> Revived:
    """Brings a deal back from Nurture by hand, into its stage, open again; its owner is told
    as when mail brings it back (the same audit entry)."""
    deal = get_deal(session, ref)
    if deal.nurtured_at is None:
        raise Invalid(f"{deal.ref} is not in Nurture; the deals in Nurture: inboxcrm deals list --nurture")
    since = deal.nurtured_at
    deal.nurtured_at = deal.closed_at = None
    deal.last_activity_at = max(deal.last_activity_at, now)
    audit(session, now, actor, nurture_queries.REVIVE_ACTION, "deal", deal.id, "by hand", ref=deal.ref,
          stage=deal.stage.name, nurtured_at=since.isoformat(), direction=None, by_rep=None)
    return Revived(deal.ref, deal.stage.name, since)


# -- telling the owner ---------------------------------------------------------------------------

def revival_key(deal_id: int, at: datetime) -> str:
    return f"nudge:revived:{deal_id}:{int(at.timestamp())}"


def enqueue_revival_notices(session: Session, config: Config, now: datetime, env: render.Environment) -> int:
    """One nudge to the owner of each deal back from Nurture in the last day, in the caller's
    transaction; returns how many were queued. Runs in the notify pass every 30 seconds, so
    without a recent return it is one indexed read of the audit log.

    Held to the nudge caps like every nudge: a return is driven by mail, and mail "from" a hundred
    cold contacts must not bring a hundred emails at once. What the caps hold back stays undecided
    and goes out in a later pass with room, within the day; after that the deal is simply open
    again in the digest. With nudges off ([digest] nudges_per_hour or nudges_per_day 0) none is
    sent: the deal shows in the digest, open again, awaiting a reply when the prospect wrote."""
    if config.digest.nudges_per_hour <= 0 or config.digest.nudges_per_day <= 0:
        return 0
    returns = {revival_key(pk, at): (pk, at, detail or {})
               for pk, at, detail in nurture_queries.revivals_since(session, now - NOTICE_LOOKBACK)}
    undecided = set(returns) - existing_keys(session, list(returns)) if returns else set()
    if not undecided:
        return 0
    from inboxcrm.app.notify import _queue_nudge, _room, schedules  # notify calls this: imported when used

    reps = schedules(session, config)
    rows = open_deal_rows(session, sorted({returns[key][0] for key in undecided}))
    room = _room(session, config, now, {d.owner_rep_id for d in rows.values() if d.owner_rep_id is not None})
    queued = 0
    for key in sorted(undecided, key=lambda k: (returns[k][1], k)):
        pk, at, detail = returns[key]
        deal = rows.get(pk)  # closed again meanwhile: nothing to say
        schedule = reps.get(deal.owner_rep_id) if deal is not None else None
        if schedule is None or schedule.address is None or room.get(schedule.rep_id, 0) <= 0:
            continue  # no one to tell, or the caps hold it back for a later pass
        who = deal.contact or deal.address or "the contact"
        subject = nurture.revival_subject(f"D-{pk}", who, detail.get("by_rep"))
        nurtured_at = datetime.fromisoformat(detail["nurtured_at"]) if detail.get("nurtured_at") else None
        sent = _queue_nudge(session, config, env, now, key, NOTICE_TEMPLATE, subject, deal, schedule,
                            revived_at=at, nurtured_at=nurtured_at, by_rep=detail.get("by_rep"),
                            by_hand=detail.get("direction") is None)
        queued += sent
        room[schedule.rep_id] -= sent
    return queued


def cold_count(session: Session, now: datetime, days: int) -> int:
    """How many open deals ``deals archive --inactive days`` would move now (the review's reminder)."""
    return len(cold_deals(session, now, days))
