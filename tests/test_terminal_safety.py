"""Hostile text never reaches a terminal raw, and nothing unforeseen reaches a user as a traceback.

A stranger writes the subjects, names and bodies the command line prints. Mail with terminal
escape sequences, BEL, NUL, CR and bidi overrides goes in through ``inboxcrm import`` (the path
real mail takes) and every command that shows it is read back: not one control character may
come out raw, while the text itself stays visible. The errors the issue names (an unwritable data
directory, an unwritable --html or --raw path, an unknown database driver) and an unforeseen
exception each end as one ``error:`` line, never a traceback.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from inboxcrm.cli import main
from inboxcrm.cli.common import Group
from inboxcrm.core import views

CLEAR_SCREEN = "\x1b[2J\x1b[H"
SET_TITLE = "\x1b]0;pwned\x07"  # OSC 0 (window title), ended by BEL
SUBJECT = f"Quote {CLEAR_SCREEN}for 40 seats\x00 now\rDONE \u202etxt.exe \x9b31m"
NAME = f"Sam{SET_TITLE} Buyer\x08\x08"
BODY = f"Hi,{CLEAR_SCREEN} we need a quote\x07 for 40 seats.\r\nOverwritten\rthis line\x1b[1A\n"
BIDI = set(views.BIDI_CONTROLS)


def raw_controls(text: str) -> list[str]:
    """The characters a terminal would obey: controls other than line feed and tab, and bidi
    overrides. Judged by the Unicode category, not by the code under test."""
    return sorted({repr(c) for c in text if (unicodedata.category(c) == "Cc" and c not in "\n\t") or c in BIDI})


def encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def message(message_id: str, extra_from: str = "") -> bytes:
    """A prospect's mail with the hostile text in its subject, display name and body: encoded
    words for the headers (how such text arrives), raw 8-bit controls in the body."""
    head = (f"From: {encoded(NAME)} <buyer@northwind.example>\n{extra_from}To: Sales <sales@acme.example>\n"
            f"Subject: {encoded(SUBJECT)}\nDate: Mon, 09 Nov 2026 20:00:00 +0000\nMessage-ID: <{message_id}>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
    return (head + BODY).encode("utf-8")


def mbox(path: Path, *messages: bytes) -> Path:
    path.write_bytes(b"".join(b"From buyer@northwind.example Mon Nov  9 20:00:00 2026\n" + m + b"\n"
                              for m in messages))
    return path


@pytest.fixture
def hostile(team, tmp_path):
    """A deal from hostile mail and a quarantined copy (two From headers), both imported."""
    quarantined = message("evil-2@northwind.example", extra_from="From: other@northwind.example\n")
    result = team("import", str(mbox(tmp_path / "hostile.mbox", message("evil-1@northwind.example"), quarantined)),
                  "--mailbox", "sales")
    assert "1 quarantined" in result.stdout, result.stdout
    return team


LISTINGS = [
    ("deals", "list"), ("deals", "list", "--all"), ("deal", "show", "D-1"), ("contacts", "list"),
    ("companies", "list"), ("pipeline",), ("quarantine", "list"), ("quarantine", "show", "2"), ("held", "list"),
    ("rule", "explain", "evil-1@northwind.example"),
]


@pytest.mark.parametrize("args", LISTINGS, ids=" ".join)
def test_no_listing_prints_a_raw_control_character(hostile, args):
    for as_json in ((), ("--json",)):
        if as_json and args[0] == "pipeline":
            continue  # stage names and sums: nothing from mail
        result = hostile(*args, *as_json)
        assert raw_controls(result.output) == [], result.output


def test_the_hostile_text_is_shown_visibly_not_dropped(hostile):
    deal = hostile("deal", "show", "D-1").stdout
    assert "Quote" in deal and "for 40 seats" in deal and "txt.exe" in deal
    assert "Sam" in hostile("contacts", "list").stdout
    shown = hostile("quarantine", "show", "2").stdout  # the raw message: its controls as they arrived, seen
    assert "we need a quote␇ for 40 seats." in shown and "Overwritten␍this line␛[1A" in shown
    assert f"Hi,{views.printable(CLEAR_SCREEN)} we need" in shown


def test_json_escapes_the_controls_and_keeps_the_value(hostile, factory):
    from inboxcrm.app import team as admin

    out = hostile("quarantine", "show", "2", "--json").stdout
    assert "\\u001b[2J" in out and "\\u0007" in out
    with factory() as session:
        expected = admin.show_quarantined(session, 2).preview
    assert "\x1b[2J" in expected and json.loads(out)["preview"] == expected  # the value itself is untouched
    assert json.loads(views.to_json({"s": SUBJECT}))["s"] == SUBJECT
    assert raw_controls(views.to_json({"s": SUBJECT})) == []


def test_quarantine_show_raw_writes_the_exact_bytes(hostile, tmp_path, factory):
    from inboxcrm.app import team as admin

    with factory() as session:
        stored = admin.stored_raw(session, "evil-2@northwind.example")
    target = tmp_path / "out" / "evil.eml"
    target.parent.mkdir()
    result = hostile("quarantine", "show", "2", "--raw", str(target))
    assert target.read_bytes() == stored and b"\x1b[2J" in stored
    assert result.stderr == f"wrote {len(stored)} bytes of message 2 to {target}\n"
    assert raw_controls(result.stdout) == []
    refused = hostile("quarantine", "show", "2", "--raw", str(target), code=2)
    assert refused.stderr == f"error: {target} exists; give another FILE, or --force to replace it\n"
    target.write_bytes(b"old")
    hostile("quarantine", "show", "2", "--raw", str(target), "--force")
    assert target.read_bytes() == stored
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = hostile("quarantine", "show", "2", "--raw", str(blocked / "x.eml"), code=2)
    assert unwritable.stderr.startswith(f"error: cannot write {blocked / 'x.eml'}: Not a directory; ")


def test_printable_is_idempotent_and_leaves_ordinary_text_alone():
    ordinary = "Grüße aus Zürich\tΑθήνα\nשלום 東京 — 12 €"
    assert views.printable(ordinary) == ordinary
    hostile = SUBJECT + NAME + BODY + "\udcff\x7f"
    once = views.printable(hostile)
    assert raw_controls(once) == [] and views.printable(once) == once
    assert views.printable("a\r\nb\rc") == "a\nb␍c"  # a line end is layout; a lone CR overwrites


def test_log_lines_show_a_subject_s_controls_without_obeying_them():
    from inboxcrm import logs

    line = logs.logfmt({"event": "quarantined", "subject": SUBJECT, "name": NAME})
    assert raw_controls(line) == [] and "\n" not in line and "subject=\"Quote ␛[2J␛[Hfor 40 seats␀ now␍DONE" in line


# -- errors: one line, never a traceback ----------------------------------------------------

def run(*args: str, env: dict | None = None):
    result = CliRunner(env={"INBOXCRM_CONFIG": None, "INBOXCRM_DATABASE_URL": None, **(env or {})}).invoke(
        main, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("url, said", [
    ("mysql+nosuchdriver://u@localhost/crm", 'database "mysql"'),
    ("foo://", 'database "foo"'),
    ("postgresql+nosuchdriver://u@localhost/crm", '"nosuchdriver"'),
])
def test_an_unknown_database_driver_is_one_line_naming_the_valid_ones(config_file, url, said):
    by_option = run("--config", str(config_file), "--database-url", url, "rep", "list")
    config_file.write_text(config_file.read_text() + f'\n[database]\nurl = "{url}"\n')
    by_file = run("--config", str(config_file), "rep", "list")
    for result in (by_option, by_file):
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.startswith("error: database.url ") and said in result.stderr
        assert "sqlite:///PATH or postgresql+psycopg://" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_database_that_cannot_be_reached_is_one_line_saying_why(config_file):
    """The store's own failure (here: nothing listens on the port) is a refusal, not a crash."""
    result = run("--config", str(config_file), "--database-url", "postgresql+psycopg://crm@127.0.0.1:1/crm",
                 "rep", "list")
    assert result.exit_code == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: database: ") and "port 1" in result.stderr


