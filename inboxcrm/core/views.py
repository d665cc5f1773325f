"""Listings as aligned text tables or JSON, and the longer texts of ``deal show`` and ``pipeline``.

Pure formatting of the rows admin.py and deals.py return: no database, no click. Times that
depend on "now" take it as an argument, so output is the same in tests as on a terminal.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, Callable, Iterable, Sequence

ELLIPSIS = "…"
BAR = "█"
BAR_WIDTH = 30


# -- terminal safety ------------------------------------------------------------------------

# Bidirectional embeddings, overrides and isolates: they reorder what follows them on the line
# ("Trojan Source", CVE-2021-42574), so a name can show one text while holding another.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _shown(code: int) -> str:
    """C0 controls and DEL have Unicode's own pictures (ESC is ␛); the rest read as escapes."""
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), *map(ord, BIDI_CONTROLS), *range(0xD800, 0xE000)]
_VISIBLE = {code: _shown(code) for code in _UNSAFE if chr(code) not in "\n\t"}
_JSON_UNSAFE = re.compile("[\x7f-\x9f\ud800-\udfff" + BIDI_CONTROLS + "]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would obey rather than show made visible.

    Subjects, names and bodies come from strangers' mail: ESC starts sequences that move the
    cursor, retitle the window or write to the clipboard; BEL rings; CR, backspace and NUL let
    one text pose as another; C1 controls (0x9b is a CSI) and bidi overrides do the same on
    some terminals. Line ends (LF, CRLF) and tabs stay: they are layout, not commands. Lone
    surrogates (undecodable bytes) are shown too, where printing them would stop the command.
    The result is printable, so applying it twice changes nothing.
    """
    return text.replace("\r\n", "\n").translate(_VISIBLE)


# -- cells ----------------------------------------------------------------------------------

def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def money(value: Decimal | None) -> str:
    """Plain grouped numbers: the currency is the team's, not ours to guess."""
    if value is None:
        return ""
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return ""
    seconds = (now - when).total_seconds()
    if seconds < 0 or seconds >= 60 * 86400:
        return when.date().isoformat()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def duration(seconds: int | None) -> str:
    if seconds is None:
        return ""
    parts, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts[:2]) or f"{seconds}s"


def plural(n: int, one: str, many: str = "") -> str:
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, (tuple, list)):
        return ", ".join(map(cell, value))
    return printable(" ".join(str(value).split()))  # visible before clipping, so columns stay aligned


# -- tables ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], Any]
    width: int = 30  # longer cells are cut with an ellipsis
    right: bool = False


def col(header: str, attr: str, width: int = 30, right: bool = False) -> Column:
    return Column(header, attrgetter(attr), width, right)


@dataclass(frozen=True)
class Listing:
    columns: tuple[Column, ...]
    empty: str  # said instead of an empty table, with the command that would fill it


