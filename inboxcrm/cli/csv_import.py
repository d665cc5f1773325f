"""``import-csv``: a spreadsheet of leads, row by row, all or nothing."""
from __future__ import annotations

from pathlib import Path

import click

from inboxcrm.cli.common import App, Failure, echo, pass_app
from inboxcrm.core import views

SHOWN_ALWAYS = ("refused", "differs", "update")  # a real import prints these rows; a dry run prints every row


@click.command("import-csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, metavar="FIELD=HEADER",
              help="Read FIELD from the column headed HEADER, such as 'Email=E-mail address'. Fields: Name, Email, "
                   "Company, Stage, Owner, Value, Next step, Due date, Source, Notes; usual other headers "
                   "(E-mail, Company name, Deal value, ...) are recognised without it.")
@click.option("--delimiter", metavar="C", help="The cell separator: , ; | or tab (default: detected).")
@click.option("--encoding", metavar="E",
              help="The file's encoding, such as utf-8, utf-16 or windows-1252 (default: detected).")
@click.option("--dry-run", is_flag=True, help="Say what each row would do (create, update, unchanged, differs, "
                                              "refused) and write nothing.")
@click.option("--update", is_flag=True, help="Rows whose address is a contact update its open deal's stage, owner, "
                                             "value, next step and notes (default: only report the differences).")
@click.option("--skip-bad", is_flag=True, help="Import the good rows and list the refused ones (default: one bad row "
                                               "refuses the whole file).")
@pass_app
def import_csv(app: App, file: Path, maps: tuple[str, ...], delimiter: str | None, encoding: str | None,
               dry_run: bool, update: bool, skip_bad: bool) -> None:
    """Import leads and deals from a spreadsheet saved as CSV.

    Each row is a contact and a deal: Name, Email (required), Company, Stage (an open stage), Owner (a rep's
    name or address), Value, Next step, Due date (YYYY-MM-DD; a past date is kept, as history), Source
    (default: import) and Notes, in any order. A row whose address is already a contact changes nothing
    unless --update; an empty cell never clears anything. Importing the same file again changes nothing.
    """
    from inboxcrm.app import csv_import
    from inboxcrm.store.db import transaction

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read {file}: {exc.strerror}") from None
    team = app.config.team
    with transaction(app.factory()) as session:
        result = csv_import.import_csv(
            session, app.now(), app.actor, data, maps=maps, delimiter=delimiter, encoding=encoding, dry_run=dry_run,
            update=update, skip_bad=skip_bad, today=app.local_now().date(), team_domains=frozenset(team.domains),
            freemail_extra=frozenset(team.freemail_domains), file_name=file.name)
    delimiter_name = {"\t": "tab"}.get(result.delimiter, result.delimiter)
    echo(f"{file.name}: {views.plural(result.rows, 'row')}, {result.encoding}, delimiter {delimiter_name}")
    if result.ignored_columns:
        echo("not imported: column " + ", ".join(f'"{c}"' for c in result.ignored_columns)
             + ' (no field reads it; --map "FIELD=HEADER" to use one)', err=True)
    for outcome in result.outcomes:
        if dry_run or outcome.action in SHOWN_ALWAYS:
            ref = f" -> {outcome.ref}" if outcome.ref and outcome.action in ("create", "update") else ""
            echo(f"{outcome.action}: {outcome.text()}{ref}")
    counts = result.counts
    summary = ", ".join(f"{n} {action}" for action, n in counts.items() if n)
    if dry_run:
        echo(f"dry run, nothing written: {summary or 'no rows'}")
    elif result.written:
        echo(f"imported: {summary or 'no rows'}")
        if counts["differs"]:
            echo(f"{views.plural(counts['differs'], 'row')} matched a contact and differ; not changed "
                 "(--update changes them)", err=True)
    else:
        raise Failure(f"nothing imported: {views.plural(counts['refused'], 'row')} refused (listed above); "
                      "fix them, or import the rest with --skip-bad")
