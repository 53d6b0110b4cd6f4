"""Text handling for the rules: folding, HTML to text, and which part of a body is whose.

A body is split into the customer's own new text, the quoted earlier mail (reply quotes),
forwarded mail and the signature. Scope and emergency phrases look only at the customer's
own words; a license number counts wherever it stands.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import islice
from dataclasses import dataclass
from functools import lru_cache
from mailbot.markup import MarkupSink, scan

_SPACE = re.compile(r"\s+")


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class _FoldTable(dict[int, "int | str"]):
    """`str.translate` table: each character without its diacritics (NFKD, combining marks
    dropped), filled on first use; ASCII and the Latin letters are precomputed.

    Per character this equals decomposing the whole string: NFKD decomposes character by
    character, and its canonical reordering only moves combining marks, which are dropped.
    """

    def __missing__(self, code: int) -> int | str:
        ch = chr(code)
        folded = _strip_marks(ch)
        value: int | str = code if folded == ch else folded
        if len(self) < 65536:
            self[code] = value
        return value


def _fold_table() -> _FoldTable:
    table = _FoldTable()
    for code in range(0x250):
        table[code]  # fills the entry (__missing__)
    return table


_FOLD = _fold_table()

# Runs of everything but ASCII and the combining marks of U+0300-U+036F (Latin letters with
# diacritics decompose into ASCII and those marks).
_NOT_ASCII_OR_MARK = re.compile("([^\x00-\x7f" + "".join(
    chr(c) for c in range(0x300, 0x370) if unicodedata.combining(chr(c))) + "]+)")


def _strip_diacritics(text: str) -> str:
    """``text.translate(_FOLD)``, computed the cheap way.

    ASCII folds to itself. Other text is decomposed once (NFKD, in C); by the table's
    argument (NFKD decomposes character by character and reorders only combining marks,
    which are dropped) its fold is the decomposition without its combining marks. The
    stretches of ASCII and Latin marks (all of Czech, Slovak or German but typographic
    quotes and dashes) drop their marks by an ASCII encoding; the rest, whose characters
    are decomposed already, go through the table.
    """
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    if _NOT_ASCII_OR_MARK.search(decomposed) is None:
        return decomposed.encode("ascii", "ignore").decode("ascii")
    pieces = _NOT_ASCII_OR_MARK.split(decomposed)
    for k in range(0, len(pieces), 2):  # ASCII and Latin marks
        pieces[k] = pieces[k].encode("ascii", "ignore").decode("ascii")
    for k in range(1, len(pieces), 2):  # anything else, each character decomposed
        pieces[k] = pieces[k].translate(_FOLD)
    return "".join(pieces)


def fold(text: str) -> str:
    """Lower case, diacritics removed, whitespace collapsed: the form phrases are matched in.

    Each character folds on its own (:class:`_FoldTable`, :func:`_strip_diacritics`);
    `str.split` knows the same whitespace as the regular expressions (`str.isspace`). Short
    texts (subjects, lines, sentences, which the rules fold again and again) are cached.

    Folding works line by line: ``fold("\\n".join(lines))`` equals
    ``join_folded(fold(line) for line in lines)`` (:func:`join_folded`).
    """
    if len(text) <= _CACHED_FOLD_LENGTH:
        return _fold_cached(text)
    return _fold(text)


_CACHED_FOLD_LENGTH = 2048


def _fold(text: str) -> str:
    return " ".join(_strip_diacritics(text).lower().split())


def fold_lines(text: str) -> list[str]:
    """``[fold(line) for line in text.split("\\n")]``, with the text folded in one go (no
    character folds into a line break, and lower-casing looks across none)."""
    return [" ".join(line.split()) for line in _strip_diacritics(text).lower().split("\n")]


# Most hits are within one decision (a sentence folded by several rules): 1,024 texts keep
# 98 % of 4,096's hits on the generated corpus, in a quarter of the memory (4 MB in each
# decision process).
_fold_cached = lru_cache(maxsize=1024)(_fold)


def join_folded(folded: Iterable[str]) -> str:
    """The fold of texts joined by line breaks, from the folds of the texts.

    Exact: `fold` maps character by character (the one context that lower-casing looks at,
    a final sigma, ends at a line break as at the end of a text), and the whitespace around
    a line break collapses to the one space between two non-empty folds.
    """
    return " ".join(f for f in folded if f)


# --- HTML ------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    "p div br tr li ul ol table h1 h2 h3 h4 h5 h6 hr pre section article header footer".split()
)
_CELL_TAGS = frozenset(("td", "th"))
_SKIP_TAGS = frozenset(("script", "style", "head", "title"))


MAX_QUOTE_DEPTH = 8
"""Nested blockquotes deeper than this are marked with this many "> " (the marks of one
line would otherwise grow with the nesting: 50,000 levels, 100 KB a line)."""


class _TextCollector(MarkupSink):
    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.skip = 0
        self.quote = 0

    def _newline(self) -> None:
        if self.lines[-1].strip():
            self.lines.append("")

    def handle_starttag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "blockquote":
            self._newline()
            self.quote += 1
        elif tag in _BLOCK_TAGS:
            self._newline()
        elif tag in _CELL_TAGS:
            self.lines[-1] += " "

    def handle_startendtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._newline()
            self.quote = max(0, self.quote - 1)
        elif tag in _BLOCK_TAGS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        text = _SPACE.sub(" ", data.replace("\xa0", " "))
        if not text.strip() and not self.lines[-1]:
            return
        if self.quote and not self.lines[-1]:
            self.lines[-1] = "> " * min(self.quote, MAX_QUOTE_DEPTH)
        self.lines[-1] += text


def html_to_text(html: str) -> str:
    """Readable text of an HTML body; blockquotes become "> " lines like a plain-text quote.

    Linear in the input (:mod:`mailbot.markup` reads at most its first 512 Ki characters).
    """
    collector = _TextCollector()
    scan(html, collector)
    lines = [line.strip() for line in collector.lines]
    return "\n".join(lines).strip()


_LOOKS_HTML = re.compile(r"^\s*+(<!doctype|<html|<body|<div|<p[ >]|<table)", re.I)


def readable_text(text: str, html: str) -> str:
    """The plain text of a body, converting HTML when that is all there is."""
    if text.strip() and not _LOOKS_HTML.match(text):
        return text.replace("\r\n", "\n").replace("\r", "\n")
    source = html if html.strip() else text
    return html_to_text(source) if source.strip() else ""


# --- who wrote which part ---------------------------------------------------------------

# Lines (folded) that start earlier mail: everything below belongs to someone else.
_SEPARATOR = re.compile(r"^-{3,}\s*[^-].*[^-]\s*-{2,}$|^_{8,}$|^-{5,}$")
_ATTRIBUTION = re.compile(
    r"(napsal|napsala|napsal\(a\)|napisal|napisala|napisal\(a\)|wrote|schrieb|a ecrit)\s*:\s*$"
)
_FORWARD_OPENINGS = ("begin forwarded message", "zacatek preposlane zpravy",
                     "zaciatok preposlanej spravy")
_FORWARD_START = re.compile(f"^({'|'.join(_FORWARD_OPENINGS)})")
_HEADER_FIRST = re.compile(r"^(from|od|von|de)\s*:\s*\S")
_HEADER_FIRST_WORDS = ("from", "od", "von", "de")
_HEADER_NEXT = re.compile(
    r"^(sent|odeslano|odoslane|gesendet|date|datum|to|komu|an|cc|kopie|subject|predmet|betreff)\s*:"
)
_SUBJECT_LINE = re.compile(r"^(subject|predmet|betreff)\s*:")
_FORWARD_WORDS = re.compile(r"forward|preposl|weitergeleit|fwd")
_FORWARD_SUBJECT = re.compile(
    r"^\s*+(?>(?:(?:re|aw|odp|sv|vs|antw)\s*+:\s*+)*)(?:fw|fwd|wg|tr|pr|preposlat)\s*+:"
)

# Closing lines (folded) that start a signature when short and near the end.
_CLOSING = re.compile(
    r"^(s pozdravem|se srdecnym pozdravem|s pratelskym pozdravem|s pozdravom|pozdravuji|"
    r"dekuji|dekujeme|dekuju|diky|dik|predem dekuji|dakujem|dakujeme|vdaka|"
    r"best regards|kind regards|regards|best wishes|thanks|thank you|many thanks|"
    r"cheers|sincerely|yours sincerely|mit freundlichen grussen|viele grusse|"
    r"hezky den|pekny den|prajem pekny den)\b"
)
# How to reach the sender (folded): a phone, an address, a company number or form, a web.
_REACH = (
    r"\b(tel|tel\.|mobil|mob|phone|fax|ico|dic|ic dph|www|http|https|s\.r\.o|s\. r\. o|"
    r"a\.s|spol|ltd|gmbh|inc|z\.u|p\.o)\b|@|\+\d{3}|\d{3} ?\d{3} ?\d{3}"
    r"|\b\d{3} \d{2}\b(?! ?\d)"  # a postal code, "512 51"
)
_REACHES = re.compile(_REACH)
_CONTACT = re.compile(_REACH + r"|\b(licen\w*|lic)\b")

# A personal name as a signature opens with it: academic titles aside, two or three
# capitalized words ("Ing. Jana Malá", "Petr Novák-Dvořák, Ph.D.", "Mgr. Eva Bílá, účetní").
_TITLES = frozenset({
    "ing", "mgr", "bc", "mudr", "judr", "phdr", "rndr", "paeddr", "mvdr", "ingr", "doc", "prof",
    "dr", "phd", "ph.d", "dis", "csc", "drsc", "mba", "msc", "bsc", "ll.m", "mr", "mrs", "ms",
})
_NOT_NAMES = frozenset({
    "dobry", "dobre", "dobra", "vazeny", "vazena", "vazeni", "mily", "mila", "mili", "hello",
    "dear", "hi", "ahoj", "zdravim", "dekuji", "dakujem", "diky", "best", "kind", "many",
    "thank", "thanks", "pekny", "hezky", "prajem", "krasny", "good",
})


# A legal or confidentiality footer (folded), in Czech, Slovak, English and German: the
# company register, "this message is confidential and meant for its addressee only", "if you
# received it in error, tell the sender and delete it", "no offer to conclude a contract".
# Each phrase is specific to such a footer: a customer's own "smazali jsme to omylem" is none.
_FEW = r"\W+(?:\w+\W+){0,3}?"  # up to three words between
_FOOTER = re.compile("|".join((
    r"\b(?:zapsan|zapisan|registered)\w*(?:\W+\w+){0,3}?\W+(?:obchodn\w+ (?:rejstrik|regist)"
    r"|\w+ soud\w*|court)",
    r"\bobchodn(?:im|om) (?:rejstrik|regist)\w*", r"\bspisova znacka\b",
    r"\boddiel?\b" + _FEW + r"vlozk", r"\bregistered (?:office|in england)",
    r"\b(?:je|jsou|su|byt|obsah\w*)" + _FEW + r"(?:duvern|doveren|doverne|doverny)",
    r"\b(?:duvern|doveren|doverne|doverny)\w* (?:informac|udaj)",
    r"\burcen\w*" + _FEW + r"adresat", r"\bnejste" + _FEW + r"(?:adresat|prijemc)",
    r"\bnie ste" + _FEW + r"(?:adresat|prijemc)", r"\bzamyslen\w* prijemc",
    r"\b(?:obdrzel|obdrzal|dostal)\w*" + _FEW + r"omyl(?:em|om)\b",
    r"\b(?:informujte|uvedomte|upovedomte|dejte)" + _FEW + r"(?:odesilatel|odosielatel)",
    r"\bnavrh\w* na uzavre(?:ni smlouvy|tie zmluvy)",
    r"\bconfidential(?:ity)? (?:notice|information)", r"\b(?:is|are|be) confidential\b",
    r"\bintended (?:recipient|solely|only)", r"\b(?:received|reached)" + _FEW + r"in error\b",
    r"\bnotify the sender\b", r"\bunauthori[sz]ed (?:use|disclosure|copying)",
    r"\bconsider the environment before printing", r"\bdisclaimer\b",
    r"\bvertrauliche? informationen", r"\brichtige adressat", r"\bden absender\b",
)))


FOOTER_CHARS = 4096
"""A paragraph longer than this is no footer (and is not searched for footer wording)."""


def _footer_start(folded: Sequence[str]) -> int:
    """Index of the first line of a legal footer that ends the text (len(folded) if none):
    the trailing paragraphs (blocks of lines between blank lines) each of which holds
    footer wording (:data:`_FOOTER`). The first paragraph of text is never a footer."""
    n = len(folded)
    first = next((i for i, f in enumerate(folded) if f), n)
    start = end = n
    while True:
        while end > first and not folded[end - 1]:
            end -= 1
        begin = end
        while begin > first and folded[begin - 1]:
            begin -= 1
        paragraph = folded[begin:end]
        if (begin <= first or sum(map(len, paragraph)) > FOOTER_CHARS
                or _FOOTER.search(" ".join(paragraph)) is None):
            return start
        start = end = begin


def _name_words(folded_name: str) -> frozenset[str]:
    """The words of a folded personal name, titles and punctuation aside."""
    return frozenset(w for w in re.findall(r"[^\W\d_]+(?:\.[^\W\d_]+)*", folded_name)
                     if w not in _TITLES)


def _sender_line(lines: Sequence[str], folded: Sequence[str], sender: str) -> int | None:
    """The first line after the first line of text that is only the sender's own name (the
    From display name, `sender`, in either order, titles aside; a short role may follow
    a comma): it opens the signature, whatever follows it."""
    wanted = _name_words(fold(sender))
    if len(wanted) < 2:
        return None
    filled = [i for i, f in enumerate(folded) if f]
    for k, i in enumerate(filled[1:], 1):
        head = folded[i].partition(",")[0]
        last = head.rsplit(" ", 1)[-1].strip(".")
        if (last in wanted and _is_name_line(lines[i].strip(), folded[i])
                and len(found := _name_words(head)) >= 2 and found <= wanted):
            # A closing right above the name ("Díky,", "S pozdravem") belongs with it.
            above = filled[k - 1]
            if k > 1 and folded[above].count(" ") < 6 and _CLOSING.match(folded[above]):
                return above
            return i
    return None


BODY_TEXT_CHARS = 131_072
"""Default of `[limits] body_text_chars`: how much of a body's readable text the rules read."""
QUOTE_SCAN_CHARS = 32_768
"""Default of `[limits] quote_scan_chars`: how much of it is split into own text, quotes,
forwarded mail and signature (the rest counts as quoted)."""


