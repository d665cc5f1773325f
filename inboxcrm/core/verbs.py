"""Commands by email: what a rep wrote ("[D-42] stage: proposal") read into values, then
checked against the stages and reps into changes ready for the database.

Pure (stdlib and the pure core only), in two steps: ``parse`` reads the words, ``plan`` resolves
them against names the caller loaded. Both collect every problem instead of stopping at the
first, because a command email applies all or nothing and its answer must list all that is
wrong at once. Neither ever raises: the input is whatever anyone mailed us.

What makes this strict on purpose: a command is a deal tag, a known verb and a colon, or a line
at the very top of the body that starts with a known verb and a colon. The first line that is
neither ends the commands, so quoted replies, the digest quoted below a reply, signatures and
prose are never read. Nothing is guessed: an unknown or ambiguous name is an error listing the
valid ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Callable, Mapping, Sequence

from inboxcrm.core.forecast import read_close
from inboxcrm.core.inputs import (
    CENTS,
    SNOOZE_FORMS,  # noqa: F401 - the CLI's name
    SNOOZE_MAX_DAYS,  # noqa: F401 - the CLI's name
    add_months,  # noqa: F401 - the CLI's name
    matching_names,
    parse_ref,
    parse_value,
    refuse_past,
    snooze_until,
    split_due,
    weekday_abbreviation,
)
from inboxcrm.core.views import clip, money
from inboxcrm.errors import Invalid


MAX_LINES = 50  # body lines looked at: commands go at the top, and a huge body costs nothing
MAX_COMMANDS = 20
MAX_BODY_CHARS = 100_000
MAX_LINE_CHARS = 2_000  # one command line; a longer one is refused, not cut
TEXT_LIMIT = 500  # next-step text and stage reasons, as the deals columns take them (admin.short_text)
CURRENCIES = ("$", "€", "£", "EUR", "USD", "GBP")

# Reply and forward prefixes in the languages mail clients write them; "Réf." is French.
# VS is a reply in Finnish but a forward in Danish and Norwegian: stripped, and counted as neither.
_REPLY_WORDS = ("re", "aw", "sv", "antw", "antwort", "r", "rif", "res", "odp", "ynt", "atb", "ats", "vá", "ha",
                "ref", "réf", "απ", "σχετ", "отв", "回复", "回覆", "答复", "答覆", "返信", "답장")
FORWARD_WORDS = ("fwd", "fw", "wg", "tr", "rv", "enc", "doorst", "pd", "i", "vb", "vl", "ilt", "i̇lt",
                 "πρθ", "пересл", "转发", "轉寄", "轉發", "転送", "전달")
_WORDS = "|".join(sorted((re.escape(w) for w in (*_REPLY_WORDS, *FORWARD_WORDS, "vs")), key=len, reverse=True))
_PREFIX = re.compile(
    rf"\s*(?:(?P<word>{_WORDS})\s*(?:\[\d{{1,4}}\]|\(\d{{1,4}}\)|\^\d{{1,4}})?\s*[:：]"
    r"|(?P<ref>r[ée]f)\.(?:\s*[:：])?"
    r"|\[(?:ext|external|extern|externe)\])", re.I)

_TAG = re.compile(r"\[\s*d\s*[-–]?\s*([0-9]{1,9})\s*\]", re.I)
_WORD = re.compile(r"[^\W\d_]+")
_INVISIBLE = "\u200b\u200e\u200f\u2060\ufeff"  # what rich-text editors leave at line ends


@dataclass(frozen=True)
class Command:
    """One command as written. ``deal`` is None only for an untagged line in an email whose
    subject has no tag and that has no default deal; ``parse`` then also reports the error."""

    deal: int | None
    verb: str  # one of VERBS
    arg: str  # the text after the colon, whitespace collapsed; "" for a bare "won"
    where: str  # "subject" or "line N" (1-based line of the body)
    text: str  # the line as the rep wrote it (trimmed), to quote back in the answer


@dataclass(frozen=True)
class CommandError:
    where: str
    text: str
    problem: str  # one sentence: what is wrong, and the valid form(s) or names


@dataclass(frozen=True)
class Parsed:
    commands: tuple[Command, ...]
    errors: tuple[CommandError, ...]
    subject_deal: int | None  # the [D-n] tag in the subject, if any

    @property
    def empty(self) -> bool:
        return not self.commands and not self.errors


@dataclass(frozen=True)
class Change:
    """One resolved command, ready for the database (won and lost become stage moves)."""

    deal: int
    verb: str  # stage | next | owner | value | note | snooze | close
    where: str
    text: str  # the rep's line
    stage: str | None = None  # the exact stage name, for "stage"
    reason: str | None = None  # lost reason, optional won note, note text, next-step text
    due: date | None = None  # next-step due date, snooze-until or close date (None with "snooze"/"close": off)
    rep: str | None = None  # the exact rep name, for "owner"
    value: Decimal | None = None  # for "value", quantized to CENTS


@dataclass(frozen=True)
class StageChoice:
    name: str
    kind: str  # open | won | lost


# -- resolving ----------------------------------------------------------------------------------

def _stage(arg: str, stages: Sequence[StageChoice], deal: int) -> StageChoice:
    names = [s.name for s in stages]
    found = matching_names(arg, names)
    if len(found) > 1:
        raise Invalid(f'ambiguous stage "{clip(arg, 40)}": it could be {", ".join(found)}; type more of the name')
    if not found:
        raise Invalid(f'unknown stage "{clip(arg, 40)}"; stages are: {", ".join(names) or "none yet"}')
    stage = next(s for s in stages if s.name == found[0])
    if stage.kind == "lost":
        raise Invalid(f"a lost deal needs a reason: {_form('lost', deal)}")
    return stage


def _first(stages: Sequence[StageChoice], kind: str) -> StageChoice:
    for stage in stages:
        if stage.kind == kind:
            return stage
    raise Invalid(f"there is no {kind} stage; stages are: {', '.join(s.name for s in stages) or 'none yet'} "
                  f'(an admin adds one with "inboxcrm stage add NAME --kind {kind}")')


def _rep(arg: str, reps: Mapping[str, Sequence[str]]) -> str:
    wanted = re.sub(r"<?mailto:[^>\s]*>?", "", arg).strip(" <>")  # Outlook writes "bob@x.com<mailto:bob@x.com>"
    found = matching_names(wanted, list(reps)) if "@" not in wanted else []
    if not found:
        found = [name for name, addresses in reps.items() if wanted.lower() in {a.lower() for a in addresses}]
    if len(found) > 1:
        raise Invalid(f'ambiguous rep "{clip(arg, 40)}": it could be {", ".join(found)}; type more of the name')
    if not found:
        raise Invalid(f'unknown rep "{clip(arg, 40)}"; reps are: {", ".join(reps) or "none yet"} '
                      f"(a name, the start of one, or a rep's address)")
    return found[0]


_CURRENCY = "|".join(re.escape(c) for c in CURRENCIES)


def _value(arg: str) -> Decimal:
    amount = re.sub(rf"^(?:{_CURRENCY})\s*|\s*(?:{_CURRENCY})$", "", arg.strip(), count=2, flags=re.I)
    try:
        return parse_value(amount).quantize(CENTS)
    except Invalid as refused:
        raise Invalid(f"{refused}; a currency sign or code ({', '.join(CURRENCIES)}) may come before or after it, "
                      f"and is not converted") from None


def _short(what: str, text: str, example: str) -> str:
    if len(text) > TEXT_LIMIT:
        raise Invalid(f"the {what} is {len(text)} characters long; expected at most {TEXT_LIMIT}, "
                      f'such as "{example}" (put more in a note)')
    return text



@dataclass(frozen=True)
class Names:
    """What a command is resolved against: the stages in pipeline order, the active reps (name ->
    addresses) and the rep's local date."""

    stages: Sequence[StageChoice]
    reps: Mapping[str, Sequence[str]]
    today: date


