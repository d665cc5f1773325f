"""The outgoing-mail commands: ``digest preview|send``, ``outbox list|show|retry|send|test`` and
``rep digest``.

``notify`` decides what a rep gets, ``outbox`` sends it; this module only parses and prints.
``digest`` and ``outbox`` are listed in ``cli.COMMANDS``; ``rep digest`` joins the ``rep`` group in
``cli.team``.
"""
from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import click

from inboxcrm.cli.common import (
    App,
    Failure,
    echo,
    emit,
    json_option,
    pass_app,
    write_file,
)
from inboxcrm.core import views
from inboxcrm.core.views import Column, Listing, col

DATE = click.DateTime(["%Y-%m-%d"])


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else ""


OUTBOX = Listing((
    col("ID", "id", right=True), col("KIND", "kind"),
    Column("STATUS", lambda r: r.status.upper() if r.status in ("unknown", "failed") else r.status),
    col("TO", "to_address"), col("SUBJECT", "subject", 50),
    col("TRIES", "attempts", right=True), Column("CREATED", lambda r: _when(r.created_at)),
    Column("SENT / NEXT TRY", lambda r: _when(r.sent_at) if r.sent_at else
           _when(r.next_attempt_at) if r.status == "pending" else ""),
    col("LAST ERROR", "last_error", 80)),
    "the outbox is empty; digests and nudges are queued by the daemon (inboxcrm run) or \"inboxcrm digest send\"")


def send_due_now(app: App) -> str:
    from inboxcrm.app.outbox import send_due

    if not app.config.smtp.host:
        return "not sent: no SMTP server is configured; set [smtp] host and from_address, the mail waits in the outbox"
    report = send_due(app.factory(), app.config, app.now(), environ=os.environ)
    parts = [f"{n} {what}" for what, n in (("sent", report.sent), ("waiting for a retry", report.deferred),
                                             ("failed", report.failed), ("UNKNOWN", report.unknown)) if n]
    return "outbox: " + (", ".join(parts) or "nothing due")


# -- digest ---------------------------------------------------------------------------------

@click.group()
def digest() -> None:
    """Each rep's daily digest: what needs doing today."""


def _day(schedule, day: datetime | None, app: App) -> date:
    return day.date() if day else app.now().astimezone(schedule.zone).date()


@digest.command("preview")
@click.argument("name", metavar="REP")
@click.option("--date", "day", type=DATE, metavar="YYYY-MM-DD", help="The digest of this day (default: the rep's today).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the HTML version to FILE.")
@pass_app
def digest_preview(app: App, name: str, day: datetime | None, html_file: Path | None) -> None:
    """Show REP's digest as it would be sent, without sending or recording anything."""
    from inboxcrm.app import notify
    from inboxcrm.mail import render

    env = render.template_env(app.config.digest.templates_dir)

    def build(session):
        schedule = notify.schedule_for(session, app.config, name)
        return notify.preview(session, app.config, schedule, _day(schedule, day, app), app.now(), env)

    mail = app.read(build)
    if html_file is not None:  # before the text: a FILE that cannot be written is refused up front
        write_file(html_file, mail.html)
    echo(f"Subject: {mail.subject}\n")
    echo(mail.text.rstrip("\n"))
    if html_file is not None:
        echo(f"\nHTML version: {html_file.resolve()}")


@digest.command("send")
@click.argument("name", metavar="[REP]", required=False)
@click.option("--date", "day", type=DATE, metavar="YYYY-MM-DD", help="The digest of this day (default: each rep's today).")
@pass_app
def digest_send(app: App, name: str | None, day: datetime | None) -> None:
    """Queue REP's digest (or every rep's) now, even an empty one, and send what is due.

    Still once per rep and day: if that day's digest was already queued or sent, says so."""
    from inboxcrm.app import notify
    from inboxcrm.mail import render
    from inboxcrm.store.db import transaction

    env = render.template_env(app.config.digest.templates_dir)
    now = app.now()
    with app.factory()() as session:
        if name is not None:
            schedules = [notify.schedule_for(session, app.config, name)]
        else:
            schedules = [s for s in notify.schedules(session, app.config).values() if s.enabled]
    if not schedules:
        raise Failure('no reps with a digest; add one with "inboxcrm rep add NAME --email ADDRESS"')
    for schedule in schedules:
        when = _day(schedule, day, app)
        with transaction(app.factory()) as session:
            queued = notify.queue_digest(session, app.config, schedule, when, now, env, force=True)
        what = f"digest for {schedule.rep} on {when.isoformat()}"
        if queued.new:
            echo(f"queued {what} (outbox {queued.outbox_id})" + (": nothing needs them, sent anyway"
                                                                        if queued.empty else ""))
        else:
            state = "already sent" if queued.status == "sent" else f"already decided ({queued.status})"
            echo(f"{state}: {what} is outbox {queued.outbox_id}, status {queued.status}; "
                 f"a digest goes out once per rep and day")
    echo(send_due_now(app))