@dataclass(frozen=True, slots=True)
class TextLimits:
    """How much text the rules read, so the work per message is bounded (`[limits]`)."""

    body_text_chars: int = BODY_TEXT_CHARS
    quote_scan_chars: int = QUOTE_SCAN_CHARS


@dataclass(frozen=True, slots=True)
class BodyParts:
    """A body split by authorship: `own` is what the sender wrote now.

    `own_folded` and `signature_folded` are ``fold(own)`` and ``fold(signature)``, made from
    the lines the split folds anyway."""

    own: str
    quoted: str
    forwarded: str
    signature: str
    own_folded: str = ""
    signature_folded: str = ""


def _starts_earlier_mail(f: str) -> bool:
    """Whether folded line `f` is a separator, a forward's opening or an attribution ("… wrote:").

    The cheap tests first: each pattern needs the line to start with "-" or "_", to start
    with a forward's opening, or (a folded line being stripped) to end with ":".
    """
    return (f.startswith(("-", "_")) and _SEPARATOR.match(f) is not None
            or f.startswith(_FORWARD_OPENINGS)
            or f.endswith(":") and _ATTRIBUTION.search(f) is not None)


# Where a folded line may start earlier mail (the line's start or a ":" at its end; a folded
# line has single spaces): the lines _earlier_mail looks at closely.
_MAY_START_EARLIER = re.compile(
    "^(?:[-_]|" + "|".join(_FORWARD_OPENINGS) + "|(?:from|od|von|de) ?:)|:$", re.MULTILINE)


