"""The IMAP source against a real Dovecot: TLS verified, each failure named by its stage, folders
found by SPECIAL-USE, IDLE, read-only fetching; and the pure parts (settings, Gmail locations)."""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import date

import pytest

from inboxcrm.errors import Invalid
from inboxcrm.mail import imap, oauth
from inboxcrm.mail.imap import ImapError, ImapSettings, build_settings
from inboxcrm.mail.oauth import GrantRevoked
from inboxcrm.secret import SecretRef

from .conftest import mail
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .oauth_server import OAuthServer

PASSWORD = SecretRef(env="IMAP_PASSWORD")


# -- settings ----------------------------------------------------------------------------------

def test_settings_round_trip_through_json_and_hold_no_secret(tls_files):
    settings = build_settings("imap.example.com", user="sales@acme.example", secret=SecretRef(file="/run/pw"),
                              ca_file=str(tls_files.ca), folders=("\\sent", "INBOX", "\\Sent"), since="2026-01-05")
    assert settings.port == 993 and settings.folders == ("\\Sent", "INBOX")
    stored = json.loads(json.dumps(settings.to_json()))
    assert stored["secret"] == {"file": "/run/pw"} and ImapSettings.from_json(stored) == settings
    assert settings.since == date(2026, 1, 5)
    assert "file /run/pw" in settings.describe()
    assert build_settings("h", security="starttls", user="u", secret=PASSWORD).port == 143


@pytest.mark.parametrize("options, named", [
    ({"security": "ssl"}, "--security 'ssl': expected one of tls, starttls, plain"),
    ({"port": 0}, "--port 0: expected a number from 1 to 65535"),
    ({"user": ""}, "--user"),
    ({"auth": "cram"}, "--auth 'cram': expected one of password, xoauth2"),
    ({"secret": None}, "--password-env, --password-file, --password-command"),
    ({"folders": ("\\Spam",)}, "--folder \\Spam: unknown special-use role; roles are \\Inbox, \\Sent, \\All"),
    ({"since": "yesterday"}, "--since 'yesterday': expected a date as YYYY-MM-DD"),
    ({"ca_file": "/nonexistent/ca.pem"}, "--ca-file /nonexistent/ca.pem: no such file"),
    ({"auth": "xoauth2"}, "--oauth-client-id: required with --auth xoauth2"),
    ({"auth": "xoauth2", "oauth_client_id": "c"}, "--oauth-provider or --oauth-token-url"),
    ({"auth": "xoauth2", "oauth_client_id": "c", "oauth_provider": "yahoo"}, "expected one of google, microsoft"),
    ({"auth": "xoauth2", "oauth_client_id": "c", "oauth_token_url": "http://example.com/t"}, "expected an https://"),
    ({"oauth_client_id": "c"}, "--oauth-* and --token-file: only with --auth xoauth2"),
    ({"security": "plain"}, "--security plain: refused for imap.example.com, which is not this machine"),
    ({"security": "plain", "host": "10.0.0.5"}, "use --security tls (port 993) or starttls (port 143)"),
])
def test_bad_settings_name_the_option_and_what_is_valid(options, named):
    given = {"host": "imap.example.com", "user": "u", "secret": PASSWORD} | options
    with pytest.raises(Invalid) as refused:
        build_settings(**given)
    assert named in str(refused.value)


def test_oauth_providers_have_their_token_endpoints():
    google = build_settings("imap.gmail.com", user="u", auth="xoauth2", secret=PASSWORD, oauth_client_id="c",
                            oauth_provider="google")
    assert google.oauth_token_url == "https://oauth2.googleapis.com/token"


# -- pure parts of folders and Gmail -----------------------------------------------------------

GMAIL_LIST = [((b"\\HasNoChildren",), b"/", "INBOX"),
              ((b"\\HasChildren", b"\\Noselect"), b"/", "[Gmail]"),
              ((b"\\All", b"\\HasNoChildren"), b"/", "[Gmail]/Alle Nachrichten"),
              ((b"\\HasNoChildren", b"\\Sent"), b"/", "[Gmail]/Gesendet"),
              ((b"\\HasNoChildren", b"\\Junk"), b"/", "[Gmail]/Spam")]


