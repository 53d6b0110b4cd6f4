"""The outbox dispatcher: claim due rows → send → sent | retry later | dead.

Delivery promise (SMTP cannot do better): nothing is lost, and nothing is sent twice after a
clean stop. The one window left is between the relay's `250` and our `sent` commit: a crash
there (SIGKILL, power loss) sends that message again after restart — at most one message per
sending thread (`concurrency`), with the same Message-ID (it is part of the stored bytes), so
the receiving side can deduplicate. A clean stop finishes the messages in flight, marks them,
and releases the rest of the batch.

Sending threads each own a transport (an SMTP connection). At most `per_domain` of them send
to one recipient domain at a time, so a campaign does not hammer one customer's server.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from mailbot import metrics
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
    """Sends due outbox rows through transports, `concurrency` at a time; `stop` ends it
    cleanly. `transport` is a factory (one transport per sending thread) or one transport
    shared by all threads (it must then be thread-safe, as SmtpSender and DirectorySink are).
    """

    def __init__(
        self,
        store: Store,
        transport: Transport | Callable[[], Transport],
        *,
        batch: int = 50,
        concurrency: int = 1,
        per_domain: int = 0,
        horizon: timedelta = timedelta(hours=48),
        base_delay: float = 60.0,
        lease: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self._factory: Callable[[], Transport] = (
            (lambda: transport) if isinstance(transport, Transport) else transport)
        self.batch = batch
        self.concurrency = concurrency
        self.per_domain = per_domain
        self.horizon = horizon
        self.base_delay = base_delay
        self.lease = lease
        self.clock = clock
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def transport(self) -> Transport:
        """This thread's transport (made on first use)."""
        transport: Transport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = self._factory()
            with self._lock:
                if not any(t is transport for t in self._transports):
                    self._transports.append(transport)
        return transport

    def close(self) -> None:
        """Close every transport and stop the sending threads (sending again restarts them)."""
        with self._lock:
            executor, self._executor = self._executor, None
            transports, self._transports = self._transports, []
        if executor is not None:
            executor.shutdown(wait=True)
        for transport in transports:
            transport.close()
        self._local = threading.local()

    def send_due(self, stop: threading.Event | None = None) -> int:
        """Send one batch of due messages; returns how many were claimed.

        Stops between messages when `stop` is set; claimed but unsent rows are released.
        """
        claimed = self.store.claim_due_outbox(self.batch, self.lease, now=self.clock())
        if not claimed:
            return 0
        queue = _DomainQueue(claimed, self.per_domain, stop)
        # The sending threads are the executor's, so each transport stays with one thread.
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="outbox")
            executor = self._executor
        threads = min(self.concurrency, len(claimed))
        for future in [executor.submit(self._drain, queue) for _ in range(threads)]:
            future.result()
        left = queue.leftover()
        if left:
            self.store.release_outbox(left)
        return len(claimed)

    def _drain(self, queue: _DomainQueue) -> None:
        while (item := queue.take()) is not None:
            try:
                self.send_one(item)
            finally:
                queue.done(item)

    def send_one(self, item: ClaimedOutbox) -> str:
        """Deliver one claimed row and record the result; returns the new state."""
        try:
            with metrics.STAGE.labels("send").time():
                reply = self.transport.send(item.raw, item.mail_from, list(item.rcpt_to))
        except PermanentDeliveryError as exc:
            log.warning("outbox %s %s dead: %s", item.id, item.message_id, exc)
            self.store.mark_dead(item.id, str(exc))
            metrics.OUTBOX.labels("dead").inc()
            return "dead"
        except TransientDeliveryError as exc:
            now = self.clock()
            if now - item.created_at > self.horizon:
                log.warning("outbox %s %s dead after retrying for %s: %s",
                            item.id, item.message_id, self.horizon, exc)
                self.store.mark_dead(item.id, f"gave up after {self.horizon}: {exc}")
                metrics.OUTBOX.labels("dead").inc()
                return "dead"
            due = now + retry_delay(item.attempts + 1, base=self.base_delay)
            log.info("outbox %s %s retry at %s: %s", item.id, item.message_id,
                     due.isoformat(timespec="seconds"), exc)
            self.store.mark_retry(item.id, str(exc), due)
            metrics.OUTBOX.labels("retried").inc()
            return "queued"
        # The crash window: the relay has the message, the row is not yet `sent`.
        self.store.mark_sent(item.id, reply)
        metrics.OUTBOX.labels("sent").inc()
        log.info("outbox %s %s sent: %s", item.id, item.message_id, reply[:120])
        return "sent"


def _domain(item: ClaimedOutbox) -> str:
    return item.rcpt_to[0].rpartition("@")[2].lower() if item.rcpt_to else ""


class _DomainQueue:
    """A claimed batch handed out to sending threads, at most `per_domain` (0: no limit)
    messages to one recipient domain in flight at a time, in claim order otherwise."""

    def __init__(self, items: Sequence[ClaimedOutbox], per_domain: int,
                 stop: threading.Event | None) -> None:
        self._pending = list(items)
        self._per_domain = per_domain
        self._stop = stop
        self._busy: Counter[str] = Counter()
        self._cond = threading.Condition()

    def take(self) -> ClaimedOutbox | None:
        """The next message a thread may send, waiting while only busy domains are left;
        None when the batch is done or a stop was asked for."""
        with self._cond:
            while self._pending and not (self._stop is not None and self._stop.is_set()):
                for i, item in enumerate(self._pending):
                    if not self._per_domain or self._busy[_domain(item)] < self._per_domain:
                        del self._pending[i]
                        self._busy[_domain(item)] += 1
                        return item
                self._cond.wait(0.5)  # woken by `done`; the timeout rechecks `stop`
            return None

    def done(self, item: ClaimedOutbox) -> None:
        with self._cond:
            self._busy[_domain(item)] -= 1
            self._cond.notify_all()

    def leftover(self) -> list[int]:
        """Ids never handed out (after a stop): to release."""
        with self._cond:
            left, self._pending = [item.id for item in self._pending], []
            return left
