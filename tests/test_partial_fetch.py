"""A mailbox with ``max_attachment_bytes``: against the real Dovecot, on both databases, a message
with an attachment over the limit arrives with its text and HTML intact and a placeholder naming
the file left on the server, is marked truncated with its real size and lands on its deal as the
whole message would; a message under the limit is stored byte for byte; nothing gets \\Seen.
(Gmail lets IMAP download about 2.5 GB a day: a first backfill must not spend it on attachments.)"""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from inboxcrm.app.deals import show_deal
from inboxcrm.app.importer import feed, resolve_mailbox
from inboxcrm.config import build_config
from inboxcrm.core.parse import parse
from inboxcrm.core.views import render_deal
from inboxcrm.errors import Invalid
from inboxcrm.mail import imap, partial_fetch
from inboxcrm.mail.imap import ImapSettings
from inboxcrm.store.db import session_factory
from inboxcrm.store.models import Contact, Deal, Mailbox

from .conftest import refused
from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .test_cli_sync import add_imap
from .test_large_messages import fetched_items, stored, with_attachment
from .test_sync import alice, crm  # noqa: F401 - fixtures: alice's account, a CRM reading it as "sales"

MB = 1024 * 1024
CONFIG = build_config({"team": {"domains": ["acme.example"]}}, None)
HTML = ("<html><body><p>Dear sales team,</p><p>please find our tender attached; we need an offer by "
        "Friday =E2=80=94 thanks!</p></body></html>")  # quoted-printable, as sent


