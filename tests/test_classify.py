"""The classifier on real-looking messages: each rule fires where it should, and not elsewhere."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from inboxcrm.core.classify import KINDS, RULES, TeamContext, classify, explain
from inboxcrm.core.freemail import FREEMAIL_DOMAINS, is_freemail
from inboxcrm.core.parse import parse
from inboxcrm.values import Address, Email

MAIL = Path(__file__).parent / "mail"
TEAM = TeamContext(team_domains=frozenset({"acme.example"}),
                   rep_addresses=frozenset({"alice@acme.example", "bob@acme.example"}))
RULE_NAMES = [rule.name for rule in RULES]


def load(case: str) -> Email:
    return parse((MAIL / f"classify-{case}.eml").read_bytes())


@pytest.mark.parametrize("case, kind, reason", [
    ("own", "own", "own"),
    ("delivery-status", "bounce", "delivery-status"),
    ("bounce-subject", "bounce", "delivery-status"),
    ("auto-submitted", "auto-reply", "auto-submitted"),
    ("x-autoreply", "auto-reply", "autoreply-headers"),
    ("x-autoresponder", "auto-reply", "autoreply-headers"),
    ("precedence-bulk", "list", "precedence"),
    ("precedence-junk", "auto-reply", "precedence"),
    ("null-return-path", "bounce", "null-return-path"),
    ("noreply", "robot", "robot-sender"),
    ("no-reply-tag", "robot", "robot-sender"),
    ("newsletter", "list", "mailing-list"),
    ("list-id", "list", "mailing-list"),
    ("spam-flag", "spam", "spam-verdict"),
    ("spam-scl", "spam", "spam-verdict"),
    ("ses-spam-verdict", "spam", "spam-verdict"),
    # delivery systems: From: <>, a bare MAILER-DAEMON, a postmaster, whatever the subject says
    ("null-sender", "bounce", "delivery-status"),
    ("mailer-daemon-bare", "bounce", "delivery-status"),
    ("postmaster-notice", "bounce", "delivery-status"),
    # a list relaying a person's mail to a shared team address is the person's mail ...
    ("list-relay", "prospect", "list-relay"),
    ("list-relay-reply-to", "prospect", "list-relay"),
    # ... but not a colleague's, and not when a spam filter said spam
    ("list-relay-colleague", "list", "precedence"),
    ("list-relay-spam", "spam", "spam-verdict"),
    ("outbound-rep", "outbound", "outbound"),
    ("outbound-team-domain", "outbound", "outbound"),
    ("internal", "internal", "internal"),
    ("internal-no-recipients", "internal", "internal"),
    # a rep's vacation reply to a prospect is noise: noise rules run before direction rules
    ("rep-out-of-office", "auto-reply", "auto-submitted"),
    # negative cases: ordinary mail that only looks automatic
    ("prospect", "prospect", "prospect"),
    ("auto-response-suppress", "prospect", "prospect"),
    ("auto-submitted-no", "prospect", "prospect"),
    ("vacation-mid-subject", "prospect", "prospect"),
    ("spam-status-no", "prospect", "prospect"),
])
def test_classify(case, kind, reason):
    result = classify(load(case), TEAM)
    assert (result.kind, result.reason) == (kind, reason), result.detail
    assert result.detail


@pytest.mark.parametrize("lang", ["en", "en-out-of-office", "de", "fr", "es", "nl", "it", "pt", "sv", "da", "no"])
def test_out_of_office_subjects(lang):
    result = classify(load(f"ooo-{lang}"), TEAM)
    assert (result.kind, result.reason) == ("auto-reply", "out-of-office")


def _with_subject(subject: str) -> Email:
    return Email(message_id="m@northwind.example", subject=subject,
                 from_=Address("buyer@northwind.example"), to=(Address("alice@acme.example"),))


@pytest.mark.parametrize("subject, ooo", [
    ("Auto-Reply: pricing", True),
    ("Autoreply", True),
    ("Out of the office until Monday", True),
    ("Absent du bureau", True),
    ("Fuera de la oficina: Presupuesto", True),
    ("AFWEZIG: offerte", True),
    ("Re: our vacation rental project", False),
    ("Re: Automatic reply: Quote", False),  # a person answered the auto-reply
    ("Abwesenheitsplanung für das Team", False),  # a word that merely starts like a phrase
    ("Autosvarsfunktion i vårt CRM", False),
    ("Quote for the out of office period", False),
])
def test_out_of_office_phrase_only_at_start_and_whole(subject, ooo):
    assert (classify(_with_subject(subject), TEAM).reason == "out-of-office") is ooo


def test_rep_out_of_office_subject_alone_beats_outbound():
    email = Email(message_id="m@acme.example", subject="Out of Office: Quote",
                  from_=Address("alice@acme.example"), to=(Address("buyer@northwind.example"),))
    assert classify(email, TEAM).reason == "out-of-office"


def test_outbound_detail_names_the_rep_and_prospect():
    result = classify(load("outbound-rep"), TEAM)
    assert "alice@acme.example" in result.detail and "buyer@northwind.example" in result.detail
    assert "bob@acme.example" not in result.detail.partition(" wrote to ")[2]  # a colleague in Cc is not outside


def test_own_header_is_configurable():
    email = load("own")
    assert classify(email, TeamContext(TEAM.team_domains, TEAM.rep_addresses, own_header="X-Other")).reason == "outbound"


@pytest.mark.parametrize("case, author", [
    ("list-relay", "maria.lopez@northwind.example"),  # X-Original-From
    ("list-relay-reply-to", "tom.berg@fabrikam.example"),  # no X-Original-From: the Reply-To
])
def test_a_relayed_prospect_is_the_author_the_list_names_not_the_list(case, author):
    result = classify(load(case), TEAM)
    assert result.prospect is not None and result.prospect.email == author
    assert author in result.detail


def test_a_list_the_team_only_reads_stays_noise_even_with_an_author_header():
    email = load("list-relay-reply-to")
    to_a_rep = replace(email, to=(Address("bob@acme.example"),))  # bob's own subscription, no shared address
    result = classify(to_a_rep, TEAM)
    assert (result.kind, result.reason, result.prospect) == ("list", "precedence", None)


def test_only_the_relay_rule_names_a_prospect_other_than_from():
    assert classify(load("prospect"), TEAM).prospect is None
    assert classify(load("list-id"), TEAM).prospect is None


def test_missing_return_path_means_nothing():
    email = load("prospect")
    assert email.header("return-path") == "<buyer@northwind.example>"
    assert not _fired(email)["null-return-path"]


def _fired(email: Email) -> dict[str, bool]:
    return {e.rule: e.fired for e in explain(email, TEAM)}


def test_explain_lists_every_rule_in_order_and_marks_which_fired():
    notes = explain(load("rep-out-of-office"), TEAM)
    assert [n.rule for n in notes] == RULE_NAMES
    assert {n.stage for n in notes} == {"classify"}
    assert {n.rule for n in notes if n.fired} == {"auto-submitted", "out-of-office", "outbound"}
    assert all(n.detail for n in notes if n.fired) and not any(n.detail for n in notes if not n.fired)


def test_explain_dsn_shows_every_machine_signal():
    fired = {rule for rule, on in _fired(load("delivery-status")).items() if on}
    # mx.acme.example is not a team domain (exact match), so the daemon is neither internal nor outbound
    assert fired == {"delivery-status", "auto-submitted", "null-return-path", "robot-sender"}


def test_explain_prospect_fires_nothing():
    assert not any(_fired(load("prospect")).values())


def test_rule_table_is_well_formed():
    names = [rule.name for rule in RULES]
    assert all(names) and len(set(names)) == len(names)
    assert "prospect" not in names  # the fallback reason must not collide with a rule
    for rule in RULES:
        assert rule.description.strip().endswith("."), rule.name
        assert rule.kind in KINDS, rule.name
    assert names == ["own", "delivery-status", "auto-submitted", "autoreply-headers", "out-of-office", "spam-verdict",
                     "list-relay", "precedence", "null-return-path", "robot-sender", "mailing-list", "outbound",
                     "internal"]


@pytest.mark.parametrize("domain, extra, expected", [
    ("gmail.com", frozenset(), True),
    ("GMAIL.COM", frozenset(), True),
    ("gmail.com.", frozenset(), True),
    ("web.de", frozenset(), True),
    ("acme.example", frozenset(), False),
    ("mail.gmail.com", frozenset(), False),  # exact match only
    ("isp.example", frozenset({"isp.example"}), True),
    ("ISP.example", frozenset({"isp.example"}), True),
    ("other.example", frozenset({"isp.example"}), False),
])
def test_is_freemail(domain, extra, expected):
    assert is_freemail(domain, extra) is expected


def test_freemail_list_is_clean():
    assert 80 <= len(FREEMAIL_DOMAINS) <= 200
    assert all(d == d.lower().strip() and "." in d and "@" not in d for d in FREEMAIL_DOMAINS)
