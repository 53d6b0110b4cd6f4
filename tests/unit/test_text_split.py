"""split_body against its line-by-line definition, on generated bodies."""

from __future__ import annotations

import random
import re

from mailbot.classify import text as text_mod
from mailbot.classify.text import fold, split_body


def _reference_split(text: str, subject: str, limit: int) -> tuple[str, str, str, str]:
    """Every line folded and looked at in turn: the plain definition of split_body."""
    t = text_mod
    text, overflow = t._head(text.replace("\r\n", "\n").replace("\r", "\n"), limit)
    lines = text.split("\n")
    folded = [fold(line) for line in lines]
    forwarded_subject = bool(t._FORWARD_SUBJECT.match(fold(subject)))
    own: list[str] = []
    quoted: list[str] = []
    cut, forwarded = len(lines), False
    for i, f in enumerate(folded):
        if t._SEPARATOR.match(f) or t._FORWARD_START.match(f) or t._ATTRIBUTION.search(f):
            cut, forwarded = i, bool(t._FORWARD_WORDS.search(f) or t._FORWARD_START.match(f))
            break
        if t._HEADER_FIRST.match(f) and any(t._HEADER_NEXT.match(x) for x in folded[i + 1:i + 5]):
            cut, forwarded = i, forwarded_subject
            break
        (quoted if lines[i].lstrip().startswith(">") else own).append(lines[i])
    rest = ("\n".join(lines[cut:]) + overflow).strip()
    if forwarded or forwarded_subject and rest:
        forwarded_text, quoted_tail = rest, ""
    else:
        forwarded_text, quoted_tail = "", rest
    sig = _reference_signature_start(own)
    return ("\n".join(own[:sig]).strip(), "\n".join([*quoted, quoted_tail]).strip(),
            forwarded_text, "\n".join(own[sig:]).strip())


def _reference_signature_start(lines: list[str]) -> int:
    t = text_mod
    folded = [fold(line) for line in lines]
    n = len(lines)
    for i, line in enumerate(lines):
        if line.rstrip() == "--" or line == "-- ":
            return i
    start = n
    first_text = next((k for k, f in enumerate(folded) if f), n)
    for i, f in enumerate(folded):
        words = f.split()
        if i > first_text and 0 < len(words) <= 6 and t._CLOSING.match(f) and n - i <= 10:
            start = i
            break
    j = n
    while j > 0:
        raw, f = lines[j - 1].strip(), folded[j - 1]
        if not f:
            j -= 1
            continue
        words = f.split()
        question = "?" in raw
        contact = bool(t._CONTACT.search(f)) and len(words) <= 10 and not question
        short = len(words) <= 6 and not re.search(r"[.?!:]$", raw) and not question
        if (contact or short) and n - (j - 1) <= 10:
            j -= 1
            continue
        break
    if j <= first_text:
        j = min(n, first_text + 1)
    return min(start, j)


LINES = [
    "", " ", "Dobrý den,", "Nejde nám uložit směnu v docházce, program hlásí chybu.",
    "Prosím o radu, co s tím?", "Děkuji", "S pozdravem", "Jan Novák", "tel.: +420 603 111 222",
    "Licenční číslo: 1234 5678", "Firma s.r.o.", "--", "-- ", "---", "-----",
    "----- Původní zpráva -----", "---------- Forwarded message ---------", "________",
    "Begin forwarded message:", "Začátek přeposlané zprávy:", "Od: Petr <p@x.cz>",
    "From: Petr <p@x.cz>", "Odesláno: pondělí", "Sent: Monday", "Komu: podpora", "To: x",
    "Předmět: dotaz", "Subject: y", "Dne 3. 5. 2026 Petr napsal(a):", "On Mon, Petr wrote:",
    "> citace", "  > odsazená citace", ">> hlubší", "dekuji:", "a tak dál -- a dál",
    "od: ", "de: x", "Ödön schrieb:", "Best regards", "www.firma.cz", "„uvozovky“ – pomlčka",
    "Otázka na konec? Ano.", "1. bod", "- odrážka", "_podtržítko_",
]


def test_split_body_is_the_line_by_line_definition() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        body = "\n".join(rng.choice(LINES) for _ in range(rng.randrange(0, 24)))
        if rng.random() < 0.2:
            body = body.replace("\n", "\r\n")
        subject = rng.choice(["", "Dotaz", "Fwd: dotaz", "RE: FW: x", "Re: odpověď"])
        limit = rng.choice([32_768, 200, 60])
        parts = split_body(body, subject, limit)
        assert (parts.own, parts.quoted, parts.forwarded, parts.signature) == _reference_split(
            body, subject, limit), (body, subject, limit)
        assert parts.own_folded == fold(parts.own)
        assert parts.signature_folded == fold(parts.signature)


def test_the_text_caches_keep_little_of_many_mails() -> None:
    """What fold and split_body remember of thousands of mails stays small in each decision
    process (4,096 folds and 512 bodies held ~5 MB on the generated corpus): here under
    8 MB for 5,000 folded 1,000-character lines and 1,000 split 20 kB bodies (was 56 MB)."""
    import gc
    import tracemalloc

    from mailbot.classify import text

    text._fold_cached.cache_clear()
    text.split_body.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5000):
            text.fold(f"Řádek {i} " + "žluťoučký kůň úpěl ďábelské ódy " * 31)
        for i in range(1000):
            text.split_body(f"Dobrý den, č. {i}\n" + "> citace předchozí zprávy\n" * 800)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 8_000_000
