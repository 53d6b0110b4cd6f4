"""The reply language of a mail: "en" for English text, otherwise "cs" (Slovak too)."""

from __future__ import annotations

import re

from mailbot.classify.text import fold

_CZECH_LETTERS = re.compile(r"[ěščřžýůňťďľĺŕôäĚŠČŘŽÝŮŇŤĎĽĹŔÔÄ]")
_WORD = re.compile(r"[a-z']+")


def detect_language(
    text: str,
    english_words: frozenset[str],
    czech_words: frozenset[str],
    default: str = "cs",
    folded: str | None = None,
) -> str:
    """"en" when English marker words outweigh Czech/Slovak ones (and letters), else "cs".

    `folded` may pass ``fold(text)`` when the caller has it."""
    words = _WORD.findall(fold(text) if folded is None else folded)
    if not words:
        return default
    en = sum(map(english_words.__contains__, words))
    cs = sum(map(czech_words.__contains__, words)) + 2 * min(5, len(_CZECH_LETTERS.findall(text)))
    if en > cs:
        return "en"
    if cs > en:
        return "cs"
    return default
