"""Setting up: ``init``, ``db upgrade`` and ``demo``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from inboxcrm.cli.common import App, Failure, echo, pass_app, write_file


def example_config() -> str:
    packaged = resources.files("inboxcrm").joinpath("config.example.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "config.example.toml").read_text(encoding="utf-8")


def _upgrade(app: App) -> str:
    from inboxcrm.store import db

    before = db.current_revision(app.engine)
    db.upgrade(app.engine)
    after = db.current_revision(app.engine)
    where = app.engine.url.render_as_string(hide_password=True)
    if before == after:
        return f"database: {where} is up to date (revision {after})"
    return f"database: {where} " + (f"created (revision {after})" if before is None else
                                    f"upgraded from revision {before} to {after}")


@click.command()
@pass_app
def init(app: App) -> None:
    """Set up inboxcrm: write a configuration file if there is none, then create the database.

    Safe to run again: an existing configuration is kept and the database is only upgraded.
    """
    from inboxcrm.config import resolve_config_path

    path, _ = resolve_config_path(app.config_path)
    if path.exists():
        echo(f"config: {path} exists, kept as it is")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Failure(f"cannot create the folder {exc.filename} for the configuration ({exc.strerror}); "
                          f"give another place with --config PATH (or INBOXCRM_CONFIG)") from None
        write_file(path, example_config(), replace=False)
        echo(f"config: wrote {path} from the example")
    if app.engine.dialect.name == "sqlite" and app.engine.url.database:
        echo(f"data: {Path(app.engine.url.database).resolve().parent}")
    echo(_upgrade(app))
    echo("\nnext steps:\n"
         f"  1. edit {path}: set [team] domains to your email domains\n"
         "  2. inboxcrm rep add alice --email alice@example.com\n"
         "  3. inboxcrm mailbox add sales --role capture --owner alice \\\n"
         "       --host imap.example.com --user sales@example.com --password-env SALES_IMAP_PASSWORD\n"
         "     (Google Workspace or Microsoft 365: --auth xoauth2, then inboxcrm mailbox authorize sales;\n"
         "      docs/oauth.md walks through it)\n"
         "  4. inboxcrm mailbox test sales, then inboxcrm poll --once   (or: inboxcrm import PATH "
         "--mailbox sales for an mbox, Maildir or .eml files)\n"
         "  5. inboxcrm run   (the daemon; systemd/README.md installs it as a service)\n"
         "  6. inboxcrm pipeline")
    commands = app.config.commands
    echo(f"\ncommands by email (once [commands] address is set): {commands.describe()}"
         + ("" if commands.trusted_authserv_ids else
            "\n  to accept a rep's mail without a token, name the team's receiving server in "
            "[commands] trusted_authserv_ids (Google Workspace: mx.google.com)"))


@click.group("db")
def database() -> None:
    """The database schema."""


@database.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Bring the database schema up to this version of inboxcrm (creating it if empty)."""
    echo(_upgrade(app))


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the demo's own database and config, both replaced on every run "
                   "(default: demo/ in the data directory, e.g. ~/.local/share/inboxcrm/demo).")
def demo(data_dir: Path | None) -> None:
    """Run a self-contained demo: sample mail through the whole pipeline, then the pipeline view."""
    from inboxcrm.app.demo import run_demo

    run_demo(data_dir, echo)
