"""Fuzzing the whole pipeline: mutated real-world mail (../shared/corpus and the labelled
dev mails) through intake → parse → decide → render → outbox, in-process on SQLite.

Every input must end `decided` or `quarantined`, and a quarantine must be a documented one
(a limit, or the ParseError of an empty message; the traceback of anything else, such as an
unparseable message or a render error, is a bug). Nothing may raise out of the worker,
parse() must give text (no lone surrogates from raw 8-bit bytes), and every queued mail must
re-parse with exactly the headers its kind carries, each once, no CR/LF/NUL in any header
(raw, unfolded or decoded, in every MIME part), its recipients in To and no Bcc or Cc.

Hypothesis draws, per example, up to four mails, each a seed file with one to three
mutations: byte flips, insertions, deletions, truncation, header lines duplicated or
dropped, a broken header/body separator, encoded words carrying =0D/=0A, random charset
names, RFC 2231 filenames, very long lines, NULs, 8-bit header bytes, corrupted MIME
boundaries, nesting up to 60 deep. Every unmutated seed runs once first. `derandomize=True`
gives the same examples on every run (CI included); failing examples are not shrunk (an
example takes up to seconds), they are printed as drawn: a seed name and its mutations.
About 1,800 inputs in all; the file takes about 40 s.

The store is shared by all examples (one renderer, tickets accumulate, so follow-ups and
staff replies in the labelled mails find their tickets: the ticket numbers they name are
opened first by generated requests). The store's deduplication (same bytes, or same
Message-ID from the same sender) would silently drop most mutants of a seed seen before, so
a mutant whose identity is taken gets a fresh `Message-ID:` line prepended (a duplicate
Message-ID field: itself a malformation) and is stored again. `verify_staff = false` lets
the labelled staff replies (mutated) be relayed, attachments and all.
"""

from __future__ import annotations

import base64
import dataclasses
import email.errors
import email.header
import email.parser
import email.policy
import email.utils
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mailbot import config as config_mod
from mailbot import migrations
from mailbot.ingest.intake import save_raw
from mailbot.ingest.parse import parse
from mailbot.registry import read_license_csv
from mailbot.store import OutboxMessage, Store
from mailbot.worker import Worker
from tests.shared_data import SHARED, require_shared

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
NOT_MAIL = frozenset({"expected.jsonl", "SOURCES.md", "labels.jsonl", "licenses.csv",
                      "README.md"})
STAFF_NOTIFY = ("tym-podpory@estelar.example", "vedouci-podpory@estelar.example")
MAX_EXAMPLES = 400  # about 1,000 mutants
BATCH = 50


def _seed_paths() -> list[Path]:
    """Every corpus file and labelled dev mail (empty when the shared data is absent)."""
    if SHARED is None:
        return []
    corpus = [p for p in sorted((SHARED / "corpus").rglob("*"))
              if p.is_file() and p.name not in NOT_MAIL]
    dev = sorted((SHARED / "labelled" / "dev").glob("*.eml"))
    return corpus + dev


SEED_PATHS = _seed_paths()
SEED_NAMES = [str(p.relative_to(SHARED)) for p in SEED_PATHS] if SHARED else []
_SEED_CACHE: dict[str, bytes] = {}


def seed_bytes(name: str) -> bytes:
    data = _SEED_CACHE.get(name)
    if data is None:
        assert SHARED is not None
        data = _SEED_CACHE[name] = (SHARED / name).read_bytes()
    return data


# --------------------------------------------------------------------- message surgery

_HEAD_END = re.compile(rb"\r?\n(\r?\n)")


