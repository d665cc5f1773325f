"""How inboxcrm trusts the servers it connects to (IMAP, SMTP): one rule in one place.

The system's CAs by default, a private CA when the admin names its bundle, and no check at all
only when the admin turned verification off explicitly (callers log that at every connection).
"""
from __future__ import annotations

import ssl


def client_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
