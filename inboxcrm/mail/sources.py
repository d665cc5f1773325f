"""Where mail comes from (IMAP, local files), and what every source does with a message too big to keep.

A message over ``[sync] max_message_bytes`` is never read whole: holding a 50 MB attachment in
memory (and again in the parse worker and the database driver) is what took a poll to 500 MB.
Its headers are enough to record it, match it and attach it to its deal; the body is replaced by
a note saying what was left out, and the message is marked truncated with its real size.
"""
from __future__ import annotations

import re

from inboxcrm.core.parse import header_block
from inboxcrm.core.views import megabytes

_BOUNDARY = re.compile(rb'^content-type:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*?[ \t;]boundary="?([^"\r\n;]+)"?',
                       re.I | re.M)
def headers_only(headers: bytes, full_size: int, limit: int, parts: list[str] | None = None,
                 setting: str = "[sync] max_message_bytes") -> bytes:
    """The bytes stored for a message over the limit: its own headers, then a note in place of the body.
    ``setting`` names the limit in the note (an IMAP mailbox's max_attachment_bytes sends here a
    message that is one large attachment and nothing else, see mail.partial_fetch).

    In a multipart message the note is a text/plain part within the message's own boundary,
    so the message's headers stay exactly as received and the note still reads as its text."""
    block = header_block(headers)
    eol = b"\n" if b"\n" in block and b"\r\n" not in block else b"\r\n"  # the message's own line ends
    headers = block + eol + eol  # the header lines as received, then the blank line that ends them
    listed = "\n".join(f"  {part}" for part in parts) if parts else "  (not read)"
    note = (f"[inboxcrm] This message was not stored whole: it is {megabytes(full_size)}, over "
            f"{setting} ({megabytes(limit)}). Only its headers were read; the full "
            f"message is still in the mailbox.\nParts:\n{listed}\n").replace("\n", "\r\n").encode()
    boundary = _BOUNDARY.search(headers)
    if boundary is None:
        return headers + note
    mark = b"--" + boundary.group(1).strip()
    return (headers + mark + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + note
            + mark + b"--\r\n")
