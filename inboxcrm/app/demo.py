"""``inboxcrm demo``: a fresh install shows what it does, with no configuration at all.

It builds a throw-away CRM for "Brightpath Consulting" in its own folder (never the user's
real database), imports the sample mailboxes shipped in the package, and prints the pipeline.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo

from inboxcrm.app import deals, notify, team
from inboxcrm.app.importer import import_path
from inboxcrm.clock import utcnow
from inboxcrm.config import default_data_dir, load_config
from inboxcrm.core import views
from inboxcrm.errors import Invalid
from inboxcrm.mail import render
from inboxcrm.private_files import make_private_dir
from inboxcrm.store.db import (
    database_url,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)
from inboxcrm.store.deal_queries import contact_by_address, open_deal_ids
from inboxcrm.store.demo_queries import all_flags

TEAM_DOMAIN = "brightpath.example"
ACTOR = "demo"
# (mailbox, owner, role, source, policy, sample file, what it stands for)
MAILBOXES = (
    ("sales", "alice", "capture", "sales-inbox", "create", "sales.mbox", "sales@ shared inbox"),
    ("alice", "alice", "rep", "rep-inbox", "review", "alice.mbox", "Alice's inbox and Sent"),
    ("bob", "bob", "rep", "rep-inbox", "review", "bob.mbox", "Bob's Sent folder"),
)
# (contact address, new stage or None, value, next step, due in days from today)
DEMO_WORK = (
    ("tom.becker@northwind.example", "Proposal", "18000", "Send the support contract draft", -2),
    ("maria.lopez@harbor-logistics.example", None, "40000", "Call Maria about the portal scope", 1),
    ("jane.doe@gmail.com", None, "2500", "Follow up on the starter package", 3),
)
RULES = (
    ("web-form", ["from-domain=formmailer.example"], ["form", "source=website", "owner=round-robin:alice,bob"]),
    ("partner-referrals", ["from-domain=partnerco.example"], ["source=referral", "score+=15"]),
)


def _open_deal_of(session, address: str) -> str:
    """The demo's story names people, not numbers: deal references depend on import order."""
    contact_id, _owner = contact_by_address(session, address)
    return f"D-{open_deal_ids(session, contact_id)[0]}"


def sample_dir() -> Path:
    return Path(str(files("inboxcrm") / "sample"))


def _fresh(data_dir: Path) -> Path:
    """A new demo database each run, so the demo always tells the same story. The folder is
    private like the real data directory: the sample mail stands for a team's real mail."""
    db, config = data_dir / "demo.db", data_dir / "config.toml"
    try:
        make_private_dir(data_dir)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        _write_config(config, db)
    except OSError as e:
        raise Invalid(f"demo folder {data_dir}: cannot write it ({e.strerror}); expected a folder you can write, "
                      f"given with inboxcrm demo --data-dir FOLDER") from None
    return config


def _write_config(config: Path, db: Path) -> None:
    config.write_text(
        "# Written by `inboxcrm demo`: the demo's own database, never your real one.\n"
        f'[database]\nurl = "sqlite:///{db}"\n\n[team]\ndomains = ["{TEAM_DOMAIN}"]\n\n'
        f'[commands]\naddress = "crm@{TEAM_DOMAIN}"\ntoken_key_file = "reply-token.key"  # beside this file: the demo writes nothing elsewhere\n',
        encoding="utf-8")


@dataclass(frozen=True)
class DigestPage:
    subject: str
    path: Path


def _write_digest(session, config, data_dir: Path, now: datetime) -> DigestPage:
    """Alice's digest as the HTML file a browser shows: what a rep sees of inboxcrm every day."""
    schedule = notify.schedule_for(session, config, "alice")
    mail = notify.preview(session, config, schedule, now.astimezone(schedule.zone).date(), now,
                          render.template_env(config.digest.templates_dir))
    path = (data_dir / "digest-alice.html").resolve()
    path.write_text(mail.html, encoding="utf-8")
    return DigestPage(mail.subject, path)


