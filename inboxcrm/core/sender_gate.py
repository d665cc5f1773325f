"""Who may command inboxcrm by email: only a rep, provably, once, and never our own mail.

A command changes deals, so a From address alone is not enough: anyone can write "From: alice".
A fresh command must prove itself as the admin chose ([commands] proof): the receiving server's
Authentication-Results (RFC 8601) say whether DMARC, DKIM or SPF vouch for the sender's domain,
and the rep's reply token (``reply_token``) shows the mail went to the rep's personal command
address. With nothing configured only the token counts, so the gate fails closed; a failing
verdict of a trusted server refuses whatever else the mail brings. A reply to a digest must bring
back the rep's token in any mode. Pure, like ``classify``: the caller loads the reps, tokens and
the sender's recent count, so ``rule explain`` replays the same decision on a stored message.

The checks are a table of small named objects run in order; the first refusal decides and its
``name`` is the stable reason code. A refusal's answer, when one is allowed at all, goes to the
rep's address from our records, never to a Reply-To the message names, never to an unknown
sender and never after a trusted server's failing verdict: inboxcrm must not become a source of
backscatter. A mail that merely lacks proof is answered, since the answer reaches only the real
rep, who may have sent it and can send it again with the proof.
"""
from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import getaddresses
from typing import NamedTuple

from inboxcrm.core.auth_results import AuthResult, authenticate
from inboxcrm.core.classify import RULES, Own, TeamContext
from inboxcrm.values import NOISE_KINDS, Email, Explanation

# The Message-IDs inboxcrm gives its digests, nudges and answers, as inboxcrm.app.outbox.message_id_for
# writes them: "<{kind}.{32 hex}@{domain}>". Email.message_id and Email.thread_ids carry them
# without the angle brackets. Kept here because outbox is an adapter the pure core cannot import.
OUR_MESSAGE_ID = re.compile(r"(?:digest|nudge|reply)\.[0-9a-f]{32}@", re.I)
TOKEN_HEADER = "X-InboxCRM-Token"  # for scripts that cannot use plus addressing
_DELIVERY_HEADERS = ("delivered-to", "x-original-to")  # set by the receiving server: see a Bcc'd address
_TOKEN_NOT_ONE = ","  # joins distinct tokens found in one mail: base32 has no comma, so it matches no rep


# -- our mail, replies and the token --------------------------------------------------------------

def _ours(message_id: str) -> bool:
    return OUR_MESSAGE_ID.match(message_id.strip().strip("<>")) is not None


def reply_to_us(email: Email) -> bool:
    """The message answers a digest, nudge or answer of ours (In-Reply-To or References)."""
    return any(_ours(mid) for mid in email.thread_ids)


def _to_command(email: Email, command_addresses: frozenset[str]) -> list[str]:
    """The ``+`` detail ("" for none) of every command address the message went to: To, Cc, and
    Delivered-To / X-Original-To, which the receiving server sets, so a Bcc counts too."""
    commands = frozenset(a.strip().lower() for a in command_addresses)
    addresses = [a.email for a in email.recipients]
    for name in _DELIVERY_HEADERS:
        addresses += [address for _, address in getaddresses(list(email.header_all(name)))]
    details = []
    for address in addresses:
        address = address.strip().strip("<>").lower()
        if address in commands:
            details.append("")
            continue
        local, _, domain = address.rpartition("@")
        base, plus, detail = local.rpartition("+")
        if plus and f"{base}@{domain}" in commands:
            details.append(detail)
    return details


def addressed_to_command(email: Email, command_addresses: frozenset[str]) -> bool:
    """The message went to a command address, with or without a token (plus addressing)."""
    return bool(_to_command(email, command_addresses))


def token_in(email: Email, command_addresses: frozenset[str]) -> str | None:
    """The reply token the message carries: the ``+`` detail of a command address (see
    ``_to_command``), or the X-InboxCRM-Token header. Distinct tokens in one mail are returned
    joined by a comma, which matches no rep's token: a mail cannot carry two credentials."""
    found = [detail for detail in _to_command(email, command_addresses) if detail]
    found += [value.strip().lower() for value in email.header_all(TOKEN_HEADER) if value.strip()]
    distinct = list(dict.fromkeys(found))
    return _TOKEN_NOT_ONE.join(distinct) if distinct else None


def _same_token(found: str, expected: str | None) -> bool:
    """Constant time, so a sender cannot learn a token a character at a time."""
    return expected is not None and hmac.compare_digest(found.encode("utf-8"), expected.lower().encode("utf-8"))


