"""The pure heart of the pipeline: given a parsed message and what the records say, decide.

``decide`` takes values and a lookup, and returns a ``Decision`` with one reason code. It
never writes: the store applies the decision, so the same decision can be explained
(``rule explain``) without changing anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Callable, Protocol, Sequence

from inboxcrm.core import classify as classify_mod
from inboxcrm.core import sender_gate
from inboxcrm.core.forget import FORGOTTEN_DETAIL, FORGOTTEN_REASON, Forgotten
from inboxcrm.core.forms import form_prospect
from inboxcrm.core.match import Lookup, Match, match
from inboxcrm.core.rules import Routing, RuleSpec, evaluate
from inboxcrm.core.verbs import has_command
from inboxcrm.values import Address, Classification, Email, Explanation


@dataclass(frozen=True)
class MailboxInfo:
    id: int
    name: str
    role: str
    owner: str | None
    default_source: str
    policy: str  # create | review | ignore
    created_at: datetime | None = None  # mail dated before this is history (a first sync's backfill)


@dataclass(frozen=True)
class CommandSettings:
    """Commands by email: who may send them (the gate) and where they arrive."""

    gate: sender_gate.Gate
    has_commands_mailbox: bool  # else mail to the command address is read wherever it lands
    answers_per_hour: int = 30
    from_address: str = ""  # what our answers come from
    reply_addresses: dict[str, str] = field(default_factory=dict, hash=False)  # rep -> command address + token
    rep_zones: dict[str, tzinfo] = field(default_factory=dict, hash=False)  # rep -> time zone, for "today"


@dataclass(frozen=True)
class Context:
    """Everything a decision depends on besides the message and the records."""

    team: classify_mod.TeamContext
    rep_by_address: dict[str, str] = field(hash=False)
    rules: tuple[RuleSpec, ...] = ()
    freemail: frozenset[str] = frozenset()
    rep_ids: dict[str, int] = field(default_factory=dict, hash=False)
    stages: tuple[tuple[int, str, str], ...] = ()  # (id, name, kind) in pipeline order
    commands: CommandSettings | None = None  # None: commands by email are off, a tag is just text
    forgotten: Forgotten | None = None  # addresses erased by "contact forget"; None: nobody was
    # Contact addresses marked bouncing when the pass began, plus those the pass marks itself: the
    # intake clears a mark only for a sender in here, so an ordinary message costs no statement.
    bouncing: set[str] = field(default_factory=set, hash=False)

    @property
    def first_open(self) -> tuple[int, str]:
        return next((i, n) for i, n, kind in self.stages if kind == "open")


class DecisionLookup(Lookup, Protocol):
    def is_rejected_sender(self, address: str) -> bool: ...
    def recent_commands(self, address: str, minutes: int) -> int:
        """Command emails (obeyed or refused) from ``address`` received in the last ``minutes``."""
        ...
    def thread_outreach(self, message_ids: Sequence[str]) -> str | None:
        """The sender of a stored outbound message in the thread that joined no deal yet."""
        ...


# A command dated this long before its mailbox was added is history from the first backfill, not an
# order: a month of old "[D-42] stage:" mail must not replay. The slack covers clock skew.
HISTORY_SLACK = timedelta(hours=1)

# Folders whose mail is junk whatever it says (Takeout labels, a client's junk folder).
JUNK_FOLDERS = frozenset({"spam", "junk", "trash", "bin", "deleted items", "junk e-mail"})


@dataclass(frozen=True)
class Decision:
    """What to do with one message. ``status`` is what the message becomes in the store:
    processed | noise | internal | held | ignored | unmatched | quarantined."""

    status: str
    reason: str
    detail: str = ""
    classification: Classification | None = None
    direction: str | None = None  # inbound | outbound
    match: Match | None = None
    routing: Routing = Routing()
    sender_rep: str | None = None  # the rep who wrote an outbound message
    owner: str | None = None  # owner of a deal created by this message
    create_deal: bool = False
    explanations: tuple[Explanation, ...] = ()
    verdict: sender_gate.Verdict | None = None  # for a command email: obey or not, answer or not


def _first_external(addresses: tuple[Address, ...], team_domains: frozenset[str]) -> Address | None:
    return next((a for a in addresses if a.domain not in team_domains), None)


def decide(email: Email, mailbox: MailboxInfo, ctx: Context, lookup: DecisionLookup,
           force_create: bool = False, explain: bool = False, folder: str = "") -> Decision:
    """``explain`` also records every classification rule, fired or not (for ``rule explain``);
    ``folder`` is where the copy was found (a Spam or Trash folder makes it noise)."""
    routing = evaluate(ctx.rules, email, mailbox.name)
    notes = list(routing.explanations)

    def result(status: str, reason: str, detail: str = "", **kw) -> Decision:
        return Decision(status, reason, detail, routing=routing, explanations=tuple(notes), **kw)

    if ctx.forgotten is not None and ctx.forgotten.ignores(email.from_.email if email.from_ else None):
        return result("ignored", FORGOTTEN_REASON, FORGOTTEN_DETAIL)  # before anything reads more of it
    if folder.lower() in JUNK_FOLDERS:
        cls = Classification("spam", "junk-folder", f"found in the {folder} folder")
        notes.append(Explanation("classify", cls.reason, True, cls.detail))
        return result("noise", cls.reason, cls.detail, classification=cls)

    if ctx.commands is not None and (source := command_source(email, mailbox, ctx.commands, ctx.team, folder)):
        return _command(email, mailbox, ctx, lookup, source, folder, notes, explain, result)

    if routing.ignore:
        return result("ignored", "rule-ignore", f"rule {routing.ignore} says ignore")
    if routing.form:
        cls = Classification("prospect", "form", f"rule {routing.form} marks {email.from_.email} as a web form")
        prospect = form_prospect(email, ctx.team.team_domains)
        notes.append(Explanation("classify", "form", True, cls.detail))
        if prospect is None:
            return result("held", "form-without-prospect",
                          "a form notification naming no prospect address (Reply-To or an Email: field)",
                          classification=cls, direction="inbound")
    else:
        cls = classify_mod.classify(email, ctx.team)
        if explain:
            notes.extend(classify_mod.explain(email, ctx.team))
        else:
            notes.append(Explanation("classify", cls.reason, True, cls.detail))
        prospect = None
    if cls.is_noise:
        return result("noise", cls.reason, cls.detail, classification=cls)
    if cls.kind == "internal":
        return result("internal", cls.reason, cls.detail, classification=cls)

    if cls.kind == "outbound":
        direction = "outbound"
        sender_rep = ctx.rep_by_address.get(email.from_.email)
        prospect = _first_external(email.to, ctx.team.team_domains) or _first_external(email.cc, ctx.team.team_domains)
        if prospect is None:  # classify guarantees an external recipient; stay safe anyway
            return result("internal", "no-external-recipient", classification=cls)
    else:
        direction, sender_rep = "inbound", None
        prospect = prospect or cls.prospect or email.from_
    if ctx.forgotten is not None and ctx.forgotten.ignores(prospect.email):  # a rep's mail to them, a form naming them
        return result("ignored", FORGOTTEN_REASON, FORGOTTEN_DETAIL, direction=direction)

    found = match(email, prospect, lookup, ctx.team.team_domains, ctx.freemail)
    notes.append(Explanation("match", found.reason, True, _describe(found)))
    common = dict(classification=cls, direction=direction, match=found, sender_rep=sender_rep)
    if found.deal_id is not None:
        return result("processed", found.reason, _describe(found), **common)
    if direction == "outbound":
        return result("unmatched", "outbound-unmatched",
                      f"{sender_rep or email.from_.email} wrote to {prospect.email}, who has no open deal", **common)
    if found.contact is not None:
        owner = found.contact.owner  # the first rep to own a contact keeps it
        return result("processed", "returning-contact", "a known contact with no open deal: new deal",
                      owner=owner, create_deal=True, **common)
    if lookup.is_rejected_sender(prospect.email):
        return result("ignored", "sender-rejected", f"{prospect.email} was rejected in review", **common)
    outreach = lookup.thread_outreach(email.thread_ids) if email.thread_ids else None
    if outreach is not None:  # a rep wrote first: the answer is a lead whatever the mailbox policy
        owner = ctx.rep_by_address.get(outreach) or routing.owner or mailbox.owner
        return result("processed", "reply-to-outreach", f"{prospect.email} answered {outreach}'s email: new deal",
                      owner=owner, create_deal=True, **common)
    policy = "create" if force_create else ("review" if routing.review else mailbox.policy)
    if policy == "ignore":
        return result("ignored", "policy-ignore", f"mailbox {mailbox.name} ignores new senders", **common)
    if policy == "review":
        why = f"rule {routing.review}" if routing.review and not force_create else f"mailbox {mailbox.name} policy"
        return result("held", "policy-review", f"new sender {prospect.email} held for review by {why}", **common)
    owner = routing.owner or mailbox.owner
    return result("processed", found.reason, _describe(found), owner=owner, create_deal=True, **common)


@dataclass(frozen=True)
class SecondLook:
    """A copy of a stored message that is decided again where it arrives now, because the first
    copy's outcome (``reasons``) was right for the mailbox it arrived in, not for this one."""

    name: str
    description: str
    reasons: frozenset[str]
    takes_it: Callable[[MailboxInfo], bool]


