"""``contacts duplicates``, ``contact merge``, ``company merge``, ``merge list`` and ``merge undo``.

The groups live in ``cli.people`` (and ``contacts`` in ``cli.deals``) and import these commands
when one of them runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from inboxcrm.cli.common import App, echo, emit, json_option, pass_app
from inboxcrm.core import views
from inboxcrm.core.duplicates import DEFAULT_MIN_SCORE

if TYPE_CHECKING:
    from inboxcrm.app.merge import MergeDone
    from inboxcrm.core.duplicates import Found

MERGES = views.Listing(
    (views.col("ID", "id", right=True), views.col("KIND", "kind"), views.col("KEPT", "kept_id", right=True),
     views.col("MERGED", "merged_id", right=True), views.col("WHEN", "at"), views.col("BY", "actor"),
     views.col("MOVED", "moved", right=True), views.col("UNDONE", "undone_at"), views.col("UNDONE BY", "undone_by")),
    "no merges yet (inboxcrm contacts duplicates suggests some)")


@click.command("duplicates")
@click.option("--min-score", type=click.IntRange(0, 100), default=DEFAULT_MIN_SCORE, show_default=True,
              metavar="N", help="Only pairs at least N% alike (0 to 100); the same mailbox written two ways is 100.")
@json_option
@pass_app
def contacts_duplicates(app: App, min_score: int, as_json: bool) -> None:
    """List contacts and companies that are likely duplicates, with why and a similarity score.

    Each pair is shown with the merge command that would clean it; the older record is the one
    kept, so it keeps its owner (deal registration). Nothing is changed.
    """
    from inboxcrm.app.merge import find_duplicates

    team = app.config.team
    found = app.read(find_duplicates, frozenset(team.domains), frozenset(team.freemail_domains), min_score)
    rows = [{"kind": c.kind, "score": c.score, "keep_id": c.keep_id, "keep": c.keep, "merge_id": c.merge_id,
             "merge": c.merge, "reasons": list(c.reasons), "command": c.command} for c in found.candidates]
    emit(rows, None, as_json, lambda _: _render_duplicates(found, min_score))


def _render_duplicates(found: Found, min_score: int) -> str:
    if not found.candidates:
        return f"no likely duplicates at --min-score {min_score}"
    lines = []
    for c in found.candidates:
        lines += [f"{c.score:3d}%  {c.kind} {c.keep_id} {c.keep}  <-  {c.kind} {c.merge_id} {c.merge}",
                  *(f"      {reason}" for reason in c.reasons), f"      {c.command}", ""]
    return "\n".join(lines).rstrip()


def _render_merge(done: MergeDone) -> str:
    moved = ", ".join(f"{n} {table}" for table, n in sorted(done.moved.items())) or "nothing"
    changed = "; ".join(f"{field} {views.cell(old) or '(none)'} -> {views.cell(new) or '(none)'}"
                        for field, (old, new) in sorted(done.changed.items()))
    return "\n".join([f"merged {done.kind} {done.merged_id} {done.merged} into {done.kind} {done.kept_id} "
                      f"{done.kept} (merge {done.merge_id})",
                      f"  moved: {moved}",
                      *([f"  kept {done.kind} took: {changed}"] if changed else []),
                      f"  undo: inboxcrm merge undo {done.merge_id}"])


@click.command("merge")
@click.argument("a")
@click.argument("b")
@pass_app
def contact_merge(app: App, a: str, b: str) -> None:
    """Merge contact B into contact A.

    A and B are contact ids or addresses. B's addresses, messages and deals (with their notes)
    move to A, and B is deleted; A keeps the owner of whichever was first seen (deal
    registration). "inboxcrm merge undo" puts everything back.
    """
    from inboxcrm.app.merge import merge_contacts

    echo(_render_merge(app.write(merge_contacts, a, b)))


@click.command("merge")
@click.argument("a")
@click.argument("b")
@pass_app
def company_merge(app: App, a: str, b: str) -> None:
    """Merge company B into company A.

    A and B are company ids or domains. B's contacts and deals move to A, and B is deleted.
    "inboxcrm merge undo" puts everything back.
    """
    from inboxcrm.app.merge import merge_companies

    echo(_render_merge(app.write(merge_companies, a, b)))


@click.command("list")
@json_option
@pass_app
def merge_list(app: App, as_json: bool) -> None:
    """List the merges made, newest first."""
    from inboxcrm.app.merge import list_merges

    emit(app.read(list_merges), MERGES, as_json)


@click.command("undo")
@click.argument("merge_id", type=int, required=False, metavar="[MERGE_ID]")
@pass_app
def merge_undo(app: App, merge_id: int | None) -> None:
    """Undo a merge, putting back every row as it was.

    MERGE_ID is a number from "inboxcrm merge list" (default: the latest merge not undone).
    Refused, naming what changed, when a row it would put back was changed or deleted since.
    """
    from inboxcrm.app.merge import undo_merge

    done = app.write(undo_merge, merge_id)
    echo(f"undid merge {done.merge_id}: {done.kind} {done.merged_id} is back, {done.restored} rows restored")