@dataclass
class Split:
    """A message as header fields (each with its line ending), separator and body."""

    fields: list[bytes]
    sep: bytes
    body: bytes
    eol: bytes

    @classmethod
    def of(cls, raw: bytes) -> Split:
        eol = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
        m = _HEAD_END.search(raw)
        if m is None:
            head, sep, body = raw, b"", b""
        else:
            head, sep, body = raw[: m.start(1)], m.group(1), raw[m.end():]
        fields: list[bytes] = []
        for line in head.splitlines(keepends=True):
            if fields and line[:1] in (b" ", b"\t"):
                fields[-1] += line
            else:
                fields.append(line)
        return cls(fields, sep, body, eol)

    def join(self) -> bytes:
        fields = [f if f.endswith((b"\n", b"\r")) else f + self.eol for f in self.fields]
        return b"".join(fields) + self.sep + self.body

    def find(self, name: bytes) -> int | None:
        prefix = name.lower() + b":"
        for i, f in enumerate(self.fields):
            if f.lower().startswith(prefix):
                return i
        return None


@dataclass(frozen=True)
class Op:
    """One mutation; `a`, `b` and `data` mean what `apply` says for each `kind`."""

    kind: str
    a: int = 0
    b: int = 0
    data: bytes = b""


def _at(fraction: int, n: int) -> int:
    return fraction * n // 65536


_BOUNDARY = re.compile(rb'(?i)(boundary\s*=\s*)("?)([^";\r\n]*)("?)')
_CHARSET = re.compile(rb'(?i)(charset\s*=\s*)("?)([^";\s]*)("?)')
_WORD_CHARSET = re.compile(rb"=\?([^?\s]*)\?([bBqQ])\?")
_FILENAME = re.compile(rb'(?i)((?:file)?name\*?\s*=\s*)("[^"\r\n]*"|[^;\s]*)')
_WORD_TARGETS = (b"subject", b"from", b"to", b"reply-to", b"message-id", b"references",
                 b"in-reply-to", b"cc", b"filename")


def _nest(raw: bytes, depth: int, style: int) -> bytes:
    """`raw` wrapped `depth` times in multipart/mixed (style 0: as a body part; 1: as an
    attached message/rfc822; 2: alternating), under the original top-level headers."""
    split = Split.of(raw)
    eol = split.eol
    keep = [f for f in split.fields
            if not f.lower().startswith((b"content-", b"mime-version"))]
    inner = raw
    for level in range(depth):
        boundary = b"fz-%d-%d" % (depth, level)
        attached = style == 1 or (style == 2 and level % 2)
        lead = b"Content-Type: message/rfc822" + eol + eol if attached else b""
        inner = (b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"" + eol + eol
                 + b"--" + boundary + eol + lead + inner + eol + b"--" + boundary + b"--" + eol)
    return b"".join(keep) + b"MIME-Version: 1.0" + eol + inner


