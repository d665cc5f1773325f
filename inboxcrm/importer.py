"""``inboxcrm import``: feed a local file, folder, mbox or Maildir through the pipeline.

One transaction per message, so an interrupted import resumes where it stopped: copies
already stored are recognised by mailbox and location and change nothing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from .db import transaction
from .errors import NotFound
from .models import Mailbox
from .pipeline import Clock, Outcome, process, utcnow
from .sources.local import iter_messages
from .store import load_context, mailbox_info
from sqlalchemy import select


@dataclass
class ImportReport:
    total: int = 0
    counts: Counter = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)


def resolve_mailbox(session: Session, name: str):
    info = mailbox_info(session, name)
    if info is None:
        names = ", ".join(session.scalars(select(Mailbox.name).order_by(Mailbox.name))) or "none yet"
        raise NotFound(f'unknown mailbox "{name}"; mailboxes are: {names} '
                       f'(add one with "inboxcrm mailbox add")')
    return info


def import_path(factory: sessionmaker[Session], config, mailbox: str, path: Path,
                since: datetime | None = None, progress: Callable[[int], None] | None = None,
                now: Clock = utcnow, keep_outcomes: bool = False) -> ImportReport:
    with factory() as session:
        info = resolve_mailbox(session, mailbox)
        ctx = load_context(session, config.team.domains, config.team.freemail_domains)
    report = ImportReport()
    for raw in iter_messages(Path(path), since=since):
        with transaction(factory) as session:
            outcome = process(session, raw, info, ctx, now(), keep_raw=config.pipeline.store_raw)
        if outcome.status == "processed" and outcome.reason != "thread" and ctx.rules:
            # a round-robin rule may have turned; read the rules again for the next lead
            with factory() as session:
                ctx = load_context(session, config.team.domains, config.team.freemail_domains)
        report.total += 1
        report.counts[outcome.status] += 1
        if keep_outcomes:
            report.outcomes.append(outcome)
        if progress:
            progress(1)
    return report
