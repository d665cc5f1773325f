"""deals/contacts/companies list --csv: files a spreadsheet opens safely, and a deals export that
import-csv reads back: export, import into an empty database, export again gives the same bytes.
On SQLite and PostgreSQL, with data made through the command line as a team would."""
from __future__ import annotations

import csv
import io

from sqlalchemy import delete, func, select

from inboxcrm.store.models import Base, Deal

from .test_csv_import import counts

KEEP = {"reps", "rep_addresses", "stages", "mailboxes", "folder_positions", "alembic_version"}


def seed(cli) -> None:
    """Names, companies, stages, owners, values, next steps, due dates, sources and notes, with
    formulas, quotes, commas, line breaks, a terminal escape and non-ASCII text."""
    cli("lead", "add", "--email", "nora@northwind.example", "--name", "Nora Ødegård", "--company", "Northwind",
        "--owner", "alice", "--value", "12000", "--stage", "Qualified", "--source", "=HYPERLINK(\"http://x\")")
    cli("lead", "add", "--email", "ann@gmail.com", "--name", "@Ann, \"the boss\"", "--company", "Northwind",
        "--owner", "bob", "--source", "fair")
    cli("lead", "add", "--email", "li@dragon.example", "--name", "李小龍", "--company", "+Dragon 株式会社",
        "--value", "999.99")
    cli("lead", "add", "--email", "zed@shop.example", "--name", "-Zed")
    cli("deal", "next", "D-1", "send the proposal, then call", "--due", "2031-01-15")
    cli("deal", "next", "D-3", "=1+1", "--due", "2031-02-01")
    cli("deal", "note", "D-1", "met at the fair;\nwants a demo")
    cli("deal", "note", "D-1", "=cmd|' /C calc'!A0")
    cli("deal", "note", "D-3", "red \x1b[31malert\x1b[0m — ünïcödé")
    cli("deal", "stage", "D-4", "Proposal")


def export(cli, *args: str) -> bytes:
    return cli(*args).stdout_bytes


def empty_data(engine) -> None:
    """The database as a new team's: reps and stages, no contacts, companies, deals or audit."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in KEEP:
                conn.execute(delete(table))


def test_export_import_export_gives_identical_files(team, engine, tmp_path):
    seed(team)
    first = export(team, "deals", "list", "--csv")
    rows = list(csv.reader(io.StringIO(first.decode("utf-8"), newline="")))
    assert rows[0] == ["Name", "Email", "Company", "Stage", "Owner", "Value", "Next step", "Due date", "Source",
                       "Notes"]
    assert len(rows) == 5
    by_email = {r[1]: r for r in rows[1:]}
    assert by_email["nora@northwind.example"] == [
        "Nora Ødegård", "nora@northwind.example", "Northwind", "Qualified", "alice", "12000.00",
        "send the proposal, then call", "2031-01-15", "'=HYPERLINK(\"http://x\")",
        "met at the fair;\nwants a demo\n\n=cmd|' /C calc'!A0"]
    assert by_email["ann@gmail.com"][0] == "'@Ann, \"the boss\""
    assert by_email["li@dragon.example"][2:8] == ["'+Dragon 株式会社", "New", "", "999.99", "'=1+1", "2031-02-01"]
    assert "\x1b" not in by_email["li@dragon.example"][9] and "ünïcödé" in by_email["li@dragon.example"][9]
    assert by_email["zed@shop.example"][0] == "'-Zed"

    path = tmp_path / "deals.csv"
    path.write_bytes(first)
    empty_data(engine)
    assert "imported: 4 create" in team("import-csv", str(path)).output
    second = export(team, "deals", "list", "--csv")
    assert second == first

    before = counts(engine)
    assert "imported: 4 unchanged" in team("import-csv", str(path)).output
    assert counts(engine) == before


def test_bom_and_listings_of_contacts_and_companies(team, engine):
    seed(team)
    with_bom = export(team, "deals", "list", "--csv", "--bom")
    assert with_bom.startswith(b"\xef\xbb\xbfName,Email,")
    contacts = export(team, "contacts", "list", "--csv").decode("utf-8")
    table = list(csv.reader(io.StringIO(contacts, newline="")))
    assert table[0] == ["Name", "Email", "Other addresses", "Company", "Owner", "Source", "Open deals", "Deals"]
    assert ["'@Ann, \"the boss\"", "ann@gmail.com", "", "Northwind", "bob", "fair", "1", "1"] in table
    assert ["'-Zed", "zed@shop.example", "", "Shop", "", "manual", "1", "1"] in table
    companies = list(csv.reader(io.StringIO(export(team, "companies", "list", "--csv", "--bom").decode("utf-8-sig"),
                                            newline="")))
    assert companies[0] == ["Name", "Domain", "Contacts", "Open deals", "Deals"]
    assert ["'+Dragon 株式会社", "dragon.example", "1", "1", "1"] in companies
    assert "--bom goes with --csv" in team("contacts", "list", "--bom", code=2).stderr
    assert "give --json or --csv, not both" in team("deals", "list", "--csv", "--json", code=2).stderr
    with engine.connect() as conn:
        assert conn.scalar(select(func.count(Deal.id))) == 4
