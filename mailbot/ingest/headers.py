"""Header decoding: RFC 2047 encoded words (and raw 8-bit text), mailboxes, Message-IDs and
Return-Path, each sanitized of control characters."""

from __future__ import annotations

import binascii
import email.utils
import re
from collections.abc import Iterable
from email.message import Message

from mailbot.ingest.charsets import decode_bytes


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]*")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]+")
_SPACES = re.compile(" {2,}")
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_WS = re.compile(r"\s+")


def _word_bytes(encoding: str, text: str) -> bytes:
    """Bytes of one RFC 2047 encoded word's text, tolerating bad padding and stray characters."""
    # Not "ascii": 8-bit bytes inside a word were decoded with the rest of the header, so
    # the text may hold any character (kept as UTF-8 bytes; raw bytes via surrogateescape).
    raw = text.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(raw, header=True)
    raw = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
    raw = raw[: len(raw) - len(raw) % 4] if len(raw) % 4 == 1 else raw + b"=" * (-len(raw) % 4)
    try:
        return binascii.a2b_base64(raw)
    except binascii.Error:
        return b""


def decode_words(value: str, hints: Iterable[str] = ()) -> str:
    """Decode RFC 2047 encoded words, also malformed ones (inside quotes, glued to text, split)."""
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset, hints))
            pending.clear()

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos:match.start()]
        charset = match.group(1).split("*", 1)[0].lower()  # RFC 2231 §5 language suffix
        if gap and not (pending and _BETWEEN_WORDS.fullmatch(gap)):
            flush()
            out.append(gap)
        elif pending and charset != pending_charset:
            flush()  # RFC 2047 §6.2: whitespace between encoded words is dropped
        pending_charset = charset
        pending.append(_word_bytes(match.group(2), match.group(3)))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def clean_header(value: str) -> str:
    """One-line text: folding and control characters (CR, LF, NUL, C1, U+2028) become spaces."""
    if value.isprintable() and "  " not in value:  # every character of _CONTROLS is unprintable
        return value.strip()
    if value.isascii():  # folding: ASCII white space is a space or in _CONTROLS
        joined = " ".join(value.split())
        if joined.isprintable():  # no other control character was there
            return joined
    return _SPACES.sub(" ", _CONTROLS.sub(" ", value)).strip()


def raw_header_text(value: str | object, hints: Iterable[str]) -> str:
    """Header value as parsed (raw 8-bit escaped) -> text, 8-bit bytes decoded, words not."""
    if not isinstance(value, str):
        value = str(value)
    if value.isascii():
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None, hints)


def header_text(value: str | object, hints: Iterable[str]) -> str:
    """A header value fully decoded (8-bit bytes and encoded words) and made one clean line."""
    text = raw_header_text(value, hints)
    if "=?" in text:
        text = decode_words(text, hints)
    return clean_header(text)


UNDECODED_HEADERS = frozenset({"authentication-results"})
"""Headers kept as written (only folding and control characters cleaned), never RFC 2047
decoded: an MTA copies text the sender controls (the envelope sender, a DKIM `d=`) into
Authentication-Results, and an encoded word there must not decode into results."""

_BARE_MAILBOX = re.compile(r"[A-Za-z0-9._+-]+")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_WORD = r'[^\s()<>@,:;"\[\]\\]+'
# One mailbox in a form the stdlib's getaddresses reads as written: `local@domain`, or
# `<local@domain>` after a display name of plain words or one quoted string (no escapes).
_SIMPLE_MAILBOX = re.compile(
    rf'(?:(?:(?P<words>{_WORD}(?: {_WORD})*)|"(?P<quoted>[^"\\\r\n]*)") ?)?<(?P<angle>{_ADDR_SPEC})>'
    rf"|(?P<bare>{_ADDR_SPEC})")


def _getaddresses(text: str) -> list[tuple[str, str]]:
    """``email.utils.getaddresses([text])`` for a one-line value; a simple single mailbox
    is read here, anything else by the stdlib.

    A stdlib with the strict parser (the fix of CVE-2023-27043: CPython 3.11.10, 3.12.6,
    and Debian's 3.11.2 patched) refuses a value such as ``ceo@bank.example
    <attacker@evil.example>`` with ``[("", "")]``, where older ones split it in two; such a
    value is read as its angle addresses, so both give the address mail would be answered to.
    """
    simple = _SIMPLE_MAILBOX.fullmatch(text)
    if simple is None:
        found = email.utils.getaddresses([text])
        if found == [("", "")] and "<" in text:
            return [("", addr) for addr in _angle_addresses(text)]
        return found
    if simple["bare"] is not None:
        return [("", simple["bare"])]
    return [(simple["words"] or simple["quoted"] or "", simple["angle"])]


