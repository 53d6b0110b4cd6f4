"""A message's identity for deduplication: its Message-ID and From address, read cheaply
from the header block of the raw bytes (the store keys on them besides the SHA-256)."""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re

from mailbot.store.values import NewInbound

log = logging.getLogger(__name__)

_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>\"(),;:]+@[^\s<>\"(),;:]+)")


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    end2 = raw.find(b"\n\n")
    cut = [e for e in (end, end2) if e >= 0]
    return raw[: min(cut)] if cut else raw[:65536]


def identity_of(raw: bytes) -> tuple[str | None, str | None]:
    """Message-ID and From address read cheaply from the header block (never raises)."""
    head = _header_block(raw)[:262144]
    message_id: str | None = None
    sender: str | None = None
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        mid = headers.get("message-id")
        if mid:
            message_id = " ".join(str(mid).split())[:998] or None
        frm = headers.get("from")
        if frm:
            m = _ADDR.search(str(frm))
            if m:
                sender = (m.group(1) or m.group(2)).lower()[:320]
    except Exception:  # noqa: BLE001 - identity is a best effort; sha256 still dedups
        log.debug("identity_of: header block unreadable", exc_info=True)
    return message_id, sender


def new_inbound(raw: bytes, origin: str) -> NewInbound:
    """`raw` as the store takes it: with the identity read from its header."""
    message_id, sender = identity_of(raw)
    return NewInbound(raw, origin, message_id, sender)
