"""Which deal a message belongs to, with the records as dicts: no database.

What a rep relies on: a reply stays in its deal's thread, a known person's mail joins their
open deal, a new person at a known company joins that company, and a gmail.com address never
makes everyone at Gmail one company.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from inboxcrm.core.match import ContactInfo, company_domain, match
from inboxcrm.values import Address, Email

TEAM = frozenset({"acme.example"})
FREEMAIL = frozenset({"gmail.com", "hostmail.example"})


@dataclass
class Records:
    """What the store would answer, held in dicts; implements ``match.Lookup``."""

    thread_deals: dict[str, int] = field(default_factory=dict)  # Message-ID -> its deal
    # Message-ID -> the deal of another message in its copy's Gmail thread (X-GM-THRID)
    gmail_thread_deals: dict[str, int] = field(default_factory=dict)
    contacts: dict[str, ContactInfo] = field(default_factory=dict)  # address -> contact
    open_deals_of: dict[int, list[int]] = field(default_factory=dict)  # contact id -> deals, most recent first
    companies: dict[str, int] = field(default_factory=dict)  # domain -> company id
    domains_asked: list[str] = field(default_factory=list)

    def deal_for_thread(self, message_ids):
        return next((self.thread_deals[m] for m in message_ids if m in self.thread_deals), None)

    def deal_for_gmail_thread(self, message_id):
        return self.gmail_thread_deals.get(message_id)

    def contact_for_address(self, address):
        return self.contacts.get(address)

    def open_deals(self, contact_id):
        return self.open_deals_of.get(contact_id, [])

    def company_for_domain(self, domain):
        self.domains_asked.append(domain)
        return self.companies.get(domain)


def email_from(sender: str, name: str = "", in_reply_to: tuple[str, ...] = ()) -> Email:
    return Email(message_id=f"<{len(sender)}@mail.example>", subject="Hello", from_=Address(sender, name),
                 to=(Address("sales@acme.example"),), in_reply_to=in_reply_to)


def match_sender(records: Records, sender: str, in_reply_to: tuple[str, ...] = ()):
    email = email_from(sender, in_reply_to=in_reply_to)
    return match(email, email.from_, records, TEAM, FREEMAIL)


def test_a_reply_in_a_deals_thread_joins_that_deal_before_the_senders_own_deal():
    records = Records(thread_deals={"<offer@acme.example>": 7},
                      contacts={"tom@northwind.example": ContactInfo(3, "alice")}, open_deals_of={3: [9]})
    found = match_sender(records, "tom@northwind.example", in_reply_to=("<offer@acme.example>",))
    assert (found.via, found.reason, found.deal_id) == ("thread", "thread", 7)
    assert found.contact == ContactInfo(3, "alice")  # still known: the store counts it on the contact


def test_a_reply_without_references_joins_the_deal_of_its_gmail_thread():
    """The prospect answered from their phone, whose mail app sent no In-Reply-To or References,
    and from a private address the CRM does not know: Gmail's thread still holds it."""
    email = email_from("tom.private@gmail.com")
    found = match(email, email.from_, Records(gmail_thread_deals={email.message_id: 7}), TEAM, FREEMAIL)
    assert (found.via, found.reason, found.deal_id) == ("thread", "gmail-thread", 7)


def test_gmail_thread_picks_the_deal_of_its_conversation_among_a_contacts_open_deals():
    records = Records(contacts={"tom@northwind.example": ContactInfo(3, "bob")}, open_deals_of={3: [12, 9]})
    email = email_from("tom@northwind.example")
    records.gmail_thread_deals[email.message_id] = 9
    found = match(email, email.from_, records, TEAM, FREEMAIL)
    assert (found.reason, found.deal_id, found.ambiguous) == ("gmail-thread", 9, False)


def test_the_headers_thread_comes_before_gmails_thread():
    """In-Reply-To names the very message answered; Gmail also threads by subject."""
    records = Records(thread_deals={"<offer@acme.example>": 7})
    email = email_from("tom@northwind.example", in_reply_to=("<offer@acme.example>",))
    records.gmail_thread_deals[email.message_id] = 8
    found = match(email, email.from_, records, TEAM, FREEMAIL)
    assert (found.reason, found.deal_id) == ("thread", 7)


def test_a_known_address_joins_its_open_deal_before_its_company():
    records = Records(contacts={"tom@northwind.example": ContactInfo(3, "bob")}, open_deals_of={3: [9]},
                      companies={"northwind.example": 5})
    found = match_sender(records, "tom@northwind.example")
    assert (found.via, found.reason, found.deal_id, found.company_id) == ("contact", "contact", 9, 5)
    assert not found.ambiguous


def test_several_open_deals_take_the_most_recent_and_name_the_others():
    records = Records(contacts={"tom@northwind.example": ContactInfo(3, None)}, open_deals_of={3: [12, 9, 4]})
    found = match_sender(records, "tom@northwind.example")
    assert (found.reason, found.deal_id, found.other_open_deals) == ("contact-ambiguous", 12, (9, 4))
    assert found.ambiguous


def test_a_known_contact_without_an_open_deal_is_no_deal_yet():
    records = Records(contacts={"tom@northwind.example": ContactInfo(3, "alice")})
    found = match_sender(records, "tom@northwind.example")
    assert (found.via, found.reason, found.deal_id, found.contact.owner) == ("contact", "contact-no-open-deal",
                                                                             None, "alice")


def test_a_new_person_at_a_known_company_joins_the_company_as_a_new_lead():
    found = match_sender(Records(companies={"northwind.example": 5}), "anna@northwind.example")
    assert (found.via, found.reason, found.deal_id, found.company_id) == ("company", "company", None, 5)


def test_a_company_is_its_registrable_domain():
    found = match_sender(Records(companies={"northwind.co.uk": 5}), "anna@mail.northwind.co.uk")
    assert (found.via, found.company_id, found.company_domain) == ("company", 5, "northwind.co.uk")


def test_nobody_known_is_a_new_lead_with_a_company_to_make():
    found = match_sender(Records(), "anna@northwind.example")
    assert (found.via, found.reason, found.deal_id, found.contact, found.company_id) == (
        "new", "new-lead", None, None, None)
    assert found.company_domain == "northwind.example"
    assert found.prospect == Address("anna@northwind.example")


def test_freemail_never_matches_a_company_by_domain():
    records = Records(companies={"gmail.com": 5})  # even when someone made one by hand
    found = match_sender(records, "tom.private@gmail.com")
    assert (found.via, found.company_id, found.company_domain) == ("new", None, None)
    assert records.domains_asked == []


def test_a_configured_freemail_domain_is_no_company_but_a_business_subdomain_of_it_is():
    assert company_domain(Address("a@hostmail.example"), TEAM, FREEMAIL) is None
    assert company_domain(Address("a@shop.hostmail.example"), TEAM, FREEMAIL) == "shop.hostmail.example"


def test_our_own_domain_and_its_subdomains_are_no_company():
    for sender in ("bob@acme.example", "bob@eu.acme.example"):
        assert company_domain(Address(sender), TEAM, FREEMAIL) is None


def test_a_team_domain_written_in_punycode_recognises_its_unicode_form():
    team = frozenset({"xn--mller-bau-q9a.de"})
    assert company_domain(Address("anna@müller-bau.de"), team, frozenset()) is None
