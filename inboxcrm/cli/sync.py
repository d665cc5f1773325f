"""The sync commands: ``mailbox test``, ``poll``, ``status`` and ``run`` (the daemon).

``poll`` and the daemon call the same ``sync.sync_mailbox``; this module only prints. ``poll``,
``status`` and ``run`` are listed in ``cli.COMMANDS``; ``mailbox test`` joins the ``mailbox`` group
in ``cli.team``.
"""
from __future__ import annotations

import os
import sys
import time

import click

from inboxcrm.cli.common import App, Failure, echo, json_option, pass_app
from inboxcrm.core import views


def _counts(counts) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


@click.command("test")
@click.argument("name")
@pass_app
def mailbox_test(app: App, name: str) -> None:
    """Connect to mailbox NAME's server, log in and list the folders a sync would read.

    Says exactly what is wrong when it cannot: DNS, connection, TLS, login or a missing folder.
    Reads nothing but the folder list and sizes; changes nothing.
    """
    from inboxcrm.app.sync import check_mailbox, load_settings

    settings = app.read(load_settings, name)
    folders = check_mailbox(settings, os.environ, name)
    echo(f"{name}: logged in as {settings.describe()}")
    for folder in folders:
        role = f" ({folder.role})" if folder.role else ""
        echo(f"  {folder.name}{role}: {views.plural(folder.messages, 'message')}, "
             f"uidvalidity {folder.uidvalidity}, next uid {folder.uidnext}")


def _poll_pass(app: App, names: list[str]) -> list[str]:
    """One pass over ``names``; prints each folder's figures; returns the names that failed."""
    from inboxcrm.app.sync import daemon_working, sync_mailbox

    failed = []
    factory = app.factory()
    live = sys.stderr.isatty()
    for name in names:
        working = app.read(daemon_working, name)
        if working is not None:
            echo(f'{name}: left to {working}, which works it now (see "inboxcrm status")')
            continue
        seen = 0

        def progress(n: int, name: str = name) -> None:
            nonlocal seen
            seen += n
            if live:
                echo(f"{name}: {views.plural(seen, 'message')} so far", nl=False, err=True, redraw=True)

        try:
            report = sync_mailbox(factory, app.config, name, progress=progress, environ=os.environ)
        except Exception as exc:  # noqa: BLE001 - one failing mailbox is reported; the others still run
            if live and seen:
                echo(err=True)
            failed.append(name)
            echo(f"{name}: error: {exc}", err=True)
            continue
        if live and seen:
            echo(nl=False, err=True, redraw=True)
        echo(f"{name}: {views.plural(report.total, 'new message')}")
        for folder in report.folders:
            role = f" ({folder.role})" if folder.role else ""
            counts = _counts(folder.counts)
            resynced = " (UIDVALIDITY changed: re-read, duplicates recognised)" if folder.resynced else ""
            echo(f"  {folder.folder}{role}: {views.plural(folder.fetched, 'message')}"
                 + (f": {counts}" if counts else "") + resynced)
    return failed


@click.command()
@click.argument("name", required=False)
@click.option("--once", is_flag=True, help="One pass, then exit (default: poll every [sync] poll_interval "
                                            "seconds until Ctrl-C).")
@pass_app
def poll(app: App, name: str | None, once: bool) -> None:
    """Sync mailbox NAME (default: every IMAP mailbox) in the foreground, with progress.

    A failing mailbox is reported and the others still run; the exit status is 1 if any failed.
    A mailbox that a running daemon works now (`inboxcrm run`, its lease) is left to it and
    said so: its passes record the mail.
    """
    from inboxcrm.app.sync import imap_mailboxes, load_settings

    if name is not None:
        app.read(load_settings, name)  # refuse an unknown or import-only mailbox before anything runs
    names = [name] if name is not None else app.read(imap_mailboxes)
    if not names:
        raise Failure('no mailbox has an IMAP connection; add one with "inboxcrm mailbox add NAME --role capture '
                      '--host HOST --user USER --password-file PATH"')
    failed: list[str] = []
    try:
        while True:
            failed = _poll_pass(app, names)
            if once:
                break
            time.sleep(app.config.sync.poll_interval)
    except KeyboardInterrupt:
        echo("stopped", err=True)
    if failed:
        echo(f"failed: {', '.join(failed)} (see \"inboxcrm status\")", err=True)
        sys.exit(1)


