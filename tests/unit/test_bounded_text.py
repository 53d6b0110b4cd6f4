"""Bounded work per message (issue 14, item 3): every text step reads a bounded input and
matches in linear time.

CPU time is not asserted (no timed assertions): the bounds are checked structurally (how
much text a step is given or reads), and the pathological inputs run in a subprocess with
a generous timeout that only guards against a hang (bd11aa8 needs minutes for each).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import SupportsIndex
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.classify import license as license_mod
from mailbot.classify import text as text_mod
from mailbot.classify.license import extract_license_numbers
from mailbot.classify.rules import RuleContext, mail_facts
from mailbot.classify.text import split_body
from mailbot.domain import Mail
from mailbot.errors import ConfigError
from mailbot.ingest import parse as parse_mod

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
REQUEST = (
    "Dobrý den,\n\npo kliknutí na Uložit se v ACS-line zobrazí chyba a směnný kalendář se "
    "neuloží.\n\nLicenční číslo: 4012-7733\n\nS pozdravem\nPavel Dvořák\n"
)
HANG_GUARD_SECONDS = 60.0


class _Registry:
    def get(self, number: str) -> None:
        return None


def _mail(text: str, subject: str = "Nejde ulozit") -> Mail:
    return Mail(message_id="<b@firma.cz>", from_addr="a@firma.cz", from_name="",
                to=("podpora@estelar.example",), cc=(), subject=subject, date=None,
                in_reply_to=(), references=(), return_path=None, text=text, html="",
                headers={}, attachments=(), content_type="text/plain", report_type="")


def _context(**limits: int) -> RuleContext:
    base = config_mod.load()
    cfg = base.model_copy(update={"limits": base.limits.model_copy(update=limits)})
    return RuleContext.from_config(cfg, _Registry(), NOW, None)


class _CountingStr(str):
    """A str that counts the characters its slices copy."""

    copied = 0

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        piece = str.__getitem__(self, key)
        _CountingStr.copied += len(piece)
        return piece


# --- license numbers ---------------------------------------------------------------------


def test_license_search_copies_a_window_per_context_word_not_the_text_before_each_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bd11aa8 sliced the whole text before every number (quadratic: 100,000 "lic" numbers
    cost over a minute); now only the gap after each context word is read."""
    numbers = [f"{10_000_000 + 7 * i}" for i in range(2000)]
    text = "\n".join(f"lic {n}," for n in numbers)
    fold = text_mod.fold
    monkeypatch.setattr(license_mod, "fold", lambda t: _CountingStr(fold(t)))
    _CountingStr.copied = 0
    found = extract_license_numbers(text)
    assert found == tuple(numbers[:license_mod.MAX_CANDIDATES])
    assert _CountingStr.copied <= len(text), f"{_CountingStr.copied:,} characters copied"


def test_license_candidates_are_the_first_32_in_order_of_appearance() -> None:
    """Each context phrase stops after 32 numbers; the first 32 of all of them are kept,
    in the order they stand (here "licence" and "lic" take turns)."""
    numbers = [f"{20_000_000 + 11 * i}" for i in range(200)]
    text = " ".join(f"{'licence' if i % 2 else 'lic'} {n}." for i, n in enumerate(numbers))
    assert extract_license_numbers(text) == tuple(numbers[:32])


def test_license_context_window_still_applies_after_a_distractor_or_digits() -> None:
    """The window search keeps the rules: no digits and no distractor between the context
    word and the number, at most license_context_window characters apart."""
    assert extract_license_numbers("licence 1234-5678") == ("12345678",)
    assert extract_license_numbers("licence, ICO 12345678") == ()
    assert extract_license_numbers("licence 5 ks: 12345678") == ()
    assert extract_license_numbers("licence" + " x" * 30 + " 12345678") == ()
    assert extract_license_numbers("lic 11112222 a lic. 33334444, lic 11112222") == (
        "11112222", "33334444")


# --- how much text the rules read ---------------------------------------------------------


