"""Subject prefixes: stripped whole, never a letter of the subject after them (CPython before
3.11.5, Debian 12's 3.11.2 among them, mismatched `(...)++` over a group that backtracks:
gh-106052; the patterns must give the same answers there)."""

from __future__ import annotations

import pytest

from mailbot.classify.text import _FORWARD_SUBJECT
from mailbot.markup import _TAG_REST
from mailbot.subjects import REPLY_PREFIX, strip_subject_prefixes


@pytest.mark.parametrize(("subject", "stripped"), [
    ("FW: recepce", "recepce"),  # "r" is a prefix word too (Italian "R:")
    ("FW: Rozpis směn recepce", "Rozpis směn recepce"),
    ("RE: Re: reorganizace", "reorganizace"),
    ("R: rozpis", "rozpis"),
    ("Re[2]: AW(3):Fwd:  trh", "trh"),
    ("Odpověď: re", "re"),
    ("Re", "Re"),
    ("Rekapitulace: leden", "Rekapitulace: leden"),
    ("  Fwd : Re :x", "x"),
])
def test_prefixes_are_stripped_whole(subject: str, stripped: str) -> None:
    assert strip_subject_prefixes(subject) == stripped


def test_a_reply_keeps_its_forward_prefix() -> None:
    assert REPLY_PREFIX.sub("", "Re: Re: Fwd: rozpis") == "Fwd: rozpis"
    assert REPLY_PREFIX.sub("", "Re: reorganizace") == "reorganizace"


@pytest.mark.parametrize(("folded", "forwarded"), [
    ("fw: rozpis", True), ("re: re: fwd: x", True), ("re: preposlat: x", True),
    ("re: rozpis", False), ("re: pr", False), ("re: re", False),
])
def test_a_forwarded_subject_is_told_by_its_prefixes(folded: str, forwarded: bool) -> None:
    assert bool(_FORWARD_SUBJECT.match(folded)) is forwarded


@pytest.mark.parametrize(("rest", "tag"), [
    ('class="a>b" title=\'c\'>x', 'class="a>b" title=\'c\'>'),
    ("a=b c='d>'>x", "a=b c='d>'>"),
    ('x="unclosed>y', 'x="unclosed>'),  # a stray quote: up to the first ">"
])
def test_a_tag_ends_at_its_first_unquoted_bracket(rest: str, tag: str) -> None:
    m = _TAG_REST.match(rest)
    assert m is not None and m.group(0) == tag
