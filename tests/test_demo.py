"""``inboxcrm demo`` on a machine with nothing set up: no config, no database, no environment."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from inboxcrm.cli import main

TIMES = re.compile(r"\d{4}-\d\d-\d\d|\d+[smhd] ago|just now")  # relative to when it ran


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``inboxcrm ARGS`` with HOME and the XDG folders inside tmp_path: the user's own files are
    never read or touched."""
    home = tmp_path / "home"
    for var, path in (("HOME", home), ("XDG_CONFIG_HOME", home / ".config"), ("XDG_DATA_HOME", home / ".local/share"),
                      ("XDG_STATE_HOME", home / ".local/state"), ("XDG_CACHE_HOME", home / ".cache")):
        monkeypatch.setenv(var, str(path))
    for var in ("INBOXCRM_CONFIG", "INBOXCRM_DATABASE_URL", "STATE_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(main, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke


def section(out: str, title: str) -> list[str]:
    """The lines after a heading such as "Deals:", up to the next blank line."""
    lines = out.split(f"\n{title}", 1)[1].split("\n\n", 1)[0].splitlines()
    return lines[1:]


def test_demo_tells_the_whole_story(run, tmp_path):
    out = run("demo", "--data-dir", str(tmp_path / "demo"))
    pipeline = section(out, "Pipeline (open deals per stage):")
    assert [line.split()[0] for line in pipeline] == ["New", "Contacted", "Qualified", "Proposal", "Negotiation",
                                                      "Won", "Lost"]
    deals = section(out, "Deals:")[1:]  # after the column headings
    refs = [line.split()[0] for line in deals]
    assert "D-1" in refs and len(refs) >= 5 and all(re.fullmatch(r"D-\d+", ref) for ref in refs)
    tom = next(line for line in deals if "Tom Becker" in line)
    assert "tom.becker@northwind.example" in tom and "Proposal" in tom and "OVERDUE" in tom
    held = section(out, "Held for review")
    assert len(held) == 1 and "sam@contoso-dental.example" in held[0]
    assert "Held for review (1)" in out
    quarantined = section(out, "Quarantine")
    assert len(quarantined) == 1 and "no-sender" in quarantined[0]
    assert "Quarantine (1)" in out
    assert not (tmp_path / "home").exists()  # nothing written outside --data-dir


def test_demo_gives_the_same_output_every_time(run, tmp_path):
    first = run("demo", "--data-dir", str(tmp_path / "demo"))
    second = run("demo", "--data-dir", str(tmp_path / "demo"))  # a fresh database, not a second import
    assert TIMES.sub("<time>", second) == TIMES.sub("<time>", first)
    assert "1 held, 2 processed" in second  # imported afresh, not recognised as duplicates


def test_the_printed_config_opens_the_demo_database(run, tmp_path):
    out = run("demo", "--data-dir", str(tmp_path / "demo"))
    (config,) = set(re.findall(r"inboxcrm --config (\S+) ", out))
    listed = json.loads(run("--config", config, "deals", "list", "--json"))
    shown = [line.split()[0] for line in section(out, "Deals:")[1:]]
    assert [deal["ref"] for deal in listed] == shown
    assert any(deal["contact"] == "Tom Becker" and deal["stage"] == "Proposal" for deal in listed)


def test_demo_counts_read_as_english(run, tmp_path):
    out = run("demo", "--data-dir", str(tmp_path / "demo"))
    assert not re.search(r"\b1 messages\b", out)


def test_demo_writes_alices_digest_as_a_page_to_open(run, tmp_path):
    out = run("demo", "--data-dir", str(tmp_path / "demo"))
    (subject,) = re.findall(r"Alice's digest for today, the email she gets at her digest time: (.+)", out)
    (path,) = re.findall(r"open it in a browser: (\S+)", out)
    assert path == str((tmp_path / "demo" / "digest-alice.html").resolve())
    html = Path(path).read_text(encoding="utf-8")
    assert subject.startswith("inboxcrm: 6 deals: 1 overdue") and f"<title>{subject}</title>" in html
    assert "Tom Becker" in html and "Send the support contract draft" in html  # the overdue step
    # quick actions to the command address, with Alice's reply token
    assert re.search(r"mailto:crm%2B[a-z2-7]{10}@brightpath\.example\?subject=%5BD-", html)
