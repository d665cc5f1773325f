"""``contact forget``: erase a person on request; and the retention sweep of old raw bytes.

What goes: the contact's name and addresses, their mail (bytes, subjects, senders, Message-IDs,
attachments in every mailbox copy), the notes and flags that name them, their own company when it
is only them, and every mention of them anywhere else (audit log, stage history, outbox, other
mail's bytes). What stays is what the reports count: the deals with their stages, values, dates,
owner and source, and the message rows' dates and directions, all pointing at the contact row,
which is kept as an anonymous "(forgotten)" placeholder so no foreign key moves and no report
loses a deal. The address itself stays only as a keyed hash (``core.forget.address_hash``) with
what later mail from it does; the key is a file beside the reply-token key, ``forget.key``,
kept apart from it so that renewing reply tokens (deleting that key) never makes forgotten
people's mail unrecognisable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from inboxcrm.app.outbox import sender_address
from inboxcrm.app.team import audit, normalize_address
from inboxcrm.config import Config
from inboxcrm.core.forget import (
    FORGOTTEN_DETAIL,
    FORGOTTEN_REASON,
    PLACEHOLDER,
    THEN,
    Forgotten,
    Redactor,
    address_hash,
    company_is_theirs,
    erased_mail,
    hashed_location,
    hashed_message_id,
    name_words,
    terms,
)
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.mail.reply_token import load_key
from inboxcrm.store import forget_queries as queries
from inboxcrm.store.db import Session, sessionmaker, transaction
from inboxcrm.values import Email

KEY_FILE = "forget.key"
RETENTION_ACTOR = "retention"

# Where a person can still be mentioned once their own rows are erased: table -> column -> how it is
# cleaned ("text": mentions replaced; "json": every string in it; "message-id" and "location":
# replaced by a keyed hash, since they must stay unique; "labels": the labels naming them dropped).
MENTIONS: dict[str, dict[str, str]] = {
    "messages": {"subject": "text", "detail": "text", "message_id": "message-id"},
    "deals": {"title": "text", "next_step": "text", "lost_reason": "text", "source": "text"},
    "contacts": {"source": "text"},
    "deal_flags": {"detail": "text"},
    "notes": {"text": "text"},
    "stage_history": {"reason": "text"},
    "audit_log": {"reason": "text", "detail": "json"},
    "merges": {"undo": "json"},
    "message_copies": {"folder": "text", "location": "location", "gmail_labels": "labels"},
    "outbox": {"subject": "text"},
}


@dataclass(frozen=True)
class ForgetSummary:
    """What was (or, in a preview, would be) erased. ``name`` and ``addresses`` are for the person
    running the command to check; they are never written anywhere."""

    name: str
    addresses: tuple[str, ...]
    then: str
    deals: int = 0
    messages: int = 0
    raw_dropped: int = 0
    notes_deleted: int = 0
    flags_deleted: int = 0
    outbox_dropped: int = 0
    outbox_erased: int = 0
    company_erased: bool = False
    redacted: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """The audit entry's detail: how much, never what."""
        return dict(addresses=len(self.addresses), deals=self.deals, messages=self.messages,
                    raw_dropped=self.raw_dropped, notes_deleted=self.notes_deleted,
                    flags_deleted=self.flags_deleted, outbox_dropped=self.outbox_dropped,
                    outbox_erased=self.outbox_erased, company_erased=int(self.company_erased),
                    **{f"redacted_{table}": n for table, n in sorted(self.redacted.items())})


def key_path(config: Config) -> Path:
    return Path(config.commands.token_key_file).with_name(KEY_FILE)


def forget_key(config: Config) -> bytes:
    """The forget key, created 0600 on first use like the reply-token key (same loader). Losing it
    makes every forgotten address unrecognisable: back it up with the database."""
    return load_key(key_path(config), kind=FORGET_KEY)


FORGET_KEY = ("forget key", "addresses forgotten before are no longer recognised: their later mail is handled "
                            "like anyone's")


def forgotten_for(session: Session, config: Config) -> Forgotten | None:
    """For a pass's Context: None while nobody was forgotten (and no key file is made then)."""
    hashes = queries.forgotten_hashes(session)
    return Forgotten(forget_key(config), hashes) if hashes else None


