"""import-csv: a spreadsheet moves in row by row, all or nothing, and a second import changes nothing.

The database cases run on SQLite and PostgreSQL through the command line; the file-reading
rules (encodings, delimiters, headers, hostile cells) are checked on ``core.csv_rows`` directly.
"""
from __future__ import annotations

import codecs
import time
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from inboxcrm.core import csv_rows
from inboxcrm.errors import Invalid
from inboxcrm.store.db import session_factory, transaction
from inboxcrm.store.models import AuditEntry, Base, Deal, Note

TODAY = date(2026, 3, 2)


def counts(engine) -> dict[str, int]:
    """Rows in every table: what an import that should change nothing must leave as it was."""
    with engine.connect() as conn:
        return {t.name: conn.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def write(tmp_path, text: str, name: str = "leads.csv", encoding: str = "utf-8") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


GOOD = ("E-mail,Full name,Company name,Deal stage,Owner,Deal value,Next step,Due date,Lead source,Notes\n"
        "nora@northwind.example,Nora Ødegård,Northwind,Qualified,alice,\"12,000\",send proposal,2025-01-05,fair,"
        "\"=HYPERLINK(\"\"http://evil\"\")\nsecond line\"\n"
        "ann@gmail.com,Ann,Northwind,,bob@acme.example,9000.5,,,,\n"
        "zed@shop.example,@Zed,,Proposal,,,,,,\n")


# -- the file: encodings, delimiters, headers ----------------------------------------------------

@pytest.mark.parametrize("encoding,expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"),
                                               ("cp1252", None), ("latin-1", None)])
def test_encodings_are_detected(encoding, expected):
    text, used = csv_rows.decode("Name,Email\nZoë Ñúñez – “CEO”,zoe@x.example\n".encode(encoding)
                                 if encoding != "latin-1" else "Name,Email\nZoë Ñúñez,zoe@x.example\n".encode(encoding))
    assert "Zoë Ñúñez" in text and not text.startswith("\ufeff")
    if expected:
        assert used == expected
    else:
        assert codecs.lookup(used).name in ("cp1252", "latin-1", "iso8859-15")


def test_a_binary_file_is_refused_not_imported():
    with pytest.raises(Invalid, match="not a text spreadsheet .*NUL byte"):
        csv_rows.decode(b"PK\x03\x04\x14\x00\x06\x00 an xlsx saved as .csv")
    with pytest.raises(Invalid, match="unknown encoding"):
        csv_rows.decode(b"a", "klingon")
    with pytest.raises(Invalid, match="not utf-8: byte 0xe9 at offset 1"):
        csv_rows.decode(b"\x41\xe9", "utf-8")


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_detected(delimiter):
    text = delimiter.join(["Email", "Name", "Value"]) + "\n" + delimiter.join(["a@x.example", "A, Inc", "12"]) + "\n"
    if delimiter == ",":
        text = text.replace("A, Inc", '"A, Inc"')
    assert csv_rows.delimiter_of(text) == delimiter
    assert csv_rows.delimiter_of(text, "tab" if delimiter == "\t" else delimiter) == delimiter
    with pytest.raises(Invalid, match="expected one character"):
        csv_rows.delimiter_of(text, "ab")


def test_headers_by_alias_any_order_and_by_map():
    columns, ignored = csv_rows.map_header(["Phone", "Deal value", "E-mail", "Company name", "Full_Name"])
    assert columns == {"value": 1, "email": 2, "company": 3, "name": 4} and ignored == ("Phone",)
    columns, _ = csv_rows.map_header(["Courriel", "Nom"], csv_rows.parse_maps(["Email=Courriel", "name=Nom"]))
    assert columns == {"email": 0, "name": 1}
    with pytest.raises(Invalid, match='no email column .*"Courriel".*--map "Email=YOUR HEADER"'):
        csv_rows.map_header(["Courriel"])
    with pytest.raises(Invalid, match="both read as Email"):
        csv_rows.map_header(["Email", "E-mail"])
    with pytest.raises(Invalid, match="unknown field \"Phone\" in --map; expected one of Name, Email"):
        csv_rows.parse_maps(["Phone=Tel"])
    with pytest.raises(Invalid, match="expected FIELD=HEADER"):
        csv_rows.parse_maps(["Email"])


def _rows(text: str):
    layout, records = csv_rows.read_layout(text, "utf-8", None, {})
    return [csv_rows.read_row(line, fields, layout, TODAY) for line, fields in records]


