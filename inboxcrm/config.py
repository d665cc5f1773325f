"""The configuration file, validated into frozen dataclasses that callers pass along.

Nothing is cached or global: tests and the demo build as many configurations as they like, and
every function that looks at the environment takes it as an argument. Every refusal names the
file, the dotted key, what was found and what would be valid, and never echoes a password.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from inboxcrm.core.addresses import normalize, normalize_domain
from inboxcrm.errors import ConfigError
from inboxcrm.secret import PASSWORD_KEYS, SecretRef, secret_from_table

Environ = Mapping[str, str]


def _xdg(environ: Environ, var: str, fallback: str) -> Path:
    """The XDG spec says a relative value is invalid and must be ignored."""
    value = environ.get(var, "")
    return Path(value) if os.path.isabs(value) else Path(environ.get("HOME") or Path.home()) / fallback


def resolve_config_path(explicit: str | None, environ: Environ = os.environ) -> tuple[Path, bool]:
    """The bool is True when the user named the file, so that its absence is an error."""
    named = explicit or environ.get("INBOXCRM_CONFIG")
    if named:
        return Path(named).expanduser(), True
    return _xdg(environ, "XDG_CONFIG_HOME", ".config") / "inboxcrm" / "config.toml", False


def default_data_dir(environ: Environ = os.environ) -> Path:
    """systemd's StateDirectory= wins, so the service needs no configuration file at all."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]  # several directories are ':'-joined
    return Path(state) if state else _xdg(environ, "XDG_DATA_HOME", ".local/share") / "inboxcrm"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    password: SecretRef | None = None


@dataclass(frozen=True)
class TeamConfig:
    domains: tuple[str, ...] = ()
    timezone: str = "UTC"
    freemail_domains: tuple[str, ...] = ()
    # Who hears, by email, that something needs an admin (a mailbox's OAuth2 grant revoked); None: the log only
    admin_address: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    quiet_days: int = 14
    stalled_days: int = 30
    store_raw: bool = True
    # Stage name (lower case) -> quiet days for deals in that stage, overriding quiet_days.
    quiet_days_by_stage: tuple[tuple[str, int], ...] = ()
    # Open deals with no activity for this many days belong in Nurture: "deals archive" without a
    # number, and the manager's quarterly reminder.
    inactive_days: int = 90

    def quiet_days_for(self, stage: str) -> int:
        return dict(self.quiet_days_by_stage).get(stage.lower(), self.quiet_days)


@dataclass(frozen=True)
class SyncConfig:
    """How the daemon watches mailboxes (IMAP)."""

    poll_interval: int = 60  # seconds between polls when the server has no IDLE (or IDLE is off)
    since_days: int = 30  # a new mailbox backfills this many days, not its whole history
    idle: bool = True
    max_backoff: int = 900  # seconds; retries after errors back off exponentially up to this
    # A message larger than this is recorded from its headers and structure only (BODYSTRUCTURE,
    # no body), attached to its deal and marked truncated: one huge mail must not exhaust memory.
    max_message_bytes: int = 25 * 1024 * 1024
    fetch_batch_bytes: int = 8 * 1024 * 1024  # one FETCH asks for at most this many bytes of bodies


# The OAuth2 providers whose endpoints and scopes inboxcrm knows (mail.oauth.PROVIDERS has them).
OAUTH_PROVIDERS = ("google", "microsoft")
SMTP_AUTH = ("password", "xoauth2")


@dataclass(frozen=True)
class SmtpConfig:
    """Where outgoing mail (digests, nudges, replies) goes; ``host`` None means not set up.

    ``auth = "xoauth2"`` logs in with an OAuth2 access token bought with the refresh token in
    ``token_file`` (Google Workspace and Microsoft 365 take no passwords, or only app passwords)."""

    host: str | None = None
    port: int | None = None  # None: 465 for "tls", 587 for "starttls", 25 for "plain"
    security: str = "starttls"  # starttls | tls | plain
    verify: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: SecretRef | None = None
    from_address: str | None = None
    timeout: int = 30
    auth: str = "password"  # password | xoauth2
    oauth_provider: str | None = None  # one of OAUTH_PROVIDERS, or oauth_token_url
    oauth_token_url: str | None = None  # instead of the provider's, e.g. a Microsoft tenant's own
    oauth_client_id: str | None = None
    oauth_client_secret: SecretRef | None = None
    token_file: str | None = None  # xoauth2: the refresh token's file; default <data dir>/smtp-oauth.json

    @property
    def login(self) -> str | None:
        """Who logs in: the username, else (with XOAUTH2, where the token names the account) the From address."""
        return self.username or (self.from_address if self.auth == "xoauth2" else None)

    @property
    def effective_port(self) -> int:
        return self.port or {"tls": 465, "starttls": 587, "plain": 25}[self.security]


