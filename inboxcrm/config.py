"""The configuration file, validated into frozen dataclasses that callers pass along.

Nothing is cached or global: tests and the demo build as many configurations as they like, and
every function that looks at the environment takes it as an argument. Every refusal names the
file, the dotted key, what was found and what would be valid, and never echoes a password.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .secret import PASSWORD_KEYS, SecretRef, secret_from_table

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


@dataclass(frozen=True)
class PipelineConfig:
    quiet_days: int = 14
    stalled_days: int = 30
    store_raw: bool = True


@dataclass(frozen=True)
class Config:
    path: Path | None
    database: DatabaseConfig
    team: TeamConfig
    pipeline: PipelineConfig

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


def _url(value: Any) -> str:
    expected = 'a SQLAlchemy database URL such as "postgresql+psycopg://inboxcrm@localhost/inboxcrm"'
    if not isinstance(value, str):
        raise _Bad(expected)
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise _Bad(expected) from None
    if url.password is not None:
        raise _Bad("a URL without a password; put the password in password_env, password_file or password_command")
    return value


_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+")


def _domains(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad('a list of domains such as ["example.com"]')
    for item in value:
        if not isinstance(item, str) or not _DOMAIN.fullmatch(item.lower()):
            raise _Bad('a domain such as "example.com" (no @, no spaces)', item)
    return tuple(dict.fromkeys(item.lower() for item in value))


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


# Section -> key -> validator. The password_* keys are read by secret_from_table.
_VALIDATORS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "database": {"url": _url},
    "team": {"domains": _domains, "timezone": _timezone, "freemail_domains": _domains},
    "pipeline": {"quiet_days": _days, "stalled_days": _days, "store_raw": _flag},
}
KEYS: dict[str, tuple[str, ...]] = {
    section: (*checks, *PASSWORD_KEYS) if section == "database" else tuple(checks)
    for section, checks in _VALIDATORS.items()
}


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

    database = section("database")
    return Config(
        path=path,
        database=DatabaseConfig(
            url=database.get("url", f"sqlite:///{default_data_dir(environ) / 'inboxcrm.db'}"),
            password=secret_from_table(data.get("database", {}), name, "database"),
        ),
        team=TeamConfig(**section("team")),
        pipeline=PipelineConfig(**section("pipeline")),
    )


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


def database_url(cfg: DatabaseConfig, environ: Environ = os.environ) -> URL:
    """The secret is resolved only here, when connecting; log the result with
    ``url.render_as_string(hide_password=True)``."""
    url = make_url(cfg.url)
    return url.set(password=cfg.password.resolve(environ)) if cfg.password else url
