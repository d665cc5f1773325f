"""Deciding what mail reps get and when: the daily digest at their local time, and nudges.

Every decision is an outbox row under a key that names it (``digest:<rep>:<local date>``,
``nudge:lead:<deal>``, ``nudge:unanswered:<deal>:<epoch of the unanswered message>``), written
in the same transaction that built the mail. So ``enqueue_due`` can run every 30 seconds, from
several daemons, or after a crash, and each decision is still taken once. An empty digest is
decided too: a "skipped" row under the same key, so it is not rebuilt every pass.

Nudges are for mail that arrived while we were watching. A first sync or an import of last
week's mail once queued 798 nudges for one rep, so three bounds hold: mail dated before the
mailbox that holds it was added is history and nudges nobody (a backfill, ``inboxcrm import``
of an archive); nudges look back a bounded time (new leads: a day; unanswered mail: a week);
and each rep gets at most ``[digest] nudges_per_hour`` and ``nudges_per_day``, counted from the
outbox over the rolling hour and day. What the caps hold back gets no outbox row: it stays
undecided and goes out in a later pass with room, unless the rep's digest has listed it (new
leads, awaiting reply) meanwhile. A rep's settings for the digest (time, days, always, on/off)
live on the rep; ``set_digest`` changes them.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from inboxcrm import config as config_mod
from inboxcrm.app import nurture, outbox
from inboxcrm.app.context import rep_reply_address
from inboxcrm.app.outbox import sender_address
from inboxcrm.app.team import audit, find_rep
from inboxcrm.config import Config, parse_weekdays
from inboxcrm.core.business_time import (
    add_business_hours,
    at_wall,
    digest_due_date,
    next_digest_at,
    parse_clock,
    parse_span,
    rep_timezone,
)
from inboxcrm.core.decide import HISTORY_SLACK
from inboxcrm.core.digest import (
    ACTIONS,
    DealRow,
    Digest,
    StageTotal,
    build_digest,
    mailto,
    span,
)
from inboxcrm.errors import Invalid, LeaseLost
from inboxcrm.logs import event
from inboxcrm.mail import render
from inboxcrm.store import notify_queries
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.store.digest_queries import load_digest_data, open_deal_rows
from inboxcrm.store.models import Rep
from inboxcrm.store.outbox_queries import existing_keys

log = logging.getLogger(__name__)

LEAD_LOOKBACK = timedelta(hours=24)  # older deals were backfilled, not "just arrived"
UNANSWERED_LOOKBACK = timedelta(days=7)
FIRST_DIGEST_SINCE = timedelta(hours=24)  # a rep's first digest lists the new leads of the last day
HELD_FOR = timedelta(minutes=5)  # a nudge this long due and still undecided was held back (passes run every 30 s)


@dataclass(frozen=True)
class Schedule:
    """A rep's digest schedule with the configuration's defaults filled in."""

    rep_id: int
    rep: str
    address: str | None
    zone: ZoneInfo
    clock: time
    days: frozenset[int]
    always: bool
    enabled: bool
    time_text: str
    days_text: str


def _days(text: str | None, config: Config, rep: str) -> tuple[frozenset[int], str]:
    if text:
        try:
            return parse_weekdays(text), text
        except ValueError:
            event(log, logging.WARNING, "digest-days-invalid", rep=rep, days=text, using=config.digest.days)
    return parse_weekdays(config.digest.days), config.digest.days


def _schedule(row, config: Config) -> Schedule:
    rep_id, name, zone, clock, days, always, enabled, address = row
    weekdays, days_text = _days(days, config, name)
    clock_text = clock or config.digest.time
    return Schedule(rep_id, name, address, rep_timezone(zone, config.team.timezone), parse_clock(clock_text),
                    weekdays, bool(always), bool(enabled), clock_text, days_text)


def schedules(session: Session, config: Config) -> dict[int, Schedule]:
    """Every active rep's schedule, by rep id."""
    return {row[0]: _schedule(row, config) for row in notify_queries.active_schedules(session)}


