"""The outbox dispatcher: claim due rows → send → sent | retry later | dead.

Delivery promise (SMTP cannot do better): nothing is lost, and nothing is sent twice after a
clean stop. The one window left is between the relay's `250` and our `sent` commit: a crash
there (SIGKILL, power loss) sends that message again after restart — at most one message per
sending thread (`concurrency`), with the same Message-ID (it is part of the stored bytes), so
the receiving side can deduplicate. A clean stop finishes the messages in flight, marks them,
and releases the rest of the batch.

A thread sends its next message only once the outcome of its last is committed. The outcomes
the threads hand in meanwhile are committed together (`GroupCommit`): one transaction, one
fsync, for what four threads sent, instead of one each holding the store's one write lock
(SQLite) that the worker's batches wait for.

Sending threads each own a transport (an SMTP connection). At most `per_domain` of them send
to one recipient domain at a time, so a campaign does not hammer one customer's server.

Claims are short (`lease`, 20 s by default) and kept by a heartbeat that renews the batch's
unfinished rows every third of the lease, also while a slow relay takes its time over DATA.
Each message is sent only while its claim is known to be held (renewed within the last
half lease, else checked in the store first), and every outcome is written under the
claim's token: a daemon that lost a claim (its lease ran out, another daemon took the row)
does not send that message, and if it already had, its `sent` is refused and logged; the
other daemon may then send a second copy with the same Message-ID (at most the messages in
flight while the claim was lost).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from mailbot import metrics
from mailbot.claims import Heartbeat, renew_interval
from mailbot.errors import PermanentDeliveryError, TransientDeliveryError
from mailbot.replies.smtp import Transport
from mailbot.store import ClaimedOutbox, SendAttempt, Store, utcnow

log = logging.getLogger(__name__)


class GroupCommit:
    """Send attempts' outcomes recorded together: `record` hands one in and returns once it
    is committed (whether its claim still held the row). The first thread to hand one in
    while no commit is running begins a transaction (`Store.record_attempts`) and, once it
    has begun, writes every outcome handed in by then; those handed in later wait for the
    next such commit. An error of that transaction is raised in each thread whose outcome
    it held."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._pending: list[_Handed] = []
        self._writing = False

    def record(self, attempt: SendAttempt) -> bool:
        handed = _Handed(attempt)
        with self._cond:
            self._pending.append(handed)
            while not handed.done and self._writing:
                self._cond.wait()
            if handed.done:
                return handed.result()
            self._writing = True
        batch: list[_Handed] = []
        taken = False

        def take() -> list[SendAttempt]:
            nonlocal taken
            with self._cond:
                batch.extend(self._pending)
                self._pending, taken = [], True
            return [h.attempt for h in batch]

        try:
            recorded = self._store.record_attempts(take)
            for h, ok in zip(batch, recorded, strict=True):
                h.recorded = ok
        except BaseException as exc:
            if not taken:  # it failed before taking them: those waiting for it fail too
                take()
            for h in batch:
                h.error = exc
        finally:
            with self._cond:
                for h in batch:
                    h.done = True
                self._writing = False
                self._cond.notify_all()
        return handed.result()


