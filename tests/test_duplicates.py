"""Likely duplicates: the rules on plain values, the bound on the work, and ``contacts duplicates``."""
from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from inboxcrm.core.duplicates import (
    CompanyFacts,
    ContactFacts,
    canonical_mailbox,
    company_duplicates,
    company_key,
    contact_duplicates,
    duplicates,
    kept_contact_changes,
    person_key,
)
from inboxcrm.errors import Invalid

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TEAM = frozenset({"acme.example"})


def person(id: int, name: str, *addresses: str, days: int = 0) -> ContactFacts:
    return ContactFacts(id, name, addresses, T0 + timedelta(days=days or id))


def firm(id: int, name: str, domain: str, days: int = 0) -> CompanyFacts:
    return CompanyFacts(id, name, domain, T0 + timedelta(days=days or id))


def pairs(found) -> list[tuple]:
    return [(c.keep_id, c.merge_id, c.score, c.reasons) for c in found.candidates]


@pytest.mark.parametrize("address, canonical", [
    ("j.doe+crm@gmail.com", "jdoe@gmail.com"),
    ("j.d.o.e@googlemail.com", "jdoe@gmail.com"),
    ("jdoe@gmail.com", "jdoe@gmail.com"),
    ("ann+news@fastmail.com", "ann@fastmail.com"),
    ("ann.lee@northwind.example", "ann.lee@northwind.example"),  # dots matter outside Gmail
    ("+only@northwind.example", "+only@northwind.example"),
])
def test_canonical_mailbox(address, canonical):
    assert canonical_mailbox(address) == canonical


def test_keys_ignore_case_punctuation_order_and_legal_form():
    assert person_key("Doe, John") == person_key("john  DOE") == "doe john"
    assert company_key("ACME Gmbh.") == company_key("Acme") == company_key("The Acme Corp") == "acme"


def test_gmail_dots_tags_and_googlemail_are_one_person_whatever_the_names():
    found = contact_duplicates([person(1, "Jane", "jdoe@gmail.com"), person(2, "", "j.doe+crm@gmail.com"),
                                person(3, "J. D.", "jdoe@googlemail.com"), person(4, "Jane", "jane@gmail.com")])
    assert pairs(found) == [
        (1, 2, 100, ("gmail dots/+tag: j.doe+crm@gmail.com = jdoe@gmail.com",)),
        (1, 3, 100, ("gmail dots/+tag: jdoe@googlemail.com = jdoe@gmail.com",)),
    ]  # star from the oldest: the merges that clean the group, not every pair; jane@ is someone else


def test_a_tag_elsewhere_is_the_same_mailbox():
    found = contact_duplicates([person(1, "Ann", "ann@northwind.example"), person(2, "A", "ann+crm@northwind.example")])
    assert pairs(found) == [(1, 2, 100, ("+tag: ann+crm@northwind.example = ann@northwind.example",))]


def test_the_same_name_at_one_company_domain():
    found = contact_duplicates([
        person(1, "Jane Doe", "jane@northwind.example"),
        person(2, "Doe, Jane", "j.doe@mail.northwind.example"),  # a subdomain is the same company
        person(3, "Jane Doe", "jane@globex.example"),  # another company: a namesake
        person(4, "Jane Doe", "jane.doe@gmail.com"), person(5, "Jane Doe", "jd@yahoo.com"),  # freemail says nothing
        person(6, "Jane Doe", "jane@acme.example"),  # our own domain says nothing
        person(7, "", "info@northwind.example"),
    ], TEAM)
    assert pairs(found) == [(1, 2, 100, ("same name and company domain: Jane Doe at northwind.example",))]


def test_near_names_at_one_company_are_scored_by_rapidfuzz_and_cut_at_min_score():
    people = [person(1, "John Doe", "john@northwind.example"), person(2, "Jon Doe", "jd@northwind.example"),
              person(3, "Joan Dee", "joan@northwind.example"), person(4, "Mary Major", "mary@northwind.example")]
    assert pairs(contact_duplicates(people)) == [
        (1, 2, 93, ("names 93% alike at northwind.example: John Doe / Jon Doe",))]
    assert pairs(contact_duplicates(people, min_score=95)) == []
    # compared only within a block (company domain and a word of the name): Joan Dee shares no word
    # with John Doe, so even at 70 (they are 75% alike) the pair is not looked at
    found = contact_duplicates(people, min_score=70)
    assert [(a, b) for a, b, *_ in pairs(found)] == [(1, 2)] and found.comparisons == 1


def test_the_older_contact_is_the_one_to_keep():
    found = contact_duplicates([person(1, "Jane Doe", "jane@northwind.example", days=30),
                                person(2, "Jane Doe", "j.doe@northwind.example", days=3)])
    (c,) = found.candidates
    assert (c.keep_id, c.merge_id, c.command) == (2, 1, "inboxcrm contact merge 2 1")
    assert (c.keep, c.merge) == ("Jane Doe <j.doe@northwind.example>", "Jane Doe <jane@northwind.example>")