def _day(day: date) -> str:
    return f"{weekday_abbreviation(day)} {day.isoformat()}"


def _ref(change: Change) -> str:
    return f"D-{change.deal}"


def _read_next(c: Command, names: Names) -> dict:
    text, due = split_due(c.arg, names.today)
    if not text:
        raise Invalid(f"say what the next step is before the date: {_form('next', c.deal)}")
    if due is not None:
        refuse_past(due, names.today)
    return dict(reason=_short("next step", text, "send the quote"), due=due)


# -- the verbs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verb:
    """One command word, all of it in one place: how its argument is read, how it is taught (the
    help line and the example every error quotes), what it changes and which ``app.deals``
    function makes that change. Adding a verb is one entry here and the deals function it names."""

    name: str
    example: str  # what follows the tag, as errors quote it: "stage: proposal"
    help: str  # its line in FORMS
    needs: str | None  # what the argument is, for "needs ..."; None: the verb may stand alone ("won")
    read: Callable[[Command, Names], dict]  # the argument -> the Change's fields; raises Invalid
    makes: str = ""  # the verb whose kind of change this is ("won" makes a "stage" change); "" itself
    applies: str = ""  # the app.deals function that makes this kind of change
    arguments: Callable[[Change, date], dict] | None = None  # its keyword arguments after the deal reference
    describe: Callable[[Change], str] | None = None  # the answer's line for this kind of change
    once: str = ""  # what this kind of change is called when one email asks for it twice; "": may repeat
    listed: str = ""  # the example in FORMS, when shorter than ``example``
    also: str = ""  # a word that may follow the verb ("next step:")
    action: str = ""  # its label as a quick action (a mailto: link in the digest), if it is one

    @property
    def change(self) -> str:
        return self.makes or self.name


