"""The command line as a user sees it: output, exit codes and one-line errors."""
from __future__ import annotations

import importlib.util
import json
from datetime import date, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from inboxcrm.cli import main
from inboxcrm.store.db import transaction
from inboxcrm.store.models import AuditEntry, Deal, StageChange

from .conftest import MAIL, refused
from .test_admin import add_message


def test_reps_add_list_remove(team):
    out = team("rep", "list").stdout.splitlines()
    assert out[0].split() == ["NAME", "EMAILS", "TIMEZONE", "ACTIVE", "OPEN", "DEALS", "MANAGER"]
    assert out[2].split() == ["bob", "bob@acme.example", "Europe/Berlin", "yes", "0", "no"]
    listed = json.loads(team("rep", "list", "--json").stdout)
    assert listed[0] == {"name": "alice", "emails": ["alice@acme.example"], "timezone": "UTC", "active": True,
                         "open_deals": 0, "manager": False}
    assert team("rep", "remove", "bob").stdout == "removed rep bob\n"
    assert "deactivated rep alice (not deleted: still named on 1 mailbox)" in team("rep", "remove", "alice").stdout


def test_mailboxes_add_list_remove(team):
    assert team("mailbox", "add", "bob", "--role", "rep", "--owner", "bob").stdout == \
        "added rep mailbox bob: owner bob, source rep-inbox, new senders: review\n"
    rows = json.loads(team("mailbox", "list", "--json").stdout)
    assert [(m["name"], m["policy"], m["source"]) for m in rows] == [("bob", "review", "rep-inbox"),
                                                                      ("sales", "create", "sales")]
    assert "sales  capture  alice  sales      create       0" in team("mailbox", "list").stdout
    assert team("mailbox", "remove", "bob").stdout == "removed mailbox bob\n"


def test_stages_add_move_remove(cli):
    assert cli("stage", "add", "Demo", "--after", "qual").stdout == "added open stage Demo at position 4\n"
    moved = cli("stage", "move", "demo", "--before", "new").stdout.splitlines()
    assert moved[1].split() == ["1", "Demo", "open", "0", "10%", "(default)"]
    rows = json.loads(cli("stage", "list", "--json").stdout)
    assert [r["name"] for r in rows] == ["Demo", "New", "Contacted", "Qualified", "Proposal", "Negotiation", "Won",
                                         "Lost"]
    assert cli("stage", "remove", "demo").stdout == "removed stage Demo\n"
    assert "the pipeline needs at least one open, one won and one lost stage" in refused(cli, "stage", "remove", "won")


def test_rules_add_list_remove(team):
    out = team("rule", "add", "web", "--when", "from-domain=formmailer.example", "--then", "form",
               "--then", "owner=round-robin:alice,bob", "--then", "stage=qual").stdout
    assert out == ("added rule web at position 1: when from-domain=formmailer.example then form, "
                   "owner=round-robin:alice,bob, stage=Qualified\n")
    assert json.loads(team("rule", "list", "--json").stdout) == [
        {"position": 1, "name": "web", "conditions": ["from-domain=formmailer.example"],
         "actions": ["form", "owner=round-robin:alice,bob", "stage=Qualified"]}]
    assert team("rule", "list").stdout.splitlines()[1].split() == [
        "1", "web", "from-domain=formmailer.example", "form,", "owner=round-robin:alice,bob,", "stage=Qualified"]
    assert team("rule", "remove", "web").stdout == "removed rule web\n"
    assert team("rule", "list").stdout.startswith("no rules yet")