@dataclass(frozen=True)
class DigestConfig:
    time: str = "08:00"  # each rep's local time, unless the rep has their own
    days: str = "mon-fri"
    templates_dir: str | None = None  # templates here override the built-in ones, by file name
    first_response_hours: float = 2.0  # business hours before an unanswered prospect nudges the owner
    business_hours: str = "09:00-17:00"
    # Nudges per rep; beyond these the rest wait for the digest, so a backfill cannot flood anyone.
    nudges_per_hour: int = 6
    nudges_per_day: int = 30


@dataclass(frozen=True)
class ReportsConfig:
    """What the manager's reports measure against. See docs/reports.md."""

    # A first answer within this many minutes of business time ([digest] business_hours) is "on target".
    response_target_minutes: int = 5
    # Below this many deals, a rate, median or average is "too few to say", not a misleading figure.
    min_sample: int = 5


FORGOTTEN_MAIL = ("ignore", "new-lead")


@dataclass(frozen=True)
class RetentionConfig:
    """How long personal data is kept, and what becomes of mail from a forgotten person."""

    raw_days: int | None = None  # drop the raw bytes of messages older than this; None: keep them
    forgotten_mail: str = "ignore"  # later mail from a forgotten address: "ignore" it, or a "new-lead"


@dataclass(frozen=True)
class ReviewConfig:
    """The weekly pipeline review email to each manager (reps marked --manager, plus ``managers``)."""

    day: str = "mon"  # one weekday; each manager's local day (rep's time zone, else [team] timezone)
    time: str = "08:00"  # the manager's local time
    managers: tuple[str, ...] = ()  # addresses that get the review besides reps marked --manager
    enabled: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    """The daemon's Prometheus metrics and /health endpoint. See docs/operations.md."""

    port: int | None = None  # None: no endpoint
    host: str = "127.0.0.1"  # a non-loopback address needs allow_remote = true as well
    allow_remote: bool = False
    # When a mailbox counts as unhealthy (/health, "status --check"): failing this long, or no success this long
    failing_minutes: int = 15
    stale_minutes: int = 60


@dataclass(frozen=True)
class DaemonConfig:
    """Several ``inboxcrm run`` processes on one PostgreSQL database. See docs/operations.md."""

    id: str | None = None  # this daemon's name among the others; None: the host name (``run --id`` wins)
    # A mailbox whose daemon stopped renewing its lease for this long is taken over by another
    lease_seconds: int = 60


# What a command email must prove besides coming from a rep's address (see [commands] proof).
PROOFS = ("auth-or-token", "auth", "token", "auth-and-token", "address-only")


