"""What inboxcrm writes is private, and a secret others can read is refused with the fix.

Every test runs under umask 022, the usual one for a login shell: the files must be private
because inboxcrm makes them so, not because the umask happened to.
"""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from inboxcrm.cli import main
from inboxcrm.errors import Invalid, SecretError
from inboxcrm.private_files import exposure
from inboxcrm.secret import SecretRef
from inboxcrm.store.db import make_engine, upgrade

SECRET = "s3cret-imap-pw"
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """HOME and the XDG folders inside tmp_path, none of them created yet."""
    home = tmp_path / "home"
    for var, path in (("HOME", home), ("XDG_CONFIG_HOME", home / ".config"), ("XDG_DATA_HOME", home / ".local/share")):
        monkeypatch.setenv(var, str(path))
    for var in ("INBOXCRM_CONFIG", "INBOXCRM_DATABASE_URL", "STATE_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    return home


def inboxcrm(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result


# -- what inboxcrm creates --------------------------------------------------------------------

def test_init_creates_a_private_data_directory_and_database(home):
    inboxcrm("init")
    data = home / ".local/share/inboxcrm"
    assert (data / "inboxcrm.db").is_file()
    assert mode(data / "inboxcrm.db") == 0o600
    assert mode(data) == 0o700
    assert mode(home / ".local/share") == 0o700  # created for inboxcrm, as the XDG spec asks
    inboxcrm("init")  # run again: nothing refused, nothing changed
    assert mode(data / "inboxcrm.db") == 0o600


def test_demo_creates_a_private_folder_database_and_reply_token_key(home):
    inboxcrm("demo")
    demo = home / ".local/share/inboxcrm/demo"
    assert [mode(d) for d in (demo.parent, demo)] == [0o700, 0o700]
    assert mode(demo / "demo.db") == 0o600
    assert mode(demo / "reply-token.key") == 0o600
    inboxcrm("demo")  # the second run uses the key it made: its mode is accepted
    assert mode(demo / "reply-token.key") == 0o600


def test_sqlite_journal_files_are_as_private_as_the_database(tmp_path):
    db = tmp_path / "data" / "crm.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with engine.connect() as conn:  # an open connection in WAL mode keeps -wal and -shm
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        conn.commit()
        files = {p.name: mode(p) for p in db.parent.iterdir()}
    engine.dispose()
    assert files == {"crm.db": 0o600, "crm.db-wal": 0o600, "crm.db-shm": 0o600}


def test_an_admins_folder_and_database_keep_their_modes(tmp_path, caplog):
    """A folder or file the admin made is theirs: inboxcrm warns about a world-readable database
    (it holds the team's mail) but neither refuses nor chmods it."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    db = folder / "crm.db"
    upgrade(make_engine(f"sqlite:///{db}"))
    db.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="inboxcrm.store.db"):
        make_engine(f"sqlite:///{db}").dispose()
    assert mode(folder) == 0o750 and mode(db) == 0o644
    assert f"the database {db} is readable by every user on this machine (mode 0644)" in caplog.text
    assert f"chmod 600 {db}" in caplog.text
    caplog.clear()
    db.chmod(0o640)  # shared with a group on purpose: no warning
    with caplog.at_level(logging.WARNING, logger="inboxcrm.store.db"):
        make_engine(f"sqlite:///{db}").dispose()
    assert caplog.text == ""


# -- data directory errors ----------------------------------------------------------------------

def test_a_data_directory_that_cannot_be_created_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    url = f"sqlite:///{blocker}/inboxcrm/crm.db"
    with pytest.raises(Invalid) as refused:
        make_engine(url)
    assert str(refused.value).startswith(f'database.url "{url}": cannot create the data directory '
                                         f"{blocker}/inboxcrm (Not a directory); expected a folder the user ")
    assert "sudo install -d -m 0700 -o " in str(refused.value)


def run_without_root_powers(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``inboxcrm ARGS`` in a subprocess bound by file modes, as the service account of the
    systemd guide's step 5 is: root may write anywhere, so as root it runs without capabilities."""
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), "STATE_DIRECTORY": str(folder / "lib" / "inboxcrm"),
           "INBOXCRM_CONFIG": str(folder / "config.toml")}
    powerless = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"] if os.geteuid() == 0 else []
    return subprocess.run([*powerless, sys.executable, "-m", "inboxcrm", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=folder)


@pytest.mark.parametrize("made_by_root, problem", [
    (("lib",), "cannot create the data directory {folder} (Permission denied)"),  # no inboxcrm/ in /var/lib yet
    (("lib", "lib/inboxcrm"), "the data directory {folder} is not writable by the user"),  # made by root
])
def test_an_unwritable_data_directory_is_one_clear_line_not_a_traceback(tmp_path, made_by_root, problem):
    (tmp_path / "config.toml").write_text('[team]\ndomains = ["acme.example"]\n')
    for folder in made_by_root:
        (tmp_path / folder).mkdir(mode=0o555)
    done = run_without_root_powers(tmp_path, "init")
    folder = tmp_path / "lib" / "inboxcrm"
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f'error: database.url "sqlite:///{folder}/inboxcrm.db": '
                                  + problem.format(folder=folder))
    assert "expected a folder the user " in done.stderr and "sudo install -d -m 0700 -o " in done.stderr
    assert not (folder / "inboxcrm.db").exists()


# -- secret files ---------------------------------------------------------------------------------

def secret_file(tmp_path: Path, file_mode: int) -> Path:
    path = tmp_path / "imap-password"
    path.write_text(SECRET + "\n")
    path.chmod(file_mode)
    return path


@pytest.mark.parametrize("file_mode", [0o600, 0o400])
def test_a_private_password_file_is_read(tmp_path, file_mode):
    assert SecretRef(file=str(secret_file(tmp_path, file_mode))).resolve({}) == SECRET


@pytest.mark.parametrize("file_mode, problem", [(0o644, "every user on this machine can read it"),
                                                (0o640, "its group can read it"),
                                                (0o620, "its group can write it")])
def test_a_password_file_others_can_read_is_refused_with_the_fix(tmp_path, file_mode, problem):
    path = secret_file(tmp_path, file_mode)
    with pytest.raises(SecretError) as refused:
        SecretRef(file=str(path)).resolve({})
    message = str(refused.value)
    assert message.startswith(f"secret from file {path}: mode {file_mode:04o}, {problem}; refused")
    assert f"chmod 600 {path}" in message and SECRET not in message
    assert mode(path) == file_mode  # not changed behind the admin's back


def test_group_read_is_allowed_on_a_secret_another_user_owns():
    """``root:inboxcrm 0640``: how an admin hands a root-managed secret to the service account
    (and what systemd credentials with an ACL look like). Checked on a stat result, since making
    a file owned by someone else needs root."""
    def status(file_mode: int, uid: int) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | file_mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))

    other = os.geteuid() + 1
    assert exposure(status(0o640, other)) is None
    assert exposure(status(0o640, os.geteuid())) == "its group can read it"
    assert exposure(status(0o660, other)) == "its group can write it"
    assert exposure(status(0o644, other)) == "every user on this machine can read it"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_root_owned_group_readable_secret_is_read_by_its_group(tmp_path):
    path = secret_file(tmp_path, 0o640)
    os.chown(path, NOBODY, os.getegid())  # owned by another user, readable by our group
    assert SecretRef(file=str(path)).resolve({}) == SECRET