def forget(session: Session, config: Config, now: datetime, actor: str, address: str,
           then: str | None = None) -> ForgetSummary:
    """Erase the person who has ``address`` (with all their addresses) in this transaction."""
    address = normalize_address(address)
    then = then or config.retention.forgotten_mail
    if then not in THEN:
        raise Invalid(f'unknown choice "{then}" for what later mail from the address does; expected one of: '
                      f'{", ".join(THEN)}')
    key = forget_key(config)
    contact = queries.contact_by_address(session, address)
    contact_id = contact.id if contact is not None else None
    addresses = tuple(a.address for a in contact.addresses) if contact is not None else (address,)
    name = contact.name if contact is not None else ""
    deals = queries.deals_of(session, contact_id)
    messages = queries.messages_of(session, contact_id, [d.id for d in deals], addresses)
    rejected = queries.delete_rejected(session, addresses)
    if contact is None and not messages and not rejected:
        raise NotFound(f'no contact, message or rejected sender has the address {address}; nothing to forget '
                       f'(check the spelling with "inboxcrm contacts list")')
    shared = {w for other in queries.other_people_names(session, contact_id) for w in name_words(other)}
    new_ids = {m.message_id: hashed_message_id(key, m.message_id) for m in messages}
    redactor = Redactor(terms(addresses, name, shared), new_ids)

    company_erased = False
    if contact is not None:
        company = contact.company
        if company is not None and company_is_theirs(company.domain, company.name, queries.others_at_company(
                session, company.id, contact_id), redactor):
            queries.erase_company(session, company)
            company_erased = True
        queries.delete_addresses(session, contact_id)
        session.expire(contact, ["addresses", "company"])
        contact.name = PLACEHOLDER
    for deal in deals:
        deal.title = PLACEHOLDER
    message_pks = [m.id for m in messages]
    for m in messages:
        m.message_id, m.subject, m.from_address = new_ids[m.message_id], "", ""
    for copy in queries.copies_of(session, message_pks):
        copy.location = hashed_location(key, copy.location)
    session.flush()
    raw_dropped = queries.drop_raw(session, message_pks)
    others = [pk for batch in queries.raw_batches(session) for pk, data in batch if redactor.names_bytes(data)]
    raw_dropped += queries.drop_raw(session, others)

    notes_deleted = 0
    for note in queries.notes_on(session, [d.id for d in deals]):
        if redactor.names(note.text):
            session.delete(note)
            notes_deleted += 1
    flags_deleted = 0
    for flag in queries.all_flags(session):
        if redactor.names(flag.detail):
            session.delete(flag)
            flags_deleted += 1
    outbox_dropped, outbox_erased = _clean_outbox(session, config, redactor)
    session.flush()
    redacted = _redact_mentions(session, key, redactor)
    for hashed in {address_hash(key, a) for a in addresses}:
        queries.remember(session, hashed, then, now)
    summary = ForgetSummary(name=name, addresses=addresses, then=then, deals=len(deals), messages=len(messages),
                            raw_dropped=raw_dropped, notes_deleted=notes_deleted, flags_deleted=flags_deleted,
                            outbox_dropped=outbox_dropped, outbox_erased=outbox_erased,
                            company_erased=company_erased, redacted=redacted)
    audit(session, now, actor, "forget", "contact", contact_id, "a person erased on request", then=then,
          **summary.counts())
    return summary


def preview(factory: sessionmaker[Session], config: Config, now: datetime, actor: str, address: str,
            then: str | None = None) -> ForgetSummary:
    """What ``forget`` would erase: the same function, rolled back, so the preview cannot differ."""
    with factory() as session:
        try:
            return forget(session, config, now, actor, address, then)
        finally:
            session.rollback()


def _clean_outbox(session: Session, config: Config, redactor: Redactor) -> tuple[int, int]:
    """Mail not sent yet that names them is dropped (a digest is built again, without them, at the
    next round); mail that went out keeps its envelope and a body saying it was erased."""
    dropped = erased = 0
    for row in list(queries.outbox_rows(session)):
        if not (redactor.names(row.subject) or redactor.names_bytes(row.body)):
            continue
        if row.status == "pending":
            session.delete(row)
            dropped += 1
        else:
            row.subject = redactor.redact(row.subject)
            row.body = erased_mail(row.subject, row.message_id, row.to_address, sender_address(config))
            erased += 1
    return dropped, erased


