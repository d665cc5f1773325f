"""The weekly pipeline review: who gets it, when, and queuing it once per manager and week.

Managers are the active reps marked ``--manager`` (their address, their time zone, their reply
token for the quick actions) and the addresses in ``[review] managers`` (the team's time zone; an
address that belongs to an active rep is that rep). Each gets the review on ``[review] day`` at
``[review] time`` of their own clock, decided like a digest (``notify.queue_digest``): the due
date comes from ``business_time.digest_due_date`` with the review day as the only day, and the
decision is an outbox row under ``review:<rep id or address>:<that week's Monday>``, written in
the transaction that built the mail. So the daemon's pass can run every 30 seconds, be restarted
or run twice, and a manager still gets one review a week; a review missed because no daemon ran
that whole day is not sent later (``inboxcrm review send`` sends it by hand).

The review is built as at its scheduled time (the week is the 7 days before it), so a pass that
runs a minute late or after a restart builds the same content; the figures are
``app.reports.headline_figures`` over the four weeks before it and the four before those.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from inboxcrm.app import nurture, outbox
from inboxcrm.app.context import rep_reply_address
from inboxcrm.app.notify import Queued
from inboxcrm.app.outbox import sender_address
from inboxcrm.app.reports import headline_figures, run_report
from inboxcrm.config import Config, parse_weekdays
from inboxcrm.core.addresses import normalize
from inboxcrm.core.business_time import at_wall, digest_due_date, parse_clock, rep_timezone
from inboxcrm.core.nurture import first_review_of_quarter, quarterly_reminder
from inboxcrm.core.review import (
    WEEK,
    Manager,
    Review,
    Section,
    build_review,
    decide_lists,
    metrics_period,
)
from inboxcrm.errors import Invalid, LeaseLost
from inboxcrm.logs import event
from inboxcrm.mail import render
from inboxcrm.store import review_queries
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.store.outbox_queries import existing_keys

log = logging.getLogger(__name__)

KIND = "review"
CHART_BREAKDOWNS = {"pipeline": "stage", "response": "rep"}  # report -> the --by its chart is drawn from
NO_MANAGER = ('nobody gets the weekly review: mark a rep as a manager with "inboxcrm rep edit NAME --manager", '
              'or list addresses under [review] managers = ["boss@example.com"] in the configuration')


@dataclass(frozen=True)
class Recipient:
    """One manager. ``ident`` names them in the outbox key: the rep id, or the address of a
    manager who is not a rep."""

    ident: str
    rep_id: int | None
    name: str
    address: str | None
    zone: ZoneInfo


def recipients(session: Session, config: Config) -> list[Recipient]:
    """Every manager, reps first; each once, however they are named."""
    team_zone = config.team.timezone
    found = [Recipient(str(pk), pk, name, address, rep_timezone(zone, team_zone))
             for pk, name, zone, address in review_queries.manager_reps(session)]
    reps = {r.rep_id for r in found}
    addresses = {r.address for r in found}
    by_address = review_queries.reps_by_address(session, config.review.managers)
    for address in config.review.managers:
        if address in addresses:
            continue
        addresses.add(address)
        if address in by_address:
            pk, name, zone = by_address[address]
            if pk not in reps:
                reps.add(pk)
                found.append(Recipient(str(pk), pk, name, address, rep_timezone(zone, team_zone)))
        else:
            found.append(Recipient(address, None, address, address, ZoneInfo(team_zone)))
    return found


def managers(session: Session, config: Config) -> list[Recipient]:
    """``recipients``, refusing an empty list with how to name a manager."""
    found = recipients(session, config)
    if not found:
        raise Invalid(NO_MANAGER)
    return found


def recipient_named(session: Session, config: Config, who: str) -> Recipient:
    """A manager by rep name (any case) or address."""
    found = managers(session, config)
    wanted = who.strip().lower()
    address = normalize(who)
    for r in found:
        if r.name.lower() == wanted or (address is not None and r.address == address):
            return r
    names = ", ".join(r.name if r.rep_id is None or r.address is None else f"{r.name} ({r.address})" for r in found)
    raise Invalid(f'"{who}" does not get the weekly review; managers are: {names} (a rep becomes one with '
                  f'"inboxcrm rep edit NAME --manager")')


# -- when -------------------------------------------------------------------------------------------

def due_day(config: Config, recipient: Recipient, now: datetime) -> date | None:
    """The manager's local date whose review is due at ``now``: today, when today is the review
    day and its time has come (the digest's rule with one day a week)."""
    return digest_due_date(now, recipient.zone, parse_weekdays(config.review.day), parse_clock(config.review.time))


def week_of(day: date) -> date:
    """The Monday of ``day``'s week: a review's identity, so one week cannot have two."""
    return day - timedelta(days=day.weekday())


KEY_ADDRESS_CHARS = 150  # the outbox key holds 200 characters; an address may have 320


def review_key(recipient: Recipient, day: date) -> str:
    """``review:<rep id or address>:<Monday>``; an address too long for the key is named by its
    SHA-256 instead, which keeps it one key per manager and week."""
    ident = recipient.ident
    if len(ident) > KEY_ADDRESS_CHARS:
        ident = "sha256-" + hashlib.sha256(ident.encode("utf-8")).hexdigest()
    return f"review:{ident}:{week_of(day).isoformat()}"


def review_at(config: Config, recipient: Recipient, day: date, now: datetime) -> datetime:
    """The clock the review for ``day`` is built with: that day's review time, or now when
    that is still to come (a review asked for early covers the week up to now)."""
    return min(at_wall(day, parse_clock(config.review.time), recipient.zone), now)


def checked_day(recipient: Recipient, day: date | None, now: datetime) -> date:
    """``day`` (default: the manager's today); a later day is refused: the review covers the
    week before a day, and a future week's key would stop that week's real review."""
    today = now.astimezone(recipient.zone).date()
    if day is None:
        return today
    if day > today:
        raise Invalid(f"--date {day.isoformat()} is after today ({today.isoformat()} for {recipient.name}); "
                      f"the review covers the 7 days before a date: give today or an earlier date")
    return day


# -- what -------------------------------------------------------------------------------------------

def manager_of(session: Session, config: Config, recipient: Recipient) -> Manager:
    command = rep_reply_address(session, config, recipient.rep_id) if recipient.rep_id is not None else None
    return Manager(recipient.name, recipient.address or "", recipient.zone.key, command, recipient.rep_id is not None)


def build(session: Session, config: Config, recipient: Recipient, at: datetime) -> Review:
    """The review as at ``at``: the week before it, the figures of the four weeks before it."""
    period = metrics_period(at)
    current = headline_figures(session, config, period, at)
    for name, by in CHART_BREAKDOWNS.items():  # the charts' labels name these breakdowns
        if name in current and current[name].by != by:
            current[name] = run_report(session, config, name, period, by, at)
    previous = headline_figures(session, config, period.previous(), at)
    data = review_queries.load_review_data(session, at - WEEK, at)
    return build_review(data, at, manager_of(session, config, recipient), current, previous,
                        config.pipeline.quiet_days_for, config.pipeline.stalled_days,
                        has_command_address=bool(config.commands.address),
                        nurture_reminder=_nurture_reminder(session, config, recipient, at))


def _nurture_reminder(session: Session, config: Config, recipient: Recipient, at: datetime) -> str:
    """The quarter's first review names the open deals gone cold; the others do not count them."""
    day, days = at.astimezone(recipient.zone).date(), config.pipeline.inactive_days
    if not first_review_of_quarter(day):
        return ""
    return quarterly_reminder(day, nurture.cold_count(session, at, days), days)


def deals_to_decide(session: Session, config: Config, now: datetime) -> tuple[Section, ...]:
    """Every deal the review would list to decide on, uncut: ``inboxcrm review deals``."""
    return decide_lists(review_queries.open_deals(session), now, ZoneInfo(config.team.timezone),
                        config.pipeline.quiet_days_for, config.pipeline.stalled_days, None, limit=None)


def queue_review(session: Session, config: Config, recipient: Recipient, day: date, now: datetime,
                 env: render.Environment) -> Queued:
    """Builds and queues the manager's review for ``day``'s week, once; a manager without an
    address is decided too (skipped, with the reason), so no pass builds it again."""
    key = review_key(recipient, day)
    existing = outbox.find_key(session, key)
    if existing is not None:
        return Queued(key, existing.id, existing.status, new=False)
    sender = sender_address(config)
    if not recipient.address:
        outbox.record_skipped(session, now, key=key, kind=KIND, rep_id=recipient.rep_id, to_address="",
                              subject="weekly review", from_address=sender,
                              reason=f"{recipient.name} has no email address to send the weekly review to")
    else:
        review = build(session, config, recipient, review_at(config, recipient, day, now))
        mail = render.render_review(review, env)
        outbox.enqueue(session, now, key=key, kind=KIND, to_address=recipient.address, subject=mail.subject,
                       text=mail.text, html=mail.html, rep_id=recipient.rep_id,
                       reply_to=review.manager.command_address, from_address=sender)
    row = outbox.find_key(session, key)
    return Queued(key, row.id, row.status, new=True)


def preview(session: Session, config: Config, recipient: Recipient, day: date, now: datetime,
            env: render.Environment) -> render.RenderedMail:
    """The review ``queue_review`` would queue for ``day``, rendered, with nothing written."""
    return render.render_review(build(session, config, recipient, review_at(config, recipient, day, now)), env)


def enqueue_due_reviews(factory: sessionmaker, config: Config, now: datetime,
                        stop: threading.Event | None = None, fence: Callable[[Session], None] | None = None) -> int:
    """Queues every review whose time has come and that is not decided yet; returns how many.
    Called from the daemon's notify pass, every 30 seconds: without a due review it reads only
    the managers and their keys. ``fence``: as for ``notify.enqueue_due``."""
    if not config.review.enabled:
        return 0
    with factory() as session:
        due = {review_key(r, day): (r, day) for r in recipients(session, config)
               if (day := due_day(config, r, now)) is not None}
        decided = existing_keys(session, list(due)) if due else set()
    queued, env = 0, None
    for key, (recipient, day) in due.items():
        if stop is not None and stop.is_set():
            return queued
        if key in decided:
            continue
        try:
            env = env or render.template_env(config.digest.templates_dir)
            with transaction(factory) as session:
                result = queue_review(session, config, recipient, day, now, env)
                if fence is not None:
                    fence(session)
            queued += result.new and result.status == "pending"
            event(log, logging.INFO, "review", manager=recipient.name, week=week_of(day), status=result.status)
        except LeaseLost:
            raise
        except Exception:
            event(log, logging.ERROR, "review-failed", manager=recipient.name, week=week_of(day), exc_info=True,
                  action="retried on the next pass")
    return queued
