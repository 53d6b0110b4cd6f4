"""accept(raw, origin): the one door for inbound mail. Stores durably, then wakes the worker.

Callers acknowledge (SMTP 250, IMAP flag/move) only after `accept` returned: by then the raw
bytes are committed (SQLite WAL with synchronous=FULL, or PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from mailbot import metrics
from mailbot.ingest.identity import new_inbound
from mailbot.store import SavedInbound, Store

log = logging.getLogger(__name__)


def save_raw(store: Store, raw: bytes, origin: str, received_at: datetime | None = None
             ) -> SavedInbound:
    """Store `raw` under its identity (deduplicated), committed when this returns."""
    return store.save_inbound(new_inbound(raw, origin), received_at)


def save_raw_many(store: Store, messages: Sequence[tuple[bytes, str]],
                  received_at: datetime | None = None) -> list[SavedInbound]:
    """`save_raw` for several (raw, origin) pairs in one transaction (one fsync)."""
    return store.save_inbound_many([new_inbound(raw, origin) for raw, origin in messages],
                                   received_at)


class Intake:
    """Durable acceptance of raw messages, shared by every intake (LMTP, SMTP, IMAP)."""

    def __init__(self, store: Store, wake: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._wake = wake

    def accept_blocking(self, raw: bytes, origin: str) -> SavedInbound:
        """Store `raw` (deduplicated) and wake the worker; for callers in a thread.

        Raises:
            TemporaryIngestError: the store is unavailable; do not acknowledge.
        """
        with metrics.STAGE.labels("store").time():
            saved = save_raw(self._store, raw, origin)
        metrics.RECEIVED.labels(origin.partition(":")[0]).inc(int(saved.created))
        if saved.created:
            self._wake()
        log.debug("accepted %s bytes from %s as inbound %s (new=%s)", len(raw), origin,
                  saved.id, saved.created)
        return saved

    def accept_many_blocking(self, messages: Sequence[tuple[bytes, str]]) -> list[SavedInbound]:
        """`accept_blocking` for a batch of (raw, origin) in one transaction (one fsync).

        Raises:
            TemporaryIngestError: the store is unavailable; acknowledge none of them.
        """
        with metrics.STAGE.labels("store").time():
            saved = save_raw_many(self._store, messages)
        for (_, origin), s in zip(messages, saved):
            metrics.RECEIVED.labels(origin.partition(":")[0]).inc(int(s.created))
        if any(s.created for s in saved):
            self._wake()
        return saved

    async def accept(self, raw: bytes, origin: str) -> SavedInbound:
        """`accept_blocking` run off the event loop."""
        return await asyncio.to_thread(self.accept_blocking, raw, origin)
