"""A report as people and programs read it: text for the terminal and the weekly review, JSON, CSV.

Pure: a ``metrics.Report`` in, a string or plain dict out. The same cell reads the same way
everywhere: a rate over too few deals says "too few (2 of 3)" and never a percentage, because
a percentage over a handful of deals reads as a fact. JSON keeps every count a rate was made
of, so a program can judge for itself; CSV keeps plain machine values (a rate as a fraction,
a duration in seconds) for a spreadsheet, with every text cell neutralised so that a lead source
a stranger could name (``=HYPERLINK(...)``) is shown by the spreadsheet, never run by it.
"""
from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from inboxcrm.core.metrics import Cell, Duration, Period, Rate, Report, Table
from inboxcrm.core.views import Column, Listing, duration, money, plural
from inboxcrm.core.views import table as text_table
from inboxcrm.errors import Invalid

NO_VALUE = "-"
NO_CHANGE = "no change"
NOT_COMPARABLE = "n/a"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# What spreadsheets read as the start of a formula or a command (OWASP "CSV injection"), with the
# full-width forms some of them accept too; tab and CR because a spreadsheet strips them and then
# sees what follows.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


# -- one cell -----------------------------------------------------------------------------------

def _is_number(cell: Cell) -> bool:
    return isinstance(cell, (int, Decimal)) and not isinstance(cell, bool)


def cell_text(cell: Cell) -> str:
    """A cell as a person reads it: "40% (4 of 10)", "too few (2 of 3)", "3d 4h", "12,000"; "none"
    for a rate or duration over no deal at all."""
    if cell is None:
        return NO_VALUE
    if isinstance(cell, Rate):
        counts = f"({cell.part:,} of {cell.whole:,})"
        if cell.value is None:
            return "none" if cell.whole == 0 else f"too few {counts}"
        return f"{cell.value * 100:.0f}% {counts}"
    if isinstance(cell, Duration):
        if cell.seconds is None:
            return "none" if cell.sample == 0 else f"too few ({cell.sample:,})"
        return duration(round(cell.seconds))
    if isinstance(cell, datetime):
        return cell.date().isoformat()
    if isinstance(cell, date):
        return cell.isoformat()
    if isinstance(cell, Decimal):
        return money(cell)
    if isinstance(cell, int) and not isinstance(cell, bool):
        return f"{cell:,}"
    return str(cell)


def cell_json(cell: Cell) -> Any:
    """A cell for a program: a rate keeps its counts (``rate`` is None when too few), a duration
    its sample; money is a decimal string, so no float rounds a cent away."""
    if isinstance(cell, Rate):
        return {"part": cell.part, "whole": cell.whole, "rate": cell.value}
    if isinstance(cell, Duration):
        return {"seconds": cell.seconds, "sample": cell.sample}
    if isinstance(cell, Decimal):
        return f"{cell:f}"
    if isinstance(cell, date):
        return cell.isoformat()
    return cell


