"""kill -9 in the middle of an import, then run it again: nothing lost, nothing twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select

from inboxcrm.app import team as admin
from inboxcrm.store.db import make_engine, session_factory, transaction, upgrade
from inboxcrm.store.models import ContactAddress, Deal, Message

from .test_import import run, write_mbox

MESSAGES = 1500


def generated() -> list[bytes]:
    """New leads from many companies, every third message a reply to an earlier one."""
    out = []
    for i in range(MESSAGES):
        refs = f"In-Reply-To: <e{i - 2}@gen.example>\n" if i % 3 == 2 else ""
        out.append((f"From: Person {i} <p{i % 500}@company{i % 97}.example>\nTo: sales@acme.example\n"
                    f"Subject: Enquiry {i}\nMessage-ID: <e{i}@gen.example>\n{refs}"
                    f"Date: Mon, 02 Nov 2026 09:{i % 60:02d}:00 +0000\n\nWe would like a quote.\n").encode())
    return out


def reference_crm(path: Path):
    """The `team` fixture's setup (alice, bob, a sales capture mailbox) in a SQLite file of its own."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    factory = session_factory(engine)
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with transaction(factory) as s:
        admin.add_rep(s, now, "test", "alice", ["alice@acme.example"])
        admin.add_rep(s, now, "test", "bob", ["bob@acme.example"], "Europe/Berlin")
        admin.add_mailbox(s, now, "test", "sales", "alice", "capture")
    return factory


def by_content(factory) -> dict[str, tuple]:
    """Message-ID -> (status, reason, the deal's contact address): comparable across databases."""
    with factory() as s:
        rows = s.execute(select(Message.message_id, Message.status, Message.reason, ContactAddress.address)
                         .outerjoin(Deal, Deal.id == Message.deal_id)
                         .outerjoin(ContactAddress, ContactAddress.contact_id == Deal.contact_id)).all()
    return {mid: (status, reason, address) for mid, status, reason, address in rows}


def test_import_killed_mid_run_resumes_exactly_once(team, factory, db_url, config_file, tmp_path):
    path = write_mbox(tmp_path / "many.mbox", generated())
    command = [sys.executable, "-m", "inboxcrm", "--config", str(config_file), "--database-url", db_url,
               "import", str(path), "--mailbox", "sales"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=Path(__file__).parent.parent)
    stored = 0
    deadline = time.monotonic() + 120
    while stored < 200 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        with factory() as s:
            stored = s.scalar(select(func.count()).select_from(Message))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the import finished before it could be killed"
    assert 0 < stored < MESSAGES

    run(factory, path)  # the same command again, in process

    reference = reference_crm(tmp_path / "reference.db")  # the same import, never interrupted
    run(reference, path)

    resumed = by_content(factory)
    assert len(resumed) == MESSAGES and "pending" not in {status for status, _, _ in resumed.values()}
    assert resumed == by_content(reference)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Deal)) == len({a for _, _, a in resumed.values() if a})
