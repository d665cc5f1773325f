"""``inboxcrm review preview|send|deals``: the weekly pipeline review email to managers.

``app.review`` decides who gets it and queues it; this module parses and prints. The commands
that decided held senders moved to ``inboxcrm held``; ``review list|accept|reject`` still run
them, hidden, and say where they went.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from inboxcrm.cli.common import App, echo, pass_app, write_file
from inboxcrm.core.review import URGENCY
from inboxcrm.core.views import plural

DATE = click.DateTime(["%Y-%m-%d"])
TO_HELP = "The manager: a rep's name or a manager's address (default: every manager)."


class _Group(click.Group):
    """Offers only the review's own commands (in --help, completion and docs/cli.md); the held
    senders' old names still run when typed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in super().list_commands(ctx) if not self.commands[name].hidden]


@click.group(cls=_Group)
def review() -> None:
    """The weekly pipeline review email to managers: preview, send, and the deals it asks to decide on.

    Managers are reps marked with "inboxcrm rep edit NAME --manager" and the addresses under
    [review] managers; each gets it on [review] day at [review] time, in their time zone.
    """


def _chosen(app: App, session, to: str | None):
    """The managers a command is for: ``to``, else all of them (refusing none with how to name one)."""
    from inboxcrm.app import review as app_review

    if to is not None:
        return [app_review.recipient_named(session, app.config, to)]
    return app_review.managers(session, app.config)


@review.command("preview")
@click.option("--date", "day", type=DATE, metavar="YYYY-MM-DD",
              help="The review sent on this day, covering the 7 days before it (default: today).")
@click.option("--to", metavar="MANAGER", help="The manager: a rep's name or a manager's address (default: the first).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the HTML version to FILE instead of printing the text.")
@pass_app
def review_preview(app: App, day: datetime | None, to: str | None, html_file: Path | None) -> None:
    """Show the weekly review as a manager would get it, without queuing or recording anything."""
    from inboxcrm.app import review as app_review
    from inboxcrm.mail import render

    env = render.template_env(app.config.digest.templates_dir)
    now = app.now()

    def build(session):
        chosen = _chosen(app, session, to)
        recipient = chosen[0]
        when = app_review.checked_day(recipient, day.date() if day else None, now)
        mail = app_review.preview(session, app.config, recipient, when, now, env)
        return recipient, [r.name for r in chosen[1:]], mail

    recipient, others, mail = app.read(build)
    if others:
        echo(f"previewing {recipient.name}'s review; also sent to {', '.join(others)} (choose with --to)", err=True)
    if html_file is not None:
        write_file(html_file, mail.html)
        echo(f"HTML version of \"{mail.subject}\" for {recipient.name} written to {html_file.resolve()}")
        return
    echo(f"To: {recipient.address or '(no address)'}\nSubject: {mail.subject}\n")
    echo(mail.text.rstrip("\n"))


@review.command("send")
@click.option("--date", "day", type=DATE, metavar="YYYY-MM-DD",
              help="The review sent on this day, covering the 7 days before it (default: today).")
@click.option("--to", metavar="MANAGER", help=TO_HELP)
@pass_app
def review_send(app: App, day: datetime | None, to: str | None) -> None:
    """Queue the weekly review now (for every manager, or --to one) and send what is due.

    Still once per manager and week: if that week's review was already queued or sent, says so."""
    from inboxcrm.app import review as app_review
    from inboxcrm.cli.mail import send_due_now
    from inboxcrm.mail import render
    from inboxcrm.store.db import transaction

    env = render.template_env(app.config.digest.templates_dir)
    now = app.now()
    chosen = app.read(lambda session: _chosen(app, session, to))
    days = {r.ident: app_review.checked_day(r, day.date() if day else None, now) for r in chosen}
    for recipient in chosen:
        when = days[recipient.ident]
        with transaction(app.factory()) as session:
            queued = app_review.queue_review(session, app.config, recipient, when, now, env)
        what = f"review for {recipient.name}, week of {app_review.week_of(when).isoformat()}"
        if queued.status == "skipped":
            echo(f"not queued: {what}: {recipient.name} has no email address (outbox {queued.outbox_id}, skipped)")
        elif queued.new:
            echo(f"queued {what} (outbox {queued.outbox_id})")
        else:
            echo(f"already queued: {what} is outbox {queued.outbox_id}, status {queued.status}; "
                 f"a review goes out once per manager and week")
    echo(send_due_now(app))


@review.command("deals")
@click.option("--reason", type=click.Choice(URGENCY), help="Only the deals listed under this reason.")
@pass_app
def review_deals(app: App, reason: str | None) -> None:
    """Every deal the review asks to decide on, uncut: each once, under its most urgent reason."""
    from inboxcrm.app import review as app_review

    sections = app.read(app_review.deals_to_decide, app.config, app.now())
    shown = [s for s in sections if reason in (None, s.key)]
    if not any(s.total for s in shown):
        echo("no deals to decide on" + (f" for the reason {reason}" if reason else ""))
        return
    for section in shown:
        if not section.total:
            continue
        echo(f"{section.title} ({plural(section.total, 'deal')})")
        for item in section.items:
            also = f" [also: {', '.join(item.also)}]" if item.also else ""
            echo(f"  {item.ref}  {item.title}  owner {item.owner}, {item.stage}: {item.detail}{also}")


# -- the held senders' old names ------------------------------------------------------------------

def _moved(name: str) -> click.Command:
    """``review NAME`` runs ``held NAME`` after a warning, so scripts keep working while they are changed."""
    from inboxcrm.cli import intake

    target = intake.held.commands[name]

    @click.pass_context
    def run(ctx: click.Context, **kwargs) -> None:
        echo(f'warning: "inboxcrm review {name}" is now "inboxcrm held {name}"', err=True)
        ctx.invoke(target, **kwargs)

    return click.Command(name, params=list(target.params), callback=run, hidden=True,
                         help=f'Deprecated: "inboxcrm held {name}".')


for _name in ("list", "accept", "reject"):
    review.add_command(_moved(_name))
