"""Heartbeats for claimed work: a claim's lease is short and renewed while the work goes on.

Claims (stored mail to decide, outbox rows to send) last `lease_seconds` (20 s by default).
While a batch is in progress a `Heartbeat` thread renews its claim every third of the
lease, so a slow batch or a slow SMTP send keeps it; a daemon that dies stops renewing, and
another takes its rows over within one lease. What the heartbeat cannot guarantee (the
database away for longer than a lease, a process frozen) the fenced writes catch: a state
change names the claim's token, so the old holder's write is refused (see `mailbot.store`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


def renew_interval(lease_seconds: float) -> float:
    """How often a claim of `lease_seconds` is renewed: three times per lease."""
    return max(0.05, lease_seconds / 3)


class Heartbeat:
    """Calls `renew` every `interval` seconds in a thread of its own, from entering the
    context until leaving it. A failing renewal (the database is away) is logged and tried
    again at the next beat; the work's fenced writes decide in the end."""

    def __init__(self, renew: Callable[[], object], interval: float, name: str) -> None:
        self._renew = renew
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._renew()
                self.beats += 1
            except Exception as exc:  # noqa: BLE001 - e.g. the database is briefly away
                log.warning("%s: renewing the claim failed (%s); trying again in %.1f s",
                            self._thread.name, str(exc).splitlines()[0][:200] if str(exc)
                            else type(exc).__name__, self._interval)
