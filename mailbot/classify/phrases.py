"""Phrase matching on folded text (the syntax is described in :mod:`.settings`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from mailbot.classify.settings import PhraseRule

_GAP = r"(?:\W+\w+){0,3}?\W+"
_SEP = r"\W+"


@lru_cache(maxsize=4096)
def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """The regular expression of one folded phrase."""
    parts: list[str] = []
    tokens = phrase.split()
    for i, token in enumerate(tokens):
        if token == "..":
            continue
        if parts:
            parts.append(_GAP if tokens[i - 1] == ".." else _SEP)
        if token.endswith("*") and len(token) > 1:
            body = re.escape(token[:-1]) + r"\w*"
        else:
            body = re.escape(token)
            if token[-1].isalnum():
                body += r"(?!\w)"
        if token[0].isalnum():
            body = r"(?<!\w)" + body
        parts.append(body)
    return re.compile("".join(parts))


def find_phrase(text: str, phrases: Iterable[str]) -> str | None:
    """The first phrase that occurs in folded `text`, or None."""
    for phrase in phrases:
        if phrase_pattern(phrase).search(text):
            return phrase
    return None


def match_rule(rule: PhraseRule, sentences: Iterable[str]) -> str | None:
    """The sentence-level evidence for `rule` ("phrase" or "a + b"), or None if it misses."""
    for sentence in sentences:
        if rule.unless and find_phrase(sentence, rule.unless):
            continue
        hit = find_phrase(sentence, rule.phrases)
        if hit:
            return hit
        if rule.all_of:
            found = [find_phrase(sentence, group) for group in rule.all_of]
            if all(found):
                return " + ".join(f for f in found if f)
    return None
