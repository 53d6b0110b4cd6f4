"""parse() over the shared real-world corpus: no crash, and agreement with its stated facts."""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import re
from collections.abc import Iterator
from pathlib import Path

from mailbot.ingest.parse import parse
from tests.shared_data import require_shared

NOT_MAIL = {"expected.jsonl", "SOURCES.md"}
CONTROL = re.compile("[\r\n\x00]")


def _norm(text: str | None) -> str:
    """Whitespace runs collapsed and the ends stripped, as the corpus facts are compared."""
    return re.sub(r"\s+", " ", text or "").strip()


def _checks(corpus: Path) -> Iterator[tuple[Path, str, str]]:
    """(file, "from" or "subject", expected value) for every stated from/subject fact."""
    for facts in sorted(corpus.glob("*/expected.jsonl")):
        for line in facts.read_text(encoding="utf-8").splitlines():
            fact = json.loads(line)
            path = facts.parent / fact["file"]
            expected_from = fact.get("from_email")
            if expected_from is None and "from" in fact:
                stated = fact["from"]
                expected_from = (stated[0][1] if isinstance(stated, list)
                                 else email.utils.parseaddr(stated)[1])
            if expected_from is not None:
                yield path, "from", expected_from
            if "subject" in fact:
                yield path, "subject", fact["subject"]


def _stdlib(raw: bytes) -> tuple[str | None, str]:
    """From address and subject as a bare `policy.default` parse gives them (None on a crash)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        sender = msg["from"]
        addr = sender.addresses[0].addr_spec if sender and sender.addresses else None
    except Exception:
        addr = None
    try:
        subject = str(msg["subject"] or "")
    except Exception:
        subject = ""
    return addr, subject


def _agrees(kind: str, got: str | None, expected: str) -> bool:
    """Case-insensitive address or whitespace-normalized subject equality."""
    if kind == "from":
        return (got or "").lower() == expected.lower()
    return _norm(got) == _norm(expected)


def test_every_corpus_file_parses_without_exception() -> None:
    """All 682 real-world files parse, and no header value holds CR, LF or NUL."""
    corpus = require_shared("corpus")
    files = [p for p in sorted(corpus.rglob("*")) if p.is_file() and p.name not in NOT_MAIL]
    assert len(files) >= 600
    for path in files:
        parsed = parse(path.read_bytes())
        for name, values in parsed.headers.items():
            for value in values:
                assert not CONTROL.search(value), (path, name)
        assert not CONTROL.search(parsed.subject + parsed.from_name), path


def test_from_and_subject_agree_with_corpus_facts() -> None:
    """parse() agrees with the stated from/subject facts on at least 98 % (stdlib: ~95 %)."""
    corpus = require_shared("corpus")
    checks = list(_checks(corpus))
    n = len(checks)
    assert n >= 150
    stdlib_ok = ours_ok = 0
    misses: list[str] = []
    for path, kind, expected in checks:
        raw = path.read_bytes()
        addr, subject = _stdlib(raw)
        stdlib_ok += _agrees(kind, addr if kind == "from" else subject, expected)
        parsed = parse(raw)
        got = parsed.from_addr if kind == "from" else parsed.subject
        if _agrees(kind, got, expected):
            ours_ok += 1
        else:
            misses.append(f"{path.relative_to(corpus)} {kind}: expected {expected!r}, got {got!r}")
    print(
        f"\ncorpus from/subject agreement: stdlib {stdlib_ok}/{n} = {100 * stdlib_ok / n:.1f}%, "
        f"mailbot {ours_ok}/{n} = {100 * ours_ok / n:.1f}%"
    )
    print("\n".join(f"  disagreement: {miss}" for miss in misses))
    assert ours_ok / n >= 0.98, misses
    assert ours_ok > stdlib_ok