def table(rows: Sequence[Any], listing: Listing) -> str:
    if not rows:
        return listing.empty
    columns = listing.columns
    cells = [[clip(cell(c.value(row)), c.width) for c in columns] for row in rows]
    widths = [max(len(c.header), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]

    def line(values: Iterable[str]) -> str:
        return "  ".join(v.rjust(w) if c.right else v.ljust(w) for v, w, c in zip(values, widths, columns)).rstrip()

    return "\n".join([line(c.header for c in columns), *map(line, cells)])


def conditions(rule) -> str:
    """``rule`` is an admin.RuleRow; all its conditions must hold, and none means every message."""
    return " and ".join(rule.conditions) or "always"


REPS = Listing((col("NAME", "name"), col("EMAILS", "emails", 60), col("TIMEZONE", "timezone"),
                col("ACTIVE", "active"), col("OPEN DEALS", "open_deals", right=True), col("MANAGER", "manager")),
               'no reps yet; add one with "inboxcrm rep add NAME --email ADDRESS"')
MAILBOXES = Listing((col("NAME", "name"), col("ROLE", "role"), col("OWNER", "owner"), col("SOURCE", "source"),
                     col("POLICY", "policy"), col("COPIES", "copies", right=True), col("IMAP", "imap")),
                    'no mailboxes yet; add one with "inboxcrm mailbox add NAME --role capture --owner REP"')
STAGES = Listing((col("#", "position", right=True), col("NAME", "name"), col("KIND", "kind"),
                  col("DEALS", "deals", right=True),
                  Column("PROBABILITY", lambda s: f"{s.probability}%" + ("" if s.probability_set else " (default)")),
                  Column("QUALIFYING", lambda s: "yes" if s.qualifying else "")), "no stages")
SOURCES = Listing((col("SOURCE", "source"), col("DEALS", "deals", right=True), col("OPEN", "open_deals", right=True),
                   col("MONTHLY COST", "monthly_cost", right=True),
                   Column("SINCE", lambda r: r.cost_from.strftime("%Y-%m") if r.cost_from else "")),
                  'no sources yet: deals get theirs from the mailbox or a rule (source=NAME); give one a cost '
                  'with "inboxcrm source cost NAME AMOUNT"')
RULES = Listing((col("#", "position", right=True), col("NAME", "name"),
                 Column("WHEN", lambda rule: conditions(rule), 60),
                 col("THEN", "actions", 60)),
                'no rules yet; add one with "inboxcrm rule add NAME --when KEY=VALUE --then ACTION"')
REVIEW = Listing((col("ID", "id", right=True), col("DATE", "date"), col("FROM", "from_address"),
                  col("SUBJECT", "subject", 50), col("MAILBOXES", "mailboxes"), col("REASON", "reason")),
                 "nothing to review")
QUARANTINE = Listing((col("ID", "id", right=True), col("DATE", "date"), col("FROM", "from_address"),
                      col("SUBJECT", "subject", 40), col("REASON", "reason"), col("DETAIL", "detail", 50),
                      col("SIZE", "size", right=True)), "nothing in quarantine")
CONTACTS = Listing((col("NAME", "name"), col("ADDRESSES", "addresses", 50), col("COMPANY", "company"),
                    col("OWNER", "owner"), col("SOURCE", "source"), col("OPEN", "open_deals", right=True),
                    col("DEALS", "deals", right=True)),
                   'no contacts yet; import mail or add a lead with "inboxcrm lead add --email ADDRESS"')
BOUNCING = Listing((col("ADDRESS", "address", 40), col("CONTACT", "contact"), col("OWNER", "owner"),
                    col("BOUNCED", "bounced_at"), col("REASON", "reason", 60), col("OPEN", "open_deals", right=True)),
                   "no address is bouncing; a delivery failure captured for a contact's address is listed here")
COMPANIES = Listing((col("NAME", "name"), col("DOMAIN", "domain"), col("CONTACTS", "contacts", right=True),
                     col("OPEN", "open_deals", right=True), col("DEALS", "deals", right=True)),
                    "no companies yet")
EXPLANATIONS = Listing((col("STEP", "stage"), col("RULE", "rule"), col("FIRED", "fired"), col("DETAIL", "detail", 100)),
                       "nothing to explain")


def due(day, now: datetime) -> str:
    """A due date, marked when it has passed: the one thing a rep must not miss in a listing."""
    if day is None:
        return ""
    return f"{day.isoformat()} OVERDUE" if day < now.date() else day.isoformat()


def deals_listing(now: datetime) -> Listing:
    return Listing(
        (col("DEAL", "ref"), col("CONTACT", "contact", 24), col("ADDRESS", "address"), col("COMPANY", "company", 24),
         col("STAGE", "stage"), col("OWNER", "owner"), col("VALUE", "value", right=True),
         col("NEXT STEP", "next_step"), Column("DUE", lambda row: due(row.next_step_due, now)),
         Column("CLOSE", lambda row: due(row.expected_close, now)),
         Column("ACTIVITY", lambda row: ago(row.last_activity_at, now))),
        'no deals match; see all with "inboxcrm deals list --all"')


NURTURE = Listing((col("DEAL", "ref"), col("CONTACT", "contact", 24), col("ADDRESS", "address"),
                   col("COMPANY", "company", 24), col("STAGE", "stage"), col("OWNER", "owner"),
                   col("VALUE", "value", right=True), col("IN NURTURE SINCE", "nurtured_at"),
                   col("LAST ACTIVITY", "last_activity_at")),
                  'nothing in Nurture; "inboxcrm deals archive --dry-run" lists the open deals that would go')
COLD = Listing((col("DEAL", "ref"), col("TITLE", "title", 40), col("STAGE", "stage"), col("OWNER", "owner"),
                col("LAST ACTIVITY", "last_activity_at"), col("QUIET DAYS", "quiet_days", right=True)),
               "no open deal has been quiet that long")


# -- JSON -----------------------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """Readable UTF-8 JSON that a terminal shows without obeying. ``json`` escapes C0 controls
    itself; DEL, C1 controls, bidi overrides and lone surrogates are escaped here (``\\u009b``).
    They can only occur inside strings, so a parser still reads exactly the stored value."""
    text = json.dumps(obj, default=_json_default, indent=2, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


# -- longer texts ---------------------------------------------------------------------------

def _section(title: str, lines: list[str]) -> list[str]:
    return ["", title, *(f"  {line}" for line in lines)] if lines else []


def _expected_close(d, now: datetime) -> str:
    """The close date, "passed" while the deal is open after it, and how often it slipped."""
    if d.expected_close is None:
        return f'none: set one with "inboxcrm deal close {d.ref} DATE"' if d.stage_kind == "open" else ""
    passed = " (passed)" if d.stage_kind == "open" and d.expected_close < now.date() else ""
    slips = f", slipped {plural(d.close_slips, 'time')}" if d.close_slips else ""
    return f"{d.expected_close.isoformat()}{passed}{slips}"


def render_deal(d, now: datetime) -> str:
    """``d`` is a deals.DealDetail; times are shown in the time zone of ``now`` (the team's)."""
    def when(t: datetime | None) -> str:
        return t.astimezone(now.tzinfo).strftime("%Y-%m-%d %H:%M") if t else ""

    overdue = " (overdue)" if d.next_step_due and d.stage_kind == "open" and d.next_step_due < now.date() else ""
    next_step = ", ".join(filter(None, (d.next_step, d.next_step_due and f"due {d.next_step_due}{overdue}",
                                        d.next_step_owner and f"owner {d.next_step_owner}")))
    if not next_step and d.stage_kind == "open":
        next_step = f'none: set one with "inboxcrm deal next {d.ref} TEXT --due WHEN"'
    fields = [
        ("Contact", ", ".join(filter(None, (d.contact, *d.addresses)))),
        ("Company", d.company and f"{d.company} ({d.company_domain})"),
        ("Stage", d.stage + (f", in Nurture since {d.nurtured_at.date()} (inboxcrm deal revive {d.ref} brings it "
                             f"back)" if d.nurtured_at else f" since {d.closed_at.date()}" if d.closed_at else "")),
        ("Lost reason", d.lost_reason),
        ("Owner", d.owner or "nobody"),
        ("Source", d.source),
        ("Value", money(d.value)),
        ("Score", f"{d.score} (fit {d.fit}, engagement {d.engagement})"),
        ("Next step", next_step),
        ("Close date", _expected_close(d, now)),
        ("First reply", d.first_response_seconds is not None and f"after {duration(d.first_response_seconds)}"),
        ("Created", when(d.created_at)),
        ("Last activity", f"{when(d.last_activity_at)} ({ago(d.last_activity_at, now)})"),
        ("Stage changed", when(d.last_stage_change_at)),
    ]
    lines = [f"{d.ref}  {d.title}", *(f"  {k + ':':<15}{v}" for k, v in fields if v)]
    lines += _section("Flags", [f"{when(f.created_at)}  {f.kind}: {f.detail}" for f in d.flags])
    lines += _section("Notes", [f"{when(n.at)}  {n.actor}: {n.text}" for n in d.notes])
    lines += _section("Stage history", [f"{when(h.at)}  {h.from_stage or '(new)'} -> {h.to_stage}  by {h.actor}"
                                        + (f" ({h.reason})" if h.reason else "") for h in d.history])
    lines += _section("Messages", [f"{when(m.sent_at)}  {m.direction or '?':<8} {m.from_address}  {m.subject}"
                                   f"  <{m.message_id}>  seen in {', '.join(m.mailboxes) or '-'}"
                                   + (f"  [not stored whole: {megabytes(m.truncated_size)}; the rest is in the "
                                      "mailbox]" if m.truncated_size else "")
                                   for m in d.messages])
    return "\n".join(lines)


def render_pipeline(summary: Sequence[Any]) -> str:
    """``summary`` is a list of deals.StageSummary: a bar per stage, scaled to the largest."""
    most = max((s.deals for s in summary), default=0) or 1
    width = max((len(s.stage) for s in summary), default=0)
    lines = []
    for s in summary:
        bar = BAR * (max(1, round(s.deals * BAR_WIDTH / most)) if s.deals else 0)
        lines.append(f"{s.stage:<{width}}  {bar:<{BAR_WIDTH}} {s.deals:>4}  {money(s.value) if s.value else '':>12}"
                     .rstrip())
    open_ = [s for s in summary if s.kind == "open"]
    total = sum((s.value for s in open_), Decimal(0))
    worth = f"worth {money(total)}" if total else "(no values set yet)"
    lines.append(f"\nopen: {plural(sum(s.deals for s in open_), 'deal')} {worth}")
    return "\n".join(lines)


def render_quarantined(d) -> str:
    """``d`` is an admin.QuarantineDetail: the facts, a blank line, then the start of the raw message."""
    m = d.message
    head = [f"message {m.id}  <{d.message_id}>", f"date: {cell(m.date)}", f"from: {m.from_address}",
            f"subject: {m.subject}", f"mailboxes: {', '.join(d.mailboxes)}", f"size: {m.size} bytes",
            f"reason: {m.reason}", f"detail: {m.detail}", ""]
    if not d.raw_stored:
        return "\n".join([*head, "(raw bytes not stored)"])
    return "\n".join([*head, d.preview + (f"\n[{ELLIPSIS} truncated]" if d.truncated else "")])


def render_change(change) -> str:
    """``change`` is a deals.DealChange."""
    if change.field == "note":
        return f"{change.ref}: note added"
    return f"{change.ref}: {change.field} {change.old or '(none)'} -> {change.new or '(none)'}"


def render_removed(removed) -> str:
    """``removed`` is an admin.Removed."""
    verb = "deactivated" if removed.deactivated else "removed"
    return f"{verb} {removed.entity} {removed.name}" + (f" ({removed.note})" if removed.note else "")
