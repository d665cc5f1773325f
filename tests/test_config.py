"""Configuration loading and secret sources: every refusal names file, key, found and expected."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from inboxcrm.config import (
    DEPRECATED_KEYS,
    KEYS,
    CommandsConfig,
    Config,
    DatabaseConfig,
    PipelineConfig,
    TeamConfig,
    build_config,
    default_data_dir,
    load_config,
    resolve_config_path,
)
from inboxcrm.errors import ConfigError, SecretError
from inboxcrm.secret import SecretRef, secret_from_table

SECRET = "s3cr3t-Pa55"
PRINT_PW = f"{sys.executable} -c 'import os, sys; print(os.environ[\"PW\"])"  # the caller closes the quote
EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A fake environment, so no test reads or changes the real one."""
    return {"HOME": str(tmp_path / "home")}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, key: str, found: object, expected: str, env) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, True, env)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: found {found!r}, expected "), message
    assert expected in message
    return message


# --- where things are -------------------------------------------------------------------------

def test_config_path_order(env):
    env |= {"INBOXCRM_CONFIG": "/etc/inboxcrm.toml", "XDG_CONFIG_HOME": "/xdg"}
    assert resolve_config_path("/opt/c.toml", env) == (Path("/opt/c.toml"), True)
    assert resolve_config_path(None, env) == (Path("/etc/inboxcrm.toml"), True)
    del env["INBOXCRM_CONFIG"]
    assert resolve_config_path(None, env) == (Path("/xdg/inboxcrm/config.toml"), False)


@pytest.mark.parametrize("xdg", [None, "", "relative/dir"])  # XDG: relative values are ignored
def test_config_path_falls_back_to_home(env, xdg):
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = xdg
    assert resolve_config_path(None, env) == (Path(env["HOME"]) / ".config/inboxcrm/config.toml", False)


def test_data_dir(env):
    assert default_data_dir(env) == Path(env["HOME"]) / ".local/share/inboxcrm"
    env["XDG_DATA_HOME"] = "/data"
    assert default_data_dir(env) == Path("/data/inboxcrm")
    env["STATE_DIRECTORY"] = "/var/lib/inboxcrm:/var/lib/other"
    assert default_data_dir(env) == Path("/var/lib/inboxcrm")


def test_defaults_when_default_file_missing(env):
    env["XDG_DATA_HOME"] = "/data"
    path, named = resolve_config_path(None, env)
    cfg = load_config(path, named, env)
    assert cfg == Config(None, DatabaseConfig("sqlite:////data/inboxcrm/inboxcrm.db"), TeamConfig(),
                         PipelineConfig(), commands=CommandsConfig(token_key_file="/data/inboxcrm/reply-token.key"))
    # Fail closed: with no trusted server, only the rep's token proves a command.
    assert cfg.commands.proof == "auth-or-token"
    assert not cfg.commands.authentication_required and not cfg.commands.token_required
    assert "so mail without a token is refused" in cfg.commands.describe()
    assert (cfg.team.timezone, cfg.pipeline.quiet_days, cfg.pipeline.stalled_days) == ("UTC", 14, 30)


def test_env_named_file_is_loaded(tmp_path, env):
    env["INBOXCRM_CONFIG"] = str(write(tmp_path, "[pipeline]\nquiet_days = 3\n"))
    cfg = load_config(*resolve_config_path(None, env), env)
    assert cfg.path == tmp_path / "config.toml" and cfg.pipeline.quiet_days == 3


def test_full_file(tmp_path, env):
    cfg = load_config(write(tmp_path, """
        [database]
        url = "postgresql+psycopg://crm@db.internal/crm"
        password_env = "DB_PW"
        [team]
        domains = ["Example.COM", "example.de", "example.com"]
        timezone = "Europe/Berlin"
        freemail_domains = ["mail.example"]
        [pipeline]
        stalled_days = 60
        store_raw = false
    """), True, env)
    assert cfg.database == DatabaseConfig("postgresql+psycopg://crm@db.internal/crm", SecretRef(env="DB_PW"))
    assert cfg.team == TeamConfig(("example.com", "example.de"), "Europe/Berlin", ("mail.example",))
    assert cfg.pipeline == PipelineConfig(14, 60, False)
    assert cfg.with_database_url("sqlite://").database == DatabaseConfig("sqlite://", SecretRef(env="DB_PW"))


