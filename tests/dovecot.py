"""A private Dovecot for the IMAP tests: real TLS, real IDLE, real UIDVALIDITY, on loopback.

Each test gets its own server (config, passwd-file, maildirs, ports) in a temp folder, so a test
that stops, restarts or resets its server cannot disturb another; starting one costs ~40 ms.
The folder lives under /tmp with mode 0755 because Dovecot's unprivileged users must traverse
it (pytest's own temp folders are 0700). Facts behind the choices: ../shared/docs/dovecot-facts.md.

Use the ``dovecot`` fixture: ``from .dovecot import dovecot_server  # noqa: F401`` in a test module
registers it (or tests/conftest.py imports it once for every module)::

    def test_x(dovecot):
        alice = dovecot.add_user("alice", "secret")
        dovecot.append(alice, "INBOX", [mail("pipeline-new-lead-company.eml")])
        settings = dovecot.settings(alice)                 # ImapSettings, CA-verified TLS
        assert dovecot.flags(alice, "INBOX") == {1: ()}

For OAuth2 mailboxes, ``started(tls_files, introspection_url=OAuthServer().introspection_url)``
gives a server that also takes XOAUTH2/OAUTHBEARER logins: Dovecot's own ``oauth2`` passdb asks that
RFC 7662 endpoint about each bearer token (active, and its "email" the login), as Gmail and Exchange
Online check theirs; a token the provider revoked is refused at once (no auth cache).
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DOVECOT = os.environ.get("INBOXCRM_TEST_DOVECOT", "/usr/sbin/dovecot")
START_TIMEOUT = 10.0
# A fresh server's ports are free when chosen, but an outgoing connection may take one before
# Dovecot binds it (both come from the ephemeral range): a new server gets new ports.
START_ATTEMPTS = 3
APPEND_BATCH = 100  # MULTIAPPEND: ~1,950 msg/s against ~260 msg/s one APPEND per message
# Folder -> SPECIAL-USE attribute (RFC 6154), as a real server declares them.
FOLDERS = {"Sent": "\\Sent", "Archive": "\\All", "Junk": "\\Junk", "Drafts": "\\Drafts"}


@dataclass(frozen=True)
class User:
    name: str  # the IMAP login
    password: str
    home: Path

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accounts() -> tuple[str, str, int, int]:
    """(login user, internal user, mail uid, mail gid): unprivileged system users when root."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_name, me.pw_uid, me.pw_gid
    try:
        login, internal = pwd.getpwnam("dovenull"), pwd.getpwnam("dovecot")
    except KeyError:
        login = internal = pwd.getpwnam("nobody")
    return login.pw_name, internal.pw_name, internal.pw_uid, internal.pw_gid


CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_verbose = yes
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
first_valid_gid = 1
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
# Every user's IDLE costs an inotify instance of the one mail uid, and past the kernel's
# fs.inotify.max_user_instances (128 by default) Dovecot stops watching and looks again only every
# mailbox_idle_check_interval (30 s by default): with that, 200 watched mailboxes would measure
# Dovecot's fallback, not inboxcrm (bench/idle_bench.py). One second is inotify's pace.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {root}/passwd/%u
}}
{oauth2_passdb}userdb {{
  driver = passwd-file
  args = {root}/passwd/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
{folders}
}}
# Hundreds of connections (bench/idle_bench.py: 200 mailboxes, an IDLE and a sync each): login
# processes in high-performance mode, each serving many clients and proxying their TLS, instead
# of one process per connection under default_process_limit (100). imap keeps one process per
# session (its own process_limit is 1024); auth must take a connection from every login process.
service imap-login {{
  service_count = 0
  process_min_avail = 2
  inet_listener imap {{
    address = 127.0.0.1
    port = {starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service auth {{
  client_limit = 2048
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


# Bearer tokens (XOAUTH2, OAUTHBEARER) checked by Dovecot's own oauth2 passdb against an RFC 7662
# introspection endpoint, as Google's and Microsoft's servers check theirs; passwords stay with the
# passwd-file passdb, so one server serves both kinds of user.
OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/dovecot-oauth2.conf.ext
}}
"""
# http on loopback: no tls_ca_cert_file. introspection_mode = post sends "token=..." as a form, as
# RFC 7662 says; the login is the token's "email" claim, and a token must say "active": true.
OAUTH2_CONF = """\
introspection_mode = post
introspection_url = {introspection_url}
username_attribute = email
active_attribute = active
active_value = true
timeout_msecs = 10000
"""


class Dovecot:
    """One private server. ``port`` is implicit TLS; ``starttls_port`` is plain and offers STARTTLS.

    ``introspection_url``: also accept XOAUTH2/OAUTHBEARER logins whose bearer token that RFC 7662
    endpoint calls active (tests/oauth_server.py's ``introspection_url``)."""

    host = "127.0.0.1"

    def __init__(self, tls_files, introspection_url: str | None = None):
        self.tls = tls_files
        self.introspection_url = introspection_url
        self.root = Path(tempfile.mkdtemp(prefix="inboxcrm-dovecot-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port, self.starttls_port = _free_port(), _free_port()
        self.users: dict[str, User] = {}
        self.process: subprocess.Popen | None = None
        login_user, internal_user, self.uid, self.gid = _accounts()
        (self.root / "home").mkdir(mode=0o755)
        (self.root / "secrets").mkdir(mode=0o700)
        os.chown(self.root / "home", self.uid, self.gid)
        self.passwd.mkdir(mode=0o755)
        folders = "\n".join(f"  mailbox {name} {{\n    auto = create\n    special_use = {use}\n  }}"
                            for name, use in FOLDERS.items())
        mechanisms, oauth2_passdb = "plain login", ""
        if introspection_url is not None:
            mechanisms += " xoauth2 oauthbearer"
            oauth2_passdb = OAUTH2_PASSDB.format(root=self.root)
            (self.root / "dovecot-oauth2.conf.ext").write_text(OAUTH2_CONF.format(introspection_url=introspection_url))
        self.config.write_text(CONFIG.format(
            root=self.root, cert=tls_files.cert, key=tls_files.key, login_user=login_user,
            internal_user=internal_user, uid=self.uid, gid=self.gid, folders=folders,
            port=self.port, starttls_port=self.starttls_port, mechanisms=mechanisms, oauth2_passdb=oauth2_passdb))
        self.probe = self.add_user("probe", "probe")

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- the process ---------------------------------------------------------------------

    def start(self) -> None:
        """Starts the master in the foreground of its own session; returns once a LOGIN works."""
        if self.running:
            return
        # stdin/stdout/stderr redirected: the master and its log process keep them open.
        with open(self.root / "dovecot.stderr", "ab") as errors:  # what it says before its log is up
            self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with self.client(self.probe):
                    return
            except Exception as exc:  # noqa: BLE001 - anything but a LOGIN means "not up yet"
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    said = (self.root / "dovecot.stderr").read_text(errors="replace").strip()
                    raise RuntimeError(f"dovecot did not start: {exc}; stderr: {said[-1000:]}; "
                                       f"log: {self.log()[-2000:]}") from None
                time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the master, as an admin stopping the service would (~1 s); then the open
        IMAP sessions go too (a stopped master lets them finish), so clients see the server gone."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the master and every child: the server vanishes at once."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- users and mail ------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> User:
        """A new account, live: one passwd-file per user (Dovecot re-reads a changed passwd-file at
        most once a second, so a user added to a shared file right after start would be unknown)."""
        if name in self.users:
            raise ValueError(f"user {name} exists already")
        home = self.root / "home" / name
        user = User(name, password, home)
        (self.passwd / name).write_text(f"{name}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::\n")
        secret = self.root / "secrets" / name
        secret.write_text(password + "\n")
        secret.chmod(0o600)  # inboxcrm refuses a password_file that others can read
        self.users[name] = user
        return user

    def secret_file(self, user: User) -> Path:
        """A file holding the user's password: what ``password_file`` would name."""
        return self.root / "secrets" / user.name

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))

    def client(self, user: User, readonly_folder: str | None = None):
        """A logged-in IMAPClient over verified TLS, for preparing and inspecting a test mailbox."""
        from imapclient import IMAPClient

        client = IMAPClient(self.host, self.port, ssl=True, ssl_context=self.ssl_context(), timeout=10)
        try:
            client.login(user.name, user.password)
            if readonly_folder is not None:
                client.select_folder(readonly_folder, readonly=True)
        except BaseException:
            client.shutdown()
            raise
        return client

    def append(self, user: User, folder: str, messages: list[bytes], flags=(), date=None) -> None:
        """MULTIAPPEND (RFC 3502) in batches; ``flags`` are set on every message appended, and
        ``date`` (a datetime) is their internal date (the one SEARCH SINCE looks at)."""
        extra = {"date": date} if date is not None else {}
        with self.client(user) as client:
            for start in range(0, len(messages), APPEND_BATCH):
                batch = messages[start:start + APPEND_BATCH]
                client.multiappend(folder, [{"msg": m, "flags": tuple(flags), **extra} for m in batch])

    def flags(self, user: User, folder: str) -> dict[int, tuple[bytes, ...]]:
        """UID -> sorted stored flags, read with EXAMINE so reading them changes nothing.
        \\Recent is left out: it belongs to a session, not to the message."""
        with self.client(user, readonly_folder=folder) as client:
            uids = client.search("ALL")
            found = client.fetch(uids, ["FLAGS"]) if uids else {}
            return {uid: tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent")) for uid, data in found.items()}

    def uids(self, user: User, folder: str) -> list[int]:
        with self.client(user, readonly_folder=folder) as client:
            return sorted(client.search("ALL"))

    def new_uidvalidity(self, user: User, folder: str) -> None:
        """Forces a new UIDVALIDITY: stop, forget the folder's UID list and indexes, start."""
        self.stop()
        path = user.maildir if folder.upper() == "INBOX" else user.maildir / f".{folder.replace('/', '.')}"
        for name in ["dovecot-uidlist", *(p.name for p in path.glob("dovecot.index*"))]:
            (path / name).unlink(missing_ok=True)
        time.sleep(1.0)  # UIDVALIDITY is a timestamp in seconds: make sure the new one differs
        self.start()

    # -- what inboxcrm is told -----------------------------------------------------------

    def settings(self, user: User, **overrides):
        """ImapSettings for ``user`` on this server: implicit TLS verified against the test CA."""
        from inboxcrm.mail.imap import build_settings
        from inboxcrm.secret import SecretRef

        options = {"host": self.host, "port": self.port, "security": "tls", "ca_file": str(self.tls.ca),
                       "user": user.name, "secret": SecretRef(file=str(self.secret_file(user)))}
        options.update(overrides)
        return build_settings(**options)

    def connection(self, user: User, **overrides) -> dict:
        """What ``Mailbox.connection`` holds for ``user`` on this server."""
        return self.settings(user, **overrides).to_json()


def started(tls_files, introspection_url: str | None = None) -> Dovecot:
    """A fresh, running private Dovecot (accepting bearer tokens when ``introspection_url`` is
    given); skips the test (fails it in CI) where Dovecot cannot run. The caller closes it."""
    from .conftest import server_missing

    if not os.path.exists(DOVECOT):
        server_missing("Dovecot", f"{DOVECOT} is not installed (apt-get install dovecot-imapd)")
    failures = []
    for _ in range(START_ATTEMPTS):
        server = Dovecot(tls_files, introspection_url)
        try:
            server.start()
            return server
        except (RuntimeError, OSError) as exc:
            server.close()
            failures.append(str(exc).splitlines()[0])
    server_missing("Dovecot", " / ".join(failures))


@pytest.fixture(name="dovecot")
def dovecot_server(tls_files):
    """A fresh, running private Dovecot; skips (fails in CI) where Dovecot cannot run."""
    server = started(tls_files)
    yield server
    server.close()