# A helpdesk tool's "reply above this line" marker ("--- Odpovídejte nad touto čarou ---",
# "--- Please reply above this line ---") heads its notification: with nothing above it,
# what follows is the message itself, not earlier mail.
_REPLY_ABOVE = re.compile(r"\b(nad|above)\b.{0,24}\b(car\w*|radk\w*|riadk\w*|line)\b")


def _earlier_mail(folded: list[str], forwarded_subject: bool) -> tuple[int, bool]:
    """The index of the first folded line that starts earlier mail (len(folded) if none),
    and whether that mail is forwarded rather than quoted."""
    joined = "\n".join(folded)
    line = pos = 0
    checked = -1
    for m in _MAY_START_EARLIER.finditer(joined):
        line += joined.count("\n", pos, m.start())
        pos = m.start()
        if line == checked:
            continue
        checked = line
        f = folded[line]
        if _starts_earlier_mail(f):
            if not any(folded[:line]) and _REPLY_ABOVE.search(f):
                continue
            return line, bool(_FORWARD_WORDS.search(f) or _FORWARD_START.match(f))
        if _is_header_block(folded, line):
            return line, forwarded_subject
    return len(folded), False


def _is_header_block(folded: list[str], i: int) -> bool:
    if not folded[i].startswith(_HEADER_FIRST_WORDS) or not _HEADER_FIRST.match(folded[i]):
        return False
    return any(_HEADER_NEXT.match(line) for line in folded[i + 1 : i + 5])


