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

from inboxcrm.app.team import audit
from inboxcrm.config import Config
from inboxcrm.core.backoff import backoff_delay
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.logs import event
from inboxcrm.mail import smtp
from inboxcrm.store import outbox_queries
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.store.models import OutboxMessage

log = logging.getLogger(__name__)

KINDS = ("digest", "nudge", "reply", "alert", "review")
STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")
RETRYABLE = ("failed", "unknown")
OWN_HEADER = "X-InboxCRM"  # classify.Own drops mail carrying it: ours never re-enters the pipeline
# The house backoff waits between half and all of a step that doubles from BACKOFF_BASE up to
# BACKOFF_CAP, three quarters of it on average: about 1 min after the first failure, doubling to
# about an hour between attempts (40 s to 80 min at the extremes).
BACKOFF_BASE, BACKOFF_CAP = 80.0, 4800.0  # seconds
MAX_ATTEMPTS = 30  # 1+2+4+...+32 min, then about hourly: about 24 h (16 to 32) before a row is "failed"
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


def enqueue(session: Session, now: datetime, *, key: str, kind: str, to_address: str, subject: str, text: str,
            html: str | None = None, rep_id: int | None = None, deal_id: int | None = None,
            reply_to: str | None = None, from_address: str, in_reply_to: str | None = None) -> bool:
    """Queues a message in the caller's transaction; False (and nothing written) when ``key`` exists."""
    if kind not in KINDS:
        raise Invalid(f'invalid outbox kind "{kind}"; expected one of {", ".join(KINDS)}')
    message = build_message(now, key=key, kind=kind, from_address=from_address, to_address=to_address,
                            subject=subject, text=text, html=html, reply_to=reply_to, in_reply_to=in_reply_to)
    return outbox_queries.insert_if_new(
        session, key=key, kind=kind, rep_id=rep_id, deal_id=deal_id, to_address=to_address,
        subject=str(message["Subject"]), message_id=str(message["Message-ID"]), body=message.as_bytes(),
        status="pending", attempts=0, next_attempt_at=now, created_at=now)


def record_skipped(session: Session, now: datetime, *, key: str, kind: str, to_address: str, subject: str,
                   reason: str, rep_id: int | None = None, from_address: str) -> bool:
    """Decides "nothing to send" under ``key``, so the decision is not taken again every pass."""
    return outbox_queries.insert_if_new(
        session, key=key, kind=kind, rep_id=rep_id, to_address=to_address, subject=subject,
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
    found = outbox_queries.by_key(session, key)
    return _row(found) if found else None


def list_outbox(session: Session, status: str | None = None, limit: int = 200) -> list[OutboxRow]:
    """Newest first; rows needing the admin (unknown, failed) are never cut by the limit."""
    if status is not None and status not in STATUSES:
        raise Invalid(f'invalid outbox status "{status}"; expected one of {", ".join(STATUSES)}')
    if status is not None:
        return [_row(m) for m in outbox_queries.newest(session, limit, status)]
    attention = outbox_queries.all_with_status(session, RETRYABLE)
    rest = outbox_queries.newest(session, limit, excluding=RETRYABLE)
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
        rows = outbox_queries.all_with_status(session, ("failed",))
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
    """The wait after ``attempts`` failed attempts: the house rule (``core.backoff``), whose
    jitter keeps the rows (or daemons) that failed together in an outage from all knocking at once."""
    return timedelta(seconds=backoff_delay(attempts, BACKOFF_CAP, BACKOFF_BASE, (rng or random).random))


_warned_unconfigured = False


def _committed(factory: sessionmaker, write, *args):
    """One store write in a transaction of its own, committed before the caller goes on."""
    with transaction(factory) as session:
        return write(session, *args)


def recover(factory: sessionmaker, now: datetime) -> int:
    """Rows left in "sending" past their lease belong to a sender that died mid-send: unknown."""
    with transaction(factory) as session:
        stale = outbox_queries.stale_sending(session, now)
        for pk, key in stale:
            outbox_queries.sending_to_unknown(session, pk, "the sender stopped after the server accepted the "
                                              "envelope: the message may or may not have been delivered")
            event(log, logging.ERROR, "outbox-unknown", outbox=pk, key=key,
                  why="crashed mid-send; not resent automatically",
                  action=f"check and run: inboxcrm outbox retry {pk}, if it never arrived")
    return len(stale)


def _due(factory: sessionmaker, now: datetime, limit: int) -> list[int]:
    with factory() as session:
        return outbox_queries.due_ids(session, now, limit)


def _claim(factory: sessionmaker, pk: int, now: datetime) -> tuple[str, bytes] | None:
    """Takes one due row with a conditional UPDATE (its next attempt pushed a lease ahead), so
    two senders never take the same row; None when another sender was first."""
    return _committed(factory, outbox_queries.claim, pk, now, now + LEASE)


class _Taken(Exception):
    """Our lease on a row ran out and another sender has it: leave it to them."""


def _mark_sending(factory: sessionmaker, pk: int, now: datetime) -> None:
    """Committed before the data goes out, and only while our lease still holds."""
    if not _committed(factory, outbox_queries.mark_sending, pk, now + LEASE):
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
            waiting = outbox_queries.pending_count(session)
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
                    _committed(factory, outbox_queries.mark_unknown, pk,
                               f"{exc}: the message may or may not have been delivered")
                    event(log, logging.ERROR, "outbox-unknown", outbox=pk, error=exc,
                          why="the connection failed during DATA; not resent automatically")
                    report += SendReport(unknown=1)
                else:
                    status = _defer(factory, pk, now, exc, rng)
                    report += SendReport(failed=1) if status == "failed" else SendReport(deferred=1)
                if exc.connection_lost or not exc.definite:
                    break  # the rest stay due for the next pass, on a new connection
                continue
            _committed(factory, outbox_queries.mark_sent, pk, now)
            event(log, logging.INFO, "outbox-sent", outbox=pk, to=to_address)
            report += SendReport(sent=1)
    return report
