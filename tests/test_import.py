"""Importing local mail, through ``importer.import_path`` and ``inboxcrm import``, on both backends.

The team (alice, bob at acme.example; a capture mailbox sales) is set up with the CLI, as a user
would. Sources are built in tmp_path from the tests/mail fixtures with Python's own mailbox module.
"""
from __future__ import annotations

import itertools
import mailbox
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import pytest
from sqlalchemy import func, select, text

from inboxcrm.app import importer
from inboxcrm.app.importer import import_path
from inboxcrm.config import build_config
from inboxcrm.errors import NotFound
from inboxcrm.mail.local import iter_messages
from inboxcrm.store.models import (
    AuditEntry,
    Base,
    Company,
    ContactAddress,
    Deal,
    Message,
    MessageCopy,
    MessageRaw,
)

from .conftest import MAIL, mail, refused

CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)  # the team of config_file
# In the order they arrived, so that a reply comes after the message it answers.
PIPELINE = sorted(MAIL.glob("pipeline-*.eml"),
                  key=lambda p: parsedate_to_datetime(BytesHeaderParser().parsebytes(p.read_bytes())["Date"]))
KEPT = {"reps", "rep_addresses", "mailboxes", "stages"}  # what `empty` leaves: the team's setup


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(path)
    for data in messages:
        box.add(data)
    box.close()
    return path


def write_maildir(path: Path, messages: list[bytes]) -> Path:
    """Delivered a second apart: a Maildir file name starts with its delivery time, and that is
    the order a Maildir is read in (mailbox's own names differ only in microseconds otherwise)."""
    seconds = itertools.count(1_790_000_000)
    with patch.object(mailbox, "time", SimpleNamespace(time=lambda: float(next(seconds)))):
        box = mailbox.Maildir(path)
        for data in messages:
            box.add(data)
        box.close()
    return path


def write_sources(root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """The same messages, in the same order, in every format the importer reads."""
    messages = [path.read_bytes() for path in files]
    folder = root / "eml"
    folder.mkdir()
    for i, data in enumerate(messages):
        (folder / f"{i:02d}.eml").write_bytes(data)
    return {"maildir": [write_maildir(root / "Maildir", messages)], "mbox": [write_mbox(root / "all.mbox", messages)],
            "eml-folder": [folder], "eml": sorted(folder.glob("*.eml"))}


def empty(engine) -> None:
    """Everything mail made goes, the team's setup stays; ids start at 1 again (D-1 ...)."""
    tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name not in KEPT]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(t.name for t in tables)} RESTART IDENTITY"))
        else:
            for table in tables:
                conn.execute(table.delete())


def records(factory) -> dict:
    """The records an import made, without times and locations."""
    with factory() as s:
        return {
            "messages": {mid: (status, reason, deal) for mid, status, reason, deal in s.execute(
                select(Message.message_id, Message.status, Message.reason, Message.deal_id))},
            "deals": s.execute(select(
                Deal.id, Deal.contact_id, Deal.company_id, Deal.stage_id, Deal.owner_rep_id, Deal.source, Deal.score,
                Deal.inbound_count, Deal.outbound_count, Deal.first_response_seconds).order_by(Deal.id)).all(),
            "contacts": s.execute(select(ContactAddress.address, ContactAddress.contact_id)
                                  .order_by(ContactAddress.address)).all(),
            "companies": s.scalars(select(Company.domain).order_by(Company.id)).all(),
            "audit": s.execute(select(AuditEntry.action, AuditEntry.entity, AuditEntry.entity_id)
                               .order_by(AuditEntry.id)).all(),
        }


def counts(factory) -> dict[str, int]:
    with factory() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                for m in (Message, MessageCopy, Deal, AuditEntry)}


def run(factory, path: Path, mailbox_name: str = "sales", parse_workers: int = 0, **kwargs) -> Counter:
    """Parsed in place unless a test asks for workers: a pool per call is slow to start."""
    return import_path(factory, CONFIG, mailbox_name, path, parse_workers=parse_workers, **kwargs).counts


def run_all(factory, paths: list[Path], mailbox_name: str = "sales") -> Counter:
    return sum((run(factory, path, mailbox_name) for path in paths), Counter())


@pytest.fixture
def sources(tmp_path) -> dict[str, list[Path]]:
    return write_sources(tmp_path, PIPELINE)