def _is_name_line(raw: str, folded: str) -> bool:
    """Whether a line (`folded` its fold) is only a personal name, as a signature opens:
    titles aside, two or three capitalized words, optionally a comma and a short role."""
    if len(raw) > 80 or "?" in raw:
        return False
    head, _, role = raw.partition(",")
    if role.count(" ") > 6:
        return False
    pairs = [(w, f) for w, f in zip(head.split(), folded.partition(",")[0].split())
             if f.strip(".") not in _TITLES]
    if not 2 <= len(pairs) <= 3 or pairs[0][1] in _NOT_NAMES:
        return False
    return all(part.isalpha() and part[0].isupper() and (part[1:].islower() or len(part) == 1)
               for w, _ in pairs for part in w.split("-"))


def _capitalized_after_first(raw: str) -> int:
    """How many words of a line after its first begin with a capital (names of a place or an
    organization: "Sociální služby města Horní Lomnice – úsek provozu")."""
    return sum(1 for w in raw.split()[1:] if w[:1].isupper())


def _name_block_start(lines: Sequence[str], folded: Sequence[str],
                      filled: Sequence[int]) -> int | None:
    """The line of a personal name that opens a trailing signature without a closing, if
    any: among the last ten lines of text, below it only signature lines (a role, the
    organization, its address, contacts; none asks or ends a sentence) of which one tells
    how to reach the sender. It may be the first line: a body that is only a signature."""
    found: int | None = None
    reach = False
    for i in reversed(filled[-10:]):
        raw, f = lines[i].strip(), folded[i]
        words = f.count(" ") + 1
        if "?" in raw or words > 12:
            break
        plain = not raw.endswith((".", "!", ":")) and (
            words <= 6 or _capitalized_after_first(raw) >= 2)
        if not plain and _CONTACT.search(f) is None:
            break
        if reach and _is_name_line(raw, f):
            found = i
        reach = reach or _REACHES.search(f) is not None
    return found