def test_each_problem_of_a_row_is_named_with_its_line():
    rows = _rows("Email,Value,Due date,Next step,Name\n"
                 "a@x.example,12a,13/04/2025,,Ann\n"
                 "not an address,,,,\n"
                 "b@x.example,1,2025-01-01,call,B\x1b[2JB\n"
                 "c@x.example,1,,call,C,extra\n"
                 "\"d@x.example\",1,,\"call\nnow\",D\n"
                 ",,,,\n"
                 "e@x.example,-5,,,E\n")
    by_line = {r.line: r for r in rows if r is not None}
    assert "Value: invalid value \"12a\"" in by_line[2].text() and "invalid due date \"13/04/2025\"" in by_line[2].text()
    assert "a due date without a next step" in by_line[2].text()
    assert "invalid address \"not an address\"" in by_line[3].text()
    assert "control character U+001B" in by_line[4].text()
    assert "6 fields where the header has 5" in by_line[5].text()
    assert "Next step holds a line break" in by_line[6].text()  # the row starts on line 6, spans 7
    assert 8 not in by_line  # an empty row is skipped
    assert by_line[9].text().startswith("line 9: Value: invalid value \"-5\"")


def test_formulas_are_kept_as_text_and_the_exports_apostrophe_removed():
    rows = _rows("Email,Name,Notes\n"
                 "a@x.example,=1+1,@SUM(A1)\n"
                 "b@x.example,'=cmd|' /C calc'!A0,'-2\n"
                 "c@x.example,'plain,it's\n")
    assert (rows[0].name, rows[0].notes) == ("=1+1", "@SUM(A1)")
    assert (rows[1].name, rows[1].notes) == ("=cmd|' /C calc'!A0", "-2")
    assert (rows[2].name, rows[2].notes) == ("'plain", "it's")  # an apostrophe before no formula is the text's


def test_duplicate_addresses_name_both_lines():
    rows = [r for r in _rows("Email\na@x.example\nb@x.example\nA@X.example\n")]
    assert csv_rows.duplicates(rows) == {4: 2}


# -- on the database ---------------------------------------------------------------------------

def test_dry_run_reports_row_by_row_and_writes_nothing(team, engine, tmp_path):
    path = write(tmp_path, GOOD + "bad@x.example,Bad,,Nope,carol,12a,,,,\n")
    before = counts(engine)
    out = team("import-csv", path, "--dry-run").output
    assert "create: line 2: new lead nora@northwind.example at Northwind" in out
    assert "create: line 4: new lead ann@gmail.com at Northwind" in out  # the company line 2 makes
    assert "create: line 5: new lead zed@shop.example at Shop" in out
    assert ('refused: line 6: Value: invalid value "12a"' in out and 'unknown open stage "Nope"' in out
            and 'unknown rep "carol"' in out)
    assert "dry run, nothing written: 3 create, 1 refused" in out
    assert counts(engine) == before


def test_one_bad_row_refuses_the_file_unless_skip_bad(team, engine, tmp_path):
    path = write(tmp_path, GOOD + "bad@x.example,Bad,,Nope,,,,,,\nnora@northwind.example,Again,,,,,,,,\n")
    before = counts(engine)
    result = team("import-csv", path, code=2)
    assert "refused: line 6:" in result.stdout and "refused: line 7: nora@northwind.example is also on line 2" in result.stdout
    assert "refused: line 2: nora@northwind.example is also on line 7" in result.stdout
    assert "nothing imported: 3 rows refused" in result.stderr
    assert counts(engine) == before
    out = team("import-csv", path, "--skip-bad").output
    assert "imported: 2 create, 3 refused" in out
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count(Deal.id))) == 2


def test_rows_are_leads_with_every_field_and_the_audit(team, engine, tmp_path):
    path = write(tmp_path, GOOD)
    team("import-csv", path)
    shown = team("deal", "show", "D-1").output
    for part in ("Nora Ødegård", "Northwind", "Qualified", "alice", "12,000", "send proposal", "2025-01-05",
                 "fair", '=HYPERLINK("http://evil")'):
        assert part in shown, part
    assert "Proposal" in team("deal", "show", "D-3").output
    with session_factory(engine)() as session:
        notes = session.scalars(select(Note.text)).all()
        assert notes == ['=HYPERLINK("http://evil")\nsecond line']
        deal = session.get(Deal, 2)
        assert (deal.owner.name, deal.company.name, deal.source, deal.value) == ("bob", "Northwind", "import", 9000.5)
        actions = {(a.action, a.entity) for a in session.scalars(select(AuditEntry))}
        assert {("create", "deal"), ("create", "contact"), ("create", "company"), ("next-step", "deal"),
                ("note", "deal")} <= actions
    # a past due date is history, kept as it was: the digest shows the step overdue
    assert "2025-01-05" in team("deals", "list").output


