"""Who may command by email, proved through the real pipeline: tables of attacks, each a raw
message (or a few) imported into a mailbox of a test database, on both backends.

Each row says what the message becomes (status and reason), which answers go out, and how deal
D-1 looks afterwards. The first table runs under the default configuration, as a new user has
it: a command address and nothing under [commands]. The others name the team's receiving server
as trusted, and try each [commands] proof. The positive controls in the same tables (a command
with the rep's own token, a reply with the right token) show that the refusals come from the
gate, not from a feature that obeys nobody. Whatever a row does, no answer ever goes to anyone
but a rep: inboxcrm must not send backscatter.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes

import pytest

from .test_commands_e2e import (
    ALICE,
    CRM,
    REP_ADDRESSES,
    answers,
    command_mail,
    deal,
    enable_commands,
    import_mail,
    outbox_rows,
    reply_token,
    stored,
)

TRUSTED = "mx.acme.example"
TRUSTING = f'trusted_authserv_ids = ["{TRUSTED}"]'  # the [commands] line naming the team's server
PASS = f"Authentication-Results: {TRUSTED}; dkim=pass header.d=acme.example; dmarc=pass header.from=acme.example"
FAIL = f"Authentication-Results: {TRUSTED}; spf=fail smtp.mailfrom=acme.example; dmarc=fail (p=reject) " \
       f"header.from=acme.example"
EVIL_REPLY_TO = "Reply-To: Collector <collector@evil.example>"
DONE, NOT_OBEYED = "inboxcrm: done (D-1)", "inboxcrm: not obeyed"
OBEYED = ("command", "command-applied")


class World:
    """What a row's messages are built from: the reps' reply tokens, alice's digest, our answers."""

    def __init__(self, cli, factory):
        self.factory = factory
        self.old_token = reply_token(cli, "alice")  # from a digest before `rep token alice --rotate`
        cli("rep", "token", "alice", "--rotate")
        self.token = {rep: reply_token(cli, rep) for rep in ("alice", "bob")}
        cli("digest", "send", "alice")  # queued (no SMTP here): what alice replies to
        self.digest = next(row for row in outbox_rows(factory) if row.kind == "digest")

    def to(self, token: str) -> str:
        """The command address with ``token``: where a reply to our mail goes."""
        return f"crm+{token}@acme.example"

    def reply_to_digest(self, message_id: str, to: str, body: str = "[D-1] won", headers: str = PASS) -> bytes:
        quoted = "\r\n".join(f"> {line}" for line in self.digest.text.splitlines()[:20])
        return command_mail(message_id, f"Re: {self.digest.subject}", f"{body}\r\n\r\nOn Monday inboxcrm wrote:\r\n"
                            f"{quoted}", to=to, headers=f"In-Reply-To: {self.digest.message_id}\r\n"
                                                        f"References: {self.digest.message_id}\r\n{headers}")

    def our_last_answer(self) -> bytes:
        return answers(self.factory)[-1].body


Build = Callable[[World], bytes]


@dataclass(frozen=True)
class Attack:
    name: str
    mails: tuple[tuple[str, Build], ...]  # (mailbox, message), imported one after another
    expect: tuple[tuple[str, str], ...]  # (status, reason) of each mail's message at the end
    answers: tuple[str, ...] = ()  # subjects of the answers queued, in order; each to alice's own address
    changed: dict = field(default_factory=dict)  # fields of "deal show D-1 --json" that must change, to what
    commands: str | None = TRUSTING  # the [commands] settings; None: no [commands] section at all
    says: str = ""  # the last mail's detail contains this: the refusal says what was wrong
    commands_mailbox: bool = True  # else command mail is read where it lands (the "sales" mailbox here)


def crm(build: Build) -> tuple[str, Build]:
    return ("crm", build)


def plain(message_id: str, subject: str = "[D-1] won", body: str = "", sender: str = ALICE, to: str = CRM,
          headers: str = PASS) -> Build:
    return lambda w: command_mail(message_id, subject, body, sender=sender, to=to, headers=headers)


def with_token(message_id: str, token: Callable[[World], str], headers: str = "", subject: str = "[D-1] won") -> Build:
    """A fresh command (no reply to our mail) to the command address with ``token`` in it."""
    return lambda w: command_mail(message_id, subject, to=w.to(token(w)), headers=headers)


