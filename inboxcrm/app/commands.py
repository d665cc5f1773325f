"""Carrying out a command email: the changes it asks for, all or nothing, and one answer.

``decide`` already said whether the sender may command (the gate). This module reads what the
email asks (``commands``), checks it against the records, applies it through the same ``deals``
functions the CLI uses, and queues exactly one answer in the outbox under ``reply:<message>``:
what changed, or what was wrong and the valid form. It runs inside the message's own
transaction, so the changes, the answer and the message's status commit together or not at all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from inboxcrm.app import deals, outbox
from inboxcrm.app.team import audit
from inboxcrm.core import verbs
from inboxcrm.core.decide import Context, Decision
from inboxcrm.core.forwards import Forwarded, forwarded, is_forward
from inboxcrm.core.verbs import Change, CommandError, StageChoice
from inboxcrm.errors import InboxCRMError
from inboxcrm.logs import event
from inboxcrm.store import deal_queries as queries
from inboxcrm.store.db import Session
from inboxcrm.values import Email

log = logging.getLogger(__name__)

REFUSALS_ANSWERED = {
    "refused-unproven": "Nothing was changed: this email did not prove that it came from you.",
    "refused-token": ("Nothing was changed: this email answers mail inboxcrm sent you, but its reply address "
                      "did not carry your current reply token (it may be an old digest, or someone else's)."),
    "refused-burst": ("Nothing was changed: too many command emails came from your address in a short time, "
                      "so inboxcrm stopped obeying them for now. If that was not you, tell your admin."),
}
RETRY_AFTER = ("refused-unproven", "refused-token")  # refusals the rep can put right by sending it again


def _how_to_retry(ctx: Context, rep: str) -> str:
    """What this team's [commands] proof accepts, and the rep's personal command address when the
    token is (part of) it: the answer goes to the rep's stored address only, so it may carry it."""
    settings = ctx.commands
    gate, address = settings.gate, settings.reply_addresses.get(rep)
    lines = [f"Here, {gate.proof_text}.", ""]
    if address and not (gate.auth_required and not gate.token_required):
        also = " from your own mailbox" if gate.auth_required else ""
        lines += [f"To retry, send the same commands{also} to your personal command address:", "", f"  {address}", "",
                  "Replying to this email or to your digest does that. Keep the address to yourself: "
                  "mail to it counts as coming from you."]
    else:
        lines += ["To retry, send the same commands from your own mailbox, through the team's mail server."]
    return "\n".join(lines)


@dataclass(frozen=True)
class Result:
    """What became of a command email: the message's reason code and the answer queued, if any."""

    reason: str  # command-applied | command-invalid | command-empty | a refusal code
    detail: str
    answered: bool
    deals: tuple[int, ...] = ()


def _rep_addresses(ctx: Context) -> dict[str, list[str]]:
    by_rep: dict[str, list[str]] = {}
    for address, name in ctx.rep_by_address.items():
        by_rep.setdefault(name, []).append(address)
    return by_rep


def _lead_for(session: Session, now: datetime, rep: str, original: Forwarded, ctx: Context,
              why: str) -> tuple[int, str]:
    """The deal a forwarded prospect email belongs to: the sender's open deal, else a new lead
    owned by the rep who forwarded it. Returns (deal id, what was done)."""
    sender = original.sender
    open_deal = queries.latest_open_deal_of(session, sender.email)
    if open_deal is not None:
        done = f"D-{open_deal}: {sender.email} already had this open deal; the forward is added as a note"
        deal_id = open_deal
    else:
        lead = deals.add_lead(session, now, rep, sender.email, name=sender.name, owner=rep, source="forwarded",
                              team_domains=ctx.team.team_domains, freemail_extra=ctx.freemail)
        deal_id = deals.parse_ref(lead.ref)
        done = f"{lead.ref}: new lead {sender} owned by {rep}" + (f" at {lead.company}" if lead.company else "")
    note = f"Forwarded by {rep}: {original.subject or '(no subject)'}"
    if original.date_text:
        note += f" (sent {original.date_text})"
    deals.add_note(session, now, rep, f"D-{deal_id}", note)
    audit(session, now, rep, "command", "deal", deal_id, why, command="forward", sender=sender.email)
    return deal_id, done


def _deal_of_thread(session: Session, email: Email) -> int | None:
    """A reply to a nudge or to one of our answers is about that mail's deal, so its lines need
    no [D-42] tag."""
    return queries.deal_of_our_mail(session, email.thread_ids)


def _apply(session: Session, now: datetime, rep: str, change: Change, today) -> deals.DealChange:
    """The change through the deals function its verb names, as the CLI makes it."""
    verb = verbs.VERB[change.verb]
    return getattr(deals, verb.applies)(session, now, rep, f"D-{change.deal}", **verb.arguments(change, today))


def _missing_deals(session: Session, parsed: verbs.Parsed) -> list[CommandError]:
    """Every command naming a deal that does not exist, even when other lines are wrong too:
    the answer lists all problems at once."""
    wanted = {c.deal for c in parsed.commands if c.deal is not None}
    found = queries.existing_deal_ids(session, wanted)
    return [CommandError(c.where, c.text, f"there is no deal D-{c.deal}; check the number in the digest "
                                           f'or with "inboxcrm deals list"')
            for c in parsed.commands if c.deal is not None and c.deal not in found]


