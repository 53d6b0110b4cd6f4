"""Size and structure limits, checked on the raw bytes before any parser sees them (pure).

Python's parser is slow or recursive on hostile structure (100,000 parts: 12.8 s of CPU;
2,000 nested multiparts: RecursionError), so the cheap byte-level checks come first, like
Postfix's `message_size_limit`, `header_size_limit` and `mime_nesting_limit`. The numbers of
parts and multipart containers are counted from `Content-Type:` lines and `boundary=`
parameters: upper bounds that cost one pass over the bytes.

A message an intake did not take whole because it was over `message_bytes` (IMAP fetches
only its header section) is stored as a *stand-in*: a first line `X-Mailbot-Not-Fetched:
size=N`, the header section, a note. `check` finds every stand-in too large (with the stated
size), so it takes the ordinary too-large path (quarantined `too_large`, a person told the
limit), also on `quarantine retry`. A sender who writes that line into his own mail gets
what an oversized mail gets him: his mail quarantined and, within the auto-reply rate
limit, a note to its From.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailbot.config import LimitsConfig

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"(?m)^[^ \t\r\n]")
_CONTENT_TYPE = re.compile(rb"(?im)^content-type[ \t]*:")
_BOUNDARY = re.compile(rb"(?i)\bboundary[ \t]*=")
NOT_FETCHED = b"X-Mailbot-Not-Fetched"
_NOT_FETCHED_LINE = re.compile(rb"X-Mailbot-Not-Fetched: size=(\d{1,15})\r?\n")


@dataclass(frozen=True, slots=True)
class Violation:
    """A limit a message exceeds: `code` is the quarantine reason, `detail` says by how much.

    `answerable` marks the violations worth telling the sender about (a message that is
    simply too big); structural ones look like attacks or broken software and get no reply.
    """

    code: str
    detail: str
    answerable: bool = False

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def human_size(n: int) -> str:
    """`n` bytes for people: "25 MB", "1.5 MB", "300 kB", "900 B"."""
    if n >= 1024 * 1024:
        mb = n / 1024 / 1024
        return f"{mb:.0f} MB" if mb >= 10 or mb.is_integer() else f"{mb:.1f} MB"
    if n >= 1024:
        return f"{n // 1024} kB"
    return f"{n} B"


def header_section(raw: bytes, limit: int) -> bytes | None:
    """The header section (without the blank line), or None if it is longer than `limit`."""
    m = _HEADER_END.search(raw, 0, limit + 4)
    if m is None:
        return raw if len(raw) <= limit else None
    return raw[: m.start()]


def not_fetched_stand_in(head: bytes, size: int, limit: int) -> bytes:
    """The stand-in stored for a message of `size` bytes that was not fetched whole: the
    first line states the size, then `head` (the header section, within `limit` bytes in
    all and without a field cut in half), then a short note as the body."""
    first = NOT_FETCHED + f": size={size}\r\n".encode()
    head = head[: max(0, limit - len(first))]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[: end + 2]
    else:  # cut by the cap: keep whole fields only (the last one may go on past the cut)
        pos = len(head)
        while (nl := head.rfind(b"\n", 0, pos)) >= 0:
            if nl + 1 < len(head) and head[nl + 1] not in b" \t":
                break
            pos = nl
        head = head[: nl + 1]
    note = (f"[mailbot: {human_size(size)}; only the header section was fetched "
            f"(limits.message_bytes)]\r\n").encode()
    return first + head + b"\r\n" + note


def stated_size(raw: bytes) -> int | None:
    """The size a stand-in's first line states (None: `raw` is no stand-in)."""
    m = _NOT_FETCHED_LINE.match(raw)
    return int(m.group(1)) if m else None


def check(raw: bytes, limits: LimitsConfig) -> Violation | None:
    """The first limit `raw` exceeds, or None. A stand-in is always `too_large` (the
    message it stands for is not here, even if the limit was raised since)."""
    stated = stated_size(raw)
    if stated is not None:
        limit = human_size(limits.message_bytes)
        return Violation("too_large", f"{human_size(stated)} > {limit} (only the header "
                         "section was fetched)", answerable=True)
    if len(raw) > limits.message_bytes:
        return Violation("too_large", f"{human_size(len(raw))} > {human_size(limits.message_bytes)}",
                         answerable=True)
    head = header_section(raw, limits.header_bytes)
    if head is None:
        return Violation("header_too_large", f"header section > {limits.header_bytes} bytes")
    fields = len(_FIELD_START.findall(head))
    if fields > limits.header_fields:
        return Violation("too_many_headers", f"{fields} > {limits.header_fields} fields")
    # Each count below is of a word's occurrences with a condition around it; where the
    # word itself (ASCII case folded, a C-speed pass) is not over the limit, neither is it.
    low = raw.lower()
    parts = (len(_CONTENT_TYPE.findall(raw)) if low.count(b"content-type") > limits.mime_parts
             else 0)
    if parts > limits.mime_parts:
        return Violation("too_many_parts", f"{parts} > {limits.mime_parts} MIME parts")
    multiparts = (len(_BOUNDARY.findall(raw)) if low.count(b"boundary") > limits.multiparts
                  else 0)
    if multiparts > limits.multiparts:
        return Violation("too_deep", f"{multiparts} > {limits.multiparts} multipart containers")
    return None


def check_attachments(sizes: list[tuple[str, int]], limits: LimitsConfig) -> Violation | None:
    """A decoded attachment larger than allowed (checked after parsing)."""
    for name, size in sizes:
        if size > limits.attachment_bytes:
            return Violation("attachment_too_large",
                             f"{name or 'attachment'}: {human_size(size)} > {human_size(limits.attachment_bytes)}",
                             answerable=True)
    return None
