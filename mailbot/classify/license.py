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


def _has_context(
    before: str,
    contexts: tuple[re.Pattern[str], ...],
    distractors: PhraseSet,
    settings: ClassifyConfig,
) -> bool:
    limit = settings.license_context_window
    window = before[-(limit + 40) :]
    for pattern in contexts:
        for m in pattern.finditer(window):
            gap = window[m.end() :]
            if len(gap) > limit:
                continue
            if _DIGIT.search(gap):
                continue
            if distractors.search(gap):
                continue
            return True
    return False


def extract_license_numbers(
    text: str, settings: ClassifyConfig = DEFAULT_SETTINGS
) -> tuple[str, ...]:
    """Every license number in `text` (8 digits, normalised), in order of appearance."""
    pattern, contexts, distractors = _compiled(settings)
    folded = fold(text)
    found: list[str] = []
    for m in pattern.finditer(folded):
        digits = _NON_DIGITS.sub("", m.group(0))
        if len(digits) != 8 or digits in found:
            continue
        if _has_context(folded[: m.start()], contexts, distractors, settings):
            found.append(digits)
    return tuple(found)
