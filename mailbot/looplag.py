"""Event-loop lag: how late a periodic timer fires. A parser or a query run on the loop by
mistake shows up here as lag (the daemon keeps such work in threads and child processes)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoopLag:
    """Samples of timer lateness in seconds; `run` samples every `interval` until `stop`."""

    interval: float = 0.05
    samples: list[float] = field(default_factory=list)
    max_samples: int = 100_000

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(self.interval)
            late = time.perf_counter() - start - self.interval
            if len(self.samples) < self.max_samples:
                self.samples.append(max(0.0, late))
            else:  # keep the worst ones once full
                self.samples[self.samples.index(min(self.samples))] = max(self.samples[0], late)

    @property
    def max_ms(self) -> float:
        return 1000 * max(self.samples, default=0.0)

    def percentile_ms(self, p: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