@click.command()
@json_option
@click.option("--check", is_flag=True, help="Only say whether all is well, for monitoring: \"ok\" and exit 0, "
              "or one line per problem and exit 1 (see [metrics] failing_minutes and stale_minutes).")
@pass_app
def status(app: App, as_json: bool, check: bool) -> None:
    """Each mailbox's sync health: folders, positions, backlog, last success, last error; the
    outbox; what commands by email accept.

    A mailbox whose last pass failed is marked FAILING and the exit status is 1 (with --json
    too), so monitoring can run this; 2 means status itself could not run. Read from the
    database: works whether or not the daemon is running.

    With --check: exit 0 and "ok" when healthy; else exit 1 and one line per problem: a mailbox
    failing for longer than [metrics] failing_minutes or without a success for [metrics]
    stale_minutes, outbox mail failed or of unknown fate, the database unreachable or not at
    this version's schema. The same rule as the daemon's /health.
    """
    if check:
        _check(app, as_json)
        return
    from inboxcrm.app.status import FAILING_EXIT, read_status, render

    report = app.read(read_status, app.config)
    echo(views.to_json(report) if as_json else render(report, app.now()))
    if report.failing:
        sys.exit(FAILING_EXIT)


def _check(app: App, as_json: bool) -> None:
    from inboxcrm.app.metrics import UNHEALTHY_EXIT, health
    from inboxcrm.store.db import unusable_database

    try:
        factory = app.factory()
    except Failure as failure:
        problems = (f"database: {failure.message}",)
    except Exception as exc:
        reason = unusable_database(exc)
        if reason is None:
            raise
        problems = (f"database: {reason.strip().splitlines()[0]}",)
    else:
        problems = health(factory, app.config, app.now())
    if as_json:
        echo(views.to_json({"healthy": not problems, "problems": list(problems)}))
    else:
        echo("\n".join(problems) if problems else "ok")
    if problems:
        sys.exit(UNHEALTHY_EXIT)


def _daemon_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from inboxcrm.config import DAEMON_ID

    if value is not None and not DAEMON_ID.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a daemon name: use letters, digits, '.', '_' or '-', at most "
                                 f"100, starting with a letter or digit (e.g. mail-2)")
    return value


@click.command()
@click.option("--id", "daemon_id", metavar="NAME", callback=_daemon_id,
              help="This daemon's name among several sharing one PostgreSQL database (default: [daemon] id, "
                   "else the host name).")
@pass_app
def run(app: App, daemon_id: str | None) -> None:
    """The daemon: keep every IMAP mailbox synced, send digests and notifications.

    IDLE where the server has it (new mail on record within seconds), polling every [sync]
    poll_interval seconds otherwise. SIGTERM or Ctrl-C: finish the current message and exit;
    SIGHUP: reload the configuration and the mailbox list. Logs go to stderr, one logfmt event a
    line (journald under systemd); set INBOXCRM_LOG_LEVEL=INFO to see every pass.

    Several daemons on one PostgreSQL database share the mailboxes out, each held by one daemon
    through a lease (see [daemon] lease_seconds); on SQLite a second daemon is refused (exit 1).
    """
    from inboxcrm import config as config_mod
    from inboxcrm.app.daemon import Daemon
    from inboxcrm.errors import DaemonRefused

    factory = app.factory()  # refuses a missing or outdated database before anything starts

    def reload_config() -> config_mod.Config:
        path, named = config_mod.resolve_config_path(app.config_path)
        fresh = config_mod.load_config(path, named)
        return fresh.with_database_url(app.database_url) if app.database_url else fresh

    try:
        status = Daemon(factory, app.config, reload_config, name=daemon_id).run()
    except DaemonRefused as refused:  # 1, not a usage refusal's 2: the other daemon's presence failed the start
        echo(f"error: {refused}", err=True)
        sys.exit(1)
    sys.exit(status)

