"""Event-loop lag: how late a periodic timer fires. A parser or a query run on the loop by
mistake shows up here as lag (the daemon keeps such work in threads and child processes)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from mailbot import metrics


@dataclass
class LoopLag:
    """Samples of timer lateness in seconds; `run` samples every `interval` until `stop`."""

    interval: float = 0.05
    # The most recent samples (percentiles are over these) and the worst one ever seen.
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    worst: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(self.interval)
            late = max(0.0, time.perf_counter() - start - self.interval)
            self.samples.append(late)
            metrics.LOOP_LAG.observe(late)
            self.worst = max(self.worst, late)

    @property
    def max_ms(self) -> float:
        return 1000 * self.worst

    def percentile_ms(self, p: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