def run_commands(session: Session, now: datetime, message_pk: int, message_id: str, email: Email,
                 decision: Decision, ctx: Context) -> Result:
    """Carries out (or answers the refusal of) one command email; in the caller's transaction."""
    verdict = decision.verdict
    rep = verdict.rep
    if decision.status == "refused":
        answered = False
        if verdict.answer and rep and verdict.reason in REFUSALS_ANSWERED:
            text = REFUSALS_ANSWERED[verdict.reason]
            if verdict.reason in RETRY_AFTER:
                text += "\n\n" + _how_to_retry(ctx, rep)
            answered = _answer(session, now, message_pk, message_id, email, ctx, rep, "inboxcrm: not obeyed", text, [])
        return Result(verdict.reason, verdict.detail, answered)

    why = f"message <{message_id}>"
    today = now.astimezone(ctx.commands.rep_zones.get(rep, timezone.utc)).date()  # the rep's today
    errors: list[CommandError] = []
    done: list[str] = []
    touched: list[int] = []
    body, default_deal = email.text, _deal_of_thread(session, email)
    savepoint = session.begin_nested()
    try:
        # "Fwd: [D-42] ..." is about D-42; an untagged forward brings a prospect's email.
        a_forward = is_forward(email.subject) and verbs.subject_tag(email.subject) is None
        original = forwarded(email) if a_forward else None
        if a_forward and original is None:
            errors.append(CommandError("forward", email.subject, "this looks like a forward, but the original "
                                       "sender's address was not found in it; forward the email inline (not as an "
                                       "attachment), or add the lead with [D-n] commands once it exists"))
        elif original is not None:
            if original.sender.domain in ctx.team.team_domains:
                errors.append(CommandError("forward", str(original.sender),
                                           f"the forwarded email is from {original.sender.email}, a team address; "
                                           f"only a prospect's email makes a lead"))
            else:
                default_deal, what = _lead_for(session, now, rep, original, ctx, why)
                done.append(what)
                touched.append(default_deal)
                body = original.intro
        parsed = verbs.parse(email.subject, body, default_deal=default_deal)
        stages = [StageChoice(name, kind) for _, name, kind in ctx.stages]
        changes, problems = verbs.plan(parsed, stages, _rep_addresses(ctx), today)
        errors.extend(problems)
        errors.extend(_missing_deals(session, parsed))
        if not errors and not changes and original is None:
            savepoint.rollback()
            text = ("Nothing was changed: inboxcrm found no command in your email. Commands go in the subject "
                    "or on the first lines of the body, one per line:\n\n" + verbs.FORMS)
            answered = _answer(session, now, message_pk, message_id, email, ctx, rep, "inboxcrm: no command found",
                               text, [])
            return Result("command-empty", "no command found", answered)
        if not errors:
            for change in changes:
                try:
                    result = _apply(session, now, rep, change, today)
                except InboxCRMError as refused:
                    errors.append(CommandError(change.where, change.text, str(refused)))
                    break
                audit(session, now, rep, "command", "deal", change.deal, why, command=change.text,
                      field=result.field, old=result.old, new=result.new)
                was = f" (was {result.old})" if result.old and result.field != "note" else ""
                done.append(verbs.describe(change) + was)
                touched.append(change.deal)
        if errors:
            savepoint.rollback()
        else:
            savepoint.commit()
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    if errors:
        problems = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
        answered = _answer(session, now, message_pk, message_id, email, ctx, rep,
                           f"inboxcrm: nothing changed ({problems})", _errors_text(errors), [])
        detail = "; ".join(f"{e.where}: {e.problem}" for e in errors)
        return Result("command-invalid", detail[:2000], answered)
    text = "Done:\n\n" + "\n".join(f"  {line}" for line in done)
    refs = ", ".join(f"D-{d}" for d in dict.fromkeys(touched))
    answered = _answer(session, now, message_pk, message_id, email, ctx, rep, f"inboxcrm: done ({refs})", text,
                       touched)
    return Result("command-applied", "; ".join(done)[:2000], answered, tuple(dict.fromkeys(touched)))


def _errors_text(errors: list[CommandError]) -> str:
    count = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
    lines = [f"Nothing was changed: your email had {count}, and commands apply all or nothing.", ""]
    for error in errors:
        lines += [f"  {error.where}: {error.text}", f"    {error.problem}", ""]
    return "\n".join(lines + ["Valid commands, one per line in the subject or at the top of the body:", "",
                              verbs.FORMS])


def _answer(session: Session, now: datetime, message_pk: int, message_id: str, email: Email, ctx: Context, rep: str,
            subject: str, text: str, touched: list[int]) -> bool:
    """One answer per command email (its key is the email's), to the rep's own address as our
    records have it, never to a Reply-To the email chose; at most answers_per_hour per rep.

    The subject is ours, not "Re: [D-42] note: ...": a reply to the answer must not carry the
    command again. In-Reply-To keeps it in the thread."""
    settings = ctx.commands
    rep_id = ctx.rep_ids.get(rep)
    to_address = email.from_.email  # the gate passed: this is the rep's address in our records
    sent_lately = queries.answers_since(session, rep_id, now - timedelta(hours=1))
    if sent_lately >= settings.answers_per_hour:
        event(log, logging.WARNING, "command-answer-withheld", rep=rep, message=message_id,
              limit=settings.answers_per_hour, action="the command was handled; no answer is sent")
        return False
    greeting = f"Hi {rep},\n\n"
    footer = "\n\n-- \ninboxcrm (this answer was written by a program; reply with more commands if you like)\n"
    return outbox.enqueue(session, now, key=f"reply:{message_pk}", kind="reply", to_address=to_address,
                          subject=subject, text=greeting + text + footer, rep_id=rep_id,
                          deal_id=touched[0] if len(set(touched)) == 1 else None,
                          reply_to=settings.reply_addresses.get(rep), from_address=settings.from_address,
                          in_reply_to=message_id)


