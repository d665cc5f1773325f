"""Who may command by email: every refusal and the acceptance, each on the message that earns it.

The messages are built as ``Email`` values for the table, and a few real-looking raw messages go
through ``parse`` to show that folded headers, their order and the delivery headers arrive as the
checks expect them.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from inboxcrm.core.auth_results import AuthResult, authenticate
from inboxcrm.core.classify import TeamContext
from inboxcrm.core.parse import parse
from inboxcrm.core.sender_gate import (
    CHECKS,
    Gate,
    addressed_to_command,
    check,
    explain,
    reply_to_us,
    token_in,
)
from inboxcrm.mail.reply_token import reply_address
from inboxcrm.values import Address, Email

ALICE_TOKEN, BOB_TOKEN = "alicetok23", "bobtoken45"
DIGEST_ID = "digest.0123456789abcdef0123456789abcdef@team.example"
NUDGE_ID = "nudge.fedcba9876543210fedcba9876543210@team.example"
REPLY_ID = "reply.00112233445566778899aabbccddeeff@team.example"
TRUSTED = frozenset({"mx.team.example"})
GATE = Gate(
    team=TeamContext(team_domains=frozenset({"team.example"}),
                     rep_addresses=frozenset({"alice@team.example", "bob@team.example", "carol@sales.team.example"})),
    rep_by_address={"alice@team.example": "alice", "bob@team.example": "bob", "carol@sales.team.example": "carol"},
    tokens={"alice": ALICE_TOKEN, "bob": BOB_TOKEN, "carol": "caroltok67"},
    command_addresses=frozenset({"crm@team.example"}),
    own_addresses=frozenset({"crm@team.example"}),
    trusted_authserv_ids=TRUSTED,
    auth_required=True,
    proof_text="a command email needs a pass from a trusted receiving server (mx.team.example) or must come "
               "from the rep's own Sent folder",
)
# The other proof modes, as gatekeeper builds them from [commands] proof.
EITHER = "a command email needs a pass from a trusted receiving server (mx.team.example) or the rep's reply token"
DEFAULT_GATE = replace(GATE, auth_required=False, proof_text=EITHER)  # "auth-or-token" with a trusted server
BARE_GATE = replace(DEFAULT_GATE, trusted_authserv_ids=frozenset(),  # nothing configured at all
                    proof_text="a command email needs the rep's reply token; no trusted server is configured")
TOKEN_GATE = replace(GATE, auth_required=False, token_required=True,
                     proof_text="a command email needs the rep's reply token")
BOTH_GATE = replace(GATE, token_required=True, proof_text="a command email needs both a pass and the token")
ADDRESS_GATE = replace(DEFAULT_GATE, address_only=True, proof_text="commands trust the From address alone")

PASS = "mx.team.example; dmarc=pass header.from=team.example"
FAIL = "mx.team.example; dmarc=fail (p=reject) header.from=team.example"
ALICE = Address("alice@team.example", "Alice")
CRM = Address("crm@team.example")


def ar(*values: str) -> tuple[tuple[str, str], ...]:
    return tuple(("authentication-results", v) for v in values)


def mail(*, headers=ar(PASS), from_=ALICE, to=(CRM,), **fields) -> Email:
    fields.setdefault("message_id", "cmd-1@team.example")
    fields.setdefault("subject", "[D-42] stage: proposal")
    return Email(from_=from_, to=to, headers=headers, **fields)


def to_token(token: str) -> tuple[Address, ...]:
    return (Address(reply_address("crm@team.example", token)),)


# (case, message, gate, recent_from_sender, via_own_sent, reason, answer, rep)
CASES = [
    ("plain command from a rep, DMARC pass", mail(), GATE, 0, False, "accepted", True, "alice"),
    ("reply to a digest with the rep's token in To", mail(in_reply_to=(DIGEST_ID,), to=to_token(ALICE_TOKEN)),
     GATE, 0, False, "accepted", True, "alice"),
    ("quick-action mailto with the rep's token, not a reply", mail(to=to_token(ALICE_TOKEN)),
     GATE, 0, False, "accepted", True, "alice"),
    ("reply to a nudge through References, token in Cc", mail(references=(NUDGE_ID, "x@y.example"), to=(),
                                                               cc=to_token(ALICE_TOKEN)),
     GATE, 0, False, "accepted", True, "alice"),

    # refused-own: our own mail looping back, by each of its marks
    ("our own confirmation looping back", mail(from_=CRM, to=(ALICE,), message_id=REPLY_ID,
                                              headers=ar(PASS) + (("x-inboxcrm", "reply"),)),
     GATE, 0, False, "refused-own", False, None),
    ("only our header", mail(headers=ar(PASS) + (("x-inboxcrm", "digest"),)), GATE, 0, False, "refused-own", False,
     "alice"),
    ("only our From address", mail(from_=CRM), GATE, 0, False, "refused-own", False, None),
    ("only our Message-ID form", mail(message_id=DIGEST_ID), GATE, 0, False, "refused-own", False, "alice"),

    # refused-automatic: the classifier's noise rules
    ("auto-reply (Auto-Submitted) from a rep", mail(headers=ar(PASS) + (("auto-submitted", "auto-replied"),)),
     GATE, 0, False, "refused-automatic", False, "alice"),
    ("out-of-office subject from a rep", mail(subject="Out of office: [D-42] won"),
     GATE, 0, False, "refused-automatic", False, "alice"),
    ("bounce to the command address", mail(from_=Address("mailer-daemon@team.example"), headers=(),
                                           subject="Undelivered Mail Returned to Sender"),
     GATE, 0, False, "refused-automatic", False, None),
    ("automatic mail from a stranger is refused before anything answers it",
     mail(from_=Address("bot@evil.example"), headers=(("precedence", "bulk"),)),
     GATE, 0, False, "refused-automatic", False, None),

    # refused-not-rep
    ("display-name spoofing", mail(from_=Address("evil@evil.example", "Alice")),
     GATE, 0, False, "refused-not-rep", False, None),
    ("unknown sender, failing authentication", mail(from_=Address("x@evil.example"), headers=ar(FAIL)),
     GATE, 0, False, "refused-not-rep", False, None),
    ("no From address", mail(from_=None), GATE, 0, False, "refused-not-rep", False, None),
    ("a team address that is not a rep", mail(from_=Address("office@team.example")),
     GATE, 0, False, "refused-not-rep", False, None),

    # refused-failed-auth
    ("failing DMARC", mail(headers=ar(FAIL)), GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("failing DMARC under the default proof", mail(headers=ar(FAIL)),
     DEFAULT_GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("dmarc=pass for a different header.from",
     mail(headers=ar("mx.team.example; dmarc=pass header.from=evil.example")),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("forged pass below the trusted fail", mail(headers=ar(FAIL, PASS)),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("trusted fail below an untrusted pass",
     mail(headers=ar("filter.example; dmarc=pass header.from=team.example", FAIL)),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("misaligned DKIM", mail(headers=ar("mx.team.example; dkim=pass header.d=evil.example; "
                                        "spf=fail smtp.mailfrom=evil.example")),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("SPF pass for a look-alike domain (no label boundary)",
     mail(headers=ar("mx.team.example; spf=pass smtp.mailfrom=bounce@evilteam.example")),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("SPF softfail, aligned", mail(headers=ar("mx.team.example; spf=softfail smtp.mailfrom=alice@team.example")),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("a pass hidden in a comment", mail(headers=ar(
        "mx.team.example; dmarc=fail (dmarc=pass header.from=team.example; dkim=pass) header.from=team.example")),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("a pass hidden in a quoted string", mail(headers=ar(
        'mx.team.example; dkim=fail reason="sig; dmarc=pass header.from=team.example" header.d=team.example')),
     GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("dmarc=fail wins over aligned DKIM", mail(headers=ar(
        "mx.team.example; dkim=pass header.d=team.example; dmarc=fail header.from=team.example")),
     GATE, 0, False, "refused-failed-auth", False, "alice"),

    # authenticated in other ways
    ("trusted pass above a forged fail", mail(headers=ar(PASS, FAIL)), GATE, 0, False, "accepted", True, "alice"),
    ("trusted pass below an untrusted fail", mail(headers=ar("filter.example; dmarc=fail", PASS)),
     GATE, 0, False, "accepted", True, "alice"),
    ("aligned DKIM without DMARC", mail(headers=ar("mx.team.example; dkim=pass header.d=team.example; spf=none")),
     GATE, 0, False, "accepted", True, "alice"),
    ("DKIM aligned through header.i", mail(headers=ar("mx.team.example; dkim=pass header.i=@mail.team.example")),
     GATE, 0, False, "accepted", True, "alice"),
    ("DMARC none (no policy published), aligned DKIM",
     mail(headers=ar("mx.team.example; dmarc=none header.from=team.example; dkim=pass header.d=team.example")),
     GATE, 0, False, "accepted", True, "alice"),
    ("SPF aligned by subdomain", mail(headers=ar("mx.team.example; spf=pass smtp.mailfrom=alice@bounce.team.example")),
     GATE, 0, False, "accepted", True, "alice"),
    ("SPF aligned, the From a subdomain", mail(from_=Address("carol@sales.team.example"),
                                               headers=ar("mx.team.example; spf=pass smtp.mailfrom=team.example")),
     GATE, 0, False, "accepted", True, "carol"),
    ("comments, quoted strings, version, unknown methods, case", mail(headers=ar(
        'MX.Team.Example 1; iprev=pass policy.iprev=10.0.0.1 (mail.team.example); '
        'dkim / 1 = pass (2048-bit key (rsa); "x") header . d="team.example" header.b=AbC/d+1; '
        'dmarc=pass (p=reject; dis=none) header.from=team.example; arc=none')),
     GATE, 0, False, "accepted", True, "alice"),

    # refused-unproven, proof "auth": a trusted pass or the rep's own Sent folder, whatever else
    ("untrusted authserv-id saying pass", mail(headers=ar("evil.example; dmarc=pass header.from=team.example")),
     GATE, 0, False, "refused-unproven", True, "alice"),
    ("no Authentication-Results at all", mail(headers=()), GATE, 0, False, "refused-unproven", True, "alice"),
    ("trusted server authenticated nothing", mail(headers=ar("mx.team.example; none")),
     GATE, 0, False, "refused-unproven", True, "alice"),
    ("no authserv-id (Exchange Online style)", mail(headers=ar(
        "spf=pass (sender IP is 10.0.0.1) smtp.mailfrom=team.example; "
        "dmarc=pass action=none header.from=team.example")),
     GATE, 0, False, "refused-unproven", True, "alice"),
    ('"auth": the rep\'s token alone is not enough', mail(headers=(), to=to_token(ALICE_TOKEN)),
     GATE, 0, False, "refused-unproven", True, "alice"),
    ("a copy in the rep's own Sent folder counts as authenticated", mail(headers=()),
     GATE, 0, True, "accepted", True, "alice"),

    # the default "auth-or-token" with a trusted server: either proof will do
    ("default: neither a trusted pass nor a token", mail(headers=()),
     DEFAULT_GATE, 0, False, "refused-unproven", True, "alice"),
    ("default: an untrusted server's pass is no pass", mail(headers=ar("evil.example; dmarc=pass "
                                                                       "header.from=team.example")),
     DEFAULT_GATE, 0, False, "refused-unproven", True, "alice"),
    ("default: a trusted pass", mail(), DEFAULT_GATE, 0, False, "accepted", True, "alice"),
    ("default: the rep's token", mail(headers=(), to=to_token(ALICE_TOKEN)),
     DEFAULT_GATE, 0, False, "accepted", True, "alice"),
    ("default: the rep's own Sent folder", mail(headers=()), DEFAULT_GATE, 0, True, "accepted", True, "alice"),
    ("default: the rep's token, but the trusted server says fail", mail(headers=ar(FAIL), to=to_token(ALICE_TOKEN)),
     DEFAULT_GATE, 0, False, "refused-failed-auth", False, "alice"),
    ("default: the rep's own Sent folder, but a trusted fail in it", mail(headers=ar(FAIL)),
     DEFAULT_GATE, 0, True, "refused-failed-auth", False, "alice"),

    # the default with nothing configured: only token-bearing mail
    ("nothing configured: a forged From", mail(headers=()), BARE_GATE, 0, False, "refused-unproven", True, "alice"),
    ("nothing configured: any server's pass counts for nothing", mail(),
     BARE_GATE, 0, False, "refused-unproven", True, "alice"),
    ("nothing configured: a failing verdict of an untrusted server", mail(headers=ar("evil.example; dmarc=fail")),
     BARE_GATE, 0, False, "refused-unproven", True, "alice"),
    ("nothing configured: the rep's token", mail(headers=(), to=to_token(ALICE_TOKEN)),
     BARE_GATE, 0, False, "accepted", True, "alice"),
    ("nothing configured: the rep's token in X-InboxCRM-Token", mail(headers=(("x-inboxcrm-token", ALICE_TOKEN),)),
     BARE_GATE, 0, False, "accepted", True, "alice"),
    ("nothing configured: another rep's token", mail(headers=(), to=to_token(BOB_TOKEN)),
     BARE_GATE, 0, False, "refused-token", True, "alice"),

    # "token", "auth-and-token", "address-only"
    ('"token": a trusted pass alone', mail(), TOKEN_GATE, 0, False, "refused-unproven", True, "alice"),
    ('"token": the rep\'s own Sent folder alone', mail(headers=()),
     TOKEN_GATE, 0, True, "refused-unproven", True, "alice"),
    ('"token": the token', mail(headers=(), to=to_token(ALICE_TOKEN)), TOKEN_GATE, 0, False, "accepted", True, "alice"),
    ('"auth-and-token": a trusted pass alone', mail(), BOTH_GATE, 0, False, "refused-unproven", True, "alice"),
    ('"auth-and-token": the token alone', mail(headers=(), to=to_token(ALICE_TOKEN)),
     BOTH_GATE, 0, False, "refused-unproven", True, "alice"),
    ('"auth-and-token": both', mail(to=to_token(ALICE_TOKEN)), BOTH_GATE, 0, False, "accepted", True, "alice"),
    ('"auth-and-token": the Sent folder and the token', mail(headers=(), to=to_token(ALICE_TOKEN)),
     BOTH_GATE, 0, True, "accepted", True, "alice"),
    ('"address-only": the From address alone', mail(headers=()), ADDRESS_GATE, 0, False, "accepted", True, "alice"),
    ('"address-only": still refused on a trusted fail', mail(headers=ar(FAIL)),
     ADDRESS_GATE, 0, False, "refused-failed-auth", False, "alice"),
    ('"address-only": a reply to a digest still needs the token', mail(headers=(), in_reply_to=(DIGEST_ID,)),
     ADDRESS_GATE, 0, False, "refused-token", True, "alice"),

    # refused-burst
    ("burst: the limit reached exactly", mail(), GATE, 19, False, "accepted", True, "alice"),
    ("burst: the first mail over the limit is answered", mail(), GATE, 20, False, "refused-burst", True, "alice"),
    ("burst: later mails over the limit are not", mail(), GATE, 21, False, "refused-burst", False, "alice"),
    ("burst: a small limit", mail(), replace(GATE, burst_limit=2), 2, False, "refused-burst", True, "alice"),

    # refused-token
    ("replayed token of another rep", mail(in_reply_to=(DIGEST_ID,), to=to_token(BOB_TOKEN)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("wrong token", mail(to=to_token("zzzzzzzzzz")), GATE, 0, False, "refused-token", True, "alice"),
    ("missing token on a reply to a digest", mail(in_reply_to=(DIGEST_ID,)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("missing token on a reply to our answer", mail(references=(REPLY_ID,)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("missing token, even from the rep's own Sent folder", mail(in_reply_to=(DIGEST_ID,), headers=()),
     GATE, 0, True, "refused-token", True, "alice"),
    ("token in Delivered-To (the command address was Bcc'd)",
     mail(in_reply_to=(DIGEST_ID,), to=(), headers=ar(PASS) + (("delivered-to", f"crm+{ALICE_TOKEN}@team.example"),)),
     GATE, 0, False, "accepted", True, "alice"),
    ("token in X-Original-To", mail(in_reply_to=(DIGEST_ID,), to=(), headers=ar(PASS) + (
        ("x-original-to", f"<crm+{ALICE_TOKEN}@team.example>"),)),
     GATE, 0, False, "accepted", True, "alice"),
    ("wrong token in Delivered-To", mail(headers=ar(PASS) + (("delivered-to", "crm+zzzzzzzzzz@team.example"),)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("X-InboxCRM-Token header", mail(in_reply_to=(DIGEST_ID,), headers=ar(PASS) + (
        ("x-inboxcrm-token", ALICE_TOKEN.upper()),)),
     GATE, 0, False, "accepted", True, "alice"),
    ("another rep's X-InboxCRM-Token header", mail(headers=ar(PASS) + (("x-inboxcrm-token", BOB_TOKEN),)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("the right token beside a wrong one", mail(to=to_token(ALICE_TOKEN), headers=ar(PASS) + (
        ("x-inboxcrm-token", BOB_TOKEN),)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("a token for another address is no token", mail(in_reply_to=(DIGEST_ID,), to=(
        Address(f"sales+{ALICE_TOKEN}@team.example"),)),
     GATE, 0, False, "refused-token", True, "alice"),
    ("a rep without a token", mail(from_=Address("bob@team.example"), to=to_token(BOB_TOKEN)),
     replace(GATE, tokens={"alice": ALICE_TOKEN}), 0, False, "refused-token", True, "bob"),
]


@pytest.mark.parametrize("message, gate, recent, via_own_sent, reason, answer, rep",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_check(message, gate, recent, via_own_sent, reason, answer, rep):
    verdict = check(message, gate, recent, via_own_sent=via_own_sent)
    assert (verdict.reason, verdict.answer, verdict.rep) == (reason, answer, rep), verdict.detail
    assert verdict.obey == (reason == "accepted")
    assert verdict.detail and "\n" not in verdict.detail
    for token in (ALICE_TOKEN, BOB_TOKEN, "zzzzzzzzzz"):
        assert token not in verdict.detail.lower()


@pytest.mark.parametrize("message, gate, recent, via_own_sent, reason, answer, rep",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_explain_lists_every_check_and_agrees_with_check(message, gate, recent, via_own_sent, reason, answer, rep):
    lines = explain(message, gate, recent, via_own_sent=via_own_sent)
    assert [line.rule for line in lines] == [c.name for c in CHECKS]
    assert {line.stage for line in lines} == {"command"}
    assert all(line.detail for line in lines)
    fired = [line.rule for line in lines if line.fired]
    assert (fired[0] if fired else "accepted") == reason


def test_the_checks_run_in_the_decided_order():
    assert [c.name for c in CHECKS] == ["refused-own", "refused-automatic", "refused-not-rep", "refused-failed-auth",
                                        "refused-unproven", "refused-burst", "refused-token"]
    assert all(c.description for c in CHECKS)


def test_details_say_what_was_wrong_and_what_would_be_valid():
    spoofed = check(mail(from_=Address("evil@evil.example", "Alice")), GATE, 0)
    assert "evil@evil.example is not an active rep's address" in spoofed.detail
    assert '"Alice"' in spoofed.detail and "only the address identifies a rep" in spoofed.detail

    auto = check(mail(headers=ar(PASS) + (("auto-submitted", "auto-replied"),)), GATE, 0)
    assert "auto-submitted" in auto.detail

    failed = check(mail(headers=ar(FAIL)), GATE, 0)
    assert "mx.team.example: dmarc=fail header.from=team.example" in failed.detail

    missing = check(mail(in_reply_to=(DIGEST_ID,)), GATE, 0)
    assert "no reply token" in missing.detail and GATE.proof_text in missing.detail

    unproven = check(mail(headers=()), BARE_GATE, 0)
    assert unproven.detail == ("no pass from a trusted server (no authserv-id is trusted, so no Authentication-Results "
                               f"header counts) and no reply token: {BARE_GATE.proof_text}")
    assert check(mail(), TOKEN_GATE, 0).detail == f"no reply token: {TOKEN_GATE.proof_text}"  # a pass is no help

    burst = check(mail(), GATE, 20)
    assert "21 command mails from alice@team.example within 60 minutes" in burst.detail
    assert "limit of 20" in burst.detail

    accepted = check(mail(), GATE, 0)
    assert accepted.detail == ("alice@team.example is the address of rep alice; "
                               "mx.team.example: dmarc=pass header.from=team.example; "
                               "proved by a trusted server's pass; "
                               "no reply token, and not a reply to our mail: none needed")


# -- replies and tokens ---------------------------------------------------------------------------

@pytest.mark.parametrize("in_reply_to, references, replying", [
    ((DIGEST_ID,), (), True),
    ((), ("x@y.example", NUDGE_ID), True),
    ((REPLY_ID,), (), True),
    (("digest.0123@team.example",), (), False),  # too short to be ours
    (("outbox.0123456789abcdef0123456789abcdef@team.example",), (), False),
    (("re-digest.0123456789abcdef0123456789abcdef@team.example",), (), False),
    ((), (), False),
])
def test_reply_to_us(in_reply_to, references, replying):
    assert reply_to_us(mail(in_reply_to=in_reply_to, references=references)) is replying


def test_token_in():
    commands = frozenset({"crm@team.example", "deals@team.example"})
    assert token_in(mail(), commands) is None
    assert token_in(mail(to=(Address("deals+abc@team.example"),)), commands) == "abc"
    assert token_in(mail(to=(Address("crm+@team.example"),)), commands) is None
    assert token_in(mail(to=(Address("bob+abc@team.example"),)), commands) is None
    assert token_in(mail(headers=(("x-inboxcrm-token", "  AbC "),)), commands) == "abc"
    # the same token twice is one token; two different ones match nobody
    twice = mail(to=(Address("crm+abc@team.example"),), headers=(("delivered-to", "crm+abc@team.example"),))
    assert token_in(twice, commands) == "abc"
    assert token_in(mail(to=(Address("crm+abc@team.example"), Address("crm+def@team.example"))),
                    commands) not in (None, "abc", "def")


@pytest.mark.parametrize("to, headers, addressed", [
    (("crm@team.example",), (), True),
    (("bob@team.example", "crm+abc@team.example"), (), True),
    (("bob@team.example",), (("delivered-to", "crm+abc@team.example"),), True),
    (("bob@team.example",), (("x-original-to", "<crm@team.example>"),), True),
    (("bob@team.example",), (("x-inboxcrm-token", "abc"),), False),
    (("crmx@team.example", "crm@other.example", "crm+abc@other.example"), (), False),
])
def test_addressed_to_command(to, headers, addressed):
    email = mail(to=tuple(Address(a) for a in to), headers=headers)
    assert addressed_to_command(email, frozenset({"crm@team.example"})) is addressed


# -- real-looking messages through parse -------------------------------------------------------------

def raw(*headers: str, body: str = "[D-42] won\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


BASE = ("From: Alice Example <alice@team.example>", "To: crm@team.example", "Subject: [D-42] won",
        "Message-ID: <cmd-7@team.example>", "Date: Mon, 03 Mar 2025 09:00:00 +0000")


def test_a_folded_gmail_style_header_passes():
    email = parse(raw(
        "Authentication-Results: mx.google.com;",
        "       dkim=pass header.i=@team.example header.s=google header.b=AbCdEf12;",
        "       spf=pass (google.com: domain of alice@team.example designates 209.85.220.41 as permitted",
        "        sender) smtp.mailfrom=alice@team.example;",
        "       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=team.example",
        *BASE))
    assert authenticate(email, frozenset({"mx.google.com"})) == AuthResult(
        "pass", "mx.google.com: dmarc=pass header.from=team.example")
    assert check(email, replace(GATE, trusted_authserv_ids=frozenset({"mx.google.com"})), 0).reason == "accepted"


def test_a_forged_header_the_sender_wrote_is_below_the_servers_own():
    email = parse(raw(
        "Authentication-Results: mx.team.example;",
        "\tdkim=fail (signature did not verify) header.d=team.example;",
        "\tspf=softfail smtp.mailfrom=evil.example;",
        "\tdmarc=fail (p=reject dis=reject) header.from=team.example",
        "Received: from evil.example (evil.example [192.0.2.1]) by mx.team.example",
        "Authentication-Results: mx.team.example; dmarc=pass header.from=team.example",
        *BASE))
    assert [v.split(";")[0] for v in email.header_all("authentication-results")] == ["mx.team.example"] * 2
    verdict = check(email, GATE, 0)
    assert (verdict.reason, verdict.answer) == ("refused-failed-auth", False)
    assert "dmarc=fail header.from=team.example" in verdict.detail


def test_a_reply_to_a_digest_through_parse():
    headers = ("Authentication-Results: mx.team.example 1; dmarc=pass (p=none)\r\n\theader.from=team.example",
               f"Delivered-To: crm+{ALICE_TOKEN}@team.example", *BASE[:-2],
               "Message-ID: <CAF=abc@mail.gmail.com>", f"In-Reply-To: <{DIGEST_ID}>",
               f"References: <{NUDGE_ID}>\r\n <{DIGEST_ID}>")
    email = parse(raw(*headers))
    assert reply_to_us(email) and token_in(email, GATE.command_addresses) == ALICE_TOKEN
    assert check(email, GATE, 0).reason == "accepted"
    replayed = parse(raw(*(h.replace(ALICE_TOKEN, BOB_TOKEN) for h in headers)))
    assert check(replayed, GATE, 0).reason == "refused-token"
    tokenless = parse(raw(*(h for h in headers if not h.startswith("Delivered-To"))))
    assert check(tokenless, GATE, 0).reason == "refused-token"


def test_our_own_outgoing_message_read_back():
    email = parse(raw(
        "From: crm@team.example", "To: alice@team.example", "Subject: Your digest for Monday",
        "Message-ID: <digest.0123456789abcdef0123456789abcdef@team.example>", "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: All", "X-InboxCRM: digest", "Reply-To: crm+alicetok23@team.example"))
    verdict = check(email, GATE, 0)
    assert (verdict.reason, verdict.answer) == ("refused-own", False)
    assert "X-InboxCRM: digest" in verdict.detail


def test_a_spoofed_display_name_through_parse():
    email = parse(raw("Authentication-Results: mx.team.example; dmarc=pass header.from=evil.example",
                      "From: \"Alice Example\" <alice@evil.example>", *BASE[1:]))
    verdict = check(email, GATE, 0)
    assert (verdict.reason, verdict.rep, verdict.answer) == ("refused-not-rep", None, False)
    assert "alice@evil.example" in verdict.detail and '"Alice Example"' in verdict.detail