def _redact_mentions(session: Session, key: bytes, redactor: Redactor) -> dict[str, int]:
    """Every remaining mention, in every table where text about people is kept."""
    changed: dict[str, int] = {}
    for table, columns in MENTIONS.items():
        names = list(columns)
        for pk, *values in queries.table_rows(session, table, names):
            new = {}
            for column, value in zip(names, values):
                cleaned = _clean(columns[column], value, key, redactor)
                if cleaned != value:
                    new[column] = cleaned
            if new:
                queries.update_row(session, table, pk, new)
                changed[table] = changed.get(table, 0) + 1
    return changed


def _clean(how: str, value, key: bytes, redactor: Redactor):
    if value is None:
        return None
    if how == "json":
        return redactor.redact_json(value)
    if how == "labels":
        return [label for label in value if not redactor.names(str(label))]
    if not redactor.names(value):
        return value
    if how == "message-id":
        return hashed_message_id(key, value)
    if how == "location":
        return hashed_location(key, value)
    return redactor.redact(value)


# -- the intake: mail from a forgotten address ----------------------------------------------

def forgotten_mail(conn, now: datetime, pk: int, message_id: str, email: Email, decision,
                   forgotten: Forgotten) -> tuple[str, str, str, int] | None:
    """(status, reason, detail, message pk) when mail from or to a forgotten address was dealt
    with here; None to record it as usual (not theirs, or a new lead as the admin chose).

    Mail erased before that arrives again (a re-import, a folder read anew) is dropped whatever
    was chosen: choosing "new-lead" welcomes new mail, it does not bring the erased back. Ignored
    mail keeps only the fact: hashed Message-ID and locations (so a copy arriving again is
    recognised), size, when it came, the reason; no bytes, subject, sender or date sent."""
    sender = email.from_.email if email.from_ else None
    prospect = decision.match.prospect.email if decision.match is not None and decision.match.prospect else None
    if forgotten.then_for(sender) is None and forgotten.then_for(prospect) is None:
        return None
    hashed = hashed_message_id(forgotten.key, message_id)
    earlier = queries.message_with_id(conn, hashed)
    if earlier is not None and earlier != pk:
        queries.drop_message(conn, pk)
        return "duplicate", FORGOTTEN_REASON, "erased earlier on request; not stored again", earlier
    if decision.reason != FORGOTTEN_REASON:
        return None
    locations = {copy: hashed_location(forgotten.key, where) for copy, where in queries.copy_locations(conn, pk).items()}
    queries.keep_only_the_fact(conn, pk, dict(
        message_id=hashed, subject="", from_address="", sha256="", sent_at=None, status="ignored",
        reason=FORGOTTEN_REASON, detail=FORGOTTEN_DETAIL, kind=None, direction=decision.direction,
        contact_id=None, deal_id=None, processed_at=now), locations)
    return "ignored", FORGOTTEN_REASON, FORGOTTEN_DETAIL, pk


# -- retention ------------------------------------------------------------------------------

def drop_old_raw(session: Session, now: datetime, days: int) -> int:
    """Raw bytes of messages received more than ``days`` ago; their records stay (a message so old
    can no longer be re-run, retried or accepted from review)."""
    if days < 1:
        raise Invalid(f"retention of {days} days; expected a number of days of 1 or more")
    dropped = queries.drop_raw_received_before(session, now - timedelta(days=days))
    if dropped:
        audit(session, now, RETENTION_ACTOR, "drop-raw", "message", None, f"[retention] raw_days = {days}",
              dropped=dropped)
    return dropped


def run_retention(factory: sessionmaker[Session], config: Config, now: datetime, days: int | None = None) -> int | None:
    """The daily sweep (the daemon) and ``retention run``: None when ``[retention] raw_days`` is unset."""
    days = days if days is not None else config.retention.raw_days
    if days is None:
        return None
    with transaction(factory) as session:
        return drop_old_raw(session, now, days)
