"""Local import sources: one .eml file, a folder of them, an mbox file or a Maildir.

Each message comes with a ``location`` that does not change while the source does not, so
an interrupted or repeated import recognises the copies it has already stored. Sources are
only ever read: a Maildir that a mail client still uses must look the same afterwards.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path

from ..errors import Invalid, NotFound
from ..parse import decode_header_value, parse_date
from ..values import RawMessage

ACCEPTED = ("an .eml file, a folder of .eml files, an mbox file (e.g. Google Takeout), "
            "or a Maildir (folder with cur/ and new/)")
_BLANK = (b"\n", b"\r\n")
_QUOTED_FROM = re.compile(rb">+From ")
# A separator that no body line is likely to imitate; some writers (mblaze, Roundcube) put
# no blank line before it, and without this their whole mbox would read as one message.
_FROM_LINE = re.compile(rb"From \S+ +(Mon|Tue|Wed|Thu|Fri|Sat|Sun) .*\d\d:\d\d")
_MAILDIR_INFO = re.compile(r"[:;!]2,[A-Za-z]*$")
_HEADERS = BytesHeaderParser()


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


def iter_messages(path: Path, since: datetime | None = None) -> Iterator[RawMessage]:
    """Messages one at a time; checks the path now, so a wrong one fails before any work."""
    fmt = detect_format(path)
    messages = _FORMATS[fmt][0](Path(path).resolve())
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


def _read(path: Path) -> bytes | None:
    """None when the file vanished after it was listed: another program moved or deleted it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
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


def _eml(path: Path) -> Iterator[RawMessage]:
    data = _read(path)
    if data is not None:
        yield RawMessage(data, f"file:{path}")


def _eml_folder(root: Path) -> Iterator[RawMessage]:
    for path in sorted(_eml_files(root)):
        yield from _eml(path.resolve())


# --- mbox ---------------------------------------------------------------------------------

def _mbox_lines(path: Path) -> Iterator[tuple[bool, bytes]]:
    """(starts a message, line), streamed so a multi-GB Takeout file is never held whole."""
    after_blank = True
    with _open(path) as f:
        for line in f:
            yield line.startswith(b"From ") and (after_blank or bool(_FROM_LINE.match(line))), line
            after_blank = line in _BLANK


def _mbox(path: Path) -> Iterator[RawMessage]:
    lines: list[bytes] | None = None
    index = 0
    for starts, line in _mbox_lines(path):
        if starts:
            if lines is not None:
                yield _mbox_message(path, index, lines)
                index += 1
            lines = []
        elif lines is not None:
            lines.append(line[1:] if line.startswith(b">") and _QUOTED_FROM.match(line) else line)
    if lines is not None:
        yield _mbox_message(path, index, lines)


def _mbox_message(path: Path, index: int, lines: list[bytes]) -> RawMessage:
    if lines and lines[-1] in _BLANK:
        lines.pop()  # the blank line belongs to the separator, not to the message
    data = b"".join(lines)
    labels = {label.strip().strip('"') for label in decode_header_value(_headers(data).get("X-Gmail-Labels")).split(",")}
    # Takeout puts Spam and Trash in the same file: name the folder so the pipeline keeps them as noise.
    folder = next((name for name in ("Spam", "Trash", "Sent") if name in labels), "")
    return RawMessage(data, f"mbox:{path}#{index}", folder)


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


def _maildir_read(maildir: Path, key: str, name: str) -> bytes | None:
    data = _read(maildir / name)
    if data is None:  # moved to cur/ or re-flagged by a client since it was listed
        for other in _listdir(maildir / "cur"):
            if _maildir_key(other) == key and (data := _read(maildir / "cur" / other)) is not None:
                break
    return data


def _maildir(root: Path) -> Iterator[RawMessage]:
    for folder, maildir, key, name in _maildir_index(root):
        data = _maildir_read(maildir, key, name)
        if data is not None:
            yield RawMessage(data, f"maildir:{maildir}/{key}", folder)


_FORMATS: dict[str, tuple[Callable[[Path], Iterator[RawMessage]], Callable[[Path], int]]] = {
    "eml": (_eml, lambda path: 1),
    "eml-folder": (_eml_folder, lambda root: sum(1 for _ in _eml_files(root))),
    "mbox": (_mbox, _count_mbox),
    "maildir": (_maildir, lambda root: len(_maildir_index(root))),
}
