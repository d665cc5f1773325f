"""A spreadsheet of leads as values: its bytes decoded, its delimiter found, its header mapped
to the fields a lead has, and each row read into a ``LeadRow`` or a ``RowError`` naming its line.

Pure, because the checks a row must pass are the same whether the file is only looked at
(``--dry-run``) or written, and a test can feed it hostile text without a database. What only
the database knows (is the stage real, is the owner a rep, is the address already a contact)
is the use case's (``app.csv_import``). The words a cell may hold are the command line's:
amounts and dates go through ``core.inputs``, addresses through ``core.addresses``, so a row is
refused for exactly what ``lead add`` and ``deal next --due`` would refuse.

The export writes the same columns (``HEADER``), so a file written by ``deals list --csv`` is a
file this module reads back: a cell neutralised against formulas on the way out (a leading
apostrophe, ``report_format.neutralise``) loses that apostrophe on the way in.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from inboxcrm.core import addresses
from inboxcrm.core.inputs import CENTS, DUE_FORMS, parse_value, read_date
from inboxcrm.core.report_format import cell_csv, neutralise
from inboxcrm.core.views import clip, printable
from inboxcrm.errors import Invalid

# The fields of a row, in the order the export writes them, with the header the export gives each.
FIELDS = ("name", "email", "company", "stage", "owner", "value", "next_step", "due", "source", "notes")
HEADER = {"name": "Name", "email": "Email", "company": "Company", "stage": "Stage", "owner": "Owner",
          "value": "Value", "next_step": "Next step", "due": "Due date", "source": "Source", "notes": "Notes"}
# Other headers spreadsheets and other CRMs' exports use for the same field (compared after
# ``_header_key``: any case, spaces, dashes, underscores and dots alike).
ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("contact", "contact name", "full name", "person", "lead", "lead name", "first and last name"),
    "email": ("e-mail", "email address", "e-mail address", "mail", "contact email", "work email", "email 1"),
    "company": ("company name", "organisation", "organization", "organisation name", "organization name",
                "account", "account name"),
    "stage": ("deal stage", "pipeline stage", "status", "lead status"),
    "owner": ("deal owner", "lead owner", "rep", "sales rep", "assigned to", "owner email"),
    "value": ("deal value", "amount", "deal amount", "deal size", "value (no currency)"),
    "next_step": ("next action", "next activity", "follow up", "follow-up", "todo"),
    "due": ("due", "next step due", "due on", "follow up date", "follow-up date", "next action date"),
    "source": ("lead source", "origin", "channel"),
    "notes": ("note", "comments", "comment", "description", "remarks"),
}
DEFAULT_SOURCE = "import"
SAMPLE_CHARS = 64 * 1024  # what the delimiter is guessed from: enough rows, bounded whatever the file
DELIMITERS = ",;\t|"
LIMITS = {"name": 200, "company": 200, "stage": 100, "owner": 320, "next_step": 500, "source": 100,
          "notes": 20_000}
MULTILINE = frozenset({"notes"})  # the one field where a line break is content
MAX_FIELD_CHARS = 1_000_000  # the csv module's own limit is 128 kB; past this a "cell" is a broken quote


@dataclass(frozen=True)
class LeadRow:
    """One row, read and checked as far as text alone can check it; None means an empty cell,
    which never clears anything stored."""

    line: int
    email: str
    name: str = ""
    company: str | None = None
    stage: str | None = None
    owner: str | None = None
    value: Decimal | None = None
    next_step: str | None = None
    due: date | None = None
    source: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class RowError:
    line: int
    problems: tuple[str, ...]
    email: str = ""  # as the cell had it, for the report
    stage: str | None = None  # the cells the database must judge, so that every problem of the row is listed
    owner: str | None = None

    def text(self) -> str:
        return f"line {self.line}: " + "; ".join(self.problems)


@dataclass(frozen=True)
class Layout:
    """How a file is written and which of its columns feed which field."""

    encoding: str
    delimiter: str
    columns: Mapping[str, int]  # field -> index in a row
    header: tuple[str, ...]
    ignored: tuple[str, ...]  # headers no field takes, reported so that nothing is dropped unseen


# -- bytes to text ------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _not_text(data: bytes, why: str) -> Invalid:
    return Invalid(f"the file is not a text spreadsheet ({why}); save it from the spreadsheet as "
                   f'"CSV UTF-8 (comma delimited)", or give its --encoding')


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """(text, encoding): a byte order mark decides; else UTF-8 if the bytes are valid UTF-8; else
    the legacy single-byte encoding charset-normalizer finds likeliest (Windows-1252 is what
    Excel writes in western Europe and America). A NUL byte or undecodable bytes mean a binary
    file (an .xlsx saved under the wrong name), refused whole rather than imported as garbage."""
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise Invalid(f'unknown encoding "{clip(encoding, 40)}"; expected a name such as utf-8, utf-16, '
                          f"windows-1252 or latin-1") from None
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise Invalid(f"the file is not {encoding}: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                          f"cannot be read; give the right --encoding, or leave it out to detect it") from None
        return _checked(text.removeprefix("\ufeff")), encoding
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(name).removeprefix("\ufeff")), name
            except UnicodeDecodeError as exc:
                raise _not_text(data, f"not valid {name} at offset {exc.start}") from None
    nul = data.find(b"\x00", 0, SAMPLE_CHARS)
    if nul >= 0:
        raise _not_text(data, f"a NUL byte at offset {nul}")
    try:
        return _checked(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000], cp_isolation=["cp1252", "latin_1", "iso8859_15", "cp850", "mac_roman"]).best()
    name = best.encoding if best is not None else "cp1252"
    for candidate in (name, "cp1252", "latin_1"):
        try:
            return _checked(data.decode(candidate)), candidate
        except UnicodeDecodeError:
            continue
    raise _not_text(data, "no encoding reads it")  # latin_1 reads any bytes: not reached


def _checked(text: str) -> str:
    if "\x00" in text:
        raise _not_text(b"", f"a NUL character at offset {text.index(chr(0))}")
    return text


def delimiter_of(text: str, given: str | None = None) -> str:
    """The given one (``\\t`` or ``tab`` for a tab), else the one csv.Sniffer finds in the first
    SAMPLE_CHARS among DELIMITERS, else a comma (a file of one column has none to find)."""
    if given is not None:
        wanted = {"\\t": "\t", "tab": "\t"}.get(given.lower(), given)
        if len(wanted) != 1 or wanted in "\"'\r\n" or wanted.isalnum():
            raise Invalid(f'invalid delimiter "{clip(given, 10)}"; expected one character such as , ; | or tab')
        return wanted
    sample = text[:SAMPLE_CHARS]
    if len(text) > SAMPLE_CHARS:  # a partial last line confuses the sniffer
        sample = sample[:sample.rfind("\n") + 1] or sample
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        first = sample.partition("\n")[0]
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


# -- the header -----------------------------------------------------------------------------

def _header_key(text: str) -> str:
    return " ".join(re.sub(r"[\s_\-.:]+", " ", (text or "").removeprefix("\ufeff")).split()).casefold()


_KNOWN = {_header_key(h): f for f, h in HEADER.items()} | {_header_key(f): f for f in FIELDS} | {
    _header_key(a): f for f, names in ALIASES.items() for a in names}


def field_named(text: str) -> str:
    """The field a --map names: its export header, its own name or an alias, in any case."""
    found = _KNOWN.get(_header_key(text))
    if found is None:
        raise Invalid(f'unknown field "{clip(text, 40)}" in --map; expected one of '
                      + ", ".join(HEADER.values()))
    return found


def parse_maps(maps: Iterable[str]) -> dict[str, str]:
    """``["Email=E-mail address"]`` -> {"email": "E-mail address"}: which header feeds a field."""
    chosen: dict[str, str] = {}
    for item in maps:
        field, eq, header = item.partition("=")
        if not eq or not field.strip() or not header.strip():
            raise Invalid(f'invalid --map "{clip(item, 60)}"; expected FIELD=HEADER such as '
                          f'"Email=E-mail address"')
        name = field_named(field)
        if name in chosen:
            raise Invalid(f"--map gives {HEADER[name]} twice; give one header per field")
        chosen[name] = header.strip()
    return chosen


def map_header(header: Sequence[str], maps: Mapping[str, str] | None = None) -> tuple[dict[str, int], tuple[str, ...]]:
    """(field -> column index, headers left out). A --map wins over the aliases; two columns
    feeding one field, a mapped header missing, or no email column are refused, naming what the
    file has."""
    maps = maps or {}
    keys = [_header_key(h) for h in header]
    columns: dict[str, int] = {}
    problems: list[str] = []
    has = ", ".join(f'"{clip(printable(h), 30)}"' for h in header) or "nothing"
    for field, wanted in maps.items():
        where = [i for i, k in enumerate(keys) if k == _header_key(wanted)]
        if not where:
            problems.append(f'--map {HEADER[field]}="{clip(wanted, 40)}": the header has no such column '
                            f"(it has {has})")
        else:
            columns[field] = where[0]
    taken = set(columns.values())
    for i, key in enumerate(keys):
        field = _KNOWN.get(key)
        if i in taken or field is None or field in maps:
            continue
        if field in columns:
            problems.append(f'columns "{clip(printable(header[columns[field]]), 30)}" and '
                            f'"{clip(printable(header[i]), 30)}" both read as {HEADER[field]}; '
                            f'choose one with --map "{HEADER[field]}=HEADER"')
            continue
        columns[field] = i
    if "email" not in columns and not problems:
        problems.append(f'no email column (the header has {has}); name it Email, or give '
                        f'--map "Email=YOUR HEADER"')
    if problems:
        raise Invalid("; ".join(problems))
    ignored = tuple(h for i, h in enumerate(header) if i not in columns.values() and h.strip())
    return columns, ignored


# -- rows ---------------------------------------------------------------------------------------

def records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, fields) for each row, header included; a quoted cell holding
    line breaks is one row that starts where its first line does."""
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise Invalid(f"line {start}: {exc}; the file's quoting is broken from here "
                          f"(a cell with an unpaired double quote?)") from None
        yield start, fields
        start = reader.line_num + 1