@pytest.mark.parametrize("args, message", [
    (("deal", "stage", "D-1", "proposl"),
     'error: unknown stage "proposl"; stages are: New, Contacted, Qualified, Proposal, Negotiation, Won, Lost\n'),
    (("deal", "stage", "D-1", "n"),
     'error: ambiguous stage "n": it could be New, Negotiation; type more of the name\n'),
    (("deal", "owner", "D-1", "carol"), 'error: unknown rep "carol"; reps are: alice, bob\n'),
    (("deal", "value", "D-1", "12k"),
     'error: invalid value "12k"; expected a number of at least 0 such as 12000 or 12000.50\n'),
    (("deal", "show", "D-99"), 'error: no deal D-99; deal references look like D-42 (see "inboxcrm deals list")\n'),
    (("deal", "show", "X-1"),
     'error: invalid deal reference "X-1"; deal references look like D-42 (see "inboxcrm deals list")\n'),
    (("deal", "lost", "D-1", " "), 'error: a lost deal needs a reason: inboxcrm deal lost D-1 "REASON"\n'),
    (("rep", "add", "carol", "--email", "carol@x.example", "--timezone", "Mars"),
     'error: unknown timezone "Mars"; expected an IANA name such as UTC or Europe/Berlin\n'),
])
def test_errors_say_what_is_valid(team, args, message):
    team("lead", "add", "--email", "ann@northwind.example")
    assert refused(team, *args) == message


def test_bad_rule_action_and_bad_role_list_the_valid_ones(team):
    err = refused(team, "rule", "add", "r", "--then", "frob")
    assert err.startswith('error: invalid action "frob"; actions are: source=NAME') and "round-robin" in err
    err = refused(team, "mailbox", "add", "x", "--role", "boss")
    assert "'boss' is not one of 'capture', 'rep'" in err


def test_lead_then_deals_list_and_deal_show(team):
    out = team("lead", "add", "--email", "Ann@Northwind.example", "--name", "Ann Smith", "--owner", "alice",
               "--value", "12000").stdout
    assert out == "D-1: Ann Smith <ann@northwind.example> at Northwind, New, owner alice\n"
    listing = team("deals", "list").stdout.splitlines()
    assert listing[0].split()[:4] == ["DEAL", "CONTACT", "ADDRESS", "COMPANY"]
    assert listing[1].split() == ["D-1", "Ann", "Smith", "ann@northwind.example", "Northwind", "New", "alice",
                                  "12,000", "just", "now"]
    [row] = json.loads(team("deals", "list", "--json").stdout)
    assert (row["ref"], row["value"], row["stage"]) == ("D-1", 12000, "New")
    shown = team("deal", "show", "1").stdout
    assert shown.startswith("D-1  Northwind\n")
    assert "Contact:       Ann Smith, ann@northwind.example" in shown and "Value:         12,000" in shown
    detail = json.loads(team("deal", "show", "d-1", "--json").stdout)
    assert detail["history"][0]["to_stage"] == "New" and detail["company_domain"] == "northwind.example"
    assert "Northwind  northwind.example" in team("companies", "list").stdout
    assert json.loads(team("contacts", "list", "--json").stdout)[0]["addresses"] == ["ann@northwind.example"]


def test_deal_changes_write_history_and_audit(team, factory):
    team("lead", "add", "--email", "ann@northwind.example", "--owner", "alice")
    assert team("deal", "stage", "D-1", "PROP", "--reason", "quote sent").stdout == "D-1: stage New -> Proposal\n"
    due = (date.today() + timedelta(days=30)).isoformat()  # a past date is refused
    out = team("deal", "next", "D-1", "call about the quote", "--due", due, "--owner", "bob").stdout
    assert out == f"D-1: next-step (none) -> call about the quote (due {due}, owner bob)\n"
    assert team("deal", "note", "D-1", "they are keen").stdout == "D-1: note added\n"
    assert team("deal", "won", "D-1").stdout == "D-1: stage Proposal -> Won\n"
    assert team("deal", "stage", "D-1", "neg").stdout == "D-1: stage Won -> Negotiation\n"
    assert team("deal", "lost", "D-1", "budget cut").stdout == "D-1: stage Negotiation -> Lost\n"
    shown = team("deal", "show", "D-1").stdout
    assert "Lost reason:   budget cut" in shown and "Proposal -> Won" in shown
    with factory() as s:
        changes = s.scalars(select(StageChange).order_by(StageChange.id))
        history = [(h.from_stage, h.to_stage, h.reason) for h in changes]
        audit = [(a.action, a.actor) for a in s.scalars(select(AuditEntry).where(AuditEntry.entity == "deal")
                                                        .order_by(AuditEntry.id))]
    assert history[1:] == [("New", "Proposal", "quote sent"), ("Proposal", "Won", ""), ("Won", "Negotiation", ""),
                           ("Negotiation", "Lost", "budget cut")]
    assert [a for a, _ in audit] == ["create", "stage", "next-step", "note", "stage", "stage", "stage"]
    assert all(actor.startswith("cli:") for _, actor in audit)
    assert team("deals", "list").stdout.startswith("no deals match")
    assert "Lost" in team("deals", "list", "--all").stdout
    assert "█" in team("pipeline").stdout