def alices(w: World) -> str:
    return w.token["alice"]


PROSPECT = "Nora Field <nora@fieldworks.example>"
PROSPECT_PASS = f"Authentication-Results: {TRUSTED}; dmarc=pass header.from=fieldworks.example"
PROSPECT_WON = plain("won@fieldworks.example", body="[D-1] won\r\n\r\nWe accept your offer, please send the contract.",
                     sender=PROSPECT, to="sales@acme.example", headers=f"Cc: {CRM}\r\n{PROSPECT_PASS}")
UNTRUSTED_PASS = "Authentication-Results: mx.evil.example; dmarc=pass header.from=acme.example"
UNPROVEN = ("refused", "refused-unproven")
BURST = [plain(f"burst-{i}", f"[D-1] note: call {i}", headers=f"{PASS}\r\n{EVIL_REPLY_TO}") for i in (1, 2, 3)] + [
    plain("burst-4", "[D-1] won", headers=f"{PASS}\r\n{EVIL_REPLY_TO}"),
    plain("burst-5", "[D-1] value: 1", headers=f"{PASS}\r\n{EVIL_REPLY_TO}")]

ATTACKS = [
    # Positive controls: the gate lets a real rep through, so every refusal below is the gate's doing.
    Attack("control: a rep's command with the trusted server's DMARC pass",
           (crm(plain("genuine")),), (OBEYED,), (DONE,), {"stage": "Won", "stage_kind": "won"}),
    Attack("control: a rep's reply to her digest with her own token",
           (crm(lambda w: w.reply_to_digest("genuine-reply", w.to(w.token["alice"]))),), (OBEYED,),
           (DONE,), {"stage": "Won", "stage_kind": "won"}),

    Attack("a sender who is no rep",
           (crm(plain("mallory", sender="Mallory <mallory@evil.example>", headers="")),),
           (("refused", "refused-not-rep"),), says="mallory@evil.example is not an active rep's address"),
    Attack("display-name spoofing: Alice at another address",
           (crm(plain("spoof", sender="Alice <alice.smith@evil.example>",
                      headers="Authentication-Results: mx.acme.example; dmarc=pass header.from=evil.example")),),
           (("refused", "refused-not-rep"),), says='display name "Alice"'),
    Attack("a forged From: the trusted server says DMARC fail",
           (crm(plain("dmarc-fail", headers=FAIL)),), (("refused", "refused-failed-auth"),), says="dmarc=fail"),
    Attack("a forged pass under the sender's own authserv-id, below the trusted server's fail",
           (crm(plain("forged-own-id", headers=f"{FAIL}\r\nAuthentication-Results: mail.evil.example; "
                                                f"dmarc=pass header.from=acme.example")),),
           (("refused", "refused-failed-auth"),)),
    Attack("a forged pass with the trusted authserv-id, below the real server's fail on top",
           (crm(plain("forged-trusted-id", headers=f"{FAIL}\r\n{PASS}")),), (("refused", "refused-failed-auth"),)),
    Attack("only an untrusted server says pass, and no token",
           (crm(plain("untrusted-pass", headers=UNTRUSTED_PASS)),), (UNPROVEN,), (NOT_OBEYED,),
           says=f"no pass from a trusted server (no Authentication-Results header from a trusted server ({TRUSTED})) "
                "and no reply token"),
    Attack("no Authentication-Results at all, and no token", (crm(plain("bare", headers="")),), (UNPROVEN,),
           (NOT_OBEYED,)),
    Attack("control: no Authentication-Results, but the rep's own token", (crm(with_token("bare-token", alices)),),
           (OBEYED,), (DONE,), {"stage": "Won", "stage_kind": "won"}),
    Attack("the rep's own token, but the trusted server says DMARC fail",
           (crm(with_token("token-dmarc-fail", alices, headers=FAIL)),), (("refused", "refused-failed-auth"),),
           says="dmarc=fail"),

    # A prospect's "[D-1] won" is mail to capture, never a command, whichever copy is read first.
    Attack("a prospect writes [D-1] won to sales@ and crm@ (sales copy first)",
           (("sales", PROSPECT_WON), crm(PROSPECT_WON)), (("processed", "contact"),) * 2),
    Attack("a prospect writes [D-1] won to sales@ and crm@ (crm copy first)",
           (crm(PROSPECT_WON), ("sales", PROSPECT_WON)), (("processed", "contact"),) * 2),

    # Replies to our digest must carry the rep's current token; the rep is told, at her own address.
    Attack("bob's token replayed on alice's reply to her digest",
           (crm(lambda w: w.reply_to_digest("replay", w.to(w.token["bob"]),
                                            headers=f"{PASS}\r\n{EVIL_REPLY_TO}")),),
           (("refused", "refused-token"),), (NOT_OBEYED,), says="does not match alice's current one"),
    Attack("a wrong token on a reply to a digest",
           (crm(lambda w: w.reply_to_digest("wrong-token", w.to("abcdefghij"),
                                            headers=f"{PASS}\r\n{EVIL_REPLY_TO}")),),
           (("refused", "refused-token"),), (NOT_OBEYED,)),
    Attack("no token on a reply to a digest",
           (crm(lambda w: w.reply_to_digest("no-token", CRM, headers=f"{PASS}\r\n{EVIL_REPLY_TO}")),),
           (("refused", "refused-token"),), (NOT_OBEYED,), says="carries no reply token"),

    # Our own answer back in the commands mailbox (a forward rule, a list): never obeyed, never answered.
    Attack("our confirmation looping back into the commands mailbox",
           (crm(plain("first", "[D-1] note: loop bait")), crm(World.our_last_answer)),
           (OBEYED, ("refused", "refused-own")), (DONE,), {"notes": ["loop bait"]}, says="inboxcrm's own header"),

    Attack("an auto-reply (Auto-Submitted: auto-replied)",
           (crm(plain("auto-replied", "Re: [D-1] won", headers=f"{PASS}\r\nAuto-Submitted: auto-replied")),),
           (("refused", "refused-automatic"),)),
    Attack("an out-of-office reply",
           (crm(plain("ooo", "Automatic reply: [D-1] won", "[D-1] won\r\n\r\nI am out of the office until Monday.")),),
           (("refused", "refused-automatic"),), says="out-of-office"),

    Attack("a burst: five command mails against a limit of three",
           tuple(crm(build) for build in BURST), (OBEYED,) * 3 + (("refused", "refused-burst"),) * 2,
           (DONE, DONE, DONE, NOT_OBEYED), {"notes": ["call 1", "call 2", "call 3"]}, f"{TRUSTING}\nburst_limit = 3",
           says="more than the limit of 3"),
]

