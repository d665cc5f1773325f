"""Refusals as types: each carries a message fit to show the person who caused it."""
from __future__ import annotations


class InboxCRMError(Exception):
    """Base for errors shown to a user as one line, without a traceback."""


class ConfigError(InboxCRMError):
    """A configuration file, key or value is wrong: names all three and what was expected."""

    def __init__(self, path: str, key: str, found: object, expected: str):
        self.path, self.key, self.found, self.expected = path, key, found, expected
        super().__init__(path, key, found, expected)  # args as given, so it pickles

    def __str__(self) -> str:
        return f"{self.path}: {self.key}: found {self.found!r}, expected {self.expected}"


class SecretError(InboxCRMError):
    """A secret could not be read from where the configuration says it is."""


class NotFound(InboxCRMError):
    """A name or reference that does not exist; the message lists what does."""


class Invalid(InboxCRMError):
    """A value that is not allowed; the message says what would be valid."""


class ParseError(Exception):
    """A message that cannot be interpreted: ``reason`` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(reason, detail)  # args as given: it crosses process boundaries

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParseError) and (self.reason, self.detail) == (other.reason, other.detail)

    __hash__ = Exception.__hash__


class DaemonRefused(InboxCRMError):
    """``inboxcrm run`` must not start: another daemon with its name is alive, or SQLite's one
    daemon is. The message names the other daemon and what to do."""


class LeaseLost(InboxCRMError):
    """Another daemon holds the mailbox now (this one's lease expired and was taken): the pass
    stops and its open group rolls back, so no message is recorded by two daemons."""