def apply(raw: bytes, op: Op) -> bytes:
    """`raw` with one mutation applied."""
    n = len(raw)
    kind = op.kind
    if kind == "flip":
        if not n:
            return raw
        i = _at(op.a, n)
        return raw[:i] + bytes([raw[i] ^ (op.b or 1)]) + raw[i + 1:]
    if kind == "insert":
        i = _at(op.a, n + 1)
        return raw[:i] + op.data + raw[i:]
    if kind == "delete":
        i = _at(op.a, n)
        return raw[:i] + raw[i + op.b:]
    if kind == "truncate":
        return raw[:_at(op.a, n)]
    if kind == "nul":
        i = _at(op.a, n + 1)
        return raw[:i] + b"\x00" * op.b + raw[i:]
    if kind == "nest":
        return _nest(raw, op.a, op.b)
    if kind == "charset":
        def declared(m: re.Match[bytes]) -> bytes:
            return m.group(1) + m.group(2) + op.data + m.group(4)
        out = _CHARSET.sub(declared, raw)
        out = _WORD_CHARSET.sub(lambda m: b"=?" + op.data + b"?" + m.group(2) + b"?", out)
        if out == raw:  # nothing declared: declare it
            split = Split.of(raw)
            split.fields.insert(0, b"Content-Type: text/plain; charset=\"" + op.data + b"\""
                                + split.eol)
            out = split.join()
        return out
    if kind == "boundary":
        return _corrupt_boundary(raw, op)
    split = Split.of(raw)
    fields = split.fields
    if kind == "dup_header" and fields:
        i = op.a % len(fields)
        fields.insert(i, fields[i] if fields[i].endswith((b"\n", b"\r")) else fields[i] + split.eol)
    elif kind == "drop_header" and fields:
        del fields[op.a % len(fields)]
    elif kind == "separator":
        mode = op.a % 6
        if mode == 0:  # no blank line: the body runs into the headers
            split.sep = b""
        elif mode == 1:  # whitespace-only line instead of an empty one
            split.sep = b" " + split.eol
        elif mode == 2:
            split.sep = b"\r\r"
        elif mode == 3:  # bare LF separator under CRLF headers (or the reverse)
            split.sep = b"\n" if split.sep == b"\r\n" else b"\r\n"
        elif mode == 4 and fields:  # a blank line early: later headers become body
            fields.insert(op.b % len(fields), split.eol)
        else:  # the separator swapped to the top: no headers at all
            return split.eol + b"".join(fields) + split.body
    elif kind == "word":
        target = _WORD_TARGETS[op.a % len(_WORD_TARGETS)]
        if target == b"filename":
            out, count = _FILENAME.subn(lambda m: m.group(1) + b'"' + op.data + b'"', raw, 1)
            if count:
                return out
            target = b"subject"
        found = split.find(target)
        name = target.title()
        if found is None:
            fields.insert(0, name + b": " + op.data + split.eol)
        else:
            head, _, value = fields[found].partition(b":")
            fields[found] = head + b": " + op.data + b" " + value.lstrip(b" \t")
    elif kind == "rfc2231":  # filename*=charset'lang'percent-encoded bytes (RFC 2231)
        label, _, data = op.data.partition(b"\x00|")
        param = label + b"''" + b"".join(b"%%%02X" % c for c in data)
        out, count = _FILENAME.subn(lambda m: b"filename*=" + param, raw, 1)
        if count:
            return out
        return _nest(raw, 1, 0).replace(b"Content-Type: multipart/mixed;",
                                        b"Content-Type: multipart/mixed; name*=" + param + b";")
    elif kind == "long_line":
        line = (op.data * (op.b // max(1, len(op.data)) + 1))[: op.b]
        mode = op.a % 3
        if mode == 0:
            fields.insert(0, b"Subject: " + line + split.eol)
        elif mode == 1:
            fields.insert(0, b"X-Fuzz-Long: " + line + split.eol)
        else:
            split.body = line + split.eol + split.body
    elif kind == "eightbit" and fields:
        i = op.a % len(fields)
        f = fields[i]
        at = max(f.find(b":") + 1, 0)
        at = at + _at(op.b, len(f) - at)
        fields[i] = f[:at] + op.data + f[at:]
    return split.join()


def _corrupt_boundary(raw: bytes, op: Op) -> bytes:
    found = [m.group(3) for m in _BOUNDARY.finditer(raw) if m.group(3)]
    if not found:
        return _nest(raw, 1, 0)[:-4]  # a multipart without its closing delimiter
    b = found[op.b % len(found)]
    mode = op.a % 7
    if mode == 0:  # the parameter changed, the delimiter lines not
        return raw.replace(b"boundary=\"" + b + b"\"", b"boundary=\"" + op.data + b"\"", 1) \
            .replace(b"boundary=" + b, b"boundary=" + op.data, 1)
    if mode == 1:  # no closing delimiter
        return raw.replace(b"--" + b + b"--", b"")
    if mode == 2:  # every delimiter line one character short
        return raw.replace(b"--" + b, b"--" + b[:-1])
    if mode == 3:  # the first delimiter line garbled
        return raw.replace(b"--" + b, b"--" + b + op.data, 1)
    if mode == 4:  # an empty boundary parameter
        return raw.replace(b"boundary=\"" + b + b"\"", b"boundary=\"\"")
    if mode == 5 and len(set(found)) > 1:  # two boundaries swapped
        other = next(x for x in found if x != b)
        return raw.replace(b, b"\x00SWAP\x00").replace(other, b).replace(b"\x00SWAP\x00", other)
    return raw.replace(b"--" + b + b"\r\n", b"--" + b + b" \t\r\n").replace(b"--" + b + b"\n", b"\n")


# ---------------------------------------------------------------------- strategies

POS = st.integers(0, 65535)
TOKENS = [b"\r", b"\n", b"\r\n", b"\x00", b"\r\n\r\n", b"\n\n", b"--", b"=?", b"?=", b"\xff\xfe",
          b"\r\n\t", b"\r\nBcc: victim@example.com\r\n", b"\nContent-Type: multipart/mixed\n",
          b"Content-Transfer-Encoding: base64\r\n", b"begin 644 x.txt\n", b"<", b">", b"\"",
          b"=\r\n", b"=", b"\x1b$B", b"\xc3", b"\xe2\x80\xa8", b"\xc2\x85", b"{{ 7*7 }}",
          b"{% include 'x' %}", b"<script>alert(1)</script>", b"[#T-2026-000001]",
          b"Licence 4012 7733 ", b"#close\n", b"Auto-Submitted: auto-replied\r\n"]
CHARSETS = [b"utf-8", b"UTF-7", b"utf-16", b"utf-16-le", b"utf-32", b"iso-2022-jp",
            b"x-iso2022jp-ms", b"shift_jis", b"gb2312", b"big5", b"koi8-r", b"cp1250",
            b"iso-8859-2", b"windows-1258", b"unicode_escape", b"raw_unicode_escape",
            b"punycode", b"idna", b"undefined", b"base64", b"hex", b"zlib", b"rot13", b"uu",
            b"quopri", b"bz2", b"mbcs", b"", b"utf-8*cs", b"utf-8'en'", b"x-unknown",
            b"unicode-1-1-utf-7", b"cp65001", b"ucs-2", b"us-ascii\x00", b"\xff\xfe", b"%",
            b"utf-8\r\n X-Evil: 1", b"../../etc/passwd", b"a" * 300]
HEADER_BREAKS = ["\r\n", "\n", "\r", "\x00", "\u2028", "\u0085", "\r\n\r\n", "\n\t"]
INJECTED = ["Bcc: victim@example.com", "To: victim@example.com", "X-Evil: 1",
            "Content-Type: text/html", "<script>alert(1)</script>", "{{ 7*7 }}", ""]


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    """An RFC 2047 word whose text carries a line break (as =0D/=0A, or base64)."""
    text = (draw(st.text(max_size=12)) + draw(st.sampled_from(HEADER_BREAKS))
            + draw(st.sampled_from(INJECTED)) + draw(st.text(max_size=8)))
    data = text.encode("utf-8", "surrogatepass")
    charset = draw(st.sampled_from([b"utf-8", b"UTF-8", b"iso-8859-2", b"utf-8*en",
                                    *draw(st.sampled_from([CHARSETS, [b"utf-8"]]))]))
    if draw(st.booleans()):
        payload = b"".join(bytes([c]) if chr(c).isalnum() else b"=%02X" % c for c in data)
        word = b"=?" + charset + b"?q?" + payload + b"?="
    else:
        word = b"=?" + charset + b"?b?" + base64.b64encode(data) + b"?="
    return word


OPS = st.one_of(
    st.builds(Op, st.just("flip"), POS, st.integers(1, 255)),
    st.builds(Op, st.just("insert"), POS, st.just(0),
              st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=64))),
    st.builds(Op, st.just("delete"), POS, st.integers(1, 4096)),
    st.builds(Op, st.just("truncate"), POS),
    st.builds(Op, st.just("dup_header"), st.integers(0, 200)),
    st.builds(Op, st.just("drop_header"), st.integers(0, 200)),
    st.builds(Op, st.just("separator"), st.integers(0, 5), st.integers(0, 200)),
    st.builds(Op, st.just("word"), st.integers(0, len(_WORD_TARGETS) - 1), st.just(0),
              encoded_words()),
    st.builds(Op, st.just("charset"), st.just(0), st.just(0),
              st.one_of(st.sampled_from(CHARSETS),
                        st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                              exclude_characters='";\\'), max_size=16)
                        .map(lambda s: s.encode()))),
    st.builds(Op, st.just("rfc2231"), st.just(0), st.just(0),
              st.tuples(st.sampled_from(CHARSETS + [b"utf\x008"]),
                        st.one_of(st.sampled_from([b"a\r\nBcc: victim@example.com", b"\x00",
                                                   b"..\\..\\x.exe", b"=?utf-8?q?=0A?="]),
                                  st.binary(max_size=40)))
              .map(lambda t: t[0] + b"\x00|" + t[1])),
    st.builds(Op, st.just("long_line"), st.integers(0, 2), st.integers(1000, 300_000),
              st.sampled_from([b"x", b"ab ", b"\xc3\xa1", b"=?utf-8?q?x?= ", b"\x00", b"<"])),
    st.builds(Op, st.just("nul"), POS, st.integers(1, 64)),
    st.builds(Op, st.just("eightbit"), st.integers(0, 200), POS,
              st.binary(min_size=1, max_size=32).map(lambda b: bytes(c | 0x80 for c in b))),
    st.builds(Op, st.just("boundary"), st.integers(0, 6), st.integers(0, 20),
              st.binary(max_size=12)),
    st.builds(Op, st.just("nest"), st.integers(1, 60), st.integers(0, 2)),
)


