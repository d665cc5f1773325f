"""What every command module shares: printing, refusals, the ``App`` a command gets, and the
small option and listing helpers.

Light on purpose: ``inboxcrm --help`` and ``--version`` load this and click, nothing more. The
configuration, the database and the use cases are imported by the method or command that needs
them, when it runs.
"""
from __future__ import annotations

import getpass
import importlib
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from inboxcrm import __version__, logs
from inboxcrm.clock import utcnow
from inboxcrm.core import views
from inboxcrm.errors import InboxCRMError

JSON_HELP = "Print JSON instead of a table."


def echo(message: str = "", err: bool = False, nl: bool = True, redraw: bool = False) -> None:
    """Prints ``message`` with control characters made visible (``views.printable``): the one
    way the command line writes, so that no subject, name, body or server reply can drive the
    terminal. ``redraw``: start the line over (a progress count), the only CR let through."""
    click.echo(("\r" if redraw else "") + views.printable(message), err=err, nl=nl)


def csv_out(text: str, bom: bool = False) -> None:
    """CSV goes out as UTF-8 bytes whatever the terminal's locale says, because a spreadsheet reads
    the bytes (``echo`` writes text in the locale's encoding); control characters are made visible
    first, as ``echo`` does with everything else printed. ``bom``: a byte order mark first, the
    one sign by which Excel reads a CSV file as UTF-8."""
    text = ("\ufeff" if bom else "") + text
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stdout (an embedding's): it has its own encoding
        echo(text, nl=False)
        return
    sys.stdout.flush()
    buffer.write(views.printable(text).encode("utf-8"))
    buffer.flush()


def csv_option(fn):
    """``--csv`` and ``--bom``, for a listing a spreadsheet should open."""
    fn = click.option("--bom", is_flag=True, help="With --csv: start with a byte order mark, so that Excel reads "
                                                  "UTF-8.")(fn)
    return click.option("--csv", "as_csv", is_flag=True,
                        help="Print CSV in UTF-8 for a spreadsheet: dates as YYYY-MM-DD, money as plain decimals, "
                             "cells that would start a formula (= + - @) prefixed with an apostrophe.")(fn)


class Failure(click.ClickException):
    """Shown as ``error: <message>`` with exit status 2, the same for every refusal."""

    exit_code = 2

    def show(self, file=None) -> None:
        echo(f"error: {self.format_message()}", err=True)


class Crash(Failure):
    """What no refusal foresaw: one line and where its traceback went, exit status 1."""

    exit_code = 1


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def crash(exc: Exception) -> Crash:
    """``exc`` reached the top: its traceback goes to errors.log, the user gets what it was and
    where to find the rest. An OSError names its file, which is usually the whole story."""
    from inboxcrm.config import default_data_dir

    if isinstance(exc, OSError) and exc.strerror:
        what = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        what = f"unexpected {type(exc).__name__}" + (f": {first_line(str(exc))}" if str(exc).strip() else "")
    try:
        saved = logs.save_traceback(exc, f"inboxcrm {__version__}: {' '.join(sys.argv)}",
                                    default_data_dir(os.environ), utcnow())
        where = f"details in {saved}"
    except OSError as unsaved:
        where = f"the details could not be saved: {unsaved.strerror}: {unsaved.filename}"
    return Crash(f"{what} ({where})")


def database_problem(exc: Exception) -> str | None:
    """What the store says about ``exc`` if it is a database that cannot be used (server down,
    file locked), else None. Only an exception of SQLAlchemy's own can be one, so any other
    passes without loading the store."""
    if not type(exc).__module__.startswith("sqlalchemy."):
        return None
    from inboxcrm.store.db import unusable_database

    return unusable_database(exc)


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that Python's flush at exit does not hit the closed pipe
    again and print a warning (the recipe of the ``signal`` module's documentation)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test runner's capture)
        pass


class Group(click.Group):
    """Turns every exception into one line on stderr: a Python traceback never reaches a user."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InboxCRMError as exc:
            raise Failure(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, EOFError):
            raise  # click's own: usage errors, --help, Ctrl-C, each shown its own way
        except BrokenPipeError:  # the reader left (| head): no one to tell, nothing went wrong here
            _silence_stdout()
            raise click.exceptions.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - the top of the command line: nothing passes raw
            problem = database_problem(exc)
            if problem is not None:
                raise Failure(f"database: {first_line(problem)}") from None
            raise crash(exc) from None


def load(path: str) -> Any:
    """The object a ``"package.module:name"`` path names, imported now: how commands reach the
    parts they only need when they run."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class App:
    """What every command needs, built on first use so that ``--help`` needs no config."""

    def __init__(self, config_path: str | None, database_url: str | None):
        self.config_path, self.database_url = config_path, database_url
        self.actor = "cli:" + getpass.getuser()
        self._config = None
        self._engine = None
        self._factory = None

    @property
    def config(self):
        """The ``inboxcrm.config.Config`` of the file ``--config`` (or its defaults) names."""
        if self._config is None:
            from inboxcrm.config import load_config, resolve_config_path

            path, named = resolve_config_path(self.config_path)
            cfg = load_config(path, named)
            for line in cfg.deprecations:
                echo(f"warning: {line}", err=True)
            self._config = cfg.with_database_url(self.database_url) if self.database_url else cfg
        return self._config

    @property
    def engine(self):
        if self._engine is None:  # db.make_engine refuses an unusable URL or data directory itself
            from inboxcrm.store import db

            self._engine = db.make_engine(db.database_url(self.config.database))
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def factory(self):
        """Sessions on a database whose schema is this version's; anything else is refused."""
        if self._factory is None:
            from inboxcrm.store import db

            current, head = db.current_revision(self.engine), db.head_revision()
            where = self.engine.url.render_as_string(hide_password=True)
            if current is None:
                raise Failure(f'the database {where} has no inboxcrm tables yet; run "inboxcrm init"')
            if current != head:
                raise Failure(f'the database {where} has schema revision {current}, this inboxcrm needs {head}; '
                              f'run "inboxcrm db upgrade"')
            self._factory = db.session_factory(self.engine)
        return self._factory

    @staticmethod
    def now() -> datetime:
        return utcnow()

    def local_now(self) -> datetime:
        """Now in the team's time zone: what "today" and "overdue" mean to the team."""
        return self.now().astimezone(ZoneInfo(self.config.team.timezone))

    def write(self, fn: Callable, *args, **kwargs):
        """``fn(session, now, actor, ...)`` in one transaction."""
        from inboxcrm.store.db import transaction

        with transaction(self.factory()) as session:
            return fn(session, self.now(), self.actor, *args, **kwargs)

    def read(self, fn: Callable, *args, **kwargs):
        with self.factory()() as session:
            return fn(session, *args, **kwargs)


def emit(rows: Any, listing: views.Listing | None, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    echo(views.to_json(rows) if as_json else text(rows) if text else views.table(rows, listing))


def write_file(path: Path, data: str | bytes, replace: bool = True) -> None:
    """Writes a file the user named; a path that cannot be written is a refusal naming it,
    and an existing file is kept unless ``replace`` (so a typo cannot overwrite one)."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(path, "wb" if replace else "xb") as out:
            out.write(content)
    except FileExistsError:
        raise Failure(f"{path} exists; give another FILE, or --force to replace it") from None
    except OSError as exc:
        raise Failure(f"cannot write {path}: {exc.strerror}; choose a path in a folder you can write to") from None


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(fn)


pass_app = click.make_pass_decorator(App)


def list_command(group: click.Group, query: str, listing: views.Listing, help: str) -> None:
    """``GROUP list [--json]``: the listings that take no options. ``query``: the
    ``"module:function"`` that reads the rows from a session, imported when the listing runs."""
    @group.command("list", help=help)
    @json_option
    @pass_app
    def command(app: App, as_json: bool) -> None:
        emit(app.read(load(query)), listing, as_json)
