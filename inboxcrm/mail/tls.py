"""How inboxcrm trusts the servers it connects to (IMAP, SMTP): one rule in one place.

The system's CAs by default, a private CA when the admin names its bundle, and no check at all
only when the admin turned verification off explicitly (callers log that at every connection).
Without TLS at all (``security = "plain"``) only a server on this machine is reached.
"""
from __future__ import annotations

import ipaddress
import ssl


def client_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def is_loopback(host: str) -> bool:
    """This machine, by name or address: the only place plain text may go. A name is not resolved,
    since a DNS answer is what an attacker on the way would forge."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
