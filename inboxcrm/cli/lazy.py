"""The top-level group whose commands are imported only when used (click's documented
"lazy loading" pattern).

Each command is registered by where it lives and its one-line summary, so ``inboxcrm --help``,
``--version`` and completing a command name import no command module, and running one imports
that command's module and what it uses, not the whole program.
"""
from __future__ import annotations

from typing import NamedTuple

import click

from inboxcrm.cli.common import Group, load


class Lazy(NamedTuple):
    """A command not imported yet: ``path`` is ``"module:name"``; ``summary`` is what ``--help``
    lists for it, the first sentence of the command's own help (a test keeps the two equal)."""

    path: str
    summary: str


class LazyGroup(Group):
    def __init__(self, *args, lazy: dict[str, Lazy], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(load(self.lazy[cmd_name].path), cmd_name)
        return super().get_command(ctx, cmd_name)

    def listed(self, ctx: click.Context) -> list[tuple[str, click.Command]]:
        """Every command as ``--help`` and completion show it: one not imported yet stands in as
        its summary, so listing the commands imports none of them."""
        return [(name, self.commands.get(name) or click.Command(name, help=self.lazy[name].summary))
                for name in self.list_commands(ctx)]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own layout (``Group.format_commands``), from the summaries."""
        commands = [(name, cmd) for name, cmd in self.listed(ctx) if not cmd.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
        """Command names and their summaries, then the options (``Group.shell_complete``)."""
        from click.shell_completion import CompletionItem

        names = [CompletionItem(name, help=cmd.get_short_help_str()) for name, cmd in self.listed(ctx)
                 if not cmd.hidden and name.startswith(incomplete)]
        return names + click.Command.shell_complete(self, ctx, incomplete)