# --- refusals ---------------------------------------------------------------------------------

def test_named_file_missing(tmp_path, env):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope.toml'}: (file): found 'missing', "
                                                    "expected an existing TOML file")):
        load_config(tmp_path / "nope.toml", True, env)


def test_syntax_error_names_line(tmp_path, env):
    path = write(tmp_path, "[team]\ntimezone = \n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, True, env)
    assert caught.value.key == "(syntax)" and "line 2" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("text, key, found, expected", [
    ('[team]\ntimezone = "Mars/Olympus"', "team.timezone", "Mars/Olympus",
     'an IANA time zone such as "Europe/Berlin"'),
    ("[team]\ntimezone = 2", "team.timezone", 2, "an IANA time zone"),
    ('[team]\ndomains = "example.com"', "team.domains", "example.com", "a list of domains"),
    ('[team]\ndomains = ["ok.com", "bob@example.com"]', "team.domains", "bob@example.com", "no @"),
    ('[team]\nfreemail_domains = ["mail example.com"]', "team.freemail_domains", "mail example.com", "no spaces"),
    ("[team]\nfreemail_domains = [3]", "team.freemail_domains", 3, "a domain"),
    ("[pipeline]\nquiet_days = -1", "pipeline.quiet_days", -1, "a whole number of days, at least 1"),
    ("[pipeline]\nstalled_days = true", "pipeline.stalled_days", True, "a whole number of days"),
    ('[pipeline]\nstore_raw = "yes"', "pipeline.store_raw", "yes", "true or false"),
    ("[pipeline]\nquiet_day = 3", "pipeline.quiet_day", "unknown key",
     "one of the keys quiet_days, stalled_days, store_raw"),
    ("[teams]\ndomains = []", "teams", "unknown section", "one of the sections [database], [team], [pipeline]"),
    ("pipeline = 3", "pipeline", 3, "a table [pipeline]"),
    ('[database]\nurl = "nonsense"', "database.url", "nonsense", "a SQLAlchemy database URL"),
    ('[database]\npassword_env = ""', "database.password_env", "", "a non-empty string"),
    ('[database]\npassword_command = "pass \'show"', "database.password_command", "pass 'show", "a command line"),
    ('[database]\npassword_env = "A"\npassword_command = "pass db"',
     "database.password_env, database.password_command", ["A", "pass db"],
     "only one of password_env, password_file, password_command"),
])
def test_refusals(tmp_path, env, text, key, found, expected):
    refused(write(tmp_path, text), key, found, expected, env)


NO_PASSWORD = "a URL without a password; put the password in password_env, password_file or password_command"


@pytest.mark.parametrize("url, shown, expected", [
    (f"postgresql://u:{SECRET}@h/db", "postgresql://u:***@h/db", NO_PASSWORD),
    (f"postgresql://u:{SECRET}@x@h/db", "postgresql://u:***@h/db", NO_PASSWORD),  # unencoded '@' in it
    (f"postgres//u:{SECRET}@h", "postgres//u:***@h", "a SQLAlchemy database URL"),  # unparseable, still masked
])
def test_password_in_url_is_refused_without_echo(tmp_path, env, url, shown, expected):
    message = refused(write(tmp_path, f'[database]\nurl = "{url}"'), "database.url", shown, expected, env)
    assert SECRET not in message


@pytest.mark.parametrize("url", [
    "sqlite://", "sqlite:///crm.db", "sqlite:////var/lib/inboxcrm/crm.db", "sqlite:///C:/crm.db?mode=ro",
    "postgresql+psycopg://crm@db.internal:5432/crm", "postgresql://[::1]:5432/crm", "postgresql://h/crm?sslmode=require",
    "postgresql://u:@h/db", "postgresql://u:pw/with-slash@h/db", "postgresql://u:pw#x@h/db", "my_dialect://u:pw@h",
    "postgresql://h:/db", "postgresql://h:abc/db", "postgresql://[::1]:x/db", "postgres//h/db", "://h/db", " sqlite://", "",
])
def test_the_file_accepts_the_database_urls_sqlalchemy_reads_and_no_password_in_them(tmp_path, env, url):
    """config.py reads URLs without SQLAlchemy (the shared vocabulary does not import it); it must
    agree with the parser the engine uses later."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        engine_says = "password" if parsed.password is not None else "fine"
    except (ArgumentError, ValueError):
        engine_says = "not a URL"
    try:
        build_config({"database": {"url": url}}, tmp_path / "c.toml", env)
        file_says = "fine"
    except ConfigError as refused:
        file_says = "password" if "without a password" in str(refused) else "not a URL"
    assert file_says == engine_says
    if engine_says != "fine":
        with pytest.raises(ConfigError, match="--database-url: database.url"):
            build_config({}, None, env).with_database_url(url)


def test_password_in_unknown_key_is_not_echoed(tmp_path, env):
    message = refused(write(tmp_path, f'[database]\npassword = "{SECRET}"'), "database.password", "unknown key",
                      "one of the keys url, password_env, password_file, password_command", env)
    assert SECRET not in message


# --- secrets ----------------------------------------------------------------------------------

def test_secret_from_env():
    ref = SecretRef(env="DB_PW")
    assert ref.resolve({"DB_PW": SECRET}) == SECRET and ref.describe() == "env DB_PW"
    with pytest.raises(SecretError, match="env DB_PW: the environment variable is not set"):
        ref.resolve({})


def test_secret_from_file_relative_to_config(tmp_path):
    (tmp_path / "pw").write_text(SECRET + "\n\n")
    (tmp_path / "pw").chmod(0o600)  # a secret others can read is refused
    ref = secret_from_table({"password_file": "pw"}, str(tmp_path / "config.toml"), "database")
    assert ref == SecretRef(file=str(tmp_path / "pw")) and ref.describe() == f"file {tmp_path / 'pw'}"
    assert ref.resolve({}) == SECRET + "\n"  # only one trailing newline is the file's convention


def test_secret_from_command():
    printf = SecretRef(command=f"printf '%s\\n' {SECRET}")
    assert printf.resolve({}) == SECRET and SECRET in printf.describe()  # the command is the user's to log
    assert SecretRef(command=PRINT_PW + "'").resolve({"PW": SECRET}) == SECRET  # the command sees environ


@pytest.mark.parametrize("ref, message", [
    (SecretRef(file="/nonexistent/pw"), "secret from file /nonexistent/pw: cannot read it (No such file or directory)"),
    (SecretRef(command="/no/pass show"), "secret from command /no/pass show: cannot run it (No such file or directory)"),
    (SecretRef(command=f"{PRINT_PW}; sys.exit(\"vault locked\\nmore\")'"), "exited with code 1: vault locked"),
    (SecretRef(command=f"{PRINT_PW}; import time; time.sleep(5)'"), "no answer within 0.5 s"),
    (SecretRef(command="true"), "command true: the secret is empty"),
])
def test_secret_errors_name_source_not_value(ref, message):
    with pytest.raises(SecretError) as caught:
        ref.resolve({"PW": SECRET}, timeout=0.5)
    assert str(caught.value).endswith(message) and SECRET not in str(caught.value)  # stderr: first line only


def test_secret_ref_needs_exactly_one_source():
    for bad in ({}, {"env": "A", "file": "b"}):
        with pytest.raises(ValueError):
            SecretRef(**bad)
    assert secret_from_table({"url": "sqlite://"}, "c.toml", "database") is None


# --- [smtp] auth = "xoauth2" and [team] admin_address ---------------------------------------------

XOAUTH2 = {"auth": "xoauth2", "oauth_provider": "google", "oauth_client_id": "client-1"}
SMTP_HOST = '[smtp]\nhost = "smtp.gmail.com"\nfrom_address = "crm@acme.example"\n'


def test_smtp_xoauth2_reads_the_client_and_keeps_the_token_file_beside_the_config(tmp_path, env):
    cfg = load_config(write(tmp_path, SMTP_HOST + 'auth = "xoauth2"\noauth_provider = "microsoft"\n'
                            'oauth_token_url = "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"\n'
                            'oauth_client_id = "app-1"\noauth_client_secret_file = "client-secret"\n'
                            'token_file = "tokens/smtp.json"\n'
                            '[team]\nadmin_address = "IT@Acme.example"\n'), True, env)
    smtp = cfg.smtp
    assert (smtp.auth, smtp.oauth_provider, smtp.oauth_client_id) == ("xoauth2", "microsoft", "app-1")
    assert smtp.oauth_token_url == "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"
    assert smtp.oauth_client_secret == SecretRef(file=str(tmp_path / "client-secret"))
    assert smtp.token_file == str(tmp_path / "tokens/smtp.json") and smtp.password is None
    assert smtp.login == "crm@acme.example"  # the account the token is for: the From address by default
    assert cfg.team.admin_address == "it@acme.example"


def test_smtp_xoauth2_token_file_defaults_to_the_data_directory(tmp_path, env):
    env["XDG_DATA_HOME"] = "/data"
    smtp = load_config(write(tmp_path, SMTP_HOST + 'auth = "xoauth2"\noauth_provider = "google"\n'
                             'oauth_client_id = "c"\nusername = "me@acme.example"\n'), True, env).smtp
    assert smtp.token_file == "/data/inboxcrm/smtp-oauth.json" and smtp.login == "me@acme.example"
    assert load_config(write(tmp_path, SMTP_HOST), True, env).smtp.token_file is None  # password: no token file


@pytest.mark.parametrize("lines, key, found, expected", [
    ('auth = "oauth"', "smtp.auth", "oauth", 'one of "password", "xoauth2"'),
    ('auth = "xoauth2"\noauth_provider = "google"', "smtp.oauth_client_id", "missing",
     "the OAuth2 client id (from the Google Cloud console or the Microsoft Entra app registration)"),
    ('auth = "xoauth2"\noauth_client_id = "c"', "smtp.oauth_provider", "missing",
     'one of "google", "microsoft", or smtp.oauth_token_url'),
    ('auth = "xoauth2"\noauth_provider = "yahoo"\noauth_client_id = "c"', "smtp.oauth_provider", "yahoo",
     'one of "google", "microsoft"'),
    ('auth = "xoauth2"\noauth_token_url = "ftp://tokens.example/"\noauth_client_id = "c"',
     "smtp.oauth_token_url", "ftp://tokens.example/", "an https:// URL of the OAuth2 token endpoint"),
    ('auth = "xoauth2"\noauth_provider = "google"\noauth_client_id = "c"\npassword_env = "SMTP_PW"',
     "smtp.password_env", "SMTP_PW", 'to be left out with smtp.auth = "xoauth2", which logs in with an OAuth2 token'),
    ('oauth_client_id = "c"', "smtp.oauth_client_id", "c", 'to be left out, or smtp.auth = "xoauth2"'),
    ('token_file = "t.json"', "smtp.token_file", "t.json", 'smtp.auth is "password"'),
    ('auth = "xoauth2"\noauth_provider = "google"\noauth_client_id = "c"\n'
     'oauth_client_secret_env = "A"\noauth_client_secret_command = "pass c"',
     "smtp.oauth_client_secret_env, smtp.oauth_client_secret_command", ["A", "pass c"],
     "only one of oauth_client_secret_env, oauth_client_secret_file, oauth_client_secret_command"),
    ('auth = "xoauth2"\noauth_provider = "google"\noauth_client_id = "c"\noauth_client_secret_env = ""',
     "smtp.oauth_client_secret_env", "", "a non-empty string"),
])
def test_smtp_xoauth2_refusals_name_the_key_and_what_would_do(tmp_path, env, lines, key, found, expected):
    refused(write(tmp_path, SMTP_HOST + lines + "\n"), key, found, expected, env)


def test_admin_address_must_be_an_address(tmp_path, env):
    refused(write(tmp_path, '[team]\nadmin_address = "it team"\n'), "team.admin_address", "it team",
            'an email address such as "crm@example.com"', env)


def test_the_config_knows_the_providers_the_oauth_module_has():
    from inboxcrm.config import OAUTH_PROVIDERS
    from inboxcrm.mail.oauth import PROVIDERS
    assert set(OAUTH_PROVIDERS) == set(PROVIDERS)


# --- the example file -------------------------------------------------------------------------

def example_entries() -> list[tuple[str, str, object]]:
    """(section, key, value) for every documented key, commented or not."""
    text = re.sub(r"(?m)^# ?([a-z_]+ = )", r"\1", EXAMPLE.read_text(encoding="utf-8"))
    return [(s, k, v) for s, table in tomllib.loads(text).items() for k, v in table.items()]


def test_example_documents_exactly_the_real_keys():
    documented = {(s, k) for s, k, _ in example_entries()}
    deprecated = {tuple(old.split(".")) for old in DEPRECATED_KEYS}
    assert documented == {(s, k) for s, keys in KEYS.items() for k in keys} - deprecated


@pytest.mark.parametrize("section, key, value", example_entries())
def test_example_values_are_valid_and_defaults_match(env, section, key, value):
    # One at a time: password_* exclude each other. smtp.host needs smtp.from_address, and an OAuth2
    # key needs auth = "xoauth2" with its client; a proof that reads Authentication-Results needs a
    # trusted server.
    table = {"host": "smtp.example.com", "from_address": "crm@example.com", key: value} if section == "smtp" \
        else {"trusted_authserv_ids": ["mx.example.com"], key: value} if section == "commands" else {key: value}
    if section == "smtp" and (key.startswith("oauth_") or key == "token_file"):
        table = {**XOAUTH2, **table}
    cfg = build_config({section: table}, EXAMPLE, env)
    default = getattr(getattr(build_config({}, None, env), section), key, None)
    # The database lines and the key file are examples (their defaults depend on the environment),
    # and so is a key whose default is "not set" (None, or an empty list) or a secret source.
    if section != "database" and default not in (None, ()) and key not in ("port", "token_key_file"):
        assert getattr(getattr(cfg, section), key) == default
    assert "Default:" in EXAMPLE.read_text(encoding="utf-8").split(f"# {key} =")[0].rsplit("\n\n", 1)[-1]


def test_commands_section(tmp_path, env):
    cfg = load_config(write(tmp_path, '[commands]\ntrusted_authserv_ids = ["MX.Team.example", "mx.google.com"]\n'
                                      'burst_limit = 5\ntoken_key_file = "keys/reply.key"\n'), True, env)
    assert cfg.commands.trusted_authserv_ids == ("mx.team.example", "mx.google.com")
    assert cfg.commands.burst_limit == 5
    assert cfg.commands.token_key_file == str(tmp_path / "keys/reply.key")  # relative to the file
    # A trusted server does not make the token useless: either proves a command by default.
    assert cfg.commands.proof == "auth-or-token"
    assert not cfg.commands.authentication_required and not cfg.commands.token_required
    assert cfg.commands.describe() == ("a command email needs a pass from a trusted receiving server (mx.team.example, "
                                       "mx.google.com) or the rep's reply token (their crm+TOKEN@ address; "
                                       "see `inboxcrm rep token`)")


@pytest.mark.parametrize("lines, proof, auth, token, says", [
    ('proof = "auth"', "auth", True, False, "or must come from the rep's own Sent folder"),
    ('proof = "token"', "token", False, True, "needs the rep's reply token"),
    ('proof = "auth-and-token"', "auth-and-token", True, True, "needs both a pass from a trusted receiving server"),
    ('proof = "address-only"', "address-only", False, False, "anyone who forges a rep's address can change deals"),
    ("require_authentication = true", "auth", True, False, "or must come from the rep's own Sent folder"),
    ("require_authentication = false", "auth-or-token", False, False, "or the rep's reply token"),
    ('require_authentication = true\nproof = "token"', "token", False, True, "needs the rep's reply token"),
])
def test_commands_proof(tmp_path, env, lines, proof, auth, token, says):
    commands = load_config(write(tmp_path, f'[commands]\ntrusted_authserv_ids = ["mx.team.example"]\n{lines}\n'),
                           True, env).commands
    assert (commands.proof, commands.authentication_required, commands.token_required) == (proof, auth, token)
    assert says in commands.describe()


def test_a_proof_without_a_trusted_server_to_read_is_refused(tmp_path, env):
    """Only the rep's own Sent folder could pass: every command by email would be refused, silently."""
    for lines, key in (('proof = "auth"', "commands.proof"), ('proof = "auth-and-token"', "commands.proof"),
                       ("require_authentication = true", "commands.require_authentication")):
        path = write(tmp_path, f"[commands]\n{lines}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path, True, env)
        assert caught.value.key == key and "trusted_authserv_ids naming the team's receiving server" in str(caught.value)
        assert 'or proof = "token"' in str(caught.value)
    token_only = load_config(write(tmp_path, '[commands]\nproof = "token"\n'), True, env).commands
    assert token_only.describe() == ("a command email needs the rep's reply token (their crm+TOKEN@ address; "
                                     "see `inboxcrm rep token`); no trusted server is configured ([commands] "
                                     "trusted_authserv_ids), so mail without a token is refused")


@pytest.mark.parametrize("line, key, expected", [
    ('trusted_authserv_ids = "mx.team.example"', "commands.trusted_authserv_ids", "a list of authserv-ids"),
    ('trusted_authserv_ids = ["mx team"]', "commands.trusted_authserv_ids", "an authserv-id"),
    ("burst_limit = 0", "commands.burst_limit", "a whole number of emails, at least 1"),
    ('answers_per_hour = "many"', "commands.answers_per_hour", "a whole number of answers"),
    ('proof = "dkim"', "commands.proof", 'one of "auth-or-token", "auth", "token", "auth-and-token", "address-only"'),
    ("proof = true", "commands.proof", 'one of "auth-or-token"'),
])
def test_commands_section_errors_name_key_and_form(tmp_path, env, line, key, expected):
    path = write(tmp_path, f"[commands]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, True, env)
    assert str(path) in str(caught.value) and key in str(caught.value) and expected in str(caught.value)


def test_team_domains_are_stored_in_the_addresses_normal_form():
    """A team that writes its international domain in punycode still recognises its own mail,
    whose addresses are stored with the Unicode domain."""
    from inboxcrm.core.addresses import normalize
    cfg = build_config({"team": {"domains": ["XN--MLLER-BAU-Q9A.example", "Acme.Example"]}}, None, {})
    assert cfg.team.domains == ("müller-bau.example", "acme.example")
    assert normalize("Anna@xn--mller-bau-q9a.example").rpartition("@")[2] in cfg.team.domains
    with pytest.raises(ConfigError, match="team.domains.*expected a domain"):
        build_config({"team": {"domains": ["localhost"]}}, None, {})


def test_rule_domains_match_either_spelling():
    from inboxcrm.core.rules import CONDITIONS
    from inboxcrm.values import Address, Email
    mail = Email(message_id="m@x", subject="", from_=Address("anna@mail.müller-bau.example"))
    matches = CONDITIONS["from-domain"][1]
    assert matches(mail, "sales", "xn--mller-bau-q9a.example") and matches(mail, "sales", "Müller-Bau.example")
    assert not matches(mail, "sales", "bau.example")
    from_address = CONDITIONS["from"][1]
    assert from_address(mail, "sales", "*@mail.xn--mller-bau-q9a.example")
    assert from_address(mail, "sales", "ANNA@*") and not from_address(mail, "sales", "*@xn--mller-bau-q9a.example")


def test_the_command_address_moved_to_commands_and_the_old_key_still_loads_with_a_warning(tmp_path, env):
    new = load_config(write(tmp_path, '[commands]\naddress = "CRM@Team.example"\n'), True, env)
    assert new.commands.address == "crm@team.example" and new.deprecations == ()

    path = write(tmp_path, '[digest]\ncommand_address = "crm@team.example"\n')
    old = load_config(path, True, env)
    assert old.commands.address == "crm@team.example"
    assert old.deprecations == (f"{path}: [digest] command_address is deprecated; move it to [commands] address",)

    both = '[digest]\ncommand_address = "crm@team.example"\n[commands]\naddress = "crm@team.example"\n'
    assert load_config(write(tmp_path, both), True, env).commands.address == "crm@team.example"
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, '[digest]\ncommand_address = "crm@team.example"\n'
                                    '[commands]\naddress = "cmd@team.example"\n'), True, env)
    assert "digest.command_address" in str(refused.value) and "commands.address" in str(refused.value)
