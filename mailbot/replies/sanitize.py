"""Customer text made safe for the mail we send (pure).

Everything taken from a mail loses control characters (C0, C1, DEL, U+2028/U+2029, bidi and
zero-width format characters) before it reaches a header. Not a reflector: a reply quotes only
a short excerpt (QUOTE_LINES lines, QUOTE_CHARS characters) and writes URLs and dotted host
names in it, and in the greeting's name, defanged (``hxxps://evil[.]example``), so no mail
client turns them into links.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Final

__all__ = ["HEADER_UNSAFE", "NAME_LIMIT", "SUBJECT_LIMIT", "clean_header_text", "defang",
           "quote_excerpt"]

SUBJECT_LIMIT: Final = 200
NAME_LIMIT: Final = 100
QUOTE_LINES: Final = 6
QUOTE_LINE_LIMIT: Final = 300
QUOTE_CHARS: Final = 300  # the whole excerpt of the customer's text in a reply


def _is_unsafe(ch: str) -> bool:
    # Cc: C0/C1 controls incl. CR, LF, NUL, U+0085; Cf: bidi overrides, zero-width chars;
    # Zl/Zp: U+2028/U+2029; Cs: lone surrogates from surrogateescape decoding.
    return unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"}


class _UnsafeTable(dict[int, "int | str"]):
    """`str.translate` table: unsafe characters (see `_is_unsafe`) become `unsafe`, others
    stay; filled per character on first use (the same test, one lookup afterwards)."""

    def __init__(self, unsafe: str, overrides: Mapping[int, str] = {}) -> None:
        super().__init__(overrides)
        self._unsafe = unsafe

    def __missing__(self, code: int) -> int | str:
        value: int | str = self._unsafe if _is_unsafe(chr(code)) else code
        if len(self) < 65536:
            self[code] = value
        return value


HEADER_UNSAFE = _UnsafeTable(" ")
"""`str.translate` table: every unsafe character (see `_is_unsafe`) becomes a space."""
_BODY_UNSAFE = _UnsafeTable("", {ord("\t"): " "})


def clean_header_text(value: str, limit: int = SUBJECT_LIMIT) -> str:
    """`value` on one line, safe for a header: control/format characters become spaces,
    runs of whitespace collapse, and the result is cut to `limit` characters (with "…").

    "=?" becomes "= ?": the email package decodes RFC 2047 encoded words it finds in a header
    value set as text (also inside a quoted display name), so "=?utf-8?q?=0D=0A…?=" in
    customer text would become a line break, a surrogate or another address."""
    # isprintable(): none of the unsafe categories (nor any other space than " ") occurs.
    cleaned = value if value.isprintable() else value.translate(HEADER_UNSAFE)
    cleaned = cleaned.replace("=?", "= ?")
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned



def _clean_body_line(line: str) -> str:
    cleaned = (line if line.isprintable() else line.translate(_BODY_UNSAFE)).rstrip()
    if len(cleaned) > QUOTE_LINE_LIMIT:
        cleaned = cleaned[: QUOTE_LINE_LIMIT - 1] + "…"
    return cleaned



def quote_excerpt(text: str) -> tuple[list[str], bool]:
    """A short excerpt of the customer's text: at most QUOTE_LINES lines and QUOTE_CHARS
    characters (a line over the budget is cut at a word with "…"), defanged; and whether
    more followed."""
    # Only the head of a huge body is looked at; str.splitlines() also splits on
    # U+2028/U+2029/U+0085 and the other Unicode line separators. Lines are cleaned as they
    # are needed: blank ones before the first, then at most QUOTE_LINES, then (to tell
    # whether more followed) up to the next one that is not blank.
    head_text = text[: QUOTE_LINES * QUOTE_LINE_LIMIT * 2]
    cut = len(head_text) < len(text)
    rest = iter(head_text.splitlines())
    head: list[str] = []
    budget = QUOTE_CHARS
    more = False
    for raw in rest:
        line = _clean_body_line(raw)
        if not head and not line:
            continue
        if len(head) == QUOTE_LINES:
            more = bool(line) or any(_clean_body_line(r) for r in rest)
            break
        if len(line) > budget:
            shortened = line[:budget].rsplit(" ", 1)[0] if " " in line[:budget] else line[:budget]
            head.append(shortened.rstrip() + "…")
            cut = True
            break
        head.append(line)
        budget -= len(line)
    while head and not head[-1]:
        head.pop()
    # One pass over the lines joined: no pattern of `defang` matches across a line end.
    return defang("\n".join(head)).split("\n") if head else [], cut or more


# A URL's scheme and authority, and a dotted host name (also an address's domain, a "www."
# name or a file name: mail clients make links of all of those that end in a TLD).
_URL = re.compile(r"\b([a-z][a-z0-9+.-]{0,30})://([^\s/?#<>\"'\\]*)", re.IGNORECASE)
_HOST = re.compile(r"(?<![\w.-])(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]{1,62}(?![\w-])")
_HOST_HINT = re.compile(r"[^\W_]\.[^\W\d_]")  # in every match of _HOST: its last dot
_DEFANGED_SCHEMES = {"http": "hxxp", "https": "hxxps"}


def _defang_url(m: re.Match[str]) -> str:
    scheme = m.group(1)
    shown = _DEFANGED_SCHEMES.get(scheme.lower())
    start = f"{shown}://" if shown else f"{scheme}[:]//"
    return start + m.group(2).replace(".", "[.]")


def defang(text: str) -> str:
    """`text` with its URLs and dotted host names made inert (``hxxps://evil[.]example/x``,
    ``www[.]evil[.]example``, ``eve@evil[.]example``): quoted customer text must not become
    links in a mail we send."""
    # Each pattern only where it can match: a URL has "://", a host name a letter or digit,
    # a dot and a letter in a row (plain prose rarely has either).
    if "://" in text:
        text = _URL.sub(_defang_url, text)
    if _HOST_HINT.search(text):
        text = _HOST.sub(lambda m: m.group(0).replace(".", "[.]"), text)
    return text


