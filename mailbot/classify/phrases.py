"""Phrase matching on folded text (the syntax is described in :mod:`.settings`).

Each phrase list is prepared once (:class:`PhraseSet`); a phrase's regular expression is
compiled the first time it has to run (most phrases of a rule set never do in a process's
life, and compiling all ~2,700 cost each decision process ~0.25 s of start-up). It runs
only when the text may hold the phrase: when a word the phrase needs whole is a word of the
text (one set lookup among the text's words, which are collected once per text), or, for a
phrase without such a word, when the text contains its longest literal token. A rule is
first tested on all its sentences joined by newlines: a phrase that occurs in one sentence
occurs in the joined text, so a rule that misses there misses everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import compress
from typing import Generic, TypeVar

from mailbot.classify.settings import PhraseRule

_GAP = r"(?:\W+\w+){0,3}?\W+"
_SEP = r"\W+"


def _phrase_regex(phrase: str) -> str:
    """A token matches as written and whole: not inside a longer word (``word*``: any word
    starting so). The first token's literal comes first and its start is checked behind it,
    ``lit(?<!\\wlit)`` rather than ``(?<!\\w)lit``: the same matches, but a pattern that
    opens with a literal is searched for by that literal, not tried at every position."""
    parts: list[str] = []
    tokens = phrase.split()
    for i, token in enumerate(tokens):
        if token == "..":
            continue
        if parts:
            parts.append(_GAP if tokens[i - 1] == ".." else _SEP)
        star = token.endswith("*") and len(token) > 1
        literal = re.escape(token[:-1] if star else token)
        tail = r"\w*" if star else r"(?!\w)" if token[-1].isalnum() else ""
        if not token[0].isalnum():
            parts.append(literal + tail)
        elif parts:
            parts.append(r"(?<!\w)" + literal + tail)
        else:
            parts.append(literal + rf"(?<!\w{literal})" + tail)
    return "".join(parts)


_WORD_RUN = re.compile(r"\w+")
_WORD_OR_NOT = re.compile(r"\w+|\W+")
_NON_WORD_ASCII = {c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_")}
_WORDS_CACHED_LENGTH = 8192


def words_of(text: str) -> frozenset[str]:
    """The words of `text`: its maximal runs of word characters (what ``\\w+`` finds).
    Texts up to 8 Ki characters are cached (a few dozen: the texts of the mail at hand)."""
    if len(text) <= _WORDS_CACHED_LENGTH:
        return _words_cached(text)
    return _words(text)


def _words(text: str) -> frozenset[str]:
    if text.isascii():  # ASCII word characters: letters, digits, "_"
        return frozenset(text.translate(_NON_WORD_ASCII).split())
    return frozenset(_WORD_RUN.findall(text))


_words_cached = lru_cache(maxsize=32)(_words)


def _whole_word(phrase: str) -> str | None:
    """The longest word that every match of `phrase` holds whole (a run of word characters
    with a non-word character or the token's checked edge on either side), if any."""
    found: list[str] = []
    for token in phrase.split():
        star = token.endswith("*") and len(token) > 1
        runs = _WORD_OR_NOT.findall(token[:-1] if star else token)
        for k, run in enumerate(runs):
            if not _WORD_RUN.fullmatch(run):
                continue
            starts = k > 0 or token[0].isalnum()  # (?<!\w) before the token
            ends = k < len(runs) - 1 or (not star and token[-1].isalnum())  # (?!\w) after
            if starts and ends:
                found.append(run)
    return max(found, key=len, default=None)


@lru_cache(maxsize=4096)
def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """The regular expression of one folded phrase."""
    return re.compile(_phrase_regex(phrase))


class PhraseSet:
    """A tuple of phrases compiled once, each with a literal that any match contains and,
    where it has one, a word that any match holds whole.

    Before a phrase's regular expression runs, its whole word must be among the text's
    words (:func:`words_of`: one set intersection for all the phrases of the set), and its
    literal (the longest token without its ``*``) must occur in the text.
    """

    __slots__ = ("_by_word", "_literals", "_loose", "_loose_literals", "_patterns", "_words",
                 "phrases")

    def __init__(self, phrases: tuple[str, ...]) -> None:
        self.phrases = phrases
        self._literals = tuple(_literal(phrase) for phrase in phrases)
        self._patterns: list[re.Pattern[str] | None] = [None] * len(phrases)
        by_word: dict[str, list[int]] = {}
        loose: list[int] = []
        for i, phrase in enumerate(phrases):
            word = _whole_word(phrase)
            if word is None:
                loose.append(i)
            else:
                by_word.setdefault(word, []).append(i)
        self._by_word = {word: tuple(found) for word, found in by_word.items()}
        self._words = frozenset(by_word)
        self._loose = tuple(loose)  # the phrases without a whole word, by literal only
        self._loose_literals = tuple(self._literals[i] for i in loose)

    def _pattern(self, i: int) -> re.Pattern[str]:
        """Phrase `i`'s regular expression, compiled on its first use."""
        pattern = self._patterns[i]
        if pattern is None:
            pattern = self._patterns[i] = phrase_pattern(self.phrases[i])
        return pattern

    def _candidates(self, text: str) -> list[int]:
        """The indices, in list order, of the phrases `text` may hold (a superset)."""
        found: list[int] = []
        if self._words:
            for word in self._words.intersection(words_of(text)):
                found.extend(self._by_word[word])
        if self._loose:
            found.extend(compress(self._loose, map(text.__contains__, self._loose_literals)))
        if len(found) > 1:
            found.sort()
        return found

    def first(self, text: str) -> str | None:
        """The first phrase (in list order) that occurs in folded `text`, or None."""
        if not self.phrases:
            return None
        return self.first_of(text, self._candidates(text))

    def occurring(self, text: str) -> list[int]:
        """The indices, in list order, of the phrases that occur in folded `text`.

        A phrase that occurs in a part of `text` between line breaks (a sentence of
        sentences joined by newlines) is among them: passed to :meth:`first_of`, they
        narrow the phrases to try in each part."""
        if not self.phrases:
            return []
        literals = self._literals
        return [i for i in self._candidates(text)
                if literals[i] in text and self._pattern(i).search(text)]

    def first_of(self, text: str, indices: Iterable[int]) -> str | None:
        """The first phrase among `indices` (in list order) that occurs in `text`, or None:
        ``first(text)`` when `indices` hold every phrase that may occur in it."""
        literals = self._literals
        for i in indices:
            if literals[i] in text and self._pattern(i).search(text):
                return self.phrases[i]
        return None

    def in_a_sentence(self, sentences: Iterable[str], joined: str) -> str | None:
        """The first phrase (in list order) that occurs within one of `sentences`, or None;
        `joined` holds them joined by newlines (where every such phrase occurs too, so only
        the phrases found there are tried, and `sentences` are not read when none is)."""
        found = self.occurring(joined)
        if found:
            for sentence in sentences:
                hit = self.first_of(sentence, found)
                if hit:
                    return hit
        return None

    def blank_out(self, text: str, by: str = " ") -> str:
        """`text` with every occurrence of each phrase replaced by `by` (a space), phrase
        by phrase in list order (a phrase whose literal is missing cannot change it).

        Until a phrase changes the text only the candidates of the text can; after that, a
        blank may have brought words together, so every later phrase is tried."""
        literals = self._literals
        for i in self._candidates(text):
            if literals[i] in text:
                text, changed = self._pattern(i).subn(by, text)
                if changed:
                    for k in range(i + 1, len(literals)):
                        if literals[k] in text:
                            text = self._pattern(k).sub(by, text)
                    return text
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

    def match(self, sentences: Iterable[str], joined: str | None = None, *,
              exceptions: bool = True) -> str | None:
        """The evidence for the rule in `sentences` (see :func:`match_rule`); with
        `exceptions` False, as if the rule had no `unless` and `unless_anywhere`.

        The phrases that occur in the joined text are found first: only they can occur in
        a sentence, and the rule cannot hit unless one of its phrases, or a phrase of every
        group of `all_of`, is among them."""
        sentences = tuple(sentences)
        if joined is None:
            joined = "\n".join(sentences)
        phrases = self.phrases.occurring(joined)
        groups: list[list[int]] = []
        for group in self.all_of:
            found = group.occurring(joined)
            if not found:  # this group occurs nowhere: all_of cannot hit
                groups = []
                break
            groups.append(found)
        if not phrases and not groups:
            return None
        if exceptions and self.rule.unless_anywhere and self.unless_anywhere.search(joined):
            return None
        unless = self.unless.occurring(joined) if exceptions else []
        for sentence in sentences:
            if unless and self.unless.first_of(sentence, unless):
                continue
            hit = self.phrases.first_of(sentence, phrases) if phrases else None
            if hit:
                return hit
            if groups:
                hits = [g.first_of(sentence, c) for g, c in zip(self.all_of, groups)]
                if all(hits):
                    return " + ".join(f for f in hits if f)
        return None

    def vetoed(self, sentences: Iterable[str], joined: str | None = None) -> str | None:
        """The `unless` (or `unless_anywhere`) phrase that kept the rule from hitting in
        `sentences`, where its evidence is there: the rule knows this exception, so a less
        sure opinion should not decide against it. None when nothing was vetoed."""
        sentences = tuple(sentences)
        if joined is None:
            joined = "\n".join(sentences)
        if not self.could_match(joined):
            return None
        if self.rule.unless_anywhere:
            found = self.unless_anywhere.first(joined)
            if found:
                return found
        unless = self.unless.occurring(joined)
        if not unless:
            return None
        for sentence in sentences:
            veto = self.unless.first_of(sentence, unless)
            if veto and self.match((sentence,), exceptions=False):
                return veto
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
    newline), or a text that holds each of them between line breaks or its ends; a sentence
    may also be two of those texts joined by a space (a phrase cannot tell a space from a
    line break). Only the phrases occurring in `joined` are looked for in each sentence.
    """
    return compiled_rule(rule).match(sentences, joined)
