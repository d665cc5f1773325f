"""The team's set-up: ``rep``, ``mailbox``, ``stage`` and ``rule``.

``rep digest`` (cli.mail), ``rep token`` (cli.tokens) and ``mailbox test`` (cli.sync) live with
the outgoing-mail, command-address and sync commands they belong with; they join their groups here.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import click

from inboxcrm.cli.common import (
    App,
    Failure,
    echo,
    emit,
    json_option,
    list_command,
    load,
    pass_app,
)
from inboxcrm.cli.mail import rep_digest
from inboxcrm.cli.oauth import mailbox_authorize
from inboxcrm.cli.sync import mailbox_test
from inboxcrm.cli.tokens import rep_token
from inboxcrm.core import views

# The choices of --role, --policy and --kind are needed when the options are built: they come from
# the shared vocabulary, so these groups' --help loads no store.
from inboxcrm.values import MAILBOX_POLICIES, MAILBOX_ROLES, STAGE_KINDS


def remove_command(group: click.Group, remover: str, help: str) -> None:
    """``GROUP remove NAME``: the removals that take no options. ``remover``: the
    ``"module:function"`` that removes (or deactivates) NAME."""
    @group.command("remove", help=help)
    @click.argument("name")
    @pass_app
    def command(app: App, name: str) -> None:
        echo(views.render_removed(app.write(load(remover), name)))


# -- reps -----------------------------------------------------------------------------------

@click.group()
def rep() -> None:
    """The team's sales reps: who owns deals and whose addresses are ours."""


@rep.command("add")
@click.argument("name")
@click.option("--email", "emails", multiple=True, required=True, metavar="ADDR",
              help="An address of the rep; repeat for several.")
@click.option("--timezone", metavar="TZ", help="IANA time zone for the rep's digest (default: [team] timezone).")
@click.option("--manager", is_flag=True, help="The rep gets the weekly pipeline review by email.")
@pass_app
def rep_add(app: App, name: str, emails: tuple[str, ...], timezone: str | None, manager: bool) -> None:
    """Add a rep with one or more addresses; NAME may use letters, digits, ".", "_" and "-"."""
    from inboxcrm.app import team

    row = app.write(team.add_rep, name, list(emails), timezone or app.config.team.timezone, manager)
    echo(f"added rep {row.name} ({', '.join(row.emails)}), timezone {row.timezone}"
         + (", manager (gets the weekly review)" if row.manager else ""))


@rep.command("edit")
@click.argument("name")
@click.option("--manager/--no-manager", default=None,
              help="Whether the rep gets the weekly pipeline review by email.")
@pass_app
def rep_edit(app: App, name: str, manager: bool | None) -> None:
    """Change a rep: --manager makes NAME one of the managers who get the weekly pipeline review.

    The digest schedule is changed with "inboxcrm rep digest", the reply token with "inboxcrm rep token".
    """
    from inboxcrm.app import team

    if manager is None:
        raise Failure("say what to change: --manager or --no-manager")
    row = app.write(team.set_manager, name, manager)
    echo(f"rep {row.name} is {'now a manager: gets' if row.manager else 'no longer a manager: does not get'} "
         f"the weekly pipeline review")


list_command(rep, "inboxcrm.app.team:list_reps", views.REPS, "List reps with their addresses and open deals.")


remove_command(rep, "inboxcrm.app.team:remove_rep",
               "Remove a rep; one still named on deals, contacts or mailboxes is deactivated instead.")


rep.add_command(rep_digest)
rep.add_command(rep_token)

# -- mailboxes ------------------------------------------------------------------------------

@click.group()
def mailbox() -> None:
    """Mailboxes mail is read from: a capture mailbox (sales@) or a rep's own inbox."""


mailbox.add_command(mailbox_test)
mailbox.add_command(mailbox_authorize)
def _secret(kind: str, env: str | None, file: str | None, command: str | None):
    """The one secret source given as --KIND-env/-file/-command, the same sources as the config."""
    from inboxcrm.secret import SecretRef

    given = {k: v for k, v in (("env", env), ("file", file), ("command", command)) if v}
    if len(given) > 1:
        raise Failure(f"give only one of --{kind}-env, --{kind}-file, --{kind}-command")
    if "file" in given:  # the daemon runs elsewhere than this shell: keep no relative path
        given["file"] = str(Path(given["file"]).expanduser().resolve())
    return SecretRef(**given) if given else None


