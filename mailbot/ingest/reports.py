"""original_message_ids(msg): the Message-IDs of the messages a delivery report or bounce is about;
delivery_outcome(msg): whether an RFC 3464 report is a hard or soft failure or only a delay.

Pure and cheap: it reads what the stdlib parser already split out, at most 64 KB of any header
block and 200 KB of text bodies in all, and never raises on malformed input.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from email.message import Message

from mailbot.ingest.headers import content_param

__all__ = ["original_message_ids", "delivery_outcome", "HARD", "SOFT", "DELAYED", "UNKNOWN",
           "MAX_PARTS", "MAX_IDS"]

MAX_PARTS = 200  # MIME parts walked
MAX_IDS = 20  # ids returned
MAX_HEADER_BLOCK = 64 * 1024  # bytes of a header block read
MAX_TEXT = 200 * 1024  # bytes of text bodies scanned for quoted `Message-ID:` lines, in all

# The returned message (RFC 2046, RFC 6532) or only its header block (RFC 6522, RFC 6533;
# the stdlib parses a message/* header block as a headers-only sub-message).
_MESSAGES = frozenset({"message/rfc822", "message/global", "message/news"})
_HEADER_BLOCKS = frozenset({"text/rfc822-headers", "message/global-headers",
                            "message/rfc822-headers"})
# Machine-readable report parts that may carry Original-Message-ID (RFC 3464, RFC 8098).
_STATUS = frozenset({"message/delivery-status", "message/global-delivery-status",
                     "message/disposition-notification",
                     "message/global-disposition-notification"})
_ORIGINAL_FIELDS = ("original-message-id", "x-original-message-id")
# Delivery-status parts (RFC 3464, RFC 6533) and the outcomes delivery_outcome() returns.
_DELIVERY_STATUS = frozenset({"message/delivery-status", "message/global-delivery-status"})
HARD, SOFT, DELAYED, UNKNOWN = "hard", "soft", "delayed", "unknown"
_NOT_FAILED = frozenset({"delayed", "delivered", "relayed", "expanded"})

_UNREAD = object()
_ANGLE_ID = re.compile(r"<([^<>]{1,998})>")
_BARE_ID = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_UNWANTED = re.compile(r"[\s\x00-\x1f\x7f]+")
_BLANK_LINE = re.compile(rb"\r?\n[ \t]*\r?\n")
# A field at a line start with its folded continuation lines, in a header block.
_HEADER_ID = re.compile(rb"^Message-ID[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_STATUS_ID = re.compile(rb"^(?:X-)?Original-Message-ID[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
# Per-recipient fields in delivery-status text read by hand, and a status part's header line
# and the boundary after it in a text that a broken boundary left whole.
_ACTION_FIELD = re.compile(rb"^Action[ \t]*:[ \t]*([A-Za-z-]+)", re.I | re.M)
_STATUS_FIELD = re.compile(rb"^Status[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
_EMBEDDED_STATUS = re.compile(
    rb"^[ \t]*Content-Type[ \t]*:[ \t]*message/(?:global-)?delivery-status\b[^\r\n]*\r?\n",
    re.I | re.M)
_BOUNDARY_LINE = re.compile(rb"^[ \t]*--\S", re.M)
_STATUS_CODE = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
# A header line quoted in a text body (qmail, Exim, Domino): only `<id>` on the same line.
_QUOTED_ID = re.compile(rb"^[ \t]*(?:(?:X-)?Original-)?Message-ID[ \t]*:[ \t]*(<[^<>\r\n]{1,998}>)",
                        re.I | re.M)


def original_message_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs (`<id>`, whitespace removed) of the messages `msg` returns or reports on.

    In order, without duplicates: the Message-ID of each attached message/rfc822 part (also
    outside a multipart/report, as Exchange, qmail and old Postfix attach it; a forwarded mail
    counts too) and of each text/rfc822-headers block, the Original-Message-ID fields of
    delivery-status and disposition-notification parts, then `Message-ID: <...>` lines at a
    line start of text/plain bodies outside attached messages (qmail-style inline bounces).
    Common breakage is read too: a returned message pasted in as a plain body part, one the
    stdlib misread (encoded, blank line first, folding lost) and reports with a broken
    boundary. At most MAX_PARTS parts are walked and MAX_IDS ids returned; a part that
    raises is skipped.
    """
    found: dict[str, None] = {}
    quoted: dict[str, None] = {}
    budget = MAX_TEXT
    # (part, inside an attached message, a body part of a multipart)
    stack: list[tuple[Message, bool, bool]] = [(msg, False, False)]
    walked = 0
    while stack and walked < MAX_PARTS and len(found) < MAX_IDS:
        part, nested, body_part = stack.pop()
        walked += 1
        try:
            ctype = part.get_content_type()
            maintype = ctype.split("/")[0]
            payload = part.get_payload()
            if body_part and content_param(part, "protected-headers") is None:
                _add(found, _values(part, "message-id"))  # a returned message pasted in as a part
            if ctype in _MESSAGES or (ctype in _HEADER_BLOCKS and isinstance(payload, list)):
                _add(found, _attached_ids(part, payload))
            elif ctype in _HEADER_BLOCKS:
                _add(found, _block_ids(_leading(part, MAX_HEADER_BLOCK), _HEADER_ID))
            elif ctype in _STATUS:
                _add(found, _status_ids(part, payload))
                continue  # its children are report field blocks, not MIME parts
            elif not nested and budget > 0 and (ctype == "text/plain" or (
                    maintype == "multipart" and isinstance(payload, str))):
                # a multipart with a str payload lost its boundary
                text = _leading(part, budget, payload=payload)
                budget -= len(text)
                _add(quoted, (m.decode("latin-1") for m in _QUOTED_ID.findall(text)))
            if isinstance(payload, list):
                inner = nested or maintype == "message"
                multipart = maintype == "multipart"
                stack.extend((sub, inner, multipart) for sub in reversed(payload)
                             if isinstance(sub, Message))
        except Exception:  # one malformed part must not lose the ids found elsewhere
            continue
    found.update(quoted)
    return tuple(found)[:MAX_IDS]


