"""process(raw) = store raw -> parse -> decide (classify, rules, match) -> record (and run commands).

The caller owns the transaction, so an importer or an IMAP poll can commit a message's
records together with its own position (exactly once). Every message is atomic: whatever goes
wrong in its interpretation, the raw message stays, quarantined with its reason, and none of
its other records do. One message alone gets a savepoint; a commit group's messages (``Group``)
share one and are replayed a savepoint each only when one of them fails.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from inboxcrm.app import bounces
from inboxcrm.app.commands import run_commands
from inboxcrm.app.context import context_for
from inboxcrm.app.forget import forgotten_mail
from inboxcrm.clock import Clock, utcnow
from inboxcrm.core.decide import Context, Decision, MailboxInfo, decide, second_look
from inboxcrm.core.parse import content_hash, identify, parse
from inboxcrm.errors import Invalid, NotFound, ParseError
from inboxcrm.logs import event
from inboxcrm.mail.parse_ahead import Prepared
from inboxcrm.store import audit, intake_queries
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.store.models import Message
from inboxcrm.store.records import DATABASE_FAILURES, GroupRows, Store, StoredMessage, mailbox_info
from inboxcrm.store.team_queries import message_by_message_id
from inboxcrm.values import Email, Explanation, RawMessage

log = logging.getLogger("inboxcrm.app.intake")


@dataclass(frozen=True)
class Outcome:
    status: str  # a Decision status, "quarantined", or "duplicate" for a copy already stored
    reason: str
    detail: str
    message_pk: int
    deal_ref: str | None = None


def process(session: Session, raw: RawMessage, mailbox: MailboxInfo, ctx: Context, now: datetime,
            keep_raw: bool = True, prepared: Prepared | None = None, group: GroupRows | None = None) -> Outcome:
    """``prepared``: identity and parse of ``raw`` computed elsewhere (see parse_ahead), or None.
    ``group``: the message is one of a ``Group``'s (no savepoint of its own; see there)."""
    store = Store(session, now, group)
    if prepared is None:
        message_id, synthetic = identify(raw.data)
        sha256, parsed = content_hash(raw.data), None
    else:
        message_id, synthetic, sha256, parsed = prepared.message_id, prepared.synthetic, prepared.sha256, prepared.parsed
    msg, is_new = store.save_raw(raw, mailbox.id, message_id, synthetic, sha256, keep_raw)
    if not is_new and second_look(msg.reason, mailbox) is None:
        return Outcome("duplicate", "already-stored", f"copy of message {msg.id} ({msg.status})", msg.id,
                       f"D-{msg.deal_id}" if msg.deal_id else None)
    return decide_and_record(store, msg, raw.data, mailbox, ctx, parsed=parsed, folder=raw.folder)


def decide_and_record(store: Store, msg: StoredMessage, data: bytes, mailbox: MailboxInfo, ctx: Context,
                      force_create: bool = False, parsed: Email | ParseError | None = None,
                      folder: str = "") -> Outcome:
    """Decide what a stored message is and record it: a message that cannot be parsed, or meets a
    bug, is quarantined with its reason and stops nothing else. Parsing writes nothing, so an
    unparseable message needs no savepoint; the rest runs in one, except in a group (``Group``),
    where a failure propagates and the group replays."""
    try:
        if isinstance(parsed, ParseError):
            raise parsed
        email = parsed if parsed is not None else parse(data, msg.message_id)
    except Exception as exc:  # noqa: BLE001 - parsing writes nothing: quarantined without a savepoint
        return _quarantined(store, msg, data, mailbox, exc)
    if store.group is not None:
        return _record(store, msg, email, data, mailbox, ctx, force_create, folder)  # fails: the group replays
    try:
        # A Core savepoint: the Store speaks Core, and the ORM's nested transaction cost more
        # than the message's own statements.
        with store.conn.begin_nested():
            return _record(store, msg, email, data, mailbox, ctx, force_create, folder)
    except DATABASE_FAILURES:
        raise  # the database is unwell, not the message: stop; a re-run resumes where this stopped
    except Exception as exc:  # noqa: BLE001 - a bug must quarantine one message, not stop the run
        return _quarantined(store, msg, data, mailbox, exc)


def _quarantined(store: Store, msg: StoredMessage, data: bytes, mailbox: MailboxInfo, exc: Exception) -> Outcome:
    """A ParseError quarantines with its own reason; anything else is a bug, logged as one."""
    if isinstance(exc, ParseError):
        reason, detail = exc.reason, exc.detail
    else:
        reason, detail = "internal-error", f"{type(exc).__name__}: {exc}"
        event(log, logging.ERROR, "internal-error", exc_info=True, mailbox=mailbox.name, message=msg.message_id,
              action="quarantined; inboxcrm quarantine retry runs it again after a fix")
    store.quarantine(msg, reason, detail, data)
    return Outcome("quarantined", reason, detail, msg.id)


