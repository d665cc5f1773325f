"""Which deal a message belongs to: thread, then address, then domain, else a new lead.

The thread is found two ways: by the Message-IDs a reply names (In-Reply-To, References), and,
for mail read from Gmail, by Gmail's own thread id, which holds a reply whose client dropped
those headers (a phone app, a forward-and-edit) in its conversation. The headers go first: they
name the message answered; Gmail's thread is the next best evidence, better than "the contact's
most recent deal" when a contact has several, or than a new lead when the reply comes from
another address of the same person.

Pure: it asks a ``Lookup`` (the store implements it) and returns a ``Match`` value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from inboxcrm.core.addresses import (
    normalize_domain,
    normalize_domains,
    registrable_domain,
)
from inboxcrm.core.freemail import is_freemail
from inboxcrm.values import Address, Email


@dataclass(frozen=True)
class ContactInfo:
    id: int
    owner: str | None


class Lookup(Protocol):
    def deal_for_thread(self, message_ids: Sequence[str]) -> int | None: ...
    def deal_for_gmail_thread(self, message_id: str) -> int | None:
        """The deal of another message in the Gmail thread of this message's copy (X-GM-THRID,
        stored with the copy); None when the copy did not come from Gmail."""
        ...
    def contact_for_address(self, address: str) -> ContactInfo | None: ...
    def open_deals(self, contact_id: int) -> Sequence[int]:
        """Open deals of a contact, most recent activity first."""
        ...
    def company_for_domain(self, domain: str) -> int | None: ...


@dataclass(frozen=True)
class Match:
    via: str  # thread | contact | company | new
    reason: str
    prospect: Address
    deal_id: int | None = None
    contact: ContactInfo | None = None
    company_id: int | None = None
    company_domain: str | None = None  # None for freemail and team domains: no company
    other_open_deals: tuple[int, ...] = ()  # set when a contact has several open deals

    @property
    def ambiguous(self) -> bool:
        return bool(self.other_open_deals)


def company_domain(address: Address, team_domains: frozenset[str], freemail: frozenset[str]) -> str | None:
    """The domain that keys a company, or None: gmail.com is not a company, nor are we.

    A company is its registrable domain (Public Suffix List), so mail from ``mail.acme.co.uk``
    and ``acme.co.uk`` lands at one company. Two exceptions keep the full domain out of the
    giant-company trap: our own subdomains are not a customer, and a subdomain of a freemail
    provider (``shop.yahoo.co.jp``-style business hosting) is its own company, not the
    provider's. Every domain is compared in the stored form, so a team domain configured in
    punycode still recognises mail written to its Unicode form."""
    domain = normalize_domain(address.domain)
    if domain is None:
        return None
    ours = normalize_domains(team_domains)
    if domain in ours or is_freemail(domain, freemail):
        return None
    registrable = registrable_domain(domain)
    if registrable in ours:
        return None
    return domain if is_freemail(registrable, freemail) else registrable


def match(
    email: Email,
    prospect: Address,
    lookup: Lookup,
    team_domains: frozenset[str],
    freemail: frozenset[str] = frozenset(),
) -> Match:
    domain = company_domain(prospect, team_domains, freemail)
    # The contact first: a store may read the company of the address's domain in the same round trip.
    contact = lookup.contact_for_address(prospect.email)
    company_id = lookup.company_for_domain(domain) if domain else None
    common = dict(prospect=prospect, contact=contact, company_id=company_id, company_domain=domain)

    thread_deal = lookup.deal_for_thread(email.thread_ids) if email.thread_ids else None
    if thread_deal is not None:
        return Match("thread", "thread", deal_id=thread_deal, **common)
    gmail_deal = lookup.deal_for_gmail_thread(email.message_id)
    if gmail_deal is not None:
        return Match("thread", "gmail-thread", deal_id=gmail_deal, **common)
    if contact is not None:
        deals = list(lookup.open_deals(contact.id))
        if len(deals) > 1:
            return Match("contact", "contact-ambiguous", deal_id=deals[0], other_open_deals=tuple(deals[1:]), **common)
        if deals:
            return Match("contact", "contact", deal_id=deals[0], **common)
        return Match("contact", "contact-no-open-deal", **common)
    if company_id is not None:
        return Match("company", "company", **common)
    return Match("new", "new-lead", **common)