def schedule_for(session: Session, config: Config, name: str) -> Schedule:
    rep = find_rep(session, name)
    return _schedule(notify_queries.schedule_of(session, rep.id), config)


# -- the digest -----------------------------------------------------------------------------

def build_for_rep(session: Session, rep_id: int, now: datetime, config: Config, since: datetime | None = None,
                  team: Sequence[StageTotal] | None = None) -> Digest:
    """The digest for one rep at ``now``: their time zone, the config's quiet and stalled days,
    and the command address with the rep's reply token for the quick actions. ``since``: when
    their previous digest was built; None: a day before ``now``."""
    data = load_digest_data(session, rep_id, since if since is not None else now - FIRST_DIGEST_SINCE, team)
    return build_digest(data, now, rep_timezone(data.rep.timezone, config.team.timezone),
                        config.pipeline.quiet_days_for, config.pipeline.stalled_days,
                        rep_reply_address(session, config, rep_id))


def digest_key(rep_id: int, day: date) -> str:
    return f"digest:{rep_id}:{day.isoformat()}"


def built_at(schedule: Schedule, day: date, now: datetime) -> datetime:
    """The clock a digest for ``day`` is built with: now for today, else that day's digest time."""
    return now if day == now.astimezone(schedule.zone).date() else at_wall(day, schedule.clock, schedule.zone)


def _build(session: Session, config: Config, schedule: Schedule, day: date, now: datetime):
    """The rep's digest for ``day``; its new leads are those since the rep's previous digest."""
    at = built_at(schedule, day, now)
    since = notify_queries.previous_digest_at(session, schedule.rep_id, digest_key(schedule.rep_id, day), at)
    return build_for_rep(session, schedule.rep_id, at, config, since=since)


@dataclass(frozen=True)
class Queued:
    """What became of one digest decision; ``new`` False: it had been decided before."""

    key: str
    outbox_id: int
    status: str
    new: bool
    empty: bool = False


def queue_digest(session: Session, config: Config, schedule: Schedule, day: date, now: datetime,
                 env: render.Environment, force: bool = False) -> Queued:
    """Builds and queues (or, empty and not wanted, records as skipped) the rep's digest for
    ``day``, once. ``force``: queue even an empty one (someone asked for it by hand)."""
    key = digest_key(schedule.rep_id, day)
    existing = outbox.find_key(session, key)
    if existing is not None:
        return Queued(key, existing.id, existing.status, new=False)
    digest = _build(session, config, schedule, day, now)
    to_address = digest.rep_address or schedule.address or ""
    sender = sender_address(config)
    if digest.is_empty and not (schedule.always or force):
        outbox.record_skipped(session, now, key=key, kind="digest", rep_id=schedule.rep_id, to_address=to_address,
                              subject=digest.subject, from_address=sender,
                              reason="nothing to say, and the rep gets the digest only when there is")
    else:
        mail = render.render_digest(digest, env)
        outbox.enqueue(session, now, key=key, kind="digest", to_address=to_address, subject=mail.subject,
                       text=mail.text, html=mail.html, rep_id=schedule.rep_id,
                       reply_to=digest.command_address,  # the command address with the rep's token
                       from_address=sender)
    row = outbox.find_key(session, key)
    return Queued(key, row.id, row.status, new=True, empty=digest.is_empty)


def preview(session: Session, config: Config, schedule: Schedule, day: date, now: datetime,
            env: render.Environment) -> render.RenderedMail:
    """The digest ``queue_digest`` would queue for ``day``, rendered, with nothing written."""
    return render.render_digest(_build(session, config, schedule, day, now), env)