def test_deals_list_quiet(team, factory):
    for address in ("a@one.example", "b@two.example", "c@three.example"):
        team("lead", "add", "--email", address)
    now = datetime.now(timezone.utc)
    with transaction(factory) as s:
        for deal_id, days in ((1, 30), (2, 12), (3, 2)):
            s.execute(update(Deal).where(Deal.id == deal_id).values(last_activity_at=now - timedelta(days=days)))
    refs = lambda *args: [r["ref"] for r in json.loads(team("deals", "list", *args, "--json").stdout)]  # noqa: E731
    assert refs() == ["D-3", "D-2", "D-1"]
    assert refs("--quiet") == ["D-2", "D-1"]  # quiet_days = 10 in the config
    assert refs("--quiet", "20") == ["D-1"]
    assert "30d ago" in team("deals", "list", "--quiet", "20").stdout


def test_deal_snooze_show_list_and_wake(team, factory):
    for address in ("a@one.example", "b@two.example"):
        team("lead", "add", "--email", address, "--owner", "alice")
    with transaction(factory) as s:
        s.execute(update(Deal).values(last_activity_at=datetime.now(timezone.utc) - timedelta(days=30)))
    today = datetime.now(timezone.utc).date()  # the team's time zone is UTC
    until = (today + timedelta(weeks=2)).isoformat()
    assert team("deal", "snooze", "D-1", "in", "2", "weeks").stdout == f"D-1: snooze (none) -> {until}\n"
    shown = team("deal", "show", "D-1").stdout.splitlines()
    assert shown[1] == f"  Snoozed until {until} (wake it: inboxcrm deal snooze D-1 off)"
    assert json.loads(team("deal", "show", "D-1", "--json").stdout)["snoozed_until"] == until
    assert "Snoozed" not in team("deal", "show", "D-2").stdout
    refs = lambda *args: [r["ref"] for r in json.loads(team("deals", "list", *args, "--json").stdout)]  # noqa: E731
    assert refs("--quiet") == ["D-2"] and refs() == ["D-1", "D-2"]  # snoozing counted as activity, listed first
    assert team("deal", "snooze", "D-1", "OFF").stdout == f"D-1: snooze {until} -> (none)\n"
    assert "Snoozed" not in team("deal", "show", "D-1").stdout
    assert json.loads(team("deal", "show", "D-1", "--json").stdout)["snoozed_until"] is None
    with factory() as s:
        assert [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.entity_id == 1,
                                                                     AuditEntry.entity == "deal"))] == [
            "create", "snooze", "snooze"]


def test_deal_snooze_refusals_say_what_is_valid(team):
    team("lead", "add", "--email", "a@one.example")
    today = datetime.now(timezone.utc).date()
    assert refused(team, "deal", "snooze", "D-1", "today") == (
        f"error: cannot snooze until {today}: expected a date after today ({today}) and at most 365 days ahead "
        f"({today + timedelta(days=365)}), such as 2 weeks or friday\n")
    assert refused(team, "deal", "snooze", "D-1", "someday") == (
        'error: invalid snooze "someday"; expected 3 days, 2 weeks or 1 month (also with in: in 2 weeks), '
        "until DATE, a weekday such as friday, YYYY-MM-DD, or off to wake the deal\n")
    team("deal", "won", "D-1")
    assert refused(team, "deal", "snooze", "D-1", "tomorrow") == (
        "error: D-1 is closed (Won); reopen it first: inboxcrm deal stage D-1 STAGE\n")
    assert "Missing argument 'WHEN" in refused(team, "deal", "snooze", "D-1")


