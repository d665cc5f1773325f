"""One stored form per address, companies by registrable domain: pure cases, then the pipeline
on SQLite and PostgreSQL, where a punycode and a Unicode From must end in one contact."""
from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from inboxcrm.app import deals
from inboxcrm.core import addresses
from inboxcrm.core.addresses import (
    company_name,
    normalize,
    normalize_domain,
    registrable_domain,
)
from inboxcrm.core.freemail import is_freemail
from inboxcrm.core.match import company_domain
from inboxcrm.store.db import transaction
from inboxcrm.store.models import Company, Contact, ContactAddress
from inboxcrm.values import Address

from .test_pipeline import CRM, NOW

MUELLER = "anna@müller-bau.example"


@pytest.mark.parametrize("written", [
    "anna@müller-bau.example",
    "anna@xn--mller-bau-q9a.example",  # the punycode of müller-bau, as an ASCII-only mailer writes it
    "ANNA@XN--MLLER-BAU-Q9A.EXAMPLE",
    "Anna@Müller-Bau.Example",
    "anna@mu\u0308ller-bau.example",  # decomposed ü, as typed on a Mac
    "anna@ｍüller-bau.example",  # full-width m, mapped by UTS-46
    " anna@müller-bau.example. ",  # a fully qualified domain and stray spaces
])
def test_every_spelling_of_an_idn_address_is_one_stored_form(written):
    assert normalize(written) == MUELLER


def test_the_registered_punycode_reads_as_the_stored_form():
    assert normalize_domain("xn--mller-bau-q9a.example") == "müller-bau.example"
    assert normalize_domain("r3---sn-abc.googlevideo.com") == "r3---sn-abc.googlevideo.com"
    assert normalize_domain("xn--fa-hia.de") == normalize_domain("faß.de") == "faß.de"  # IDNA 2008 keeps ß


def test_smtputf8_local_parts_are_lowercased_and_composed():
    assert normalize("Jürgen@Müller.de") == "jürgen@müller.de"
    assert normalize("ju\u0308rgen@example.com") == normalize("jürgen@example.com") == "jürgen@example.com"


@pytest.mark.parametrize("text", [
    "anna@b",  # one label: no registry issues it
    "anna b@example.com",
    "anna\x1b[2J@example.com",  # a terminal escape in the local part
    "anna@exa mple.com",
    "anna@@example.com",
    "@example.com",
    "anna@",
    "anna@-bau.example",
    "anna@bau_.example",
    "anna@xn--zz.example",  # not valid punycode
    "anna@😀.example",  # IDNA 2008 refuses symbols
    "anna@" + "a" * 64 + ".example",  # a label over 63 octets
    "a" * 65 + "@example.com",  # a local part over 64 octets
    "",
    None,
])
def test_unusable_addresses_are_none(text):
    assert normalize(text) is None


@pytest.mark.parametrize("text", ["r3@r3---sn-abc.googlevideo.com", "a.b+tag@sub.example.co.uk", "x@1.2.3.4"])
def test_ascii_host_names_that_receive_mail_stay_usable(text):
    """IDNA 2008 refuses hyphens in the third and fourth place, but such host names exist."""
    assert normalize(text) == text


@pytest.mark.parametrize("domain, name", [
    ("acme.co.uk", "Acme"),
    ("shop.acme.com.au", "Acme"),
    ("northwind-traders.example", "Northwind Traders"),
    ("xn--mller-bau-q9a.de", "Müller Bau"),
    ("acme.github.io", "Acme"),  # the list's private section: each github.io site is its owner's
    ("co.uk", "Co"),  # a bare public suffix still gets a name
])
def test_company_names_come_from_the_label_left_of_the_public_suffix(domain, name):
    assert company_name(domain) == name


TEAM = frozenset({"xn--bckerei-5wa.example", "acme.example"})  # bäckerei.example, configured in punycode


@pytest.mark.parametrize("address, expected", [
    ("ann@acme.co.uk", "acme.co.uk"),
    ("ann@mail.acme.co.uk", "acme.co.uk"),  # one company, however deep the mail host
    ("ann@shop.acme.com.au", "acme.com.au"),
    (MUELLER, "müller-bau.example"),
    ("ann@gmail.com", None),
    ("ann@acme.example", None),
    ("ann@eu.acme.example", None),  # our own subdomain is not a customer
    ("ann@shop.yahoo.co.jp", "shop.yahoo.co.jp"),  # hosted at a freemail provider: not the provider
])
def test_a_company_is_keyed_by_its_registrable_domain(address, expected):
    assert company_domain(Address(address), TEAM, frozenset()) == expected


def test_team_and_freemail_domains_match_in_either_spelling():
    assert company_domain(Address(normalize("bob@Bäckerei.example")), TEAM, frozenset()) is None
    assert is_freemail("MÜLLER-BAU.example", frozenset({"xn--mller-bau-q9a.example"}))
    assert is_freemail("xn--mller-bau-q9a.example", frozenset({"müller-bau.example"}))
    assert registrable_domain("mail.müller-bau.example") == "müller-bau.example"


def test_the_public_suffix_list_is_read_offline(monkeypatch):
    """A server without internet access (most of them) must name companies all the same."""
    def no_network(*args, **kwargs):
        raise AssertionError("the Public Suffix List must not be fetched")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    addresses._public_suffixes.cache_clear()
    assert registrable_domain("mail.acme.co.uk") == "acme.co.uk"


# -- through the pipeline, on both backends ----------------------------------------------------

def message(sender: str, number: int) -> bytes:
    """A prospect's first mail with its From written as given (raw UTF-8 is SMTPUTF8 mail)."""
    return (f"From: {sender}\r\nTo: sales@acme.example\r\nSubject: Anfrage {number}\r\n"
            f"Message-ID: <idn-{number}@mail.example>\r\nDate: Fri, 20 Nov 2026 10:0{number}:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWir brauchen ein Angebot.\r\n"
            ).encode("utf-8")


def test_a_punycode_and_a_unicode_sender_are_one_contact_at_one_company(factory):
    crm = CRM(factory)
    first, second, third = (crm.feed("", data=message(sender, n), location=f"test:idn:{n}") for n, sender in (
        (1, "Anna Müller <anna@xn--mller-bau-q9a.example>"),
        (2, "Anna Müller <Anna@Müller-Bau.example>"),
        (3, "Anna <anna@mail.xn--mller-bau-q9a.example>"),  # a colleague's host: same company
    ))
    assert (first.reason, second.reason, third.reason) == ("new-lead", "contact", "company")
    with factory() as s:
        assert s.scalars(select(ContactAddress.address).order_by(ContactAddress.id)).all() == [
            MUELLER, "anna@mail.müller-bau.example"]
        assert s.execute(select(Company.domain, Company.name)).all() == [("müller-bau.example", "Müller Bau")]
        assert len(s.scalars(select(Contact)).all()) == 2


def test_lead_add_finds_the_contact_that_mail_in_the_other_spelling_made(factory):
    crm = CRM(factory)
    crm.feed("", data=message("Anna Müller <anna@xn--mller-bau-q9a.example>", 1), location="test:idn:1")
    with transaction(factory) as s:
        added = deals.add_lead(s, NOW, "test", "Anna@Müller-Bau.example", team_domains=frozenset({"acme.example"}))
    assert (added.new_contact, added.address, added.company, added.other_open_deals) == (
        False, MUELLER, "Müller Bau", ("D-1",))
