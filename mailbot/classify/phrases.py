"""Phrase matching on folded text (the syntax is described in :mod:`.settings`).

Each phrase list is compiled once (:class:`PhraseSet`); a phrase's regular expression runs
only when the text contains the phrase's longest literal token, a cheap substring test.
A rule is first tested on all its sentences joined by newlines: a phrase that occurs in
one sentence occurs in the joined text, so a rule that misses there misses everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Generic, TypeVar

from mailbot.classify.settings import PhraseRule

_GAP = r"(?:\W+\w+){0,3}?\W+"
_SEP = r"\W+"


def _phrase_regex(phrase: str) -> str:
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
    return "".join(parts)


@lru_cache(maxsize=4096)
def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """The regular expression of one folded phrase."""
    return re.compile(_phrase_regex(phrase))


class PhraseSet:
    """A tuple of phrases compiled once, each with a literal that any match contains.

    The literal (the longest token without its ``*``) is tested with a substring search
    first, which is far cheaper than the regular expression and rules most phrases out.
    """

    __slots__ = ("_checks", "patterns", "phrases")

    def __init__(self, phrases: tuple[str, ...]) -> None:
        self.phrases = phrases
        self.patterns = tuple(phrase_pattern(p) for p in phrases)
        self._checks = tuple(
            (phrase, _literal(phrase), pattern.search)
            for phrase, pattern in zip(phrases, self.patterns)
        )

    def first(self, text: str) -> str | None:
        """The first phrase (in list order) that occurs in folded `text`, or None."""
        for phrase, literal, search in self._checks:
            if literal in text and search(text):
                return phrase
        return None

    def blank_out(self, text: str) -> str:
        """`text` with every occurrence of each phrase replaced by a space, phrase by
        phrase in list order (a phrase whose literal is missing cannot change it)."""
        for (_, literal, _), pattern in zip(self._checks, self.patterns):
            if literal in text:
                text = pattern.sub(" ", text)
        return text

    def search(self, text: str) -> bool:
        """Whether any phrase occurs in folded `text`."""
        return self.first(text) is not None


def _literal(phrase: str) -> str:
    """The longest token of `phrase` as written (without a trailing ``*``): every match of
    the phrase's pattern contains it verbatim."""
    literals = [
        token[:-1] if token.endswith("*") and len(token) > 1 else token
        for token in phrase.split()
        if token != ".."
    ]
    return max(literals, key=len, default="")


_SETS: dict[tuple[str, ...], PhraseSet] = {}


def phrase_set(phrases: Iterable[str]) -> PhraseSet:
    """The compiled :class:`PhraseSet` of `phrases` (cached)."""
    key = phrases if type(phrases) is tuple else tuple(phrases)
    found = _SETS.get(key)
    if found is None:
        if len(_SETS) >= 1024:
            _SETS.clear()
        found = _SETS[key] = PhraseSet(key)
    return found


class CompiledRule:
    """A :class:`PhraseRule` with its phrase lists compiled."""

    __slots__ = ("all_of", "phrases", "rule", "unless", "unless_anywhere")

    def __init__(self, rule: PhraseRule) -> None:
        self.rule = rule
        self.phrases = phrase_set(rule.phrases)
        self.all_of = tuple(phrase_set(g) for g in rule.all_of)
        self.unless = phrase_set(rule.unless)
        self.unless_anywhere = phrase_set(rule.unless_anywhere)

    def could_match(self, text: str) -> bool:
        """False when the rule cannot hit in any sentence of `text` (sentences joined by
        newlines): a phrase inside one sentence also occurs in the joined text."""
        if self.phrases.search(text):
            return True
        return bool(self.all_of) and all(g.search(text) for g in self.all_of)

    def match(self, sentences: Iterable[str], joined: str | None = None) -> str | None:
        """The evidence for the rule in `sentences` (see :func:`match_rule`)."""
        sentences = tuple(sentences)
        if joined is None:
            joined = "\n".join(sentences)
        if not self.could_match(joined):
            return None
        rule = self.rule
        if rule.unless_anywhere and self.unless_anywhere.search(joined):
            return None
        for sentence in sentences:
            if rule.unless and self.unless.first(sentence):
                continue
            hit = self.phrases.first(sentence)
            if hit:
                return hit
            if rule.all_of:
                found = [g.first(sentence) for g in self.all_of]
                if all(found):
                    return " + ".join(f for f in found if f)
        return None


K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    """Values built once per frozen key object, cached by identity (frozen pydantic models
    hash by value, which costs more than building a cheap key); bounded by `size`."""

    def __init__(self, build: Callable[[K], V], size: int) -> None:
        self._build = build
        self._size = size
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is None or entry[0] is not key:
            if len(self._entries) >= self._size:
                self._entries.clear()
            entry = self._entries[id(key)] = (key, self._build(key))
        return entry[1]


compiled_rule: IdentityCache[PhraseRule, CompiledRule] = IdentityCache(CompiledRule, 1024)
"""The compiled form of a phrase rule (rules are frozen)."""


def match_rule(rule: PhraseRule, sentences: Iterable[str], joined: str | None = None) -> str | None:
    """The sentence-level evidence for `rule` ("phrase" or "a + b"), or None if it misses.

    `joined` may pass the sentences already joined by newlines (folded sentences hold no
    newline); it only serves the prefilter.
    """
    return compiled_rule(rule).match(sentences, joined)
