"""Where a secret lives, as opposed to the secret itself.

The configuration file only ever names a source (an environment variable, a file such as a
systemd credential, or a password-manager command), so the file can be shared, committed or
pasted into a bug report. Secrets are read at the last moment and never appear in an error.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from inboxcrm.errors import ConfigError, SecretError
from inboxcrm.private_files import refuse_exposed

COMMAND_TIMEOUT = 10.0
# Configuration key -> SecretRef field, in the order they are documented.
PASSWORD_KEYS = {"password_env": "env", "password_file": "file", "password_command": "command"}


def _split(command: str) -> list[str]:
    """No shell, so a secret source cannot smuggle in pipes or expansions by accident."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("the command is empty")
    return argv


@dataclass(frozen=True)
class SecretRef:
    env: str | None = None
    file: str | None = None
    command: str | None = None

    def __post_init__(self):
        if sum(v is not None for v in (self.env, self.file, self.command)) != 1:
            raise ValueError("a SecretRef needs exactly one of env, file, command")

    def describe(self) -> str:
        """Safe to log: it names where the secret is, never what it is."""
        kind = next(k for k in PASSWORD_KEYS.values() if getattr(self, k) is not None)
        return f"{kind} {getattr(self, kind)}"

    def resolve(self, environ: Mapping[str, str] = os.environ, timeout: float = COMMAND_TIMEOUT) -> str:
        if self.env is not None:
            value = environ.get(self.env)
            if value is None:
                raise SecretError(f"secret from {self.describe()}: the environment variable is not set")
        elif self.file is not None:
            value = self._read_file()
        else:
            value = self._run(environ, timeout)
        if not value:
            raise SecretError(f"secret from {self.describe()}: the secret is empty")
        return value

    def _read_file(self) -> str:
        # "from None" everywhere: a chained exception could carry the bytes it failed on.
        try:
            with open(self.file, "rb") as f:
                # The open file's mode, not the path's: checked and read are the same file.
                refuse_exposed(os.fstat(f.fileno()), self.file, "secret from file")
                return f.read().decode("utf-8").removesuffix("\n")
        except OSError as e:
            raise SecretError(f"secret from {self.describe()}: cannot read it ({e.strerror})") from None
        except UnicodeDecodeError:
            raise SecretError(f"secret from {self.describe()}: the file is not UTF-8 text") from None

    def _run(self, environ: Mapping[str, str], timeout: float) -> str:
        """The command sees ``environ``, like the env source does, so both are equally testable."""
        where = f"secret from {self.describe()}"
        try:
            done = subprocess.run(_split(self.command), capture_output=True, stdin=subprocess.DEVNULL,
                                  env=dict(environ), timeout=timeout, check=False)
        except ValueError as e:
            raise SecretError(f"{where}: cannot split the command line ({e})") from None
        except OSError as e:
            raise SecretError(f"{where}: cannot run it ({e.strerror})") from None
        except subprocess.TimeoutExpired:
            raise SecretError(f"{where}: no answer within {timeout:g} s") from None
        if done.returncode != 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SecretError(f"{where}: exited with code {done.returncode}: "
                              f"{lines[0] if lines else '(nothing on stderr)'}")
        try:
            return done.stdout.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SecretError(f"{where}: its output is not UTF-8 text") from None


def secret_from_table(table: Mapping[str, object], path: str, key_prefix: str) -> SecretRef | None:
    """Reads the password_* keys of one TOML table; ``key_prefix`` is the table's dotted name.

    A relative password_file is taken relative to the configuration file, so a config and its
    secret can move together.
    """
    given = {key: table[key] for key in PASSWORD_KEYS if key in table}
    if len(given) > 1:
        raise ConfigError(path, ", ".join(f"{key_prefix}.{k}" for k in given), list(given.values()),
                          "only one of " + ", ".join(PASSWORD_KEYS))
    if not given:
        return None
    [(key, value)] = given.items()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"{key_prefix}.{key}", value, "a non-empty string")
    if key == "password_file":
        value = str(Path(path).parent / Path(value).expanduser())
    elif key == "password_command":
        try:
            _split(value)
        except ValueError as e:
            raise ConfigError(path, f"{key_prefix}.{key}", value, f"a command line ({e})") from None
    return SecretRef(**{PASSWORD_KEYS[key]: value})