def _signature_start(lines: Sequence[str], folded: Sequence[str]) -> int:
    """Index of the first signature line of the customer's own text (len(lines) if none);
    `folded` holds the fold of each line.

    "The last ten lines" are the last ten lines of text: an HTML body (Outlook's
    paragraphs) has a blank line between every two, which must not halve the window."""
    n = len(lines)
    # "-- " is the standard delimiter (RFC 3676 §4.3).
    if "--" in "\n".join(lines):
        for i, line in enumerate(lines):
            if line.rstrip() == "--" or line == "-- ":
                return i
    filled = [k for k, f in enumerate(folded) if f]
    if not filled:
        return n
    start = n
    first_text = filled[0]
    last_ten = filled[-10:]
    # A closing: after the first line of text, among the last ten, of one to six words (a
    # folded line has single spaces and none at its ends).
    for i in last_ten:
        f = folded[i]
        if i > first_text and f.count(" ") < 6 and _CLOSING.match(f):
            start = i
            break
    # Trailing contact block: short lines, names, addresses, phones, license lines, among
    # the last ten lines of text.
    j = n
    for i in reversed(last_ten):
        raw, f = lines[i].strip(), folded[i]
        if "?" in raw:
            break
        words = f.count(" ") + 1
        short = words <= 6 and not raw.endswith((".", "?", "!", ":"))
        if short or words <= 10 and _CONTACT.search(f):
            j = i
            continue
        break
    # Do not let a trailing block eat a short body whole (keep at least its first line).
    if j <= first_text:
        j = min(n, first_text + 1)
    # A signature that opens with a name (no closing above it) may be all there is.
    name = _name_block_start(lines, folded, filled)
    if name is not None:
        j = min(j, name)
    return min(start, j)


