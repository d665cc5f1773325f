"""Local import sources: one .eml file, a folder of them, an mbox file or a Maildir.

Each message comes with a ``location`` that does not change while the source does not, so
an interrupted or repeated import recognises the copies it has already stored. Sources are
only ever read: a Maildir that a mail client still uses must look the same afterwards.

A message file that cannot be read (permission denied, vanished while the import ran) is
skipped, logged and handed to ``on_skip``, so the importer can name it while the rest still
imports. A message over ``max_message_bytes`` is read up to its headers only (see ``sources``).
"""
from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path

from inboxcrm.core.parse import HEADER_LIMIT, decode_header_value, parse_date
from inboxcrm.errors import Invalid, NotFound
from inboxcrm.logs import event
from inboxcrm.mail.sources import headers_only
from inboxcrm.values import RawMessage

log = logging.getLogger("inboxcrm.import")

ACCEPTED = ("an .eml file, a folder of .eml files, an mbox file (e.g. Google Takeout), "
            "or a Maildir (folder with cur/ and new/)")
_BLANK = (b"\n", b"\r\n")
_QUOTED_FROM = re.compile(rb">+From ")
# A separator that no body line is likely to imitate; some writers (mblaze, Roundcube) put
# no blank line before it, and without this their whole mbox would read as one message.
_FROM_LINE = re.compile(rb"From \S+ +(Mon|Tue|Wed|Thu|Fri|Sat|Sun) .*\d\d:\d\d")
_MAILDIR_INFO = re.compile(r"[:;!]2,[A-Za-z]*$")
_HEADERS = BytesHeaderParser()
VANISHED = "vanished (moved or deleted by another program while the import ran)"


def detect_format(path: Path) -> str:
    """Which of "eml", "eml-folder", "mbox", "maildir": by looking, not by trusting a name."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"no such file or folder: {path}") from None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if stat.S_ISDIR(mode):
        if _is_maildir(path):
            return "maildir"
        if next(_eml_files(path), None) is not None:
            return "eml-folder"
        found = "a folder with no .eml files and without cur/ and new/"
    elif stat.S_ISREG(mode):
        if path.name.lower().endswith(".eml"):
            return "eml"
        with _open(path) as f:
            first = f.readline()
        if first.startswith(b"From ") or (not first and path.suffix.lower() in (".mbox", ".mbx")):
            return "mbox"
        found = "a file that is not .eml and does not start with an mbox \"From \" line"
    else:
        found = "something that is neither a file nor a folder"
    raise Invalid(f"{path}: found {found}; accepted: {ACCEPTED}")


def count_messages(path: Path) -> int:
    """A progress-bar total; with ``since`` the import may yield fewer."""
    fmt = detect_format(path)
    return _FORMATS[fmt][1](Path(path).resolve())


@dataclass(frozen=True)
class Reading:
    """How one import reads its files: up to the size limit, reporting what it cannot read."""

    max_message_bytes: int | None = None  # None: no limit
    on_skip: Callable[[str, str], None] | None = None  # (path, why)

    def over(self, size: int) -> bool:
        return self.max_message_bytes is not None and size > self.max_message_bytes

    def skip(self, path: object, why: str) -> None:
        event(log, logging.WARNING, "unreadable", path=str(path), error=why,
              action="skipped; the rest still imports")
        if self.on_skip is not None:
            self.on_skip(str(path), why)

    def first_readable(self, paths: Iterable[Path], location: str, folder: str = "") -> RawMessage | None:
        """The message in the first of ``paths`` that exists (a client may have moved it since it
        was listed); None, reported, when it cannot be read or none exists any more."""
        first = None
        for path in paths:
            first = first or path
            try:
                return self.message(path, location, folder)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.skip(path, exc.strerror or str(exc))
                return None
        self.skip(first, VANISHED)
        return None

    def message(self, path: Path, location: str, folder: str = "") -> RawMessage:
        """The file's message (its headers only when it is over the limit); OSError if unreadable."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if self.over(size):
                return RawMessage(headers_only(f.read(HEADER_LIMIT), size, self.max_message_bytes), location,
                                  folder, full_size=size)
            return RawMessage(f.read(), location, folder)


def iter_messages(path: Path, since: datetime | None = None, max_message_bytes: int | None = None,
                  on_skip: Callable[[str, str], None] | None = None) -> Iterator[RawMessage]:
    """Messages one at a time; checks the path now, so a wrong one fails before any work."""
    fmt = detect_format(path)
    messages = _FORMATS[fmt][0](Path(path).resolve(), Reading(max_message_bytes, on_skip))
    if since is None:
        return messages
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return (m for m in messages if _not_before(m.data, since))


def _not_before(data: bytes, since: datetime) -> bool:
    """Undated mail is kept: skipping it could lose a message nobody would look for."""
    date = parse_date(_headers(data).get("Date"))
    return date is None or date >= since


def _headers(data: bytes) -> Message:
    return _HEADERS.parsebytes(data[:65536])


def _unreadable(path: object, exc: OSError) -> Invalid:
    return Invalid(f"cannot read {path}: {exc.strerror or exc}")


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise _unreadable(path, exc) from exc


# --- .eml ---------------------------------------------------------------------------------

def _eml_files(root: Path) -> Iterator[Path]:
    """Unsorted, so detection can stop at the first; macOS "._" resource forks are not mail."""
    def fail(exc: OSError) -> None:
        raise _unreadable(exc.filename, exc) from exc

    for top, _dirs, files in os.walk(root, onerror=fail):
        for name in files:
            if name.lower().endswith(".eml") and not name.startswith("._"):
                yield Path(top, name)


