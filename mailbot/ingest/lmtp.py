"""SMTP/LMTP intake (aiosmtpd): persist, then answer.

`handle_DATA` returns 250 only after the raw message is committed; 451 when the store is
unavailable (the sending MTA keeps the mail and retries). aiosmtpd itself answers 552 above
`data_size_limit`. Recipients that are not ours get 550 at RCPT. LMTP answers DATA once per
accepted recipient (RFC 2033 §4.2); the message is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.errors import TemporaryIngestError
from mailbot.ingest.intake import Intake

log = logging.getLogger(__name__)


class RecipientPolicy:
    """Which envelope recipients are ours: exact addresses, with `local+tag@domain` forms."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self._addresses = frozenset(a.lower() for a in addresses)

    def accepts(self, address: str) -> bool:
        address = address.strip().lower()
        if address in self._addresses:
            return True
        base = re.sub(r"\+[^@]*@", "@", address, count=1)
        return base in self._addresses


def _one_line(value: str) -> str:
    return value.replace("\r", "").replace("\n", "").replace("\0", "")


class IntakeHandler:
    """aiosmtpd handler: RCPT checks the recipient, DATA stores the message."""

    def __init__(self, intake: Intake, policy: RecipientPolicy, *, lmtp: bool) -> None:
        self._intake = intake
        self._policy = policy
        self._lmtp = lmtp
        self.accepting = True

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._policy.accepts(address):
            return f"550 5.1.1 <{address}>: recipient not handled here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if not self.accepting:
            return self._each(envelope, "421 4.3.2 shutting down, try again later")
        raw = envelope.original_content or b""
        # Trace fields as a delivery agent writes them: the envelope recipients (a staff
        # reply's tokened address may appear only there) and the return path.
        trace = b"".join(
            f"Delivered-To: {_one_line(rcpt)}\r\n".encode("utf-8", "surrogateescape")
            for rcpt in envelope.rcpt_tos[:10]
        )
        if not re.match(rb"(?i)return-path:", raw):
            sender = _one_line(envelope.mail_from or "")
            trace = f"Return-Path: <{sender}>\r\n".encode("utf-8", "surrogateescape") + trace
        raw = trace + raw
        proto = "lmtp" if self._lmtp else "smtp"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            saved = await self._intake.accept(bytes(raw), f"{proto}:{peer}")
        except TemporaryIngestError as exc:
            log.warning("store unavailable, answering 451: %s", exc)
            return self._each(envelope, "451 4.3.0 temporarily unable to store, try again")
        except Exception:  # noqa: BLE001 - never 250 without a commit
            log.exception("intake failed, answering 451")
            return self._each(envelope, "451 4.3.0 local error, try again")
        return self._each(envelope, f"250 2.0.0 stored as {saved.id}")

    def _each(self, envelope: Envelope, reply: str) -> str:
        if not self._lmtp:
            return reply
        return "\r\n".join([reply] * max(1, len(envelope.rcpt_tos)))


async def start_listener(
    handler: IntakeHandler, host: str, port: int, *, lmtp: bool, max_bytes: int
) -> asyncio.Server:
    """Listen on host:port; the aiosmtpd protocol objects are created inside the running loop."""
    loop = asyncio.get_running_loop()
    cls = LMTP if lmtp else SMTP

    def factory() -> SMTP:
        return cls(handler, data_size_limit=max_bytes, enable_SMTPUTF8=True,
                   decode_data=False, hostname="mailbot", ident="mailbot")

    server = await loop.create_server(factory, host, port)
    log.info("%s listener on %s", "LMTP" if lmtp else "SMTP",
             ", ".join(str(s.getsockname()) for s in server.sockets))
    return server