def enqueue_due(factory: sessionmaker, config: Config, now: datetime, stop: threading.Event | None = None,
                fence: Callable[[Session], None] | None = None) -> int:
    """Queues every digest whose time has come and every nudge that is due; returns how many
    messages were queued (skipped digests not counted). Safe to run often and concurrently.

    ``stop`` set (the daemon is shutting down) ends the pass after the message at hand: what is
    left is decided by the next pass, since every decision has its own key.

    ``fence``: called last in every transaction that queues, just before its commit; it raises
    LeaseLost (the transaction rolls back, the pass ends) when this daemon no longer holds the
    notify job. The caps (nudges per hour) are counted inside the transaction, so a daemon that
    stalled past its lease could find room another has used meanwhile: its work is thrown away.
    Last, not first: the fence locks the lease row until the commit, and held through a whole
    digest's building it would stall this daemon's own renewals and others' takeovers."""
    env = render.template_env(config.digest.templates_dir)
    with factory() as session:
        due = {s.rep_id: (s, day) for s in schedules(session, config).values()
               if s.enabled and (day := digest_due_date(now, s.zone, s.days, s.clock)) is not None}
        keys = {digest_key(rep_id, day): rep_id for rep_id, (_, day) in due.items()}
        decided = existing_keys(session, list(keys))
    queued = 0
    for key, rep_id in keys.items():
        if stop is not None and stop.is_set():
            return queued
        if key in decided:
            continue
        schedule, day = due[rep_id]
        try:
            with transaction(factory) as session:
                result = queue_digest(session, config, schedule, day, now, env)
                if fence is not None:
                    fence(session)
            queued += result.new and result.status == "pending"
            event(log, logging.INFO, "digest", rep=schedule.rep, date=day, status=result.status)
        except LeaseLost:
            raise
        except Exception:
            event(log, logging.ERROR, "digest-failed", rep=schedule.rep, date=day, exc_info=True,
                  action="retried on the next pass")
    with transaction(factory) as session:
        queued += enqueue_nudges(session, config, now, env, stop)
        queued += nurture.enqueue_revival_notices(session, config, now, env)  # deals back from Nurture
        if fence is not None:
            fence(session)
    return queued


# -- nudges ---------------------------------------------------------------------------------

def _actions(ref: str, command_address: str | None, *kinds: str) -> list[dict]:
    if not command_address:
        return []
    return [{"label": label, "href": mailto(command_address, subject)}
            for label, subject in (ACTIONS[k](ref) for k in kinds)]


def _context(deal: DealRow, schedule: Schedule, command: str | None, **extra) -> dict:
    """``command``: the command address with the rep's reply token, or None."""
    ref = f"D-{deal.id}"
    return {"deal": deal, "ref": ref, "rep_name": schedule.rep, "timezone": schedule.zone.key,
            "who": ", ".join(filter(None, (deal.contact or deal.address, deal.company))),
            "link": mailto(command, f"[{ref}] ") if command else None, "command_address": command,
            "reply": mailto(deal.address, f"Re: {deal.title}") if deal.address else None,
            "actions": _actions(ref, command, "next", "stage"), **extra}


def _queue_nudge(session: Session, config: Config, env: render.Environment, now: datetime, key: str, template: str,
                 subject: str, deal: DealRow, schedule: Schedule, **extra) -> bool:
    command = rep_reply_address(session, config, schedule.rep_id)
    context = _context(deal, schedule, command, subject=subject, **extra)
    text, html = render.render_pair(env, template, context)
    return outbox.enqueue(session, now, key=key, kind="nudge", to_address=schedule.address, subject=subject,
                          text=text, html=html, rep_id=schedule.rep_id, deal_id=deal.id,
                          reply_to=command, from_address=sender_address(config))


@dataclass(frozen=True)
class _Mail:
    """One message of a deal: when it is dated, and since when a mailbox holding it was watched."""

    direction: str | None
    dated: datetime | None
    watched_since: datetime  # the earliest ``created_at`` of the mailboxes holding a copy

    @property
    def live(self) -> bool:
        """Arrived after a mailbox holding it was added (the same slack as a command's history
        check); an undated message cannot be shown to be history."""
        return self.dated is None or self.dated >= self.watched_since - HISTORY_SLACK


def _mail_of(session: Session, deal_ids: set[int]) -> dict[int, list[_Mail]]:
    """The stored messages of these deals. Deals made by hand have none: they are not history."""
    found: dict[int, list[_Mail]] = {}
    for deal_id, direction, dated, watched_since in notify_queries.mail_of_deals(session, deal_ids):
        found.setdefault(deal_id, []).append(_Mail(direction, dated, watched_since))
    return found


