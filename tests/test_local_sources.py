"""Local sources: every message comes back byte for byte, at a location a re-import finds again."""
from __future__ import annotations

import os
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest

from inboxcrm.errors import Invalid, NotFound
from inboxcrm.mail.local import ACCEPTED, count_messages, detect_format, iter_messages


def message(mid: str, date: str | None = "Mon, 01 Jan 2024 10:00:00 +0000",
            body: str = "Hello.\n", extra: str = "") -> bytes:
    date_line = f"Date: {date}\n" if date is not None else ""
    return (f"From: Ann <ann@example.com>\nTo: sales@ours.test\nSubject: {mid}\n{date_line}"
            f"Message-ID: <{mid}@example.com>\n{extra}\n{body}").encode()


def mbox(path: Path, *messages: bytes) -> Path:
    """mboxrd as most writers make it: a blank line before every separator after the first."""
    separator = b"From ann@example.com Mon Jan  1 10:00:00 2024\n"
    path.write_bytes(b"\n".join(separator + m for m in messages))
    return path


def maildir(root: Path, files: dict[str, bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def collect(path: Path, **kwargs) -> list[tuple[bytes, str, str]]:
    return [(m.data, m.location, m.folder) for m in iter_messages(path, **kwargs)]


def test_single_eml_file(tmp_path):
    path = tmp_path / "one.EML"
    path.write_bytes(message("a"))
    assert detect_format(path) == "eml"
    assert collect(path) == [(message("a"), f"file:{path.resolve()}", "")]
    assert count_messages(path) == 1


def test_eml_folder_is_recursive_sorted_and_stable(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.eml").write_bytes(message("b"))
    (tmp_path / "sub" / "a.Eml").write_bytes(message("a"))
    (tmp_path / "notes.txt").write_text("not mail")
    (tmp_path / "._b.eml").write_bytes(b"\x00\x05resource fork")
    assert detect_format(tmp_path) == "eml-folder"
    first = collect(tmp_path)
    assert first == [(message("b"), f"file:{(tmp_path / 'b.eml').resolve()}", ""),
                     (message("a"), f"file:{(tmp_path / 'sub' / 'a.Eml').resolve()}", "")]
    assert collect(tmp_path) == first
    assert count_messages(tmp_path) == 2


def test_mbox_yields_exact_bytes_unquoted_at_stable_locations(tmp_path):
    quoted = message("q", body="Hi\n>From the top\n>>From deeper\n")
    path = mbox(tmp_path / "mail.mbox", message("a"), quoted, message("c"))
    assert detect_format(path) == "mbox"
    got = collect(path)
    loc = f"mbox:{path.resolve()}"
    assert got == [(message("a"), f"{loc}#0", ""),
                   (message("q", body="Hi\nFrom the top\n>From deeper\n"), f"{loc}#1", ""),
                   (message("c"), f"{loc}#2", "")]
    assert collect(path) == got
    assert count_messages(path) == 3


def test_mbox_body_from_after_text_does_not_split(tmp_path):
    body = message("b", body="See you there.\nFrom now on we ship on Mondays.\n")
    path = mbox(tmp_path / "mail", body, message("c"))
    assert [m.data for m in iter_messages(path)] == [body, message("c")]
    assert count_messages(path) == 2


def test_mbox_without_blank_lines_still_splits_at_full_separators(tmp_path):
    path = tmp_path / "mblaze.mbox"
    crlf = [message(mid).replace(b"\n", b"\r\n") for mid in "ab"]
    separator = b"From 1592781234@xxx Tue Mar 11 01:31:25 +0000 2025\r\n"
    path.write_bytes(b"".join(separator + m for m in crlf))
    assert [m.data for m in iter_messages(path)] == crlf
    assert count_messages(path) == 2


def test_takeout_sent_label_sets_folder(tmp_path):
    path = mbox(tmp_path / "takeout.mbox",
                message("s", extra="X-Gmail-Labels: Archived,Sent,Opened\n"),
                message("i", extra='X-Gmail-Labels: Inbox,"Sent stuff"\n'),
                message("j", extra="X-Gmail-Labels: Spam,Unread\n"),
                message("t", extra="X-Gmail-Labels: Trash,Sent\n"))
    assert [m.folder for m in iter_messages(path)] == ["Sent", "", "Spam", "Trash"]


def test_empty_mbox_file_has_no_messages(tmp_path):
    path = tmp_path / "Empty.mbox"
    path.write_bytes(b"")
    assert detect_format(path) == "mbox"
    assert list(iter_messages(path)) == [] and count_messages(path) == 0


def test_maildir_reads_subfolders_and_never_changes_files(tmp_path):
    root = maildir(tmp_path / "Maildir", {
        "new/1700000001.M1P1.host": message("new"),
        "cur/1700000000.M1P1.host:2,S": message("seen"),
        ".Sent/cur/1700000002.M1P1.host:2,S": message("sent"),
        "cur/.hidden": b"not mail",
    })
    maildir(root / ".Sent", {})
    (root / ".notamaildir").mkdir()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    listing = {d: sorted(os.listdir(d)) for d in (root / "new", root / "cur")}
    assert detect_format(root) == "maildir"
    got = collect(root)
    top, sent = root.resolve(), (root / ".Sent").resolve()
    assert got == [(message("seen"), f"maildir:{top}/1700000000.M1P1.host", ""),
                   (message("new"), f"maildir:{top}/1700000001.M1P1.host", ""),
                   (message("sent"), f"maildir:{sent}/1700000002.M1P1.host", "Sent")]
    assert count_messages(root) == 3
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} == before
    assert {d: sorted(os.listdir(d)) for d in listing} == listing


def test_maildir_flag_change_and_move_to_cur_keep_the_location(tmp_path):
    root = maildir(tmp_path / "md", {"new/1700000001.M1P1.host": message("a")})
    first = collect(root)
    (root / "new" / "1700000001.M1P1.host").rename(root / "cur" / "1700000001.M1P1.host:2,RS")
    assert collect(root) == first


def test_since_skips_older_and_keeps_undated(tmp_path):
    path = mbox(tmp_path / "mail.mbox",
                message("old", date="Sun, 31 Dec 2023 23:00:00 +0000"),
                message("new", date="Tue, 02 Jan 2024 09:00:00 -0500"),
                message("naive", date="Wed, 03 Jan 2024 09:00:00 -0000"),
                message("undated", date=None),
                message("garbled", date="sometime last week"))
    since = datetime(2024, 1, 1, tzinfo=timezone.utc)
    kept = [m.data for m in iter_messages(path, since=since)]
    assert kept == [message("new", date="Tue, 02 Jan 2024 09:00:00 -0500"),
                    message("naive", date="Wed, 03 Jan 2024 09:00:00 -0000"),
                    message("undated", date=None), message("garbled", date="sometime last week")]


def test_missing_path_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="no such file or folder: .*nowhere"):
        iter_messages(tmp_path / "nowhere")


@pytest.mark.parametrize("found", ["a folder", "a file", "something"])
def test_unknown_sources_name_the_path_what_was_found_and_the_accepted_forms(tmp_path, found):
    path = tmp_path / "stuff"
    if found == "a folder":
        path.mkdir()
        (path / "readme.txt").write_text("hi")
    elif found == "a file":
        path.write_text("Subject: not an mbox\n")
    else:
        os.mkfifo(path)
    with pytest.raises(Invalid) as err:
        detect_format(path)
    assert str(path) in str(err.value) and f"found {found}" in str(err.value)
    assert ACCEPTED in str(err.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_invalid_with_reason(tmp_path):
    path = tmp_path / "locked.mbox"
    mbox(path, message("a"))
    path.chmod(0)
    with pytest.raises(Invalid, match="cannot read .*locked.mbox: Permission denied"):
        detect_format(path)


def test_large_mbox_is_streamed(tmp_path):
    one = message("x", body="".join(f"{i:04d} " + "z" * 1000 + "\n" for i in range(100)))
    count = 20 * 1024 * 1024 // len(one) + 1
    path = tmp_path / "big.mbox"
    with path.open("wb") as f:
        for _ in range(count):
            f.write(b"From ann@example.com Mon Jan  1 10:00:00 2024\n" + one + b"\n")
    assert path.stat().st_size > 20 * 1024 * 1024
    tracemalloc.start()
    try:
        seen = sum(1 for m in iter_messages(path) if m.data == one)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count == count_messages(path)
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while reading a {path.stat().st_size} byte mbox"


# -- files that cannot be read, and messages over the size limit ------------------------------

def test_an_unreadable_or_vanished_maildir_file_is_skipped_and_reported_and_the_rest_reads(tmp_path):
    root = maildir(tmp_path / "md", {"cur/1700000001.M1P1.host:2,S": message("first"),
                                     "cur/1700000003.M1P1.host:2,S": message("last")})
    (root / "cur" / "1700000002.M1P1.host:2,S").mkdir()  # EISDIR: unreadable whoever runs the test
    (root / "new" / "1700000004.M1P1.host").symlink_to(tmp_path / "deleted")  # listed, then gone
    locked = root / "new" / "1700000005.M1P1.host"
    locked.write_bytes(message("locked"))
    locked.chmod(0)
    root_reads_everything = os.geteuid() == 0
    skipped: list[tuple[str, str]] = []
    got = [m.data for m in iter_messages(root, on_skip=lambda path, why: skipped.append((path, why)))]
    assert got == [message("first"), message("last")] + ([message("locked")] if root_reads_everything else [])
    reasons = dict(skipped)
    assert reasons.pop(str(root.resolve() / "cur" / "1700000002.M1P1.host:2,S")) == "Is a directory"
    assert reasons.pop(str(root.resolve() / "new" / "1700000004.M1P1.host")).startswith("vanished")
    if not root_reads_everything:
        assert reasons.pop(str(locked.resolve())) == "Permission denied"
    assert reasons == {}


def test_an_unreadable_file_in_an_eml_folder_is_skipped_and_reported(tmp_path):
    (tmp_path / "a.eml").write_bytes(message("a"))
    (tmp_path / "b.eml").symlink_to(tmp_path / "b.eml")  # ELOOP: unreadable whoever runs the test
    skipped: list[tuple[str, str]] = []
    assert [m.data for m in iter_messages(tmp_path, on_skip=lambda *s: skipped.append(s))] == [message("a")]
    assert skipped == [(str(tmp_path / "b.eml"), "Too many levels of symbolic links")]


LIMIT = 65536


def big(mid: str) -> bytes:
    return message(mid, body="".join(f"{i:05d} " + "z" * 100 + "\n" for i in range(1000)))


@pytest.mark.parametrize("fmt", ["maildir", "mbox", "eml-folder"])
def test_a_message_over_the_limit_keeps_only_its_headers_and_its_real_size(tmp_path, fmt):
    large = big("large")
    assert len(large) > 100_000
    if fmt == "maildir":
        path = maildir(tmp_path / "md", {"cur/1.M1P1.host:2,S": message("a"), "cur/2.M1P1.host:2,S": large,
                                         "cur/3.M1P1.host:2,S": message("c")})
    elif fmt == "mbox":
        path = mbox(tmp_path / "mail.mbox", message("a"), large, message("c"))
    else:
        for name, data in (("1.eml", message("a")), ("2.eml", large), ("3.eml", message("c"))):
            (tmp_path / name).write_bytes(data)
        path = tmp_path
    got = list(iter_messages(path, max_message_bytes=LIMIT))
    assert [m.data for m in (got[0], got[2])] == [message("a"), message("c")]
    assert not got[0].truncated and not got[2].truncated
    headers = large[:large.index(b"\n\n") + 2]
    assert got[1].truncated and got[1].full_size == len(large)
    assert got[1].data.startswith(headers) and len(got[1].data) < 1024 and b"not stored whole" in got[1].data


def test_a_large_mbox_message_over_the_limit_is_never_held_whole(tmp_path):
    path = mbox(tmp_path / "huge.mbox", message("huge", body=("z" * 1000 + "\n") * 20_000), message("after"))
    tracemalloc.start()
    try:
        got = list(iter_messages(path, max_message_bytes=LIMIT))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [m.truncated for m in got] == [True, False] and got[0].full_size > 20_000_000
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a 20 MB message over a 64 kB limit"