def _angle_addresses(text: str) -> list[str]:
    """What stands inside each ``<...>`` of an address value, white space removed."""
    return [_WS.sub("", inner) for inner in _ANGLE_ID.findall(text)]


def _plausible(addr: str) -> bool:
    """Whether a parsed address is usable: local@domain, or a bare mailbox like MAILER-DAEMON."""
    if "=?" in addr or "?=" in addr:  # an RFC 2047 word is never an address (RFC 2047 §5)
        return False
    local, at, domain = addr.rpartition("@")
    if at:
        return bool(local) and bool(domain) and not any(c in addr for c in "<>,;\r\n\x00")
    return _BARE_MAILBOX.fullmatch(addr) is not None


def header_mailboxes(values: Iterable[str], hints: Iterable[str], *, angle_first: bool = False
               ) -> list[tuple[str, str]]:
    """(display name, lower-case address) pairs of address headers; implausible ones dropped.

    With `angle_first`, a value holding `<addr>` yields only its angle addresses, so that
    `ceo@bank.example <attacker@evil.example>` (split in two by the lenient parser) gives
    the address mail would really be answered to.
    """
    pairs: list[tuple[str, str]] = []
    for value in values:
        text = clean_header(raw_header_text(value, hints))
        found = [
            (clean_header(decode_words(name, hints)) if "=?" in name else name, clean_header(addr).lower())
            for name, addr in _getaddresses(text)
        ]
        found = [(name, addr) for name, addr in found if _plausible(addr)]
        if angle_first and "<" in text:
            angled = {addr.lower() for addr in _angle_addresses(text)}
            found = [pair for pair in found if pair[1] in angled] or found
        pairs.extend(found)
    return pairs


def header_text8(value: str) -> str:
    """A raw compat32 value's 8-bit bytes (surrogate escapes) as UTF-8 text, U+FFFD where they
    are not UTF-8: lone surrogates are not text and cannot be stored or encoded."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def header_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Message-IDs (`<...>`, inner whitespace removed) in order, without duplicates."""
    found: dict[str, None] = {}
    for value in values:
        for inner in _ANGLE_ID.findall(header_text8(value)):
            inner = _WS.sub("", _CONTROLS.sub("", inner))
            if inner:
                found[f"<{inner}>"] = None
    return tuple(found)


def header_message_id(value: str | None) -> str | None:
    """The first `<...>` of a Message-ID field, or the cleaned bare value, or None."""
    if value is None:
        return None
    ids = header_ids([value])
    if ids:
        return ids[0]
    return clean_header(header_text8(value)) or None


def header_return_path(value: str | None) -> str | None:
    """Address inside the first <...> of Return-Path; "" for the null sender `<>`."""
    if value is None:
        return None
    value = header_text8(value)
    match = _ANGLE_ID.search(value)
    inner = match.group(1) if match else value
    return _WS.sub("", _CONTROLS.sub("", inner)).lower()


def content_param(part: Message, name: str) -> str | tuple[str | None, str | None, str] | None:
    """``part.get_param(name)`` (Content-Type, `name` in lower case), read here when the
    field is simple: no RFC 2231 ``*`` parameters (whose decoding can raise, the stdlib's),
    no backslash, no semicolon inside quotes. The stdlib's answer then: the unquoted value
    (``email.utils.unquote``) of the first ``;``-separated parameter called `name`, ``""``
    for one without ``=``, None for none; its quoting and requoting of values cancel out.
    """
    value = part.get("content-type")
    if value is None:
        return None
    text = str(value)
    if "*" in text:
        return part.get_param(name)
    if name not in text.lower():  # a parameter's name is in the field verbatim
        return None
    params = text.split(";")
    if "\\" in text or ('"' in text and any(param.count('"') % 2 for param in params)):
        return part.get_param(name)
    for param in params:
        key, _, param_value = param.partition("=")
        if key.strip().lower() == name:
            return email.utils.unquote(param_value.strip())
    return None