SECOND_LOOKS = (
    SecondLook("capture-takes-held", "held or ignored by a rep's mailbox policy; a capture mailbox makes the lead",
               frozenset({"policy-review", "policy-ignore"}), lambda mailbox: mailbox.policy == "create"),
    SecondLook("commands-mailbox-obeys", "a command email stored first from another copy (the rep's Sent "
               "folder) is obeyed from the commands mailbox", frozenset({"command-copy"}),
               lambda mailbox: mailbox.role == "commands"),
    SecondLook("captured-elsewhere", "a prospect's mail refused in the commands mailbox (they wrote to crm@ "
               "and sales@) is captured from the other copy", frozenset({"refused-not-rep"}),
               lambda mailbox: mailbox.role != "commands"),
)


def second_look(first_reason: str | None, mailbox: MailboxInfo) -> SecondLook | None:
    """Whether a copy of a message already stored is decided again in ``mailbox``: the rule that
    says so, or None (the copy is a duplicate and changes nothing)."""
    return next((rule for rule in SECOND_LOOKS if first_reason in rule.reasons and rule.takes_it(mailbox)), None)


def own_sent_copy(email: Email, mailbox: MailboxInfo, settings: CommandSettings, folder: str) -> bool:
    """Found in the Sent folder of the sender's own mailbox: only that rep's login puts mail there."""
    sender = email.from_.email if email.from_ else ""
    return (folder == "Sent" and mailbox.role == "rep" and mailbox.owner is not None
            and settings.gate.rep_by_address.get(sender) == mailbox.owner)


