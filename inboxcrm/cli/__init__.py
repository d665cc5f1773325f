"""The ``inboxcrm`` command: builds config, engine and sessions, calls a function, prints.

No business rule lives here. Refusals (``errors.InboxCRMError``) become one line on stderr
and exit status 2; anything unforeseen becomes one line and exit status 1, its traceback saved
to errors.log in the data directory, never shown. Everything printed passes through ``echo``,
which makes control characters from mail visible. Commands that reach the pipeline import it
when run, so the rest of the command line keeps working while an optional part is broken or
missing.
"""
from __future__ import annotations

import getpass
import os
import sys
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import click
from sqlalchemy.exc import OperationalError

from inboxcrm import __version__, logs
from inboxcrm import config as config_mod
from inboxcrm.app import deals, team
from inboxcrm.clock import utcnow
from inboxcrm.core import verbs, views
from inboxcrm.errors import InboxCRMError
from inboxcrm.store import db

JSON_HELP = "Print JSON instead of a table."


def echo(message: str = "", err: bool = False, nl: bool = True, redraw: bool = False) -> None:
    """Prints ``message`` with control characters made visible (``views.printable``): the one
    way the command line writes, so that no subject, name, body or server reply can drive the
    terminal. ``redraw``: start the line over (a progress count), the only CR let through."""
    click.echo(("\r" if redraw else "") + views.printable(message), err=err, nl=nl)


class Failure(click.ClickException):
    """Shown as ``error: <message>`` with exit status 2, the same for every refusal."""

    exit_code = 2

    def show(self, file=None) -> None:
        echo(f"error: {self.format_message()}", err=True)


class Crash(Failure):
    """What no refusal foresaw: one line and where its traceback went, exit status 1."""

    exit_code = 1


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def crash(exc: Exception) -> Crash:
    """``exc`` reached the top: its traceback goes to errors.log, the user gets what it was and
    where to find the rest. An OSError names its file, which is usually the whole story."""
    if isinstance(exc, OSError) and exc.strerror:
        what = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        what = f"unexpected {type(exc).__name__}" + (f": {_first_line(str(exc))}" if str(exc).strip() else "")
    try:
        saved = logs.save_traceback(exc, f"inboxcrm {__version__}: {' '.join(sys.argv)}",
                                    config_mod.default_data_dir(os.environ), utcnow())
        where = f"details in {saved}"
    except OSError as unsaved:
        where = f"the details could not be saved: {unsaved.strerror}: {unsaved.filename}"
    return Crash(f"{what} ({where})")


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
        except OperationalError as exc:
            raise Failure(f"database: {_first_line(str(exc.orig or exc))}") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, EOFError):
            raise  # click's own: usage errors, --help, Ctrl-C, each shown its own way
        except BrokenPipeError:  # the reader left (| head): no one to tell, nothing went wrong here
            _silence_stdout()
            raise click.exceptions.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - the top of the command line: nothing passes raw
            raise crash(exc) from None


class App:
    """What every command needs, built on first use so that ``--help`` needs no config."""

    def __init__(self, config_path: str | None, database_url: str | None):
        self.config_path, self.database_url = config_path, database_url
        self.actor = "cli:" + getpass.getuser()
        self._config: config_mod.Config | None = None
        self._engine = None
        self._factory = None

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            path, named = config_mod.resolve_config_path(self.config_path)
            cfg = config_mod.load_config(path, named)
            for line in cfg.deprecations:
                echo(f"warning: {line}", err=True)
            self._config = cfg.with_database_url(self.database_url) if self.database_url else cfg
        return self._config

    @property
    def engine(self):
        if self._engine is None:  # db.make_engine refuses an unusable URL or data directory itself
            self._engine = db.make_engine(config_mod.database_url(self.config.database))
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def factory(self):
        """Sessions on a database whose schema is this version's; anything else is refused."""
        if self._factory is None:
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
        with db.transaction(self.factory()) as session:
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


