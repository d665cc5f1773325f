"""One normal form for an email address and the company a domain stands for.

Every address that is stored or compared goes through ``normalize``, whether it came from a
parsed message, an import, the CLI or a command email, so the same person is one contact
however their address was written.

The stored form of a domain is its Unicode form (U-labels), NFC, lower-case:
``anna@xn--mller-bau-q9a.example`` and ``Anna@Müller-Bau.example`` are both stored as
``anna@müller-bau.example``. Unicode rather than punycode because people read these addresses
in listings, digests and reports, and a German team should see its customer's name, not
``xn--mller-bau-q9a``; and because an SMTPUTF8 local part (``jürgen@...``) is Unicode anyway, so
an ASCII-only column was never on offer. Software that needs the ASCII form (an SMTP envelope
to a server without SMTPUTF8) converts at that edge with ``idna.encode``.

Conversion is UTS-46 / IDNA 2008 by the ``idna`` package, not hand code: it knows the
mappings (full-width letters, ``ẞ``, combining marks) and rejects what a registry would refuse.
Pure ASCII host names skip it and are checked by the host-name rules (letters, digits,
hyphens) alone, because IDNA 2008 also refuses ASCII names that exist and receive mail
(``r3---sn-abc.googlevideo.com``, with hyphens in the third and fourth place).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable

import idna
from publicsuffixlist import PublicSuffixList

_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LOCAL_FORBIDDEN = frozenset('@<>,;"')
MAX_ADDRESS = 254  # RFC 5321: what fits in a forward-path
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN = 253


@lru_cache(maxsize=8192)
def normalize_domain(text: str) -> str | None:
    """A domain in the stored form (see the module docstring), or None when no registry could
    have issued it. Cached: a mailbox's mail comes from few domains, each seen many times."""
    domain = (text or "").strip().removesuffix(".")
    if not domain or len(domain) > 4 * MAX_DOMAIN:
        return None
    if domain.isascii() and not any(label[:4].lower() == "xn--" for label in domain.split(".")):
        domain = encoded = domain.lower()
    else:
        try:
            encoded = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode("ascii")
            domain = idna.decode(encoded)
        except UnicodeError:  # idna.IDNAError is one
            return None
    labels = encoded.split(".")
    if len(labels) < 2 or len(encoded) > MAX_DOMAIN or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return domain


def normalize_domains(domains: Iterable[str]) -> frozenset[str]:
    """A configured set of domains (the team's, its freemail additions) in the stored form, so
    ``address.domain in ...`` holds whether the admin wrote punycode or Unicode."""
    return frozenset(filter(None, map(normalize_domain, domains)))


def normalize(text: str) -> str | None:
    """The stored form of an address, or None when ``text`` is not a usable address.

    The local part is lower-cased as it always was (no provider we know of hands out
    ``Anna@`` and ``anna@`` to two people) and NFC-normalized, so an SMTPUTF8 local part typed
    on a Mac (decomposed) and one typed elsewhere are one person. Spaces, control characters
    and the characters that delimit addresses in a header are refused rather than quoted: in
    a stored address they are a parser's mistake or an attack on a terminal, not a person."""
    text = (text or "").strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or len(text) > 4 * MAX_ADDRESS:
        return None
    local = unicodedata.normalize("NFC", local).lower()
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        return None
    if any(ch in _LOCAL_FORBIDDEN or unicodedata.category(ch)[0] in "CZ" for ch in local):
        return None
    domain = normalize_domain(domain)
    if domain is None:
        return None
    address = f"{local}@{domain}"
    return address if len(address) <= MAX_ADDRESS else None


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    """The list bundled with ``publicsuffixlist`` (it never fetches), read once on first use:
    the CLI's commands that name no company should not pay for it."""
    return PublicSuffixList()


def registrable_domain(domain: str) -> str:
    """The part of a domain its owner registered: ``mail.acme.co.uk`` -> ``acme.co.uk``,
    ``acme.github.io`` stays itself (the list's private section counts: each such site is
    somebody's own). A domain that is itself a public suffix is returned as it is."""
    return _public_suffixes().privatesuffix(domain) or domain


def company_name(domain: str) -> str:
    """"northwind-traders.example" -> "Northwind Traders", ``acme.co.uk`` -> "Acme": the label
    just left of the public suffix, so a readable default that a person edits later."""
    normal = normalize_domain(domain) or domain
    label = registrable_domain(normal).split(".")[0]
    return " ".join(part.capitalize() for part in label.replace("_", "-").split("-") if part) or normal
