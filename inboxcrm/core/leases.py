"""Who works what when several daemons share one database: the plan of one lease tick.

The database is the coordinator (``store.lease_queries`` takes and renews leases with conditional
statements, so two daemons can never both win one); this module only decides what a daemon should
try. Every daemon computes the same quotas from the same list of live daemons, so they agree on
how many each should hold without talking to each other. Which ones each reaches for comes from
rendezvous hashing (daemon name + resource): two daemons starting together aim at different
mailboxes instead of racing for the same ones, and a restarted daemon gets its old ones back.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

MAILBOX = "mailbox:"  # + mailboxes.id: one IMAP mailbox, worked by one daemon at a time
NOTIFY = "job:notify"  # digests, nudges and reviews: caps like nudges_per_hour need one writer
RETENTION = "job:retention"  # the daily sweep of old raw bytes
JOBS = (NOTIFY, RETENTION)
FALLBACK_NAME = "inboxcrm"  # a host name with no usable character at all


def mailbox_resource(mailbox_id: int) -> str:
    return f"{MAILBOX}{mailbox_id}"


def name_from_host(host: str) -> str:
    """The default daemon name: the host name with every run of characters a name may not hold
    (see ``config.DAEMON_ID``) made one '-', starting with a letter or digit, at most 100."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", host).lstrip("._-")[:100]
    return name or FALLBACK_NAME


@dataclass(frozen=True)
class Held:
    """A lease row as the plan needs it."""

    holder: str
    expires_at: datetime


@dataclass(frozen=True)
class Take:
    """``count`` more of one pool (the mailboxes, the jobs): the first ``count`` candidates that
    can still be had. All of them are listed, best first, so a lease another daemon wins in the
    same instant is made up for by the next one in the same tick."""

    candidates: tuple[str, ...]  # free or expired leases, best first
    count: int


@dataclass(frozen=True)
class Plan:
    take: tuple[Take, ...]  # one per pool short of its share
    release: tuple[str, ...]  # held beyond the share (or for a resource gone); never a busy one
    keep: tuple[str, ...]


@dataclass(frozen=True)
class Holder:
    """Who works under a lease: a daemon's name and this very process's registration (its
    ``daemons`` row: host, pid and when it registered). The name alone is not enough: after a
    stall past its lease, a second process may have taken the name over, and both would pass a
    check by name; nor are host and pid (two containers of one image are both pid 1 on a host
    name they may share), but a registration's start is its own."""

    name: str
    host: str
    pid: int
    started_at: datetime


@dataclass(frozen=True)
class Seen:
    """A ``daemons`` row as registration needs it."""

    name: str
    host: str
    pid: int
    seen_at: datetime
    expires_at: datetime


def score(daemon: str, resource: str) -> int:
    """The rendezvous weight: stable across processes and machines (Python's ``hash`` is not)."""
    return int.from_bytes(hashlib.blake2b(f"{daemon}\0{resource}".encode(), digest_size=8).digest(), "big")


def quotas(live: Iterable[str], count: int) -> dict[str, int]:
    """How many of ``count`` resources each live daemon should hold: an even split, the remainder
    one each to the first names, so no daemon holds more than ceil(count / live)."""
    names = sorted(set(live))
    if not names:
        return {}
    base, extra = divmod(count, len(names))
    return {name: base + (i < extra) for i, name in enumerate(names)}


def plan(resources: Iterable[str], live: Iterable[str], leases: Mapping[str, Held], me: str, now: datetime,
         busy: Iterable[str] = ()) -> Plan:
    """What ``me`` should take, release and keep. Mailboxes and jobs are shared out separately (a
    daemon holding both jobs still gets its share of mailboxes). ``busy``: resources with work
    running now, which are kept until it ends, whatever the share says."""
    resources, busy = list(dict.fromkeys(resources)), set(busy)
    live = set(live) | {me}
    take: list[Take] = []
    release = [r for r, lease in sorted(leases.items()) if lease.holder == me and r not in resources
               and r not in busy]
    for pool in _pools(resources):
        quota = quotas(live, len(pool))[me]
        preference = _preference(me, live)
        mine = sorted((r for r in pool if r in leases and leases[r].holder == me), key=preference)
        if len(mine) > quota:
            spare = [r for r in reversed(mine) if r not in busy]
            release += spare[:len(mine) - quota]
        else:
            free = sorted((r for r in pool if r not in leases
                           or leases[r].expires_at <= now and leases[r].holder != me), key=preference)
            if free and quota > len(mine):
                take.append(Take(tuple(free), quota - len(mine)))
    keep = [r for r, lease in sorted(leases.items()) if lease.holder == me and r not in release]
    return Plan(tuple(take), tuple(release), tuple(keep))


def _pools(resources: list[str]) -> list[list[str]]:
    kinds: dict[str, list[str]] = {}
    for resource in resources:
        kinds.setdefault(resource.partition(":")[0], []).append(resource)
    return list(kinds.values())


def _preference(me: str, live: set[str]) -> Callable[[str], tuple[int, int]]:
    """Best first: the resources where ``me`` ranks highest among the live daemons' weights
    (first the ones no other daemon wants more), then by its own weight."""
    def key(resource: str) -> tuple[int, int]:
        mine = score(me, resource)
        return sum(score(other, resource) > mine for other in live), -mine
    return key


def refusal(me: str, host: str, rows: Iterable[Seen], now: datetime, one_daemon_only: bool,
            running: Callable[[int], bool]) -> str | None:
    """Why a daemon named ``me`` on ``host`` must not start, or None. A live row of the same name
    is another process with the same name (two holders of every lease it holds), unless it is on
    this host and its process is gone: a restart after kill -9 takes its own name over at once.
    ``running(pid)`` answers for this host's processes."""
    for row in rows:
        if row.expires_at <= now:
            continue
        ago = max(0, int((now - row.seen_at).total_seconds()))
        if row.name == me:
            if row.host == host and not running(row.pid):
                continue
            where = "here" if row.host == host else f"on host {row.host}"
            return (f'a daemon named "{me}" is already running {where} (pid {row.pid}, seen {ago} s ago); stop it '
                    f"first, or give this one another name with --id NAME or [daemon] id (letters, digits, '.', "
                    f"'_' or '-', starting with a letter or digit)")
        if one_daemon_only:
            return (f'SQLite serves one daemon: "{row.name}" (host {row.host}, pid {row.pid}) was seen {ago} s ago. '
                    f"Stop it first, or move to PostgreSQL to run several (docs/operations.md#several-daemons).")
    return None
