"""HTML mail (web-form notifications above all) as the plain text the rest of the core reads."""
from __future__ import annotations

import html
import re

_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_BLANK_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")


def html_to_text(markup: str) -> str:
    text = _TAG.sub(" ", markup.replace("<br>", "\n").replace("</p>", "\n"))
    text = html.unescape(text)
    return _BLANK_LINES.sub("\n\n", "\n".join(line.strip() for line in text.splitlines()))
