"""License numbers written in a mail: 8 digits next to a context word such as "licence".

A number counts only when a context word stands shortly before it with no other digits
and no distractor word (IČO, tel., faktura…) in between, so IČO/DIČ, phone, invoice, order
and account numbers, dates and postal codes are never taken for a license.
"""

from __future__ import annotations

import re

from mailbot.classify.phrases import PhraseSet, phrase_pattern, phrase_set
from mailbot.classify.settings import ClassifyConfig
from mailbot.classify.text import fold

DEFAULT_SETTINGS = ClassifyConfig()


_Compiled = tuple[re.Pattern[str], tuple[re.Pattern[str], ...], PhraseSet]
_COMPILED: dict[int, tuple[ClassifyConfig, _Compiled]] = {}
_DIGIT = re.compile(r"\d")
_NON_DIGITS = re.compile(r"\D")


def _compiled(settings: ClassifyConfig) -> _Compiled:
    """The license pattern, context patterns and distractors of `settings` (cached by
    identity: the config is frozen)."""
    entry = _COMPILED.get(id(settings))
    if entry is None or entry[0] is not settings:
        if len(_COMPILED) >= 16:
            _COMPILED.clear()
        compiled = (
            re.compile(settings.license_pattern),
            tuple(phrase_pattern(p) for p in settings.license_context),
            phrase_set(settings.license_distractors),
        )
        entry = _COMPILED[id(settings)] = (settings, compiled)
    return entry[1]


_LOOKAHEAD = 64  # characters past a number's latest start that its pattern may look at
_SENTENCE_END = re.compile(r"[.!?;]\s|\n")
_SAME_SENTENCE = 160  # how far after a license number its sentence is read for another one
MAX_CANDIDATES = 32
"""At most this many license numbers are taken from one text (the first ones)."""


# A year in the gap between a context word and its number ("from the 2019 contract").
_YEAR = re.compile(r"(?:19|20)\d\d(?!\d)")


def _number_after(
    folded: str,
    context_end: int,
    pattern: re.Pattern[str],
    distractors: PhraseSet,
    limit: int,
) -> re.Match[str] | None:
    """The license number standing right after a context word that ends at `context_end`:
    the first match that starts within `limit` characters, with no digits but a year and no
    distractor in between ("license number (from the 2019 contract) is 28846502"). Only a
    window of about `limit` characters is read."""
    end = context_end + limit + 1
    digit = _DIGIT.search(folded, context_end, end)
    while digit is not None:
        latest = digit.start()  # a number starting later would have digits in the gap
        m = pattern.search(folded, context_end, latest + _LOOKAHEAD)
        if m is not None and m.start() <= latest:
            break
        year = _YEAR.match(folded, latest)
        if year is None:
            return None
        digit = _DIGIT.search(folded, year.end(), end)
    else:
        return None
    if distractors.search(folded[context_end : m.start()]):
        return None
    return m


def _numbers_beside(folded: str, after: int, pattern: re.Pattern[str],
                    distractors: PhraseSet) -> list[re.Match[str]]:
    """Further license numbers in the sentence of one that ends at `after`, each with no
    distractor before it: "licence 4410 8832 na staré smlouvě, teď platí 52673019", "licence
    1111 2222 nebo 3333 4444" (the registry then says which one is theirs). Reads at most
    `_SAME_SENTENCE` characters."""
    window_end = after + _SAME_SENTENCE
    end = _SENTENCE_END.search(folded, after, window_end)
    stop = end.start() if end is not None else min(window_end, len(folded))
    found = []
    for m in pattern.finditer(folded, after, stop):
        if distractors.search(folded[after : m.start()]):
            break
        found.append(m)
        after = m.end()
    return found


def extract_license_numbers(
    text: str, settings: ClassifyConfig = DEFAULT_SETTINGS
) -> tuple[str, ...]:
    """The license numbers in `text` (8 digits, normalised) in order of appearance, the
    first `MAX_CANDIDATES` of them.

    Linear in `text`: each context phrase is searched once over the folded text, and a
    number is looked for only in the window after each context word (never the text
    before every number, which made a megabyte of numbers cost minutes). Each phrase's
    search stops at `MAX_CANDIDATES` distinct numbers: the first ones of all phrases
    together are among them.
    """
    return extract_folded_license_numbers(fold(text), settings)


def extract_folded_license_numbers(
    folded: str, settings: ClassifyConfig = DEFAULT_SETTINGS
) -> tuple[str, ...]:
    """`extract_license_numbers` of a text already folded (``fold(text)``)."""
    if _DIGIT.search(folded) is None:  # no number at all
        return ()
    pattern, contexts, distractors = _compiled(settings)
    limit = settings.license_context_window
    first_seen: dict[str, int] = {}  # number -> position of its first occurrence
    for context in contexts:
        mine: set[str] = set()
        for c in context.finditer(folded):
            m = _number_after(folded, c.end(), pattern, distractors, limit)
            if m is None:
                continue
            for m in (m, *_numbers_beside(folded, m.end(), pattern, distractors)):
                digits = _NON_DIGITS.sub("", m.group(0))
                if len(digits) != 8:
                    continue
                first_seen[digits] = min(m.start(), first_seen.get(digits, m.start()))
                mine.add(digits)
            if len(mine) >= MAX_CANDIDATES:
                break
    return tuple(sorted(first_seen, key=first_seen.__getitem__)[:MAX_CANDIDATES])


_LETTER = re.compile(r"[^\W\d_]")


def without_license_numbers(folded: str, settings: ClassifyConfig = DEFAULT_SETTINGS) -> str:
    """Folded `folded` with each license mention (its context word, the gap and the number)
    blanked out: "licence: 8045 6123" says nothing about the problem, and a sentence of
    only that must not make a request look like another one that also gives its license.
    A text with no letters left becomes ""."""
    if _DIGIT.search(folded) is None:  # no number, no mention
        return folded
    pattern, contexts, distractors = _compiled(settings)
    limit = settings.license_context_window
    spans: list[tuple[int, int]] = []
    for context in contexts:
        for c in context.finditer(folded):
            m = _number_after(folded, c.end(), pattern, distractors, limit)
            if m is not None and len(_NON_DIGITS.sub("", m.group(0))) == 8:
                spans.append((c.start(), m.end()))
    if not spans:
        return folded
    out, last = [], 0
    for start, end in sorted(spans):
        if end <= last:
            continue
        out.append(folded[last:max(start, last)])
        last = end
    out.append(folded[last:])
    text = " ".join(" ".join(out).split())
    return text if _LETTER.search(text) else ""
