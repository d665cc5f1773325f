"""The one loader of a pass's Context: reps, team, stages, rules, and the command gate as values.

``decide`` stays pure by getting all of this in its Context. Every pass (an import run, a poll,
a re-run, ``rule explain``) builds it here once and never reloads it; the store only hands over
rows. The reply-token key is read here and nowhere else, so no token ever needs to be stored.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from inboxcrm.app.forget import forgotten_for
from inboxcrm.app.outbox import sender_address
from inboxcrm.app.team import audit, find_rep
from inboxcrm.config import Config
from inboxcrm.core.business_time import rep_timezone
from inboxcrm.core.classify import TeamContext
from inboxcrm.core.decide import CommandSettings, Context
from inboxcrm.core.sender_gate import Gate
from inboxcrm.mail.reply_token import load_key, reply_address, token_for
from inboxcrm.store import bounce_queries, records, team_queries
from inboxcrm.store.db import Session
from inboxcrm.store.mailbox_state import has_commands_mailbox
from inboxcrm.store.models import Rep


def context_for(session: Session, config: Config) -> Context:
    """What every decision of one pass needs: reps, rules, stages, and the command gate."""
    rep_by_address = records.active_rep_addresses(session)
    team = TeamContext(team_domains=frozenset(config.team.domains), rep_addresses=frozenset(rep_by_address))
    ctx = Context(team=team, rep_by_address=rep_by_address, rules=team_queries.load_rule_specs(session),
                  freemail=frozenset(config.team.freemail_domains), rep_ids=records.rep_ids(session),
                  stages=records.stage_rows(session), forgotten=forgotten_for(session, config),
                  bouncing=bounce_queries.bouncing_addresses(session))
    return replace(ctx, commands=_command_settings(session, config, ctx))


def _command_settings(session: Session, config: Config, ctx: Context) -> CommandSettings | None:
    """None when commands by email are off: no command address and no commands mailbox."""
    address = config.commands.address
    has_mailbox = has_commands_mailbox(session)
    if not address and not has_mailbox:
        return None
    key = load_key(Path(config.commands.token_key_file))
    reps = records.command_reps(session)
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
    generation = records.token_generation(session, rep_id)
    return reply_address(address, token_for(load_key(Path(config.commands.token_key_file)), rep_id, generation))


def rotate_token(session: Session, now, actor: str, name: str) -> Rep:
    """A new token for the rep: replies to mail sent before stop being obeyed (a leaked
    digest, a rep who left and came back)."""
    rep = find_rep(session, name)
    rep.command_token_generation += 1
    audit(session, now, actor, "rotate-token", "rep", rep.id, generation=rep.command_token_generation)
    return rep
