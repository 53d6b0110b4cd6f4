"""Charset detection and decoding: declared charsets mapped to the codecs that really decode
them (supersets first), detection where none is declared or it fails, and a Central European
fallback. Never raises on bad bytes."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable


_ISO2022JP_MS = "x-iso2022jp-ms"  # our own: ISO-2022-JP with CP932 (NEC, IBM) extensions
# Declared charset -> codecs to try, supersets first (WHATWG-style: GB2312 mail holds GBK,
# "ISO-8859-1" mail holds Windows-1252, Shift_JIS mail holds CP932 extensions).
_SUPERSETS: dict[str, tuple[str, ...]] = {
    "ascii": ("utf-8",),
    "iso8859-1": ("cp1252", "iso8859-1"),
    "iso8859-15": ("iso8859-15", "cp1252"),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "euc_kr": ("cp949",),
    "big5": ("big5hkscs", "cp950"),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "euc_jp": ("euc_jp", "euc_jis_2004"),
    "iso2022_jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", _ISO2022JP_MS),
    "tis-620": ("cp874",),
}
_EXTRA_NAMES = {"x-gbk": "gbk", "x-sjis": "shift_jis", "windows-874": "cp874",
                "iso-8859-8-i": "iso8859-8", "ucs-2": "utf-16", "cp-850": "cp850"}
# ISO-8859-x text holding C1 bytes (0x80-0x9f) is really the Windows code page.
_C1_WINDOWS = {"iso8859-1": "cp1252", "iso8859-2": "cp1250", "iso8859-9": "cp1254",
               "iso8859-15": "cp1252"}
_REFUSED = frozenset({"unicode_escape", "raw_unicode_escape", "punycode", "idna", "undefined"})
_NO_UTF8_GUESS = ("utf-16", "utf-32", "utf-7")  # 8-bit "ISO-2022" text is mislabelled
_FALLBACKS = ("cp1250", "iso8859-2", "cp1252")  # Czech mailbox: Central European first
_C1 = re.compile("[\x80-\x9f]")
# Bytes telling ISO-8859-2 (Š Ť Ž š ť ž Ś ś Ź ź) from Windows-1250 (same letters elsewhere).
_ISO2_ONLY = frozenset(b"\xa6\xa9\xab\xac\xae\xb6\xb9\xbb\xbc\xbe")
_CP1250_ONLY = frozenset(b"\x8a\x8c\x8d\x8e\x8f\x9a\x9c\x9d\x9e\x9f")


def codec_for(charset: str | None) -> str | None:
    """Python codec name of a MIME charset label, or None when unknown or refused."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    label = _EXTRA_NAMES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError, TypeError):
        return None
    return None if name in _REFUSED else name


_JIS_RUN = re.compile(rb"\x1b\$[@B]([^\x1b]*)")


def _iso2022jp_ms(data: bytes) -> str:
    """Decode ISO-2022-JP as Microsoft does (CP50220): JIS X 0208 runs mapped to CP932.

    Mailers put CP932 extensions such as circled digits (row 13) into ISO-2022-JP, which
    Python's strict codecs reject. Half-width katakana (ESC ( I) are kept as escapes.
    """

    def to_sjis(run: re.Match[bytes]) -> bytes:
        out = bytearray()
        body = run.group(1)
        for i in range(0, len(body) - 1, 2):
            j1, j2 = body[i], body[i + 1]
            s1 = (j1 + 1) // 2 + 0x70
            s1 += 0x40 if s1 >= 0xA0 else 0
            s2 = j2 + (0x1F + (j2 >= 0x60) if j1 % 2 else 0x7E)
            out += bytes((s1 & 0xFF, s2 & 0xFF))
        return bytes(out)

    sjis = re.sub(rb"\x1b\([BJ]", b"", _JIS_RUN.sub(to_sjis, data))
    return sjis.decode("cp932", "replace")


def _central_european(data: bytes) -> str:
    """Pick Windows-1250 or ISO-8859-2 for Czech/Slovak 8-bit text by their telltale bytes."""
    iso = sum(1 for b in data if b in _ISO2_ONLY)
    win = sum(1 for b in data if b in _CP1250_ONLY)
    return "iso8859-2" if iso > win else "cp1250"


def _detect(data: bytes, hints: Iterable[str] = ()) -> str:
    """Decode bytes of unknown or wrong charset: UTF-8, then the message's charsets, then CP1250."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    if sum(1 for ch in text if ch > "\x7f") - bad >= 2 * bad:
        return text  # UTF-8 with a few broken bytes
    candidates = list(dict.fromkeys([*(c for h in hints for c in _SUPERSETS.get(h, (h,))),
                                     *_FALLBACKS]))
    encoding = "cp1250"
    from charset_normalizer import from_bytes  # rarely needed: not loaded until then

    try:
        best = from_bytes(data[:65536], cp_isolation=candidates).best()
    except Exception:  # charset-normalizer is a heuristic; never let it fail a parse
        best = None
    if best is not None and best.encoding:
        encoding = best.encoding
    if codec_for(encoding) in ("cp1250", "iso8859-2"):
        encoding = _central_european(data)
    try:
        return data.decode(encoding, "replace")
    except LookupError:
        return data.decode("cp1250", "replace")


def decode_bytes(data: bytes, charset: str | None, hints: Iterable[str] = ()) -> str:
    """Decode text bytes with the declared charset, detecting it when unknown, wrong or missing."""
    if data.isascii():
        codec = codec_for(charset)
        if codec and codec.startswith((*_NO_UTF8_GUESS, "iso2022")):
            return _decode_as(data, codec) or data.decode("ascii")
        return data.decode("ascii")
    codec = codec_for(charset)
    if codec is None or not codec.startswith(_NO_UTF8_GUESS):
        try:  # valid multi-byte UTF-8 is almost never accidental: mislabelled UTF-8
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    text = _decode_as(data, codec) if codec is not None else None
    return text if text is not None else _detect(data, hints)


def _decode_as(data: bytes, codec: str) -> str | None:
    """Decode with a codec or its supersets; None when none of them fits the bytes."""
    for name in _SUPERSETS.get(codec, (codec,)):
        if name == _ISO2022JP_MS:
            return _iso2022jp_ms(data) if data.isascii() else None
        try:
            text = data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
        windows = _C1_WINDOWS.get(name)
        if windows and _C1.search(text):
            return data.decode(windows, "replace")
        return text
    return None