def command_source(email: Email, mailbox: MailboxInfo, settings: CommandSettings,
                   team: classify_mod.TeamContext, folder: str = "") -> str | None:
    """Why a message is command mail: "mailbox" (it arrived in the commands mailbox),
    "addressed" (a rep wrote to the command address, and there is no commands mailbox to read
    it from), "copy" (the same, found elsewhere: the commands mailbox's copy is the one obeyed),
    "tagged" (a rep's mail among the team with "[D-42] verb" in the subject); None: not one.

    Mail a rep sends to a prospect stays the prospect's conversation, also with the command
    address in Cc or Bcc (a common way to log mail in a CRM). Nobody else's mail is command mail
    outside the commands mailbox: a prospect's "[D-42] won" to sales@ and crm@ is captured like
    any other message, and in the commands mailbox the gate refuses it.

    A tagged subject counts only where the sender can be vouched for (a trusted server's
    Authentication-Results, or the rep's own Sent folder): it reaches any rep's inbox, and
    anyone can write a rep's address in From."""
    sender = email.from_.email if email.from_ else ""
    is_rep = sender in settings.gate.rep_by_address
    among_team = all(a.domain in team.team_domains or a.email in team.rep_addresses for a in email.recipients)
    if mailbox.role == "commands":
        return None if is_rep and not among_team else "mailbox"
    if not (is_rep and among_team):
        return None
    if sender_gate.addressed_to_command(email, settings.gate.command_addresses):
        return "copy" if settings.has_commands_mailbox else "addressed"
    vouched = bool(settings.gate.trusted_authserv_ids) or own_sent_copy(email, mailbox, settings, folder)
    return "tagged" if vouched and has_command(email.subject) else None


def _command(email: Email, mailbox: MailboxInfo, ctx: Context, lookup: DecisionLookup, source: str, folder: str,
             notes: list[Explanation], explain: bool, result) -> Decision:
    settings = ctx.commands
    if source == "copy":
        return result("internal", "command-copy",
                      "a copy of a command email; the copy in the commands mailbox is the one obeyed",
                      classification=Classification("command", "command-copy"), direction="inbound")
    if email.date is not None and mailbox.created_at is not None and email.date < mailbox.created_at - HISTORY_SLACK:
        notes.append(Explanation("command", "command-history", True, "dated before the mailbox was added"))
        return result("ignored", "command-history",
                      f"a command email dated {email.date:%Y-%m-%d %H:%M} UTC, before mailbox {mailbox.name} was added: "
                      f"history from the first sync, not obeyed", classification=Classification("command", source),
                      direction="inbound")
    sender = email.from_.email if email.from_ else ""
    own_sent = own_sent_copy(email, mailbox, settings, folder)
    recent = lookup.recent_commands(sender, settings.gate.burst_window_minutes) if sender else 0
    verdict = sender_gate.check(email, settings.gate, recent, own_sent)
    if explain:
        notes.extend(sender_gate.explain(email, settings.gate, recent, own_sent))
    else:
        notes.append(Explanation("command", verdict.reason, True, verdict.detail))
    cls = Classification("command", f"command-{source}", f"command mail ({source})")
    return result("command" if verdict.obey else "refused", verdict.reason, verdict.detail,
                  classification=cls, direction="inbound", verdict=verdict)


def _describe(found: Match) -> str:
    if found.via == "thread":
        return f"reply in the thread of D-{found.deal_id}"
    if found.ambiguous:
        others = ", ".join(f"D-{d}" for d in found.other_open_deals)
        return f"{found.prospect.email} has several open deals; attached to the most recent D-{found.deal_id}, also {others}"
    if found.deal_id is not None:
        return f"{found.prospect.email} is a contact with open deal D-{found.deal_id}"
    if found.via == "company":
        return f"new contact at known company {found.company_domain}"
    if found.via == "contact":
        return f"{found.prospect.email} is a known contact without an open deal"
    return f"new lead {found.prospect.email}" + ("" if found.company_domain else " (no company: freemail or team domain)")