def read_layout(text: str, encoding: str, delimiter: str | None, maps: Mapping[str, str] | None
                ) -> tuple[Layout, Iterator[tuple[int, list[str]]]]:
    """The layout and the rows after the header."""
    chosen = delimiter_of(text, delimiter)
    rows = records(text, chosen)
    for _line, header in rows:
        if any(h.strip() for h in header):
            columns, ignored = map_header(header, maps)
            return Layout(encoding, chosen, columns, tuple(header), ignored), rows
    raise Invalid("the file is empty; expected a header row (Name, Email, Company, ...) and one row per lead")


def unneutralised(cell: str) -> str:
    """The text ``report_format.neutralise`` made ``cell`` from: the export's apostrophe before
    a formula goes; the formula itself stays text, since nothing here evaluates a cell."""
    if cell.startswith("'") and neutralise(cell[1:]) == cell:
        return cell[1:]
    return cell


def _control_problem(field: str, text: str) -> str | None:
    """A cell is refused for what a terminal would obey (house rule: ``views.printable`` shows
    them; here nothing is stored that a listing would have to disguise); a line break or tab
    only in the notes."""
    body = text.replace("\r\n", "\n")
    allowed = body if field in MULTILINE else body.replace("\n", "\x00").replace("\t", "\x00")
    if field not in MULTILINE and body != allowed:
        return f"{HEADER[field]} holds a line break or tab; expected one line"
    if printable(allowed.replace("\x00", "")) != allowed.replace("\x00", ""):
        bad = next(ch for ch in allowed if printable(ch) != ch and ch != "\x00")
        return f"{HEADER[field]} holds the control character U+{ord(bad):04X}; remove it"
    return None