# A command address and nothing under [commands]: only the rep's token proves a fresh command.
DEFAULT_ATTACKS = [
    Attack("default, control: a fresh command to the rep's personal command address",
           (crm(with_token("own-token", alices)),), (OBEYED,), (DONE,), {"stage": "Won", "stage_kind": "won"},
           commands=None),
    Attack("default, control: the rep's token in the X-InboxCRM-Token header",
           (crm(lambda w: command_mail("token-header", "[D-1] won", headers=f"X-InboxCRM-Token: {alices(w)}")),),
           (OBEYED,), (DONE,),
           {"stage": "Won", "stage_kind": "won"}, commands=None),
    Attack("default, control: a reply to her digest with her own token",
           (crm(lambda w: w.reply_to_digest("genuine-reply", w.to(w.token["alice"]), headers="")),), (OBEYED,),
           (DONE,), {"stage": "Won", "stage_kind": "won"}, commands=None),

    Attack("default: a forged From alice", (crm(plain("forged", headers=f"{EVIL_REPLY_TO}")),), (UNPROVEN,),
           (NOT_OBEYED,), commands=None, says="no reply token"),
    Attack("default: a forged From alice with dmarc=fail stamped by the team's own server",
           (crm(plain("forged-fail", headers=FAIL)),), (UNPROVEN,), (NOT_OBEYED,), commands=None),
    Attack("default: a forged From alice with an untrusted server's pass",
           (crm(plain("forged-untrusted-pass", headers=UNTRUSTED_PASS)),), (UNPROVEN,), (NOT_OBEYED,), commands=None),
    Attack("default: a forged From alice with a pass written in the team server's name",
           (crm(plain("forged-pass")),), (UNPROVEN,), (NOT_OBEYED,), commands=None),
    Attack("default: alice's address as the display name of another",
           (crm(plain("display-address", sender='"alice@acme.example" <mallory@evil.example>', headers="")),),
           (("refused", "refused-not-rep"),), commands=None, says="mallory@evil.example is not an active rep"),
    Attack("default: Alice's name at another address",
           (crm(plain("display-name", sender="Alice Martin <alice.martin@evil.example>", headers="")),),
           (("refused", "refused-not-rep"),), commands=None, says='display name "Alice Martin"'),
    Attack("default: alice's address in an encoded display name",
           (crm(plain("display-encoded", sender="=?utf-8?q?Alice_=3Calice=40acme=2Eexample=3E?= "
                                                "<mallory@evil.example>", headers="")),),
           (("refused", "refused-not-rep"),), commands=None, says="mallory@evil.example is not an active rep"),
    Attack("default: a reply to her digest without a token",
           (crm(lambda w: w.reply_to_digest("reply-no-token", CRM, headers=EVIL_REPLY_TO)),), (UNPROVEN,),
           (NOT_OBEYED,), commands=None),
    Attack("default: bob's token on a fresh command from alice",
           (crm(with_token("bobs-token", lambda w: w.token["bob"])),), (("refused", "refused-token"),),
           (NOT_OBEYED,), commands=None, says="does not match alice's current one"),
    Attack("default: bob's token on alice's reply to her digest",
           (crm(lambda w: w.reply_to_digest("bobs-token-reply", w.to(w.token["bob"]), headers="")),),
           (("refused", "refused-token"),), (NOT_OBEYED,), commands=None),
    Attack("default: alice's old token, from before it was rotated",
           (crm(with_token("old-token", lambda w: w.old_token)),), (("refused", "refused-token"),), (NOT_OBEYED,),
           commands=None),
    Attack("default: a made-up token", (crm(with_token("made-up", lambda w: "abcdefghijklmnop")),),
           (("refused", "refused-token"),), (NOT_OBEYED,), commands=None),
    Attack("default: her token beside bob's", (crm(lambda w: command_mail(
        "two-tokens", "[D-1] won", to=w.to(alices(w)), headers=f"X-InboxCRM-Token: {w.token['bob']}")),),
           (("refused", "refused-token"),), (NOT_OBEYED,), commands=None),
    Attack("default, no commands mailbox: a forged From alice to crm@ read in the sales mailbox",
           (("sales", plain("forged-in-sales", to=f"{CRM}, sales@acme.example", headers="")),), (UNPROVEN,),
           (NOT_OBEYED,), commands=None, commands_mailbox=False),
    Attack("default, no commands mailbox: a forged tagged mail from alice to bob in the sales mailbox",
           (("sales", plain("forged-tagged", to="Bob <bob@acme.example>", headers="")),),
           (("internal", "internal"),), commands=None, commands_mailbox=False),
    Attack("default, no commands mailbox, control: alice's token, read in the sales mailbox",
           (("sales", with_token("token-in-sales", alices)),), (OBEYED,), (DONE,),
           {"stage": "Won", "stage_kind": "won"}, commands=None, commands_mailbox=False),
]

