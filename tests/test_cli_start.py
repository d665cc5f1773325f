"""Starting the command line: ``--help``, ``--version`` and completing a command name load click
and the command line's own frame, not the database, templates, mail parser or IMAP client.

A behaviour test, not a timing test: it asserts what a fresh interpreter has imported (the time
is bench/cli_start_bench.py's job).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from inboxcrm.cli import COMMANDS, main

HEAVY = ("sqlalchemy", "alembic", "jinja2", "mailparser", "imapclient", "apscheduler")

# Runs the real command line in a fresh interpreter, then prints which of HEAVY and which
# command modules it had imported by the time the command was done.
PROBE = """
import json, sys
from inboxcrm.cli import main
try:
    main(sys.argv[1:], prog_name="inboxcrm")
except SystemExit:
    pass
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
commands = sorted(m for m in sys.modules if m.startswith("inboxcrm.cli.") and m not in
                  ("inboxcrm.cli.common", "inboxcrm.cli.lazy"))
sys.__stderr__.write(json.dumps({"heavy": loaded, "commands": commands}))
"""


def started(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + PROBE, *args], capture_output=True,
                            text=True, check=False, env={**os.environ, **env})
    return result, json.loads(result.stderr.splitlines()[-1])


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("-h",), ()])
def test_help_and_version_import_no_command_and_nothing_heavy(args):
    result, loaded = started(*args)
    shown = result.stdout or result.stderr  # alone, inboxcrm shows its help on stderr
    assert shown.startswith("inboxcrm, version" if args == ("--version",) else "Usage: inboxcrm")
    assert loaded == {"heavy": [], "commands": []}


def test_completing_a_command_name_imports_no_command():
    result, loaded = started(_INBOXCRM_COMPLETE="bash_complete", COMP_WORDS="inboxcrm de", COMP_CWORD="1")
    assert result.stdout.split() == ["plain,deal", "plain,deals", "plain,demo"]
    assert loaded == {"heavy": [], "commands": []}


def test_a_command_imports_its_own_module_only():
    result, loaded = started("deal", "--help")
    assert "Usage: inboxcrm deal" in result.stdout
    assert loaded == {"heavy": [], "commands": ["inboxcrm.cli.deals"]}


def test_every_listed_summary_is_the_command_s_own():
    """``--help`` lists the registered summaries without importing the commands; each must be
    what the command itself would show, at any width."""
    ctx = click.Context(main, info_name="inboxcrm")
    for name, lazy in COMMANDS.items():
        real = main.get_command(ctx, name)
        assert real.name == name, f"{lazy.path} is called {real.name}, listed as {name}"
        stand_in = click.Command(name, help=lazy.summary)
        for width in (30, 45, 80, 1000):
            assert stand_in.get_short_help_str(width) == real.get_short_help_str(width), (
                f'COMMANDS["{name}"]: the summary differs from the first sentence of {lazy.path}\'s help')