def test_every_format_gives_the_same_records(team, engine, factory, sources):
    arrived = [path.read_bytes() for path in PIPELINE]
    found = {}
    for fmt, paths in sources.items():
        assert [m.data for path in paths for m in iter_messages(path)] == arrived, fmt
        empty(engine)
        assert run_all(factory, paths).total() == len(PIPELINE), fmt
        found[fmt] = records(factory)
    assert found["maildir"] == found["mbox"] == found["eml-folder"] == found["eml"]
    # and they are the pipeline's records, not the same nothing four times
    made = found["mbox"]
    assert len(made["messages"]) == len(PIPELINE) and len(made["deals"]) == 10
    assert {mid: made["messages"][mid] for mid in (
        "tb-1@northwind.example", "alice-r1@acme.example", "tb-2@northwind.example", "tb-3@northwind.example",
        "bob-cold-1@acme.example", "greta-1@fjord-analytics.example", "broken-1@unknown.example",
        "internal-1@acme.example", "ooo-1@contoso.example")} == {
        "tb-1@northwind.example": ("processed", "new-lead", 1),
        "alice-r1@acme.example": ("processed", "thread", 1),
        "tb-2@northwind.example": ("processed", "thread", 1),
        "tb-3@northwind.example": ("processed", "contact", 1),
        "bob-cold-1@acme.example": ("processed", "thread-adopted", 6),  # adopted when greta replied
        "greta-1@fjord-analytics.example": ("processed", "reply-to-outreach", 6),
        "broken-1@unknown.example": ("quarantined", "no-sender", None),
        "internal-1@acme.example": ("internal", "internal", None),
        "ooo-1@contoso.example": ("noise", "auto-submitted", None),
    }


@pytest.mark.parametrize("fmt", ["mbox", "maildir", "eml-folder", "eml"])
def test_reimport_changes_nothing(team, factory, sources, fmt):
    run_all(factory, sources[fmt])
    before, made = counts(factory), records(factory)
    assert run_all(factory, sources[fmt]) == {"duplicate": len(PIPELINE)}
    assert counts(factory) == before and records(factory) == made


def test_the_same_messages_in_a_second_mailbox_add_only_copies(team, factory, sources):
    team("mailbox", "add", "alice", "--role", "rep", "--owner", "alice")
    (path,) = sources["mbox"]
    run(factory, path)
    before, made = counts(factory), records(factory)
    assert run(factory, path, "alice") == {"duplicate": len(PIPELINE)}
    after = counts(factory)
    assert after.pop("message_copies") == 2 * before.pop("message_copies")
    assert after == before and records(factory) == made
    with factory() as s:
        copies = Counter(s.scalars(select(MessageCopy.message_id)))
    assert set(copies.values()) == {2}


def test_since_skips_older_mail_but_keeps_undated_mail(team, factory, tmp_path):
    names = ["pipeline-new-lead-company.eml", "pipeline-freemail-lead.eml", "import-undated.eml",
             "pipeline-auto-reply.eml", "pipeline-cc-sales-and-rep.eml"]  # Nov 2, Nov 2, -, Nov 7, Nov 8
    path = write_mbox(tmp_path / "since.mbox", [mail(n) for n in names])
    report = run(factory, path, since=datetime(2026, 11, 7, 13, 0, tzinfo=timezone.utc))
    assert report.total() == 3
    with factory() as s:
        stored = set(s.scalars(select(Message.message_id)))
    assert stored == {"pq-1@quill-press.example", "ooo-1@contoso.example", "nq-1@quinn-legal.example"}


def test_a_broken_message_in_the_middle_of_an_mbox_is_quarantined_and_the_rest_imported(team, factory, tmp_path):
    names = ["pipeline-new-lead-company.eml", "import-truncated.eml", "pipeline-freemail-lead.eml"]
    path = write_mbox(tmp_path / "broken.mbox", [mail(n) for n in names])
    assert run(factory, path) == {"processed": 2, "quarantined": 1}
    with factory() as s:
        rows = s.execute(select(Message.message_id, Message.status, Message.reason, MessageRaw.data)
                         .join(MessageRaw).order_by(Message.id)).all()
    assert [row[:3] for row in rows] == [("tb-1@northwind.example", "processed", "new-lead"),
                                         ("cut-1@truncated.example", "quarantined", "no-sender"),
                                         ("jane-1@mail.gmail.com", "processed", "new-lead")]
    assert rows[1].data == mail("import-truncated.eml")  # kept byte for byte, to retry after a fix
    assert counts(factory)["deals"] == 2