# Each [commands] proof with the team's server trusted: what it takes, and what it refuses.
PROOF_ATTACKS = [
    Attack('"auth": an untrusted server\'s pass', (crm(plain("auth-untrusted", headers=UNTRUSTED_PASS)),),
           (UNPROVEN,), (NOT_OBEYED,), commands=f'{TRUSTING}\nproof = "auth"',
           says="or must come from the rep's own Sent folder"),
    Attack('"auth": the rep\'s token is not enough', (crm(with_token("auth-token", alices)),), (UNPROVEN,),
           (NOT_OBEYED,), commands=f'{TRUSTING}\nproof = "auth"'),
    Attack('"auth": a trusted pass', (crm(plain("auth-pass")),), (OBEYED,), (DONE,),
           {"stage": "Won", "stage_kind": "won"}, commands=f'{TRUSTING}\nproof = "auth"'),
    Attack('legacy require_authentication = true is "auth"', (crm(with_token("legacy-token", alices)),),
           (UNPROVEN,), (NOT_OBEYED,), commands=f"{TRUSTING}\nrequire_authentication = true"),
    Attack('"token": a trusted pass is not enough', (crm(plain("token-pass")),), (UNPROVEN,), (NOT_OBEYED,),
           commands=f'{TRUSTING}\nproof = "token"', says="no reply token"),
    Attack('"token": the rep\'s token', (crm(with_token("token-token", alices)),), (OBEYED,), (DONE,),
           {"stage": "Won", "stage_kind": "won"}, commands=f'{TRUSTING}\nproof = "token"'),
    Attack('"auth-and-token": a trusted pass alone', (crm(plain("both-pass")),), (UNPROVEN,), (NOT_OBEYED,),
           commands=f'{TRUSTING}\nproof = "auth-and-token"'),
    Attack('"auth-and-token": the token alone', (crm(with_token("both-token", alices)),), (UNPROVEN,),
           (NOT_OBEYED,), commands=f'{TRUSTING}\nproof = "auth-and-token"'),
    Attack('"auth-and-token": both', (crm(with_token("both-both", alices, headers=PASS)),), (OBEYED,), (DONE,),
           {"stage": "Won", "stage_kind": "won"}, commands=f'{TRUSTING}\nproof = "auth-and-token"'),
    Attack('"auth-and-token": both, but the trusted server says fail',
           (crm(with_token("both-fail", alices, headers=FAIL)),), (("refused", "refused-failed-auth"),),
           commands=f'{TRUSTING}\nproof = "auth-and-token"'),
    Attack('"address-only": the From address alone is obeyed (the documented risk)',
           (crm(plain("address-only", headers="")),), (OBEYED,), (DONE,), {"stage": "Won", "stage_kind": "won"},
           commands='proof = "address-only"'),
    Attack('"address-only": still refused on the trusted server\'s fail', (crm(plain("address-fail", headers=FAIL)),),
           (("refused", "refused-failed-auth"),), commands=f'{TRUSTING}\nproof = "address-only"'),
]

