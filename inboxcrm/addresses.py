"""One normal form for an email address and the company a domain stands for.

Every address that is stored or compared goes through ``normalize``, whether it came from a
parsed message, an import, the CLI or a command email, so the same person is one contact
however their address was written.
"""
from __future__ import annotations

import re

_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


def normalize(text: str) -> str | None:
    """The stored form of an address, or None when ``text`` is not a usable address."""
    address = (text or "").strip().lower()
    return address if _ADDRESS.fullmatch(address) else None


def company_name(domain: str) -> str:
    """"northwind-traders.example" -> "Northwind Traders": a readable default, editable later."""
    label = domain.split(".")[-2] if domain.count(".") >= 1 else domain
    return " ".join(part.capitalize() for part in label.replace("_", "-").split("-") if part)