def test_an_unmigrated_database_asks_for_init(tmp_path, config_file):
    result = CliRunner().invoke(main, ["--config", str(config_file), "--database-url",
                                       f"sqlite:///{tmp_path / 'fresh.db'}", "rep", "list"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: the database ") and result.stderr.endswith('run "inboxcrm init"\n')


def test_init_writes_a_config_and_creates_the_database(tmp_path):
    config = tmp_path / "etc" / "config.toml"
    args = ["--config", str(config), "--database-url", f"sqlite:///{tmp_path / 'data' / 'crm.db'}"]
    result = CliRunner().invoke(main, [*args, "init"])
    assert result.exit_code == 0, result.output
    assert f"config: wrote {config} from the example" in result.stdout and "created (revision" in result.stdout
    assert "[team]" in config.read_text()
    # A new team is told that command mail is refused unless it carries the rep's token.
    assert "commands by email (once [commands] address is set): a command email needs the rep's reply " \
           "token" in result.stdout and "trusted_authserv_ids" in result.stdout
    assert CliRunner().invoke(main, [*args, "rep", "list"]).stdout.startswith("no reps yet")
    again = CliRunner().invoke(main, [*args, "init"]).stdout
    assert "exists, kept as it is" in again and "is up to date" in again


def test_review_and_quarantine_listings(team, factory):
    for status, mid in (("held", "held@x.example"), ("quarantined", "broken@x.example")):
        add_message(factory, status, message_id=mid, raw=b"Subject: x\r\n\r\nbody", subject="x",
                    from_address="new@northwind.example", reason="why-" + status, detail="detail")
    assert json.loads(team("held", "list", "--json").stdout)[0]["mailboxes"] == ["sales"]
    assert "why-held" in team("held", "list").stdout
    assert "why-quarantined" in team("quarantine", "list").stdout
    shown = team("quarantine", "show", "2").stdout
    assert shown.replace("\r\n", "\n").endswith("reason: why-quarantined\ndetail: detail\n\nSubject: x\n\nbody\n")
    assert json.loads(team("quarantine", "show", "2", "--json").stdout)["message_id"] == "broken@x.example"
    assert "no quarantined message 1" in refused(team, "quarantine", "show", "1")


needs = lambda module: pytest.mark.skipif(importlib.util.find_spec(module) is None,  # noqa: E731
                                          reason=f"{module} is not written yet")


@needs("inboxcrm.app.importer")
def test_import_then_rule_explain(team, tmp_path):
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "one.eml").write_bytes((MAIL / "pipeline-new-lead-company.eml").read_bytes())
    result = team("import", str(tmp_path / "mail"), "--mailbox", "sales")
    assert result.stdout.startswith("imported 1 message into sales: 1 ")
    explained = json.loads(team("rule", "explain", str(MAIL / "pipeline-new-lead-company.eml"), "--json").stdout)
    assert explained and all({"stage", "rule", "fired", "detail"} <= set(e) for e in explained)
    assert "unknown mailbox" in refused(team, "import", str(tmp_path / "mail"), "--mailbox", "nope")


def test_import_names_the_files_it_could_not_read_and_imports_the_rest(team, tmp_path):
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "one.eml").write_bytes((MAIL / "pipeline-new-lead-company.eml").read_bytes())
    (tmp_path / "mail" / "loop.eml").symlink_to(tmp_path / "mail" / "loop.eml")  # unreadable, even for root
    result = team("import", str(tmp_path / "mail"), "--mailbox", "sales")
    assert result.stdout.startswith("imported 1 message into sales")
    assert "skipped 1 unreadable file" in result.stderr and "loop.eml" in result.stderr
    assert "Traceback" not in result.output


def test_python_dash_m_runs_the_same_command_line():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "inboxcrm", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "Usage: inboxcrm" in result.stdout and "deals" in result.stdout


# -- views, pure ----------------------------------------------------------------------------

def test_tables_align_and_cut_long_cells():
    from inboxcrm.core import views

    rows = [type("Row", (), {"name": "a" * 40, "n": 7})(), type("Row", (), {"name": "b", "n": 12})()]
    listing = views.Listing((views.col("NAME", "name", 10), views.col("N", "n", right=True)), "empty")
    assert views.table(rows, listing).splitlines() == ["NAME         N", "aaaaaaaaa…   7", "b           12"]
    assert views.table([], listing) == "empty"