def _token_file(options: dict, password, name: str) -> str | None:
    """--token-file made absolute; for xoauth2 without one (nor a --password-* refresh token) the
    mailbox's own file under the data directory, which "mailbox authorize" writes."""
    if options["token_file"]:
        return str(Path(options["token_file"]).expanduser().resolve())
    if options["auth"] != "xoauth2" or password is not None:
        return None
    from inboxcrm.config import default_data_dir
    from inboxcrm.mail.oauth import default_token_file

    return str(default_token_file(default_data_dir(os.environ), name))


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
                     help="xoauth2: OAuth2 for Google Workspace and Microsoft 365; then run \"inboxcrm mailbox "
                          "authorize NAME\" to sign in."),
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
        click.option("--oauth-tenant", metavar="TENANT",
                     help="Microsoft: the Entra tenant id or domain of a single-tenant app (default: common)."),
        click.option("--oauth-token-url", metavar="URL",
                     help="Token endpoint, instead of the provider's (also --oauth-device-url, --oauth-auth-url)."),
        click.option("--oauth-device-url", metavar="URL", help="Device authorization endpoint, instead of the provider's."),
        click.option("--oauth-auth-url", metavar="URL", help="Authorization endpoint, instead of the provider's."),
        click.option("--token-file", metavar="PATH",
                     help="xoauth2: where \"mailbox authorize\" keeps the refresh token, 0600 (default: "
                          "<data dir>/oauth/NAME.json; --password-* instead holds a refresh token made elsewhere)."),
        click.option("--folder", "folders", multiple=True, metavar="FOLDER",
                     help="Repeatable: a special-use role (\\Inbox, \\Sent, \\All) or a folder name "
                          "(default: \\Inbox and \\Sent)."),
        click.option("--since", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD",
                     help="First sync reads mail from this day on (default: [sync] since_days ago)."),
        click.option("--max-attachment-bytes", type=click.IntRange(min=0), metavar="BYTES",
                     help="Leave attachments bigger than this on the server: such a message is stored with its "
                          "text and a note per file left out, marked truncated (saves Gmail's daily IMAP "
                          "download quota; 0 keeps text only). Default: attachments are fetched whole."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def connection_from(app: App, options: dict, name: str) -> dict | None:
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
        oauth_token_url=options["oauth_token_url"], folders=options["folders"], since=since,
        oauth_tenant=options["oauth_tenant"], oauth_device_url=options["oauth_device_url"],
        oauth_auth_url=options["oauth_auth_url"], token_file=_token_file(options, password, name),
        max_attachment_bytes=options["max_attachment_bytes"])
    return settings.to_json()


@mailbox.command("add")
@click.argument("name")
@click.option("--owner", metavar="REP",
              help="Rep who owns the mailbox and new leads from it (required for --role rep).")
@click.option("--role", type=click.Choice(MAILBOX_ROLES), required=True,
              help="capture: a shared address whose new senders are leads; rep: a rep's own inbox; "
                   "commands: the command address's mailbox, where reps' command emails arrive.")
@click.option("--source", metavar="S", help="Lead source recorded for new leads (default: the mailbox name for "
                                             "capture, rep-inbox for rep).")
@click.option("--policy", type=click.Choice(MAILBOX_POLICIES),
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
    from inboxcrm.app import team

    connection = connection_from(app, imap, name)
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
    from inboxcrm.app import team

    connection = connection_from(app, imap, name)
    if connection is None:
        raise Failure("mailbox connect needs --host (and the other connection options of mailbox add)")
    row = app.write(team.connect_mailbox, name, connection)
    echo(f"mailbox {row.name} now reads IMAP {row.imap} ({connection['security']}"
         f"{'' if connection['verify'] else ', certificate NOT verified'}), "
         f"folders {', '.join(connection['folders'])}; "
         f'check it with "inboxcrm mailbox test {row.name}"')


list_command(mailbox, "inboxcrm.app.team:list_mailboxes", views.MAILBOXES,
             "List mailboxes with role, owner, lead source, policy and stored message copies.")


@mailbox.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Remove even if stored messages were seen in it: the messages stay; the record that they "
                   "were seen in this mailbox, and its sync positions, go.")
@pass_app
def mailbox_remove(app: App, name: str, force: bool) -> None:
    """Remove a mailbox. Refused while stored messages were seen in it, unless --force."""
    from inboxcrm.app import team

    echo(views.render_removed(app.write(team.remove_mailbox, name, force)))


# -- stages ---------------------------------------------------------------------------------



@click.group()
def stage() -> None:
    """Pipeline stages, in order; each is open, won or lost."""