@dataclass(frozen=True)
class Mutant:
    """A seed (by name) and the mutations applied to it, in order."""

    seed: str
    ops: tuple[Op, ...]

    def raw(self) -> bytes:
        data = seed_bytes(self.seed)
        for op in self.ops:
            data = apply(data, op)
        return data


# Half the mutants come from the labelled mails (support requests: tickets, replies and
# notices are rendered for them), half from the corpus (mostly automatic and odd mail).
_DEV = [n for n in SEED_NAMES if n.startswith("labelled")]
_CORPUS = [n for n in SEED_NAMES if not n.startswith("labelled")]
SEEDS = (st.one_of(st.sampled_from(_DEV), st.sampled_from(_CORPUS)) if _DEV and _CORPUS
         else st.nothing())
MUTANTS = st.builds(Mutant, SEEDS, st.lists(OPS, min_size=1, max_size=3).map(tuple))


# ---------------------------------------------------------------------- the pipeline


class Pipeline:
    """One store and one worker shared by every example, and what they have done."""

    def __init__(self, config: config_mod.Config, store: Store, worker: Worker) -> None:
        self.config, self.store, self.worker = config, store, worker
        self.outbox_seen = 0
        self.inputs = 0
        self.states: Counter[str] = Counter()
        self.duplicates = 0
        self.reidentified = 0
        self.kinds: Counter[str] = Counter()
        self.quarantine_reasons: Counter[str] = Counter()
        self.seconds = 0.0
        self.seed_states: Counter[str] = Counter()  # of the unmutated run
        self.checked: set[int] = set()  # outbox ids passed through check_outgoing
        self.before_fuzz: set[int] = set()  # outbox ids queued by the set-up (openers)

    def feed(self, raws: list[bytes]) -> None:
        """Store, claim and process `raws` as one batch; then check each row and new mail."""
        ids: list[int] = []
        stored: list[int] = []  # rows this batch added
        for raw in raws:
            check_parsed(raw)
            self.inputs += 1
            saved = save_raw(self.store, raw, "fuzz", received_at=NOW)
            if not saved.created:
                row = self.store.get_inbound(saved.id)
                assert row is not None
                if row.raw == raw:
                    self.duplicates += 1  # the very same bytes again: decided already
                    ids.append(saved.id)
                    continue
                self.reidentified += 1
                fresh = b"Message-ID: <fuzz-%d@fuzz.invalid>\r\n" % self.inputs + raw
                saved = save_raw(self.store, fresh, "fuzz", received_at=NOW)
            ids.append(saved.id)
            stored.append(saved.id)
        started = time.perf_counter()
        while batch := self.store.claim_inbound(BATCH):
            self.worker.process_many(batch, now=NOW)  # must never raise
        self.seconds += time.perf_counter() - started
        for inbound_id in dict.fromkeys(ids):
            row = self.store.get_inbound(inbound_id)
            assert row is not None
            assert row.state in ("decided", "quarantined"), (inbound_id, row.state)
            if row.state == "quarantined" and inbound_id in stored:
                self.quarantine_reasons[quarantine_reason(row.error or "")] += 1
        for inbound_id in ids:
            row = self.store.get_inbound(inbound_id)
            assert row is not None
            self.states[row.state] += 1
        total = sum(self.store.count_outbox().values())
        new = total - self.outbox_seen
        if new:
            for out in self.store.list_outbox(limit=new):
                check_outgoing(out, self.config)
                self.checked.add(out.id)
                self.kinds[out.kind] += 1
        self.outbox_seen = total

    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example
        return f"Pipeline({self.config.store.url!r})"

    def report(self, title: str) -> str:
        counts = self.store.count_inbound()
        return (f"\n{title}: {self.inputs} inputs ({self.duplicates} exact duplicates, "
                f"{self.reidentified} re-identified), decided {self.states['decided']}, "
                f"quarantined {self.states['quarantined']} "
                f"{dict(self.quarantine_reasons.most_common())}; "
                f"store: {counts}; mail queued: {dict(sorted(self.kinds.items()))}; "
                f"pipeline {self.seconds:.1f} s")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name))