def _eml(path: Path, reading: Reading) -> Iterator[RawMessage]:
    """The one file named: unreadable, the import fails with the reason (nothing else to import)."""
    try:
        yield reading.message(path, f"file:{path}")
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _eml_folder(root: Path, reading: Reading) -> Iterator[RawMessage]:
    for path in sorted(_eml_files(root)):
        path = Path(os.path.realpath(path))  # not resolve(): it raises on a symlink loop
        raw = reading.first_readable([path], f"file:{path}")
        if raw is not None:
            yield raw


# --- mbox ---------------------------------------------------------------------------------

def _mbox_lines(path: Path) -> Iterator[tuple[bool, bytes]]:
    """(starts a message, line), streamed so a multi-GB Takeout file is never held whole."""
    after_blank = True
    with _open(path) as f:
        for line in f:
            yield line.startswith(b"From ") and (after_blank or bool(_FROM_LINE.match(line))), line
            after_blank = line in _BLANK


class _MboxMessage:
    """One message's lines as they stream past; past the size limit only its headers are kept."""

    def __init__(self):
        self.lines: list[bytes] = []
        self.size = 0
        self.header_lines: int | None = None  # lines up to the blank one, once seen
        self.dropped = False  # the body went: over the limit
        self.last = b""

    def add(self, line: bytes, reading: Reading) -> None:
        self.size += len(line)
        self.last = line
        if self.header_lines is None:
            self.lines.append(line)
            if line in _BLANK:
                self.header_lines = len(self.lines)
        elif not reading.over(self.size):
            self.lines.append(line)
        elif not self.dropped:
            del self.lines[self.header_lines:]  # over the limit: the body read so far goes too
            self.dropped = True

    def message(self, path: Path, index: int, reading: Reading) -> RawMessage:
        if self.last in _BLANK:  # the blank line before the next "From " belongs to the separator
            self.size -= len(self.last)
            if not self.dropped and self.lines:
                self.lines.pop()
        data = b"".join(self.lines)
        self.lines = []  # not held beside ``data`` while the message goes through the pipeline
        labels = {label.strip().strip('"')
                  for label in decode_header_value(_headers(data).get("X-Gmail-Labels")).split(",")}
        # Takeout puts Spam and Trash in the same file: name the folder so the pipeline keeps them as noise.
        folder = next((name for name in ("Spam", "Trash", "Sent") if name in labels), "")
        location = f"mbox:{path}#{index}"
        if self.dropped:
            return RawMessage(headers_only(data, self.size, reading.max_message_bytes), location, folder,
                              full_size=self.size)
        return RawMessage(data, location, folder)


def _mbox(path: Path, reading: Reading) -> Iterator[RawMessage]:
    current: _MboxMessage | None = None
    index = 0
    for starts, line in _mbox_lines(path):
        if starts:
            if current is not None:
                yield current.message(path, index, reading)
                index += 1
            current = _MboxMessage()
        elif current is not None:
            current.add(line[1:] if line.startswith(b">") and _QUOTED_FROM.match(line) else line, reading)
    if current is not None:
        yield current.message(path, index, reading)


def _count_mbox(path: Path) -> int:
    return sum(starts for starts, _ in _mbox_lines(path))


# --- Maildir ------------------------------------------------------------------------------

def _is_maildir(path: Path) -> bool:
    try:
        return (path / "cur").is_dir() and (path / "new").is_dir()
    except OSError as exc:  # before 3.12 a folder we may not enter raises here
        raise _unreadable(path, exc) from exc


def _maildir_key(name: str) -> str:
    """The unique name without the flags, which other clients change as mail is read."""
    return _MAILDIR_INFO.sub("", name)


def _maildir_index(root: Path) -> list[tuple[str, Path, str, str]]:
    """(folder, maildir, key, "cur/" or "new/" + file name) for the top and Maildir++ folders."""
    folders = [("", root)] + [(name[1:], root / name) for name in _listdir(root)
                              if name.startswith(".") and _is_maildir(root / name)]
    index = []
    for folder, maildir in folders:
        files: dict[str, str] = {}
        for sub in ("new", "cur"):  # cur/ last: a key in both is the copy a client has moved on
            files.update((_maildir_key(name), f"{sub}/{name}")
                         for name in _listdir(maildir / sub) if not name.startswith("."))
        index += [(folder, maildir, key, files[key]) for key in sorted(files)]
    return index


def _maildir_paths(maildir: Path, key: str, name: str) -> Iterator[Path]:
    """Where the message listed as ``name`` may be now: there, or (listed lazily, only when it is
    gone) under another name in cur/, where a client moves and re-flags what it has read."""
    yield maildir / name
    yield from (maildir / "cur" / other for other in _listdir(maildir / "cur")
                if _maildir_key(other) == key and f"cur/{other}" != name)


def _maildir(root: Path, reading: Reading) -> Iterator[RawMessage]:
    for folder, maildir, key, name in _maildir_index(root):
        raw = reading.first_readable(_maildir_paths(maildir, key, name), f"maildir:{maildir}/{key}", folder)
        if raw is not None:
            yield raw


_FORMATS: dict[str, tuple[Callable[[Path, Reading], Iterator[RawMessage]], Callable[[Path], int]]] = {
    "eml": (_eml, lambda path: 1),
    "eml-folder": (_eml_folder, lambda root: sum(1 for _ in _eml_files(root))),
    "mbox": (_mbox, _count_mbox),
    "maildir": (_maildir, lambda root: len(_maildir_index(root))),
}
