"""``inboxcrm demo``: a fresh install shows what it does, with no configuration at all.

It builds a throw-away CRM for "Brightpath Consulting" in its own folder (never the user's
real database), imports the sample mailboxes shipped in the package, and prints the pipeline.
"""
from __future__ import annotations

from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Callable

from . import admin, deals, views
from .config import database_url, default_data_dir, load_config
from .db import make_engine, session_factory, transaction, upgrade
from .importer import import_path

TEAM_DOMAIN = "brightpath.example"
ACTOR = "demo"
# (mailbox, owner, role, source, policy, sample file, what it stands for)
MAILBOXES = (
    ("sales", "alice", "capture", "sales-inbox", "create", "sales.mbox", "sales@ shared inbox"),
    ("alice", "alice", "rep", "rep-inbox", "review", "alice.mbox", "Alice's inbox and Sent"),
    ("bob", "bob", "rep", "rep-inbox", "review", "bob.mbox", "Bob's Sent folder"),
)
RULES = (
    ("web-form", ["from-domain=formmailer.example"], ["form", "source=website", "owner=round-robin:alice,bob"]),
    ("partner-referrals", ["from-domain=partnerco.example"], ["source=referral", "score+=15"]),
)


def sample_dir() -> Path:
    return Path(str(files("inboxcrm") / "sample"))


def _fresh(data_dir: Path) -> Path:
    """A new demo database each run, so the demo always tells the same story."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    config = data_dir / "config.toml"
    config.write_text(
        "# Written by `inboxcrm demo`: the demo's own database, never your real one.\n"
        f'[database]\nurl = "sqlite:///{db}"\n\n[team]\ndomains = ["{TEAM_DOMAIN}"]\n', encoding="utf-8")
    return config


def run_demo(data_dir: Path | None, echo: Callable[[str], None]) -> Path:
    """Returns the demo's config file, so the caller can point the user at it."""
    data_dir = data_dir or default_data_dir() / "demo"
    config_path = _fresh(data_dir)
    config = load_config(config_path, must_exist=True)
    engine = make_engine(database_url(config.database))
    upgrade(engine)
    factory = session_factory(engine)
    now = datetime.now(timezone.utc)

    echo(f"inboxcrm demo: Brightpath Consulting ({TEAM_DOMAIN}), reps Alice and Bob\n")
    with transaction(factory) as s:
        for rep in ("alice", "bob"):
            admin.add_rep(s, now, ACTOR, rep, [f"{rep}@{TEAM_DOMAIN}"])
        for name, owner, role, source, policy, _, _ in MAILBOXES:
            admin.add_mailbox(s, now, ACTOR, name, owner, role, source, policy)
        for name, when, then in RULES:
            admin.add_rule(s, now, ACTOR, name, when, then)
    echo("Routing rules: " + "; ".join(f"{n}: {' '.join(w)} -> {', '.join(t)}" for n, w, t in RULES))

    echo("\nImporting the sample mailboxes:")
    for name, _, _, _, _, sample, label in MAILBOXES:
        report = import_path(factory, config, name, sample_dir() / sample)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
        echo(f"  {label:<24} {report.total:>3} messages: {counts}")

    with factory() as s:
        echo("\nPipeline (open deals per stage):")
        echo(views.render_pipeline(deals.pipeline_summary(s)))
        echo("\nDeals:")
        echo(views.table(deals.list_deals(s, now), views.deals_listing(now)))
        held = admin.list_review(s)
        echo(f"\nHeld for review ({len(held)}): new senders in a rep's own inbox wait for a yes or no.")
        for row in held:
            echo(f"  #{row.id} {row.from_address}: {row.subject}")
        bad = admin.list_quarantine(s)
        echo(f"\nQuarantine ({len(bad)}): kept with their raw bytes, never dropped.")
        for row in bad:
            echo(f"  #{row.id} {row.reason}: {row.detail}")
    engine.dispose()
    cmd = f"inboxcrm --config {config_path}"
    echo("\nNoise (auto-replies, bounces, newsletters) and internal mail were stored but made no deals.")
    echo("Explore the demo CRM:")
    echo(f"  {cmd} deal show D-1        the contact, stage history and message timeline")
    echo(f"  {cmd} deals list --quiet   deals with no email for 14 days")
    echo(f"  {cmd} review list          accept or reject held senders")
    echo(f"  {cmd} rule explain <Message-ID>   why a message went where it went")
    echo("Set up your own: inboxcrm init, then rep add, mailbox add and import (see README.md).")
    return config_path