def tender(mid: str, megabytes: float, name: str = "tender.pdf") -> bytes:
    """A prospect's mail as Outlook sends it: text and HTML alternatives, and a PDF in base64."""
    pdf = base64.encodebytes(b"%PDF" + bytes(int(megabytes * MB))).decode().replace("\n", "\r\n")
    return (f"From: Jane Roe <jane@bigcorp.example>\r\nTo: sales@acme.example\r\nSubject: Tender {mid}\r\n"
            f"Message-ID: <{mid}@bigcorp.example>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="mixed-1"\r\n\r\n'
            f"This is a multi-part message in MIME format.\r\n"
            f'--mixed-1\r\nContent-Type: multipart/alternative; boundary="alt-2"\r\n\r\n'
            f"--alt-2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Dear sales team,\r\n\r\nplease find our tender attached; we need an offer by Friday.\r\n"
            f"--alt-2\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            f"{HTML}\r\n--alt-2--\r\n"
            f'--mixed-1\r\nContent-Type: application/pdf; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{pdf}--mixed-1--\r\n").encode()


def backfill(factory, dovecot, user, limit: int | None) -> None:
    """What a sync pass does with the folder's messages: fetch (EXAMINE, BODY.PEEK) and feed."""
    client = imap.connect(dovecot.settings(user))
    try:
        folder = imap.examine(client, "INBOX")
        uids = imap.new_uids(client, 0, None)
        messages = imap.fetch(client, folder, uids, max_attachment_bytes=limit)
        with factory() as session:
            mailbox = resolve_mailbox(session, "sales")
        feed(factory, CONFIG, mailbox, messages, parse_workers=0)
    finally:
        imap.close(client)


def test_an_attachment_over_the_limit_stays_on_the_server_and_the_message_joins_its_deal(
        crm, dovecot, alice, monkeypatch):
    big = tender("big", 3)
    small = tender("small", 0.2)
    reply = with_attachment("reply", 1_000, extra="In-Reply-To: <big@bigcorp.example>\r\n")
    dovecot.append(alice, "INBOX", [big, small, reply])
    before = dovecot.flags(alice, "INBOX")
    sent = fetched_items(monkeypatch)

    backfill(crm, dovecot, alice, limit=1 * MB)

    row, raw = stored(crm, "big")
    assert row.truncated and row.size == len(big) and row.status == "processed"
    assert len(raw) < 8192
    assert raw.startswith(big[:big.index(b"\r\n\r\n") + 4])  # its own headers, as received
    assert HTML.encode() in raw  # the HTML part as sent, still quoted-printable
    whole, kept = parse(big), parse(raw)
    assert (kept.text, kept.subject, kept.from_, kept.to, kept.date) == \
        (whole.text, whole.subject, whole.from_, whole.to, whole.date)
    [placeholder] = kept.attachments
    assert placeholder.filename == "tender.pdf (not downloaded).txt"
    assert b'Not downloaded:\r\n"tender.pdf" (application/pdf, 4.1 MB on the server)' in raw  # base64: 4/3 of 3 MB
    # under the limit: fetched whole and stored exactly as on the server
    small_row, small_raw = stored(crm, "small")
    assert not small_row.truncated and small_raw == small
    # the deal and contact are made as for the whole message; the reply and her next mail join it
    answer, _ = stored(crm, "reply")
    assert row.deal_id is not None and answer.deal_id == row.deal_id == small_row.deal_id
    with crm() as s:
        deal = s.get(Deal, row.deal_id)
        contact = s.get(Contact, deal.contact_id)
        assert deal.title == "Tender big" and deal.inbound_count == 3 and contact.name == "Jane Roe"
        shown = render_deal(show_deal(s, f"D-{deal.id}"), datetime.now(UTC))
    assert shown.count("[not stored whole: ") == 1
    # read-only: BODY.PEEK only, the attachment never asked for, no flag changed
    big_uid, small_uid, _ = dovecot.uids(alice, "INBOX")
    asked = {uid: items for uids, items in sent for uid in uids if "RFC822.SIZE" not in items
             and items != ("BODYSTRUCTURE",)}
    assert "BODY.PEEK[]" in asked[small_uid] and "BODY.PEEK[]" not in asked[big_uid]
    assert "BODY.PEEK[2]" not in asked[big_uid] and "BODY.PEEK[2.MIME]" in asked[big_uid]
    assert {"BODY.PEEK[1.1]", "BODY.PEEK[1.2]"} <= set(asked[big_uid])
    assert all(item.startswith(("BODY.PEEK", "RFC822.SIZE", "BODYSTRUCTURE", "X-GM")) for _, items in sent
               for item in items)
    assert dovecot.flags(alice, "INBOX") == before


def test_without_a_limit_every_message_is_fetched_whole(crm, dovecot, alice):
    big = tender("big", 3)
    dovecot.append(alice, "INBOX", [big])
    backfill(crm, dovecot, alice, limit=None)
    row, raw = stored(crm, "big")
    assert not row.truncated and raw == big


def test_a_message_that_is_one_large_attachment_is_recorded_from_its_headers(dovecot, alice):
    pdf = base64.encodebytes(bytes(2 * MB)).replace(b"\n", b"\r\n")
    lone = (b"From: jane@bigcorp.example\r\nSubject: scan\r\nMessage-ID: <scan@bigcorp.example>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf)
    dovecot.append(alice, "INBOX", [lone])
    client = imap.connect(dovecot.settings(alice))
    try:
        [message] = imap.fetch(client, imap.examine(client, "INBOX"), [1], max_attachment_bytes=MB)
    finally:
        imap.close(client)
    assert message.full_size == len(lone) and len(message.data) < 2048
    assert b"over the mailbox's max_attachment_bytes (1.0 MB)" in message.data and b"scan.pdf" in message.data


def test_small_attachments_and_messages_over_the_limit_without_one_are_fetched_whole():
    """Five 400 kB files in a 2.7 MB message: no part is over 1 MB, so nothing is left out."""
    part = (b"application", b"pdf", (b"name", b"a.pdf"), None, None, b"base64", 550_000, None,
            (b"attachment", (b"filename", b"a.pdf")), None, None)
    text = (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 2_000, 40, None, None, None, None)
    structure = ([text] + [part] * 5, b"mixed", (b"boundary", b"b"), None, None, None)
    assert partial_fetch.how_to_fetch(2_760_000, structure, 25 * MB, MB).items == partial_fetch.WHOLE
    # a text body is kept whatever its size; a big text file sent as an attachment is not
    huge_text = (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 3 * MB, 1, None, None, None, None)
    assert partial_fetch.how_to_fetch(3 * MB, ([huge_text, part], b"mixed", (b"boundary", b"b"), None, None, None),
                                      25 * MB, MB).items == partial_fetch.WHOLE
    csv = huge_text[:9] + ((b"attachment", (b"filename", b"leads.csv")),) + huge_text[10:]
    plan = partial_fetch.how_to_fetch(3 * MB, ([text, csv], b"mixed", (b"boundary", b"b"), None, None, None),
                                      25 * MB, MB)
    assert plan.full_size == 3 * MB and "BODY.PEEK[2]" not in plan.items and "BODY.PEEK[1]" in plan.items
    # what is kept must still fit [sync] max_message_bytes, else headers only as before
    assert partial_fetch.how_to_fetch(3 * MB, ([huge_text, csv], b"mixed", (b"boundary", b"b"), None, None, None),
                                      2 * MB, MB).items == partial_fetch.HEADERS_ONLY
    # a structure not understood: read as if there were no attachment limit
    assert partial_fetch.how_to_fetch(3 * MB, ("garbage",), 25 * MB, MB).items == partial_fetch.WHOLE


def test_the_limit_is_a_mailbox_setting_given_at_mailbox_add(team, dovecot, engine):
    alice = dovecot.add_user("alice", "pw")
    add_imap(team, dovecot, alice, "inbox", "--max-attachment-bytes", "1048576")
    with session_factory(engine)() as session:
        connection = session.scalar(select(Mailbox).where(Mailbox.name == "inbox")).connection
    assert connection["max_attachment_bytes"] == 1048576
    assert ImapSettings.from_json(json.loads(json.dumps(connection))).max_attachment_bytes == 1048576
    old = {k: v for k, v in connection.items() if k != "max_attachment_bytes"}  # stored before the setting
    assert ImapSettings.from_json(old).max_attachment_bytes is None
    assert "-1 is not in the range x>=0" in refused(team, "mailbox", "add", "x", "--role", "capture", "--host", "h", "--user", "u",
                             "--password-env", "P", "--max-attachment-bytes", "-1")


@pytest.mark.parametrize("value", [-1, "1MB", 1.5, True])
def test_a_bad_limit_names_what_is_valid(value):
    with pytest.raises(Invalid, match="expected a whole number of bytes, 0 or more"):
        partial_fetch.attachment_limit(value)


def test_a_hostile_structure_is_read_as_one_not_understood():
    """The sender writes the structure: thousands of parts or a deep nesting would make a FETCH
    of thousands of items or recurse out of stack; such a message is read as without the limit."""
    pdf = (b"application", b"pdf", (b"name", b"a.pdf"), None, None, b"base64", 2 * MB, None,
           (b"attachment", (b"filename", b"a.pdf")), None, None)
    text = (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 10, 1, None, None, None, None)
    many = ([pdf] + [text] * partial_fetch.MAX_PARTS, b"mixed", (b"boundary", b"b"), None, None, None)
    assert partial_fetch.how_to_fetch(3 * MB, many, 25 * MB, MB).items == partial_fetch.WHOLE
    deep = ([pdf, text], b"mixed", (b"boundary", b"b"), None, None, None)
    for _ in range(5000):
        deep = ([deep], b"mixed", (b"boundary", b"b"), None, None, None)
    assert partial_fetch.how_to_fetch(3 * MB, deep, 25 * MB, MB).items == partial_fetch.WHOLE
    assert partial_fetch.how_to_fetch(30 * MB, deep, 25 * MB, MB).items == partial_fetch.HEADERS_ONLY
    # within the bounds the same message is read without its attachment
    fine = ([pdf] + [text] * 10, b"mixed", (b"boundary", b"b"), None, None, None)
    assert "BODY.PEEK[1]" not in partial_fetch.how_to_fetch(3 * MB, fine, 25 * MB, MB).items