def read_row(line: int, fields: Sequence[str], layout: Layout, today: date) -> LeadRow | RowError | None:
    """One row after the header; None for a row of empty cells (a spreadsheet's trailing rows).
    Every problem of the row is listed, not only the first."""
    if not any(f.strip() for f in fields):
        return None
    width = len(layout.header)
    extra = [f for f in fields[width:] if f.strip()]
    problems: list[str] = []
    if len(fields) != width and (len(fields) < width or extra):
        problems.append(f"{len(fields)} fields where the header has {width}; a cell with the delimiter "
                        f'"{printable(layout.delimiter)}" must be quoted')
    cells: dict[str, str] = {}
    for field, index in layout.columns.items():
        raw = fields[index] if index < len(fields) else ""
        cells[field] = unneutralised(raw.strip() if field not in MULTILINE else raw.strip(" \r\n\t"))
    values: dict[str, Any] = {}
    for field, text in cells.items():
        if not text:
            continue
        problem = _control_problem(field, text)
        if problem is None and len(text) > LIMITS.get(field, 320):
            problem = f"{HEADER[field]} has {len(text):,} characters; expected at most {LIMITS[field]:,}"
        if problem is None:
            try:
                values[field] = _value(field, text.replace("\r\n", "\n"), today)
            except Invalid as exc:
                problem = f"{HEADER[field]}: {exc}"
        if problem:
            problems.append(problem)
    email = cells.get("email", "")
    if not email:
        problems.append("no email; every row needs the contact's address")
    if cells.get("due") and not cells.get("next_step"):
        problems.append("a due date without a next step; give the step too, such as \"send the proposal\"")
    if problems:
        return RowError(line, tuple(problems), clip(printable(email), 80), values.get("stage"), values.get("owner"))
    return LeadRow(line=line, email=values["email"], name=values.get("name", ""), company=values.get("company"),
                   stage=values.get("stage"), owner=values.get("owner"), value=values.get("value"),
                   next_step=values.get("next_step"), due=values.get("due"), source=values.get("source"),
                   notes=values.get("notes"))


