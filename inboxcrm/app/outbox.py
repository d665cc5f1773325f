"""The outbox: every message inboxcrm sends is first a row here, then a job sends it.

Why a table and not a direct send: the decision to send (a digest for Alice on 2026-11-23,
a nudge for D-42) is committed together with the work that caused it, under a unique key, so
it is made once whatever crashes or runs twice. The row holds the complete message with a
Message-ID derived from the key, so what is sent is exactly what was decided.

Never twice, across crashes. A row moves pending -> sending -> sent. ``send_due`` first claims
a due row by pushing its next attempt a lease into the future with a conditional UPDATE, so a
second daemon skips it. Only after the server accepted the envelope does it commit "sending",
then it transmits the data and commits "sent". A process that dies in between leaves
"sending" behind; once the lease has passed the row becomes "unknown": the server may have
the message. It is not resent automatically; ``outbox list`` shows it loudly and the admin
decides (``outbox retry ID``). Everything the server definitely refused, or a connection
that failed before the data went out, goes back to pending with exponential backoff.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from inboxcrm.app.team import audit
from inboxcrm.config import Config
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.logs import event
from inboxcrm.mail import smtp
from inboxcrm.store.db import insert_new, transaction
from inboxcrm.store.models import OutboxMessage

log = logging.getLogger(__name__)

KINDS = ("digest", "nudge", "reply")
STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")
RETRYABLE = ("failed", "unknown")
OWN_HEADER = "X-InboxCRM"  # classify.Own drops mail carrying it: ours never re-enters the pipeline
FIRST_DELAY, MAX_DELAY = 60.0, 3600.0  # seconds: 1 min doubling to 1 h
MAX_ATTEMPTS = 30  # 1+2+4+...+32 min, then hourly: about 24 h before a row is "failed"
LEASE = timedelta(minutes=10)  # how long a claimed row is left to its sender; > one send's time


# -- writing ---------------------------------------------------------------------------------

def message_id_for(key: str, kind: str, from_address: str) -> str:
    """Deterministic: the same decision always carries the same Message-ID."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{kind}.{digest}@{from_address.rpartition('@')[2] or 'localhost'}>"


def sender_address(config: Config) -> str:
    """Our From; mail queued before SMTP is set up still needs one."""
    if config.smtp.from_address:
        return config.smtp.from_address
    return f"inboxcrm@{config.team.domains[0] if config.team.domains else 'localhost'}"


def build_message(now: datetime, *, key: str, kind: str, from_address: str, to_address: str, subject: str,
                  text: str, html: str | None = None, reply_to: str | None = None,
                  in_reply_to: str | None = None) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = from_address
    message["To"] = to_address
    message["Subject"] = " ".join(subject.split())  # a line break in a subject would start a new header
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id_for(key, kind, from_address)
    if reply_to:
        message["Reply-To"] = reply_to
    if in_reply_to:  # an answer threads under the email it answers
        message["In-Reply-To"] = message["References"] = f"<{in_reply_to.strip('<>')}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this, please
    message["X-Auto-Response-Suppress"] = "All"  # the same, for Exchange and Outlook
    message[OWN_HEADER] = kind
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _insert(session: Session, **values) -> bool:
    """False (nothing written) when the key was already decided."""
    stmt = insert_new(session.get_bind().dialect.name, OutboxMessage.__table__, "key")
    return session.execute(stmt, values).scalar() is not None


def enqueue(session: Session, now: datetime, *, key: str, kind: str, to_address: str, subject: str, text: str,
            html: str | None = None, rep_id: int | None = None, deal_id: int | None = None,
            reply_to: str | None = None, from_address: str, in_reply_to: str | None = None) -> bool:
    """Queues a message in the caller's transaction; False (and nothing written) when ``key`` exists."""
    if kind not in KINDS:
        raise Invalid(f'invalid outbox kind "{kind}"; expected one of {", ".join(KINDS)}')
    message = build_message(now, key=key, kind=kind, from_address=from_address, to_address=to_address,
                            subject=subject, text=text, html=html, reply_to=reply_to, in_reply_to=in_reply_to)
    return _insert(session, key=key, kind=kind, rep_id=rep_id, deal_id=deal_id, to_address=to_address,
                   subject=str(message["Subject"]), message_id=str(message["Message-ID"]), body=message.as_bytes(),
                   status="pending", attempts=0, next_attempt_at=now, created_at=now)


def record_skipped(session: Session, now: datetime, *, key: str, kind: str, to_address: str, subject: str,
                   reason: str, rep_id: int | None = None, from_address: str) -> bool:
    """Decides "nothing to send" under ``key``, so the decision is not taken again every pass."""
    return _insert(session, key=key, kind=kind, rep_id=rep_id, to_address=to_address, subject=subject,
                   message_id=message_id_for(key, kind, from_address), body=b"", status="skipped",
                   attempts=0, next_attempt_at=now, last_error=reason, created_at=now)