TABLE: tuple[Verb, ...] = (
    Verb("stage", "stage: proposal", "move the deal to a stage (its name, or the start of it)", "a stage name",
         read=lambda c, n: dict(stage=_stage(c.arg, n.stages, c.deal).name),
         applies="set_stage", arguments=lambda c, today: dict(stage=c.stage, reason=c.reason or ""),
         describe=lambda c: f"{_ref(c)}: moved to {c.stage}" + (f' ("{clip(c.reason, 80)}")' if c.reason else ""),
         once="stage changes", action="move stage"),
    Verb("won", "won", "mark it won (a note may follow: won: signed for two years)", None, makes="stage",
         action="won",
         read=lambda c, n: dict(stage=_first(n.stages, "won").name,
                                reason=_short("note", c.arg, "signed for two years") or None)),
    Verb("lost", "lost: chose a competitor", "mark it lost, with the reason", "a reason", makes="stage",
         action="lost",
         read=lambda c, n: dict(stage=_first(n.stages, "lost").name,
                                reason=_short("reason", c.arg, "chose a competitor"))),
    Verb("next", "next: send the quote by friday",
         'set the next step; "by" or "due" and a date at the end sets when', "what to do", also="step",
         read=_read_next, applies="set_next", arguments=lambda c, today: dict(text=c.reason, due=c.due),
         describe=lambda c: f'{_ref(c)}: next step "{clip(c.reason or "", 80)}"'
                            + (f" due {_day(c.due)}" if c.due else ", no due date"),
         once="next steps", action="set next step"),
    Verb("owner", "owner: bob", "hand it to a rep (a name, or their address)", "a rep's name or address",
         read=lambda c, n: dict(rep=_rep(c.arg, n.reps)),
         applies="set_owner", arguments=lambda c, today: dict(rep=c.rep),
         describe=lambda c: f"{_ref(c)}: owner is now {c.rep}", once="owners"),
    Verb("value", "value: 12000", "set its value ($, €, £, EUR or USD may come with it)", "an amount",
         read=lambda c, n: dict(value=_value(c.arg)),
         applies="set_value", arguments=lambda c, today: dict(value=str(c.value)),
         describe=lambda c: f"{_ref(c)}: value set to {money(c.value)}", once="values"),
    Verb("note", "note: they want a demo next week", "add a note", "text", listed="note: they want a demo",
         read=lambda c, n: dict(reason=c.arg),
         applies="add_note", arguments=lambda c, today: dict(text=c.reason),
         describe=lambda c: f'{_ref(c)}: note added "{clip(c.reason or "", 80)}"'),
    Verb("snooze", "snooze: 2 weeks", "leave it out of the quiet and stalled lists until then (off wakes it)",
         "how long", read=lambda c, n: dict(due=snooze_until(c.arg, n.today)),
         applies="set_snooze", arguments=lambda c, today: dict(until=c.due, today=today),
         describe=lambda c: f"{_ref(c)}: snoozed until {_day(c.due)}" if c.due is not None
         else f"{_ref(c)}: snooze ended, the deal is back in the digest",
         once="snoozes"),
    Verb("close", "close: dec 15", "when you expect to close it, for the forecast (none clears it)", "a date",
         read=lambda c, n: dict(due=read_close(c.arg, n.today)),
         applies="set_close", arguments=lambda c, today: dict(when=c.due, today=today),
         describe=lambda c: f"{_ref(c)}: expected to close {_day(c.due)}" if c.due is not None
         else f"{_ref(c)}: close date cleared",
         once="close dates", action="set close date"),
)
VERB = {v.name: v for v in TABLE}
VERBS = tuple(VERB)
_UNTAGGED = re.compile("(" + "|".join(rf"{v.name}(?:\s+{v.also}\b)?" if v.also else v.name for v in TABLE)
                       + r")\s*[:：]", re.I)
