"""``rep token``: the reply address that proves a rep's email answers mail we sent them."""
from __future__ import annotations

import click

from inboxcrm.cli.common import App, Failure, echo, pass_app


@click.command("token")
@click.argument("name")
@click.option("--rotate", is_flag=True,
              help="Give the rep a new token: replies to digests and nudges sent before are no longer obeyed.")
@pass_app
def rep_token(app: App, name: str, rotate: bool) -> None:
    """Show REP's reply address (the command address with their token), or rotate the token."""
    from inboxcrm.app import context
    from inboxcrm.app.team import find_rep

    if not app.config.commands.address:
        raise Failure('no command address is set; set [commands] address in the configuration, such as '
                      '"crm@example.com", and add its mailbox with "inboxcrm mailbox add crm --role commands"')
    if rotate:
        app.write(context.rotate_token, name)
    found = app.read(find_rep, name)
    address = app.read(context.rep_reply_address, app.config, found.id)
    echo(f"{found.name}: reply address {address}" + (" (new token; older replies are refused)" if rotate else ""))
