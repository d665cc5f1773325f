"""Files only the inboxcrm user may read: the database, its folder, the reply-token key, secrets.

The database holds every prospect's mail and the key forges any rep's command by email, so what
inboxcrm creates is private whatever the umask (files 0600, folders 0700, as the XDG Base
Directory spec asks of a folder an application creates for its data). Files an admin made are
left as they are; a secret or key that others can read is refused, never silently chmodded,
because the admin must know it may have leaked.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from inboxcrm.errors import SecretError

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """``path`` and every missing folder above it, each 0700; folders that exist are not touched
    (an admin's ``/var/lib`` or a shared mount keeps its mode). Raises OSError for the caller to
    name the setting that chose the folder."""
    missing = []
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:  # another process made it first: theirs, as it is
            continue
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask


def new_private_file(path: Path | str) -> int | None:
    """A new file 0600 at ``path``, open for writing, or None when one exists (O_EXCL: never
    someone else's file, nor one a symlink points to)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return None
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
    except OSError:
        os.close(fd)
        raise
    return fd


def others_can_read(mode: int) -> bool:
    return bool(mode & stat.S_IROTH)


def exposure(status: os.stat_result) -> str | None:
    """Who besides the inboxcrm user can get at a secret file, or None when nobody can.

    Any access for other users is refused. Group read is refused on a file the inboxcrm user owns
    (the owner reads it already; the group only widens it) but allowed on a file another user
    (root) owns: ``root:inboxcrm 0640`` is how an admin hands a root-managed secret to a service
    account, and the form systemd credentials with ACLs take. Group write is refused always:
    whoever can write the key can choose every token. Modelled on PostgreSQL's rule for its TLS key.
    """
    mode = stat.S_IMODE(status.st_mode)
    if mode & stat.S_IRWXO:
        return "every user on this machine can " + ("read" if mode & stat.S_IROTH else "get at") + " it"
    if mode & stat.S_IWGRP:
        return "its group can write it"
    if mode & stat.S_IRGRP and status.st_uid == os.geteuid():
        return "its group can read it"
    return None


def refuse_exposed(status: os.stat_result, path: Path | str, what: str) -> None:
    """SecretError naming the file, its mode and the fix, when others can get at it."""
    problem = exposure(status)
    if problem is None:
        return
    owner = "" if status.st_uid == os.geteuid() else " (as the file's owner or root)"
    raise SecretError(f"{what} {path}: mode {stat.S_IMODE(status.st_mode):04o}, {problem}; refused because it may "
                      f"have leaked. Run{owner}: chmod 600 {path} (or 640 with root as owner and the "
                      f"inboxcrm user's group), and replace the secret if others may have read it")
