"""Parsing and deciding in child processes, with a memory cap and a time limit per message.

Python's `email` parser can spend seconds of CPU on a hostile message (100,000 MIME parts:
12.8 s) and raises on some real mail; run in the daemon's own process that would stall intake
and the event loop. So `parse` + `decide` run in a small pool of child processes:

* each child caps its address space (RLIMIT_AS): a memory bomb raises MemoryError there;
* the parent waits at most `timeout` seconds per message; a child that overruns is killed with
  the whole pool, the message is reported `too_complex`, and the pool is started again (the
  other messages of the batch are simply submitted again);
* any exception in a child comes back as an `Analysis` with the traceback, never raised.

The children read the license registry and ticket numbers from the store themselves (each has
its own connection), so nothing large crosses the process boundary but the raw bytes in and
the parsed `Mail` with its `Decision` out. With the parent rendering replies and writing the
transaction while children parse the next messages, the two cores of a small machine overlap.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from mailbot.config import Config
from mailbot.domain import Decision, Mail

log = logging.getLogger(__name__)

TOO_COMPLEX = "too_complex"


@dataclass(frozen=True, slots=True)
class Analysis:
    """A parsed and decided message, or the reason it could not be."""

    mail: Mail | None
    decision: Decision | None
    error: str | None = None


# The child's decider: one per child process, built by the pool initializer.
_child_decider: object = None


def _child_init(config: Config, memory_mb: int) -> None:
    global _child_decider
    from mailbot.store import Store
    from mailbot.worker import Decider

    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    store = Store.from_url(config.database_url, pool_size=1)
    _child_decider = Decider(config, store)


def _child_analyse(raw: bytes, now: datetime, trust_refs: bool) -> Analysis:
    from mailbot.worker import Decider

    decider = _child_decider
    assert isinstance(decider, Decider)
    return decider.analyse(raw, now, trust_refs=trust_refs)


class DecisionPool:
    """Child processes that parse and decide; `analyse_many` keeps input order."""

    def __init__(self, config: Config, *, processes: int, timeout: float, memory_mb: int) -> None:
        self._config = config
        self._processes = processes
        self._timeout = timeout
        self._memory_mb = memory_mb
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # "spawn": the parent has threads (IMAP, asyncio's executor); fork would copy locks.
            self._executor = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(self._config, self._memory_mb),
            )
        return self._executor

    def _restart(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        for proc in list(getattr(executor, "_processes", {}).values()):
            proc.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def analyse_many(
        self, raws: Sequence[bytes], now: datetime, *, trust_refs: bool = False
    ) -> list[Analysis]:
        """Parse and decide every message; a hung or crashed child costs only its message."""
        results: list[Analysis | None] = [None] * len(raws)
        pending = list(range(len(raws)))
        isolate = False  # after a crashed child: one message at a time, to find the culprit
        while pending:
            batch = pending[:1] if isolate else pending
            pool = self._pool()
            futures = [(i, pool.submit(_child_analyse, raws[i], now, trust_refs)) for i in batch]
            done: set[int] = set()
            for i, fut in futures:
                try:
                    results[i] = fut.result(timeout=self._timeout)
                except FutureTimeout:
                    log.warning("a message took over %.0f s to parse and decide: %s",
                                self._timeout, TOO_COMPLEX)
                    results[i] = Analysis(None, None, f"{TOO_COMPLEX}: over {self._timeout:g} s")
                    done.add(i)
                    self._restart()
                    break
                except BrokenProcessPool:
                    self._restart()
                    if isolate:  # it died on this message alone
                        log.warning("a worker process died on a message: %s", TOO_COMPLEX)
                        results[i] = Analysis(None, None, f"{TOO_COMPLEX}: worker process died")
                        done.add(i)
                    isolate = True
                    break
                except Exception:  # noqa: BLE001 - e.g. an unpicklable result
                    results[i] = Analysis(None, None, traceback.format_exc())
                done.add(i)
            pending = [i for i in pending if i not in done]
        return [r if r is not None else Analysis(None, None, "not analysed") for r in results]