def _value(field: str, text: str, today: date) -> Any:
    if field == "email":
        address = addresses.normalize(text)
        if address is None:
            raise Invalid(f'invalid address "{clip(text, 60)}"; expected an address such as alice@example.com')
        return address
    if field == "value":
        return parse_value(text).quantize(CENTS)
    if field == "due":
        try:
            return read_date(text, today)
        except Invalid:
            raise Invalid(f'invalid due date "{clip(text, 40)}"; expected {DUE_FORMS} '
                          f"(a spreadsheet's own date format such as 03/04/2025 is ambiguous: "
                          f"format the column as YYYY-MM-DD)") from None
    return text


def duplicates(rows: Iterable[LeadRow]) -> dict[int, int]:
    """line -> the earlier line with the same address, for every later row: one contact, one row,
    since two rows for one person would be two answers to "what is their stage"; merging them
    silently would pick one."""
    first: dict[str, int] = {}
    found: dict[int, int] = {}
    for row in rows:
        if row.email in first:
            found[row.line] = first[row.email]
        else:
            first[row.email] = row.line
    return found


# -- writing ------------------------------------------------------------------------------------

def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows for a spreadsheet through the csv module, CRLF-terminated (RFC 4180), every text cell
    neutralised (``report_format.cell_csv``), dates ISO, money as plain decimals."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralise(h) for h in header])
    writer.writerows([cell_csv(c) for c in row] for row in rows)
    return out.getvalue()


def deal_header() -> tuple[str, ...]:
    return tuple(HEADER[f] for f in FIELDS)