def list_command(group: click.Group, fn: Callable, listing: views.Listing, help: str) -> None:
    """``GROUP list [--json]``: the listings that take no options."""
    @group.command("list", help=help)
    @json_option
    @pass_app
    def command(app: App, as_json: bool) -> None:
        emit(app.read(fn), listing, as_json)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="INBOXCRM_CONFIG", metavar="PATH",
              help="Configuration file (env INBOXCRM_CONFIG; default ~/.config/inboxcrm/config.toml).")
@click.option("--database-url", envvar="INBOXCRM_DATABASE_URL", metavar="URL",
              help="SQLAlchemy database URL, overriding the configuration's [database] url "
                   "(env INBOXCRM_DATABASE_URL).")
@click.version_option(__version__, prog_name="inboxcrm")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, database_url: str | None) -> None:
    """inboxcrm: a sales CRM that lives in the team's inbox.

    Start with "inboxcrm init", add reps and mailboxes, then import mail.
    Log level: env INBOXCRM_LOG_LEVEL (default WARNING); log lines go to stderr as logfmt events.
    Errors are one line on stderr (exit status 2 for a refusal, 1 for anything unexpected, whose
    traceback is saved to errors.log in the data directory).
    """
    try:
        logs.setup(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = App(config_path, database_url)
    ctx.call_on_close(ctx.obj.close)


# -- setup ----------------------------------------------------------------------------------

def example_config() -> str:
    packaged = resources.files("inboxcrm").joinpath("config.example.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "config.example.toml").read_text(encoding="utf-8")


def _upgrade(app: App) -> str:
    before = db.current_revision(app.engine)
    db.upgrade(app.engine)
    after = db.current_revision(app.engine)
    where = app.engine.url.render_as_string(hide_password=True)
    if before == after:
        return f"database: {where} is up to date (revision {after})"
    return f"database: {where} " + (f"created (revision {after})" if before is None else
                                    f"upgraded from revision {before} to {after}")


@main.command()
@pass_app
def init(app: App) -> None:
    """Set up inboxcrm: write a configuration file if there is none, then create the database.

    Safe to run again: an existing configuration is kept and the database is only upgraded.
    """
    path, _ = config_mod.resolve_config_path(app.config_path)
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
         "  4. inboxcrm mailbox test sales, then inboxcrm poll --once   (or: inboxcrm import PATH "
         "--mailbox sales for an mbox, Maildir or .eml files)\n"
         "  5. inboxcrm run   (the daemon; systemd/README.md installs it as a service)\n"
         "  6. inboxcrm pipeline")
    commands = app.config.commands
    echo(f"\ncommands by email (once [commands] address is set): {commands.describe()}"
         + ("" if commands.trusted_authserv_ids else
            "\n  to accept a rep's mail without a token, name the team's receiving server in "
            "[commands] trusted_authserv_ids (Google Workspace: mx.google.com)"))


@main.group("db")
def database() -> None:
    """The database schema."""


@database.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Bring the database schema up to this version of inboxcrm (creating it if empty)."""
    echo(_upgrade(app))


# -- reps -----------------------------------------------------------------------------------

@main.group()
def rep() -> None:
    """The team's sales reps: who owns deals and whose addresses are ours."""


@rep.command("add")
@click.argument("name")
@click.option("--email", "emails", multiple=True, required=True, metavar="ADDR",
              help="An address of the rep; repeat for several.")
@click.option("--timezone", metavar="TZ", help="IANA time zone for the rep's digest (default: [team] timezone).")
@pass_app
def rep_add(app: App, name: str, emails: tuple[str, ...], timezone: str | None) -> None:
    """Add a rep with one or more addresses; NAME may use letters, digits, ".", "_" and "-"."""
    row = app.write(team.add_rep, name, list(emails), timezone or app.config.team.timezone)
    echo(f"added rep {row.name} ({', '.join(row.emails)}), timezone {row.timezone}")


list_command(rep, team.list_reps, views.REPS, "List reps with their addresses and open deals.")


@rep.command("remove")
@click.argument("name")
@pass_app
def rep_remove(app: App, name: str) -> None:
    """Remove a rep; one still named on deals, contacts or mailboxes is deactivated instead."""
    echo(views.render_removed(app.write(team.remove_rep, name)))


# -- mailboxes ------------------------------------------------------------------------------

@main.group()
def mailbox() -> None:
    """Mailboxes mail is read from: a capture mailbox (sales@) or a rep's own inbox."""


def _secret(kind: str, env: str | None, file: str | None, command: str | None):
    """The one secret source given as --KIND-env/-file/-command, the same sources as the config."""
    from inboxcrm.secret import SecretRef

    given = {k: v for k, v in (("env", env), ("file", file), ("command", command)) if v}
    if len(given) > 1:
        raise Failure(f"give only one of --{kind}-env, --{kind}-file, --{kind}-command")
    if "file" in given:  # the daemon runs elsewhere than this shell: keep no relative path
        given["file"] = str(Path(given["file"]).expanduser().resolve())
    return SecretRef(**given) if given else None


def imap_options(fn):
    """The connection options of ``mailbox add``: where and how to read the mailbox over IMAP."""
    options = [
        click.option("--host", help="IMAP server; without it the mailbox is fed by \"inboxcrm import\" only."),
        click.option("--port", type=int, help="Default: 993 for tls, 143 for starttls and plain."),
        click.option("--security", type=click.Choice(("tls", "starttls", "plain")), default="tls", show_default=True,
                     help="Implicit TLS, STARTTLS, or none (plain: only for a server on this machine)."),
        click.option("--no-verify", is_flag=True,
                     help="Do not check the server's certificate (logged as a warning at every connection); "
                          "prefer --ca-file for a private CA."),
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="PEM file of CAs to trust."),
        click.option("--user", help="IMAP login, often the email address."),
        click.option("--auth", type=click.Choice(("password", "xoauth2")), default="password", show_default=True,
                     help="xoauth2: OAuth2 for Gmail and Microsoft 365 (the secret is then the refresh token)."),
        click.option("--password-env", metavar="VAR", help="Environment variable holding the password."),
        click.option("--password-file", metavar="PATH",
                     help="File holding the password, e.g. a systemd credential "
                          "/run/credentials/inboxcrm.service/NAME."),
        click.option("--password-command", metavar="CMD", help="Command printing the password (no shell)."),
        click.option("--oauth-provider", type=click.Choice(("google", "microsoft")),
                     help="Where the access token comes from (with --auth xoauth2)."),
        click.option("--oauth-client-id", metavar="ID", help="The OAuth2 client the refresh token was issued to."),
        click.option("--oauth-client-secret-env", metavar="VAR", help="Environment variable holding the client secret."),
        click.option("--oauth-client-secret-file", metavar="PATH", help="File holding the client secret."),
        click.option("--oauth-client-secret-command", metavar="CMD", help="Command printing the client secret."),
        click.option("--oauth-token-url", metavar="URL", help="Token endpoint, instead of --oauth-provider."),
        click.option("--folder", "folders", multiple=True, metavar="FOLDER",
                     help="Repeatable: a special-use role (\\Inbox, \\Sent, \\All) or a folder name "
                          "(default: \\Inbox and \\Sent)."),
        click.option("--since", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD",
                     help="First sync reads mail from this day on (default: [sync] since_days ago)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def connection_from(app: App, options: dict) -> dict | None:
    """``ImapSettings.to_json()`` from the command's options, or None without --host."""
    password = _secret("password", options.pop("password_env"), options.pop("password_file"),
                       options.pop("password_command"))
    client_secret = _secret("oauth-client-secret", options.pop("oauth_client_secret_env"),
                            options.pop("oauth_client_secret_file"), options.pop("oauth_client_secret_command"))
    if options["host"] is None:
        given = [k for k, v in options.items() if v and k not in ("security", "auth")]
        if password or client_secret or given or options["security"] != "tls" or options["auth"] != "password":
            raise Failure("the connection options need --host (a mailbox without --host is fed by import only)")
        return None
    from inboxcrm.mail.imap import build_settings

    since = options.pop("since")
    since = since.date() if since else app.local_now().date() - timedelta(days=app.config.sync.since_days)
    ca_file = options.pop("ca_file")
    settings = build_settings(
        host=options["host"], port=options["port"], security=options["security"],
        verify=not options["no_verify"], ca_file=ca_file and str(Path(ca_file).resolve()), user=options["user"] or "",
        auth=options["auth"], secret=password, oauth_client_id=options["oauth_client_id"],
        oauth_client_secret=client_secret, oauth_provider=options["oauth_provider"],
        oauth_token_url=options["oauth_token_url"], folders=options["folders"], since=since)
    return settings.to_json()


@mailbox.command("add")
@click.argument("name")
@click.option("--owner", metavar="REP",
              help="Rep who owns the mailbox and new leads from it (required for --role rep).")
@click.option("--role", type=click.Choice(team.ROLES), required=True,
              help="capture: a shared address whose new senders are leads; rep: a rep's own inbox; "
                   "commands: the command address's mailbox, where reps' command emails arrive.")
@click.option("--source", metavar="S", help="Lead source recorded for new leads (default: the mailbox name for "
                                             "capture, rep-inbox for rep).")
@click.option("--policy", type=click.Choice(team.POLICIES),
              help="What a new sender becomes: create a lead, hold it for review, or ignore it "
                   "(default: create for capture, review for rep).")
@imap_options
@pass_app
def mailbox_add(app: App, name: str, owner: str | None, role: str, source: str | None, policy: str | None,
                **imap) -> None:
    """Add a mailbox NAME: where imported or polled mail counts as arriving, and what it makes of new senders.

    With --host it is read over IMAP by "inboxcrm run" and "inboxcrm poll"; check it with
    "inboxcrm mailbox test NAME". The secret stays where --password-* says; only that place is stored.
    """
    connection = connection_from(app, imap)
    row = app.write(team.add_mailbox, name, owner, role, source, policy, connection)
    echo(f"added {row.role} mailbox {row.name}: owner {row.owner or 'none'}, source {row.source}, "
         f"new senders: {row.policy}")
    if connection is not None:
        echo(f"IMAP: {row.imap} ({connection['security']}"
             f"{'' if connection['verify'] else ', certificate NOT verified'}), "
             f"folders {', '.join(connection['folders'])}, since {connection['since']}; "
             f'check it with "inboxcrm mailbox test {row.name}"')


@mailbox.command("connect")
@click.argument("name")
@imap_options
@pass_app
def mailbox_connect(app: App, name: str, **imap) -> None:
    """Give mailbox NAME its IMAP connection, or replace it (another secret source, port, folders).

    Takes the same connection options as "mailbox add"; all of them describe the new connection.
    The positions stay while the server and login are the same; with another server or login the
    first pass reads from --since again (messages already stored are recognised, never doubled).
    A running daemon uses the new settings from its next pass.
    """
    connection = connection_from(app, imap)
    if connection is None:
        raise Failure("mailbox connect needs --host (and the other connection options of mailbox add)")
    row = app.write(team.connect_mailbox, name, connection)
    echo(f"mailbox {row.name} now reads IMAP {row.imap} ({connection['security']}"
         f"{'' if connection['verify'] else ', certificate NOT verified'}), "
         f"folders {', '.join(connection['folders'])}; "
         f'check it with "inboxcrm mailbox test {row.name}"')


list_command(mailbox, team.list_mailboxes, views.MAILBOXES,
             "List mailboxes with role, owner, lead source, policy and stored message copies.")


@mailbox.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Remove even if stored messages were seen in it: the messages stay; the record that they "
                   "were seen in this mailbox, and its sync positions, go.")
@pass_app
def mailbox_remove(app: App, name: str, force: bool) -> None:
    """Remove a mailbox. Refused while stored messages were seen in it, unless --force."""
    echo(views.render_removed(app.write(team.remove_mailbox, name, force)))


# -- stages ---------------------------------------------------------------------------------

STAGE_HELP = "Stage name; any case, or a unique prefix such as prop for Proposal."


@main.group()
def stage() -> None:
    """Pipeline stages, in order; each is open, won or lost."""


list_command(stage, team.list_stages, views.STAGES, "List stages in pipeline order with the deals in each.")


@stage.command("add")
@click.argument("name")
@click.option("--after", metavar="STAGE", help="Put it after this stage (default: an open stage goes before the "
                                                "first won/lost stage, a closed one last).")
@click.option("--kind", type=click.Choice(team.STAGE_KINDS), default="open", show_default=True,
              help="open, or a closing stage: won or lost.")
@pass_app
def stage_add(app: App, name: str, after: str | None, kind: str) -> None:
    """Add a stage NAME."""
    row = app.write(team.add_stage, name, after, kind)
    echo(f"added {row.kind} stage {row.name} at position {row.position}")


@stage.command("remove")
@click.argument("name")
@click.option("--move-to", metavar="STAGE", help="Move the stage's deals to this stage (of the same kind) first.")
@pass_app
def stage_remove(app: App, name: str, move_to: str | None) -> None:
    """Remove a stage. Refused while deals are in it (unless --move-to) and for the last
    open, won or lost stage."""
    echo(views.render_removed(app.write(team.remove_stage, name, move_to)))


@stage.command("move")
@click.argument("name")
@click.option("--after", metavar="STAGE", help="Put it right after this stage.")
@click.option("--before", metavar="STAGE", help="Put it right before this stage.")
@json_option
@pass_app
def stage_move(app: App, name: str, after: str | None, before: str | None, as_json: bool) -> None:
    """Move a stage; give exactly one of --after or --before. Prints the new order."""
    emit(app.write(team.move_stage, name, after, before), views.STAGES, as_json)


# -- rules ----------------------------------------------------------------------------------

@main.group()
def rule() -> None:
    """Routing rules: when all conditions hold, the actions set source, owner, stage, score..."""


@rule.command("add")
@click.argument("name")
@click.option("--when", "conditions", multiple=True, metavar="KEY=VALUE",
              help="A condition, repeatable, all must hold (none: every message). Keys: "
                   "from, from-domain, to, mailbox, subject-contains, header.")
@click.option("--then", "actions", multiple=True, metavar="ACTION",
              help="An action, repeatable, at least one: source=NAME, owner=REP, owner=round-robin:REP1,REP2, "
                   "stage=STAGE, score+=N, ignore, review, form.")
@pass_app
def rule_add(app: App, name: str, conditions: tuple[str, ...], actions: tuple[str, ...]) -> None:
    """Add a rule NAME at the end of the table (earlier rules win for the same action)."""
    row = app.write(team.add_rule, name, list(conditions), list(actions))
    echo(f"added rule {row.name} at position {row.position}: when {views.conditions(row)} "
         f"then {', '.join(row.actions)}")


list_command(rule, team.list_rules, views.RULES, "List the rules in the order they are evaluated.")


@rule.command("remove")
@click.argument("name")
@pass_app
def rule_remove(app: App, name: str) -> None:
    """Remove the rule NAME."""
    echo(views.render_removed(app.write(team.remove_rule, name)))


@rule.command("explain")
@click.argument("message")
@click.option("--mailbox", metavar="NAME", help="Explain as if it arrived in this mailbox (default: the first one).")
@json_option
@pass_app
def rule_explain(app: App, message: str, mailbox: str | None, as_json: bool) -> None:
    """Say what would happen to MESSAGE and why: every classification and routing rule, fired or not.

    MESSAGE is the path of an .eml file or the Message-ID of a stored message. Changes nothing.
    """
    from inboxcrm.app import intake

    path = Path(message)
    if path.is_dir():
        raise Failure(f"{path} is a folder; give the path of one .eml file, or the Message-ID of a stored message")
    raw = path.read_bytes() if path.is_file() else app.read(team.stored_raw, message)
    if mailbox is not None:
        app.read(team.find_mailbox, mailbox)
    emit(intake.explain(app.factory(), app.config, raw, mailbox), views.EXPLANATIONS, as_json)


# -- import ---------------------------------------------------------------------------------

@main.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--mailbox", required=True, metavar="NAME", help="The mailbox the messages count as arriving in.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Skip messages dated before this day (in the team's time zone).")
@pass_app
def import_(app: App, path: Path, mailbox: str, since: datetime | None) -> None:
    """Import an mbox file, a Maildir, or a folder of .eml files through the pipeline.

    Re-running it is safe: messages already stored are recognised and change nothing.
    """
    from inboxcrm.app.importer import import_path, resolve_mailbox
    from inboxcrm.mail.local import count_messages

    factory = app.factory()
    app.read(resolve_mailbox, mailbox)  # refuse a wrong name before the progress bar starts
    start = since.replace(tzinfo=ZoneInfo(app.config.team.timezone)) if since else None
    stderr = sys.stderr
    with click.progressbar(length=count_messages(path), label="importing", file=stderr) as bar:
        report = import_path(factory, app.config, mailbox, path, start, bar.update)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    echo(f"imported {views.plural(report.total, 'message')} into {mailbox}" + (f": {counts}" if counts else ""))
    if report.skipped:
        echo(f"skipped {views.plural(len(report.skipped), 'unreadable file')} (the rest was imported; fix "
             "and import again, stored messages are recognised):", err=True)
        for name, why in report.skipped:
            echo(f"  {name}: {why}", err=True)


# -- deals ----------------------------------------------------------------------------------

@main.group("deals")
def deals_group() -> None:
    """Listing deals."""


@deals_group.command("list")
@click.option("--stage", metavar="STAGE", help=STAGE_HELP + " Only deals in this stage.")
@click.option("--owner", metavar="REP", help="Only deals this rep owns.")
@click.option("--quiet", type=int, is_flag=False, flag_value=-1, metavar="[DAYS]",
              help="Only open deals with no activity (email or a rep's update) for DAYS days "
                   "(alone: [pipeline] quiet_days).")
@click.option("--stalled", type=int, is_flag=False, flag_value=-1, metavar="[DAYS]",
              help="Only open deals whose stage has not changed for DAYS days (alone: [pipeline] stalled_days).")
@click.option("--all", "include_closed", is_flag=True, help="Include won and lost deals.")
@json_option
@pass_app
def deals_list(app: App, stage: str | None, owner: str | None, quiet: int | None, stalled: int | None,
               include_closed: bool, as_json: bool) -> None:
    """List open deals by stage, most recently active first."""
    quiet = app.config.pipeline.quiet_days if quiet == -1 else quiet
    stalled = app.config.pipeline.stalled_days if stalled == -1 else stalled
    now = app.now()
    rows = app.read(deals.list_deals, now, stage, owner, quiet, include_closed, stalled)
    emit(rows, views.deals_listing(app.local_now()), as_json)


@main.group("deal")
def deal() -> None:
    """One deal, by its reference such as D-42 (or just 42)."""


@deal.command("show")
@click.argument("ref")
@json_option
@pass_app
def deal_show(app: App, ref: str, as_json: bool) -> None:
    """Everything about a deal: contact, stage, next step, snooze, score, notes, history and messages."""
    emit(app.read(deals.show_deal, ref), None, as_json, lambda d: _render_deal(d, app.local_now()))


def _render_deal(d: deals.DealDetail, now: datetime) -> str:
    """A snooze in force goes right under the title: it is why the deal is missing from the digest."""
    text = views.render_deal(d, now)
    if d.snoozed_until is None or d.snoozed_until <= now.date():
        return text
    title, _, rest = text.partition("\n")
    return f"{title}\n  Snoozed until {d.snoozed_until.isoformat()} (wake it: inboxcrm deal snooze {d.ref} off)\n{rest}"


def _change(app: App, fn: Callable, *args, **kwargs) -> None:
    echo(views.render_change(app.write(fn, *args, **kwargs)))


@deal.command("stage")
@click.argument("ref")
@click.argument("stage", metavar="STAGE")
@click.option("--reason", default="", help="Why, for the stage history (required when moving to a lost stage).")
@pass_app
def deal_stage(app: App, ref: str, stage: str, reason: str) -> None:
    """Move a deal to STAGE (any case, or a unique prefix such as prop)."""
    _change(app, deals.set_stage, ref, stage, reason)


@deal.command("next")
@click.argument("ref")
@click.argument("text")
@click.option("--due", metavar="WHEN", help=f"When it is due: {deals.DUE_FORMS}.")
@click.option("--owner", metavar="REP", help="Who does it (default: whoever had the step, else the deal's owner).")
@pass_app
def deal_next(app: App, ref: str, text: str, due: str | None, owner: str | None) -> None:
    """Set the deal's next step TEXT."""
    _change(app, deals.set_next, ref, text, deals.parse_due(due, app.local_now().date()) if due else None, owner)


@deal.command("snooze", help="Leave the deal out of the quiet, stalled and no-next-step lists (digest and deals "
                              "list) until WHEN, at most a year ahead; new email from the prospect wakes it too. "
                              f"Overdue steps and replies owed still show.\n\nWHEN: {verbs.SNOOZE_FORMS}.")
@click.argument("ref")
@click.argument("when", nargs=-1, required=True, metavar="WHEN")
@pass_app
def deal_snooze(app: App, ref: str, when: tuple[str, ...]) -> None:
    today = app.local_now().date()
    _change(app, deals.set_snooze, ref, verbs.snooze_until(" ".join(when), today), today=today)


def _deal_edit(name: str, fn: Callable, metavar: str, help: str) -> None:
    """``deal NAME REF VALUE``: the edits that take one value and print the change."""
    @deal.command(name, help=help)
    @click.argument("ref")
    @click.argument("value", metavar=metavar)
    @pass_app
    def command(app: App, ref: str, value: str) -> None:
        _change(app, fn, ref, value)


for _name, _fn, _metavar, _help in (
    ("owner", deals.set_owner, "REP", "Give the deal to REP."),
    ("value", deals.set_value, "AMOUNT", "Set the deal's value AMOUNT, a number such as 12000 or 12000.50 "
                                         "(no currency)."),
    ("note", deals.add_note, "TEXT", "Add a note TEXT to the deal."),
    ("lost", deals.mark_lost, "REASON", "Mark the deal lost, with the REASON (required, for the win/loss numbers)."),
):
    _deal_edit(_name, _fn, _metavar, _help)


@deal.command("won")
@click.argument("ref")
@click.option("--reason", default="", help="Why it was won, for the review numbers.")
@pass_app
def deal_won(app: App, ref: str, reason: str) -> None:
    """Mark the deal won."""
    _change(app, deals.mark_won, ref, reason)


@main.group()
def lead() -> None:
    """Leads added by hand."""


@lead.command("add")
@click.option("--email", required=True, metavar="ADDR", help="The prospect's address (an existing contact is reused).")
@click.option("--name", default="", help="The prospect's name.")
@click.option("--company", help="Company name (default: from the address's domain; freemail has none).")
@click.option("--owner", metavar="REP", help="Rep who owns the deal (default: the contact's owner).")
@click.option("--source", default="manual", show_default=True, help="Where the lead came from.")
@click.option("--value", metavar="AMOUNT", help="Deal value, a number such as 12000.")
@click.option("--stage", metavar="STAGE", help="Open stage to start in (default: the first).")
@pass_app
def lead_add(app: App, email: str, name: str, company: str | None, owner: str | None, source: str,
             value: str | None, stage: str | None) -> None:
    """Add a lead: contact, company and a new deal."""
    team = app.config.team
    added = app.write(deals.add_lead, email, name, company, owner, source, value, stage,
                      frozenset(team.domains), frozenset(team.freemail_domains))
    who = f"{added.contact} <{added.address}>" if added.contact else added.address
    echo(f"{added.ref}: {who}" + (f" at {added.company}" if added.company else "")
               + f", {added.stage}, owner {added.owner or 'nobody'}"
               + ("" if added.new_contact else " (existing contact)"))
    if added.other_open_deals:
        echo(f"note: this contact also has open deals {', '.join(added.other_open_deals)}", err=True)


@main.group()
def contacts() -> None:
    """The people deals are with."""


list_command(contacts, deals.list_contacts, views.CONTACTS,
             "List contacts with their addresses, company, owner and deal counts.")


@main.group()
def companies() -> None:
    """Companies, one per business email domain."""


list_command(companies, deals.list_companies, views.COMPANIES, "List companies with their contacts and deal counts.")


@main.command("pipeline")
@json_option
@pass_app
def pipeline_cmd(app: App, as_json: bool) -> None:
    """The pipeline at a glance: deals and value per stage."""
    emit(app.read(deals.pipeline_summary), None, as_json, views.render_pipeline)


# -- review and quarantine ------------------------------------------------------------------

def _outcome(pk: int, outcome) -> str:
    deal = f" -> {outcome.deal_ref}" if outcome.deal_ref else ""
    return f"message {pk}: {outcome.status} ({outcome.reason}){deal}"


@main.group()
def review() -> None:
    """New senders held for a rep to accept or reject (mailboxes with --policy review)."""


list_command(review, team.list_review, views.REVIEW, "List held messages.")


@review.command("accept")
@click.argument("message_id", metavar="ID", type=int)
@pass_app
def review_accept(app: App, message_id: int) -> None:
    """Accept a held message: it becomes a lead."""
    from inboxcrm.app import intake

    echo(_outcome(message_id, intake.accept_review(app.factory(), app.config, message_id, app.actor)))


@review.command("reject")
@click.argument("message_id", metavar="ID", type=int)
@pass_app
def review_reject(app: App, message_id: int) -> None:
    """Reject a held message: it stays stored, and later mail from the sender is ignored."""
    from inboxcrm.app import intake

    echo(_outcome(message_id, intake.reject_review(app.factory(), app.config, message_id, app.actor)))


@main.group()
def quarantine() -> None:
    """Messages that could not be processed, kept with their raw bytes and reason."""


list_command(quarantine, team.list_quarantine, views.QUARANTINE, "List quarantined messages with their reason.")


@quarantine.command("show")
@click.argument("message_id", metavar="ID", type=int)
@click.option("--raw", "raw_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the message's exact raw bytes to FILE (for a bug report or another mail tool).")
@click.option("--force", is_flag=True, help="With --raw: replace FILE if it exists.")
@json_option
@pass_app
def quarantine_show(app: App, message_id: int, raw_file: Path | None, force: bool, as_json: bool) -> None:
    """Show a quarantined message: its reason and the first 4 KB of its raw bytes, control
    characters made visible; --raw FILE writes the bytes as they arrived."""
    detail = app.read(team.show_quarantined, message_id)
    if raw_file is not None:
        raw = app.read(team.stored_raw, detail.message_id)  # refused where the bytes were not kept
        write_file(raw_file, raw, force)
        echo(f"wrote {views.plural(len(raw), 'byte')} of message {message_id} to {raw_file}", err=True)
    emit(detail, None, as_json, views.render_quarantined)


@quarantine.command("retry")
@click.argument("message_id", metavar="[ID]", type=int, required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every quarantined message.")
@pass_app
def quarantine_retry(app: App, message_id: int | None, retry_all: bool) -> None:
    """Run a quarantined message (or --all) through the pipeline again, e.g. after an upgrade."""
    from inboxcrm.app import intake

    if (message_id is None) == (not retry_all):
        raise Failure("give a message ID or --all (not both); see \"inboxcrm quarantine list\"")
    ids = [row.id for row in app.read(team.list_quarantine)] if retry_all else [message_id]
    factory = app.factory()
    for pk in ids:
        echo(_outcome(pk, intake.reprocess(factory, app.config, pk, app.actor)))
    if not ids:
        echo("nothing in quarantine")


# -- demo -----------------------------------------------------------------------------------

@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the demo's own database and config, both replaced on every run "
                   "(default: demo/ in the data directory, e.g. ~/.local/share/inboxcrm/demo).")
def demo(data_dir: Path | None) -> None:
    """Run a self-contained demo: sample mail through the whole pipeline, then the pipeline view."""
    from inboxcrm.app.demo import run_demo

    run_demo(data_dir, echo)



# The sync daemon's and outgoing mail's commands live in their own modules; importing them
# registers them on ``main`` (they import this module's groups and helpers).
from inboxcrm.cli import (
    mail,
    sync,  # noqa: E402,F401  (registration)
    tokens,
)