def test_folders_are_found_by_special_use_not_by_name():
    roles = imap.folder_roles(GMAIL_LIST)
    assert "[Gmail]" not in roles  # \Noselect
    assert imap.choose_folders(roles, ("\\Inbox", "\\Sent", "\\All")) == [
        ("INBOX", "\\Inbox"), ("[Gmail]/Gesendet", "\\Sent"), ("[Gmail]/Alle Nachrichten", "\\All")]
    with pytest.raises(ImapError) as missing:
        imap.choose_folders(roles, ("\\Drafts",))
    assert missing.value.stage == "folder"
    assert str(missing.value).startswith("folder: no folder with \\Drafts; folders are: INBOX (\\Inbox), ")


def test_a_gmail_message_has_one_location_in_every_folder_and_junk_is_named_for_the_pipeline():
    assert imap.copy_location("INBOX", 7, 12, gmail_id=1234) == imap.copy_location("[Gmail]/All", 3, 99, 1234)
    assert imap.copy_location("INBOX", 7, 12) != imap.copy_location("INBOX", 8, 12)
    assert imap.pipeline_folder("[Gmail]/Spam", "\\Junk") == "Junk"
    assert imap.pipeline_folder("[Gmail]/Gesendet", "\\Sent") == "Sent"
    assert imap.pipeline_folder("Projects", "") == "Projects"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_plain_is_allowed_on_this_machine(host):
    assert build_settings(host, security="plain", user="u", secret=PASSWORD).port == 143


def test_a_stored_plain_connection_to_another_machine_is_refused_before_any_packet():
    """A connection saved before the rule existed: refused at connect, naming the fix."""
    stored = build_settings("127.0.0.1", security="plain", user="u", secret=PASSWORD).to_json()
    settings = ImapSettings.from_json(stored | {"host": "imap.example.com"})  # loads: status can show it
    with pytest.raises(ImapError) as refused:
        imap.connect(settings, environ={})
    assert refused.value.stage == "connect" and "--security plain: refused for imap.example.com" in str(refused.value)


# -- fetching by size --------------------------------------------------------------------------

def test_batches_are_bounded_by_bytes_and_count_and_keep_uid_order():
    mb = 1024 * 1024
    sizes = [(1, 10 * mb), (2, 10 * mb), (3, 10 * mb), (4, 40 * mb), (5, 1000), (6, 60 * mb), (7, 70 * mb),
             (8, 1000), (9, 1000), (10, 1000)]
    plan = imap.plan_batches(sizes, max_message_bytes=50 * mb, batch_bytes=32 * mb, batch=2)
    assert plan == [(True, [1, 2]), (True, [3]), (True, [4]), (True, [5]), (False, [6, 7]), (True, [8, 9]),
                    (True, [10])]
    assert [uid for _, uids in plan for uid in uids] == [uid for uid, _ in sizes]


# -- connecting to the real server -------------------------------------------------------------