# -- the gate ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gate:
    """Everything the check depends on besides the message."""

    team: TeamContext  # team domains and rep addresses, for the classifier's noise rules
    rep_by_address: Mapping[str, str]  # active rep address (lower-case) -> rep name
    tokens: Mapping[str, str]  # rep name -> the rep's current token
    command_addresses: frozenset[str]  # bare command address(es), lower-case
    own_addresses: frozenset[str]  # addresses inboxcrm sends from, lower-case
    trusted_authserv_ids: frozenset[str] = frozenset()
    # What a command must prove besides the rep's address ([commands] proof, as config reads it).
    # Neither required: a trusted pass or the token will do; address_only: nothing at all.
    auth_required: bool = False  # a trusted server's pass, or the rep's own Sent folder
    token_required: bool = False  # the rep's reply token
    address_only: bool = False  # the admin's explicit opt-out: the From address alone
    proof_text: str = "a command email needs the rep's reply token"  # config's describe(), told in refusals
    burst_limit: int = 20  # command mails per sender per window
    burst_window_minutes: int = 60


@dataclass(frozen=True)
class Verdict:
    obey: bool
    reason: str  # "accepted" or the refusing check's name
    detail: str  # one sentence for logs and `rule explain`; never contains a token
    rep: str | None  # the rep the From address belongs to, if any
    answer: bool  # True only when a reply may go to the rep's own address (a verified rep)


@dataclass(frozen=True)
class Case:
    """One message in front of the gate, with what several checks need worked out once."""

    email: Email
    gate: Gate
    recent_from_sender: int
    via_own_sent: bool
    sender: str  # the From address, lower-case; "" when there is none
    rep: str | None
    auth: AuthResult
    token: str | None  # the reply token the mail carries (see token_in); Token judges whose it is

    @property
    def authenticated(self) -> bool:
        """A trusted server vouched for the sender, or only the rep's own login could have put it where it was."""
        return self.via_own_sent or self.auth.verdict == "pass"


class Finding(NamedTuple):
    refused: bool
    detail: str


class Check:
    name = ""
    description = ""
    answers = False  # may a refusal be answered (to the rep's stored address)?

    def check(self, case: Case) -> Finding:
        raise NotImplementedError

    def answer_for(self, case: Case) -> bool:
        return self.answers


_OWN_HEADER = Own()  # the classifier's rule: one definition of "carries our header"


class OwnMail(Check):
    name = "refused-own"
    description = ("The message looks like inboxcrm's own mail (its X-InboxCRM header, a From address inboxcrm "
                   "sends from, or one of our Message-IDs): obeying it could loop.")

    def check(self, case):
        email = case.email
        if (found := _OWN_HEADER.check(email, case.gate.team)) is not None:
            return Finding(True, f"it carries inboxcrm's own header ({found})")
        if case.sender and case.sender in case.gate.own_addresses:
            return Finding(True, f"the sender {case.sender} is an address inboxcrm sends from")
        if _ours(email.message_id):
            return Finding(True, f"its Message-ID {email.message_id[:100]} has the form inboxcrm gives its own mail")
        return Finding(False, "no X-InboxCRM header, not from an address inboxcrm sends from, "
                              "not one of our Message-IDs")


class Automatic(Check):
    name = "refused-automatic"
    description = ("A noise rule of the classifier fires (auto-reply, bounce, mailing list, robot sender, spam): "
                   "a program wrote this, and a program's mail is never a command.")

    def check(self, case):
        for rule in RULES:
            if rule.kind in NOISE_KINDS and (found := rule.check(case.email, case.gate.team)) is not None:
                return Finding(True, f"automatic mail, classifier rule {rule.name}: {found}")
        return Finding(False, "no noise rule of the classifier fires")


class NotRep(Check):
    name = "refused-not-rep"
    description = "The From address is not an active rep's address; a display name proves nothing."

    def check(self, case):
        email = case.email
        if email.from_ is None:
            return Finding(True, "the message has no From address; only an active rep's address may send commands")
        if case.rep is None:
            name = email.from_.name[:80]
            shown = f' (display name "{name}"; only the address identifies a rep)' if name else ""
            return Finding(True, f"the sender {case.sender} is not an active rep's address{shown}")
        return Finding(False, f"{case.sender} is the address of rep {case.rep}")


class FailedAuth(Check):
    name = "refused-failed-auth"
    description = ("The receiving server we trust checked the sender's domain and it did not pass (DMARC, or "
                   "DKIM/SPF aligned with the From domain): the From address may be forged. This refuses whatever "
                   "else the mail brings, a valid reply token or the rep's own Sent folder included.")

    def check(self, case):
        if case.auth.verdict == "fail":
            return Finding(True, f"the sender's domain failed authentication at the receiving server "
                                 f"({case.auth.detail})")
        if case.auth.verdict == "pass":
            return Finding(False, case.auth.detail)
        if case.via_own_sent:
            return Finding(False, f"found in the Sent folder of {case.rep or 'the sender'}'s own mailbox, "
                                  "where only their login puts mail")
        return Finding(False, f"unauthenticated: {case.auth.detail}")