_BARE = re.compile("(" + "|".join(v.name for v in TABLE if v.needs is None) + r")[.!]*", re.I)


def quick_action(verb: str, ref: str) -> tuple[str, str]:
    """(label, subject) of a mailto: link that starts the command: ("move stage", "[D-42] stage: ")."""
    entry = VERB[verb]
    return entry.action, f"[{ref}] {verb}" + (": " if entry.needs else "")


def _makers(change: str) -> tuple[str, ...]:
    return tuple(v.name for v in TABLE if v.change == change)


def _once(change: str) -> str:
    """ "next steps"; "stage changes (stage, won, lost)" when several verbs make that change."""
    makers = _makers(change)
    return VERB[change].once + (f" ({', '.join(makers)})" if len(makers) > 1 else "")


# -- reading ----------------------------------------------------------------------------------

def prefixes(subject: str) -> tuple[str, ...]:
    """The reply/forward prefixes in front of a subject, outermost first, lower-cased and without
    counters or colons ("RE[2]: Fwd:" -> ("re", "fwd")); forwards.is_forward reads the first."""
    text, pos, found = subject or "", 0, []
    while (m := _PREFIX.match(text, pos)) and m.end() > pos:
        found.append((m.group("word") or m.group("ref") or "ext").lower())
        pos = m.end()
    return tuple(found)


def _trim(text: str) -> str:
    """Whitespace and invisible characters off both ends, in linear time on any input."""
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or text[start] in _INVISIBLE):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _INVISIBLE):
        end -= 1
    return text[start:end]


def strip_prefixes(subject: str) -> str:
    text, pos = subject or "", 0
    while (m := _PREFIX.match(text, pos)) and m.end() > pos:
        pos = m.end()
    return _trim(text[pos:])


def _tag(text: str) -> tuple[int, str] | None:
    """(deal number, what follows) for a line that starts with a tag."""
    m = _TAG.match(text)
    if m is None:
        return None
    return parse_ref(f"D-{m.group(1)}"), text[m.end():]


def subject_tag(subject: str) -> int | None:
    found = _tag(strip_prefixes(subject))
    return found[0] if found else None


def _form(verb: str, deal: int | None) -> str:
    return f"[D-{deal if deal is not None else 42}] {VERB[verb].example}"


def _verbs_hint(deal: int | None) -> str:
    return f"commands are {', '.join(VERBS)}, as in {_form('next', deal)}"


