"""Log lines as logfmt events, one per line, fit for journald and for grep.

A daemon's log is read by people hunting one mailbox or one UID, and by tools: ``key=value``
pairs on one line serve both, where free text needs a parser per message. Under systemd
(``$JOURNAL_STREAM`` set) the journal stamps the time itself, so the line carries no timestamp
and its level goes in the ``<N>`` prefix journald reads as the priority.

Callers write ``event(log, logging.INFO, "synced", mailbox=name, fetched=12)``. Records from
other libraries (APScheduler, imapclient) come out as ``event=log logger=... msg="..."``. Any
field whose name says it holds a secret is masked, whatever its value.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from inboxcrm.core.views import printable
from inboxcrm.private_files import make_private_dir

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LEVEL = "WARNING"
LEVEL_VARIABLE = "INBOXCRM_LOG_LEVEL"
_HANDLER = "inboxcrm"
_FIELDS = "inboxcrm_fields"  # the LogRecord attribute event() puts the key=value pairs in
_SECRET_KEY = re.compile(r"pass|secret|token|credential", re.IGNORECASE)
_BARE = re.compile(r"[^\s\"=\\]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")
ERROR_LOG = "errors.log"  # in the data directory: the tracebacks the command line does not show
ERROR_LOG_MAX_BYTES = 1_000_000  # then it becomes errors.log.1, so the file never fills the disk
# syslog priorities journald takes from a "<N>" prefix (sd-daemon(3))
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def event(logger: logging.Logger, level: int, name: str, exc_info: bool = False, **fields: Any) -> None:
    """Logs the event ``name`` with its fields in the order given; None values are left out.
    ``exc_info``: add the exception being handled as an ``error`` field."""
    if logger.isEnabledFor(level):
        logger.log(level, name, exc_info=exc_info,
                   extra={_FIELDS: {k: v for k, v in fields.items() if v is not None}})


def quote(value: Any) -> str:
    """A value as logfmt writes it: bare when it can be, else double-quoted with escapes.

    Newlines are escaped too, so that one event always stays one line, and other controls (a
    subject's ESC sequence) are made visible, so that a log shown on a terminal cannot drive it."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat(timespec="seconds")
    text = "" if value is None else printable(str(value))
    if text and _BARE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def logfmt(pairs: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={'***' if _SECRET_KEY.search(key) else quote(value)}" for key, value in pairs.items())


class LogfmtFormatter(logging.Formatter):
    """``[time ]level=... event=... key=value ...``; ``journal`` drops the time for a ``<N>`` prefix."""

    def __init__(self, journal: bool = False):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, None)
        pairs: dict[str, Any] = {"level": record.levelname.lower()}
        if fields is None:
            pairs.update(event="log", logger=record.name, msg=record.getMessage())
        else:
            pairs.update(event=record.msg, **fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            pairs["error"] = f"{type(exc).__name__}: {exc}"
        line = logfmt(pairs)
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return f"{stamp} {line}"


def level_from(environ: Mapping[str, str]) -> str:
    """``$INBOXCRM_LOG_LEVEL``, checked; ValueError names the valid levels."""
    level = environ.get(LEVEL_VARIABLE, DEFAULT_LEVEL).upper()
    if level not in LEVELS:
        raise ValueError(f'{LEVEL_VARIABLE}="{level}" is not a log level; use one of {", ".join(LEVELS)}')
    return level


def on_journal(environ: Mapping[str, str], stream: IO[str]) -> bool:
    """systemd sets ``$JOURNAL_STREAM`` to the device:inode of the journal stream it connected;
    a child whose stderr went elsewhere inherits the variable, so the stream itself must match."""
    try:
        device, inode = (int(part) for part in environ.get("JOURNAL_STREAM", "").split(":"))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def setup(environ: Mapping[str, str] = os.environ, stream: IO[str] | None = None) -> None:
    """Sends every logger's records, as logfmt, to ``stream`` (stderr).

    Replaces the handler an earlier call added (a test runs many commands in one process, each
    with its own stderr) and leaves other handlers, such as a test runner's, alone."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter(journal=on_journal(environ, stream)))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_from(environ))


def mask_url_password(text: str) -> str:
    """``postgresql://user:secret@host`` -> ``postgresql://user:***@host``: URLs are echoed in
    errors and logs, their passwords never."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def save_traceback(exc: BaseException, context: str, data_dir: Path, now: datetime) -> Path:
    """Appends ``exc``'s traceback to ``data_dir``/errors.log and returns that file's path.

    A user is shown one line; whoever fixes the bug needs the whole traceback, and a file keeps
    it after the terminal is gone. The data directory is where the user already looks (it holds
    the database); when it cannot be written, which is itself a common cause of the error, a
    new private file in the temporary directory takes the report instead. The file is created
    0600: a traceback names paths and values. OSError when neither can be written.
    """
    report = "".join([f"{now.astimezone(UTC).isoformat(timespec='seconds')} {mask_url_password(context)}\n",
                      *traceback.format_exception(exc), "\n"])
    try:
        make_private_dir(data_dir)
        path = data_dir / ERROR_LOG
        if path.is_file() and path.stat().st_size > ERROR_LOG_MAX_BYTES:
            path.replace(path.with_name(ERROR_LOG + ".1"))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        fd, name = tempfile.mkstemp(prefix="inboxcrm-error-", suffix=".log")
        path = Path(name)
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as out:
        out.write(printable(report))
    return path