# -- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutboxRow:
    id: int
    key: str
    kind: str
    status: str
    to_address: str
    subject: str
    message_id: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class OutboxDetail:
    row: OutboxRow
    headers: tuple[tuple[str, str], ...]
    text: str


def _row(m: OutboxMessage) -> OutboxRow:
    return OutboxRow(m.id, m.key, m.kind, m.status, m.to_address, m.subject, m.message_id, m.attempts, m.created_at,
                     m.next_attempt_at, m.sent_at, m.last_error)


def find_key(session: Session, key: str) -> OutboxRow | None:
    found = session.scalar(select(OutboxMessage).where(OutboxMessage.key == key))
    return _row(found) if found else None


def list_outbox(session: Session, status: str | None = None, limit: int = 200) -> list[OutboxRow]:
    """Newest first; rows needing the admin (unknown, failed) are never cut by the limit."""
    if status is not None and status not in STATUSES:
        raise Invalid(f'invalid outbox status "{status}"; expected one of {", ".join(STATUSES)}')
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc())
    if status is not None:
        return [_row(m) for m in session.scalars(query.where(OutboxMessage.status == status).limit(limit))]
    attention = list(session.scalars(query.where(OutboxMessage.status.in_(RETRYABLE))))
    rest = session.scalars(query.where(OutboxMessage.status.not_in(RETRYABLE)).limit(limit))
    return sorted((_row(m) for m in [*attention, *rest]), key=lambda r: -r.id)


def _get(session: Session, pk: int) -> OutboxMessage:
    found = session.get(OutboxMessage, pk)
    if found is None:
        raise NotFound(f'no outbox message {pk}; see "inboxcrm outbox list"')
    return found


def show(session: Session, pk: int) -> OutboxDetail:
    m = _get(session, pk)
    if not m.body:
        return OutboxDetail(_row(m), (), "")
    parsed = BytesParser(policy=policy.default).parsebytes(m.body)
    part = parsed.get_body(("plain",))
    return OutboxDetail(_row(m), tuple((k, str(v)) for k, v in parsed.items()), part.get_content() if part else "")


def retry(session: Session, now: datetime, actor: str, pk: int | None = None) -> list[OutboxRow]:
    """Failed rows (all, or the one ``pk``) and an unknown row named by ``pk`` back to pending.

    An unknown row may already be in the recipient's mailbox, so only the admin who checked
    retries it, by id; ``retry`` without an id takes the failed rows only."""
    if pk is None:
        rows = list(session.scalars(select(OutboxMessage).where(OutboxMessage.status == "failed")))
    else:
        rows = [_get(session, pk)]
        if rows[0].status not in RETRYABLE:
            raise Invalid(f"outbox message {pk} is {rows[0].status}; only {' or '.join(RETRYABLE)} messages "
                          f"can be retried")
    for m in rows:
        audit(session, now, actor, "outbox-retry", "outbox", m.id, detail_status=m.status)
        m.status, m.attempts, m.next_attempt_at, m.last_error = "pending", 0, now, None
    return [_row(m) for m in rows]


# -- sending ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SendReport:
    sent: int = 0
    failed: int = 0  # gave up, or refused for good (5xx): "failed", waiting for ``outbox retry``
    deferred: int = 0  # waiting: retried later with backoff, or no SMTP server configured
    unknown: int = 0  # may or may not have been delivered: the admin decides

    def __add__(self, other: SendReport) -> SendReport:
        return SendReport(self.sent + other.sent, self.failed + other.failed, self.deferred + other.deferred,
                          self.unknown + other.unknown)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """1 min after the first failure, doubling up to 1 h, with +-20 % jitter so that many
    daemons (or rows) coming back after an outage do not all knock at once."""
    delay = min(FIRST_DELAY * 2 ** max(attempts - 1, 0), MAX_DELAY)
    return timedelta(seconds=delay * (0.8 + 0.4 * (rng or random).random()))


_warned_unconfigured = False


def _set(factory: sessionmaker, pk: int, expect: str | None = None, **values) -> int:
    """One committed UPDATE of one row, optionally only while it is in state ``expect``."""
    stmt = update(OutboxMessage).where(OutboxMessage.id == pk)
    if expect is not None:
        stmt = stmt.where(OutboxMessage.status == expect)
    if "_lease" in values:
        stmt = stmt.where(OutboxMessage.next_attempt_at == values.pop("_lease"))
    with transaction(factory) as session:
        return session.execute(stmt.values(**values)).rowcount


def recover(factory: sessionmaker, now: datetime) -> int:
    """Rows left in "sending" past their lease belong to a sender that died mid-send: unknown."""
    with transaction(factory) as session:
        stale = list(session.execute(select(OutboxMessage.id, OutboxMessage.key).where(
            OutboxMessage.status == "sending", OutboxMessage.next_attempt_at <= now)))
        for pk, key in stale:
            session.execute(update(OutboxMessage).where(OutboxMessage.id == pk, OutboxMessage.status == "sending")
                            .values(status="unknown", last_error="the sender stopped after the server accepted the "
                                    "envelope: the message may or may not have been delivered"))
            event(log, logging.ERROR, "outbox-unknown", outbox=pk, key=key,
                  why="crashed mid-send; not resent automatically",
                  action=f"check and run: inboxcrm outbox retry {pk}, if it never arrived")
    return len(stale)