def check_parsed(raw: bytes) -> None:
    """parse() gives text: no lone surrogates (raw 8-bit bytes), which no database, codec or
    header could take, in any field of the Mail. An empty message is refused (ParseError)."""
    if not raw.strip():
        return
    mail = parse(raw)
    for text in _strings(mail):
        assert not _SURROGATE.search(text), text[:200]


# The Violation codes of mailbot.ingest.limits (anything else, e.g. "no decision", is a bug).
LIMIT_CODES = frozenset({"too_large", "header_too_large", "too_many_headers", "too_many_parts",
                         "too_deep", "attachment_too_large"})


def quarantine_reason(error: str) -> str:
    """The documented kind of a quarantine (a limit, or an empty message); a traceback of
    anything else (an unparseable message, a render error) fails the test."""
    lines = error.strip().splitlines() or ["?"]
    if not error.startswith("Traceback"):
        code = lines[0].split(":", 1)[0]  # a limit violation, e.g. too_many_parts
        assert code in LIMIT_CODES, f"unexpected quarantine:\n{error}"
        return "limit:" + code
    # parse() degrades on malformed mail; only a message with nothing in it is refused.
    assert lines[-1] == "mailbot.errors.ParseError: empty message", \
        f"unexpected quarantine:\n{error}"
    return "ParseError: empty message"


