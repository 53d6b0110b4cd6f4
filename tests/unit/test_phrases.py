"""Phrase matching (mailbot.classify.phrases): the prefilters never change what matches."""

from __future__ import annotations

import random
import re

from mailbot import config as config_mod
from mailbot.classify.phrases import PhraseSet, match_rule, phrase_pattern, words_of
from mailbot.classify.settings import PhraseRule

_GAP = r"(?:\W+\w+){0,3}?\W+"


def _reference_regex(phrase: str) -> str:
    """The phrase syntax spelt out plainly: every token whole, its start checked in front."""
    parts: list[str] = []
    tokens = phrase.split()
    for i, token in enumerate(tokens):
        if token == "..":
            continue
        if parts:
            parts.append(_GAP if tokens[i - 1] == ".." else r"\W+")
        if token.endswith("*") and len(token) > 1:
            body = re.escape(token[:-1]) + r"\w*"
        else:
            body = re.escape(token) + (r"(?!\w)" if token[-1].isalnum() else "")
        parts.append((r"(?<!\w)" if token[0].isalnum() else "") + body)
    return "".join(parts)


def _reference_first(phrases: tuple[str, ...], text: str) -> str | None:
    return next((p for p in phrases if re.search(_reference_regex(p), text)), None)


PHRASES = (
    "mzd*", "ne*", "do .. jsem mimo kancelar", "auto-reply", "won't", "precteno:", "s.r.o",
    "notificationtype\":\"bounce", "rozsir* .. o modul", "c. licence", "e-maily", "_x", "x_",
    "a", "k2", "ks mzd*", "nov* modul*", "co nejdriv", "žluť*", "x .. y",
)
WORDS = ["mzdy", "mzd", "nemzd", "ne", "neni", "do", "jsem", "mimo", "kancelar", "auto",
         "reply", "auto-reply", "auto_reply", "won't", "won", "precteno", "s", "r", "o",
         "s.r.o", "notificationtype", "bounce", "rozsirit", "modul", "c", "licence", "e",
         "maily", "_x", "x_", "x", "y", "a", "k2", "k22", "ks", "novy", "moduly", "co",
         "nejdriv", "žluťoučký", "zlut", "1", "_"]
SEPARATORS = [" ", " ", " ", "-", ".", ":", "\"", "'", "_", ", ", "\n", ""]


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pieces = []
        for _ in range(rng.randrange(1, 9)):
            pieces += [rng.choice(WORDS), rng.choice(SEPARATORS)]
        out.append("".join(pieces))
    return out


def test_patterns_match_exactly_where_the_plain_form_does() -> None:
    """The first token's literal is put first (lit(?<!\\wlit) instead of (?<!\\w)lit) so a
    search can skip ahead to it: every match and every substitution stays the same."""
    configured = config_mod.load().classify
    phrases = PHRASES + configured.bounce_body_phrases + configured.license_distractors
    texts = _texts(600, 1)
    for phrase in phrases:
        ours, plain = phrase_pattern(phrase), re.compile(_reference_regex(phrase))
        for text in texts:
            assert [m.span() for m in ours.finditer(text)] == [
                m.span() for m in plain.finditer(text)], (phrase, text)
            assert ours.sub(" ", text) == plain.sub(" ", text)


def test_first_is_the_first_phrase_in_list_order_that_occurs() -> None:
    """The whole-word and literal prefilters only skip phrases that cannot occur."""
    rng = random.Random(2)
    for text in _texts(3000, 3):
        phrases = tuple(rng.sample(PHRASES, rng.randrange(1, len(PHRASES))))
        assert PhraseSet(phrases).first(text) == _reference_first(phrases, text), (phrases, text)
    assert PhraseSet(("auto-reply", "mzd*")).first("re: auto-reply, mzdy") == "auto-reply"
    assert PhraseSet(("reply", "mzd*")).first("auto-reply_mzdy") is None
    assert PhraseSet(()).first("anything") is None


def test_words_of_are_the_runs_of_word_characters() -> None:
    for text in [*_texts(300, 4), "Žluťoučký kůň_1 a\u00a0b", "x\u2003y"]:
        assert words_of(text) == frozenset(re.findall(r"\w+", text))


def test_blank_out_blanks_phrase_by_phrase_in_list_order() -> None:
    """Also where blanking one phrase makes a later one occur ("ab x-y cd" loses "x-y",
    then "ab cd" occurs)."""
    rng = random.Random(5)
    phrases_pool = (*PHRASES, "x-y", "mzdy a", "a k2", "do jsem")
    for text in _texts(2000, 6):
        phrases = tuple(rng.sample(phrases_pool, rng.randrange(1, len(phrases_pool))))
        expected = text
        for phrase in phrases:
            expected = re.sub(_reference_regex(phrase), " ", expected)
        assert PhraseSet(phrases).blank_out(text) == expected, (phrases, text)
    assert PhraseSet(("x-y", "ab cd")).blank_out("ab x-y cd") == " "


def _reference_match(rule: PhraseRule, sentences: tuple[str, ...]) -> str | None:
    """A rule by its definition: the first sentence, in order, where a phrase occurs, or a
    phrase of every all_of group, and no unless phrase; none if unless_anywhere occurs."""
    if any(_reference_first(rule.unless_anywhere, s) for s in sentences):
        return None
    for sentence in sentences:
        if _reference_first(rule.unless, sentence):
            continue
        hit = _reference_first(rule.phrases, sentence)
        if hit:
            return hit
        if rule.all_of:
            found = [_reference_first(g, sentence) for g in rule.all_of]
            if all(found):
                return " + ".join(f for f in found if f)
    return None


def test_a_rule_hits_in_the_first_sentence_that_holds_it() -> None:
    """The phrases occurring in the joined sentences narrow what each sentence is tested for
    (a phrase of a sentence occurs in the joined text): the same evidence as testing each."""
    rng = random.Random(9)
    pool = (*PHRASES, "x-y", "mzdy a", "a k2")
    for _ in range(1500):
        def some(k: int) -> tuple[str, ...]:
            return tuple(rng.sample(pool, rng.randrange(0, k)))
        all_of = tuple(g for g in (some(4), some(4)) if g) if rng.random() < 0.6 else ()
        rule = PhraseRule(reason="r", phrases=some(5), all_of=all_of, unless=some(3),
                          unless_anywhere=some(2) if rng.random() < 0.3 else ())
        sentences = tuple(" ".join(t.split()) for t in _texts(rng.randrange(1, 5), rng.random()))
        assert match_rule(rule, sentences) == _reference_match(rule, sentences), (rule, sentences)
