"""Heartbeats for claimed work: a claim's lease is short and renewed while the work goes on.

Claims (stored mail to decide, outbox rows to send) last `lease_seconds` (20 s by default).
While a batch is in progress a `Heartbeat` renews its claim every third of the lease, so
a slow batch or a slow SMTP send keeps it; a daemon that dies stops renewing, and another
takes its rows over within one lease. What the heartbeat cannot guarantee (the
database away for longer than a lease, a process frozen) the fenced writes catch: a state
change names the claim's token, so the old holder's write is refused (see `mailbot.store`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


def renew_interval(lease_seconds: float) -> float:
    """How often a claim of `lease_seconds` is renewed: three times per lease."""
    return max(0.05, lease_seconds / 3)


class Heartbeat:
    """Calls `renew` every `interval` seconds in a thread of its own, from entering the
    context until leaving it. A failing renewal (the database is away) is logged and tried
    again at the next beat; the work's fenced writes decide in the end.

    The thread is started only when the first renewal is due (`_Waker`, one thread for the
    process): most claimed work ends well within a third of its lease, and a thread started
    and joined per batch cost the worker's thread ~5 % of a catch-up (each start and join
    waits for the new thread to get the GIL)."""

    def __init__(self, renew: Callable[[], object], interval: float, name: str) -> None:
        self._renew = renew
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ended = False
        self._thread: threading.Thread | None = None
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        _WAKER.wake_at(time.monotonic() + self._interval, self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._ended = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join()
        # The waker keeps this object until its first renewal would have been due; what the
        # renewal holds (an outbox batch's messages) need not live that long.
        self._renew = _ended

    def _start(self) -> None:
        """The first renewal is due: renew now, then every `interval`, in a thread of its
        own (unless the context has been left meanwhile)."""
        with self._lock:
            if self._ended:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._renew()
                self.beats += 1
            except Exception as exc:  # noqa: BLE001 - e.g. the database is briefly away
                log.warning("%s: renewing the claim failed (%s); trying again in %.1f s",
                            self._name, str(exc).splitlines()[0][:200] if str(exc)
                            else type(exc).__name__, self._interval)
            if self._stop.wait(self._interval):
                return


def _ended() -> None:
    """The renewal of a heartbeat whose context has been left (never called)."""


class _Waker:
    """One daemon thread that starts each heartbeat's own thread when its first renewal is
    due; heartbeats left before then are dropped when their time comes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Heartbeat]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def wake_at(self, when: float, beat: Heartbeat) -> None:
        with self._cond:
            heapq.heappush(self._due, (when, next(self._count), beat))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="heartbeat-waker",
                                                daemon=True)
                self._thread.start()
            elif self._due[0][2] is beat:  # sooner than the one waited for
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                beat = heapq.heappop(self._due)[2]
            beat._start()


_WAKER = _Waker()