def test_parse_workers_give_exactly_the_records_of_parsing_in_place(team, engine, factory, tmp_path, monkeypatch):
    messages = [p.read_bytes() for p in PIPELINE]
    path = write_mbox(tmp_path / "all.mbox", messages[:5] + [mail("import-truncated.eml")] + messages[5:])
    pooled = []  # whether each message came parsed from a worker (not parsed in place)
    parse_ahead = importer.parse_ahead

    def watched(raws, workers):
        for raw, prepared in parse_ahead(raws, workers):
            pooled.append(prepared is not None)
            yield raw, prepared

    monkeypatch.setattr(importer, "parse_ahead", watched)
    dumps = {}
    for workers in (0, 1):
        empty(engine)
        pooled.clear()
        run(factory, path, parse_workers=workers)
        dumps[workers] = records(factory)
        assert pooled == [bool(workers)] * (len(PIPELINE) + 1)
    assert dumps[1] == dumps[0]
    assert dumps[1]["messages"]["cut-1@truncated.example"] == ("quarantined", "no-sender", None)


def test_cli_import_prints_the_report(team, factory, sources):
    path, n = str(sources["mbox"][0]), len(PIPELINE)
    out = team("import", path, "--mailbox", "sales").stdout
    head, _, report = out.rstrip("\n").partition(": ")
    assert head == f"imported {n} messages into sales"
    counted = {status: int(count) for count, status in (part.split(" ") for part in report.split(", "))}
    assert sum(counted.values()) == n and list(counted) == sorted(counted)  # each outcome once, by name
    assert counted["quarantined"] == 1 and counted["unmatched"] == 1 and counted["processed"] > n // 2
    assert team("import", path, "--mailbox", "sales").stdout == f"imported {n} messages into sales: {n} duplicate\n"
    assert counts(factory)["messages"] == n


def test_cli_import_since_uses_the_day(team, factory, tmp_path):
    names = ["pipeline-new-lead-company.eml", "import-undated.eml", "pipeline-cc-sales-and-rep.eml"]
    path = write_mbox(tmp_path / "since.mbox", [mail(n) for n in names])
    out = team("import", str(path), "--mailbox", "sales", "--since", "2026-11-08").stdout
    assert out == "imported 2 messages into sales: 2 processed\n"
    with factory() as s:
        assert set(s.scalars(select(Message.message_id))) == {"pq-1@quill-press.example", "nq-1@quinn-legal.example"}


def test_unknown_mailbox_is_refused(team, factory, sources):
    (path,) = sources["mbox"]
    assert refused(team, "import", str(path), "--mailbox", "x") == (
        'error: unknown mailbox "x"; mailboxes are: sales (add one with "inboxcrm mailbox add")\n')
    with pytest.raises(NotFound, match='unknown mailbox "x"; mailboxes are: sales'):
        run(factory, path, "x")
    assert counts(factory)["messages"] == 0


def test_missing_path_is_refused(team, factory, tmp_path):
    missing = tmp_path / "nowhere.mbox"
    err = refused(team, "import", str(missing), "--mailbox", "sales")
    assert "does not exist" in err and str(missing) in err
    with pytest.raises(NotFound, match=re.escape(f"no such file or folder: {missing}")):
        run(factory, missing)


def test_cli_import_shows_no_library_log_noise(team, db_url, config_file, tmp_path):
    """As a user runs it, in its own process: pytest's log capture would hide the warning."""
    path = write_mbox(tmp_path / "one.mbox", [mail("import-truncated.eml")])
    result = subprocess.run(
        [sys.executable, "-m", "inboxcrm", "--config", str(config_file), "--database-url", db_url,
         "import", str(path), "--mailbox", "sales"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120,
        env={**os.environ, "INBOXCRM_CONFIG": "", "INBOXCRM_DATABASE_URL": ""})
    assert (result.returncode, result.stdout) == (0, "imported 1 message into sales: 1 quarantined\n")
    assert "not handled" not in result.stderr, result.stderr
