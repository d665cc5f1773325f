"""Mail coming in by hand: ``import``, the ``held`` new senders to accept or reject, and ``quarantine``."""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from inboxcrm.cli.common import (
    App,
    Failure,
    echo,
    emit,
    json_option,
    list_command,
    pass_app,
    write_file,
)
from inboxcrm.core import views


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--mailbox", required=True, metavar="NAME", help="The mailbox the messages count as arriving in.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Skip messages dated before this day (in the team's time zone).")
@pass_app
def import_(app: App, path: Path, mailbox: str, since: datetime | None) -> None:
    """Import an mbox file, a Maildir, or a folder of .eml files through the pipeline.

    Re-running it is safe: messages already stored are recognised and change nothing.
    """
    from inboxcrm.app.importer import import_path, resolve_mailbox
    from inboxcrm.mail.local import count_messages

    factory = app.factory()
    app.read(resolve_mailbox, mailbox)  # refuse a wrong name before the progress bar starts
    start = since.replace(tzinfo=ZoneInfo(app.config.team.timezone)) if since else None
    stderr = sys.stderr
    with click.progressbar(length=count_messages(path), label="importing", file=stderr) as bar:
        report = import_path(factory, app.config, mailbox, path, start, bar.update)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    echo(f"imported {views.plural(report.total, 'message')} into {mailbox}" + (f": {counts}" if counts else ""))
    if report.skipped:
        echo(f"skipped {views.plural(len(report.skipped), 'unreadable file')} (the rest was imported; fix "
             "and import again, stored messages are recognised):", err=True)
        for name, why in report.skipped:
            echo(f"  {name}: {why}", err=True)


# -- held senders and quarantine -----------------------------------------------------------

def _outcome(pk: int, outcome) -> str:
    deal = f" -> {outcome.deal_ref}" if outcome.deal_ref else ""
    return f"message {pk}: {outcome.status} ({outcome.reason}){deal}"


@click.group()
def held() -> None:
    """New senders held for a rep to accept or reject (mailboxes with --policy review)."""


list_command(held, "inboxcrm.app.team:list_review", views.REVIEW, "List held messages.")


@held.command("accept")
@click.argument("message_id", metavar="ID", type=int)
@pass_app
def review_accept(app: App, message_id: int) -> None:
    """Accept a held message: it becomes a lead."""
    from inboxcrm.app import intake

    echo(_outcome(message_id, intake.accept_review(app.factory(), app.config, message_id, app.actor)))


@held.command("reject")
@click.argument("message_id", metavar="ID", type=int)
@pass_app
def review_reject(app: App, message_id: int) -> None:
    """Reject a held message: it stays stored, and later mail from the sender is ignored."""
    from inboxcrm.app import intake

    echo(_outcome(message_id, intake.reject_review(app.factory(), app.config, message_id, app.actor)))


@click.group()
def quarantine() -> None:
    """Messages that could not be processed, kept with their raw bytes and reason."""


list_command(quarantine, "inboxcrm.app.team:list_quarantine", views.QUARANTINE,
             "List quarantined messages with their reason.")


@quarantine.command("show")
@click.argument("message_id", metavar="ID", type=int)
@click.option("--raw", "raw_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the message's exact raw bytes to FILE (for a bug report or another mail tool).")
@click.option("--force", is_flag=True, help="With --raw: replace FILE if it exists.")
@json_option
@pass_app
def quarantine_show(app: App, message_id: int, raw_file: Path | None, force: bool, as_json: bool) -> None:
    """Show a quarantined message: its reason and the first 4 KB of its raw bytes, control
    characters made visible; --raw FILE writes the bytes as they arrived."""
    from inboxcrm.app import team

    detail = app.read(team.show_quarantined, message_id)
    if raw_file is not None:
        raw = app.read(team.stored_raw, detail.message_id)  # refused where the bytes were not kept
        write_file(raw_file, raw, force)
        echo(f"wrote {views.plural(len(raw), 'byte')} of message {message_id} to {raw_file}", err=True)
    emit(detail, None, as_json, views.render_quarantined)


@quarantine.command("retry")
@click.argument("message_id", metavar="[ID]", type=int, required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every quarantined message.")
@pass_app
def quarantine_retry(app: App, message_id: int | None, retry_all: bool) -> None:
    """Run a quarantined message (or --all) through the pipeline again, e.g. after an upgrade."""
    from inboxcrm.app import intake, team

    if (message_id is None) == (not retry_all):
        raise Failure("give a message ID or --all (not both); see \"inboxcrm quarantine list\"")
    ids = [row.id for row in app.read(team.list_quarantine)] if retry_all else [message_id]
    factory = app.factory()
    for pk in ids:
        echo(_outcome(pk, intake.reprocess(factory, app.config, pk, app.actor)))
    if not ids:
        echo("nothing in quarantine")