def test_a_matching_contact_is_reported_and_update_decides(team, engine, tmp_path):
    team("import-csv", write(tmp_path, GOOD))
    before = counts(engine)
    out = team("import-csv", write(tmp_path, GOOD, "again.csv")).output
    assert "imported: 3 unchanged" in out
    assert counts(engine) == before  # every table, the audit log included

    changed = GOOD.replace('"12,000"', "15000").replace("Qualified", "Proposal")
    out = team("import-csv", write(tmp_path, changed, "changed.csv")).output
    assert ("differs: line 2: nora@northwind.example matches contact 1 (deal D-1); differs in: stage Qualified -> "
            "Proposal; value 12000.00 -> 15000.00; use --update") in out
    assert counts(engine) == before
    out = team("import-csv", write(tmp_path, changed, "changed.csv"), "--update").output
    assert "update: line 2: nora@northwind.example matches contact 1 (deal D-1); updates stage" in out
    shown = team("deal", "show", "D-1").output
    assert "Proposal" in shown and "15,000" in shown
    with session_factory(engine)() as session:
        changes = {(a.action, a.detail.get("new")) for a in session.scalars(select(AuditEntry)
                                                                           .where(AuditEntry.entity_id == 1))}
        assert ("stage", "Proposal") in changes and ("value", "15000.00") in changes
    after = counts(engine)
    assert "imported: 3 unchanged" in team("import-csv", write(tmp_path, changed, "changed.csv"), "--update").output
    assert counts(engine) == after


