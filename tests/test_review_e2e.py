"""The weekly review end to end: a team with a week of history, the daemon's own notify and outbox
jobs on a driven clock, the real outbox and a real SMTP server on loopback. Each manager gets
exactly one review a week, across a restart of the daemon, and the next week's comes next week."""
from __future__ import annotations

import html
from datetime import timedelta
from decimal import Decimal
from urllib.parse import unquote

from inboxcrm.app import daemon as daemon_mod
from inboxcrm.app.daemon import Daemon, Notifier
from inboxcrm.config import build_config
from inboxcrm.store.db import make_engine, session_factory

from .smtp_server import SmtpServer
from .test_review import IN_WEEK, REVIEW_AT, Crm, history

MANAGERS = ("alice@acme.example", "boss@holding.example")


class Driven:
    """The daemon's clock, moved by the test."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def daemon_pass(factory, config) -> None:
    """What a freshly started daemon does every 30 seconds for outgoing mail: its notify job
    (digests, nudges and the review), then its outbox job."""
    daemon = Daemon(factory, config, lambda: config, environ={}, notifier=Notifier({}))
    daemon._notify_job()
    daemon._outbox_job()


def reviews(server) -> dict[str, list]:
    found: dict[str, list] = {m: [] for m in MANAGERS}
    for received in server.messages:
        message = received.message
        if message["X-InboxCRM"] == "review":
            found[received.rcpt_tos[0]].append(message)
    return found


def test_each_manager_gets_one_review_a_week_over_smtp_across_a_restart(engine, monkeypatch):
    url = engine.url.render_as_string(hide_password=False)
    crm = Crm(session_factory(engine))
    reps = {name: crm.rep(name, manager=name == "alice") for name in ("alice", "bob", "carol")}
    deals = history(crm, reps)
    clock = Driven(REVIEW_AT - timedelta(minutes=10))
    monkeypatch.setattr(daemon_mod, "utcnow", clock)
    with SmtpServer() as server:
        config = build_config({"team": {"domains": ["acme.example"], "timezone": "Europe/Berlin"},
                               "commands": {"address": "crm@acme.example"}, "smtp": server.config(),
                               "review": {"managers": ["boss@holding.example"]}}, None)
        factory = session_factory(engine)

        # the clock runs across Monday 08:00 in Berlin, one pass every 30 seconds
        for step in range(0, 20 * 60 + 1, 30):
            clock.now = REVIEW_AT - timedelta(minutes=10) + timedelta(seconds=step)
            daemon_pass(factory, config)
            sent = {m: len(r) for m, r in reviews(server).items()}
            assert sent == ({m: 0 for m in MANAGERS} if clock.now < REVIEW_AT else {m: 1 for m in MANAGERS}), clock.now

        # a restart: a new engine, sessions and daemon on the same database, later that day
        restarted = make_engine(url)
        try:
            clock.now = REVIEW_AT + timedelta(hours=3)
            daemon_pass(session_factory(restarted), config)
            clock.now = REVIEW_AT + timedelta(days=1)  # and on Tuesday
            daemon_pass(session_factory(restarted), config)
            assert {m: len(r) for m, r in reviews(server).items()} == {m: 1 for m in MANAGERS}

            # a lead comes in during the week; next Monday brings the next week's review, once
            later = crm.deal("Umbrella trial", reps["carol"], created=IN_WEEK + timedelta(days=7), value=Decimal(7000))
            for minutes in (-1, 0, 1, 30):
                clock.now = REVIEW_AT + timedelta(days=7, minutes=minutes)
                daemon_pass(session_factory(restarted), config)
        finally:
            restarted.dispose()

    found = reviews(server)
    assert {m: len(r) for m, r in found.items()} == {m: 2 for m in MANAGERS}
    alice_first, alice_next = found["alice@acme.example"]
    boss_first, _ = found["boss@holding.example"]
    assert alice_first["Subject"] == "Pipeline review, week to Mon 23 Nov: 1 new, 2 advanced, 1 won, 1 lost; " \
                                     "1 deal to decide on"
    assert alice_next["Subject"].startswith("Pipeline review, week to Mon 30 Nov: 1 new, 0 advanced, 0 won, 0 lost")
    assert alice_first["Message-ID"] != alice_next["Message-ID"]

    text = alice_first.get_body(("plain",)).get_content()
    page = alice_first.get_body(("html",)).get_content()
    assert f"D-{deals['drifting']} Stale enquiry" in text and "Stale enquiry" in html.unescape(page)
    assert "Umbrella trial" in alice_next.get_body(("plain",)).get_content() and "Umbrella trial" not in text
    token_address = str(alice_first["Reply-To"])
    assert token_address.startswith("crm+") and f"Reassign: mailto:{token_address}?subject=[D-" in unquote(text)
    assert 'class="bar fill"' in page and "<script" not in page

    boss_text = boss_first.get_body(("plain",)).get_content()
    assert boss_first["Reply-To"] is None and "Reassign:" not in boss_text
    assert "boss@holding.example is not a rep's address" in boss_text
    assert "Email bob: mailto:bob@acme.example" in boss_text