@dataclass(frozen=True)
class CommandsConfig:
    """Who may change deals by email, and how loudly we answer. See README "Who may send commands"."""

    # Where reps send commands, and where quick-action mailto: links point; None: no links
    address: str | None = None
    # authserv-ids of the team's own receiving servers (e.g. "mx.team.example"; Gmail: "mx.google.com")
    trusted_authserv_ids: tuple[str, ...] = ()
    # What a command must prove, one of PROOFS. "auth": a pass in a trusted Authentication-Results
    # header (or the rep's own Sent folder); "token": the rep's reply token (crm+TOKEN@ or the
    # X-InboxCRM-Token header); "address-only" trusts the From address alone and must be chosen
    # explicitly. Whatever is chosen, a failing verdict of a trusted server refuses the mail.
    proof: str = "auth-or-token"
    # Legacy (before "proof"): true meant "auth"; kept so existing files still load.
    require_authentication: bool | None = None
    burst_limit: int = 20  # command emails per sender per burst window; more are refused
    burst_minutes: int = 60
    answers_per_hour: int = 30  # answers to one rep per hour; beyond that we stay silent (and log it)
    token_key_file: str | None = None  # the reply-token key; default: <data dir>/reply-token.key

    @property
    def authentication_required(self) -> bool:
        """A trusted server's pass (or the rep's own Sent folder) is needed whatever the token says."""
        return self.proof in ("auth", "auth-and-token")

    @property
    def token_required(self) -> bool:
        """The rep's reply token is needed whatever the Authentication-Results say."""
        return self.proof in ("token", "auth-and-token")

    def describe(self) -> str:
        """One sentence on what a command email must prove, for init, status, the daemon's start
        and refusal answers, so all four say the same thing."""
        servers = ", ".join(self.trusted_authserv_ids)
        auth = f"a pass from a trusted receiving server ({servers})" if servers else None
        token = "the rep's reply token (their crm+TOKEN@ address; see `inboxcrm rep token`)"
        if self.proof == "address-only":
            return ("a command email needs only a rep's From address ([commands] proof = \"address-only\"): "
                    "anyone who forges a rep's address can change deals")
        if self.proof == "auth-and-token":
            return f"a command email needs both {auth} and {token}"
        if self.proof == "auth":
            return f"a command email needs {auth} or must come from the rep's own Sent folder"
        if self.proof == "token" or auth is None:
            tail = "" if auth else ("; no trusted server is configured ([commands] trusted_authserv_ids), "
                                    "so mail without a token is refused")
            return f"a command email needs {token}{tail}"
        return f"a command email needs {auth} or {token}"


@dataclass(frozen=True)
class Config:
    path: Path | None
    database: DatabaseConfig
    team: TeamConfig
    pipeline: PipelineConfig
    sync: SyncConfig = SyncConfig()
    smtp: SmtpConfig = SmtpConfig()
    digest: DigestConfig = DigestConfig()
    commands: CommandsConfig = CommandsConfig()
    reports: ReportsConfig = ReportsConfig()
    review: ReviewConfig = ReviewConfig()
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig = MetricsConfig()
    daemon: DaemonConfig = DaemonConfig()
    # Settings read under an old name: "<file>: [digest] command_address is deprecated; ...", one line each,
    # printed by the CLI and logged by the daemon so the admin moves them before the old name goes.
    deprecations: tuple[str, ...] = ()

    def with_database_url(self, url: str, source: str = "--database-url") -> Config:
        """The same checks as the file's url (no password in it), named after where it came from."""
        try:
            _url(url)
        except _Bad as bad:
            raise ConfigError(source, "database.url", _hide_password(url), bad.expected) from None
        return replace(self, database=replace(self.database, url=url))


class _Bad(Exception):
    """A validator's refusal; the caller knows the file and key. ``found`` None means the value
    itself (TOML has no null, so None cannot be a real value)."""

    def __init__(self, expected: str, found: object = None):
        self.expected, self.found = expected, found


def _hide_password(found: object) -> object:
    """Masks everything between ':' and the last '@' of a URL-like string, more than SQLAlchemy's
    own masking does: an unencoded '@' in a password would otherwise leak its tail."""
    if not isinstance(found, str):
        return found
    scheme, sep, rest = found.partition("://")
    if not sep:
        scheme, rest = "", found
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return found
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


# The start of SQLAlchemy's URL grammar (sqlalchemy.engine.url._parse_url), read here without
# it, so the file accepts what the engine will: "NAME://" (NAME: dialect+driver), then
# "USER:PASSWORD@" (a password runs to the first "@"), then the host and ":PORT". Which
# backends can be used, the engine decides when connecting (store.db).
_URL = re.compile(r"""
    [\w+]+://
    (?:[^:/]*(?P<password>:[^@]*)?@)?
    (?:\[[^/?]+\]|[^/:?]+)?
    (?::(?P<port>[^/?]*))?
""", re.VERBOSE)


def _url(value: Any) -> str:
    expected = 'a SQLAlchemy database URL such as "postgresql+psycopg://inboxcrm@localhost/inboxcrm"'
    found = _URL.match(value) if isinstance(value, str) else None
    if found is None:
        raise _Bad(expected)
    if found["port"] is not None:
        try:
            int(found["port"])
        except ValueError:
            raise _Bad(expected) from None
    if found["password"] is not None:
        raise _Bad("a URL without a password; put the password in password_env, password_file or password_command")
    return value