def test_wrong_files_are_refused_whole_with_what_to_do(team, tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00binary")
    assert "not a text spreadsheet" in team("import-csv", str(path), code=2).stderr
    assert "the file is empty" in team("import-csv", write(tmp_path, "\n\n", "empty.csv"), code=2).stderr
    assert "no email column" in team("import-csv", write(tmp_path, "Name\nAnn\n", "noemail.csv"), code=2).stderr


def test_latin1_and_utf16_files_import(team, engine, tmp_path):
    team("import-csv", write(tmp_path, "Name;Email;Company\nZoë Ñúñez;zoe@café.example;Café Ñ\n", "l.csv", "cp1252"))
    team("import-csv", write(tmp_path, "Name\tEmail\n李小龍\tli@dragon.example\n", "u.csv", "utf-16"))
    out = team("contacts", "list").output
    assert "Zoë Ñúñez" in out and "李小龍" in out and "Café Ñ" in team("companies", "list").output


# -- a hostile spreadsheet of 100,000 rows ---------------------------------------------------------

def _hostile(rows: int) -> tuple[bytes, set[int]]:
    """100,000 rows in Windows-1252 with formulas in every text field, and bad rows spread
    through: a duplicate address, a bad date, a bad amount, an unknown stage and owner."""
    lines = ["Name;E-mail;Company;Stage;Owner;Value;Next step;Due date;Source;Notes"]
    bad: set[int] = set()
    for i in range(rows):
        line = i + 2
        email, value, due, stage, owner = f"p{i}@firm{i % 500}.example", f"{i % 900 + 1}000", "2026-05-01", "New", "alice"
        if i % 20_000 == 7:
            email, _ = "p0@firm0.example", bad.update({line, 2})
        elif i % 20_000 == 8:
            due, _ = "31/12/2026", bad.add(line)
        elif i % 20_000 == 9:
            value, _ = "12 000 €", bad.add(line)
        elif i % 20_000 == 10:
            stage, _ = "Won", bad.add(line)
        elif i % 20_000 == 11:
            owner, _ = "mallory", bad.add(line)
        lines.append(f"=Ødegård {i};{email};+Firm {i % 500};{stage};{owner};{value};@call;{due};-web;"
                     f"\"=cmd|' /C calc'!A0; é\"")
    return ("\r\n".join(lines) + "\r\n").encode("cp1252"), bad


@pytest.fixture
def sqlite_engine(tmp_path, sqlite_template):
    import shutil

    from inboxcrm.store.db import make_engine

    path = tmp_path / "big.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def test_a_hostile_spreadsheet_of_100000_rows_loses_nothing(sqlite_engine):
    """All 100,000 rows are read, checked and planned (the file is refused whole, listing exactly
    the bad rows); then every good row is written with --skip-bad, in one transaction, within a
    minute on the 2-core CI machine (bench/csv_bench.py measures the import alone)."""
    from inboxcrm.app import csv_import, team

    rows = 100_000
    data, bad = _hostile(rows)
    factory = session_factory(sqlite_engine)
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    with transaction(factory) as session:
        team.add_rep(session, now, "test", "alice", ["alice@acme.example"])
    started = time.monotonic()
    before = counts(sqlite_engine)
    with transaction(factory) as session:
        refused = csv_import.import_csv(session, now, "test", data, today=TODAY, file_name="big.csv")
    assert not refused.written and counts(sqlite_engine) == before
    assert refused.rows == rows and {o.line for o in refused.outcomes if o.action == "refused"} == bad
    assert refused.counts["create"] == rows - len(bad) and refused.encoding in ("cp1252", "windows-1252")
    assert all(f"line {o.line}:" in o.text() for o in refused.outcomes)

    with transaction(factory) as session:
        done = csv_import.import_csv(session, now, "test", data, today=TODAY, skip_bad=True, file_name="big.csv")
    good = rows - len(bad)
    assert done.written and done.counts == {"create": good, "update": 0, "unchanged": 0, "differs": 0,
                                            "refused": len(bad)}
    after = counts(sqlite_engine)
    assert (after["deals"], after["contacts"], after["contact_addresses"], after["notes"], after["stage_history"]) \
        == (good,) * 5
    assert after["companies"] == 500
    # per lead: contact, deal, next step, note; and each company once
    assert after["audit_log"] - before["audit_log"] == 4 * good + 500
    with factory() as session:
        deal = session.scalar(select(Deal).order_by(Deal.id.desc()).limit(1))
        assert deal.contact.name == "=Ødegård 99999" and deal.source == "-web" and deal.next_step == "@call"
        assert deal.id == good and deal.contact.addresses[0].address == "p99999@firm499.example"
    assert time.monotonic() - started < 60


def _snapshot(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in Base.metadata.sorted_tables}


@pytest.fixture
def second_engine(engine, tmp_path, sqlite_template, request):
    """An empty database on the same backend as ``engine``: the SQLite template copied again,
    or on PostgreSQL the same database emptied, once the first import's rows are taken."""
    import shutil

    from inboxcrm.store.db import make_engine

    if engine.dialect.name == "sqlite":
        path = tmp_path / "second.db"
        shutil.copy(sqlite_template, path)
        other = make_engine(f"sqlite:///{path}")
        yield lambda: other
        other.dispose()
        return
    from .conftest import _reset_postgres

    _eng, stages = request.getfixturevalue("pg_database")

    def emptied():
        _reset_postgres(engine, stages)
        return engine

    yield emptied


def test_the_bulk_writer_writes_what_lead_by_lead_writes(engine, second_engine):
    """The same file imported with ``create_leads`` (the whole file at once) and with
    ``create_lead`` row by row (the intake's writer) leaves every table identical, ids and audit
    entries included: past SQLAlchemy's page of 1,000 rows, with companies several rows share
    (one made by a freemail row before the row at its domain), an existing company and contact,
    a contact without an open deal (--update gives it a new deal and its company), an updated
    deal, and refused rows skipped. Nothing is ignored: ``now`` is fixed, so even the dates match."""
    from inboxcrm.app import csv_import, deals, team

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    lines = ["Name,Email,Company,Stage,Owner,Value,Next step,Due date,Source,Notes",
             "Fay,fay@gmail.com,Firm 7,Qualified,bob,,,,,a freemail row naming a company a later row makes",
             "Old,old@known.example,,Qualified,,,,,,",
             "Nan,nan@known.example,,,,,,,,",
             "Kept,kept@gmail.com,,Proposal,alice,500,,,,",
             "Bad,bad@x.example,,Nope,,,,,,"]
    for i in range(2500):
        lines.append(f"P{i},p{i}@firm{i % 40}.example,Firm {i % 40},{('New', 'Qualified')[i % 2]},"
                     f"{('alice', 'bob', '')[i % 3]},{i}.5,{'call' if i % 4 else ''},"
                     f"{'2026-04-01' if i % 8 == 1 else ''},{('fair', '')[i % 2]},{f'note {i}' if i % 5 else ''}")
    data = ("\n".join(lines) + "\n").encode()
    taken = []
    for lead_by_lead, db in ((True, engine), (False, None)):
        db = db or second_engine()
        factory = session_factory(db)
        with transaction(factory) as session:
            team.add_rep(session, now, "test", "alice", ["alice@acme.example"])
            team.add_rep(session, now, "test", "bob", ["bob@acme.example"])
            deals.add_lead(session, now, "alice", "old@known.example", "Old", source="web")
            deals.add_lead(session, now, "alice", "kept@gmail.com", "", source="web")
            deals.mark_lost(session, now, "alice", "D-2", "no budget")
        with transaction(factory) as session:
            done = csv_import.import_csv(session, now, "test", data, today=TODAY, skip_bad=True, update=True,
                                         file_name="same.csv", lead_by_lead=lead_by_lead)
        assert done.counts == {"create": 2502, "update": 2, "unchanged": 0, "differs": 0, "refused": 1}
        taken.append(_snapshot(db))
    by_lead, bulk = taken
    assert len(by_lead["deals"]) == 2505 and len(by_lead["audit_log"]) > 3 * 2500
    for table in by_lead:
        assert bulk[table] == by_lead[table], table
