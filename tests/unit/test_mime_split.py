"""The private feedparser's boundary matcher against the regex the stdlib compiles, and the
trees it builds against the stdlib's own parse."""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import re
from pathlib import Path

import pytest

from mailbot.ingest.mime_split import BoundaryLine, _Re, parse_text
from tests.shared_data import SHARED
from tests.unit.test_parse import _tree

TAIL_CHARS = ("-", " ", "\t", "\r", "\n", "x")
SEPARATORS = ("--X", "--=_Part_1.2+(x)?*[a]$^|\\", "----=_NextPart_000_0001_01DB3C1E.5B3B8E40",
              "-- ", "--")


def _stdlib_pattern(separator: str) -> re.Pattern[str]:
    """What email.feedparser compiles for a multipart part's boundary (Python 3.11-3.13)."""
    return re.compile("(?P<sep>" + re.escape(separator)
                      + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")


def _lines(separator: str) -> list[str]:
    tails = ["".join(t) for n in range(6) for t in itertools.product(TAIL_CHARS, repeat=n)]
    return ([separator + tail for tail in tails]
            + [separator[:-1], "x" + separator, "", "\n", separator.upper() + "\n"])


@pytest.mark.parametrize("separator", SEPARATORS)
def test_boundary_line_matches_as_the_regex(separator: str) -> None:
    """Every line of the separator and up to five of '-', blanks, CR, LF and 'x' after it:
    matched or not as the regex matches it, with the same groups."""
    pattern = _stdlib_pattern(separator)
    ours = BoundaryLine(separator)
    matched = 0
    for line in _lines(separator):
        want, got = pattern.match(line), ours.match(line)
        assert (got is None) == (want is None), repr(line)
        if want is not None and got is not None:
            matched += 1
            for group in (0, "sep", "end", "ws", "linesep"):
                assert got.group(group) == want.group(group), (repr(line), group)
    assert matched > 100  # the table has plenty of matching lines, not only misses


def test_only_the_boundary_pattern_is_replaced() -> None:
    """The stdlib's boundary pattern becomes a BoundaryLine for its very separator; any
    other pattern (or a flag) is compiled by re."""
    fake = _Re()
    ours = fake.compile(_stdlib_pattern("--a.b\\c").pattern)
    assert isinstance(ours, BoundaryLine) and ours.separator == "--a.b\\c"
    assert isinstance(fake.compile(r"(?P<sep>--a)(?P<end>--)?$"), re.Pattern)
    assert isinstance(fake.compile(_stdlib_pattern("--a").pattern, re.I), re.Pattern)
    # Not what re.escape makes of any separator: compiled as a regex, not read literally.
    odd = "(?P<sep>--a.b" + _stdlib_pattern("--a").pattern[len("(?P<sep>--a"):]
    assert isinstance(fake.compile(odd), re.Pattern)


MULTIPART = {
    "nested, odd boundary characters": (
        "Content-Type: multipart/mixed; boundary=\"=_a.b+(c)?\"\n\npreamble\n"
        "--=_a.b+(c)?\nContent-Type: multipart/alternative; boundary=inner\n\n"
        "--inner\nContent-Type: text/plain\n\nhello\n--inner \t\n"
        "Content-Type: text/html\n\n<p>hi</p>\n--inner--\n"
        "--=_a.b+(c)?--  \nepilogue\n"),
    "CR line ends": ("Content-Type: multipart/mixed; boundary=B\r\r--B\rContent-Type: text/plain"
                     "\r\rbody\r--B--\r"),
    "look-alike lines": ("Content-Type: multipart/mixed; boundary=B\n\n--B\n\n--Bx\n--B--x\n"
                         "--B -\n--B\n\nsecond\n--B--\n"),
    "no closing boundary": "Content-Type: multipart/mixed; boundary=B\n\n--B\n\nbody\n",
    "boundary at the very end": "Content-Type: multipart/mixed; boundary=B\n\n--B\n\nbody\n--B--",
}


@pytest.mark.parametrize("text", MULTIPART.values(), ids=MULTIPART.keys())
@pytest.mark.parametrize("policy", [email.policy.compat32, email.policy.default],
                         ids=["compat32", "default"])
def test_parse_text_builds_the_stdlib_tree(text: str, policy: email.policy.Policy) -> None:
    expected = email.parser.Parser(policy=policy).parsestr(text)
    assert _tree(parse_text(text, policy)) == _tree(expected)


def _shared_mail() -> list[Path]:
    if SHARED is None:
        return []
    corpus = [p for p in sorted((SHARED / "corpus").rglob("*"))
              if p.is_file() and p.suffix not in (".jsonl", ".md")]
    return corpus + sorted((SHARED / "labelled").glob("dev*/*.eml"))


def test_shared_mail_parses_to_the_stdlib_tree() -> None:
    """Every real-world and labelled mail of ../shared: the same tree as the stdlib's."""
    paths = _shared_mail()
    if not paths:
        pytest.skip("../shared is not beside the project (a clone without the shared data)")
    multipart = 0
    for path in paths:
        text = path.read_bytes().decode("ascii", "surrogateescape")
        expected = email.parser.Parser(policy=email.policy.compat32).parsestr(text)
        multipart += expected.is_multipart()
        assert _tree(parse_text(text, email.policy.compat32)) == _tree(expected), path.name
    assert multipart > 50
