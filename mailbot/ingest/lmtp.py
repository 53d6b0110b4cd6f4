"""SMTP/LMTP intake (aiosmtpd): persist, then answer.

`handle_DATA` returns 250 only after the raw message is committed; 451 when the store is
unavailable (the sending MTA keeps the mail and retries). aiosmtpd itself answers 552 above
`data_size_limit`. Recipients that are not ours get 550 at RCPT. LMTP answers DATA once per
accepted recipient (RFC 2033 §4.2); the message is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import weakref
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
        # aiosmtpd keeps the message twice (content, original_content): let both go now,
        # so a 25 MB mail is held once while it is stored.
        envelope.content = envelope.original_content = None
        proto = "lmtp" if self._lmtp else "smtp"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            saved = await self._intake.accept(raw, f"{proto}:{peer}")
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
    handler: IntakeHandler, host: str, port: int, *, lmtp: bool, max_bytes: int,
    sessions: weakref.WeakSet[SMTP] | None = None,
) -> asyncio.Server:
    """Listen on host:port; the aiosmtpd protocol objects are created inside the running loop
    (and remembered in `sessions`, so that a shutdown can close them)."""
    loop = asyncio.get_running_loop()
    cls = LMTP if lmtp else SMTP

    def factory() -> SMTP:
        proto = cls(handler, data_size_limit=max_bytes, enable_SMTPUTF8=True,
                    decode_data=False, hostname="mailbot", ident="mailbot")
        if sessions is not None:
            sessions.add(proto)
        return proto

    server = await loop.create_server(factory, host, port)
    log.info("%s listener on %s", "LMTP" if lmtp else "SMTP",
             ", ".join(str(s.getsockname()) for s in server.sockets))
    return server


class ListenerThread:
    """The listener on an event loop of its own, in a thread of its own.

    aiosmtpd reads a message's DATA line by line and does not yield between the lines of a
    buffered chunk: a mail of 100,000 short lines held the daemon's loop for 250 ms. On its
    own loop that time is the listener's alone (the daemon's loop keeps its timers).
    """

    def __init__(self, handler: IntakeHandler, host: str, port: int, *, lmtp: bool,
                 max_bytes: int) -> None:
        self._args = (handler, host, port)
        self._lmtp = lmtp
        self._max_bytes = max_bytes
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; raises what binding raised (e.g. the port is taken)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("listener did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        handler, host, port = self._args
        try:
            self.server = loop.run_until_complete(start_listener(
                handler, host, port, lmtp=self._lmtp, max_bytes=self._max_bytes,
                sessions=self._sessions))
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    @property
    def port(self) -> int | None:
        if self.server is None or not self.server.sockets:
            return None
        return int(self.server.sockets[0].getsockname()[1])

    def close(self, timeout: float = 15.0) -> None:
        """Stop listening, let sessions in progress end (bounded), stop the thread."""
        loop, server = self._loop, self.server
        if loop is None or server is None or loop.is_closed():
            return

        async def shut() -> None:
            server.close()
            # Idle clients (a relay keeping its connection) would hold the loop open: close
            # them. A DATA in progress already gets 421 (the handler stopped accepting).
            for session in list(self._sessions):
                transport = getattr(session, "transport", None)
                if transport is not None:
                    transport.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if others:
                await asyncio.wait(others, timeout=timeout)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout + 1)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
