"""Web-form notifications: find the prospect a form service wrote about.

Form services (Typeform, Webflow, a site's own mailer) send from their own address; the
prospect is in Reply-To or in "Email: ..." lines of the body.
"""
from __future__ import annotations

import re

from inboxcrm.core.addresses import normalize, normalize_domains
from inboxcrm.values import Address, Email

_FIELD = re.compile(r"^[\s*>]*([A-Za-z][A-Za-z \-]{0,30}?)\s*[:=]\s*(.+?)\s*$", re.M)
_EMAIL_KEYS = {"email", "e-mail", "email address", "e-mail address", "your email", "mail"}
_NAME_KEYS = {"name", "full name", "your name", "contact name"}
_FIRST_KEYS = {"first name", "firstname", "given name"}
_LAST_KEYS = {"last name", "lastname", "surname", "family name"}
# A candidate only (\w is Unicode, so IDN domains are found); ``normalize`` decides whether it is an address.
_ADDRESS = re.compile(r"[\w.+\-']+@[\w\-]+(?:\.[\w\-]+)+")


def form_fields(text: str) -> dict[str, str]:
    """``Key: value`` lines of a body, keys lower-cased; the first occurrence wins."""
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        fields.setdefault(" ".join(key.lower().split()), value)
    return fields


def form_prospect(email: Email, excluded_domains: frozenset[str]) -> Address | None:
    """The person who filled in the form, or None when the notification names nobody."""
    fields = form_fields(email.text)
    name = next((fields[k] for k in _NAME_KEYS if k in fields), "")
    if not name:
        name = " ".join(fields[k] for k in (*_FIRST_KEYS, *_LAST_KEYS) if k in fields)
    for key in _EMAIL_KEYS:
        found = _ADDRESS.search(fields.get(key, ""))
        address = normalize(found.group(0)) if found else None
        if address:
            return Address(email=address, name=name)
    excluded = normalize_domains(excluded_domains)
    for candidate in email.reply_to:
        if candidate.domain not in excluded and candidate.email != (email.from_ and email.from_.email):
            return Address(email=candidate.email, name=candidate.name or name)
    return None