def _after_tag(rest: str, deal: int) -> tuple[str, str] | str:
    """(verb, argument) from what follows a tag, or the problem with it."""
    rest = _trim(rest)
    if not rest:
        return f"[D-{deal}] says which deal but not what to do; {_verbs_hint(deal)}"
    m = _WORD.match(rest)
    if m is None or m.group(0).lower() not in VERBS:
        word = m.group(0) if m else (rest.split() or [rest])[0]
        return f'unknown command "{clip(word, 40)}"; {_verbs_hint(deal)}'
    verb, after = m.group(0).lower(), rest[m.end():]
    if VERB[verb].also:
        after = re.sub(rf"^\s+{VERB[verb].also}\b", "", after, flags=re.I)
    colon = re.match(r"\s*[:：]", after)
    if colon:
        return verb, " ".join(after[colon.end():].split())
    if not _trim(after) or (VERB[verb].needs is None and _BARE.fullmatch(verb + _trim(after))):
        return verb, ""
    return f'write a colon after "{verb}": {_form(verb, deal)}'


def _command_at_start(text: str) -> bool:
    """A tag followed by a known verb and then a colon, the end, or (for won) "!" or ".":
    "[D-42] next steps for Acme" is a subject, not a command."""
    found = _tag(text)
    if found is None:
        return False
    read = _after_tag(found[1], found[0])
    return isinstance(read, tuple)


def has_command(subject: str) -> bool:
    stripped = strip_prefixes(subject)
    return len(stripped) <= MAX_LINE_CHARS and _command_at_start(stripped)


def _missing_argument(verb: str, deal: int | None) -> str:
    return f'"{verb}" needs {VERB[verb].needs}: {_form(verb, deal)}'


class _Reader:
    """Collects commands and errors in the order they were written."""

    def __init__(self, subject_deal: int | None, default_deal: int | None):
        self.fallback = subject_deal if subject_deal is not None else default_deal
        self.commands: list[Command] = []
        self.errors: list[CommandError] = []

    def error(self, where: str, text: str, problem: str) -> None:
        self.errors.append(CommandError(where, text, problem))

    def add(self, deal: int | None, verb: str, arg: str, where: str, text: str) -> None:
        if deal is None:
            self.commands.append(Command(deal, verb, arg, where, text))
            self.error(where, text, f"say which deal this is for: [D-42] {text}")
        elif VERB[verb].needs is not None and not arg:
            self.error(where, text, _missing_argument(verb, deal))
        else:
            self.commands.append(Command(deal, verb, arg, where, text))

    def tagged(self, where: str, text: str) -> None:
        deal, rest = _tag(text)
        read = _after_tag(rest, deal)
        if isinstance(read, str):
            self.error(where, text, read)
        else:
            self.add(deal, read[0], read[1], where, text)

    def untagged(self, where: str, text: str) -> None:
        """An untagged "verb: ..." or a bare "won" (the caller saw it is one), for the fallback deal."""
        m = _UNTAGGED.match(text)
        if m:
            self.add(self.fallback, m.group(1).split()[0].lower(), " ".join(text[m.end():].split()), where, text)
        else:
            self.add(self.fallback, _BARE.fullmatch(text).group(1).lower(), "", where, text)


def _too_long(text: str) -> str:
    return f"this command is {len(text)} characters long; at most {MAX_LINE_CHARS} are read, so shorten it"