_COMPAT = email.parser.BytesParser(policy=email.policy.compat32)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile(r"[\r\n\x00]")
AUTO = {"from", "to", "subject", "date", "message-id", "auto-submitted",
        "x-auto-response-suppress", "x-mailbot-loop", "mime-version", "content-type",
        "content-language"}
# kind -> (required, optional) header names
HEADERS: dict[str, tuple[set[str], set[str]]] = {
    "notice": ({"from", "to", "reply-to", "subject", "date", "message-id", "x-mailbot-loop",
                "references", "auto-submitted", "mime-version", "content-type"}, set()),
    "relay": ({"from", "to", "subject", "date", "message-id", "x-mailbot-loop", "in-reply-to",
               "references", "mime-version", "content-type"},
              {"content-transfer-encoding", "reply-to"}),
    "command_error": ({"from", "to", "subject", "date", "message-id", "x-mailbot-loop",
                       "auto-submitted", "mime-version", "content-type",
                       "content-transfer-encoding"}, {"in-reply-to"}),
}


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (email.errors.HeaderParseError, UnicodeError, LookupError):
        return value


def check_headers(part: Message, where: str) -> None:
    for name, value in part.items():
        unfolded = _FOLD.sub("", value)
        assert not _CONTROL.search(name + unfolded), (where, name, value)
        assert not _CONTROL.search(_decoded(unfolded)), (where, name, _decoded(unfolded))
    for key in ("filename", "name"):
        filename = part.get_param(key, header="content-disposition") if key == "filename" \
            else part.get_param(key)
        if isinstance(filename, tuple):
            filename = email.utils.collapse_rfc2231_value(filename)
        if isinstance(filename, str):
            assert not _CONTROL.search(_decoded(filename)), (where, key, filename)