def delivery_outcome(msg: Message) -> str:
    """How an RFC 3464 delivery report ended for its recipients: HARD, SOFT, DELAYED or UNKNOWN.

    Reads the per-recipient field blocks of the message/delivery-status and
    message/global-delivery-status parts. HARD: some recipient `Action: failed` with a
    5.x.x `Status:`, or without a 4.x.x one; SOFT: failed only with 4.x.x statuses;
    DELAYED: none failed but some delayed, delivered, relayed or expanded (not a bounce);
    UNKNOWN: no such part or no recognised Action (non-standard bounces such as qmail's
    text notices). Broken reports are read too: a base64 status part, field lines that
    lost their folding, and a status part left inside the text of a part by a lost or
    mistyped boundary (only when no intact status part has an Action). At most MAX_PARTS
    parts are walked and MAX_TEXT bytes of text scanned; a part that raises is skipped,
    so this never raises.
    """
    recipients: list[tuple[str, str]] = []  # (action, status) from status parts
    embedded: list[tuple[str, str]] = []  # from status parts found inside text
    budget = MAX_TEXT
    # (part, inside an attached message)
    stack: list[tuple[Message, bool]] = [(msg, False)]
    walked = 0
    while stack and walked < MAX_PARTS and len(recipients) < MAX_PARTS:
        part, nested = stack.pop()
        walked += 1
        try:
            ctype = part.get_content_type()
            payload = part.get_payload()
            if ctype in _DELIVERY_STATUS:
                found, budget = _recipient_fields(part, payload, budget)
                recipients += found
                continue  # its children are field blocks, not MIME parts
            if not nested and budget > 0 and isinstance(payload, str) and (
                    ctype == "text/plain" or part.get_content_maintype() == "multipart"):
                text = _leading(part, budget)  # a multipart with a str payload lost its boundary
                budget -= len(text)
                embedded += _embedded_fields(text)
            if isinstance(payload, list):
                inner = nested or part.get_content_maintype() == "message"
                stack.extend((sub, inner) for sub in reversed(payload) if isinstance(sub, Message))
        except Exception:  # one malformed part must not hide the others
            continue
    return _verdict(recipients or embedded)


def _recipient_fields(part: Message, payload: object, budget: int
                      ) -> tuple[list[tuple[str, str]], int]:
    """(action, status) of each field block with an Action in a delivery-status part, and
    the text budget left.

    The stdlib splits the part into field blocks without decoding it and ends a block's
    fields at the first line that is no field: such a block's text (all of a base64 part,
    or the rest of a block whose folding was lost) is decoded and read here.
    """
    if not isinstance(payload, list):
        text = _leading(part, budget)
        return _field_blocks(text), budget - len(text)
    found: list[tuple[str, str]] = []
    for sub in [sub for sub in payload if isinstance(sub, Message)][:MAX_PARTS]:
        if sub.get("action") is not None:
            found.append((str(sub.get("action", "")).strip().lower(), str(sub.get("status", ""))))
        elif budget > 0 and isinstance(sub.get_payload(), str):
            text = _leading(sub, budget, _cte(part))
            budget -= len(text)
            found += _field_blocks(text)
    return found, budget


def _embedded_fields(text: bytes) -> list[tuple[str, str]]:
    """(action, status) pairs of status parts inside a text that a broken boundary left whole:
    the fields after a `Content-Type: message/delivery-status` line, up to a boundary line."""
    found: list[tuple[str, str]] = []
    for header in _EMBEDDED_STATUS.finditer(text):
        rest = text[header.end():]
        end = _BOUNDARY_LINE.search(rest)
        found += _field_blocks(rest[: end.start()] if end else rest)
    return found


