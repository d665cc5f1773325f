"""A large message through the main process costs about its own size, not a multiple of it.

Against the real Dovecot: a message just under ``max_message_bytes`` is fetched, read ahead and
parsed the way a backfill does it, and the Python allocations it takes stay near one copy of it.
(What a user relies on: a backfill of such messages stays within its memory budget.)
"""
from __future__ import annotations

import tracemalloc

from inboxcrm.mail import imap
from inboxcrm.mail.parse_ahead import parse_ahead, prepare

from .dovecot import dovecot_server  # noqa: F401 - registers the fixture "dovecot"
from .test_parse_large import TEXT, attachment, message

MEGABYTES = 8


def test_fetching_and_parsing_a_large_message_holds_about_one_copy(dovecot):
    big = message(b"--BB\n" + TEXT + b"--BB\n" + attachment("tender.pdf", MEGABYTES) + b"--BB--\n")
    alice = dovecot.add_user("alice", "s3cret")
    dovecot.append(alice, "INBOX", [big, big])
    client = imap.connect(dovecot.settings(alice))
    try:
        folder = imap.examine(client, "INBOX")
        uids = imap.new_uids(client, 0, None)
        tracemalloc.start()
        try:
            peaks, parsed = [], []
            fetched = imap.fetch(client, folder, uids, batch_bytes=len(big))  # one message a FETCH
            for raw, prepared in parse_ahead(fetched, workers=1):
                parsed.append(prepared.parsed if prepared is not None else prepare(raw.data).parsed)
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()
                del raw, prepared
        finally:
            tracemalloc.stop()
    finally:
        imap.close(client)
    assert [e.attachments[0].filename for e in parsed] == ["tender.pdf", "tender.pdf"]
    # one message read, then parsed from its skeleton; before, imaplib's trace formatted a
    # second and third copy, and the previous message was still held while the next was read
    assert max(peaks) < 1.3 * len(big), f"{max(peaks) / 1e6:.0f} MB for a {len(big) / 1e6:.0f} MB message"
