"""License numbers written in a mail: 8 digits next to a context word such as "licence".

A number counts only when a context word stands shortly before it with no other digits
and no distractor word (IČO, tel., faktura…) in between, so IČO/DIČ, phone, invoice, order
and account numbers, dates and postal codes are never taken for a license.
"""

from __future__ import annotations

import re
from functools import lru_cache

from mailbot.classify.phrases import find_phrase, phrase_pattern
from mailbot.classify.settings import ClassifyConfig
from mailbot.classify.text import fold

DEFAULT_SETTINGS = ClassifyConfig()


@lru_cache(maxsize=16)
def _compiled(settings: ClassifyConfig) -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...]]:
    return (
        re.compile(settings.license_pattern),
        tuple(phrase_pattern(p) for p in settings.license_context),
    )


def _has_context(before: str, contexts: tuple[re.Pattern[str], ...], settings: ClassifyConfig) -> bool:
    limit = settings.license_context_window
    window = before[-(limit + 40) :]
    for pattern in contexts:
        for m in pattern.finditer(window):
            gap = window[m.end() :]
            if len(gap) > limit:
                continue
            if re.search(r"\d", gap):
                continue
            if find_phrase(gap, settings.license_distractors):
                continue
            return True
    return False


def extract_license_numbers(
    text: str, settings: ClassifyConfig = DEFAULT_SETTINGS
) -> tuple[str, ...]:
    """Every license number in `text` (8 digits, normalised), in order of appearance."""
    pattern, contexts = _compiled(settings)
    folded = fold(text)
    found: list[str] = []
    for m in pattern.finditer(folded):
        digits = re.sub(r"\D", "", m.group(0))
        if len(digits) != 8 or digits in found:
            continue
        if _has_context(folded[: m.start()], contexts, settings):
            found.append(digits)
    return tuple(found)