WATCHED = ("stage", "stage_kind", "owner", "value", "next_step", "next_step_due", "snoozed_until", "lost_reason")


def watched(shown: dict) -> dict:
    """What a command could change on D-1; notes as their texts."""
    return {**{key: shown[key] for key in WATCHED}, "notes": [note["text"] for note in shown["notes"]]}


ALL_ATTACKS = DEFAULT_ATTACKS + ATTACKS + PROOF_ATTACKS


@pytest.mark.parametrize("attack", ALL_ATTACKS, ids=[a.name for a in ALL_ATTACKS])
def test_only_a_verified_rep_commands_and_nobody_else_gets_mail(attack, team, factory, config_file, tmp_path):
    enable_commands(team, config_file, tmp_path, attack.commands, mailbox=attack.commands_mailbox)
    team("lead", "add", "--email", "nora@fieldworks.example", "--name", "Nora Field", "--owner", "alice",
         "--value", "9000", "--stage", "Proposal")
    team("deal", "next", "D-1", "send the contract draft")
    team("deal", "note", "D-1", "wants 30 seats")
    world = World(team, factory)
    before = watched(deal(team))

    ids = []
    for mailbox, build in attack.mails:
        data = build(world)
        ids.append(message_from_bytes(data)["Message-ID"].strip("<>"))
        import_mail(team, tmp_path, data, mailbox)

    found = [stored(factory, message_id) for message_id in ids]
    assert [(s.status, s.reason) for s in found] == list(attack.expect)
    assert attack.says in found[-1].detail
    for s in found:  # a prospect's mail is captured on the deal like any other
        assert s.deal_id == (1 if s.status == "processed" else None)

    after = watched(deal(team))
    expected = dict(before)
    for key, value in attack.changed.items():
        expected[key] = before[key] + value if key == "notes" else value
    assert after == expected

    replies = answers(factory)
    assert [r.subject for r in replies] == list(attack.answers)
    for reply in replies:  # to the rep's address on record, never to a Reply-To the email chose
        assert reply.to_address == "alice@acme.example" and reply.message["To"] == "alice@acme.example"
        assert reply.message["Reply-To"] == world.to(world.token["alice"])
        assert reply.message["In-Reply-To"] in {f"<{i}>" for i in ids}
    assert {row.to_address for row in outbox_rows(factory)} <= REP_ADDRESSES