class _Handed:
    """One outcome handed to `GroupCommit` and what became of it."""

    __slots__ = ("attempt", "done", "error", "recorded")

    def __init__(self, attempt: SendAttempt) -> None:
        self.attempt = attempt
        self.done = False
        self.recorded = False
        self.error: BaseException | None = None

    def result(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.recorded


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
        lease: timedelta = timedelta(seconds=20),
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
        self._outcomes = GroupCommit(store)
        # Until when (time.monotonic) each claimed row is surely ours: renewal start + lease.
        self._held_until: dict[int, float] = {}
        # Outcomes of claims lost: "not_sent" (found lost before sending), "sent_unrecorded"
        # (sent, then the `sent` write was refused), "unrecorded" (a retry/dead refused).
        self.lost: Counter[str] = Counter()

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
        taken_at = time.monotonic()
        claimed = self.store.claim_due_outbox(self.batch, self.lease, now=self.clock())
        if not claimed:
            return 0
        token = claimed[0].token
        assert token is not None
        with self._lock:
            self._held_until.update((c.id, taken_at + self.lease.total_seconds())
                                    for c in claimed)
        queue = _DomainQueue(claimed, self.per_domain, stop)
        # The sending threads are the executor's, so each transport stays with one thread.
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="outbox")
            executor = self._executor
        threads = min(self.concurrency, len(claimed))
        try:
            with Heartbeat(lambda: self._renew(queue.unfinished(), token),
                           renew_interval(self.lease.total_seconds()), "outbox-claim"):
                for future in [executor.submit(self._drain, queue) for _ in range(threads)]:
                    future.result()
            left = queue.leftover()
            if left:
                self.store.release_outbox(left, token)
        finally:
            with self._lock:
                for c in claimed:
                    self._held_until.pop(c.id, None)
        return len(claimed)

    def _renew(self, ids: list[int], token: str) -> None:
        """The heartbeat: extend the claim on the batch's unfinished rows."""
        started = time.monotonic()
        held = self.store.renew_outbox(ids, token, self.lease)
        until = started + self.lease.total_seconds()
        with self._lock:
            for i in held:
                if i in self._held_until:
                    self._held_until[i] = until

    def _claim_held(self, item: ClaimedOutbox) -> bool:
        """Whether `item`'s claim is ours for at least another half lease: known from the
        last renewal, else renewed (and so checked) in the store now."""
        if item.token is None:
            return True
        margin = self.lease.total_seconds() / 2
        with self._lock:
            until = self._held_until.get(item.id)
        if until is not None and until - time.monotonic() >= margin:
            return True
        started = time.monotonic()
        if not self.store.outbox_claim_held(item.id, item.token, self.lease):
            return False
        with self._lock:
            if item.id in self._held_until:
                self._held_until[item.id] = started + self.lease.total_seconds()
        return True

    def _drain(self, queue: _DomainQueue) -> None:
        while (item := queue.take()) is not None:
            try:
                self.send_one(item)
            finally:
                queue.done(item)

    def send_one(self, item: ClaimedOutbox) -> str:
        """Deliver one claimed row and record the result; returns the new state, or "lost"
        when the claim was found lost before sending (nothing sent, nothing written)."""
        if not self._claim_held(item):
            self._count_lost("not_sent")
            log.warning("outbox %s %s: claim lost before sending (the lease ran out and "
                        "another daemon took the row over); not sent here",
                        item.id, item.message_id)
            return "lost"
        try:
            with metrics.STAGE.labels("send").time():
                reply = self.transport.send(item.raw, item.mail_from, list(item.rcpt_to))
        except PermanentDeliveryError as exc:
            log.warning("outbox %s %s dead: %s", item.id, item.message_id, exc)
            self._unrecorded(item, "dead", self._outcomes.record(
                SendAttempt.dead(item.id, str(exc), item.token)))
            metrics.OUTBOX.labels("dead").inc()
            return "dead"
        except TransientDeliveryError as exc:
            now = self.clock()
            if now - item.created_at > self.horizon:
                log.warning("outbox %s %s dead after retrying for %s: %s",
                            item.id, item.message_id, self.horizon, exc)
                self._unrecorded(item, "dead", self._outcomes.record(SendAttempt.dead(
                    item.id, f"gave up after {self.horizon}: {exc}", item.token)))
                metrics.OUTBOX.labels("dead").inc()
                return "dead"
            due = now + retry_delay(item.attempts + 1, base=self.base_delay)
            log.info("outbox %s %s retry at %s: %s", item.id, item.message_id,
                     due.isoformat(timespec="seconds"), exc)
            self._unrecorded(item, "retry", self._outcomes.record(SendAttempt.retry(
                item.id, str(exc), due, item.token)))
            metrics.OUTBOX.labels("retried").inc()
            return "queued"
        # The crash window: the relay has the message, the row is not yet `sent`. The
        # counter moves after the store does, so a scrape never counts a send the outbox
        # gauge does not show yet.
        recorded = self._outcomes.record(SendAttempt.sent(item.id, reply, item.token))
        metrics.OUTBOX.labels("sent").inc()
        if recorded:
            log.info("outbox %s %s sent: %s", item.id, item.message_id, reply[:120])
        else:
            self._count_lost("sent_unrecorded")
            log.warning("outbox %s %s: sent (%s), but the claim was lost meanwhile: not "
                        "recorded here; the daemon now holding it may send a second copy "
                        "with the same Message-ID", item.id, item.message_id, reply[:120])
        return "sent"

    def _count_lost(self, kind: str) -> None:
        with self._lock:
            self.lost[kind] += 1

    def _unrecorded(self, item: ClaimedOutbox, outcome: str, recorded: bool) -> None:
        if not recorded:
            self._count_lost("unrecorded")
            log.warning("outbox %s %s: claim lost; the %s outcome is not recorded here (the "
                        "daemon now holding the row decides)", item.id, item.message_id,
                        outcome)


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
        self._in_flight: set[int] = set()
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
                        self._in_flight.add(item.id)
                        return item
                self._cond.wait(0.5)  # woken by `done`; the timeout rechecks `stop`
            return None

    def done(self, item: ClaimedOutbox) -> None:
        with self._cond:
            self._busy[_domain(item)] -= 1
            self._in_flight.discard(item.id)
            self._cond.notify_all()

    def unfinished(self) -> list[int]:
        """Ids still to send or being sent: the claims the heartbeat keeps."""
        with self._cond:
            return [item.id for item in self._pending] + sorted(self._in_flight)

    def leftover(self) -> list[int]:
        """Ids never handed out (after a stop): to release."""
        with self._cond:
            left, self._pending = [item.id for item in self._pending], []
            return left
