"""Messages over [sync] max_message_bytes, from a real Dovecot and from local files, on both
databases: recorded from their headers (and structure), attached to their deal, marked truncated,
never read whole, and the mailbox left exactly as it was."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

from imapclient import IMAPClient
from sqlalchemy import select

from inboxcrm.app.deals import show_deal
from inboxcrm.app.importer import import_path
from inboxcrm.app.sync import sync_mailbox
from inboxcrm.config import build_config
from inboxcrm.core.views import render_deal
from inboxcrm.store.models import Deal, Message

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .test_sync import alice, crm  # noqa: F401 - fixtures: alice's account, a CRM reading it as "sales"

LIMIT = 65536
CONFIG = build_config({"team": {"domains": ["acme.example"]},
                       "sync": {"max_message_bytes": LIMIT, "fetch_batch_bytes": 1048576}}, None)


def with_attachment(mid: str, size: int, extra: str = "") -> bytes:
    """A prospect's mail with a PDF of ``size`` bytes, base64 as a mail client sends it."""
    pdf = base64.encodebytes(b"%PDF" + bytes(size)).decode().replace("\n", "\r\n")
    return (f"From: Jane Roe <jane@bigcorp.example>\r\nTo: sales@acme.example\r\nSubject: Tender {mid}\r\n"
            f"Message-ID: <{mid}@bigcorp.example>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n{extra}"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe tender documents are attached.\r\n"
            f'--b1\r\nContent-Type: application/pdf; name="tender.pdf"\r\n'
            f'Content-Disposition: attachment; filename="tender.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{pdf}--b1--\r\n").encode()


def fetched_items(monkeypatch) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """Every FETCH the sync sends, as (UIDs, items): a spy, the real server still answers."""
    sent: list = []
    real = IMAPClient.fetch

    def spy(self, messages, data, *args, **kwargs):
        sent.append((tuple(messages), tuple(data)))
        return real(self, messages, data, *args, **kwargs)

    monkeypatch.setattr(IMAPClient, "fetch", spy)
    return sent


def stored(factory, mid: str) -> tuple[Message, bytes]:
    with factory() as s:
        row = s.scalar(select(Message).where(Message.message_id == f"{mid}@bigcorp.example"))
        return row, row.raw


def test_a_message_over_the_limit_is_recorded_truncated_on_its_deal_and_never_fetched_whole(
        crm, dovecot, alice, monkeypatch):
    big = with_attachment("big", 300_000)
    reply = with_attachment("reply", 1_000, extra="In-Reply-To: <big@bigcorp.example>\r\n")
    dovecot.append(alice, "INBOX", [big, reply])
    before = dovecot.flags(alice, "INBOX")
    sent = fetched_items(monkeypatch)

    report = sync_mailbox(crm, CONFIG, "sales")

    assert report.total == 2
    row, raw = stored(crm, "big")
    assert row.truncated and row.size == len(big) and row.status == "processed"
    assert len(raw) < 4096 and raw.startswith(big[:big.index(b"\r\n\r\n")])  # its own headers, as received
    assert b"not stored whole" in raw and b"tender.pdf" in raw and b"application/pdf" in raw
    assert row.subject == "Tender big" and row.from_address == "jane@bigcorp.example"
    small, small_raw = stored(crm, "reply")
    assert not small.truncated and small_raw == reply and small.deal_id == row.deal_id is not None
    with crm() as s:
        deal = s.get(Deal, row.deal_id)
        assert deal.inbound_count == 2 and deal.title == "Tender big"
    big_uid, reply_uid = dovecot.uids(alice, "INBOX")
    whole = {uid for uids, items in sent if "BODY.PEEK[]" in items for uid in uids}
    headers_only = {uid for uids, items in sent if "BODY.PEEK[HEADER]" in items for uid in uids}
    assert big_uid not in whole and big_uid in headers_only and reply_uid in whole
    assert all(item.startswith(("BODY.PEEK", "RFC822.SIZE", "BODYSTRUCTURE", "X-GM")) for _, items in sent
               for item in items)
    assert dovecot.flags(alice, "INBOX") == before  # no \Seen, nothing changed


def test_fetches_are_bounded_by_bytes_and_every_message_arrives_in_order(crm, dovecot, alice, monkeypatch):
    """fetch_batch_bytes is 1 MB: 12 messages of ~60 kB (under the limit) take at least 2 FETCHes
    of bodies, though 200 could go in one by count; the position still ends after the last."""
    messages = [with_attachment(f"m{i}", 44_000) for i in range(20)]
    assert all(len(m) < LIMIT for m in messages)
    dovecot.append(alice, "INBOX", messages)
    sent = fetched_items(monkeypatch)

    report = sync_mailbox(crm, CONFIG, "sales")

    assert report.total == 20
    bodies = [uids for uids, items in sent if "BODY.PEEK[]" in items]
    assert len(bodies) >= 2 and all(len(uids) * 60_000 <= 1048576 for uids in bodies)
    assert [uid for uids in bodies for uid in uids] == dovecot.uids(alice, "INBOX")
    with crm() as s:
        assert not any(s.scalars(select(Message.truncated)))


def test_an_import_records_a_huge_file_truncated_and_names_the_file_it_cannot_read(crm, tmp_path):
    """A Maildir with a message over the limit and an entry that cannot be read: the rest imports,
    the huge one joins its deal truncated, the unreadable one is named in the report."""
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1.M1P1.host:2,S").write_bytes(with_attachment("huge", 300_000))
    (root / "cur" / "2.M1P1.host:2,S").mkdir()  # unreadable whoever runs the test
    (root / "cur" / "3.M1P1.host:2,S").write_bytes(
        with_attachment("answer", 1_000, extra="In-Reply-To: <huge@bigcorp.example>\r\n"))

    report = import_path(crm, CONFIG, "sales", root, parse_workers=0)

    assert report.total == 2 and report.counts["processed"] == 2
    assert report.skipped == [(str(root.resolve() / "cur" / "2.M1P1.host:2,S"), "Is a directory")]
    huge, raw = stored(crm, "huge")
    answer, _ = stored(crm, "answer")
    assert huge.truncated and huge.size > 300_000 and len(raw) < 4096 and b"not stored whole" in raw
    assert not answer.truncated and answer.deal_id == huge.deal_id is not None
    with crm() as session:  # `deal show` tells the user the message was not stored whole
        detail = show_deal(session, f"D-{huge.deal_id}")
    shown = render_deal(detail, datetime.now(timezone.utc))
    assert shown.count("[not stored whole: ") == 1 and "the rest is in the mailbox]" in shown


def test_a_large_message_under_the_limit_is_stored_byte_for_byte(crm, tmp_path):
    """Above 1 MB the raw bytes go to SQLite through a blob handle (no driver copy kept): what is
    read back must be the message exactly, on either database."""
    big = with_attachment("whole", 3 * 1024 * 1024)
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "whole.eml").write_bytes(big)
    config = build_config({"team": {"domains": ["acme.example"]}}, None)  # the default 25 MB limit
    report = import_path(crm, config, "imported", tmp_path / "mail", parse_workers=0)
    assert report.counts["processed"] == 1
    row, raw = stored(crm, "whole")
    assert not row.truncated and row.size == len(big) and raw == big
