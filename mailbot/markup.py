"""A linear-time HTML tokenizer for turning mail HTML into text (ingest and classify share it).

The standard library's `html.parser` rescans the rest of the document for every construct
that is never closed (`"<a " * 20000` costs half a minute, `"<!--" * 20000` seconds) and its
start-tag pattern backtracks. Text extraction needs only tag names and text, so this scanner
reads each character a bounded number of times: a tag, comment or declaration that does not
end before the end of the input ends the document there (what HTML5 does at end of file),
and quoted attribute values are matched with possessive patterns. Only the first
`MAX_HTML_CHARS` characters are read; element depth costs nothing (no stack is kept).
"""

from __future__ import annotations

import re
from html import unescape

MAX_HTML_CHARS = 1 << 19
"""How much of an HTML body is read (512 Ki characters); mail text sits at the top."""

_TAG_NAME = re.compile(r"[a-zA-Z][^\t\n\r\f />\x00]*+")
# The rest of a tag up to its ">": attribute text, = with a quoted value, or a stray quote.
# Possessive and atomic throughout: every character is consumed once, nothing is retried
# (groups in (?>...), not under a possessive quantifier: see mailbot.subjects).
_TAG_REST = re.compile(r"""(?>(?:[^>"'=]++|=[\t\n\r\f ]*+(?>(?:"[^"]*+"|'[^']*+')?)|["'])*)>""")
_RAW_TEXT = frozenset(("script", "style"))
_RAW_END = {name: re.compile(rf"</{name}", re.I) for name in _RAW_TEXT}


class MarkupSink:
    """What :func:`scan` reports; subclasses override the events they need."""

    def handle_starttag(self, tag: str) -> None:
        """An opening tag `tag` (lower case)."""

    def handle_startendtag(self, tag: str) -> None:
        """A self-closing tag (`<br/>`)."""

    def handle_endtag(self, tag: str) -> None:
        """A closing tag."""

    def handle_data(self, data: str) -> None:
        """Text between tags, character references decoded."""


def scan(html: str, sink: MarkupSink, limit: int = MAX_HTML_CHARS) -> None:
    """Report the tags and text of the first `limit` characters of `html` to `sink`.

    Comments, declarations and processing instructions are dropped, as is the content of
    script and style elements; a `<` that starts no tag is text.
    """
    text = html[:limit]
    n = len(text)
    i = 0
    while i < n:
        j = text.find("<", i)
        if j < 0:
            j = n
        if j > i:
            sink.handle_data(unescape(text[i:j]))
        if j >= n:
            return
        nxt = text[j + 1 : j + 2]
        if nxt == "!" and text.startswith("<!--", j):
            k = text.find("-->", j + 4)
            if k < 0:
                return
            i = k + 3
        elif nxt in ("!", "?") or (nxt == "/" and not _TAG_NAME.match(text, j + 2)):
            k = text.find(">", j + 2)  # declaration, instruction or bogus comment
            if k < 0:
                return
            i = k + 1
        else:
            closing = nxt == "/"
            name = _TAG_NAME.match(text, j + 2 if closing else j + 1)
            if name is None:
                sink.handle_data("<")
                i = j + 1
                continue
            rest = _TAG_REST.match(text, name.end())
            if rest is None:  # the tag never ends
                return
            tag = name.group().lower()
            i = rest.end()
            if closing:
                sink.handle_endtag(tag)
            elif text[i - 2] == "/" and i - 2 >= name.end():
                sink.handle_startendtag(tag)
            else:
                sink.handle_starttag(tag)
                if tag in _RAW_TEXT:
                    end = _RAW_END[tag].search(text, i)
                    if end is None:
                        return
                    sink.handle_endtag(tag)
                    rest = _TAG_REST.match(text, end.end())
                    if rest is None:
                        return
                    i = rest.end()
