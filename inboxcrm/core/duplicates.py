"""Likely duplicate contacts and companies, each pair with why and a similarity score.

A CRM fed by mail grows duplicates on its own: one person writes from ``j.doe+crm@gmail.com`` and
``jdoe@googlemail.com``, or from two company addresses under two display-name spellings; a
company arrives as ``acme.com`` and ``acme.de``, or is typed in an import as "ACME GmbH" next to
the "Acme" made from its domain. This module only proposes; a person merges (``contact merge``).

Names are compared by RapidFuzz (``token_sort_ratio``: word order and case do not matter), a
maintained C++ library, rather than a hand-written edit distance. The work is bounded by
blocking: only records that share a key (a mailbox's canonical form, a company domain with a
name word, a company name word) are compared, and a key shared by more than ``MAX_BLOCK``
records (a word like "solutions", a common first name at a large customer) is too unspecific
to compare all its members pairwise: exact matches within it are still found by grouping. So
100,000 contacts at 2,000 domains cost some 16,000 comparisons (about 3 s on the 2-core machine,
tests/test_duplicates.py), not 5 * 10^9.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from inboxcrm.core.addresses import registrable_domain
from inboxcrm.core.freemail import is_freemail
from inboxcrm.core.match import company_domain
from inboxcrm.errors import Invalid
from inboxcrm.values import Address

DEFAULT_MIN_SCORE = 85  # below this, names share words more than they name the same one
MAX_BLOCK = 100  # members of one key compared pairwise; more make the key too common to mean anything
CERTAIN = 100  # the score of a rule that is not a similarity: the same mailbox written two ways

# Gmail ignores dots in the local part, and googlemail.com is the same mailbox service.
GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

# Legal forms and filler words that say nothing about which company it is ("Acme GmbH" = "ACME").
LEGAL_FORMS = frozenset("""
    ab ag as asa bv co company corp corporation cv eg ek gbr gmbh group holding holdings inc
    incorporated kg kgaa limited llc llp lp ltd mbh nv oy oyj plc pte pty sa sae sarl sas se spa
    srl ug the
""".split())


@dataclass(frozen=True)
class ContactFacts:
    """What the rules read of a contact."""

    id: int
    name: str
    addresses: tuple[str, ...]
    first_seen: datetime


@dataclass(frozen=True)
class CompanyFacts:
    id: int
    name: str
    domain: str
    created_at: datetime


@dataclass(frozen=True)
class Candidate:
    """Two records that are likely one. ``keep_id`` is the older (first seen, then lower id):
    merging into it keeps the older owner, as ``contact merge`` would."""

    kind: str  # contact | company
    keep_id: int
    keep: str  # how a person recognises it: "Jane Doe <jane@acme.com>", "Acme (acme.com)"
    merge_id: int
    merge: str
    score: int  # 0..100, the highest of its reasons'
    reasons: tuple[str, ...]

    @property
    def command(self) -> str:
        return f"inboxcrm {self.kind} merge {self.keep_id} {self.merge_id}"


@dataclass(frozen=True)
class Found:
    candidates: tuple[Candidate, ...]
    comparisons: int  # fuzzy comparisons made: what blocking bounds


def canonical_mailbox(address: str) -> str:
    """The mailbox an address delivers to, as far as its provider's rules are known: Gmail drops
    dots and a ``+tag``, googlemail.com is gmail.com; elsewhere only a ``+tag`` is dropped (the
    sub-addressing of RFC 5233 that Fastmail, Outlook, Proton and most servers implement)."""
    local, _, domain = address.rpartition("@")
    base = local.split("+", 1)[0] or local
    if domain in GMAIL_DOMAINS:
        return f"{base.replace('.', '')}@gmail.com"
    return f"{base}@{domain}"


def _words(text: str) -> list[str]:
    return default_process(text or "").split()


def person_key(name: str) -> str:
    """A display name with case, punctuation and word order removed: "Doe, John" = "john DOE"."""
    return " ".join(sorted(_words(name)))


def company_key(name: str) -> str:
    """A company name without case, punctuation, word order and legal form: "ACME GmbH." = "Acme"."""
    return " ".join(sorted(w for w in _words(name) if w not in LEGAL_FORMS))


def similarity(a_key: str, b_key: str) -> int:
    """RapidFuzz's token-sort ratio of two keys, as a whole percentage."""
    return round(fuzz.token_sort_ratio(a_key, b_key))