def neutralise(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would take it for a formula: the
    apostrophe makes the cell text, and a person still reads the name."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _fraction(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def cell_csv(cell: Cell) -> str:
    """A cell for a spreadsheet: plain numbers (money as a decimal without grouping, a rate as a
    fraction, a duration in whole seconds), ISO dates; empty when there is no value or too few
    to say. Every text cell is neutralised."""
    if cell is None:
        return ""
    if isinstance(cell, Rate):
        return "" if cell.value is None else _fraction(cell.value)
    if isinstance(cell, Duration):
        return "" if cell.seconds is None else f"{cell.seconds:.0f}"
    if isinstance(cell, date):
        return cell.isoformat()
    if isinstance(cell, Decimal):
        return f"{cell:f}"
    if _is_number(cell):
        return str(cell)
    return neutralise(str(cell))


def change_text(current: Cell, previous: Cell) -> str:
    """How a figure moved since the previous period: "+3 (+25%)", "-1,200 (-8%)", "+5 pts" for a
    rate, "-2h" for a duration; "n/a" when either side has no value (or too few to say), because
    a change measured against noise is noise."""
    if isinstance(current, Rate) and isinstance(previous, Rate):
        if current.value is None or previous.value is None:
            return NOT_COMPARABLE
        points = round((current.value - previous.value) * 100)
        return NO_CHANGE if points == 0 else f"{points:+d} pts"
    if isinstance(current, Duration) and isinstance(previous, Duration):
        if current.seconds is None or previous.seconds is None:
            return NOT_COMPARABLE
        seconds = round(current.seconds - previous.seconds)
        return NO_CHANGE if seconds == 0 else ("+" if seconds > 0 else "-") + duration(abs(seconds))
    if _is_number(current) and _is_number(previous):
        diff = Decimal(current) - Decimal(previous)
        if diff == 0:
            return NO_CHANGE
        shown = ("+" if diff > 0 else "-") + money(abs(diff))
        if previous:
            shown += f" ({diff / abs(Decimal(previous)) * 100:+.0f}%)"
        return shown
    return NOT_COMPARABLE


# -- the period ---------------------------------------------------------------------------------

def local_days(period: Period, zone: tzinfo = UTC) -> tuple[date, date]:
    """The first and the last day the half-open ``period`` covers, in ``zone``: the dates a
    person gave as --since and --until."""
    return period.since.astimezone(zone).date(), (period.until - timedelta(microseconds=1)).astimezone(zone).date()


def period_text(period: Period, zone: tzinfo = UTC) -> str:
    """"28 Oct - 24 Nov 2026, 4 weeks": the days included, both ends, and how long that is."""
    first, last = local_days(period, zone)

    def day(d: date, year: bool) -> str:
        return f"{d.day} {_MONTHS[d.month - 1]}" + (f" {d.year}" if year else "")

    days = (last - first).days + 1
    length = plural(days // 7, "week") if days % 7 == 0 else plural(days, "day")
    span = day(last, True) if first == last else f"{day(first, first.year != last.year)} - {day(last, True)}"
    return f"{span}, {length}"


# -- whole reports ------------------------------------------------------------------------------

def report_json(report: Report, zone: tzinfo = UTC) -> dict[str, Any]:
    """One object: the period as the local dates included (until is the last day, as --until takes
    it), the headline figures by key, every table by key with its rows as ``cell_json`` values."""
    first, last = local_days(report.period, zone)
    return {
        "report": report.name,
        "period": {"since": first.isoformat(), "until": last.isoformat()},
        "by": report.by,
        "headlines": {h.key: cell_json(h.value) for h in report.headlines},
        "tables": {t.key: {"title": t.title, "columns": list(t.columns),
                           "rows": [[cell_json(c) for c in row] for row in t.rows], "note": t.note}
                   for t in report.tables},
        "notes": list(report.notes),
    }


def _table_named(report: Report, key: str | None) -> Table:
    if not report.tables:
        raise Invalid(f"the {report.name} report has no table")
    if key is None:
        return report.tables[0]
    found = next((t for t in report.tables if t.key == key), None)
    if found is None:
        raise Invalid(f'the {report.name} report has no table "{key}"; its tables are: '
                      f'{", ".join(t.key for t in report.tables)}')
    return found


def report_csv(report: Report, table_key: str | None = None) -> str:
    """One table (``table_key``, default the report's first) with a header row, through the csv
    module: a name with a comma, a quote or a line break stays one cell. Rows end in CRLF (RFC
    4180), which also makes the writer quote a cell holding a lone CR."""
    chosen = _table_named(report, table_key)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in chosen.columns])
    writer.writerows([cell_csv(c) for c in row] for row in chosen.rows)
    return out.getvalue()


def _right_aligned(rows: tuple[tuple[Cell, ...], ...], index: int) -> bool:
    """Numbers line up on the right; a column is numeric when every cell with a value is."""
    cells = [row[index] for row in rows if row[index] is not None]
    return bool(cells) and all(_is_number(c) or isinstance(c, (Rate, Duration)) for c in cells)


def _text_table(t: Table) -> str:
    columns = tuple(Column(name.upper(), lambda row, i=i: cell_text(row[i]), 40, _right_aligned(t.rows, i))
                    for i, name in enumerate(t.columns))
    lines = [t.title, text_table(t.rows, Listing(columns, "none in this period"))]
    return "\n".join(lines + ([t.note] if t.note else []))


def report_text(report: Report, zone: tzinfo = UTC) -> str:
    """What ``inboxcrm report`` prints: what and when, the headline figures, each table aligned,
    then the notes that say how to read them."""
    by = f", by {report.by}" if report.by else ""
    parts = [f"{report.name}: {period_text(report.period, zone)}{by}"]
    if report.headlines:
        width = max(len(h.label) for h in report.headlines)
        parts.append("\n".join(f"{h.label:<{width}}  {cell_text(h.value)}" for h in report.headlines))
    parts += [_text_table(t) for t in report.tables]
    if report.notes:
        parts.append("\n".join(["Notes", *(f"  - {note}" for note in report.notes)]))
    return "\n\n".join(parts)
