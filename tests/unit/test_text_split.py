"""split_body against its line-by-line definition, on generated bodies."""

from __future__ import annotations

import random
import re

from mailbot.classify import text as text_mod
from mailbot.classify.text import fold, split_body


def _reference_split(text: str, subject: str, limit: int,
                     sender: str = "") -> tuple[str, str, str, str]:
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
        starts = t._SEPARATOR.match(f) or t._FORWARD_START.match(f) or t._ATTRIBUTION.search(f)
        marker = not any(folded[:i]) and t._REPLY_ABOVE.search(f)  # a helpdesk's, on top
        if starts and not marker:
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
    footer = _reference_footer_start(own)
    sig = _reference_signature_start(own[:footer])
    name = _reference_sender_line(own[:sig], sender)
    sig = sig if name is None else name
    return ("\n".join(own[:sig]).strip(), "\n".join([*quoted, quoted_tail]).strip(),
            forwarded_text, "\n".join(own[sig:]).strip())


def _reference_footer_start(lines: list[str]) -> int:
    """The trailing paragraphs with footer wording, after at least one line of text."""
    folded = [fold(line) for line in lines]
    paragraphs: list[list[int]] = []
    for i, f in enumerate(folded):
        if f and (not paragraphs or not folded[i - 1]):
            paragraphs.append([])
        if f:
            paragraphs[-1].append(i)
    start = len(lines)
    for para in reversed(paragraphs[1:]):
        joined = " ".join(folded[i] for i in para)
        if (len(joined) - len(para) + 1 > text_mod.FOOTER_CHARS
                or not text_mod._FOOTER.search(joined)):
            break
        start = para[0]
    return start


def _reference_sender_line(lines: list[str], sender: str) -> int | None:
    """The first line after the first line of text that is a name line made of the
    sender's name words (two or more, titles aside); a closing right above goes with it."""
    t = text_mod
    wanted = set(re.findall(r"[^\W\d_]+(?:\.[^\W\d_]+)*", fold(sender))) - t._TITLES
    if len(wanted) < 2:
        return None
    folded = [fold(line) for line in lines]
    text_lines = [i for i, f in enumerate(folded) if f]
    for k in range(1, len(text_lines)):
        i = text_lines[k]
        head = folded[i].split(",")[0]
        words = set(re.findall(r"[^\W\d_]+(?:\.[^\W\d_]+)*", head)) - t._TITLES
        if t._is_name_line(lines[i].strip(), folded[i]) and len(words) >= 2 and words <= wanted:
            above = text_lines[k - 1]
            if k > 1 and len(folded[above].split()) <= 6 and t._CLOSING.match(folded[above]):
                return above
            return i
    return None


def _reference_signature_start(lines: list[str]) -> int:
    t = text_mod
    folded = [fold(line) for line in lines]
    n = len(lines)
    for i, line in enumerate(lines):
        if line.rstrip() == "--" or line == "-- ":
            return i
    text_lines = [i for i, f in enumerate(folded) if f]  # "the last ten" count these
    if not text_lines:
        return n
    first_text = text_lines[0]
    last_ten = text_lines[-10:]
    start = n
    for i in last_ten:
        words = folded[i].split()
        if i > first_text and len(words) <= 6 and t._CLOSING.match(folded[i]):
            start = i
            break
    j = n
    for i in reversed(last_ten):
        raw, f = lines[i].strip(), folded[i]
        words = f.split()
        question = "?" in raw
        contact = bool(t._CONTACT.search(f)) and len(words) <= 10 and not question
        short = len(words) <= 6 and not re.search(r"[.?!:]$", raw) and not question
        if contact or short:
            j = i
            continue
        break
    if j <= first_text:
        j = min(n, first_text + 1)

    def signature_line(i: int) -> bool:
        raw, f = lines[i].strip(), folded[i]
        words = f.split()
        if "?" in raw or len(words) > 12:
            return False
        capitals = sum(1 for w in raw.split()[1:] if w[:1].isupper())
        plain = not re.search(r"[.!:]$", raw) and (len(words) <= 6 or capitals >= 2)
        return plain or bool(t._CONTACT.search(f))

    # The earliest name line with only signature lines from it to the end, one of those
    # below it telling how to reach the sender.
    for k, i in enumerate(last_ten):
        if (t._is_name_line(lines[i].strip(), folded[i]) and all(map(signature_line, last_ten[k:]))
                and any(t._REACHES.search(folded[x]) for x in last_ten[k + 1:])):
            j = min(j, i)
            break
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
    "Ing. Jana Malá", "Petr Novák-Dvořák, účetní", "Dobrý Den", "Sociální služby města Horní Lomnice",
    "Lomnická 12, 512 51 Horní Lomnice", "vedoucí provozu", "nejde nám vytisknout sestavu za říjen",
    "Jan Novák", "Novák Jan, mistr", "Mgr. Jana Malá",
    "Tento e-mail je důvěrný a je určen jen adresátovi.",
    "CONFIDENTIALITY NOTICE: this message is confidential.", "zapsaná v obchodním rejstříku",
    "soudu v Brně, oddíl B, vložka 1133.", "Pokud jste zprávu obdrželi omylem, smažte ji.",
    "--- Odpovídejte nad touto čarou ---", "----- Please reply above this line -----",
]


def test_split_body_is_the_line_by_line_definition() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        body = "\n".join(rng.choice(LINES) for _ in range(rng.randrange(0, 24)))
        if rng.random() < 0.2:
            body = body.replace("\n", "\r\n")
        subject = rng.choice(["", "Dotaz", "Fwd: dotaz", "RE: FW: x", "Re: odpověď"])
        limit = rng.choice([32_768, 200, 60])
        sender = rng.choice(["", "Jan Novák", "Novák, Jan", "Ing. Jana Malá", "Malá Jana",
                             "Petr"])
        parts = split_body(body, subject, limit, sender)
        assert (parts.own, parts.quoted, parts.forwarded, parts.signature) == _reference_split(
            body, subject, limit, sender), (body, subject, limit, sender)
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


def test_a_helpdesk_reply_above_marker_on_top_heads_the_message() -> None:
    """A notification relayed by the customer's helpdesk opens with its "reply above this
    line" marker: what follows is the message; below the sender's own text it is a cut."""
    body = ("--- Odpovídejte nad touto čarou ---\nIncident INC0042 byl přiřazen.\n\n"
            "Popis: server docházky po restartu nenaběhne, terminály jsou offline.\n")
    parts = split_body(body, "INC0042")
    assert "nenaběhne" in parts.own and parts.quoted == ""
    reply = "Tak už to běží, díky.\n\n" + body
    parts = split_body(reply, "INC0042")
    assert parts.own == "Tak už to běží, díky." and "nenaběhne" in parts.quoted
