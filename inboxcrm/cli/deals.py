"""Deals and the people they are with: ``deals list``, ``deal ...``, ``lead add``, ``contacts``,
``companies`` and ``pipeline``."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import click

from inboxcrm.cli.common import (
    App,
    Failure,
    csv_option,
    csv_out,
    echo,
    emit,
    json_option,
    load,
    pass_app,
)
from inboxcrm.cli.lazy import Lazy, LazyGroup
from inboxcrm.core import verbs, views
from inboxcrm.core.forecast import CLOSE_FORMS, read_close
from inboxcrm.core.inputs import DUE_FORMS, parse_due

if TYPE_CHECKING:
    from inboxcrm.app.deals import DealDetail

DUPLICATES = "List contacts and companies that are likely duplicates, with why and a similarity score."
STAGE_HELP = "Stage name; any case, or a unique prefix such as prop for Proposal."

@click.group("deals")
def deals_group() -> None:
    """Listing deals."""


@deals_group.command("list")
@click.option("--stage", metavar="STAGE", help=STAGE_HELP + " Only deals in this stage.")
@click.option("--owner", metavar="REP", help="Only deals this rep owns.")
@click.option("--quiet", type=int, is_flag=False, flag_value=-1, metavar="[DAYS]",
              help="Only open deals with no activity (email or a rep's update) for DAYS days "
                   "(alone: [pipeline] quiet_days).")
@click.option("--stalled", type=int, is_flag=False, flag_value=-1, metavar="[DAYS]",
              help="Only open deals whose stage has not changed for DAYS days (alone: [pipeline] stalled_days).")
@click.option("--all", "include_closed", is_flag=True, help="Include won and lost deals.")
@click.option("--nurture", is_flag=True, help="Only the deals in Nurture (moved there by deals archive), with "
                                                "when and from which stage; alone, or with --json.")
@json_option
@csv_option
@pass_app
def deals_list(app: App, stage: str | None, owner: str | None, quiet: int | None, stalled: int | None,
               include_closed: bool, nurture: bool, as_json: bool, as_csv: bool, bom: bool) -> None:
    """List open deals by stage, most recently active first.

    With --csv the columns are import-csv's (Name, Email, Company, Stage, Owner, Value, Next step,
    Due date, Source, Notes), so the file can be imported into another inboxcrm.
    """
    from inboxcrm.app import deals

    _csv_flags(as_json, as_csv, bom)
    if nurture:
        _list_nurture(app, as_json, stage=stage, owner=owner, quiet=quiet, stalled=stalled, all=include_closed,
                      csv=as_csv)
        return
    quiet = app.config.pipeline.quiet_days if quiet == -1 else quiet
    stalled = app.config.pipeline.stalled_days if stalled == -1 else stalled
    now = app.now()
    if as_csv:
        from inboxcrm.app import csv_import

        csv_out(app.read(lambda s: csv_import.export_deals(
            s, deals.list_deals(s, now, stage, owner, quiet, include_closed, stalled))), bom)
        return
    rows = app.read(deals.list_deals, now, stage, owner, quiet, include_closed, stalled)
    emit(rows, views.deals_listing(app.local_now()), as_json)


def _list_nurture(app: App, as_json: bool, **others) -> None:
    given = [f"--{name}" for name, value in others.items() if value not in (None, False)]
    if given:
        raise Failure(f"--nurture lists every deal in Nurture and takes no {', '.join(given)}; "
                      f"give --nurture alone, or with --json")
    from inboxcrm.app import nurture

    emit(app.read(nurture.list_nurtured), views.NURTURE, as_json)


@deals_group.command("archive")
@click.option("--inactive", "days", type=int, metavar="DAYS",
              help="Move the open deals with no activity (email either way, a rep's update) for DAYS days "
                   "(default: [pipeline] inactive_days, 90). A deal snoozed to a later date stays.")
@click.option("--dry-run", is_flag=True, help="List the deals that would move, and change nothing.")
@json_option
@pass_app
def deals_archive(app: App, days: int | None, dry_run: bool, as_json: bool) -> None:
    """Move open deals gone cold to Nurture: out of the pipeline, not deleted, neither open nor lost.

    Each keeps its stage; deals list --nurture lists them, and new mail on one (from the contact,
    or a rep writing to them) brings it back to its stage and tells its owner.
    """
    from inboxcrm.app import nurture

    days = app.config.pipeline.inactive_days if days is None else days
    done = (app.read(nurture.archive, app.now(), app.actor, days, dry_run=True) if dry_run
            else app.write(nurture.archive, days))
    emit(done, None, as_json, lambda d: "\n".join(filter(None, (views.table(d.deals, views.COLD) if d.deals else "",
                                                                 d.summary))))


def _csv_flags(as_json: bool, as_csv: bool, bom: bool) -> None:
    if as_json and as_csv:
        raise Failure("give --json or --csv, not both")
    if bom and not as_csv:
        raise Failure("--bom goes with --csv")


def _people_list(group: click.Group, query: str, export: str, listing: views.Listing, help: str,
                 bouncing: bool = False) -> None:
    """``GROUP list [--json | --csv [--bom]]``; ``export``: the ``"module:function"`` writing the CSV;
    ``bouncing``: a ``--bouncing`` flag lists the addresses that bounced instead."""
    @group.command("list", help=help)
    @json_option
    @csv_option
    @pass_app
    def command(app: App, as_json: bool, as_csv: bool, bom: bool, bouncing: bool = False) -> None:
        _csv_flags(as_json, as_csv, bom)
        reader, writer, shown = (("inboxcrm.app.bounces:list_bouncing", "inboxcrm.app.bounces:export_bouncing",
                                  views.BOUNCING) if bouncing else (query, export, listing))
        rows = app.read(load(reader))
        if as_csv:
            csv_out(load(writer)(rows), bom)
        else:
            emit(rows, shown, as_json)

    if bouncing:
        click.option("--bouncing", is_flag=True, help="Only the addresses that bounced: when, what the receiving "
                     "server said, the contact and its owner, most recent first.")(command)


@click.group("deal")
def deal() -> None:
    """One deal, by its reference such as D-42 (or just 42)."""


@deal.command("revive")
@click.argument("ref")
@pass_app
def deal_revive(app: App, ref: str) -> None:
    """Bring a deal back from Nurture into its stage, open again; its owner is told."""
    from inboxcrm.app import nurture

    back = app.write(nurture.revive, ref)
    echo(f"{back.ref}: back from Nurture (there since {back.nurtured_at.date().isoformat()}), in {back.stage}")


@deal.command("show")
@click.argument("ref")
@json_option
@pass_app
def deal_show(app: App, ref: str, as_json: bool) -> None:
    """Everything about a deal: contact, stage, next step, snooze, score, notes, history and messages."""
    from inboxcrm.app import deals

    emit(app.read(deals.show_deal, ref), None, as_json, lambda d: _render_deal(d, app.local_now()))


def _render_deal(d: DealDetail, now: datetime) -> str:
    """A snooze in force goes right under the title: it is why the deal is missing from the digest."""
    text = views.render_deal(d, now)
    if d.snoozed_until is None or d.snoozed_until <= now.date():
        return text
    title, _, rest = text.partition("\n")
    return f"{title}\n  Snoozed until {d.snoozed_until.isoformat()} (wake it: inboxcrm deal snooze {d.ref} off)\n{rest}"


def _change(app: App, fn: Callable, *args, **kwargs) -> None:
    echo(views.render_change(app.write(fn, *args, **kwargs)))


@deal.command("stage")
@click.argument("ref")
@click.argument("stage", metavar="STAGE")
@click.option("--reason", default="", help="Why, for the stage history (required when moving to a lost stage).")
@pass_app
def deal_stage(app: App, ref: str, stage: str, reason: str) -> None:
    """Move a deal to STAGE (any case, or a unique prefix such as prop)."""
    from inboxcrm.app import deals

    _change(app, deals.set_stage, ref, stage, reason)


@deal.command("next")
@click.argument("ref")
@click.argument("text")
@click.option("--due", metavar="WHEN", help=f"When it is due: {DUE_FORMS}.")
@click.option("--owner", metavar="REP", help="Who does it (default: whoever had the step, else the deal's owner).")
@pass_app
def deal_next(app: App, ref: str, text: str, due: str | None, owner: str | None) -> None:
    """Set the deal's next step TEXT."""
    from inboxcrm.app import deals

    _change(app, deals.set_next, ref, text, parse_due(due, app.local_now().date()) if due else None, owner)