class _Pairs:
    """The candidate pairs found so far, each once, with every reason and the best score."""

    def __init__(self, older: Callable[[int], tuple]):
        self.older = older
        self.found: dict[tuple[int, int], tuple[int, list[str]]] = {}
        self.comparisons = 0

    def add(self, a: int, b: int, score: int, reason: str) -> None:
        pair = (a, b) if self.older(a) <= self.older(b) else (b, a)
        best, reasons = self.found.get(pair, (0, []))
        if reason not in reasons:
            reasons.append(reason)
        self.found[pair] = (max(best, score), reasons)

    def has(self, a: int, b: int) -> bool:
        return (a, b) in self.found or (b, a) in self.found

    def star(self, members: Iterable[int], reason: Callable[[int, int], str]) -> None:
        """Members that are certainly one: each paired with the oldest, so a group of k makes k-1
        pairs (the merges that would clean it) rather than k^2/2."""
        ordered = sorted(set(members), key=self.older)
        for other in ordered[1:]:
            self.add(ordered[0], other, CERTAIN, reason(ordered[0], other))

    def fuzzy(self, blocks: dict[Hashable, list[int]], key: Callable[[int], str], min_score: int,
              reason: Callable[[int, int, int], str]) -> None:
        """Pairs within each block whose keys are at least ``min_score`` alike; blocks larger than
        MAX_BLOCK are skipped (their exact matches were grouped already)."""
        for members in blocks.values():
            if len(members) > MAX_BLOCK:
                continue
            for a, b in combinations(sorted(set(members)), 2):
                if self.has(a, b):
                    continue
                self.comparisons += 1
                score = fuzz.token_sort_ratio(key(a), key(b), score_cutoff=min_score)
                if score:
                    self.add(a, b, round(score), reason(a, b, round(score)))


def _contact_label(c: ContactFacts) -> str:
    address = c.addresses[0] if c.addresses else ""
    return f"{c.name} <{address}>" if c.name else address


def contact_duplicates(contacts: Sequence[ContactFacts], team_domains: frozenset[str] = frozenset(),
                       freemail: frozenset[str] = frozenset(), min_score: int = DEFAULT_MIN_SCORE) -> Found:
    """Contacts that are likely one person: the same mailbox written two ways (Gmail dots,
    ``+tags``, googlemail.com), or names alike at the same company domain (a freemail or the
    team's own domain says nothing about who someone works for, so it never counts)."""
    by_id = {c.id: c for c in contacts}
    pairs = _Pairs(lambda i: (by_id[i].first_seen, i))

    # the same mailbox: one group per canonical form; the reason names the two addresses
    mailboxes: dict[str, dict[int, str]] = defaultdict(dict)
    for c in contacts:
        for address in c.addresses:
            mailboxes[canonical_mailbox(address)].setdefault(c.id, address)
    for canonical, members in mailboxes.items():
        if len(members) < 2:
            continue
        what = "gmail dots/+tag" if canonical.endswith("@gmail.com") else "+tag"
        pairs.star(members, lambda a, b: f"{what}: {members[b]} = {members[a]}")

    # names at one company domain: exact names grouped, near names compared per (domain, word)
    keys = {c.id: person_key(c.name) for c in contacts}
    exact: dict[tuple[str, str], list[int]] = defaultdict(list)
    blocks: dict[tuple[str, str], list[int]] = defaultdict(list)
    companies: dict[str, str | None] = {}  # per mail domain: few domains, many addresses

    def company_of(address: str) -> str | None:
        domain = address.rpartition("@")[2]
        if domain not in companies:
            companies[domain] = company_domain(Address(address), team_domains, freemail)
        return companies[domain]

    for c in contacts:
        if not keys[c.id]:
            continue
        domains = {company_of(a) for a in c.addresses} - {None}
        for domain in domains:
            exact[(domain, keys[c.id])].append(c.id)
            for word in set(keys[c.id].split()):
                if len(word) > 1:
                    blocks[(domain, word)].append(c.id)
    for (domain, _), members in exact.items():
        if len(set(members)) > 1:
            pairs.star(members, lambda a, b, domain=domain: f"same name and company domain: {by_id[a].name} at {domain}")
    for (domain, _), members in blocks.items():
        pairs.fuzzy({domain: members}, keys.__getitem__, min_score,
                    lambda a, b, score, domain=domain:
                    f"names {score}% alike at {domain}: {by_id[a].name} / {by_id[b].name}")
    return _found("contact", pairs, min_score, lambda i: _contact_label(by_id[i]))