def _head(text: str, limit: int) -> tuple[str, str]:
    """`text` cut after at most `limit` characters, at its last line break there if any."""
    if len(text) <= limit:
        return text, ""
    cut = text.rfind("\n", 0, limit) + 1 or limit
    return text[:cut], text[cut:]


@lru_cache(maxsize=32)  # a batch's bodies: a mail decided again by the worker (512 held 1.2 MB)
def split_body(text: str, subject: str = "", limit: int = QUOTE_SCAN_CHARS,
               sender: str = "") -> BodyParts:
    """Split a plain-text body into own text, quoted mail, forwarded mail and signature.

    Only the first `limit` characters (the newest text) are split line by line; what
    follows them counts as quoted (or forwarded) mail. The signature is what follows the
    sender's own name (`sender`, the From display name) on a line of its own, or the
    signature found above a trailing legal footer, with that footer.
    """
    text, overflow = _head(text.replace("\r\n", "\n").replace("\r", "\n"), limit)
    lines = text.split("\n")
    folded = fold_lines(text)
    forwarded_subject = bool(_FORWARD_SUBJECT.match(fold(subject)))
    cut, forwarded = _earlier_mail(folded, forwarded_subject)
    own: list[str] = []
    own_folded: list[str] = []
    quoted: list[str] = []
    if ">" in text:
        for line, f in zip(lines[:cut], folded):
            if line.lstrip().startswith(">"):
                quoted.append(line)
            else:
                own.append(line)
                own_folded.append(f)
    else:  # no line is quoted
        own, own_folded = lines[:cut], folded[:cut]
    rest = ("\n".join(lines[cut:]) + overflow).strip()
    if forwarded or forwarded_subject and rest:
        forwarded_text, quoted_tail = rest, ""
    else:
        forwarded_text, quoted_tail = "", rest
    footer = _footer_start(own_folded)
    sig = _signature_start(own[:footer], own_folded[:footer])
    if sender:
        name = _sender_line(own[:sig], own_folded[:sig], sender)
        if name is not None:
            sig = name
    return BodyParts(
        own="\n".join(own[:sig]).strip(),
        quoted="\n".join([*quoted, quoted_tail]).strip(),
        forwarded=forwarded_text,
        signature="\n".join(own[sig:]).strip(),
        own_folded=join_folded(own_folded[:sig]),
        signature_folded=join_folded(own_folded[sig:]),
    )


FORWARD_DEPTH = 5
"""Forwards of forwards read as the customer's text: "FW: FW: …" chains this deep."""


