"""The command line reference, docs/cli.md, written from the click commands themselves so that
it cannot drift from them: ``python -m inboxcrm.cli.reference > docs/cli.md``.

A test compares the committed page with what this writes, so a changed option, help text or
command fails the suite until the page is regenerated.
"""
from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator

import click

from inboxcrm.cli import main

REGENERATE = "python -m inboxcrm.cli.reference > docs/cli.md"
WIDTH = 100  # usage lines and defaults as a terminal of this width shows them, whatever the terminal

INTRODUCTION = f"""\
# Command line reference

Every `inboxcrm` command with its usage, help and options, as `inboxcrm COMMAND --help` shows
them. This page is generated from the commands (`{REGENERATE}`); edit the help in
`inboxcrm/cli/` and regenerate it rather than editing it here.

Options of `inboxcrm` itself (`--config`, `--database-url`) come before the command:
`inboxcrm --config /etc/inboxcrm/config.toml deals list`.

## Shell completion

`inboxcrm` completes command names, options and their choices (click's shell completion) in
bash (4.4 or later), zsh and fish. Completion runs `inboxcrm` with `_INBOXCRM_COMPLETE` set, so
the `inboxcrm` script must be on the `PATH`.

| Shell | Add to | Line |
|---|---|---|
| bash | `~/.bashrc` | `eval "$(_INBOXCRM_COMPLETE=bash_source inboxcrm)"` |
| zsh | `~/.zshrc` | `eval "$(_INBOXCRM_COMPLETE=zsh_source inboxcrm)"` |
| fish | `~/.config/fish/completions/inboxcrm.fish` | `_INBOXCRM_COMPLETE=fish_source inboxcrm \\| source` |

The `eval` lines run `inboxcrm` at every shell start. To avoid that, write the script once and
source the file instead (again after upgrading inboxcrm):

```sh
_INBOXCRM_COMPLETE=bash_source inboxcrm > ~/.inboxcrm-complete.bash   # then in ~/.bashrc: . ~/.inboxcrm-complete.bash
_INBOXCRM_COMPLETE=zsh_source inboxcrm > ~/.inboxcrm-complete.zsh     # then in ~/.zshrc:  . ~/.inboxcrm-complete.zsh
_INBOXCRM_COMPLETE=fish_source inboxcrm > ~/.config/fish/completions/inboxcrm.fish
```
"""

# what Markdown would read as markup in help text: emphasis, code, HTML, a table cell's end; an
# underscore only at the edge of a word (GitHub leaves quiet_days alone)
_MARKUP = re.compile(r"([\\`*<|]|(?<!\w)_|_(?!\w))")


def escape(text: str) -> str:
    """Help text as literal Markdown: ``--password-*`` and ``\\Inbox`` stay as written."""
    return _MARKUP.sub(r"\\\1", text)


def commands(command: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    """``command`` and every command under it, depth first in ``--help`` order, each with its context."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from commands(sub, click.Context(sub, info_name=name, parent=ctx))


def anchor(ctx: click.Context) -> str:
    """The id GitHub gives the heading ``ctx.command_path``."""
    return ctx.command_path.replace(" ", "-")


def paragraphs(text: str) -> list[str]:
    """The help's paragraphs, each on one line (Markdown joins the lines of a paragraph anyway)."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", inspect.cleandoc(text)) if p.strip()]


def section(command: click.Command, ctx: click.Context) -> str:
    depth = ctx.command_path.count(" ")
    usage = f"{ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}".rstrip()
    lines = [f"{'#' * min(2 + depth, 6)} {ctx.command_path}", "", "```", f"Usage: {usage}", "```", ""]
    lines += [line for p in paragraphs(command.help or "") for line in (escape(p), "")]
    options = [record for param in command.get_params(ctx)
               if isinstance(param, click.Option) and (record := param.get_help_record(ctx))]
    if options:
        lines += ["| Option | Description |", "|---|---|"]
        lines += [f"| `{names}` | {escape(' '.join(help.split()))} |" for names, help in options]
        lines.append("")
    if isinstance(command, click.Group):
        subcommands = [f"[{name}](#{anchor(ctx)}-{name})" for name in command.list_commands(ctx)]
        lines += ["Commands: " + ", ".join(subcommands), ""]
    return "\n".join(lines)


def markdown(group: click.Group = main) -> str:
    """The whole page: introduction, contents, then one section per command."""
    root = click.Context(group, info_name="inboxcrm", terminal_width=WIDTH, max_content_width=WIDTH,
                         **group.context_settings)
    found = list(commands(group, root))
    contents = ["## Contents", ""] + [
        f"{'  ' * ctx.command_path.count(' ')}- [{ctx.command_path}](#{anchor(ctx)})" for _, ctx in found]
    return "\n".join([INTRODUCTION, *contents, "", *(section(cmd, ctx) for cmd, ctx in found)]).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
