"""Who a forwarded email is really from: a rep forwards a prospect's mail to the command address,
and the lead is the prospect, not the rep.

Pure: reads ``Email.text`` only. Mail clients write the forwarded message's headers into the
body as text, each in its own way: Gmail ("---------- Forwarded message ---------", From, Date,
Subject, To), Apple Mail ("Begin forwarded message:"), Outlook ("-----Original Message-----" or
a line of underscores, From with "<addr>" or "[mailto:addr]", Sent), Thunderbird ("--------
Forwarded Message --------", Subject first, tab after the colon), in English, German, French and
a few more languages, sometimes quoted with "> ". What they share, and what is looked for, is a
block of "Label: value" lines with a From label and at least two of Date/Sent, Subject, To, Cc:
one From line alone in prose is never taken for a forward.

Not handled: a forward as an attachment (message/rfc822). ``parse.parse`` (mail-parser) adds
the attached message's text to ``Email.text`` but not its headers, so its From is nowhere in
the Email; ``forwarded`` then returns None. Nor an Outlook block whose From has only a name
(an address-book entry, no address): there is no address to make a lead from.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from inboxcrm.core.verbs import FORWARD_WORDS, prefixes
from inboxcrm.values import Address, Email

MAX_CHARS = 200_000  # the forwarded block is near the top; a huge body is not read to its end
MAX_BLOCK_LINES = 20
MAX_VALUE_CHARS = 1_000  # a From value longer than this is not a header a client wrote

# Header labels as the clients write them in the languages they are set to.
_LABELS = {
    "from": ("from", "von", "de", "van", "da", "från", "fra", "od", "от", "差出人", "发件人", "寄件者"),
    "date": ("date", "sent", "datum", "gesendet", "envoyé", "envoye", "verzonden", "enviado", "enviada", "data",
             "inviato", "skickat", "sendt", "fecha", "wysłano", "дата", "отправлено", "送信日時", "发送时间", "日期"),
    "subject": ("subject", "betreff", "objet", "sujet", "onderwerp", "asunto", "assunto", "oggetto", "ämne", "emne",
                "temat", "тема", "件名", "主题", "主旨"),
    "to": ("to", "an", "à", "a", "aan", "para", "till", "til", "do", "pour", "per", "кому", "宛先", "收件人"),
    "cc": ("cc", "kopie", "copie", "kopia", "копия"),
}
_KIND = {label: kind for kind, labels in _LABELS.items() for label in labels}
_HEADER = re.compile(r"[*_]{0,2}([^\W\d_]+)[*_]{0,2}\s*[:：][*_]{0,2}\s*(.*)")
_QUOTE = re.compile(r"^(?:[ \t]*>)+[ \t]?")
_MARKER = re.compile(r"\s*(?:[-_=]{2,}.*|.*(?:forward|weitergeleitet|réexpédié|transféré|reenviado|inoltrato|"
                     r"doorgestuurd|encaminhad|vidarebefordr|videresend).*[:：]\s*)", re.I)
_ANGLE = re.compile(r"<\s*(?:mailto:)?([^<>\s]+@[^<>\s]+?)\s*>")
_BRACKET = re.compile(r"\[\s*mailto:([^\]\s]+)\s*\]", re.I)
_BARE = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")
_VALID = re.compile(r"[^@\s<>()\[\],;:\"]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+")


@dataclass(frozen=True)
class Forwarded:
    sender: Address  # email lower-cased, name as written
    subject: str  # the original subject, "" if not found
    date_text: str  # as written, "" if not found
    intro: str  # the rep's own text above the forwarded block (commands may be there)


def is_forward(subject: str) -> bool:
    """The outermost prefix is a forward's (Fwd:, Fw:, WG:, TR:, RV:...): "Re: Fwd: x" is a reply."""
    found = prefixes(subject)
    return bool(found) and found[0] in FORWARD_WORDS


def _unquote(line: str) -> str:
    return _QUOTE.sub("", line).strip()


def _label(line: str) -> tuple[str, str] | None:
    """(kind, value) for a header line of a forwarded block ("From: Carla <c@x>", "**Von:** ...")."""
    m = _HEADER.fullmatch(line)
    if m is None:
        return None
    kind = _KIND.get(m.group(1).casefold())
    return (kind, (m.group(2) or "").strip()) if kind else None


def sender_address(value: str) -> Address | None:
    """The address in a forwarded From value: "Name <a@b>", "Name [mailto:a@b]", "a@b",
    "Name <a@b<mailto:a@b>>" (Outlook's text part), "Name < a@b >" (HTML turned into text)."""
    if len(value) > MAX_VALUE_CHARS:
        return None
    value = re.sub(r"<\s*mailto:[^<>\s]*\s*>", "", value, flags=re.I)
    found = _BRACKET.search(value) or _ANGLE.search(value) or _BARE.search(value)
    if found is None:
        return None
    email = found.group(1 if found.re is not _BARE else 0).strip().strip(".").lower()
    if not _VALID.fullmatch(email):
        return None
    name = " ".join(value[:found.start()].split()).strip(" \"'*,")
    return Address(email, "" if name.lower() == email else name)


def _block(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """The header lines from ``start`` on (kind -> first value) and the index after them. A line
    that starts with white space continues the block (Outlook wraps a long To that way), and one
    blank line between two headers is passed over (HTML mail turned into text has them)."""
    found: dict[str, str] = {}
    i = start
    while i < len(lines) and i - start < MAX_BLOCK_LINES:
        raw = _QUOTE.sub("", lines[i])
        header = _label(raw.strip())
        if header is not None:
            found.setdefault(*header)
        elif not raw.strip():
            if i + 1 >= len(lines) or _label(_unquote(lines[i + 1])) is None:
                break
        elif not (i > start and raw[:1] in (" ", "\t")):
            break
        i += 1
    return found, i


def forwarded(email: Email) -> Forwarded | None:
    """The first (topmost) forwarded header block with a valid From address, or None."""
    text = (email.text or "")[:MAX_CHARS]
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if _label(_unquote(lines[i])) is None:
            i += 1
            continue
        found, end = _block(lines, i)
        sender = sender_address(found.get("from", ""))
        others = {"date", "subject", "to", "cc"} & found.keys()
        if sender is not None and len(others) >= 2:
            return Forwarded(sender, found.get("subject", ""), found.get("date", ""), _intro(text, lines, i))
        i = max(end, i + 1)
    return None


def _intro(text: str, lines: list[str], start: int) -> str:
    """The text above the block as written, without the client's marker line ("Begin forwarded
    message:")."""
    end = start
    while end and not lines[end - 1].strip():
        end -= 1
    if end and len(lines[end - 1]) <= 200 and _MARKER.fullmatch(_unquote(lines[end - 1])):
        end -= 1
    return "".join(text.splitlines(keepends=True)[:end]).strip()