def forwarded_message_text(text: str, limit: int = QUOTE_SCAN_CHARS, depth: int = 1) -> str:
    """The own text of a forwarded message: its leading separator and header lines
    ("---------- Forwarded message ---------", "From:", "Od:", "Date:" …) skipped, then its
    quotes and signature cut as for any body (the first `limit` characters are split). A
    message that was itself a forward (its "Subject:"/"Předmět:" line "FW: …") forwards
    the mail below it, whose own text follows (up to `FORWARD_DEPTH` levels)."""
    lines = text[: limit + 8192].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = 0
    subject = ""
    for i, line in enumerate(lines[:40]):  # a header block is short
        f = fold(line)
        if (not f or _HEADER_FIRST.match(f) or _HEADER_NEXT.match(f) or _SEPARATOR.match(f)
                or _FORWARD_START.match(f)):
            if _SUBJECT_LINE.match(f):
                subject = f.split(":", 1)[1]
            start = i + 1
            continue
        break
    parts = split_body("\n".join(lines[start:]), subject, limit)
    if parts.forwarded and subject and depth < FORWARD_DEPTH:
        inner = forwarded_message_text(parts.forwarded, limit, depth + 1)
        return f"{parts.own}\n\n{inner}".strip() if inner else parts.own
    return parts.own


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n\s*\n|\n(?=\s*[-*•])")
_WORD_BEFORE_DOT = re.compile(r"(\w+)\.$")

# Words that end with a dot without ending a sentence (folded, without the dot): titles,
# "č." and its kin before a number, and the abbreviations of running text.
_ABBREVIATIONS = frozenset({
    "c", "cis", "cj", "no", "nr", "tel", "mob", "fax", "ul", "nam", "str", "odst", "pism",
    "ing", "mgr", "bc", "dr", "mudr", "judr", "phdr", "rndr", "paeddr", "doc", "prof",
    "p", "pi", "sl", "mr", "mrs", "ms", "st", "tj", "tzn", "tzv", "napr", "resp", "pr",
    "vc", "cca", "min", "max", "hod", "vs", "eg", "ie", "approx", "incl", "ca", "kap",
})


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    """Whether a break after a dot ends a sentence: not after a title or "č." and its
    kin, nor after an initial ("J. Novák"), nor in a date or an ordinal followed by a
    number or a lower-case word ("15. 11. 2026", "15. listopadu")."""
    start = match.start()
    gap = match.group()
    if text[start - 1] != "." or gap.count("\n") > 1 or text[match.end():match.end() + 1] in "-*•":
        return True
    word = _WORD_BEFORE_DOT.search(text, max(0, start - 16), start)
    if word is None:
        return True
    before = fold(word.group(1))
    if before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha()):
        return False
    after = text[match.end():match.end() + 1]
    return not (before.isdigit() and (after.isdigit() or after.islower()))


def _sentence_parts(text: str) -> Iterable[str]:
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _ends_sentence(text, match):
            yield text[start:match.start()]
            start = match.end()
    yield text[start:]


def sentences(text: str) -> tuple[str, ...]:
    """Folded sentences of a text: split at . ! ? ; blank lines and list items, but not
    at the dot of an abbreviation, a title, an initial or a date (:func:`_ends_sentence`)."""
    return tuple(s for s in (fold(part) for part in _sentence_parts(text)) if s)


_WORD = re.compile(r"[^\W\d_]{3,}")


def content_words(text: str, stopwords: frozenset[str],
                  stop_prefixes: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Folded words of 3+ letters that are not stopwords, nor start with one of
    `stop_prefixes` (the stopwords written ``word*``): what a description is made of."""
    return folded_content_words(fold(text), stopwords, stop_prefixes)


def folded_content_words(folded: str, stopwords: frozenset[str],
                         stop_prefixes: tuple[str, ...] = (),
                         enough: int | None = None) -> tuple[str, ...]:
    """`content_words` of a text `fold` made (spaces may have been put in since): an ASCII
    one is lower-case already and folding it again would change only its whitespace.
    With `enough`, at most the first `enough` of them (where only their count matters)."""
    if not folded.isascii():
        folded = fold(folded)
    words = (w for w in _WORD.findall(folded)
             if w not in stopwords and not w.startswith(stop_prefixes))
    return tuple(words if enough is None else islice(words, max(enough, 0)))
