"""The manager's figures on the command line: ``report NAME`` and the ``source`` costs the sources
report sets against what each source won.

The report names and breakdowns are shared vocabulary (``values``), so ``--help`` and the
choices load no store; importing this module, like every command module, loads click and little else.
"""
from __future__ import annotations

import click

from inboxcrm.cli.common import App, Failure, csv_out, echo, emit, json_option, pass_app
from inboxcrm.core import views
from inboxcrm.values import BY_CHOICES, REPORT_NAMES


DAY = click.DateTime(["%Y-%m-%d"])


@click.command()
@click.argument("name", metavar="NAME", type=click.Choice(REPORT_NAMES))
@click.option("--since", type=DAY, metavar="YYYY-MM-DD",
              help="The first day of the period, in the team's time zone (default: 4 weeks before --until).")
@click.option("--until", type=DAY, metavar="YYYY-MM-DD", help="The last day of the period, included (default: today).")
@click.option("--weeks", type=click.IntRange(min=1), metavar="N",
              help="The N weeks ending with --until (default: 4); not with --since.")
@click.option("--by", type=click.Choice(tuple(dict.fromkeys(by for choices in BY_CHOICES.values() for by in choices))),
              help="Break the figures down by rep, source or stage, where the report has that breakdown "
                   "(a report without it says which it has).")
@json_option
@click.option("--csv", "as_csv", is_flag=True,
              help="Print one table as CSV in UTF-8: money as plain decimals, rates as fractions (empty when too "
                   "few to say), durations in seconds, dates as YYYY-MM-DD.")
@click.option("--table", "table_key", metavar="KEY", help="With --csv: the table to print (default: the first).")
@click.option("--bom", is_flag=True, help="With --csv: start with a byte order mark, so that Excel reads UTF-8.")
@pass_app
def report(app: App, name: str, since, until, weeks: int | None, by: str | None, as_json: bool, as_csv: bool,
           table_key: str | None, bom: bool) -> None:
    """The manager's figures over a period, as a table, JSON or CSV.

    Reports: pipeline (open deals and weighted value per stage), funnel (stage-to-stage conversion),
    velocity (time in stage, cycle length), wins (win rates, lost reasons), sources (leads, won value
    and return on cost), response (first-response times, prospects waiting), activity (leads created,
    advanced, lost) and forecast (this and next month by expected close date, slipped deals). A rate
    over fewer deals than [reports] min_sample reads "too few (2 of 3)", never a percentage.
    """
    from zoneinfo import ZoneInfo

    from inboxcrm.app import reports
    from inboxcrm.core import report_format

    if as_json and as_csv:
        raise Failure("give --json or --csv, not both")
    if (table_key is not None or bom) and not as_csv:
        raise Failure("--table and --bom go with --csv")
    zone, now = ZoneInfo(app.config.team.timezone), app.now()
    period = reports.period_for(now, zone, since and since.date(), until and until.date(), weeks)
    result = app.read(reports.run_report, app.config, name, period, by, now)
    if as_csv:
        csv_out(report_format.report_csv(result, table_key), bom)
    elif as_json:
        echo(views.to_json(report_format.report_json(result, zone)))
    else:
        echo(report_format.report_text(result, zone))


# -- lead sources -----------------------------------------------------------------------------

@click.group()
def source() -> None:
    """Lead sources and what each costs per month.

    A deal's source comes from its mailbox or a routing rule (source=NAME); the sources report
    sets each source's cost against the value it won.
    """


# ignore_unknown_options: "-5" is an AMOUNT to refuse with what is valid, not an unknown option
@source.command("cost", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("amount")
@click.option("--from", "month", type=click.DateTime(["%Y-%m"]), metavar="YYYY-MM",
              help="The month the cost applies from, until a later month's (default: this month).")
@pass_app
def source_cost(app: App, name: str, amount: str, month) -> None:
    """Set what source NAME costs per month: AMOUNT such as 1200 or 1,200.50, 0 for a free one.

    Giving a cost for a month that has one replaces it. The name matches the source's spelling
    on deals regardless of case.
    """
    from inboxcrm.app import team

    change = app.write(team.set_source_cost, name, amount, month and month.date(), app.local_now().date())
    was = f" (was {views.money(change.old)})" if change.old is not None else ""
    unseen = (f'; no deal has source {change.source} yet: check the spelling with "inboxcrm source list"'
              if change.deals == 0 else "")
    echo(f"source {change.source}: {views.money(change.amount)} a month from {change.month:%Y-%m}{was}{unseen}")


@source.command("list")
@json_option
@pass_app
def source_list(app: App, as_json: bool) -> None:
    """List the sources on deals and those given a cost, with the deals of each and this month's cost."""
    from inboxcrm.app import team

    emit(app.read(team.list_sources, app.local_now().date()), views.SOURCES, as_json)
