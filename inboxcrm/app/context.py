"""The command gate as values: who the reps are, their reply tokens, which servers we trust.

``decide`` stays pure by getting all of this in its Context. It is read once per import run or
poll (like the reps and rules), and the reply-token key is read here and nowhere else, so no
token ever needs to be stored.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from inboxcrm.app.outbox import sender_address
from inboxcrm.app.team import audit, find_rep
from inboxcrm.config import Config
from inboxcrm.core.business_time import rep_timezone
from inboxcrm.core.decide import CommandSettings, Context
from inboxcrm.core.sender_gate import Gate
from inboxcrm.mail.reply_token import load_key, reply_address, token_for
from inboxcrm.store.models import Mailbox, Rep
from inboxcrm.store.records import load_context


def context_for(session: Session, config: Config) -> Context:
    """What every decision of one run needs: reps, rules, stages, and the command gate."""
    ctx = load_context(session, config.team.domains, config.team.freemail_domains)
    return replace(ctx, commands=command_settings(session, config, ctx))


def has_commands_mailbox(session: Session) -> bool:
    return session.scalar(select(Mailbox.id).where(Mailbox.role == "commands").limit(1)) is not None


def command_settings(session: Session, config: Config, ctx: Context) -> CommandSettings | None:
    """None when commands by email are off: no command address and no commands mailbox."""
    address = config.commands.address
    has_mailbox = has_commands_mailbox(session)
    if not address and not has_mailbox:
        return None
    key = load_key(Path(config.commands.token_key_file))
    reps = session.execute(select(Rep.id, Rep.name, Rep.command_token_generation, Rep.timezone)
                           .where(Rep.active.is_(True))).all()
    tokens = {name: token_for(key, rep_id, generation) for rep_id, name, generation, _ in reps}
    ours = sender_address(config)  # the smtp from_address when set
    cfg = config.commands
    gate = Gate(team=ctx.team, rep_by_address=ctx.rep_by_address, tokens=tokens,
                command_addresses=frozenset(filter(None, (address,))), own_addresses=frozenset({ours}),
                trusted_authserv_ids=frozenset(cfg.trusted_authserv_ids),
                auth_required=cfg.authentication_required, token_required=cfg.token_required,
                address_only=cfg.proof == "address-only", proof_text=cfg.describe(), burst_limit=cfg.burst_limit,
                burst_window_minutes=cfg.burst_minutes)
    return CommandSettings(
        gate=gate, has_commands_mailbox=has_mailbox, answers_per_hour=cfg.answers_per_hour,
        from_address=ours,
        reply_addresses={name: reply_address(address, token) for name, token in tokens.items()} if address else {},
        rep_zones={name: rep_timezone(zone, config.team.timezone) for _, name, _, zone in reps})


def rep_reply_address(session: Session, config: Config, rep_id: int) -> str | None:
    """The command address with the rep's token: the Reply-To of everything we send the rep, so
    their answers prove they are answering mail we sent them. None without a command address."""
    address = config.commands.address
    if not address:
        return None
    generation = session.scalar(select(Rep.command_token_generation).where(Rep.id == rep_id)) or 0
    return reply_address(address, token_for(load_key(Path(config.commands.token_key_file)), rep_id, generation))


def rotate_token(session: Session, now, actor: str, name: str) -> Rep:
    """A new token for the rep: replies to mail sent before stop being obeyed (a leaked
    digest, a rep who left and came back)."""
    rep = find_rep(session, name)
    rep.command_token_generation += 1
    audit(session, now, actor, "rotate-token", "rep", rep.id, generation=rep.command_token_generation)
    return rep