def _lead_is_live(mail: list[_Mail]) -> bool:
    """A new lead nudges when any of its mail arrived while we were watching."""
    return not mail or any(m.live for m in mail)


def _unanswered_is_live(mail: list[_Mail]) -> bool:
    """An unanswered prospect nudges when their latest message arrived while we were watching."""
    inbound = [m for m in mail if m.direction == "inbound"]
    if not inbound:
        return True
    return max(inbound, key=lambda m: m.dated or m.watched_since).live


def _room(session: Session, config: Config, now: datetime, rep_ids: set[int]) -> dict[int, int]:
    """How many more nudges each rep may get now: what the hour's and the day's caps leave,
    counting the nudges already in the outbox over the rolling hour and day."""
    hour, day = config.digest.nudges_per_hour, config.digest.nudges_per_day
    room = {rep_id: min(hour, day) for rep_id in rep_ids}
    for rep_id, in_day, in_hour in notify_queries.nudges_sent(session, rep_ids, now - timedelta(days=1),
                                                              now - timedelta(hours=1)):
        room[rep_id] = max(0, min(hour - (in_hour or 0), day - in_day))
    return room


@dataclass(frozen=True)
class _Due:
    """A nudge whose time has come, before the caps: ``since`` (when it became due) orders them."""

    key: str
    deal_id: int
    owner: int
    since: datetime
    unanswered: bool


def _due_nudges(session: Session, config: Config, now: datetime, reps: dict[int, Schedule]) -> list[_Due]:
    """New leads and unanswered prospects not yet decided, of reps with an address, whose mail
    arrived while we were watching; oldest first.

    The store reads a few narrow columns by time range only (an index, or one quick scan);
    the owner and "open" are checked here: given them too, both backends walked every open deal
    of every rep."""
    def wanted(owner: int | None, closed: datetime | None) -> bool:
        return owner in reps and closed is None and reps[owner].address is not None

    leads = {f"nudge:lead:{pk}": _Due(f"nudge:lead:{pk}", pk, owner, created, False)
             for pk, owner, created, closed in notify_queries.deals_created_since(session, now - LEAD_LOOKBACK)
             if wanted(owner, closed)}
    span_, hours = parse_span(config.digest.business_hours), config.digest.first_response_hours
    waiting = {key: _Due(key, pk, owner, inbound, True)
               for pk, owner, inbound, outbound, closed in notify_queries.deals_written_to_between(
                   session, now - UNANSWERED_LOOKBACK, now - timedelta(hours=hours))  # business time is never faster
               if wanted(owner, closed) and (outbound is None or inbound > outbound)
               for key in (f"nudge:unanswered:{pk}:{int(inbound.timestamp())}",)}
    undecided = {*leads, *waiting} - existing_keys(session, [*leads, *waiting])
    due = [d for key, d in leads.items() if key in undecided]
    for key, d in waiting.items():
        if key in undecided:
            rep = reps[d.owner]
            at = add_business_hours(d.since, hours, rep.zone, rep.days, span_)
            if now >= at:
                due.append(replace(d, since=at))
    mail = _mail_of(session, {d.deal_id for d in due})
    return sorted((d for d in due if (_unanswered_is_live if d.unanswered else _lead_is_live)(mail.get(d.deal_id, []))),
                  key=lambda d: (d.since, d.key))


def _not_digested(due: list[_Due], digested: dict[int, datetime]) -> list[_Due]:
    """Drops the nudges a digest has listed instead: those still undecided ``HELD_FOR`` after
    they fell due when the digest was built were held back (by the caps, or a stopped daemon).
    A lead that arrived a minute before its rep's digest still nudges."""
    return [d for d in due if d.owner not in digested or d.since + HELD_FOR > digested[d.owner]]


def _within_caps(due: list[_Due], room: dict[int, int]) -> tuple[list[_Due], list[_Due]]:
    """(the nudges each rep has room for, oldest first; those that wait for the digest)."""
    left, taken, held = dict(room), [], []
    for d in due:
        if left[d.owner] > 0:
            left[d.owner] -= 1
            taken.append(d)
        else:
            held.append(d)
    return taken, held