def test_relative_times_money_and_json():
    from decimal import Decimal

    from inboxcrm.app.deals import StageSummary
    from inboxcrm.core import views

    now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    assert [views.ago(now - d, now) for d in (timedelta(seconds=5), timedelta(minutes=5), timedelta(hours=3),
                                              timedelta(days=3), timedelta(days=90))] == [
        "just now", "5m ago", "3h ago", "3d ago", "2026-08-25"]
    assert (views.money(Decimal("12000")), views.money(Decimal("1234.5"))) == ("12,000", "1,234.50")
    assert views.duration(3 * 3600 + 5 * 60 + 7) == "3h 5m"
    summary = [StageSummary("New", "open", 4, Decimal("1000")), StageSummary("Won", "won", 1, Decimal("0"))]
    assert json.loads(views.to_json(summary)) == [{"stage": "New", "kind": "open", "deals": 4, "value": 1000},
                                                  {"stage": "Won", "kind": "won", "deals": 1, "value": 0}]
    lines = views.render_pipeline(summary).splitlines()
    assert lines[0] == "New  " + "█" * views.BAR_WIDTH + "    4         1,000"
    assert lines[1].startswith("Won  " + "█" * 8 + " ") and lines[-1] == "open: 4 deals worth 1,000"


@needs("inboxcrm.app.intake")
def test_review_accept_reject_and_quarantine_retry(team, factory):
    prospect = (MAIL / "classify-prospect.eml").read_bytes()
    held = add_message(factory, "held", message_id="held@x.example", raw=prospect, from_address="buyer@x.example")
    other = add_message(factory, "held", message_id="other@x.example", raw=prospect.replace(b"quote-40", b"q2"),
                        from_address="spam@y.example")
    broken = add_message(factory, "quarantined", message_id="quote-40b@northwind.example",
                         raw=prospect.replace(b"quote-40@", b"quote-40b@"), reason="internal-error")
    assert team("held", "accept", str(held)).stdout.startswith(f"message {held}: processed (")
    assert team("held", "reject", str(other)).stdout == f"message {other}: rejected (review-rejected)\n"
    assert json.loads(team("held", "list", "--json").stdout) == []
    assert team("quarantine", "retry", "--all").stdout.startswith(f"message {broken}: ")
    assert "give a message ID or --all" in refused(team, "quarantine", "retry")
    assert f"no message {held} with status quarantined" in refused(team, "quarantine", "retry", str(held))


def test_init_refuses_a_config_folder_it_cannot_create(tmp_path):
    blocker = tmp_path / "etc"
    blocker.write_text("a file where the folder should be")
    result = CliRunner().invoke(main, ["--config", str(blocker / "config.toml"), "--database-url",
                                       f"sqlite:///{tmp_path / 'crm.db'}", "init"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == (f"error: cannot create the folder {blocker} for the configuration (File exists); "
                             f"give another place with --config PATH (or INBOXCRM_CONFIG)\n")


def test_rule_explain_of_a_folder_says_what_it_takes(team, tmp_path):
    assert refused(team, "rule", "explain", str(tmp_path)) == (
        f"error: {tmp_path} is a folder; give the path of one .eml file, or the Message-ID of a stored message\n")


def test_every_cli_module_prints_through_the_one_safe_echo():
    """``cli.echo`` makes control characters visible; a bare ``click.echo`` elsewhere would let a
    subject drive the terminal, so none may exist."""
    import ast
    from pathlib import Path

    import inboxcrm

    bare = []
    paths = sorted((Path(inboxcrm.__file__).parent / "cli").glob("*.py"))
    assert len(paths) > 5  # the folder of command modules, not an empty match
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        allowed = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "echo"
                   for n in ast.walk(f)}
        bare += [f"{path.name}:{node.lineno}" for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr in ("echo", "secho")
                 and isinstance(node.value, ast.Name) and node.value.id == "click" and id(node) not in allowed]
    assert bare == []