def _due(factory: sessionmaker, now: datetime, limit: int) -> list[int]:
    with factory() as session:
        return list(session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)))


def _claim(factory: sessionmaker, pk: int, now: datetime) -> tuple[str, bytes] | None:
    """Takes one due row with a conditional UPDATE (its next attempt pushed a lease ahead), so
    two senders never take the same row; None when another sender was first."""
    taken = (update(OutboxMessage).values(next_attempt_at=now + LEASE)
             .where(OutboxMessage.id == pk, OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now))
    with transaction(factory) as session:
        if session.execute(taken).rowcount != 1:
            return None
        return tuple(session.execute(select(OutboxMessage.to_address, OutboxMessage.body)
                                     .where(OutboxMessage.id == pk)).one())


class _Taken(Exception):
    """Our lease on a row ran out and another sender has it: leave it to them."""


def _mark_sending(factory: sessionmaker, pk: int, now: datetime) -> None:
    """Committed before the data goes out, and only while our lease still holds."""
    if _set(factory, pk, "pending", _lease=now + LEASE, status="sending") != 1:
        raise _Taken(pk)


def _defer(factory: sessionmaker, pk: int, now: datetime, error: Exception, rng: random.Random | None) -> str:
    """A definite non-delivery: back to pending with backoff, or failed when it cannot improve."""
    with transaction(factory) as session:
        row = session.get(OutboxMessage, pk)
        row.attempts += 1
        row.last_error = str(error)
        permanent = isinstance(error, smtp.SmtpError) and error.permanent and error.stage in ("envelope", "data")
        if permanent or row.attempts >= MAX_ATTEMPTS:
            row.status = "failed"
            event(log, logging.ERROR, "outbox-failed", outbox=pk, key=row.key, attempt=row.attempts, error=error)
        else:
            row.status, row.next_attempt_at = "pending", now + backoff(row.attempts, rng)
            event(log, logging.WARNING, "outbox-retry", outbox=pk, key=row.key, attempt=row.attempts,
                  retry_at=row.next_attempt_at, error=error)
        return row.status


def send_due(factory: sessionmaker, config: Config, now: datetime, environ: Mapping[str, str] = os.environ,
             limit: int = 100, rng: random.Random | None = None) -> SendReport:
    """Sends what is due over one SMTP connection. Safe to run from several processes at once."""
    global _warned_unconfigured
    recover(factory, now)
    if not config.smtp.host:
        with factory() as session:
            waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.status == "pending")) or 0
        if waiting and not _warned_unconfigured:
            event(log, logging.WARNING, "outbox-waiting", messages=waiting,
                  why="no SMTP server is configured ([smtp] host)")
            _warned_unconfigured = True
        return SendReport(deferred=waiting)
    due = _due(factory, now, limit)
    if not due:
        return SendReport()
    try:
        connection = smtp.connect(config.smtp, environ)
    except smtp.SmtpError as exc:
        statuses = [_defer(factory, pk, now, exc, rng) for pk in due if _claim(factory, pk, now)]
        return SendReport(failed=statuses.count("failed"), deferred=statuses.count("pending"))
    report, started = SendReport(), time.monotonic()
    sender = config.smtp.from_address or ""
    with connection:
        for pk in due:
            if time.monotonic() - started > LEASE.total_seconds() / 2:
                break  # the rest next pass: a row is never claimed close to the end of a lease
            claimed = _claim(factory, pk, now)
            if claimed is None:
                continue
            to_address, body = claimed
            try:
                connection.send(sender, to_address, body, before_data=lambda pk=pk: _mark_sending(factory, pk, now))
            except _Taken:
                continue
            except smtp.SmtpError as exc:
                if not exc.definite:
                    _set(factory, pk, None, status="unknown", attempts=OutboxMessage.attempts + 1,
                         last_error=f"{exc}: the message may or may not have been delivered")
                    event(log, logging.ERROR, "outbox-unknown", outbox=pk, error=exc,
                          why="the connection failed during DATA; not resent automatically")
                    report += SendReport(unknown=1)
                else:
                    status = _defer(factory, pk, now, exc, rng)
                    report += SendReport(failed=1) if status == "failed" else SendReport(deferred=1)
                if exc.connection_lost or not exc.definite:
                    break  # the rest stay due for the next pass, on a new connection
                continue
            _set(factory, pk, None, status="sent", sent_at=now, attempts=OutboxMessage.attempts + 1, last_error=None)
            event(log, logging.INFO, "outbox-sent", outbox=pk, to=to_address)
            report += SendReport(sent=1)
    return report
