"""HTML mail (web-form notifications above all) as the plain text the rest of the core reads.

The conversion is inscriptis's, not ours: it lays out text as a browser would (a ``<p>``,
``<div>``, ``<br>`` or table row starts a line; table cells stand side by side on their row,
so ``<td>Email:</td><td>anna@...</td>`` reads ``Email:  anna@...`` for ``forms``), drops
comments, ``<script>``, ``<style>``, ``<head>`` and elements styled ``display:none`` (a hidden
``Email:`` line is the sender's trick, not what a reader sees), and unescapes entities. The
alternatives lose what forms need: html2text writes Markdown (``\\- item``, ``1\\.``) and glues
table cells together ("AnnaSmith"); BeautifulSoup's ``get_text`` has no layout at all.

Bounded, and says where it stopped (the raw message keeps everything, so nothing is lost):
- lxml (libxml2) parses in linear time and stops nesting at 255 levels, which keeps
  inscriptis's recursive layout off Python's recursion limit. Old mailers' unclosed ``<font>``
  tags can reach that depth; the text then ends with a note instead of ending silently.
- inscriptis lays out a table at about 1 KB of memory per cell, so only the first
  ``MAX_MARKUP`` characters are converted: even a table-only part stays near 1.5 s and 70 MB.
  A web form, a reply or a forward is near the top.
"""
from __future__ import annotations

import re

from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_engine import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml.etree import ParserError
from lxml.html import HTMLParser, document_fromstring

# "strict": no indentation invented for nested <div>s, which would turn "Email: x" lines into
# "  Email: x" and quoted-text markers into noise.
_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=False, display_images=False)
_BLANK_LINES = re.compile(r"\n{3,}")
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*>")  # lxml refuses a str that declares an encoding
MAX_MARKUP = 500_000


def html_to_text(markup: str) -> str:
    notes = []
    if len(markup) > MAX_MARKUP:
        end = markup.rfind("<", MAX_MARKUP // 2, MAX_MARKUP)  # not inside a tag, whose text would leak
        end = end if end > 0 else MAX_MARKUP
        notes.append(f"[HTML converted up to character {end:,} of {len(markup):,}; the stored message has the rest]")
        markup = markup[:end]
    parser = HTMLParser()  # one per call: its error log tells whether the nesting cap was hit
    try:
        tree = document_fromstring(_XML_DECLARATION.sub("", markup), parser=parser)
    except ParserError:  # "Document is empty": nothing but whitespace or comments
        return "\n\n".join(notes)
    if any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log):
        notes.insert(0, "[HTML nested more than 255 elements deep: text below that depth is not shown; "
                        "the stored message has it]")
    text = "\n".join(line.rstrip() for line in Inscriptis(tree, _CONFIG).get_text().splitlines())
    return "\n\n".join([_BLANK_LINES.sub("\n\n", text).strip("\n"), *notes]).strip("\n")
