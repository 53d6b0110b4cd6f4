"""The prefixes mail clients put before a subject, written once (pure; used by classify and
replies alike, so it sits below both).

RFC 5322 §3.6.5 "Re:" and its localized forms, optionally with a counter ("Re[2]:",
"AW(3):"); forwarding adds "Fwd:" and its forms. A reply drops the reply prefixes only
(`REPLY_PREFIX`: "Re: Fwd: x" is answered as "Re: Fwd: x"); the rules compare subjects
without either kind (`strip_subject_prefixes`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["FORWARD_WORDS", "REPLY_PREFIX", "REPLY_WORDS", "SUBJECT_PREFIX",
           "strip_subject_prefixes"]

REPLY_WORDS: Final = ("re", "aw", "sv", "vs", "odp", "odpověď", "antw")
FORWARD_WORDS: Final = ("fw", "fwd", "wg", "tr", "pr", "r")


def prefix_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """Any run of `words` used as prefixes (``word:``, ``word[2]:``, ``word(2):``) at the
    start of a subject, case-insensitive."""
    alternatives = "|".join(re.escape(w) for w in words)
    # Possessive and atomic, so no backtracking: "Re" + 199,000 spaces was quadratic (hostile
    # input). A group is made atomic with (?>...), not a possessive quantifier: before 3.11.5
    # (Debian 12's Python is 3.11.2) `(...)++` over a group that backtracks inside kept the
    # letters of a failed last round ("FW: recepce" lost its "r": CPython gh-106052).
    return re.compile(
        rf"^\s*+(?>(?:(?:{alternatives})\s*+(?>(?:\[\d++\]|\(\d++\))?)\s*+:\s*+)+)", re.I)


REPLY_PREFIX: Final = prefix_pattern(REPLY_WORDS)
SUBJECT_PREFIX: Final = prefix_pattern(REPLY_WORDS + FORWARD_WORDS)


def strip_subject_prefixes(subject: str) -> str:
    """The subject without its Re:/AW:/Fwd:/Odp: prefixes."""
    return SUBJECT_PREFIX.sub("", subject).strip()