# -- outbox ---------------------------------------------------------------------------------

@click.group("outbox")
def outbox_group() -> None:
    """Mail inboxcrm sends (digests, nudges), queued first, then sent with retries."""


@outbox_group.command("list")
@click.option("--status", type=click.Choice(("pending", "sending", "sent", "failed", "skipped", "unknown")),
              help="Only messages in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, metavar="N",
              help="At most N messages (failed and unknown ones are always all shown).")
@json_option
@pass_app
def outbox_list(app: App, status: str | None, limit: int, as_json: bool) -> None:
    """List queued and sent mail, newest first (failed and unknown ones always shown)."""
    from inboxcrm.app.outbox import RETRYABLE, list_outbox

    rows = app.read(list_outbox, status, limit + 1)  # one more than shown tells whether any were left out
    capped = [r for r in rows if status is not None or r.status not in RETRYABLE]
    if len(capped) > limit:
        left_out = capped[-1]  # the oldest: rows come newest first
        rows = [r for r in rows if r is not left_out]
    emit(rows, OUTBOX, as_json)
    if len(capped) > limit:
        which = f"{status} messages" if status else "messages besides the failed and unknown ones"
        echo(f"\nshowing the newest {limit} {which}; older ones are left out (--limit N shows more)", err=as_json)
    unknown = [r.id for r in rows if r.status == "unknown"]
    if unknown and not as_json:
        echo(f"\nUNKNOWN ({len(unknown)}): the sender stopped after the server took the envelope, so the "
             f"recipient may or may not have these (ids {', '.join(map(str, unknown))}). They are not resent "
             f"automatically: ask the recipient, then \"inboxcrm outbox retry ID\" if it never arrived.")


@outbox_group.command("show")
@click.argument("outbox_id", metavar="ID", type=int)
@json_option
@pass_app
def outbox_show(app: App, outbox_id: int, as_json: bool) -> None:
    """Show one queued message: its state, its headers and its text part."""
    from inboxcrm.app.outbox import show

    def text(d) -> str:
        r = d.row
        lines = [f"outbox {r.id}: {r.kind} {r.status}, {views.plural(r.attempts, 'attempt')}, key {r.key}",
                 f"created {_when(r.created_at)}" + (f", sent {_when(r.sent_at)}" if r.sent_at else
                                                     f", next try {_when(r.next_attempt_at)}"
                                                     if r.status == "pending" else "")]
        if r.last_error:
            lines.append(f"last error: {r.last_error}")
        lines += ["", *(f"{k}: {v}" for k, v in d.headers), "", d.text.rstrip("\n")]
        return "\n".join(lines)

    emit(app.read(show, outbox_id), None, as_json, text)


@outbox_group.command("retry")
@click.argument("outbox_id", metavar="[ID]", type=int, required=False)
@click.option("--all", "retry_all", is_flag=True, help="Every failed message (unknown ones only by ID).")
@pass_app
def outbox_retry(app: App, outbox_id: int | None, retry_all: bool) -> None:
    """Put a failed or unknown message (or --all failed ones) back in the queue, then send what is due."""
    from inboxcrm.app.outbox import retry

    if (outbox_id is None) == (not retry_all):
        raise Failure('give an outbox ID or --all (not both); see "inboxcrm outbox list"')
    rows = app.write(retry, outbox_id)
    for row in rows:
        echo(f"outbox {row.id} ({row.kind} to {row.to_address}): back in the queue")
    if not rows:
        echo("no failed messages to retry")
        return
    echo(send_due_now(app))


@outbox_group.command("send")
@pass_app
def outbox_send(app: App) -> None:
    """Send the mail that is due now (the daemon does this every 30 seconds)."""
    echo(send_due_now(app))


@outbox_group.command("test")
@pass_app
def outbox_test(app: App) -> None:
    """Connect to the configured SMTP server, secure the connection and log in; sends nothing."""
    from inboxcrm.mail.smtp import check

    echo(check(app.config.smtp, os.environ))


# -- a rep's digest settings ------------------------------------------------------------------

@click.command("digest")
@click.argument("name")
@click.option("--time", "time_", metavar="HH:MM", help="The rep's local time for the digest, such as 08:00.")
@click.option("--days", metavar="DAYS", help='Digest days, such as "mon-fri", "mon,wed,fri" or "daily".')
@click.option("--always/--when-needed", default=None,
              help="Send the digest even when there is nothing to say, or only when there is (the default).")
@click.option("--on/--off", "enabled", default=None, help="Turn the rep's digest on or off.")
@pass_app
def rep_digest(app: App, name: str, time_: str | None, days: str | None, always: bool | None,
               enabled: bool | None) -> None:
    """Show or change when REP gets the digest (time and days are in the rep's time zone)."""
    from inboxcrm.app import notify

    if (time_, days, always, enabled) != (None, None, None, None):
        app.write(notify.set_digest, name, time_, days, always, enabled)
    schedule = app.read(notify.schedule_for, app.config, name)
    echo(notify.describe(schedule, app.now()))
