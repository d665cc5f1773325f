"""Gmail's IMAP extensions (X-GM-EXT-1): each message fetched once, its thread and labels kept.

Gmail has labels, not folders. Over IMAP each label is a folder, so a message labelled INBOX and
"Clients" is in INBOX, in "Clients" and in [Gmail]/All Mail, with a UID in each but one
X-GM-MSGID, and the Gmail conversation it belongs to is its X-GM-THRID. Where the server offers
X-GM-EXT-1 the sync fetches all three with each message (``FETCH_ITEMS``):

- X-GM-MSGID names the copy (``imap.copy_location``: ``gmail:<id>``), and it is fetched already
  in the size pass, before any body: a message the mailbox stored from another label is not
  downloaded again (``imap.fetch``'s ``already_stored``). Gmail caps IMAP downloads at about
  2.5 GB a day, and every message a rep sent to a prospect with a label on it would otherwise
  cost its size twice.
- X-GM-THRID is kept with the stored copy, so a reply whose client dropped In-Reply-To and
  References still lands on its deal (``core.match``, reason ``gmail-thread``).
- X-GM-LABELS are kept with the copy as metadata. Gmail leaves out the label of the folder the
  message was read from; ``copy_of`` adds it back, so the labels say the same whichever folder
  the copy came from.

Why the folders the admin chose, deduplicated by X-GM-MSGID, rather than All Mail alone:
All Mail also holds archived newsletters, drafts and chat transcripts nobody asked the CRM to
read, while INBOX and Sent (the default) are what a rep's mail is. Deduplicating works for any
choice (custom labels by name, or \\All itself), and the folder positions, UIDVALIDITY handling
and IDLE on INBOX stay exactly as on every other server. Whether a message is inbound or
outbound is decided from its From address, as for every server, not from the \\Sent label. The
cost is one more FETCH item in the size pass and one indexed query per 2,000 UIDs.

A server without X-GM-EXT-1 (Dovecot, Exchange) is read as before: nothing here is asked.
"""
from __future__ import annotations

from collections.abc import Mapping

from imapclient.imap_utf7 import decode as decode_utf7

from inboxcrm.values import GmailCopy

CAPABILITY = b"X-GM-EXT-1"
MESSAGE_ID = "X-GM-MSGID"
FETCH_ITEMS = (MESSAGE_ID, "X-GM-THRID", "X-GM-LABELS")
# The label Gmail gives the messages of a SPECIAL-USE folder; All Mail is no label.
ROLE_LABELS = {"\\Inbox": "\\Inbox", "\\Sent": "\\Sent", "\\Drafts": "\\Draft", "\\Important": "\\Important",
               "\\Flagged": "\\Starred", "\\Junk": "\\Spam", "\\Trash": "\\Trash"}


def offered(capabilities) -> bool:
    """True for Gmail's IMAP server (its CAPABILITY lists X-GM-EXT-1)."""
    return CAPABILITY in capabilities


def folder_label(name: str, role: str) -> str | None:
    """The label a folder stands for: \\Inbox, \\Sent, ... by role, a user label by its name
    (nested labels are "Clients/Acme" in both); None for All Mail, which is every message."""
    if role:
        return ROLE_LABELS.get(role)
    return name


def _text(value) -> str:
    if isinstance(value, bytes):
        return decode_utf7(value)  # labels are mailbox names: modified UTF-7 (RFC 3501 5.1.3)
    return str(value)  # a label that is all digits comes back as a number


def copy_of(item: Mapping[bytes, object], label: str | None) -> GmailCopy | None:
    """Gmail's facts from one FETCH answer, or None when it has none (not Gmail).

    ``label``: the label of the folder the answer came from (``folder_label``), which Gmail
    leaves out of X-GM-LABELS."""
    message_id, thread_id = item.get(MESSAGE_ID.encode()), item.get(b"X-GM-THRID")
    if message_id is None or thread_id is None:
        return None
    labels = [_text(value) for value in item.get(b"X-GM-LABELS") or ()]
    if label is not None and label not in labels:
        labels.insert(0, label)
    return GmailCopy(str(message_id), str(thread_id), tuple(labels))