def _record(store: Store, msg: StoredMessage, email: Email, data: bytes, mailbox: MailboxInfo, ctx: Context,
            force_create: bool, folder: str) -> Outcome:
    decision = decide(email, mailbox, ctx, store, force_create=force_create, folder=folder)
    if ctx.forgotten is not None:
        store.flush_group()  # the forgotten person's mail may be dropped with its rows, bytes included
        if (kept := forgotten_mail(store.conn, store.now, msg.id, msg.message_id, email, decision,
                                   ctx.forgotten)) is not None:
            return Outcome(*kept)  # a forgotten person's mail: only the fact that it came is kept
    deal_id = store.apply(msg, email, decision, mailbox, ctx)
    bounces.after_message(store, msg, email, data, decision, ctx)  # a bounce marks, a person's mail clears
    if decision.verdict is not None:
        store.flush_group()  # commands read the records through the ORM
        return _run_commands(store, msg, email, decision, ctx, mailbox)
    return Outcome(decision.status, decision.reason, decision.detail, msg.id, f"D-{deal_id}" if deal_id else None)


class Group:
    """The messages of one commit group, each atomic without a savepoint each.

    A SAVEPOINT and a RELEASE per message were a fifth of the import's time on PostgreSQL. Here
    the group opens one savepoint. When a message's interpretation fails (a bug in decide or
    apply, which may leave half its records), the group rolls back to that savepoint and runs its
    messages so far again, each in its own savepoint as ``process`` alone does: the failing one is
    quarantined with its reason and the others are recorded once. The rest of the group keeps a
    savepoint each. What the pass remembers beside the database (the addresses marked bouncing)
    goes back with the rollback. Rows nobody reads before the commit wait in ``rows`` and are
    written together by ``finish``, which the caller runs before writing its own position in the
    same transaction."""

    def __init__(self, session: Session, mailbox: MailboxInfo, ctx: Context, keep_raw: bool = True):
        self.session, self.mailbox, self.ctx, self.keep_raw = session, mailbox, ctx, keep_raw
        self.rows = GroupRows()
        self.outcomes: list[Outcome] = []
        self.replayed = False
        self._messages: list[tuple[RawMessage, Prepared | None, datetime]] = []
        self._bouncing = set(ctx.bouncing)
        self._savepoint = session.connection().begin_nested()

    def process(self, raw: RawMessage, prepared: Prepared | None, now: datetime) -> Outcome:
        self._messages.append((raw, prepared, now))
        if self.replayed:
            outcome = process(self.session, raw, self.mailbox, self.ctx, now, self.keep_raw, prepared)
        else:
            try:
                outcome = process(self.session, raw, self.mailbox, self.ctx, now, self.keep_raw, prepared, self.rows)
            except DATABASE_FAILURES:
                raise
            except Exception:  # noqa: BLE001 - replayed a savepoint each: the failing message is quarantined
                self._replay()
                return self.outcomes[-1]
        self.outcomes.append(outcome)
        return outcome

    def _replay(self) -> None:
        self._savepoint.rollback()
        self.session.expunge_all()  # ORM objects a command wrote in the rolled back part are gone
        self.rows.clear()
        self.ctx.bouncing.clear()
        self.ctx.bouncing.update(self._bouncing)
        self.replayed = True
        self.outcomes = [process(self.session, raw, self.mailbox, self.ctx, now, self.keep_raw, prepared)
                         for raw, prepared, now in self._messages]

    def finish(self) -> list[tuple[RawMessage, Outcome]]:
        """Writes the waiting rows; returns each message (without its bytes) with its outcome."""
        self.rows.flush(self.session.connection())
        if not self.replayed:
            self._savepoint.commit()
        done = [(replace(raw, data=b""), outcome) for (raw, _, _), outcome in zip(self._messages, self.outcomes)]
        self._messages.clear()
        return done


def _run_commands(store: Store, msg: StoredMessage, email: Email, decision: Decision, ctx: Context,
                  mailbox: MailboxInfo) -> Outcome:
    """A command email (obeyed or refused): the commands run, the message keeps their outcome."""
    result = run_commands(store.session, store.now, msg.id, msg.message_id, email, decision, ctx)
    if result.reason != decision.reason:
        store.update_message(msg.id, reason=result.reason, detail=result.detail)
    ref = f"D-{result.deals[0]}" if result.deals else None
    event(log, logging.INFO if decision.status == "command" else logging.WARNING, "command", mailbox=mailbox.name,
          message=msg.message_id, sender=email.from_.email if email.from_ else "", status=decision.status,
          reason=result.reason, deals=",".join(f"D-{d}" for d in result.deals) or None, answered=result.answered)
    return Outcome(decision.status, result.reason, result.detail, msg.id, ref)


