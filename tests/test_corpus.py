"""152 real-world messages from Discourse's test suite, read the way an import reads them.

The corpus lives outside the project (GPL-2.0: read here, never copied): ../shared/corpus/discourse
from the project root, or the folder INBOXCRM_CORPUS names. Absent, these tests skip with the
reason; under INBOXCRM_REQUIRE_SERVERS=1 (CI) that is a failure.

The team context is the corpus's receiving side: the forum's domain bar.com is the team's, its
shared addresses (team@, support@, reply+...@) capture, and nobody there is a rep.
``pytest -s tests/test_corpus.py -k tally`` prints how many messages are decided as Discourse's
specs expect, and every difference.
"""
from __future__ import annotations

import csv
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from inboxcrm.app.context import context_for
from inboxcrm.app.intake import process
from inboxcrm.config import build_config
from inboxcrm.core.classify import TeamContext, classify
from inboxcrm.core.parse import identify, parse
from inboxcrm.errors import ParseError
from inboxcrm.store.db import transaction
from inboxcrm.store.models import Mailbox, Message
from inboxcrm.store.records import mailbox_info
from inboxcrm.values import RawMessage

from .conftest import server_missing

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
TEAM_DOMAIN = "bar.com"
TEAM = TeamContext(team_domains=frozenset({TEAM_DOMAIN}), rep_addresses=frozenset())
# Discourse's spec helper fills these template fixtures in before use; so do we.
PLACEHOLDERS = {b"<FROM>": b"<jake@adventuretime.ooo>", b"From: FROM": b"From: jake@adventuretime.ooo",
                b"<TO>": b"<team@bar.com>", b"To: TO": b"To: team@bar.com", b"<CC>": b"<cc@adventuretime.ooo>"}
LIST_HEADERS = re.compile(rb"^(?:list-id|mailing-list|precedence:[ \t]*list)", re.I | re.M)
# Discourse's category -> what a sales CRM should decide. "rejected" is a forum-permission refusal
# (trust level, silenced user, old topic): for a CRM it is a person's mail like any other.
EXPECTED_KIND = {"human": "human", "rejected": "human", "auto_generated": "auto_generated", "bounce": "bounce",
                 "spam": "spam", "mailing_list": "mailing_list", "list_relayed": "list_relayed",
                 "invalid": "invalid"}
OUR_KIND = {"bounce": "bounce", "spam": "spam", "list": "mailing_list", "auto-reply": "auto_generated",
            "robot": "auto_generated", "prospect": "human", "internal": "human", "outbound": "human"}


def corpus_dir() -> Path:
    configured = os.environ.get("INBOXCRM_CORPUS")
    path = Path(configured) if configured else Path(__file__).resolve().parents[1].parent / "shared/corpus/discourse"
    if not (path / "EXPECTED.tsv").is_file():
        server_missing("The Discourse corpus", f"no EXPECTED.tsv in {path}; set INBOXCRM_CORPUS to the folder")
    return path


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[bytes, dict[str, str]]]:
    """file name -> (bytes with templates filled in, its EXPECTED.tsv row)."""
    folder = corpus_dir()
    with (folder / "EXPECTED.tsv").open(newline="", encoding="utf-8") as rows:
        expected = {row["file"]: row for row in csv.DictReader(rows, delimiter="\t")}
    files = sorted(p.name for p in folder.glob("*.eml"))
    assert files == sorted(expected), "EXPECTED.tsv and the .eml files must name the same messages"
    messages = {}
    for name in files:
        raw = (folder / name).read_bytes()
        for placeholder, value in PLACEHOLDERS.items():
            raw = raw.replace(placeholder, value)
        messages[name] = (raw, expected[name])
    return messages


def decided(raw: bytes) -> tuple[str, str, str | None]:
    """(our kind in Discourse's words, reason, the prospect's address) by identify, parse, classify."""
    try:
        email = parse(raw, identify(raw)[0])
    except ParseError as exc:
        return "invalid", exc.reason, None
    result = classify(email, TEAM)
    kind = "list_relayed" if result.reason == "list-relay" else OUR_KIND[result.kind]
    return kind, result.reason, (result.prospect or email.from_).email


def test_every_message_is_imported_and_none_crashes(factory, corpus):
    with transaction(factory) as session:
        session.add(Mailbox(name="support", role="capture", default_source="support", new_sender_policy="create",
                            created_at=NOW))
    config = build_config({"team": {"domains": [TEAM_DOMAIN]}}, None)
    outcomes = {}
    for name, (raw, _) in corpus.items():
        with transaction(factory) as session:
            ctx = context_for(session, config)
            outcomes[name] = process(session, RawMessage(raw, f"corpus:{name}"), mailbox_info(session, "support"),
                                     ctx, NOW)
    assert len(outcomes) == len(corpus) == 152
    assert not [n for n, o in outcomes.items() if o.reason == "internal-error"]
    with factory() as session:  # one stored message per Message-ID, each with a final status
        stored = dict(session.query(Message.message_id, Message.status).all())
    assert set(stored) == {identify(raw)[0] for raw, _ in corpus.values()}
    assert "pending" not in stored.values()
    for name, (raw, row) in corpus.items():
        outcome = outcomes[name]
        if outcome.status == "duplicate":  # same Message-ID as an earlier file: stored once, decided there
            continue
        if row["category"] in ("bounce", "spam"):
            assert (outcome.status, outcome.reason) == ("noise", {"bounce": "delivery-status",
                                                                  "spam": "spam-verdict"}[row["category"]]), name
        if row["category"] in ("human", "rejected"):
            assert outcome.status != "quarantined", (name, outcome.reason, outcome.detail)


@pytest.mark.parametrize("category", ["bounce", "mailing_list", "list_relayed", "spam"])
def test_bounces_and_lists_are_noise_and_relayed_mail_is_the_authors(corpus, category):
    checked = 0
    for name, (raw, row) in corpus.items():
        if row["category"] != category or category in ("mailing_list", "list_relayed") and not LIST_HEADERS.search(raw):
            continue  # a "list" by forum context only, with no list header, is a person's mail to us
        kind, reason, prospect = decided(raw)
        checked += 1
        if category == "list_relayed":
            email = parse(raw)
            assert (kind, prospect) == ("list_relayed", email.original_from.email), name
        else:
            assert kind == category, (name, reason)
    assert checked


def test_tally_against_discourse(corpus):
    """Prints the agreement with Discourse's specs and every difference (run with -s)."""
    agree, differences, unjudged = 0, [], 0
    for name, (raw, row) in sorted(corpus.items()):
        expected = EXPECTED_KIND.get(row["category"])
        if expected is None:
            unjudged += 1
            continue
        kind, reason, prospect = decided(raw)
        wanted_author = re.search(r'from_address\)\.to eq\("([^"]+)"\)', row["spec"])
        same = kind == expected and (wanted_author is None or wanted_author.group(1) == prospect)
        if same:
            agree += 1
        else:
            differences.append(f"  {name}: Discourse {row['category']}"
                               f"{' from ' + wanted_author.group(1) if wanted_author else ''}; "
                               f"ours {kind} ({reason}){' from ' + prospect if prospect else ''}")
    judged = len(corpus) - unjudged
    print(f"\ncorpus: {agree} of {judged} judged messages decided as Discourse's specs expect "
          f"({unjudged} have no assertion in its specs)")
    print("\n".join(differences))
    assert agree + len(differences) == judged and agree > len(differences)
