"""parse(raw) -> Mail: raw RFC 5322 bytes to a decoded, sanitized :class:`Mail` (pure, no I/O).

The stdlib parser splits the MIME tree with the compat32 policy: it is about 2.8x faster than
``policy.default`` and never builds header objects, whose parser crashes on real mail (e.g.
``Message-ID: <[x@microsoft.com]>``). Header and body decoding is done here, so that bad or
missing charsets, raw 8-bit headers and malformed encoded words degrade instead of raising.
mail-parser is too slow for the hot path (a full parse costs about as much as the stdlib one),
so it is used only where it is cheap: the lenient Date fallback and a last-resort rescue parse.

Charset decoding is in :mod:`~mailbot.ingest.charsets`, header decoding in
:mod:`~mailbot.ingest.headers`; `decode_bytes` and `decode_words` are re-exported here.
"""

from __future__ import annotations

import binascii
import email.errors
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from email.message import Message
from typing import Any, NamedTuple

from mailbot.domain import Attachment, Mail
from mailbot.errors import ParseError
from mailbot.ingest.charsets import codec_for, decode_bytes
from mailbot.ingest.headers import (
    UNDECODED_HEADERS,
    clean_header,
    content_param,
    decode_words,
    header_ids,
    header_mailboxes,
    header_message_id,
    header_return_path,
    header_text,
    header_text8,
    raw_header_text,
)
from mailbot.ingest.mime_split import parse_text
from mailbot.ingest.reports import UNKNOWN, delivery_outcome, original_message_ids
from mailbot.markup import MarkupSink, scan

__all__ = ["parse", "parse_with_tree", "html_to_text", "decode_bytes", "decode_words"]

MAX_DEPTH = 100  # Postfix mime_nesting_limit; deeper parts are ignored
ATTACHED_TEXT_LIMIT = 32 * 1024  # characters of attached messages' text kept for the rules
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


class NestingTooDeepDefect(email.errors.MessageDefect):
    """The MIME tree was nested too deeply: deeper parts (or, past the stdlib's limit, all
    parts) were ignored and only the headers and upper parts were read."""


def _date(value: str | None) -> datetime | None:
    """Aware datetime of a Date field, None when unreadable.

    The stdlib returns a naive datetime when it cannot place the zone (``-0000``, ``JST``,
    ``(EDT) -0400``); mail-parser reads those obsolete RFC 5322 forms, else UTC is assumed.
    """
    if not value:
        return None
    parsed: datetime | None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        try:
            import mailparser.utils  # the fallback's library, loaded when first needed

            parsed = mailparser.utils.convert_mail_date(value)[0]
        except Exception:  # mail-parser raises ValueError, but it is a third-party fallback
            pass
    if not isinstance(parsed, datetime):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------- bodies

