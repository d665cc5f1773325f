"""``contact``, ``company`` and ``merge``: keeping the CRM's people and companies clean.

Each group only lists its commands; the commands live with their job (``cli.merge`` for merging
and undoing, ``cli.forget`` for erasing a person) and are imported when one of them runs.
"""
from __future__ import annotations

import click

from inboxcrm.cli.lazy import Lazy, LazyGroup


@click.group(cls=LazyGroup, lazy={
    "merge": Lazy("inboxcrm.cli.merge:contact_merge", "Merge contact B into contact A."),
    "forget": Lazy("inboxcrm.cli.forget:contact_forget", "Erase a person on request."),
})
def contact() -> None:
    """One contact: merge a duplicate into it, or erase a person on request."""


@click.group(cls=LazyGroup, lazy={
    "merge": Lazy("inboxcrm.cli.merge:company_merge", "Merge company B into company A."),
})
def company() -> None:
    """One company: merge a duplicate into it."""


@click.group(cls=LazyGroup, lazy={
    "list": Lazy("inboxcrm.cli.merge:merge_list", "List the merges made, newest first."),
    "undo": Lazy("inboxcrm.cli.merge:merge_undo", "Undo a merge, putting back every row as it was."),
})
def merge() -> None:
    """Merges of contacts and companies: list them, undo one."""