class Unproven(Check):
    name = "refused-unproven"
    description = ("The mail does not prove it came from the rep as [commands] proof asks: a trusted server's "
                   "pass (or the rep's own Sent folder), the rep's reply token, or both. By default either will "
                   "do, and with no trusted server configured only the token.")
    answers = True  # to the rep's stored address, with what would have been accepted: the rep can retry

    def check(self, case):
        gate = case.gate
        if gate.address_only:
            return Finding(False, '[commands] proof = "address-only": the From address alone is trusted')
        auth = case.authenticated
        token = case.token is not None  # whether it is the rep's current one is Token's question
        auth_counts = gate.auth_required or not gate.token_required  # "token" mode: a pass alone does nothing
        token_counts = gate.token_required or not gate.auth_required
        if gate.auth_required or gate.token_required:
            proven = (auth or not gate.auth_required) and (token or not gate.token_required)
        else:
            proven = auth or token
        if proven:
            shown = [("the rep's own Sent folder" if case.via_own_sent else "a trusted server's pass") if auth else "",
                     "a reply token" if token else ""]
            return Finding(False, "proved by " + " and ".join(filter(None, shown)))
        lacking = [f"no pass from a trusted server ({case.auth.detail})" if auth_counts and not auth else "",
                   "no reply token" if token_counts and not token else ""]
        return Finding(True, f"{' and '.join(filter(None, lacking))}: {gate.proof_text}")


class Burst(Check):
    name = "refused-burst"
    description = ("More command mails from one sender within the window than burst_limit: a loop or a flood. "
                   "Only the first mail over the limit is answered.")

    def check(self, case):
        gate, count = case.gate, case.recent_from_sender + 1
        within = f"{count} command mails from {case.sender or 'this sender'} within {gate.burst_window_minutes} minutes"
        if count > gate.burst_limit:
            return Finding(True, f"{within}, more than the limit of {gate.burst_limit}; the rest of the window is "
                                 "ignored, one at a time commands work again after it")
        return Finding(False, f"{within}, the limit is {gate.burst_limit}")

    def answer_for(self, case):
        return case.recent_from_sender == case.gate.burst_limit  # a flood gets one answer, not one per mail


class Token(Check):
    name = "refused-token"
    description = ("A reply to our digest or nudge must carry the rep's reply token (in the reply-to address or "
                   "the X-InboxCRM-Token header), and any token a mail carries must be the rep's current one.")
    answers = True  # the sender is a verified rep address; the answer goes to that rep's stored address

    def check(self, case):
        gate = case.gate
        found = case.token
        replying = reply_to_us(case.email)
        remedy = f"reply to a recent digest, or write a fresh command ({gate.proof_text})"
        if found is None and replying:
            return Finding(True, f"this replies to our mail but carries no reply token (the digest's Reply-To "
                                 f"address holds it, and this mail was not sent to it); {remedy}")
        if found is not None and not _same_token(found, gate.tokens.get(case.rep) if case.rep else None):
            whose = f"{case.rep}'s current one" if case.rep else "any rep's"
            return Finding(True, f"the reply token does not match {whose} (it may be from an older digest or another "
                                 f"rep's); {remedy}")
        if found is not None:
            return Finding(False, f"the reply token matches {case.rep}'s")
        return Finding(False, "no reply token, and not a reply to our mail: none needed")


CHECKS: tuple[Check, ...] = (OwnMail(), Automatic(), NotRep(), FailedAuth(), Unproven(), Burst(), Token())


def _case(email: Email, gate: Gate, recent_from_sender: int, via_own_sent: bool) -> Case:
    sender = email.from_.email.strip().lower() if email.from_ else ""
    rep = gate.rep_by_address.get(sender) if sender else None
    return Case(email, gate, recent_from_sender, via_own_sent, sender, rep,
                authenticate(email, gate.trusted_authserv_ids), token_in(email, gate.command_addresses))


def check(email: Email, gate: Gate, recent_from_sender: int, via_own_sent: bool = False) -> Verdict:
    """Obey or refuse, and whether the rep may be told. ``recent_from_sender``: command mails
    already received from this From address within the window; this one makes one more."""
    case = _case(email, gate, recent_from_sender, via_own_sent)
    passed = []
    for rule in CHECKS:
        finding = rule.check(case)
        if finding.refused:
            return Verdict(False, rule.name, finding.detail, case.rep, rule.answer_for(case))
        passed.append((rule, finding.detail))
    told = "; ".join(detail for rule, detail in passed if isinstance(rule, (NotRep, FailedAuth, Unproven, Token)))
    return Verdict(True, "accepted", told, case.rep, True)


def explain(email: Email, gate: Gate, recent_from_sender: int, via_own_sent: bool = False) -> list[Explanation]:
    """Every check, fired or not, in order; the first that fired decided."""
    case = _case(email, gate, recent_from_sender, via_own_sent)
    return [Explanation("command", rule.name, *rule.check(case)) for rule in CHECKS]