def parse(subject: str, body: str, default_deal: int | None = None) -> Parsed:
    """The commands in the subject (after its Re:/Fwd: prefixes) and in the body's first lines.

    A subject counts only as "[D-n] verb...". The body is read from the top: blank lines are
    skipped, a tagged line or an untagged "verb: ..." / "won" is taken, and the first other line
    ends the commands. An untagged line is for the subject's deal, else ``default_deal``."""
    stripped = strip_prefixes(subject)
    tag = _tag(stripped)
    subject_deal = tag[0] if tag else None
    reader = _Reader(subject_deal, default_deal)
    if tag is not None and _trim(tag[1]):
        if len(stripped) > MAX_LINE_CHARS:
            reader.error("subject", clip(stripped, 80), _too_long(stripped))
        else:
            reader.tagged("subject", stripped)
    lines = (body or "")[:MAX_BODY_CHARS].splitlines()
    taken = 0
    for number, line in enumerate(lines[:MAX_LINES + 1], start=1):
        text = _trim(line)
        if not text:
            continue
        is_command = _TAG.match(text) or _UNTAGGED.match(text) or _BARE.fullmatch(text)
        if not is_command:
            break
        where = f"line {number}"
        if number > MAX_LINES or taken == MAX_COMMANDS:
            what = f"{MAX_LINES} lines" if number > MAX_LINES else f"{MAX_COMMANDS} commands"
            reader.error(where, clip(text, 80), f"one email carries at most {what}; "
                                                f"send the rest in another email")
            break
        taken += 1
        if len(text) > MAX_LINE_CHARS:
            reader.error(where, clip(text, 80), _too_long(text))
        elif _TAG.match(text):
            reader.tagged(where, text)
        else:
            reader.untagged(where, text)
    return Parsed(tuple(reader.commands), tuple(reader.errors), subject_deal)


def _conflicts(changes: Sequence[Change]) -> list[CommandError]:
    """Two stage moves (or owners, next steps...) for one deal in one email: the rep meant one."""
    first: dict[tuple[int, str], Change] = {}
    errors = []
    for change in changes:
        if not VERB[change.verb].once:
            continue
        earlier = first.setdefault((change.deal, change.verb), change)
        if earlier is not change:
            errors.append(CommandError(change.where, change.text,
                                       f"D-{change.deal} gets two {_once(change.verb)} in this email "
                                       f"({earlier.where} and {change.where}); keep the one you mean"))
    return errors


def _position(error: CommandError) -> int:
    """Where an error was written, for the answer's order: the subject, then the body's lines."""
    if error.where == "subject":
        return 0
    number = error.where.removeprefix("line ")
    return int(number) if number.isascii() and number.isdigit() else MAX_LINES + 2


def plan(parsed: Parsed, stages: Sequence[StageChoice], reps: Mapping[str, Sequence[str]],
         today: date) -> tuple[tuple[Change, ...], tuple[CommandError, ...]]:
    """Every command resolved against the stages (in pipeline order) and the active reps (name ->
    addresses). All or nothing: with any error there are no changes, and the errors are the
    parse's and the resolution's, in the order the lines were written. ``today`` is the rep's
    local date. Whether each deal exists is the caller's to check."""
    errors = list(parsed.errors)
    names = Names(stages, reps, today)
    changes = []
    for command in parsed.commands:
        if command.deal is None:
            continue  # parse has reported it
        try:
            verb = VERB[command.verb]
            changes.append(Change(command.deal, verb.change, command.where, command.text,
                                  **verb.read(command, names)))
        except Invalid as refused:
            errors.append(CommandError(command.where, command.text, str(refused)))
    errors.extend(_conflicts(changes))
    if errors:
        errors.sort(key=_position)
        return (), tuple(errors)
    return tuple(changes), ()


# -- answering ----------------------------------------------------------------------------------

def describe(change: Change) -> str:
    """One short line per change for the answer: 'D-42: next step "send the quote" due Fri 2026-11-27'."""
    return VERB[change.verb].describe(change)


def _forms_line(verb: Verb) -> str:
    """'  [D-42] stage: proposal            move the deal ...', the help on the next line when the
    example is too long for its column."""
    form = f"[D-42] {verb.listed or verb.example}"
    if len(form) > 33:
        return f"  {form}\n{'':36}{verb.help}"
    return f"  {form:<33} {verb.help}"


FORMS = "\n".join(_forms_line(v) for v in TABLE) + """

A colon follows the command word. Dates: today, tomorrow, a weekday (friday or fri), in 3 days,
in 2 weeks, in 1 month, or 2026-12-01. Snooze also takes 3 days, 2 weeks, 1 month, until friday;
close also takes dec 15, end of month, and none.
Without [D-42] a line is for the deal tagged in the subject. Commands go in the subject or on
the first lines of the body, several at once, one per line; the first other line ends them."""
