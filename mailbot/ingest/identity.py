"""A message's identity for deduplication: its Message-ID and From address, read cheaply
from the header block of the raw bytes (the store keys on them besides the SHA-256)."""

from __future__ import annotations

import io
import logging
import re
from email.policy import compat32

from mailbot.store.values import NewInbound

log = logging.getLogger(__name__)

_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>\"(),;:]+@[^\s<>\"(),;:]+)")
# A line the stdlib's feedparser takes as part of a header block (its `headerRE`).
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
_WANTED = ("message-id", "from")
# The first LF of the first `\n\n` or of the first `\r\n\r\n` (a literal first character:
# the search skips to each LF at memchr speed).
_BLANK_LINE = re.compile(rb"\n(?:\n|(?<=\r\n)\r\n)")


def _header_block(raw: bytes) -> bytes:
    """`raw` up to its first blank line (`\\n\\n`, or `\\r\\n\\r\\n` from its CR), or its first
    64 KiB when it has none."""
    blank = _BLANK_LINE.search(raw)
    if blank is None:
        return raw[:65536]
    return raw[: blank.start() - (blank.end() - blank.start() == 3)]


def _first_fields(head: str) -> dict[str, list[str]]:
    """Source lines (with continuation lines) of the first Message-ID and From fields.

    Reads the lines as the stdlib's header parser does (compat32 `BytesHeaderParser`, whose
    ``.get`` gave these before): lines end at CR, LF or CRLF; the block ends at the first
    line that is no field, continuation or ``From `` line; a ``From `` line or one starting
    with a colon is no field (and continuation lines after it belong to none), and neither
    has a wanted name before its first colon. Stops as soon as both fields are complete.
    """
    found: dict[str, list[str]] = {}
    current: list[str] | None = None  # the wanted field being read
    for line in io.StringIO(head, newline="").readlines():
        if not _HEADER_LINE.match(line):
            break
        if line[0] in " \t":
            if current is not None:
                current.append(line)
            continue
        if len(found) == len(_WANTED):
            break  # both complete
        current = None
        name = line[: line.find(":")].lower()  # a "From " line: "from ...", no wanted name
        if name in _WANTED and name not in found:
            current = found[name] = [line]
    return found


def _value(lines: list[str]) -> str:
    """A field's value as compat32's ``Message.get`` returns it, as text (raw 8-bit bytes
    as U+FFFD)."""
    name, value = compat32.header_source_parse(lines)
    return str(compat32.header_fetch_parse(name, value))


def identity_of(raw: bytes) -> tuple[str | None, str | None]:
    """Message-ID and From address read cheaply from the header block (never raises).

    One pass over the lines of the header block up to the From and Message-ID fields,
    at most 256 KiB; the values are those of the first such fields, as a header parse
    of the block gives them.
    """
    message_id: str | None = None
    sender: str | None = None
    try:
        head = _header_block(raw)[:262144].decode("ascii", "surrogateescape")
        fields = _first_fields(head)
        if "message-id" in fields:
            mid = _value(fields["message-id"])
            if mid:
                message_id = " ".join(mid.split())[:998] or None
        if "from" in fields:
            frm = _value(fields["from"])
            m = _ADDR.search(frm) if frm else None
            if m:
                sender = (m.group(1) or m.group(2)).lower()[:320]
    except Exception:  # noqa: BLE001 - identity is a best effort; sha256 still dedups
        log.debug("identity_of: header block unreadable", exc_info=True)
    return message_id, sender


def new_inbound(raw: bytes, origin: str) -> NewInbound:
    """`raw` as the store takes it: with the identity read from its header."""
    message_id, sender = identity_of(raw)
    return NewInbound(raw, origin, message_id, sender)
