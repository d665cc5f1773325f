"""docs/cli.md is generated from the click commands and must be what the generator writes today."""
from __future__ import annotations

import difflib
from pathlib import Path

import click
import pytest

from inboxcrm.cli import main
from inboxcrm.cli.reference import REGENERATE, commands, escape, markdown

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_what_the_generator_writes():
    written, committed = markdown(), PAGE.read_text(encoding="utf-8")
    if written != committed:
        diff = difflib.unified_diff(committed.splitlines(), written.splitlines(), "docs/cli.md", "generated",
                                    lineterm="", n=1)
        pytest.fail(f"docs/cli.md differs from the commands; regenerate it: {REGENERATE}\n"
                    + "\n".join(list(diff)[:40]))


def test_every_command_and_option_is_in_the_reference():
    page = markdown()
    root = click.Context(main, info_name="inboxcrm", **main.context_settings)
    found = list(commands(main, root))
    assert len(found) > 60
    for command, ctx in found:
        assert f"# {ctx.command_path}\n" in page and f"(#{ctx.command_path.replace(' ', '-')})" in page
        for option in command.params:
            if isinstance(option, click.Option):
                assert f"| `{option.get_help_record(ctx)[0]}` |" in page, (ctx.command_path, option.name)


def test_the_reference_documents_completion_for_each_shell():
    page = markdown()
    for shell in ("bash", "zsh", "fish"):
        assert f"_INBOXCRM_COMPLETE={shell}_source inboxcrm" in page


def test_help_text_stays_literal_in_markdown():
    assert escape("--password-* [pipeline] quiet_days <ADDR> \\Inbox a|b _x_") == \
        "--password-\\* [pipeline] quiet_days \\<ADDR> \\\\Inbox a\\|b \\_x\\_"
