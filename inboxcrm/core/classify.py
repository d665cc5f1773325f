"""Noise or direction: is a message machine mail, or who wrote it to whom.

Pure on purpose (stdlib and values only) so ``rule explain`` can replay it on any stored
message. The rules are a table of small named objects, as in GNU Mailman 3: the first one
that fires decides, and its ``name`` is the stable reason code stored with the message. Noise
rules come before direction rules, so a rep's own out-of-office reply to a prospect is noise,
not an outbound message that would touch a deal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from inboxcrm.values import NULL_SENDER, Address, Classification, Email, Explanation

KINDS = ("own", "bounce", "auto-reply", "spam", "list", "robot", "internal", "outbound", "prospect")


@dataclass(frozen=True)
class TeamContext:
    team_domains: frozenset[str]  # the team's own domains, lower-case
    rep_addresses: frozenset[str]  # active reps' addresses, lower-case
    own_header: str = "X-InboxCRM"  # header that marks mail inboxcrm itself sent


def _header_match(email: Email, checks: tuple[tuple[str, str], ...]) -> str | None:
    """'Name: value' of the first header whose value starts with its pattern (case-insensitive).

    An empty pattern means "present with any value"."""
    for name, pattern in checks:
        value = email.header(name)
        if value is not None and re.match(pattern, value.strip(), re.I):
            return f"{name}: {value.strip()}"[:120]
    return None


def _local(email: Email) -> str:
    return email.from_.email.rpartition("@")[0] if email.from_ else ""


def _is_team(address: Address, ctx: TeamContext) -> bool:
    return address.email in ctx.rep_addresses or address.domain in ctx.team_domains


def _outside(email: Email, ctx: TeamContext) -> list[str]:
    return [a.email for a in email.recipients if a.domain not in ctx.team_domains]


class Rule:
    name = ""
    description = ""
    kind = ""

    def check(self, email: Email, ctx: TeamContext) -> str | None:
        raise NotImplementedError

    def kind_for(self, email: Email) -> str:
        """The kind when the rule fires; only a rule whose header value decides overrides it."""
        return self.kind

    def prospect_for(self, email: Email, ctx: TeamContext) -> Address | None:
        """Who the prospect is when the rule fires and it is not From; only a relay knows another."""
        return None


class Own(Rule):
    name, kind = "own", "own"
    description = "The message carries inboxcrm's own header, so inboxcrm sent it and must not read it back as new mail."

    def check(self, email, ctx):
        return _header_match(email, ((ctx.own_header, ""),))


_DAEMON = r"mailer-daemon|postmaster"


class DeliveryStatus(Rule):
    name, kind = "delivery-status", "bounce"
    description = ("A delivery status notification (multipart/report; report-type=delivery-status), or mail from "
                   "a mailer-daemon or postmaster, or with the null sender (From: <>): a message could not be "
                   "delivered, or a mail system is talking.")

    def check(self, email, ctx):
        if email.content_type == "multipart/report" and email.report_type == "delivery-status":
            return "Content-Type: multipart/report; report-type=delivery-status"
        if email.from_ == NULL_SENDER:
            return "the null sender (From: <> or a bare MAILER-DAEMON): only delivery systems send it"
        if re.match(rf"(?:{_DAEMON})$", _local(email), re.I):
            return f"sent by {email.from_.email}, a mail system's address"
        return None


class AutoSubmitted(Rule):
    name, kind = "auto-submitted", "auto-reply"
    description = "RFC 3834 Auto-Submitted header with a value other than \"no\": a program wrote this, not a person."

    def check(self, email, ctx):
        return _header_match(email, (("Auto-Submitted", r"(?!no\s*(?:;|$))[^;\s]"),))


class AutoreplyHeaders(Rule):
    name, kind = "autoreply-headers", "auto-reply"
    description = ("An X-Autoreply, X-Autorespond or X-Autoresponder header, set by vacation programs; "
                   "X-Auto-Response-Suppress alone is not one, Outlook puts it on ordinary mail.")

    def check(self, email, ctx):
        return _header_match(email, (("X-Autoreply", ""), ("X-Autorespond", ""), ("X-Autoresponder", "")))


_OOO_PHRASES = (
    r"out of (?:the )?office", r"automatic reply", r"auto[- ]?reply", r"away from (?:the )?office", r"on vacation",
    r"abwesenheits?notiz", r"automatische antwort", r"abwesend",  # German
    r"absen(?:ce|t) du bureau", r"r[ée]ponse automatique",  # French
    r"respuesta autom[áa]tica", r"fuera de (?:la )?oficina",  # Spanish
    r"automatisch antwoord", r"afwezig(?:heid\w*)?",  # Dutch
    r"risposta automatica", r"fuori (?:dall')?ufficio",  # Italian
    r"resposta autom[áa]tica", r"ausente do escrit[óo]rio",  # Portuguese
    r"autosvar", r"fr[åa]nvaro",  # Swedish
    r"automatisk svar", r"frav(?:æ|ae)r(?:ende)?",  # Danish / Norwegian
)
# At the very start and as whole words: clients put the phrase first ("Automatic reply: <subject>"),
# while "Re: ..." means a person answered, and "our vacation rental" mid-subject is business.
_OUT_OF_OFFICE = re.compile(r"(?:%s)(?![^\W\d_])" % "|".join(_OOO_PHRASES), re.I)


class OutOfOffice(Rule):
    name, kind = "out-of-office", "auto-reply"
    description = ("The subject begins with an out-of-office phrase (English, German, French, Spanish, Dutch, "
                   "Italian, Portuguese, Swedish, Danish/Norwegian), for vacation programs that set no header.")

    def check(self, email, ctx):
        found = _OUT_OF_OFFICE.match(email.subject.strip())
        return f'subject begins "{found.group(0)}"' if found else None


class Precedence(Rule):
    name, kind = "precedence", "list"
    description = "Precedence: bulk or list marks mass mail (kind list); Precedence: junk marks an automatic reply."

    def check(self, email, ctx):
        return _header_match(email, (("Precedence", r"(?:bulk|junk|list)\b"),))

    def kind_for(self, email):
        return "auto-reply" if (email.header("precedence") or "").strip().lower().startswith("junk") else self.kind


class NullReturnPath(Rule):
    name, kind = "null-return-path", "bounce"
    description = ("Return-Path: <> (the null reverse-path of RFC 5321), which only automatic messages use "
                   "so that nothing answers them; a missing Return-Path means nothing.")

    def check(self, email, ctx):
        return _header_match(email, (("Return-Path", r"<\s*>$"),))


_ROBOT_LOCAL = re.compile(rf"(?:{_DAEMON}|no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)(?:[-+._].*)?$", re.I)


class RobotSender(Rule):
    name, kind = "robot-sender", "robot"
    description = "The sender is a machine address such as noreply@, no-reply+tag@, donotreply@, bounces@ or mailer-daemon@."

    def check(self, email, ctx):
        return f"sender {email.from_.email} is a robot address" if _ROBOT_LOCAL.match(_local(email)) else None


class MailingList(Rule):
    name, kind = "mailing-list", "list"
    description = "A List-Id or List-Unsubscribe header: a mailing list or newsletter, not a conversation."

    def check(self, email, ctx):
        return _header_match(email, (("List-Id", ""), ("List-Unsubscribe", "")))


class SpamVerdict(Rule):
    name, kind = "spam-verdict", "spam"
    description = ("A spam or virus filter upstream said so: X-Spam-Flag/X-Spam-Status/X-Spam/X-Spam-Verdict/"
                   "X-Barracuda-Spam-Status/X-Mailgun-Sflag yes, Amazon SES's X-SES-Spam-Verdict or "
                   "X-SES-Virus-Verdict FAIL, or Exchange's spam confidence level (SCL) 5 or more.")

    def check(self, email, ctx):
        return _header_match(email, (
            ("X-Spam-Flag", r"yes\b"), ("X-Spam-Status", r"yes\b"), ("X-Spam", r"(?:yes|spam)\b"),
            ("X-Spam-Verdict", r"yes\b"), ("X-Barracuda-Spam-Status", r"yes\b"), ("X-Mailgun-Sflag", r"yes\b"),
            ("X-SES-Spam-Verdict", r"fail\b"), ("X-SES-Virus-Verdict", r"fail\b"),
            ("X-MS-Exchange-Organization-SCL", r"(?:[5-9]|[1-9]\d+)$"),
        ))


def _capture_address(address: Address, ctx: TeamContext) -> bool:
    """A shared team address (sales@, team@): the team's domain, and no rep's own mailbox."""
    return address.domain in ctx.team_domains and address.email not in ctx.rep_addresses


def relayed_author(email: Email, ctx: TeamContext) -> Address | None:
    """The person a mailing list relayed to the team, or None when this is no such relay.

    Teams run sales@ as a Google Group: the group writes its own address in From and names the
    author in X-Original-From (else Reply-To). That is a prospect's mail when the list is marked
    as one (List-Id, Mailing-List or Precedence: list), it went to a shared team address (or the
    list itself is one), and the author is outside the team and no robot. A list the team merely
    reads (a newsletter, an open-source list) goes to no shared team address and stays noise."""
    if email.from_ is None or not (email.header("List-Id") or email.header("Mailing-List")
                                   or re.match(r"list\b", (email.header("Precedence") or "").strip(), re.I)):
        return None
    if not (any(_capture_address(a, ctx) for a in email.recipients) or _capture_address(email.from_, ctx)):
        return None
    replies = [a for a in email.reply_to if a.email != email.from_.email]
    author = email.original_from or (replies[0] if len(replies) == 1 else None)
    if author is None or _is_team(author, ctx) or _ROBOT_LOCAL.match(author.email.rpartition("@")[0]):
        return None
    return author


class ListRelay(Rule):
    name, kind = "list-relay", "prospect"
    description = ("A list such as a Google Group relayed a person's mail to a shared team address (sales@ run as "
                   "a group): the prospect is the author it names (X-Original-From, else Reply-To), not the list.")

    def check(self, email, ctx):
        author = relayed_author(email, ctx)
        return None if author is None else f"{email.from_.email} relayed mail from {author.email} to the team"

    def prospect_for(self, email, ctx):
        return relayed_author(email, ctx)


class Outbound(Rule):
    name, kind = "outbound", "outbound"
    description = "A rep (or another team address) wrote to at least one recipient outside the team's domains."

    def check(self, email, ctx):
        if email.from_ is None or not _is_team(email.from_, ctx) or not (outside := _outside(email, ctx)):
            return None
        who = "rep" if email.from_.email in ctx.rep_addresses else "team address"
        return f"{who} {email.from_.email} wrote to {', '.join(outside)}"


class Internal(Rule):
    name, kind = "internal", "internal"
    description = "A team sender wrote only to team addresses (or to nobody visible): colleagues talking, no prospect."

    def check(self, email, ctx):
        if email.from_ is None or not _is_team(email.from_, ctx) or _outside(email, ctx):
            return None
        to = ", ".join(a.email for a in email.recipients) or "no visible recipients"
        return f"{email.from_.email} wrote within the team ({to})"


# A spam verdict and the signs of a program come before the list relay, so a relayed auto-reply
# or spam stays noise; the relay comes before the list rules, which would call it list mail.
RULES: tuple[Rule, ...] = (
    Own(), DeliveryStatus(), AutoSubmitted(), AutoreplyHeaders(), OutOfOffice(), SpamVerdict(), ListRelay(),
    Precedence(), NullReturnPath(), RobotSender(), MailingList(), Outbound(), Internal(),
)


def classify(email: Email, ctx: TeamContext) -> Classification:
    for rule in RULES:
        detail = rule.check(email, ctx)
        if detail is not None:
            return Classification(rule.kind_for(email), rule.name, detail, rule.prospect_for(email, ctx))
    sender = email.from_.email if email.from_ else "an unknown sender"
    return Classification("prospect", "prospect", f"{sender} is not a machine, a list or the team: a prospect")


def explain(email: Email, ctx: TeamContext) -> list[Explanation]:
    """Every rule, fired or not, so a user sees both why and why not."""
    result = []
    for rule in RULES:
        detail = rule.check(email, ctx)
        result.append(Explanation("classify", rule.name, detail is not None, detail or ""))
    return result
