"""The outbox dispatcher: claim due rows → send → sent | retry later | dead.

Delivery promise (SMTP cannot do better): nothing is lost, and nothing is sent twice after a
clean stop. The one window left is between the relay's `250` and our `sent` commit: a crash
there (SIGKILL, power loss) sends that message again after restart — at most one message per
sending thread, with the same Message-ID (it is part of the stored bytes), so the receiving
side can deduplicate. A clean stop finishes the message in flight, marks it, and releases the
rest of the batch.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from mailbot.errors import PermanentDeliveryError, TransientDeliveryError
from mailbot.replies.smtp import Transport
from mailbot.store import ClaimedOutbox, Store, utcnow

log = logging.getLogger(__name__)


def retry_delay(attempts: int, *, base: float = 60.0, cap: float = 3600.0,
                rng: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with ±20 % jitter: 1, 2, 4 … minutes, at most an hour."""
    seconds = min(cap, base * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=seconds * (0.8 + 0.4 * rng()))


class OutboxDispatcher:
    """Sends due outbox rows through a Transport. Runs in one thread; `stop` ends it cleanly."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        batch: int = 50,
        horizon: timedelta = timedelta(hours=48),
        base_delay: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.transport = transport
        self.batch = batch
        self.horizon = horizon
        self.base_delay = base_delay
        self.clock = clock

    def send_due(self, stop: threading.Event | None = None) -> int:
        """Send one batch of due messages; returns how many were claimed.

        Stops between messages when `stop` is set; claimed but unsent rows are released.
        """
        claimed = self.store.claim_due_outbox(self.batch, now=self.clock())
        for i, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                self.store.release_outbox([c.id for c in claimed[i:]])
                break
            self.send_one(item)
        return len(claimed)

    def send_one(self, item: ClaimedOutbox) -> str:
        """Deliver one claimed row and record the result; returns the new state."""
        try:
            reply = self.transport.send(item.raw, item.mail_from, list(item.rcpt_to))
        except PermanentDeliveryError as exc:
            log.warning("outbox %s %s dead: %s", item.id, item.message_id, exc)
            self.store.mark_dead(item.id, str(exc))
            return "dead"
        except TransientDeliveryError as exc:
            now = self.clock()
            if now - item.created_at > self.horizon:
                log.warning("outbox %s %s dead after retrying for %s: %s",
                            item.id, item.message_id, self.horizon, exc)
                self.store.mark_dead(item.id, f"gave up after {self.horizon}: {exc}")
                return "dead"
            due = now + retry_delay(item.attempts + 1, base=self.base_delay)
            log.info("outbox %s %s retry at %s: %s", item.id, item.message_id,
                     due.isoformat(timespec="seconds"), exc)
            self.store.mark_retry(item.id, str(exc), due)
            return "queued"
        # The crash window: the relay has the message, the row is not yet `sent`.
        self.store.mark_sent(item.id, reply)
        log.info("outbox %s %s sent: %s", item.id, item.message_id, reply[:120])
        return "sent"
