"""The ``inboxcrm`` command: builds config, engine and sessions, calls a function, prints.

No business rule lives here. Refusals (``errors.InboxCRMError``) become one line on stderr
and exit status 2; anything unforeseen becomes one line and exit status 1, its traceback saved
to errors.log in the data directory, never shown. Everything printed passes through ``echo``
(``cli.common``), which makes control characters from mail visible.

This module only builds the group: each command family lives in its own module, listed in
``COMMANDS`` and imported when one of its commands runs, so that ``--help`` and ``--version``
stay quick and the rest of the command line keeps working while an optional part is broken.
"""
from __future__ import annotations

import os

import click

from inboxcrm import __version__, logs
from inboxcrm.cli.common import App
from inboxcrm.cli.lazy import Lazy, LazyGroup

COMMANDS = {
    "companies": Lazy("inboxcrm.cli.deals:companies", "Companies, one per business email domain."),
    "company": Lazy("inboxcrm.cli.people:company", "One company: merge a duplicate into it."),
    "contact": Lazy("inboxcrm.cli.people:contact", "One contact: merge a duplicate into it, or erase a person "
                                                   "on request."),
    "contacts": Lazy("inboxcrm.cli.deals:contacts", "The people deals are with."),
    "db": Lazy("inboxcrm.cli.setup:database", "The database schema."),
    "deal": Lazy("inboxcrm.cli.deals:deal", "One deal, by its reference such as D-42 (or just 42)."),
    "deals": Lazy("inboxcrm.cli.deals:deals_group", "Listing deals."),
    "demo": Lazy("inboxcrm.cli.setup:demo", "Run a self-contained demo: sample mail through the whole "
                                            "pipeline, then the pipeline view."),
    "digest": Lazy("inboxcrm.cli.mail:digest", "Each rep's daily digest: what needs doing today."),
    "held": Lazy("inboxcrm.cli.intake:held", "New senders held for a rep to accept or reject (mailboxes "
                                             "with --policy review)."),
    "import": Lazy("inboxcrm.cli.intake:import_", "Import an mbox file, a Maildir, or a folder of .eml files "
                                                  "through the pipeline."),
    "init": Lazy("inboxcrm.cli.setup:init", "Set up inboxcrm: write a configuration file if there is none, "
                                            "then create the database."),
    "import-csv": Lazy("inboxcrm.cli.csv_import:import_csv", "Import leads and deals from a spreadsheet "
                                                              "saved as CSV."),
    "lead": Lazy("inboxcrm.cli.deals:lead", "Leads added by hand."),
    "mailbox": Lazy("inboxcrm.cli.team:mailbox", "Mailboxes mail is read from: a capture mailbox (sales@) "
                                                 "or a rep's own inbox."),
    "merge": Lazy("inboxcrm.cli.people:merge", "Merges of contacts and companies: list them, undo one."),
    "outbox": Lazy("inboxcrm.cli.mail:outbox_group", "Mail inboxcrm sends (digests, nudges), queued first, "
                                                     "then sent with retries."),
    "pipeline": Lazy("inboxcrm.cli.deals:pipeline_cmd", "The pipeline at a glance: deals and value per stage."),
    "poll": Lazy("inboxcrm.cli.sync:poll", "Sync mailbox NAME (default: every IMAP mailbox) in the "
                                           "foreground, with progress."),
    "quarantine": Lazy("inboxcrm.cli.intake:quarantine", "Messages that could not be processed, kept with "
                                                         "their raw bytes and reason."),
    "rep": Lazy("inboxcrm.cli.team:rep", "The team's sales reps: who owns deals and whose addresses are ours."),
    "report": Lazy("inboxcrm.cli.reports:report", "The manager's figures over a period, as a table, JSON or CSV."),
    "retention": Lazy("inboxcrm.cli.forget:retention", "Personal data kept no longer than the configuration says ([retention])."),
    "review": Lazy("inboxcrm.cli.review:review", "The weekly pipeline review email to managers: preview, send, "
                                                 "and the deals it asks to decide on."),
    "rule": Lazy("inboxcrm.cli.team:rule", "Routing rules: when all conditions hold, the actions set "
                                           "source, owner, stage, score..."),
    "run": Lazy("inboxcrm.cli.sync:run", "The daemon: keep every IMAP mailbox synced, send digests and "
                                         "notifications."),
    "source": Lazy("inboxcrm.cli.reports:source", "Lead sources and what each costs per month."),
    "stage": Lazy("inboxcrm.cli.team:stage", "Pipeline stages, in order; each is open, won or lost."),
    "status": Lazy("inboxcrm.cli.sync:status", "Each mailbox's sync health: folders, positions, backlog, "
                                               "last success, last error; the outbox; what commands by "
                                               "email accept."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="INBOXCRM_CONFIG", metavar="PATH",
              help="Configuration file (env INBOXCRM_CONFIG; default ~/.config/inboxcrm/config.toml).")
@click.option("--database-url", envvar="INBOXCRM_DATABASE_URL", metavar="URL",
              help="SQLAlchemy database URL, overriding the configuration's [database] url "
                   "(env INBOXCRM_DATABASE_URL).")
@click.version_option(__version__, prog_name="inboxcrm")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, database_url: str | None) -> None:
    """inboxcrm: a sales CRM that lives in the team's inbox.

    Start with "inboxcrm init", add reps and mailboxes, then import mail.
    Log level: env INBOXCRM_LOG_LEVEL (default WARNING); log lines go to stderr as logfmt events.
    Errors are one line on stderr (exit status 2 for a refusal, 1 for anything unexpected, whose
    traceback is saved to errors.log in the data directory).
    """
    try:
        logs.setup(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = App(config_path, database_url)
    ctx.call_on_close(ctx.obj.close)
