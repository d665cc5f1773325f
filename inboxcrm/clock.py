"""The one clock: what "now" is, as an aware UTC datetime.

Everything that depends on the time takes ``now`` (or a ``Clock``) as an argument so tests can
pin it; this is the one place that reads the real clock, so a daemon, a CLI command and an
import agree on what time zone "now" is in.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