def test_quote_stripper_is_given_at_most_quote_scan_chars(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Only the head of the body is split line by line (bd11aa8 folded and matched every
    line of a body, however long); the rest counts as quoted."""
    folded: list[int] = []
    fold, fold_lines = text_mod.fold, text_mod.fold_lines

    def counting_fold(text: str) -> str:
        folded.append(len(text))
        return fold(text)

    def counting_fold_lines(text: str) -> list[str]:
        folded.append(len(text))
        return fold_lines(text)

    monkeypatch.setattr(text_mod, "fold", counting_fold)
    monkeypatch.setattr(text_mod, "fold_lines", counting_fold_lines)
    junk = "\n" * 40_000 + "x\n" * 20_000
    parts = split_body(REQUEST + junk, "Nejde ulozit 1", 2048)
    assert sum(folded) <= 2048 + len("nejde ulozit 1")
    assert "kalendář" in parts.own and "4012-7733" in parts.signature
    assert parts.quoted.endswith("x\nx")


def test_rules_split_only_the_configured_head_of_the_body() -> None:
    """`[limits] quote_scan_chars` reaches the rules: of a long body only the head is split
    into own text and signature, the rest counts as quoted."""
    facts = mail_facts(_mail(REQUEST + "slovo " * 5000 + "\n"), _context(quote_scan_chars=1024))
    assert len(facts.parts.own) + len(facts.parts.signature) <= 1024
    assert facts.parts.quoted.endswith("slovo")
    assert facts.license_candidates == ("40127733",)


def test_rules_read_at_most_body_text_chars_of_the_body() -> None:
    """A license number beyond `[limits] body_text_chars` is not read (the body is cut)."""
    late = REQUEST.replace("4012-7733", "1111-2222") + "\n" * 3000 + "licence 4012-7733\n"
    facts = mail_facts(_mail(late), _context(body_text_chars=2048))
    assert len(facts.body) <= 2048
    assert facts.license_candidates == ("11112222",)
    facts = mail_facts(_mail(late), _context(body_text_chars=8192))
    assert facts.license_candidates == ("11112222", "40127733")


@pytest.mark.parametrize(("toml", "expected"), [
    ("[limits]\nquote_scan_chars = 10\n", "limits.quote_scan_chars: Input should be greater"),
    ("[limits]\nbody_text_chars = 'all'\n", "limits.body_text_chars: Input should be a valid"),
])
def test_bad_text_limit_is_named(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "mailbot.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        config_mod.load(path)


# --- HTML -----------------------------------------------------------------------------------

CONVERTERS: list[tuple[str, Callable[[str], str]]] = [
    ("ingest", parse_mod.html_to_text),
    ("classify", text_mod.html_to_text),
]


@pytest.mark.parametrize(("name", "convert"), CONVERTERS)
@pytest.mark.parametrize("junk", ["<a " * 50, "<!--" * 50, '<a title="' * 50, "<p"])
def test_unclosed_html_construct_ends_the_document_instead_of_being_rescanned(
    name: str, convert: Callable[[str], str], junk: str,
) -> None:
    """html.parser rescanned the rest of the document for each construct that never closed
    (and showed it as text); a tag, comment or quote open at the end ends the document."""
    assert convert("<p>Ahoj</p>" + junk) == "Ahoj"


@pytest.mark.parametrize(("name", "convert"), CONVERTERS)
def test_html_converter_reads_at_most_max_html_chars(name: str, convert: Callable[[str], str]
                                                     ) -> None:
    from mailbot.markup import MAX_HTML_CHARS  # here: a missing module fails this test only

    html = "<p>Ahoj</p>" + " " * MAX_HTML_CHARS + "<p>pozde</p>"
    assert convert(html) == "Ahoj"


@pytest.mark.parametrize(("name", "convert"), CONVERTERS)
def test_html_text_survives_tags_attributes_comments_and_scripts(
    name: str, convert: Callable[[str], str],
) -> None:
    html = ('<!DOCTYPE html><html><head><style>p {x: "<p>"}</style></head><body>'
            '<!-- <p>skryto</p> --><div class="a>b" title=\'c\'>Dobr&yacute; den<br/>'
            '<script>if (a < b) {}</script>1 &lt; 2</div></body></html>')
    assert convert(html) == "Dobrý den\n1 < 2"


def test_nested_blockquotes_are_marked_at_most_max_quote_depth() -> None:
    """Each level added "> " to every line (50,000 levels: 100 KB of marks a line)."""
    html = "<html>" + "<blockquote>" * 1000 + "x<br>y"
    depth = 8  # text.MAX_QUOTE_DEPTH
    assert text_mod.readable_text(html, "") == f"{'> ' * depth}x\n{'> ' * depth}y"


# --- the pathological inputs, end to end in-process, behind a hang guard -------------------

HANG_CASES = {
    "reply_prefix_spaces": "from mailbot.subjects import strip_subject_prefixes as f\n"
                           "arg = 'Re' + '\\u2003' * 250_000 + 'x'\nassert f(arg) == arg",
    "html_unclosed_tags": "from mailbot.ingest.parse import html_to_text as f\n"
                          "assert f('<p>a</p>' + '<a ' * 60_000) == 'a'",
    "html_unclosed_comments": "from mailbot.ingest.parse import html_to_text as f\n"
                              "assert f('<p>a</p>' + '<!--' * 100_000) == 'a'",
    "license_words": "from mailbot.classify.license import extract_license_numbers as f\n"
                     "assert len(f(''.join('lic %08d\\n' % (10**7 + i) for i in range(100_000))))"
                     " == 32",
    "nested_blockquotes": "from mailbot.classify.text import readable_text as f\n"
                          "assert len(f('<html>' + '<blockquote>' * 20_000 + 'x<br>' * 20_000,"
                          " '')) < 1_000_000",
}


@pytest.mark.parametrize("case", sorted(HANG_CASES))
def test_pathological_text_step_finishes_hang_guard(case: str) -> None:
    """Each input took minutes on bd11aa8 (quadratic or backtracking); the timeout is only a
    hang guard, far above the milliseconds they take now."""
    code = textwrap.dedent(HANG_CASES[case])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG_GUARD_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_latest_reply_searches_a_bounded_head_for_the_quote() -> None:
    """The quote-finding library sees at most the first 32 Ki characters (it cost a quarter
    of a second on 200,000); a longer reply without a quote there is kept whole."""
    from mailbot.classify import commands

    seen: list[int] = []
    real = commands._parser()

    class Counting:
        def read(self, text: str) -> object:
            seen.append(len(text))
            return real.read(text)

    long_reply = "Dobrý den,\n" + "řádek odpovědi číslo 12345\n" * 4000
    original = commands._parser
    commands._parser = lambda: Counting()  # type: ignore[assignment]
    try:
        assert commands.latest_reply(long_reply).strip() == long_reply.strip()
        quoted = "Díky, opraveno.\n\nOn Mon, 1 Dec 2026 at 10:00, Eva wrote:\n> " + "x " * 60000
        assert commands.latest_reply(quoted) == "Díky, opraveno."
    finally:
        commands._parser = original  # type: ignore[assignment]
    assert seen and max(seen) <= commands._QUOTE_SCAN