def test_connects_over_verified_tls_and_starttls_and_finds_the_folders(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    dovecot.append(alice, "INBOX", [mail("pipeline-new-lead-company.eml")] * 3)
    every = ("\\Inbox", "\\Sent", "\\Junk", "Drafts")
    for settings in (dovecot.settings(alice, folders=every),
                     dovecot.settings(alice, folders=every, security="starttls", port=dovecot.starttls_port)):
        client = imap.connect(settings)
        try:
            folders = imap.resolve_folders(client, settings)
        finally:
            client.logout()
        assert [(f.name, f.role) for f in folders] == [
            ("INBOX", "\\Inbox"), ("Sent", "\\Sent"), ("Junk", "\\Junk"), ("Drafts", "\\Drafts")]
        assert folders[0].messages == 3 and folders[0].uidnext == 4
        assert folders[0].uidvalidity > 0 and folders[0].highestmodseq is not None


def test_a_certificate_from_another_ca_fails_at_the_tls_stage(dovecot, tls_files):
    alice = dovecot.add_user("alice", "s3cret")
    for settings in (dovecot.settings(alice, ca_file=str(tls_files.other_ca)),
                     dovecot.settings(alice, ca_file=str(tls_files.other_ca), security="starttls",
                                      port=dovecot.starttls_port)):
        with pytest.raises(ImapError) as failed:
            imap.connect(settings)
        assert failed.value.stage == "tls"
        assert f"certificate verify failed for 127.0.0.1:{settings.port}" in str(failed.value)
        assert "--ca-file" in str(failed.value)


def test_verification_off_is_an_explicit_setting_that_connects(dovecot, tls_files, caplog):
    alice = dovecot.add_user("alice", "s3cret")
    settings = dovecot.settings(alice, ca_file=str(tls_files.other_ca), verify=False)
    assert "insecure" in caplog.text and "certificate NOT verified" in settings.describe()
    imap.connect(settings).logout()


def test_a_wrong_password_fails_at_the_login_stage_without_the_password(dovecot, tmp_path):
    alice = dovecot.add_user("alice", "s3cret")
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    with pytest.raises(ImapError) as failed:
        imap.connect(dovecot.settings(alice, secret=SecretRef(file=str(wrong))))
    assert failed.value.stage == "login"
    assert "the server refused user alice (" in str(failed.value) and f"file {wrong}" in str(failed.value)
    assert "not-the-password" not in str(failed.value)
    with pytest.raises(ImapError) as unset:
        imap.connect(dovecot.settings(alice, secret=PASSWORD), environ={})
    assert unset.value.stage == "login" and "IMAP_PASSWORD" in str(unset.value)


def test_no_server_fails_at_connect_and_an_unknown_host_at_dns(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    dovecot.stop()
    with pytest.raises(ImapError) as refused:
        imap.connect(dovecot.settings(alice))
    assert refused.value.stage == "connect" and f"127.0.0.1:{dovecot.port}" in str(refused.value)
    with pytest.raises(ImapError) as unknown:
        imap.connect(dovecot.settings(alice, host="no-such-host.invalid"))
    assert unknown.value.stage == "dns" and "no-such-host.invalid" in str(unknown.value)


def test_a_missing_folder_names_the_folders_there_are(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    settings = dovecot.settings(alice, folders=("\\Inbox", "Projects"))
    with pytest.raises(ImapError) as failed:
        imap.resolve_folders(imap.connect(settings), settings)
    assert failed.value.stage == "folder"
    assert 'no folder named "Projects"; folders are: ' in str(failed.value) and "Sent (\\Sent)" in str(failed.value)


def test_fetching_reads_bodies_and_changes_no_flag(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    dovecot.append(alice, "INBOX", [mail("pipeline-new-lead-company.eml")] * 2)
    dovecot.append(alice, "INBOX", [mail("pipeline-freemail-lead.eml")], flags=[b"\\Flagged"])
    before = dovecot.flags(alice, "INBOX")
    client = imap.connect(dovecot.settings(alice))
    folder = imap.examine(client, "INBOX")
    uids = imap.new_uids(client, 1, None)
    got = list(imap.fetch(client, folder, uids, batch=1))
    assert [m.uid for m in got] == [2, 3] and got[1].data.replace(b"\r\n", b"\n") == mail("pipeline-freemail-lead.eml")
    assert got[0].location == f"imap:INBOX:{folder.uidvalidity}:2" and got[0].folder == "INBOX"
    assert imap.new_uids(client, 3, None) == []  # "4:*" would match UID 3; it must not
    client.logout()
    assert dovecot.flags(alice, "INBOX") == before == {1: (), 2: (), 3: (b"\\Flagged",)}


def test_idle_returns_within_two_seconds_of_a_delivery(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    client = imap.connect(dovecot.settings(alice))
    assert imap.supports_idle(client)
    started = time.monotonic()
    assert imap.wait_for_change(client, "INBOX", timeout=0.5) is False  # nothing came
    assert 0.5 <= time.monotonic() - started < 1.5
    delivered: list[float] = []

    def deliver():
        time.sleep(0.3)
        dovecot.append(alice, "INBOX", [mail("pipeline-new-lead-company.eml")])
        delivered.append(time.monotonic())

    threading.Thread(target=deliver).start()
    assert imap.wait_for_change(client, "INBOX", timeout=10) is True
    assert time.monotonic() - delivered[0] < 2.0
    # mail that came before the IDLE started is not waited for
    uidnext = imap.examine(client, "INBOX").uidnext
    dovecot.append(alice, "INBOX", [mail("pipeline-freemail-lead.eml")])
    started = time.monotonic()
    assert imap.wait_for_change(client, "INBOX", timeout=10, known_uidnext=uidnext) is True
    assert time.monotonic() - started < 0.5
    client.logout()


def test_idle_stops_when_asked(dovecot):
    alice = dovecot.add_user("alice", "s3cret")
    client = imap.connect(dovecot.settings(alice))
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert imap.wait_for_change(client, "INBOX", timeout=30, stop=stop) is False
    assert time.monotonic() - started < 1.5
    client.logout()


# -- XOAUTH2: the access token comes from the token endpoint and is cached until it expires -----

def test_a_refresh_token_kept_as_a_secret_still_logs_in_and_is_refreshed_only_near_expiry(tmp_path):
    """Mailboxes set up before token files keep working: the refresh token from its secret source."""
    with OAuthServer() as server:
        settings = build_settings("imap.example.com", user="sales@acme.example", auth="xoauth2",
                                  secret=SecretRef(env="REFRESH"), oauth_client_id="client-1",
                                  oauth_client_secret=SecretRef(env="CLIENT_SECRET"), oauth_token_url=server.token_url)
        server.clients = {"client-1": "cs"}
        environ = {"REFRESH": server.grant("sales@acme.example", "client-1"), "CLIENT_SECRET": "cs"}
        imap.forget_token(settings)
        first = imap.access_token(settings, environ)
        assert server.token_owner(first) == "sales@acme.example"
        assert imap.access_token(settings, environ) == first  # cached: no second request
        assert server.requests == [("/token", "refresh_token")]
        server.revoke("sales@acme.example")
        imap.forget_token(settings)
        with pytest.raises(GrantRevoked) as refused:
            imap.access_token(settings, environ, what="mailbox sales")
        assert 'run "inboxcrm mailbox authorize sales"' in str(refused.value)
        assert environ["REFRESH"] not in str(refused.value)


def test_xoauth2_settings_take_the_provider_endpoints_unless_given_and_one_token_source(tmp_path):
    token_file = str(tmp_path / "sales.json")
    ms = build_settings("outlook.office365.com", user="u", auth="xoauth2", oauth_client_id="c",
                        oauth_provider="microsoft", oauth_tenant="acme.example", token_file=token_file)
    assert ms.oauth_device_url == "https://login.microsoftonline.com/acme.example/oauth2/v2.0/devicecode"
    assert ms.secret is None and ImapSettings.from_json(json.loads(json.dumps(ms.to_json()))) == ms
    assert "token file " + token_file in ms.describe()
    local = build_settings("h", user="u", auth="xoauth2", oauth_client_id="c", oauth_provider="google",
                           oauth_token_url="http://127.0.0.1:1/token", token_file=token_file)
    assert local.oauth_token_url == "http://127.0.0.1:1/token"
    assert local.oauth_auth_url == "https://accounts.google.com/o/oauth2/v2/auth"
    for options, named in [({}, "--token-file: required with --auth xoauth2"),
                           ({"token_file": token_file, "secret": PASSWORD}, "give one place for the refresh token"),
                           ({"token_file": "sales.json"}, "expected an absolute path"),
                           ({"token_file": token_file, "oauth_tenant": "t"}, "--oauth-tenant: only with"),
                           ({"token_file": token_file, "oauth_device_url": "http://example.com/d"},
                            "--oauth-device-url http://example.com/d: expected an https://")]:
        with pytest.raises(Invalid, match=re.escape(named)):
            build_settings("h", user="u", auth="xoauth2", oauth_client_id="c", oauth_provider="google", **options)


def test_xoauth2_login_to_dovecot_with_a_token_file_and_a_revoked_grant_named(tls_files, tmp_path):
    """Dovecot checks the bearer token at the OAuth server's introspection endpoint, as Gmail and
    Exchange Online check theirs. A token the server refuses is dropped from the cache, and a
    revoked grant says which mailbox to authorize again."""
    from .dovecot import started

    with OAuthServer() as server:
        dovecot = started(tls_files, introspection_url=server.introspection_url)
        try:
            alice = dovecot.add_user("alice", "unused-password")
            token_file = tmp_path / "oauth" / "sales.json"
            oauth.write_token_file(token_file, oauth.TokenFile(server.grant("alice", "client"), "", server.token_url,
                                                               "client", "2026-01-01T00:00:00+00:00"))
            settings = dovecot.settings(alice, secret=None, auth="xoauth2", oauth_client_id="client",
                                        oauth_provider="google", oauth_token_url=server.token_url,
                                        token_file=str(token_file))
            client = imap.connect(settings, what="mailbox sales")
            assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
            client.logout()
            server.revoke("alice")  # the cached access token dies with the grant
            with pytest.raises(ImapError) as refused:
                imap.connect(settings, what="mailbox sales")
            assert refused.value.stage == "login" and "OAuth2 access token" in str(refused.value)
            with pytest.raises(GrantRevoked) as revoked:  # the cache was dropped: the refresh says why
                imap.connect(settings, what="mailbox sales")
            assert 'run "inboxcrm mailbox authorize sales"' in str(revoked.value)
        finally:
            dovecot.close()