def _domains(value: Any) -> tuple[str, ...]:
    """Stored in the addresses' normal form, so a team domain written in punycode or Unicode
    compares equal to the senders' domains."""
    if not isinstance(value, list):
        raise _Bad('a list of domains such as ["example.com"]')
    found = []
    for item in value:
        domain = normalize_domain(item) if isinstance(item, str) and "@" not in item else None
        if domain is None:  # normalize_domain wants two labels at least: "localhost" is no mail domain
            raise _Bad('a domain such as "example.com" or "müller-bau.example" (no @, no spaces)', item)
        found.append(domain)
    return tuple(dict.fromkeys(found))


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(value)
        return value
    except (TypeError, ValueError, ZoneInfoNotFoundError, OSError):
        raise _Bad('an IANA time zone such as "Europe/Berlin"') from None


def _days(value: Any) -> int:
    if type(value) is not int or value < 1:  # type(): bool is an int subclass
        raise _Bad("a whole number of days, at least 1")
    return value


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise _Bad("true or false")
    return value


def _count(minimum: int, unit: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or value < minimum:
            raise _Bad(f"a whole number of {unit}, at least {minimum}")
        return value
    return check


def _seconds(minimum: int) -> Callable[[Any], int]:
    return _count(minimum, "seconds")


def _port(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= 65535:
        raise _Bad("a port number from 1 to 65535")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Bad("one of " + ", ".join(f'"{c}"' for c in choices))
        return value
    return check


DAEMON_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _daemon_id(value: Any) -> str:
    """A name the logs, ``status`` and other daemons show: no spaces or quotes to confuse them."""
    if not isinstance(value, str) or not DAEMON_ID.fullmatch(value):
        raise _Bad("a name of letters, digits, '.', '_' or '-' (at most 100, starting with a letter or digit)")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a non-empty string")
    return value.strip()


def _token_url(value: Any) -> str:
    """Syntax only: that http:// goes to this machine alone is checked where the URL is used."""
    parts = urllib.parse.urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise _Bad('an https:// URL of the OAuth2 token endpoint, such as '
                   '"https://login.microsoftonline.com/TENANT-ID/oauth2/v2.0/token"')
    return value


def _address(value: Any) -> str:
    address = normalize(value) if isinstance(value, str) else None
    if address is None:
        raise _Bad('an email address such as "crm@example.com"')
    return address


_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _clock(value: Any) -> str:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise _Bad('a time of day as "HH:MM", such as "08:00"')
    return value


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_weekdays(value: str) -> frozenset[int]:
    """"mon-fri", "mon,wed,fri", "sat-sun" or "daily" -> weekday numbers (Monday 0); ValueError if not."""
    text = value.strip().lower()
    if text in ("daily", "every day"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        if first not in WEEKDAYS or (dash and last not in WEEKDAYS):
            raise ValueError(part)
        start, end = WEEKDAYS.index(first), WEEKDAYS.index(last if dash else first)
        days.update(range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)])
    if not days:
        raise ValueError(value)
    return frozenset(days)


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(value: Any) -> str:
    """One day, as "mon" or "monday" in any case; kept as its three letters."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in WEEKDAYS and text not in _DAY_NAMES:
        raise _Bad('one weekday such as "mon" or "friday"')
    return text[:3]


def _addresses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad('a list of email addresses such as ["boss@example.com"]')
    found = []
    for item in value:
        address = normalize(item) if isinstance(item, str) else None
        if address is None:
            raise _Bad('an email address such as "boss@example.com"', item)
        found.append(address)
    return tuple(dict.fromkeys(found))


def _weekdays(value: Any) -> str:
    try:
        parse_weekdays(value if isinstance(value, str) else "")
        return value
    except ValueError:
        raise _Bad('weekdays such as "mon-fri", "mon,wed,fri" or "daily"') from None


def _hostnames(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad('a list of authserv-ids (host names) such as ["mx.example.com"]')
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", item):
            raise _Bad('an authserv-id: a host name such as "mx.example.com"', item)
    return tuple(dict.fromkeys(item.lower() for item in value))


def _hours(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value <= 168:
        raise _Bad("a number of business hours, more than 0")
    return float(value)


def _business_hours(value: Any) -> str:
    if isinstance(value, str):
        start, dash, end = value.partition("-")
        if dash and _CLOCK.fullmatch(start.strip()) and _CLOCK.fullmatch(end.strip()) and start.strip() < end.strip():
            return f"{start.strip()}-{end.strip()}"
    raise _Bad('a span of the day as "HH:MM-HH:MM", such as "09:00-17:00"')


def _stage_days(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict):
        raise _Bad('a table of stage name = days, such as { Proposal = 7 }')
    for stage, days in value.items():
        if type(days) is not int or days < 1:
            raise _Bad("a whole number of days, at least 1", {stage: days})
    return tuple((stage.lower(), days) for stage, days in value.items())


# Section -> key -> validator. The password_* keys are read by secret_from_table.
_VALIDATORS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "database": {"url": _url},
    "team": {"domains": _domains, "timezone": _timezone, "freemail_domains": _domains, "admin_address": _address},
    "pipeline": {"quiet_days": _days, "stalled_days": _days, "store_raw": _flag,
                 "quiet_days_by_stage": _stage_days, "inactive_days": _days},
    "sync": {"poll_interval": _seconds(5), "since_days": _days, "idle": _flag, "max_backoff": _seconds(1),
             "max_message_bytes": _count(65536, "bytes"), "fetch_batch_bytes": _count(1048576, "bytes")},
    "smtp": {"host": _text, "port": _port, "security": _choice("starttls", "tls", "plain"), "verify": _flag,
             "ca_file": _text, "username": _text, "from_address": _address, "timeout": _seconds(1),
             "auth": _choice(*SMTP_AUTH), "oauth_provider": _choice(*OAUTH_PROVIDERS), "oauth_token_url": _token_url,
             "oauth_client_id": _text, "token_file": _text},
    "digest": {"time": _clock, "days": _weekdays, "command_address": _address, "templates_dir": _text,
               "first_response_hours": _hours, "business_hours": _business_hours,
               "nudges_per_hour": _count(0, "nudges"), "nudges_per_day": _count(0, "nudges")},
    "commands": {"address": _address, "trusted_authserv_ids": _hostnames, "proof": _choice(*PROOFS), "require_authentication": _flag,
                 "burst_limit": _count(1, "emails"), "burst_minutes": _count(1, "minutes"),
                 "answers_per_hour": _count(1, "answers"), "token_key_file": _text},
    "reports": {"response_target_minutes": _count(1, "minutes"), "min_sample": _count(1, "deals")},
    "review": {"day": _weekday, "time": _clock, "managers": _addresses, "enabled": _flag},
    "retention": {"raw_days": _days, "forgotten_mail": _choice(*FORGOTTEN_MAIL)},
    "metrics": {"port": _port, "host": _text, "allow_remote": _flag, "failing_minutes": _count(1, "minutes"),
                "stale_minutes": _count(1, "minutes")},
    "daemon": {"id": _daemon_id, "lease_seconds": _seconds(3)},
}
_WITH_PASSWORD = ("database", "smtp")
# [smtp]'s OAuth2 client secret, from the same three kinds of source as a password (read by _client_secret).
CLIENT_SECRET_KEYS = {f"oauth_client_secret_{kind}": key for key, kind in
                      ((key, key.removeprefix("password_")) for key in PASSWORD_KEYS)}
# [smtp] keys that only mean something with auth = "xoauth2".
_OAUTH_KEYS = ("oauth_provider", "oauth_token_url", "oauth_client_id", *CLIENT_SECRET_KEYS, "token_file")
# Old name -> the key that replaced it; still read, with a warning in Config.deprecations.
DEPRECATED_KEYS = {"digest.command_address": "commands.address"}


def check(section: str, key: str, value: Any) -> Any:
    """The file's rule for one setting, for a command that sets the same thing another way
    (``rep digest --time``), so the two cannot disagree. ValueError says what is expected."""
    try:
        return _VALIDATORS[section][key](value)
    except _Bad as bad:
        raise ValueError(bad.expected) from None
KEYS: dict[str, tuple[str, ...]] = {
    section: (*checks, *PASSWORD_KEYS) if section in _WITH_PASSWORD else tuple(checks)
    for section, checks in _VALIDATORS.items()
}
KEYS["smtp"] += tuple(CLIENT_SECRET_KEYS)


def build_config(data: Mapping[str, Any], path: Path | None, environ: Environ = os.environ) -> Config:
    """Validates an already parsed TOML document; ``path`` is only used to name it."""
    name = str(path)
    for section, table in data.items():
        if section not in KEYS:
            raise ConfigError(name, section, "unknown section",
                              "one of the sections " + ", ".join(f"[{s}]" for s in KEYS))
        if not isinstance(table, dict):
            raise ConfigError(name, section, _hide_password(table), f"a table [{section}]")
        unknown = [key for key in table if key not in KEYS[section]]
        if unknown:
            raise ConfigError(name, f"{section}.{unknown[0]}", "unknown key",
                              "one of the keys " + ", ".join(KEYS[section]))

    def section(section: str) -> dict[str, Any]:
        table, values = data.get(section, {}), {}
        for key, check in _VALIDATORS[section].items():
            if key in table:
                try:
                    values[key] = check(table[key])
                except _Bad as bad:
                    found = table[key] if bad.found is None else bad.found
                    raise ConfigError(name, f"{section}.{key}", _hide_password(found), bad.expected) from None
        return values

    values = {table: section(table) for table in _VALIDATORS}
    deprecations = _renamed(values, name)
    return Config(
        path=path,
        database=DatabaseConfig(
            url=values["database"].get("url", f"sqlite:///{default_data_dir(environ) / 'inboxcrm.db'}"),
            password=secret_from_table(data.get("database", {}), name, "database"),
        ),
        team=TeamConfig(**values["team"]),
        pipeline=PipelineConfig(**values["pipeline"]),
        sync=SyncConfig(**values["sync"]),
        smtp=_smtp(values["smtp"], data.get("smtp", {}), name, path, environ),
        digest=_digest(values["digest"], path),
        commands=_commands(values["commands"], path, environ),
        reports=ReportsConfig(**values["reports"]),
        review=ReviewConfig(**values["review"]),
        retention=RetentionConfig(**values["retention"]),
        metrics=_metrics(values["metrics"], name),
        daemon=DaemonConfig(**values["daemon"]),
        deprecations=deprecations,
    )


def _renamed(values: dict[str, dict[str, Any]], name: str) -> tuple[str, ...]:
    """Moves each value read under an old name (``DEPRECATED_KEYS``) to its new key, in place, and
    says so, one line each. Both names with different values: the file is refused, as neither can be
    trusted to be the one meant."""
    said = []
    for old, new in DEPRECATED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        if old_key not in values[old_section]:
            continue
        value = values[old_section].pop(old_key)
        current = values[new_section].get(new_key, value)
        if current != value:
            raise ConfigError(name, old, value, f'to be left out: it is the old name of {new}, which says "{current}"')
        values[new_section][new_key] = value
        said.append(f"{name}: [{old_section}] {old_key} is deprecated; move it to [{new_section}] {new_key}")
    return tuple(said)


def _relative(value: str, path: Path | None) -> str:
    """Paths in the file are relative to the file, so a config and its parts can move together."""
    resolved = Path(value).expanduser()
    return str(resolved if resolved.is_absolute() or path is None else Path(path).parent / resolved)


def _smtp(values: dict[str, Any], table: Mapping[str, Any], name: str, path: Path | None,
          environ: Environ) -> SmtpConfig:
    if "host" in values and "from_address" not in values:
        raise ConfigError(name, "smtp.from_address", "missing",
                          'the address our mail comes from, such as "crm@example.com", whenever smtp.host is set')
    if "ca_file" in values:
        values["ca_file"] = _relative(values["ca_file"], path)
    password = secret_from_table(table, name, "smtp")
    if values.get("auth") == "xoauth2":
        _check_xoauth2(values, table, name)
        token_file = values.get("token_file")
        values["token_file"] = (_relative(token_file, path) if token_file
                                else str(default_data_dir(environ) / "smtp-oauth.json"))
    else:
        given = [key for key in _OAUTH_KEYS if key in table]
        if given:
            raise ConfigError(name, f"smtp.{given[0]}", table[given[0]],
                              'to be left out, or smtp.auth = "xoauth2": it is an OAuth2 setting and '
                              f'smtp.auth is "{values.get("auth", "password")}"')
    return SmtpConfig(**values, password=password, oauth_client_secret=_client_secret(table, name))


def _check_xoauth2(values: dict[str, Any], table: Mapping[str, Any], name: str) -> None:
    """XOAUTH2 needs a client and a token endpoint, and takes no password: a password left in the
    file next to it would be a secret kept for nothing, or a sign the admin meant something else."""
    passwords = [key for key in PASSWORD_KEYS if key in table]
    if passwords:
        raise ConfigError(name, f"smtp.{passwords[0]}", table[passwords[0]],
                          'to be left out with smtp.auth = "xoauth2", which logs in with an OAuth2 token '
                          "(token_file), not a password")
    if "oauth_client_id" not in values:
        raise ConfigError(name, "smtp.oauth_client_id", "missing",
                          'the OAuth2 client id (from the Google Cloud console or the Microsoft Entra app '
                          'registration) whenever smtp.auth = "xoauth2"')
    if "oauth_provider" not in values and "oauth_token_url" not in values:
        raise ConfigError(name, "smtp.oauth_provider", "missing",
                          'one of "' + '", "'.join(OAUTH_PROVIDERS) + '", or smtp.oauth_token_url, '
                          'whenever smtp.auth = "xoauth2"')


def _client_secret(table: Mapping[str, Any], name: str) -> SecretRef | None:
    """The oauth_client_secret_* keys read by the password_* keys' rules, errors under their own names."""
    as_password = {CLIENT_SECRET_KEYS[key]: value for key, value in table.items() if key in CLIENT_SECRET_KEYS}
    try:
        return secret_from_table(as_password, name, "smtp")
    except ConfigError as bad:
        def renamed(text: str) -> str:
            return text.replace("password_", "oauth_client_secret_")
        raise ConfigError(bad.path, renamed(bad.key), bad.found, renamed(bad.expected)) from None


def _digest(values: dict[str, Any], path: Path | None) -> DigestConfig:
    if "templates_dir" in values:
        values["templates_dir"] = _relative(values["templates_dir"], path)
    return DigestConfig(**values)


def _commands(values: dict[str, Any], path: Path | None, environ: Environ) -> CommandsConfig:
    key, found = "commands.proof", values.get("proof")
    if values.get("require_authentication") is True and "proof" not in values:
        key, found, values["proof"] = "commands.require_authentication", True, "auth"  # what the legacy key meant
    if values.get("proof") in ("auth", "auth-and-token") and not values.get("trusted_authserv_ids"):
        # Nothing could pass but the rep's own Sent folder: every command by email would be refused.
        raise ConfigError(str(path), key, found,
                          "trusted_authserv_ids naming the team's receiving server(s) as well, since "
                          f'proof "{values["proof"]}" needs their Authentication-Results; or proof = "token"')
    key = values.get("token_key_file")
    values["token_key_file"] = _relative(key, path) if key else str(default_data_dir(environ) / "reply-token.key")
    return CommandsConfig(**values)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: "localhost" or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _metrics(values: dict[str, Any], name: str) -> MetricsConfig:
    """The metrics tell how busy the team's mail is: another machine may read them only when the
    admin says so in a second key, so a typo in host cannot publish them."""
    host = values.get("host")
    if host is not None and not is_loopback(host) and not values.get("allow_remote"):
        raise ConfigError(name, "metrics.host", host,
                          'a loopback address such as "127.0.0.1", or allow_remote = true as well to serve '
                          "the metrics to other machines")
    return MetricsConfig(**values)


def load_config(path: Path, must_exist: bool, environ: Environ = os.environ) -> Config:
    """A missing default file means all defaults; a file the user named must exist."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(str(path), "(file)", "missing", "an existing TOML file") from None
        return build_config({}, None, environ)
    except OSError as e:
        raise ConfigError(str(path), "(file)", e.strerror, "a readable TOML file") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), "(syntax)", str(e), "valid TOML in UTF-8 (see https://toml.io)") from None
    return build_config(data, Path(path), environ)