_BLOCK_TAGS = frozenset(
    "address article aside blockquote br caption center dd div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody tfoot "
    "thead tr ul".split()
)
_SKIPPED_TAGS = frozenset({"script", "style", "title", "noscript", "template", "head"})
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(MarkupSink):
    """Collects readable text: block tags and <br> become line breaks, scripts are dropped."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
            self.pre += tag == "pre"
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str) -> None:
        if tag not in _SKIPPED_TAGS:
            self.handle_starttag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS and tag != "br":
            self.parts.append("\n")
            self.pre = max(0, self.pre - (tag == "pre"))

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data if self.pre else _HTML_SPACE.sub(" ", data))


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: line breaks for blocks, entities decoded, &nbsp; a space.

    Linear in the input, of which the first `markup.MAX_HTML_CHARS` characters are read.
    """
    extractor = _TextExtractor()
    scan(html, extractor)
    text = "".join(extractor.parts)
    lines = (line.strip(" \t\xa0").replace("\xa0", " ") for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _payload(part: Message, defects: list[str]) -> bytes:
    """Decoded payload bytes of a leaf part; also when Content-Transfer-Encoding has stray spaces."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return b""
    label = str(part.get("content-transfer-encoding", "")).lower()
    cte = label.strip()
    if cte == label:  # the stdlib recognised it (or it is 7bit/8bit/binary)
        return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)  # joins soft line breaks ("=\n"), also with CRLF
    if cte == "base64":
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        if len(data) % 4:
            defects.append("InvalidBase64PaddingDefect")
            data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
            data += b"=" * (-len(data) % 4)
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            defects.append("InvalidBase64CharactersDefect")
            return b""
    return data


def _body_text(entry: _Part, defects: list[str], hints: Iterable[str]) -> str:
    """Decoded text of a text/* part with newlines normalized and NULs removed."""
    charset = entry.charset
    if isinstance(charset, tuple):
        charset = email.utils.collapse_rfc2231_value(charset)
    text = decode_bytes(_payload(entry.part, defects),
                        charset if isinstance(charset, str) else None, hints)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\x00", "").lstrip("\ufeff")


def _filename(part: Message, hints: Iterable[str]) -> str | None:
    """Decoded filename from Content-Disposition or Content-Type name= (raw 8-bit too), or None."""
    view = part
    fields = [(k, v) for k, v in part.raw_items()
              if k.lower() in ("content-type", "content-disposition")]
    if all(isinstance(v, str) and v.isascii() and "name" not in v.lower() for _, v in fields):
        return None  # no filename= or name= parameter (their names hold "name" verbatim)
    if any(isinstance(v, str) and not v.isascii() for _, v in fields):
        view = Message()  # the compat32 accessors would turn raw 8-bit bytes into U+FFFD
        for key, value in fields:
            view[key] = clean_header(raw_header_text(value, hints))
    try:
        name = view.get_filename()
    except Exception:
        return None
    return None if name is None else header_text(name, hints)


def _disposition(part: Message) -> str | None:
    """Lower-case Content-Disposition type, or None."""
    value = part.get("content-disposition")
    if value is None:
        return None
    return str(value).split(";", 1)[0].strip().lower() or None


class _Part(NamedTuple):
    """One MIME part as met in the walk, with what is read of its Content-Type (once)."""

    part: Message
    parent: Message | None
    nested: bool  # inside a message/* part (an attached or bounced message)
    ctype: str  # part.get_content_type()
    charset: str | tuple[str | None, str | None, str] | None  # part.get_param("charset")


def _entry(part: Message, parent: Message | None, nested: bool) -> _Part:
    return _Part(part, parent, nested, part.get_content_type(), content_param(part, "charset"))


def _walk(msg: Message, defects: list[str]) -> list[_Part]:
    """All parts depth-first without recursion (so no RecursionError), at most MAX_DEPTH deep."""
    found: list[_Part] = []
    stack: list[tuple[_Part, int]] = [(_entry(msg, None, False), 0)]
    while stack:
        entry, depth = stack.pop()
        found.append(entry)
        # Only containers' payloads: get_payload() of a leaf with 8-bit bytes decodes it with
        # its declared charset and raises ValueError for one holding a NUL.
        payload = entry.part.get_payload() if entry.part.is_multipart() else None
        if isinstance(payload, list) and depth >= MAX_DEPTH:
            defects.append(NestingTooDeepDefect.__name__)
        elif isinstance(payload, list):
            inner = entry.nested or entry.ctype.split("/")[0] == "message"
            stack.extend((_entry(sub, entry.part, inner), depth + 1) for sub in reversed(payload)
                         if isinstance(sub, Message))
    return found


def _charsets(parts: Iterable[_Part]) -> list[str]:
    """Codec names declared anywhere in the message, the hints for undeclared 8-bit text."""
    names: dict[str, None] = {}
    for entry in parts:
        charset = entry.charset
        codec = codec_for(charset) if isinstance(charset, str) else None
        if codec and codec not in ("ascii", "utf-8"):
            names[codec] = None
    return list(names)


# ---------------------------------------------------------------------------- split

# Eight or more lines of nothing but base64 characters after a line break, up to (not
# including) the line break that ends the last one; the first line has 16 or more.
_BASE64_RUN = re.compile(
    r"\n([A-Za-z0-9+/=]{16,}+(?:\r?\n[A-Za-z0-9+/=]++(?=[\r\n]|\Z)){7,})")
# A run's stand-in: private-use characters never occur in text decoded from bytes as ASCII
# with surrogate escapes, so the stand-ins in the parsed tree are all ours.
_STAND_IN = re.compile("\ue000([0-9]+)\ue001")


def mime_tree(data: bytes, policy: email.policy.Policy = email.policy.compat32) -> Message:
    """The message tree ``BytesParser(policy=policy).parsebytes(data)`` gives, built as
    cheaply as `_split` builds it (the attachments of mail going on a ticket are read from
    it)."""
    return _split(data, policy)[0]


def attachment_filename(part: Message, hints: Iterable[str]) -> str | None:
    """The decoded filename of a part of a `mime_tree` (compat32): RFC 2231 parameters,
    encoded words and raw 8-bit read as `parse` reads them, or None."""
    return _filename(part, hints)


def declared_charsets(msg: Message) -> list[str]:
    """The codecs the parts of `msg` declare (other than ASCII and UTF-8), in order: the hints
    for undeclared 8-bit header text."""
    return _charsets(_walk(msg, []))


def _split(data: bytes, policy: email.policy.Policy = email.policy.compat32
           ) -> tuple[Message, set[int]]:
    """The stdlib's parse of `data` (compat32 unless `policy` is given), the same tree as
    ``BytesParser.parsebytes`` gives, without its line-by-line work on base64 bodies nor its
    regex compile per boundary (:mod:`~mailbot.ingest.mime_split`).

    The feedparser reads a leaf body one line at a time (a 60 KB attachment: 800 lines), and
    looks at each line only to see whether it is a boundary (starts with ``--``), blank, or
    a header field or continuation (``name:``, ``From ``, leading white space). A line of
    base64 characters is none of these in any state of the parser, nor is the stand-in
    that replaces a run of them here, a single line of private-use characters and digits.
    So the parser makes the same decisions and builds the same tree; the runs, which end
    up only in payloads, preambles and epilogues (a header value never holds such a line),
    are put back afterwards. Line ends are kept where the parser reads them: inside the
    run they go with it, the one after it stays (the parser drops it before a boundary).

    Also returns the ids of the parts whose payload is one such run (and line breaks).
    """
    text = data.decode("ascii", "surrogateescape")  # as BytesParser.parsebytes does
    runs: list[str] = []
    pieces: list[str] = []
    pos = 0
    for match in _BASE64_RUN.finditer(text):
        pieces += (text[pos:match.start(1)], f"\ue000{len(runs)}\ue001")
        runs.append(match[1])
        pos = match.end(1)
    if not runs:
        return parse_text(text, policy), set()
    pieces.append(text[pos:])
    msg = parse_text("".join(pieces), policy)

    def put_back(value: str) -> str:
        return _STAND_IN.sub(lambda m: runs[int(m[1])], value) if "\ue000" in value else value

    whole: set[int] = set()
    stack = [msg]
    while stack:
        part = stack.pop()
        stored: Any = part  # the payload as the parser stored it (get_payload may decode it)
        payload = stored._payload
        if isinstance(payload, list):
            stack.extend(sub for sub in payload if isinstance(sub, Message))
        elif isinstance(payload, str):
            if payload.startswith("\ue000") and _STAND_IN.fullmatch(payload.rstrip("\r\n")):
                whole.add(id(part))
            stored._payload = put_back(payload)
        if part.preamble:
            part.preamble = put_back(part.preamble)
        if part.epilogue:
            part.epilogue = put_back(part.epilogue)
    return msg, whole


# ---------------------------------------------------------------------------- parse


def parse(raw: bytes) -> Mail:
    """Parse one raw message into a Mail; degrade on malformed input rather than fail.

    Raises:
        ParseError: the input is empty or not bytes, or even the rescue parser failed.
    """
    return parse_with_tree(raw)[0]


def parse_with_tree(raw: bytes) -> tuple[Mail, Message | None]:
    """`parse`, and the `mime_tree` it read the Mail from (None where that tree could not be
    built or read as a whole: the rescue parser's Mail, a tree nested too deep), so that the
    attachments of mail going on a ticket are taken from it instead of a second parse.

    Raises:
        ParseError: as `parse`.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ParseError(f"expected bytes, got {type(raw).__name__}")
    data = bytes(raw)
    if not data.strip():
        raise ParseError("empty message")
    try:
        return _parse(data)
    except Exception as exc:  # a stdlib bug on hostile input: try mail-parser before giving up
        try:
            return _rescue(data, exc), None
        except Exception as rescue_exc:
            raise ParseError(f"unparseable message: {exc!r}; mail-parser: {rescue_exc!r}") from exc


_NAMES: dict[str, tuple[str, str, bool]] = {}
_NAMES_KEPT = 4096


def _name(name: str, hints: list[str]) -> tuple[str, str, bool]:
    """A header name lower-cased, as the key of `Mail.headers`, and whether its value stays
    undecoded; ASCII names (which do not depend on the hints) are remembered."""
    known = (name.lower(), clean_header(raw_header_text(name, hints)).lower(),
             name.strip().lower() in UNDECODED_HEADERS)
    if name.isascii():
        if len(_NAMES) >= _NAMES_KEPT:
            _NAMES.clear()  # bounded: a flood of made-up names costs no memory
        _NAMES[name] = known
    return known


def _parse(data: bytes) -> tuple[Mail, Message | None]:
    """The hot path: stdlib MIME split, our own decoding; the Mail and its tree (see
    `parse_with_tree`)."""
    defects: list[str] = []
    whole = True  # whether msg is the whole tree
    try:
        msg, base64_runs = _split(data)
        parts = _walk(msg, defects)
    except RecursionError:
        msg = _HEADER_PARSER.parsebytes(data)
        msg.set_payload("")
        parts = [_entry(msg, None, False)]
        base64_runs = set()
        defects.append(NestingTooDeepDefect.__name__)
        whole = False
    hints = _charsets(parts)

    headers: dict[str, list[str]] = {}
    raw_values: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        value = value if isinstance(value, str) else str(value)
        lower, key, undecoded = _NAMES.get(name) or _name(name, hints)
        raw_values.setdefault(lower, []).append(value)
        if undecoded:
            text = clean_header(raw_header_text(value, hints))  # as the MTA wrote it: no encoded words
        elif value.isascii():
            text = clean_header(decode_words(value, hints) if "=?" in value else value)
        else:
            text = header_text(value, hints)
            try:
                value.encode("utf-8", "surrogateescape").decode("utf-8")
            except UnicodeDecodeError:
                defects.append("UndecodableBytesDefect")
        headers.setdefault(key, []).append(text)

    def first(name: str) -> str | None:
        values = raw_values.get(name)
        return values[0] if values else None

    from_name, from_addr = "", None
    from_header = True  # whether from_addr is From's (a reply goes nowhere else)
    for field in ("from", "sender", "reply-to"):
        boxes = header_mailboxes(raw_values.get(field, ()), hints, angle_first=True)
        if boxes:
            from_name, from_addr = boxes[0]
            from_header = field == "from"
            break

    date = _date(first("date"))
    if first("date") and date is None:
        defects.append("InvalidDateDefect")

    content_type = header_text8(parts[0].ctype)
    report_type = ""
    if content_type == "multipart/report":
        param = msg.get_param("report-type")
        if isinstance(param, tuple):
            param = email.utils.collapse_rfc2231_value(param)
        report_type = clean_header(header_text8(str(param or ""))).lower()

    text, html, attachments, attached_text = _bodies(parts, defects, hints, base64_runs)
    for entry in parts:
        defects.extend(type(defect).__name__ for defect in entry.part.defects)

    original_ids = original_message_ids(msg)
    mail = Mail(
        message_id=header_message_id(first("message-id")),
        from_addr=from_addr,
        from_name=from_name,
        to=tuple(addr for _, addr in header_mailboxes(raw_values.get("to", ()), hints)),
        cc=tuple(addr for _, addr in header_mailboxes(raw_values.get("cc", ()), hints)),
        subject=headers.get("subject", [""])[0],
        date=date,
        in_reply_to=header_ids(raw_values.get("in-reply-to", ())),
        references=header_ids(raw_values.get("references", ())),
        return_path=header_return_path(first("return-path")),
        headers={key: tuple(values) for key, values in headers.items()},
        content_type=content_type,
        report_type=report_type,
        text=text,
        html=html,
        attachments=attachments,
        defects=tuple(dict.fromkeys(defects)),
        original_ids=original_ids,
        # Only a report about some message is worth a second walk of the parts.
        delivery_outcome=delivery_outcome(msg) if original_ids else UNKNOWN,
        attached_text=attached_text,
        from_header=from_header,
    )
    return mail, (msg if whole else None)


def _bodies(
    parts: list[_Part], defects: list[str], hints: list[str], base64_runs: set[int]
) -> tuple[str, str, tuple[Attachment, ...], str]:
    """Pick the text and HTML bodies, list the attachments (not the chosen body parts) and
    read the text of attached messages.

    Text is the first text/plain part, joined with its text/plain siblings in the same
    multipart/mixed (Apple Mail splits the text around inline images); HTML-only mail is
    converted. Parts with a filename are bodies only when nothing else is; parts inside an
    attached message/* only when the message itself has no body; otherwise their text
    (plain, else HTML converted) is the fourth value, capped at `ATTACHED_TEXT_LIMIT`.
    """
    own: list[_Part] = []  # body candidates: inline text without a filename
    named: list[_Part] = []  # text parts with a filename (cpython msg_44 style)
    nested: list[_Part] = []
    candidates: list[tuple[_Part, str | None]] = []
    for entry in parts:
        part = entry.part
        ctype = entry.ctype
        container = part.is_multipart()
        if entry.nested:
            if not container and ctype in ("text/plain", "text/html"):
                nested.append(entry)
            continue
        if container and ctype.split("/")[0] != "message":
            continue
        filename = _filename(part, hints)
        disposition = _disposition(part)
        if ctype in ("text/plain", "text/html") and disposition != "attachment":
            (own if filename is None else named).append(entry)
        if filename is not None or disposition == "attachment":
            candidates.append((entry, filename))

    chosen: list[_Part] = []
    for pool in (own, named, nested):
        plain = [e for e in pool if e.ctype == "text/plain"]
        rich = [e for e in pool if e.ctype == "text/html"]
        if plain or rich:
            break
    if plain:
        first = plain[0]
        mixed = first.parent is not None and first.parent.get_content_subtype() == "mixed"
        chosen = [e for e in plain if e is first or (mixed and e.parent is first.parent)]
    text = "\n".join(_body_text(e, defects, hints).rstrip("\n") for e in chosen)
    html = _body_text(rich[0], defects, hints) if rich else ""
    if not text.strip() and html:
        text = html_to_text(html)
    taken = {id(e.part) for e in chosen + rich[:1]}
    attachments = tuple(
        Attachment(filename=filename or "", content_type=header_text8(entry.ctype),
                   size=_size(entry.part, defects, base64_runs))
        for entry, filename in candidates if id(entry.part) not in taken
    )
    attached = "" if pool is nested else _attached_text(nested, defects, hints)
    return text, html, attachments, attached


def _attached_text(nested: list[_Part], defects: list[str], hints: list[str]) -> str:
    """The text of attached messages: their text/plain parts, else their HTML as text."""
    plain = [e for e in nested if e.ctype == "text/plain"]
    chosen = plain or [e for e in nested if e.ctype == "text/html"]
    texts: list[str] = []
    size = 0
    for entry in chosen:
        body = _body_text(entry, defects, hints)
        body = body if plain else html_to_text(body)
        texts.append(body[: ATTACHED_TEXT_LIMIT - size])
        size += len(texts[-1])
        if size >= ATTACHED_TEXT_LIMIT:
            break
    return "\n\n".join(t.strip() for t in texts if t.strip())


def _size(part: Message, defects: list[str], base64_runs: set[int]) -> int:
    """Decoded size in bytes of an attachment part (an attached message: its raw size).

    A base64 payload that `_split` found to be one run of base64 lines is not decoded:
    when it is well formed, its size follows from its length.
    """
    payload = part.get_payload() if part.is_multipart() else None  # see _walk
    if isinstance(payload, list):
        try:
            return sum(len(sub.as_bytes()) for sub in payload if isinstance(sub, Message))
        except Exception:
            return 0
    if id(part) in base64_runs and str(part.get("content-transfer-encoding", "")).lower() == "base64":
        run = part.get_payload()  # ASCII: as stored
        size = _base64_size(run) if isinstance(run, str) else None
        if size is not None:
            return size
    return len(_payload(part, defects))


def _base64_size(run: str) -> int | None:
    """Decoded size of base64 lines (only base64 characters and line breaks), or None when
    the stdlib would not decode them cleanly (padding inside, length not a multiple of 4):
    those are decoded, for the bytes and the defects the stdlib reports."""
    pad = run.find("=")
    pads = 0
    if pad >= 0:
        tail = run[pad:]
        pads = tail.count("=")
        if pads > 2 or tail.strip("=\r\n"):
            return None
    length = len(run) - run.count("\n") - run.count("\r")
    if length % 4:
        return None
    return length // 4 * 3 - pads


def _rescue(data: bytes, cause: BaseException) -> Mail:
    """Build a Mail from mail-parser when the stdlib path failed on hostile input (the
    library is loaded here, when first needed: a decision process rarely needs it)."""
    import mailparser

    parsed = mailparser.parse_from_bytes(data)
    hints: list[str] = []
    # mail-parser has decoded the values already: headers that must stay raw are left out.
    headers = {str(k).lower(): (header_text(v, hints),) for k, v in parsed.headers.items()
               if str(k).strip().lower() not in UNDECODED_HEADERS}
    senders = [addr for _, addr in parsed.from_ if addr] if parsed.from_ else []
    html = "\n".join(parsed.text_html or [])
    text = "\n".join(parsed.text_plain or []) or html_to_text(html)
    return Mail(
        message_id=header_message_id(parsed.message_id or None),
        from_addr=senders[0].lower() if senders else None,
        from_name="",
        to=tuple(addr.lower() for _, addr in parsed.to or () if addr),
        cc=tuple(addr.lower() for _, addr in parsed.cc or () if addr),
        subject=clean_header(str(parsed.subject or "")),
        date=None,
        in_reply_to=(),
        references=(),
        return_path=None,
        headers=headers,
        content_type="",
        report_type="",
        text=text,
        html=html,
        attachments=(),
        defects=(type(cause).__name__,),
    )