@deal.command("snooze", help="Leave the deal out of the quiet, stalled and no-next-step lists (digest and deals "
                              "list) until WHEN, at most a year ahead; new email from the prospect wakes it too. "
                              f"Overdue steps and replies owed still show.\n\nWHEN: {verbs.SNOOZE_FORMS}.")
@click.argument("ref")
@click.argument("when", nargs=-1, required=True, metavar="WHEN")
@pass_app
def deal_snooze(app: App, ref: str, when: tuple[str, ...]) -> None:
    from inboxcrm.app import deals

    today = app.local_now().date()
    _change(app, deals.set_snooze, ref, verbs.snooze_until(" ".join(when), today), today=today)


@deal.command("close", help="When the deal is expected to close, for the forecast (inboxcrm report forecast); "
                             "moving a date that has passed to a later one counts as a slip.\n\n"
                             f"WHEN: {CLOSE_FORMS}.")
@click.argument("ref")
@click.argument("when", nargs=-1, required=True, metavar="WHEN")
@pass_app
def deal_close(app: App, ref: str, when: tuple[str, ...]) -> None:
    from inboxcrm.app import deals

    today = app.local_now().date()
    _change(app, deals.set_close, ref, read_close(" ".join(when), today), today=today)


def _deal_edit(name: str, change: str, metavar: str, help: str) -> None:
    """``deal NAME REF VALUE``: the edits that take one value and print the change; ``change`` is
    the ``"module:function"`` that makes it."""
    @deal.command(name, help=help)
    @click.argument("ref")
    @click.argument("value", metavar=metavar)
    @pass_app
    def command(app: App, ref: str, value: str) -> None:
        _change(app, load(change), ref, value)


