"""``mailbox authorize``: sign a mailbox in with its provider and keep the grant in its token file.

Joins the ``mailbox`` group in ``cli.team``. Light at import: the flows are imported when it runs.
"""
from __future__ import annotations

import os

import click

from inboxcrm.cli.common import App, Failure, echo, pass_app


@click.command("authorize")
@click.argument("name")
@click.option("--browser", is_flag=True,
              help="Sign in in a browser on this machine (authorization code + PKCE, redirect to 127.0.0.1) "
                   "instead of the device code flow, which works on a server without one.")
@click.option("--smtp", is_flag=True,
              help="Also ask for the SMTP scope, so [smtp] auth = \"xoauth2\" can send as this account "
                   "with the same token file.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default="any free port",
              help="With --browser: the loopback port the sign-in page redirects to.")
@pass_app
def mailbox_authorize(app: App, name: str, browser: bool, smtp: bool, port: int) -> None:
    """Sign mailbox NAME in with its OAuth2 provider and write the refresh token to its token file.

    The mailbox must have been added with --auth xoauth2, --oauth-provider (google or microsoft)
    and --oauth-client-id (and a client secret if the app registration has one). By default this
    prints a URL and a code to enter in any browser, on any device, and waits until you have signed
    in as the mailbox's user and consented. Scopes: Google https://mail.google.com/; Microsoft
    IMAP.AccessAsUser.All and offline_access (and SMTP.Send with --smtp).

    The token file (--token-file of mailbox add; default <data dir>/oauth/NAME.json) is written
    0600 in a 0700 folder, never to the database; the endpoints are the provider's unless the
    mailbox was added with --oauth-token-url, --oauth-device-url or --oauth-auth-url. Run it again
    whenever the grant was revoked or expired: "status" says so.
    """
    from inboxcrm.app.sync import load_settings
    from inboxcrm.mail import imap, oauth

    settings = app.read(load_settings, name)
    if settings.auth != "xoauth2":
        raise Failure(f'mailbox {name} logs in with a password; to use OAuth2 run "inboxcrm mailbox connect '
                      f'{name}" with --auth xoauth2 --oauth-provider google|microsoft --oauth-client-id ID '
                      f"(and its other connection options)")
    if not settings.token_file:
        raise Failure(f"mailbox {name} takes its refresh token from {settings.secret.describe()}, which "
                      f'cannot be written; run "inboxcrm mailbox connect {name}" with --auth xoauth2 and '
                      f"without --password-* (or with --token-file PATH) to keep the grant in a token file")
    client = imap.oauth_client(settings, smtp=smtp)
    if not client.scopes:
        raise Failure(f"mailbox {name} has no --oauth-provider, so the scopes to ask for are unknown; "
                      f'run "inboxcrm mailbox connect {name}" with --oauth-provider google or microsoft '
                      f"(and --oauth-token-url etc. to keep other endpoints)")
    echo(f"Authorizing mailbox {name}: sign in as {settings.user}; scopes {' '.join(client.scopes)}")
    if browser:
        granted = oauth.browser_authorize(client, settings.token_file, echo, port=port, environ=os.environ)
    else:
        granted = oauth.device_authorize(client, settings.token_file, echo, environ=os.environ)
    echo(f"authorized: the refresh token is in {settings.token_file} (mode 0600; scopes {granted.scope})")
    if smtp:
        secret = settings.oauth_client_secret
        echo(f'to send as {settings.user}, set in [smtp]: auth = "xoauth2", oauth_token_url = "{client.token_url}", '
             f'oauth_client_id = "{client.client_id}", token_file = "{settings.token_file}"'
             + (f", and the client secret as oauth_client_secret_env/_file/_command (this mailbox reads it "
                f"from {secret.describe()})" if secret is not None else ""))
    echo(f'next: "inboxcrm mailbox test {name}", then "inboxcrm poll {name} --once"')