def _field_blocks(data: bytes) -> list[tuple[str, str]]:
    """(action, status) of each blank-line separated block of fields with an Action field."""
    found: list[tuple[str, str]] = []
    for block in _BLANK_LINE.split(data)[:MAX_PARTS]:
        action = _ACTION_FIELD.search(block)
        if action:
            status = _STATUS_FIELD.search(block)
            found.append((action.group(1).decode("ascii").lower(),
                          status.group(1).decode("latin-1") if status else ""))
    return found


def _verdict(recipients: list[tuple[str, str]]) -> str:
    """The report's outcome from its recipients' (action, status) pairs."""
    words = [(action.split() or [""])[0] for action, _ in recipients]  # "failed (x)" → "failed"
    failed = [status for word, (_, status) in zip(words, recipients) if word == "failed"]
    for status in failed:
        code = _STATUS_CODE.search(status)
        if code is None or code.group(1) != "4":
            return HARD
    if failed:
        return SOFT
    return DELAYED if any(word in _NOT_FAILED for word in words) else UNKNOWN


def _add(found: dict[str, None], values: Iterable[str]) -> None:
    """Add the ids in header values to `found` (an ordered set) as `<id>`."""
    for value in values:
        for inner in _ANGLE_ID.findall(value) or _BARE_ID.findall(value)[:1]:
            inner = _UNWANTED.sub("", inner)
            if inner:
                found[f"<{inner}>"] = None


def _values(headers: Message, *names: str) -> list[str]:
    """Every value of the named headers as text (raw 8-bit compat32 values included)."""
    return [str(value) for name in names for value in headers.get_all(name) or ()]


def _attached_ids(part: Message, payload: object) -> list[str]:
    """Message-ID values of an attached message, also of one the stdlib misread.

    An encoded message/rfc822 (RFC 2046 forbids it; some MTAs base64 it), a blank line
    before its headers or header lines that lost their folding leave the stdlib a
    sub-message with no or few headers and the rest in its body: read that as a header block.
    """
    subs = [sub for sub in payload if isinstance(sub, Message)] if isinstance(payload, list) else []
    values = _values(subs[0], "message-id") if subs else []
    if values:
        return values
    sub = subs[0] if subs else part
    misread = _encoded(part) or not sub.keys() or any(
        type(defect).__name__ == "MissingHeaderBodySeparatorDefect" for defect in sub.defects)
    if not misread:
        return []
    return _block_ids(_leading(sub, MAX_HEADER_BLOCK, _cte(part)), _HEADER_ID)


def _status_ids(part: Message, payload: object) -> list[str]:
    """Original-Message-ID values of a delivery-status or disposition-notification part.

    A Message-ID field in one of its blocks is a returned header block that a broken
    boundary left inside the report part, and counts too.
    """
    if not isinstance(payload, list):
        return _block_ids(_leading(part, MAX_HEADER_BLOCK), _STATUS_ID, whole=True)
    blocks = [sub for sub in payload if isinstance(sub, Message)][:MAX_PARTS]
    values = [value for sub in blocks
              for value in _values(sub, *_ORIGINAL_FIELDS, "message-id")]
    if values or not _encoded(part) or not blocks:
        return values
    return _block_ids(_leading(blocks[0], MAX_HEADER_BLOCK, _cte(part)), _STATUS_ID, whole=True)


def _block_ids(data: bytes, field: re.Pattern[bytes], *, whole: bool = False) -> list[str]:
    """Values of `field` in the header block at the start of `data` (or in all of it)."""
    data = data.lstrip(b"\r\n")
    end = None if whole else _BLANK_LINE.search(data)
    block = data[: end.start()] if end else data
    return [value.decode("latin-1") for value in field.findall(block)]


def _cte(part: Message) -> str:
    """Lower-case Content-Transfer-Encoding of a part ("" when absent)."""
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _encoded(part: Message) -> bool:
    """Whether a part declares base64 or quoted-printable encoding."""
    return _cte(part) in ("base64", "quoted-printable")


def _leading(part: Message, limit: int, cte: str | None = None, *, payload: object = _UNREAD
             ) -> bytes:
    """At most `limit` decoded bytes from the start of a part's text, decoding only a prefix
    (`payload`: its ``get_payload()`` when the caller has it)."""
    raw = part.get_payload() if payload is _UNREAD else payload
    if not isinstance(raw, str):
        return b""
    cte = _cte(part) if cte is None else cte
    data = raw[: 2 * limit + 4].encode("utf-8", "surrogateescape")
    if cte == "base64":
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        try:
            data = binascii.a2b_base64(data[: len(data) - len(data) % 4])
        except binascii.Error:
            return b""
    elif cte == "quoted-printable":
        data = binascii.a2b_qp(data)
    return data[:limit]