def check_outgoing(out: OutboxMessage, config: config_mod.Config) -> None:
    """A queued mail: clean header section, the kind's headers once each, To = recipients."""
    where = f"outbox {out.id} ({out.kind}, inbound {out.inbound_id})"
    assert out.state in ("queued", "bounced"), where  # a later (mutated) bounce may name it
    raw = out.raw
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, f"{where}: no header/body separator"
    for i, line in enumerate(head.split(b"\r\n")):
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line, (where, line)
        assert line, (where, "empty header line")
        if i == 0:
            assert line[:1] not in (b" ", b"\t"), (where, line)
        else:
            assert line[:1] in (b" ", b"\t") or b":" in line, (where, line)
    parsed = _COMPAT.parsebytes(raw)
    names = Counter(k.lower() for k in parsed.keys())
    assert all(n == 1 for n in names.values()), (where, names)
    required, optional = HEADERS.get(out.kind, (AUTO, {"in-reply-to", "references"}))
    assert required <= set(names) <= required | optional, (where, sorted(names))
    assert "bcc" not in names and "cc" not in names, where
    to = [addr.lower() for _, addr in email.utils.getaddresses(parsed.get_all("to", []))]
    assert to == [r.lower() for r in out.rcpt_to], (where, to, out.rcpt_to)
    if out.kind == "notice":
        assert tuple(to) == STAFF_NOTIFY, (where, to)
    else:
        assert len(to) == 1, (where, to)
    for n, part in enumerate(parsed.walk()):
        check_headers(part, f"{where} part {n}")


def _opener(seq: int, sender: str) -> bytes:
    """A complete, licensed request in scope: it opens ticket number `seq`."""
    return (f"From: Zákazník {seq} <{sender}>\r\nTo: podpora@estelar.example\r\n"
            f"Subject: Nejde tisk docházky {seq}\r\n"
            f"Message-ID: <opener-{seq}@fuzz.invalid>\r\nDate: Wed, 25 Nov 2026 09:00:00 +0100\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Dobrý den,\r\nod rána nejde vytisknout docházka na terminálu {seq}, tiskárna "
            "hlásí chybu 0x17.\r\nLicence 4012 7733\r\n\r\nS pozdravem\r\nJan Novák\r\n"
            ).encode()


def build_pipeline(directory: Path) -> Pipeline:
    """A migrated SQLite store with the labelled registry, and the tickets the labelled
    follow-ups and staff replies name (opened by generated requests from their senders)."""
    labelled = require_shared("labelled/dev")
    require_shared("corpus")
    base = config_mod.load(ROOT / "config" / "mailbot.toml")
    config = base.model_copy(update={
        "store": base.store.model_copy(update={"url": f"sqlite:///{directory / 'fuzz.db'}"}),
        "outbound": base.outbound.model_copy(update={"directory": str(directory / "sent")}),
        "worker": base.worker.model_copy(update={"processes": 0}),
        "mailbox": base.mailbox.model_copy(update={"staff_notify": STAFF_NOTIFY}),
        "conversation": base.conversation.model_copy(
            update={"auto_replies_per_hour": 100_000, "auto_replies_total_per_hour": 1_000_000,
                    "verify_staff": False}),
    })
    store = Store.from_url(config.store.url)
    migrations.upgrade(store.engine)
    records, errors = read_license_csv((labelled / "licenses.csv").read_text("utf-8-sig"))
    assert records and not errors
    store.upsert_licenses(records)
    pipeline = Pipeline(config, store, Worker(config, store))
    # The ticket numbers the labelled mails name, opened by their customers.
    senders: dict[int, str] = {}
    for line in (labelled / "labels.jsonl").read_text("utf-8").splitlines():
        label = json.loads(line) if line.strip() else {}
        ref = label.get("ticket_ref")
        if ref and re.fullmatch(r"T-2026-\d{6}", ref):
            sender = parse((labelled / label["file"]).read_bytes()).from_addr
            if label["expected"] == "followup" and sender:
                senders[int(ref[-6:])] = sender
            else:
                senders.setdefault(int(ref[-6:]), "jan.novak@strojirny-hranice.cz")
    top = max(senders, default=0)
    for seq in range(1, top + 1):
        save_raw(store, _opener(seq, senders.get(seq, f"z{seq}@strojirny-hranice.cz")),
                           "fuzz-opener", received_at=NOW)
    while batch := store.claim_inbound(BATCH):
        pipeline.worker.process_many(batch, now=NOW)
    opened = [seq for seq in senders if store.ticket_exists(f"T-2026-{seq:06d}")]
    print(f"\ntickets named by labelled mails opened: {len(opened)} of {len(senders)}")
    pipeline.outbox_seen = sum(store.count_outbox().values())
    pipeline.before_fuzz = {o.id for o in store.list_outbox(limit=1_000_000)}
    return pipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = build_pipeline(tmp_path_factory.mktemp("fuzz"))
    yield p
    p.store.close()