def test_companies_under_one_domain_several_suffixes_or_alike_names():
    found = company_duplicates([
        firm(1, "Acme", "acme.com"),
        firm(2, "Acme", "acme.de"),
        firm(3, "ACME Gmbh.", "acme-gruppe.de"),
        firm(4, "Acme Shop", "shop.acme.com"),
        firm(5, "Globex", "globex.com"),
        firm(6, "Shop", "shop.yahoo.co.jp"), firm(7, "Store", "store.yahoo.co.jp"),  # freemail hosting: apart
    ])
    assert pairs(found) == [
        (1, 2, 100, ("same name under several domains: acme.com / acme.de",)),
        (1, 3, 100, ("company names 100% alike: Acme / ACME Gmbh.",)),
        (1, 4, 100, ("one registrable domain acme.com: acme.com / shop.acme.com",)),
        (2, 3, 100, ("company names 100% alike: Acme / ACME Gmbh.",)),
    ]


def test_a_same_label_under_another_suffix_with_a_different_name_is_only_a_weak_hint():
    found = company_duplicates([firm(1, "Apple", "apple.com"), firm(2, "Apple Records", "apple.co.uk")], min_score=0)
    assert pairs(found) == [(1, 2, 56, ("same name under several domains: apple.com / apple.co.uk",))]
    assert company_duplicates([firm(1, "Apple", "apple.com"), firm(2, "Apple Records", "apple.co.uk")]).candidates == ()


def test_min_score_must_be_a_percentage():
    with pytest.raises(Invalid, match="--min-score 101: give a whole number from 0 to 100"):
        duplicates([], [], min_score=101)


def test_the_work_is_bounded_by_blocking_on_100000_contacts():
    """100,000 contacts at 2,000 company domains, names from 300 first and 300 last names: pairwise
    that is 5 * 10^9 comparisons; blocked it stays within a few hundred thousand, in seconds."""
    rng = random.Random(15)
    firsts = [f"First{i}" for i in range(300)]
    lasts = [f"Last{i}" for i in range(300)]
    people = [person(i, f"{rng.choice(firsts)} {rng.choice(lasts)}", f"p{i}@company{i % 2000}.example")
              for i in range(1, 100_001)]
    people.append(person(100_001, people[0].name, "other.address@" + people[0].addresses[0].split("@")[1]))
    started = time.perf_counter()
    found = contact_duplicates(people)
    took = time.perf_counter() - started
    assert found.comparisons < 1_000_000 and took < 60
    assert (1, 100_001) in {(c.keep_id, c.merge_id) for c in found.candidates}


def test_the_older_owner_stays_and_gaps_are_filled():
    kept = dict(first_seen=T0 + timedelta(days=9), owner_rep_id=1, source="manual", name="", company_id=None)
    merged = dict(first_seen=T0, owner_rep_id=2, source="fair", name="Jane", company_id=7)
    assert kept_contact_changes(kept, merged) == dict(first_seen=T0, owner_rep_id=2, source="fair", name="Jane",
                                                      company_id=7)
    assert kept_contact_changes(merged, kept) == {}  # the kept one is older and has it all
    assert "owner_rep_id" not in kept_contact_changes(kept, {**merged, "owner_rep_id": None})  # none to hand over
    assert kept_contact_changes({**merged, "owner_rep_id": None}, kept) == {"owner_rep_id": 1}  # the only owner


# -- the command line ------------------------------------------------------------------------------

def test_cli_lists_duplicates_with_why_score_and_the_merge_command(team):
    team("lead", "add", "--email", "jdoe@gmail.com", "--name", "Jane Doe")
    team("lead", "add", "--email", "j.doe+crm@googlemail.com", "--name", "Jane")
    team("lead", "add", "--email", "max@northwind.example", "--name", "Max")
    team("lead", "add", "--email", "eva@northwind.de", "--name", "Eva")
    out = team("contacts", "duplicates").stdout
    assert "100%  contact 1 Jane Doe <jdoe@gmail.com>  <-  contact 2 Jane <j.doe+crm@googlemail.com>" in out
    assert "gmail dots/+tag: j.doe+crm@googlemail.com = jdoe@gmail.com" in out
    assert "inboxcrm contact merge 1 2" in out
    assert "same name under several domains: northwind.example / northwind.de" in out
    assert "inboxcrm company merge 1 2" in out
    rows = json.loads(team("contacts", "duplicates", "--json").stdout)
    assert [(r["kind"], r["keep_id"], r["merge_id"], r["score"]) for r in rows] == [
        ("contact", 1, 2, 100), ("company", 1, 2, 100)]
    assert team("contacts", "duplicates", "--min-score", "100").stdout.count("%  ") == 2
    assert "--min-score" in team("contacts", "duplicates", "--min-score", "101", code=2).stderr
    team("contact", "merge", "1", "2")
    team("company", "merge", "northwind.example", "northwind.de")
    assert team("contacts", "duplicates").stdout.strip() == "no likely duplicates at --min-score 85"