list_command(stage, "inboxcrm.app.team:list_stages", views.STAGES,
             "List stages in pipeline order with the deals in each, each one's win probability (marked "
             "(default) until one is set) and the qualifying stage.")


# ignore_unknown_options: "-5" is a PERCENT to refuse with what is valid, not an unknown option
@stage.command("probability", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("percent", metavar="PERCENT|default")
@pass_app
def stage_probability(app: App, name: str, percent: str) -> None:
    """Set the chance (0 to 100 percent) that a deal in the open stage NAME is won, or "default".

    The pipeline report weighs each open deal's value with it. Without one set, won counts 100,
    lost 0, and the open stages run evenly from 10 (the first) to 80 (the last open one).
    """
    from inboxcrm.app import team

    row = app.write(team.set_probability, name, percent)
    echo(f"stage {row.name}: probability {row.probability}%" + ("" if row.probability_set else " (the default)"))


@stage.command("qualifying")
@click.argument("name")
@pass_app
def stage_qualifying(app: App, name: str) -> None:
    """Mark the open stage NAME as the qualifying one: a lead that reaches it (or a later stage) is an opportunity.

    Exactly one stage carries the mark, so marking one moves it. The funnel report's
    lead-to-opportunity rate and the sources report's opportunities count from it.
    """
    from inboxcrm.app import team

    row, was = app.write(team.set_qualifying, name)
    echo(f"{row.name} is now the qualifying stage" + (f" (was {was})" if was else ""))


@stage.command("add")
@click.argument("name")
@click.option("--after", metavar="STAGE", help="Put it after this stage (default: an open stage goes before the "
                                                "first won/lost stage, a closed one last).")
@click.option("--kind", type=click.Choice(STAGE_KINDS), default="open", show_default=True,
              help="open, or a closing stage: won or lost.")
@pass_app
def stage_add(app: App, name: str, after: str | None, kind: str) -> None:
    """Add a stage NAME."""
    from inboxcrm.app import team

    row = app.write(team.add_stage, name, after, kind)
    echo(f"added {row.kind} stage {row.name} at position {row.position}")


@stage.command("remove")
@click.argument("name")
@click.option("--move-to", metavar="STAGE", help="Move the stage's deals to this stage (of the same kind) first.")
@pass_app
def stage_remove(app: App, name: str, move_to: str | None) -> None:
    """Remove a stage. Refused while deals are in it (unless --move-to) and for the last
    open, won or lost stage."""
    from inboxcrm.app import team

    echo(views.render_removed(app.write(team.remove_stage, name, move_to)))


@stage.command("move")
@click.argument("name")
@click.option("--after", metavar="STAGE", help="Put it right after this stage.")
@click.option("--before", metavar="STAGE", help="Put it right before this stage.")
@json_option
@pass_app
def stage_move(app: App, name: str, after: str | None, before: str | None, as_json: bool) -> None:
    """Move a stage; give exactly one of --after or --before. Prints the new order."""
    from inboxcrm.app import team

    emit(app.write(team.move_stage, name, after, before), views.STAGES, as_json)


# -- rules ----------------------------------------------------------------------------------

@click.group()
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
    from inboxcrm.app import team

    row = app.write(team.add_rule, name, list(conditions), list(actions))
    echo(f"added rule {row.name} at position {row.position}: when {views.conditions(row)} "
         f"then {', '.join(row.actions)}")


list_command(rule, "inboxcrm.app.team:list_rules", views.RULES, "List the rules in the order they are evaluated.")


remove_command(rule, "inboxcrm.app.team:remove_rule", "Remove the rule NAME.")


@rule.command("explain")
@click.argument("message")
@click.option("--mailbox", metavar="NAME", help="Explain as if it arrived in this mailbox (default: the first one).")
@json_option
@pass_app
def rule_explain(app: App, message: str, mailbox: str | None, as_json: bool) -> None:
    """Say what would happen to MESSAGE and why: every classification and routing rule, fired or not.

    MESSAGE is the path of an .eml file or the Message-ID of a stored message. Changes nothing.
    """
    from inboxcrm.app import intake, team

    path = Path(message)
    if path.is_dir():
        raise Failure(f"{path} is a folder; give the path of one .eml file, or the Message-ID of a stored message")
    raw = path.read_bytes() if path.is_file() else app.read(team.stored_raw, message)
    if mailbox is not None:
        app.read(team.find_mailbox, mailbox)
    emit(intake.explain(app.factory(), app.config, raw, mailbox), views.EXPLANATIONS, as_json)