for _name, _change_path, _metavar, _help in (
    ("owner", "inboxcrm.app.deals:set_owner", "REP", "Give the deal to REP."),
    ("value", "inboxcrm.app.deals:set_value", "AMOUNT",
     "Set the deal's value AMOUNT, a number such as 12000 or 12000.50 (no currency)."),
    ("note", "inboxcrm.app.deals:add_note", "TEXT", "Add a note TEXT to the deal."),
    ("lost", "inboxcrm.app.deals:mark_lost", "REASON",
     "Mark the deal lost, with the REASON (required, for the win/loss numbers)."),
):
    _deal_edit(_name, _change_path, _metavar, _help)


@deal.command("won")
@click.argument("ref")
@click.option("--reason", default="", help="Why it was won, for the review numbers.")
@pass_app
def deal_won(app: App, ref: str, reason: str) -> None:
    """Mark the deal won."""
    from inboxcrm.app import deals

    _change(app, deals.mark_won, ref, reason)


@click.group()
def lead() -> None:
    """Leads added by hand."""


@lead.command("add")
@click.option("--email", required=True, metavar="ADDR", help="The prospect's address (an existing contact is reused).")
@click.option("--name", default="", help="The prospect's name.")
@click.option("--company", help="Company name (default: from the address's domain; freemail has none).")
@click.option("--owner", metavar="REP", help="Rep who owns the deal (default: the contact's owner).")
@click.option("--source", default="manual", show_default=True, help="Where the lead came from.")
@click.option("--value", metavar="AMOUNT", help="Deal value, a number such as 12000.")
@click.option("--stage", metavar="STAGE", help="Open stage to start in (default: the first).")
@pass_app
def lead_add(app: App, email: str, name: str, company: str | None, owner: str | None, source: str,
             value: str | None, stage: str | None) -> None:
    """Add a lead: contact, company and a new deal."""
    from inboxcrm.app import deals

    team = app.config.team
    added = app.write(deals.add_lead, email, name, company, owner, source, value, stage,
                      frozenset(team.domains), frozenset(team.freemail_domains))
    who = f"{added.contact} <{added.address}>" if added.contact else added.address
    echo(f"{added.ref}: {who}" + (f" at {added.company}" if added.company else "")
         + f", {added.stage}, owner {added.owner or 'nobody'}"
         + ("" if added.new_contact else " (existing contact)"))
    if added.other_open_deals:
        echo(f"note: this contact also has open deals {', '.join(added.other_open_deals)}", err=True)


@click.group(cls=LazyGroup, lazy={"duplicates": Lazy("inboxcrm.cli.merge:contacts_duplicates", DUPLICATES)})
def contacts() -> None:
    """The people deals are with."""


_people_list(contacts, "inboxcrm.app.deals:list_contacts", "inboxcrm.app.csv_import:export_contacts",
             views.CONTACTS,
             "List contacts with their addresses, company, owner and deal counts.", bouncing=True)


@click.group()
def companies() -> None:
    """Companies, one per business email domain."""


_people_list(companies, "inboxcrm.app.deals:list_companies", "inboxcrm.app.csv_import:export_companies",
             views.COMPANIES,
             "List companies with their contacts and deal counts.")


@click.command("pipeline")
@json_option
@pass_app
def pipeline_cmd(app: App, as_json: bool) -> None:
    """The pipeline at a glance: deals and value per stage."""
    from inboxcrm.app import deals

    emit(app.read(deals.pipeline_summary), None, as_json, views.render_pipeline)