def enqueue_nudges(session: Session, config: Config, now: datetime, env: render.Environment,
                   stop: threading.Event | None = None) -> int:
    """New leads (at once) and unanswered prospects (after the first-response target in business
    hours), each nudging the deal's owner once, within the rep's caps; in the caller's transaction.

    Runs every 30 seconds, so it builds the full rows only for the deals that get a nudge now."""
    if config.digest.nudges_per_hour <= 0 or config.digest.nudges_per_day <= 0:
        return 0  # nudges are off: the digest says it all
    reps = schedules(session, config)
    due = _due_nudges(session, config, now, reps) if reps else []
    due = _not_digested(due, notify_queries.latest_digests(session, {d.owner for d in due}, now)) if due else []
    if not due:
        return 0
    room = _room(session, config, now, {d.owner for d in due})
    taken, held = _within_caps(due, room)
    if held:
        event(log, logging.INFO, "nudges-held", held=len(held),
              reps=",".join(sorted({reps[d.owner].rep for d in held})),
              per_hour=config.digest.nudges_per_hour, per_day=config.digest.nudges_per_day,
              action="they wait for the digest, or a later pass with room")
    rows = open_deal_rows(session, [d.deal_id for d in taken])
    queued = 0
    hours = config.digest.first_response_hours
    for d in taken:
        if stop is not None and stop.is_set():
            return queued
        deal, schedule = rows[d.deal_id], reps[d.owner]
        if d.unanswered:
            who = deal.contact or deal.address or "A prospect"
            waited = span((now - deal.last_inbound_at).total_seconds())
            subject = f"D-{deal.id}: {who} has waited {waited} for your reply"
            queued += _queue_nudge(session, config, env, now, d.key, "nudge_unanswered", subject, deal, schedule,
                                   waited=waited, arrived=deal.last_inbound_at, target=f"{hours:g}")
        else:
            who = deal.contact or deal.address or "someone"
            subject = f"New lead D-{deal.id}: {who}" + (f" ({deal.company})" if deal.company else "")
            queued += _queue_nudge(session, config, env, now, d.key, "nudge_lead", subject, deal, schedule,
                                   arrived=deal.created_at)
    return queued


# -- a rep's settings -----------------------------------------------------------------------

def _checked(key: str, value):
    """The configuration file's own rule for the same setting, so the two cannot disagree."""
    try:
        return config_mod.check("digest", key, value)
    except ValueError as bad:
        raise Invalid(f'invalid digest {key} "{value}"; expected {bad}') from None


def set_digest(session: Session, now: datetime, actor: str, name: str, time_: str | None = None,
               days: str | None = None, always: bool | None = None, enabled: bool | None = None) -> Rep:
    """Changes the given settings of a rep's digest (None leaves one as it is)."""
    rep = find_rep(session, name)
    changes = {}
    if time_ is not None:
        changes["digest_time"] = _checked("time", time_)
    if days is not None:
        changes["digest_days"] = _checked("days", days).strip().lower()
    if always is not None:
        changes["digest_always"] = always
    if enabled is not None:
        changes["digest_enabled"] = enabled
    for column, value in changes.items():
        setattr(rep, column, value)
    if changes:
        audit(session, now, actor, "rep-digest", "rep", rep.id, **changes)
    return rep


def describe(schedule: Schedule, now: datetime) -> str:
    """One line for the CLI: when the rep's next digest goes out, in their time."""
    if not schedule.enabled:
        return f"{schedule.rep}: digest off"
    nxt = next_digest_at(now, schedule.zone, schedule.days, schedule.clock).astimezone(schedule.zone)
    when = "every day" if len(schedule.days) == 7 else schedule.days_text
    mode = "always, even when empty" if schedule.always else "only when there is something to say"
    return (f"{schedule.rep}: digest at {schedule.time_text} {schedule.zone.key}, {when}, {mode}; "
            f"next {nxt:%Y-%m-%d %H:%M %Z} to {schedule.address or '(no address)'}")