def _where_first_seen(session: Session, row: Message) -> tuple[MailboxInfo, str]:
    """The mailbox and folder a stored message is re-run as: where it was seen first."""
    if not row.copies:  # in the order they were stored
        raise Invalid(f"message {row.id} has no recorded mailbox copy to re-run it from")
    copy = row.copies[0]
    return mailbox_info(session, copy.mailbox.name), copy.folder


def _stored_message(session: Session, pk: int, statuses: tuple[str, ...]) -> Message:
    row = session.get(Message, pk)
    if row is None or row.status not in statuses:
        raise NotFound(f"no message {pk} with status {' or '.join(statuses)}")
    if row.raw is None:
        raise Invalid(f"message {pk} was stored without its raw bytes (pipeline.store_raw = false)")
    return row


def _decide_again(factory: sessionmaker[Session], config, pk: int, statuses: tuple[str, ...],
                  now: Clock, force_create: bool, actor: str, action: str) -> Outcome:
    """A stored message through the intake once more (a retry, an accepted review), audited."""
    with transaction(factory) as session:
        row = _stored_message(session, pk, statuses)
        if force_create and row.reason == "form-without-prospect":
            raise Invalid(f"message {pk} is a web-form notification that names no prospect, so there is no "
                          f'lead to accept; add it by hand with "inboxcrm lead add --email ADDRESS", then '
                          f'"inboxcrm held reject {pk}"')
        ctx = context_for(session, config)
        msg = StoredMessage(row.id, row.message_id, row.status, row.deal_id, row.reason)
        mailbox, folder = _where_first_seen(session, row)
        outcome = decide_and_record(Store(session, now()), msg, row.raw, mailbox, ctx, force_create, folder=folder)
        audit.write(session, now(), actor, action, "message", pk, f"message <{row.message_id}>",
                    status=outcome.status, reason=outcome.reason)
        return outcome


def reprocess(factory: sessionmaker[Session], config, message_pk: int, actor: str = "cli",
              now: Clock = utcnow) -> Outcome:
    """Re-run a quarantined message (after a fix) through the whole intake."""
    return _decide_again(factory, config, message_pk, ("quarantined",), now, False, actor, "retry")


def accept_review(factory: sessionmaker[Session], config, message_pk: int, actor: str = "cli",
                  now: Clock = utcnow) -> Outcome:
    """A rep accepts a held sender: the message is re-run as if the mailbox created leads."""
    return _decide_again(factory, config, message_pk, ("held",), now, True, actor, "review-accept")


def reject_review(factory: sessionmaker[Session], config, message_pk: int, actor: str = "cli",
                  now: Clock = utcnow) -> Outcome:
    """Reject a held sender: the message stays stored, later mail from them is ignored."""
    with transaction(factory) as session:
        row = _stored_message(session, message_pk, ("held",))
        new_sender = row.reason == "policy-review"  # a form service's address is no sender to block
        row.status, row.reason = "rejected", "review-rejected"
        if new_sender:
            intake_queries.reject_sender(session, row.from_address, now(), actor)
        audit.write(session, now(), actor, "review-reject", "message", message_pk, f"message <{row.message_id}>",
                    sender=row.from_address)
        later = f"later mail from {row.from_address} is ignored" if new_sender else "the notification stays stored"
        return Outcome("rejected", "review-rejected", later, row.id)


def explain(factory: sessionmaker[Session], config, raw: bytes, mailbox: str | None = None,
            now: Clock = utcnow) -> list[Explanation]:
    """Why a message went (or would go) where it did: every rule, fired or not. Writes nothing.

    For a message already stored, the first line says what was recorded when it arrived, and
    the rest what the rules and records of today would decide."""
    message_id = identify(raw)[0]
    lines: list[Explanation] = []
    folder = ""
    with factory() as session:
        stored = message_by_message_id(session, message_id)
        if stored is not None:
            deal = f", deal D-{stored.deal_id}" if stored.deal_id else ""
            lines.append(Explanation("recorded", stored.status, True, f"{stored.reason}: {stored.detail}{deal}"))
            if mailbox is None and stored.copies:
                mailbox, folder = stored.copies[0].mailbox.name, stored.copies[0].folder
        if mailbox is None:
            mailbox = intake_queries.first_mailbox_name(session) or ""
        info = mailbox_info(session, mailbox) or MailboxInfo(0, mailbox or "(none)", "capture", None, "email", "create")
        ctx = context_for(session, config)
        try:
            email = parse(raw, message_id)
        except ParseError as exc:
            return [*lines, Explanation("parse", exc.reason, True, f"would be quarantined: {exc.detail}")]
        decision = decide(email, info, ctx, Store(session, now()), explain=True, folder=folder)
        session.rollback()
    return [*lines, *decision.explanations,
            Explanation("outcome", decision.status, True, f"{decision.reason}: {decision.detail}")]