def company_duplicates(companies: Sequence[CompanyFacts], freemail: frozenset[str] = frozenset(),
                       min_score: int = DEFAULT_MIN_SCORE) -> Found:
    """Companies that are likely one: under one registrable domain (``mail.acme.com`` and
    ``acme.com``), the same name under several public suffixes (``acme.com``, ``acme.de``), or
    names alike once case, punctuation and legal form are set aside. Subdomains of a freemail
    provider (business hosting) are each their own company, as ``match.company_domain`` made them."""
    by_id = {c.id: c for c in companies}
    pairs = _Pairs(lambda i: (by_id[i].created_at, i))
    keys = {c.id: company_key(c.name) for c in companies}
    registrable: dict[str, list[int]] = defaultdict(list)
    labels: dict[str, list[int]] = defaultdict(list)
    words: dict[str, list[int]] = defaultdict(list)
    for c in companies:
        owned = registrable_domain(c.domain)
        if not is_freemail(owned, freemail):
            registrable[owned].append(c.id)
            labels[owned.split(".")[0]].append(c.id)
        for word in set(keys[c.id].split()):
            if len(word) > 1:
                words[word].append(c.id)
    for owned, members in registrable.items():
        if len(members) > 1:
            pairs.star(members, lambda a, b, owned=owned:
                       f"one registrable domain {owned}: {by_id[a].domain} / {by_id[b].domain}")
    # the same label under several suffixes is a hint, not proof (acme.com and acme.de may be
    # strangers): scored by how alike the names are
    pairs.fuzzy(labels, keys.__getitem__, 0,
                lambda a, b, score: f"same name under several domains: {by_id[a].domain} / {by_id[b].domain}")
    pairs.fuzzy(words, keys.__getitem__, min_score,
                lambda a, b, score: f"company names {score}% alike: {by_id[a].name} / {by_id[b].name}")
    return _found("company", pairs, min_score, lambda i: f"{by_id[i].name} ({by_id[i].domain})")


def _found(kind: str, pairs: _Pairs, min_score: int, label: Callable[[int], str]) -> Found:
    candidates = [Candidate(kind, a, label(a), b, label(b), score, tuple(reasons))
                  for (a, b), (score, reasons) in pairs.found.items() if score >= min_score]
    candidates.sort(key=lambda c: (-c.score, c.keep_id, c.merge_id))
    return Found(tuple(candidates), pairs.comparisons)


def duplicates(contacts: Sequence[ContactFacts], companies: Sequence[CompanyFacts],
               team_domains: frozenset[str] = frozenset(), freemail: frozenset[str] = frozenset(),
               min_score: int = DEFAULT_MIN_SCORE) -> Found:
    """Both kinds, contacts first, each kind best score first."""
    if not 0 <= min_score <= 100:
        raise Invalid(f"--min-score {min_score}: give a whole number from 0 to 100 (default {DEFAULT_MIN_SCORE})")
    people = contact_duplicates(contacts, team_domains, freemail, min_score)
    firms = company_duplicates(companies, freemail, min_score)
    return Found(people.candidates + firms.candidates, people.comparisons + firms.comparisons)


# -- what a merge keeps ----------------------------------------------------------------------

def kept_contact_changes(kept: dict, merged: dict) -> dict:
    """The fields of the kept contact a merge changes, given both rows' values.

    Deal registration: the contact first seen earlier was first found by its owner, so the
    merged pair keeps that owner (and that first sighting and source), whichever of the two
    is kept; an owner, name or company the kept row lacks is taken from the other."""
    older, younger = (merged, kept) if merged["first_seen"] < kept["first_seen"] else (kept, merged)
    wanted = {
        "first_seen": older["first_seen"],
        "owner_rep_id": older["owner_rep_id"] if older["owner_rep_id"] is not None else younger["owner_rep_id"],
        "source": older["source"] or younger["source"],
        "name": kept["name"] or merged["name"],
        "company_id": kept["company_id"] if kept["company_id"] is not None else merged["company_id"],
    }
    return {field: value for field, value in wanted.items() if value != kept[field]}


def kept_company_changes(kept: dict, merged: dict) -> dict:
    """The kept company was known since the earlier of the two; its name and domain stay."""
    return {"created_at": merged["created_at"]} if merged["created_at"] < kept["created_at"] else {}