def test_every_seed_unmutated(pipeline: Pipeline) -> None:
    """Each corpus file and labelled mail as it is: decided or quarantined, clean mail out."""
    assert len(SEED_NAMES) >= 700
    before = (pipeline.inputs, pipeline.states.copy(), pipeline.kinds.copy(), pipeline.seconds)
    rows_before = sum(pipeline.store.count_inbound().values())
    started = time.perf_counter()
    names = list(SEED_NAMES)
    for i in range(0, len(names), BATCH):
        pipeline.feed([seed_bytes(n) for n in names[i:i + BATCH]])
    print(pipeline.report(f"unmutated seeds ({time.perf_counter() - started:.1f} s)"))
    pipeline.seed_states = pipeline.states - before[1]
    # Counted from the files, not by the pipeline: each distinct byte string is one new row
    # (a different mail with a taken Message-ID is stored afresh), the same bytes again none.
    distinct = len({seed_bytes(n) for n in names})
    counts = pipeline.store.count_inbound()
    assert sum(counts.values()) - rows_before == distinct, (counts, rows_before, distinct)
    assert pipeline.inputs - before[0] == len(names)
    assert pipeline.kinds["ack"] > before[2]["ack"] and pipeline.kinds["notice"] > 0


# No shrinking: an example costs milliseconds to seconds and shrinking one could take minutes;
# a failing example is reported as drawn (seed name and mutations), which reproduces it.
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example, HealthCheck.filter_too_much])
@given(mutants=st.lists(MUTANTS, min_size=1, max_size=4, unique=True))
def test_mutated_mail_is_decided_or_quarantined(pipeline: Pipeline, mutants: list[Mutant]) -> None:
    """Mutants of the seeds: the worker never raises, each ends decided or quarantined, and
    every mail it queues is clean."""
    pipeline.feed([m.raw() for m in mutants])


def test_fuzz_summary(pipeline: Pipeline) -> None:
    """The count of inputs and the decided/quarantined split of all of the above; every row
    of the store decided or quarantined, every queued mail checked once more."""
    counts = pipeline.store.count_inbound()
    mutated = pipeline.states - pipeline.seed_states
    print(pipeline.report("fuzz total (seeds and mutants)"))
    print(f"mutated inputs: {sum(mutated.values())}: decided {mutated['decided']}, "
          f"quarantined {mutated['quarantined']}")
    assert set(counts) <= {"decided", "quarantined"}, counts
    outbox = pipeline.store.list_outbox(limit=1_000_000)
    # Every mail the examples queued was checked as it was queued (the ids the store holds,
    # against the ids check_outgoing saw), and is checked once more here.
    assert {o.id for o in outbox} - pipeline.before_fuzz == pipeline.checked
    for out in outbox:
        check_outgoing(out, pipeline.config)