def run_demo(data_dir: Path | None, echo: Callable[[str], None]) -> Path:
    """Returns the demo's config file, so the caller can point the user at it."""
    data_dir = data_dir or default_data_dir() / "demo"
    config_path = _fresh(data_dir)
    config = load_config(config_path, must_exist=True)
    engine = make_engine(database_url(config.database))
    upgrade(engine)
    factory = session_factory(engine)
    now = utcnow()

    echo(f"inboxcrm demo: Brightpath Consulting ({TEAM_DOMAIN}), reps Alice and Bob\n")
    with transaction(factory) as s:
        for rep in ("alice", "bob"):
            team.add_rep(s, now, ACTOR, rep, [f"{rep}@{TEAM_DOMAIN}"])
        for name, owner, role, source, policy, _, _ in MAILBOXES:
            team.add_mailbox(s, now, ACTOR, name, owner, role, source, policy)
        for name, when, then in RULES:
            team.add_rule(s, now, ACTOR, name, when, then)
    echo("Routing rules: " + "; ".join(f"{n}: {' '.join(w)} -> {', '.join(t)}" for n, w, t in RULES))

    echo("\nImporting the sample mailboxes:")
    for name, _, _, _, _, sample, label in MAILBOXES:
        report = import_path(factory, config, name, sample_dir() / sample)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
        echo(f"  {label:<24} {views.plural(report.total, 'message'):>12}: {counts}")

    with transaction(factory) as s:  # what Alice would do after reading her mail
        today = now.astimezone(ZoneInfo(config.team.timezone)).date()
        for address, stage, value, step, due in DEMO_WORK:
            deal = _open_deal_of(s, address)
            if stage:
                deals.set_stage(s, now, "alice", deal, stage, "demo: rep update")
            deals.set_value(s, now, "alice", deal, value)
            deals.set_next(s, now, "alice", deal, step, today + timedelta(days=due), "alice")
    echo("Alice then set values and next steps on three deals (one overdue) and moved one to Proposal.")

    with factory() as s:
        echo("\nPipeline (open deals per stage):")
        echo(views.render_pipeline(deals.pipeline_summary(s)))
        echo("\nDeals:")
        echo(views.table(deals.list_deals(s, now), views.deals_listing(now.astimezone(ZoneInfo(config.team.timezone)))))
        held = team.list_review(s)
        echo(f"\nHeld for review ({len(held)}): new senders in a rep's own inbox wait for a yes or no.")
        for row in held:
            echo(f"  #{row.id} {row.from_address}: {row.subject}")
        flags = all_flags(s)
        echo(f"\nFlags ({len(flags)}): things a rep should look at.")
        for deal_id, kind, detail in flags:
            echo(f"  D-{deal_id} {kind}: {detail}")
        bad = team.list_quarantine(s)
        echo(f"\nQuarantine ({len(bad)}): kept with their raw bytes, never dropped.")
        for row in bad:
            echo(f"  #{row.id} {row.reason}: {row.detail}")
        page = _write_digest(s, config, data_dir, now)
        echo(f"\nAlice's digest for today, the email she gets at her digest time: {page.subject}")
        echo(f"  open it in a browser: {page.path}")
    engine.dispose()
    cmd = f"inboxcrm --config {config_path}"
    echo("\nNoise (auto-replies, bounces, newsletters) and internal mail were stored but made no deals.")
    echo("A duplicate is a message already stored from another mailbox: kept once, with both copies.")
    echo("Explore the demo CRM:")
    echo(f"  {cmd} deal show D-1        the contact, stage history and message timeline")
    echo(f"  {cmd} deals list --quiet   deals with no activity for 14 days")
    echo(f"  {cmd} held list            accept or reject held senders")
    echo(f"  {cmd} rule explain <Message-ID>   why a message went where it went")
    echo(f"  {cmd} digest preview bob   the digest another rep would get")
    echo("Set up your own: inboxcrm init, then rep add, mailbox add and import (see README.md).")
    return config_path