def test_init_with_a_data_directory_it_cannot_create_says_which_and_how(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    result = run("--config", str(tmp_path / "config.toml"), "init", env={"STATE_DIRECTORY": str(blocker / "inboxcrm")})
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert result.stderr.startswith("error: ") and f"{blocker / 'inboxcrm'}" in result.stderr


def _as_nobody() -> list[str] | None:
    """A command prefix that drops root to nobody (permissions do not bind root), or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if setpriv else None


def test_systemd_step_5_init_in_a_state_directory_the_user_cannot_write():
    """The guide's ``sudo -u inboxcrm inboxcrm init`` before /var/lib/inboxcrm belongs to that user."""
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("running as root without setpriv: a permission cannot be denied")
    root = Path(tempfile.mkdtemp(prefix="inboxcrm-step5-"))  # pytest's own tmp_path is closed to nobody
    try:
        root.chmod(0o755)
        state = root / "var-lib"
        state.mkdir(mode=0o755)
        config = root / "config.toml"
        config.write_text('[team]\ndomains = ["acme.example"]\n')
        config.chmod(0o644)
        env = {"PATH": os.environ["PATH"], "STATE_DIRECTORY": str(state / "inboxcrm"), "HOME": str(root)}
        result = subprocess.run([*prefix, sys.executable, "-m", "inboxcrm", "--config", str(config), "init"],
                                capture_output=True, text=True, env=env, cwd=root, check=False)
    finally:
        shutil.rmtree(root)
    if "Permission denied" in result.stderr and "python" in result.stderr.lower() and "error:" not in result.stderr:
        pytest.skip(f"nobody cannot run this interpreter: {result.stderr.strip()}")
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and str(state / "inboxcrm") in result.stderr
    assert len(result.stderr.splitlines()) == 1


def fail_with(error: Exception, data_dir: Path):
    """Runs a command of the real top-level Group that fails with an error no refusal foresaw."""
    @click.group(cls=Group)
    def cli() -> None:
        pass

    @cli.command()
    def boom() -> None:
        raise error

    return CliRunner(env={"STATE_DIRECTORY": str(data_dir)}).invoke(cli, ["boom"])


def test_an_unforeseen_exception_is_one_line_and_its_traceback_is_saved(tmp_path):
    data = tmp_path / "data"
    result = fail_with(ValueError("bad\x1b[2J value"), data)
    assert result.exit_code == 1 and "Traceback" not in result.output
    log = data / "errors.log"
    assert result.stderr == f"error: unexpected ValueError: bad␛[2J value (details in {log})\n"
    saved = log.read_text()
    assert "Traceback (most recent call last)" in saved and "ValueError: bad␛[2J value" in saved
    assert "\x1b" not in saved
    assert log.stat().st_mode & 0o777 == 0o600


def test_with_no_writable_data_directory_the_traceback_goes_to_a_private_temporary_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = fail_with(RuntimeError("first line\nsecond line"), blocker / "data")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unexpected RuntimeError: first line (details in ")
    saved = Path(result.stderr.split("(details in ")[1].rstrip(")\n"))
    try:
        assert saved.name.startswith("inboxcrm-error-") and saved.stat().st_mode & 0o777 == 0o600
        assert "second line" in saved.read_text()
    finally:
        saved.unlink()


def test_a_reader_that_leaves_early_gets_no_error_and_no_warning():
    """``inboxcrm deals list | head``: the closed pipe is the reader's choice, not a failure to report."""
    script = ("import click\nfrom inboxcrm.cli.common import Group, echo\n@click.group(cls=Group)\ndef cli(): pass\n"
              "@cli.command()\ndef many():\n    for i in range(100000): echo(f'row {i} ' + 'x' * 60)\ncli()\n")
    reader = subprocess.Popen([sys.executable, "-c", script, "many"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout.readline() == b"row 0 " + b"x" * 60 + b"\n"
    reader.stdout.close()
    assert reader.wait(timeout=30) == 1 and reader.stderr.read() == b""
