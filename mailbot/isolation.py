"""Parsing and deciding in child processes, with a memory cap and a time limit per message.

Python's `email` parser can spend seconds of CPU on a hostile message (100,000 MIME parts:
12.8 s) and raises on some real mail; run in the daemon's own process that would stall intake
and the event loop. So the pipeline's decide and render stages (:mod:`mailbot.pipeline`) run
in a small pool of child processes; the parent numbers the tickets and writes the
transactions (SQLite has one writer, and it is fastest alone):

* the children hold no database connection (nor SQLAlchemy: a child needs about 30 MB less
  and starts faster): they decide against the license registry they were started with (the
  pool starts fresh children when the registry changes, `use_registry`) and cannot tell which
  tickets exist, so a decision that asked (`Analysis.provisional`) is made again by the
  parent with the store's answers where the store knows one of the tickets asked about;

* each child caps its address space (RLIMIT_AS): a memory bomb raises MemoryError there and
  comes back as an error like any other parse failure (the parent quarantines the message);
* the parent waits at most `timeout` seconds per message; a child that overruns is killed with
  the whole pool, the message is reported `too_complex`, and the pool is started again (the
  other messages of the batch are simply submitted again);
* a child that dies is told apart from a message that kills it: the suspects are retried one
  at a time, and only after a health check shows that a fresh child works is a message blamed.
  A pool that cannot work at all raises `WorkerPoolError`, so mail stays queued, not
  quarantined.

Two cores then do useful work at once: the children parse and decide while the parent writes.

Children parse hostile mail, so they start without the daemon's secrets in their environment
(`child_environment`): the variables the config names (`*_env`), anything whose name looks
like a secret, and $CREDENTIALS_DIRECTORY are left out. The reply-token secret they need is
handed over with each child's start task instead.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import multiprocessing
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from mailbot import memory
from mailbot.errors import MailbotError

if TYPE_CHECKING:
    from mailbot.classify.rules import LicenseRegistry
    from mailbot.config import Config
    from mailbot.pipeline import Analysis, Rendered, RenderJob

log = logging.getLogger(__name__)

TOO_COMPLEX = "too_complex"

Task = Callable[[list[Any]], list[Any]]
"""What a decision process runs per group of items: their argument tuples in, their results
out in the same order."""


class WorkerPoolError(MailbotError):
    """The child processes cannot work at all (not the fault of one message)."""


@dataclass(frozen=True, slots=True)
class Overrun:
    """A message whose child ran out of time or died on it: quarantine as too_complex."""

    inbound_id: int
    reason: str


# The child's pipeline: one per child process, built by its start task (`_child_start`).
_child_pipeline: object = None
# The pool's start-up barrier (`_child_start`), handed to each child at spawn.
_child_barrier: Any = None
# The size of the pool's task and result pipes (`_widen_pipes`); Linux's pipe-max-size.
PIPE_BYTES = 1 << 20
# The GIL switch interval of a process with a pool (`_prompt_threads`), in seconds.
SWITCH_INTERVAL = 0.001
# How long a pool's children may take to start (import, build the pipeline, warm up).
_START_SECONDS = 120.0

_SECRET_NAME = re.compile(r"(?i)pass|secret|token|credential|private|api_?key|auth|pwd|cookie")


def secret_variables(config: Config, environ: Mapping[str, str]) -> set[str]:
    """Names of the variables in `environ` that children must not get: the ones named by
    the config (`password_env`, `token_secret_env`, the OAuth2 `*_env`) and any that look
    like a secret."""
    named = {box.password_env for box in config.imap}
    conv = config.conversation
    named |= {config.outbound.password_env, conv.token_secret_env, conv.token_secret_previous_env}
    for oauth in [box.oauth2 for box in config.imap] + [config.outbound.oauth2]:
        if oauth is not None:
            named |= {oauth.client_secret_env, oauth.service_account_key_env,
                      oauth.refresh_token_env}
    found = {n for n in named if n and n in environ}
    for name in environ:
        if _SECRET_NAME.search(name):
            found.add(name)
    return found


def child_environment(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without `secret_variables`: what a child process starts with."""
    drop = secret_variables(config, environ)
    return {k: v for k, v in environ.items() if k not in drop}


@contextmanager
def _scrubbed_environment(config: Config) -> Iterator[None]:
    """While children are spawned (they copy the environment at exec), the secret
    variables are out of `os.environ`; `config.read_secret` waits on the same lock."""
    from mailbot.config import ENV_LOCK

    with ENV_LOCK:
        saved = {n: os.environ.pop(n) for n in secret_variables(config, os.environ)}
        try:
            yield
        finally:
            os.environ.update(saved)


def _die_with_parent(parent: int) -> None:
    """End this child when the daemon (pid `parent`) dies, even by SIGKILL: no orphans.

    A watch thread polls the parent pid. (PR_SET_PDEATHSIG is not used: it fires when the
    *thread* that spawned the child ends, and the pool is started from a worker thread.)
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:  # the parent died while this child was starting
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_WARM_UP_MAIL = (
    "From: Jana Nováková <jana@example.org>\r\nTo: podpora@example.org\r\n"
    "Subject: =?utf-8?q?Nejde_ulo=C5=BEit_sm=C4=9Bnu?=\r\nMessage-ID: <warm-up@example.org>\r\n"
    "Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Dobrý den,\r\npo uložení směny program hlásí chybu a nikdo se nepřihlásí.\r\n"
    "Prosíme o školení nových kolegů a export do mezd.\r\nLicenční číslo: 1234-5678\r\n\r\n"
    "S pozdravem\r\nJana Nováková\r\ntel. 123 456 789\r\n"
).encode("utf-8")


def _child_init(memory_mb: int, log_level: int, parent: int, barrier: Any) -> None:
    """What a child does when it is spawned: only small values come through the spawn pipe
    (a write the parent blocks on until the child reads it), the rest in `_child_prepare`
    and `_child_start`."""
    global _child_barrier
    from mailbot import logs

    memory.starting()
    memory.tune_decision_process()
    _die_with_parent(parent)
    atexit.register(_exit_without_teardown)
    logs.setup(log_level)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _child_barrier = barrier


def _exit_without_teardown() -> None:
    """A decision process's last exit handler: its results are sent and it holds nothing to
    close (no database, files written are synced), so it ends here, with exit code 0, instead
    of freeing every module's objects first (about 80 ms of CPU a child, which the parent's
    `close` waited for)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(0)


def _child_prepare(config: Config) -> bool:
    """Each child's first task (a pool sends one per child): build the pipeline from the
    config, which comes through the task queue (written by a feeder thread, so the parent
    never waits on a child's start-up), and warm it up; then wait at the pool's barrier
    until every child has its own, so no child takes two. The registry and the reply-token
    secret follow in `_child_start`: the parent may still be reading them from its store."""
    global _child_pipeline
    from mailbot.pipeline import Pipeline
    from mailbot.registry import DictRegistry

    if _child_pipeline is None:
        for name in secret_variables(config, os.environ):  # spawned outside the pool: be sure
            os.environ.pop(name, None)
        pipeline = Pipeline.isolated(config, DictRegistry({}))
        pipeline.decider.use_token_secret(b"")  # until `_child_start` gives the real one
        # Deciding one harmless mail compiles what the rules compile on first use, so that is
        # start-up too and never counts against the first real message's time limit.
        pipeline.analyse(_WARM_UP_MAIL, datetime.now(UTC))
        _child_pipeline = pipeline
    if _child_barrier is not None:
        _child_barrier.wait(_START_SECONDS)
    return True


def _child_start(token_secret: bytes | None, previous_secrets: tuple[bytes, ...],
                 registry: LicenseRegistry | None) -> bool:
    """Each child's second task, one per child like `_child_prepare`'s: the registry to
    decide against and the reply-token secret (handed over here: the child's environment
    has no secrets)."""
    from mailbot.pipeline import Pipeline
    from mailbot.registry import DictRegistry

    pipeline = _child_pipeline
    assert isinstance(pipeline, Pipeline)
    pipeline.decider.use_registry(registry or DictRegistry({}))
    pipeline.decider.use_token_secret(token_secret or b"", previous_secrets)
    memory.settled()
    if _child_barrier is not None:
        _child_barrier.wait(_START_SECONDS)
    return True


def _child_analyse(items: list[tuple[bytes, datetime]]) -> list[Analysis]:
    """A task's messages, (raw, now) each, parsed and decided stage by stage
    (`Decider.analyse_many`, per run of one `now`)."""
    from mailbot.pipeline import Pipeline

    pipeline = _child_pipeline
    assert isinstance(pipeline, Pipeline)
    out: list[Analysis] = []
    for now, run in groupby(items, key=itemgetter(1)):
        out += pipeline.decider.analyse_many([raw for raw, _ in run], now)
    return out


def _child_render(job: RenderJob) -> Rendered:
    from mailbot.pipeline import Pipeline

    pipeline = _child_pipeline
    assert isinstance(pipeline, Pipeline)
    return pipeline.render(job)


def _each(fn: Callable[..., Any], items: list[tuple[Any, ...]]) -> list[Any]:
    """The task (`partial(_each, fn)`) of a function of one item: `fn` called on each
    item's arguments."""
    return [fn(*args) for args in items]


def _child_ping() -> bool:
    return _child_pipeline is not None


class WorkerPool:
    """Child processes that parse and decide; results keep the input order."""

    def __init__(self, config: Config, *, processes: int, timeout: float, memory_mb: int,
                 token_secret: bytes | None = None,
                 previous_secrets: tuple[bytes, ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: seconds for the idle timer (`stop_if_idle`); tests pass their own."""
        self._config = config
        self._clock = clock
        self._token_secret = token_secret
        self._previous_secrets = previous_secrets
        self._processes = processes
        self._timeout = timeout
        self._memory_mb = memory_mb
        self._registry: LicenseRegistry | None = None
        # The children of pools retired by a registry change, finishing what they were given,
        # each with its pool's start barrier: a Barrier's count and state live in a block of
        # multiprocessing's shared heap, which the next pool's Barrier would be given if this
        # one were freed while the old children still use it (both pools then hang at start).
        self._retired: list[tuple[Any, Any]] = []
        self._executor: ProcessPoolExecutor | None = None
        self._barrier: Any = None  # the running pool's start barrier
        # Whether the running pool's children were sent their registry and secret
        # (`_child_start`); a pool that is only spawned (`spawn`) waits for them.
        self._started = False
        self._pings: list[Future[bool]] = []  # the running pool's start-up, not yet waited for
        self._lock = threading.Lock()
        self._last_used = clock()

    @classmethod
    def from_config(cls, config: Config) -> WorkerPool | None:
        """The configured pool (`worker.processes`; None for 0: everything in-process). Its
        children start with `spawn`, `warm` or the first work."""
        w = config.worker
        if w.processes <= 0:
            return None
        return cls(config, processes=w.processes, timeout=w.parse_timeout_seconds,
                   memory_mb=w.memory_mb)

    def use_token_secret(self, secret: bytes, previous: tuple[bytes, ...] = ()) -> None:
        """The reply-token secret (and the rotation's previous ones) that children given
        their start task from now on get."""
        with self._lock:
            self._token_secret, self._previous_secrets = secret, previous

    def use_registry(self, registry: LicenseRegistry) -> None:
        """Decide against `registry` from now on: a changed registry retires the running
        children (they finish what they were given, then exit) and the next work starts
        fresh ones with it; children only spawned so far are simply given it."""
        with self._lock:
            if registry is self._registry:
                return
            self._registry = registry
            if not self._started:
                return
            executor, self._executor = self._executor, None
            if executor is not None:  # its work may still hang: `_restart` and `close` see it
                # (taken before shutdown, which forgets them)
                self._retired = [(p, b) for p, b in self._retired if p.is_alive()]
                self._retired += [(p, self._barrier) for p in _processes(executor)]
        if executor is not None:
            log.info("license registry changed: starting fresh decision processes")
            executor.shutdown(wait=False)

    def stop_if_idle(self, idle_seconds: float) -> bool:
        """Stop the children when no work came for `idle_seconds` (they start again with the
        next batch): an idle daemon, or one only sending a campaign, holds no decision
        processes. Returns whether they were stopped."""
        with self._lock:
            idle = (self._executor is not None
                    and self._clock() - self._last_used >= idle_seconds)
        if idle:
            log.info("decision processes idle for %.0f s: stopping them", idle_seconds)
            self.close()
        return idle

    def spawn(self) -> None:
        """Start the children now, before the registry and the reply-token secret are known:
        they import and compile what deciding needs (`_child_prepare`) while this process is
        still opening its store; `warm` or the first work gives them the rest."""
        with self._lock:
            self._spawn()

    def warm(self) -> None:
        """Start the children now without waiting for them (the daemon's start, replay's), so
        their start-up overlaps the parent's own work."""
        self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        """The running pool, started if needed. Its children may still be starting: `collect`
        waits for them (`_await_start`) before it times any message."""
        with self._lock:
            self._last_used = self._clock()
            return self._start_pool()

    def _await_start(self) -> None:
        """Wait until every child of the running pool has started (imported, initialised),
        so start-up never counts against a message's time limit.

        Raises:
            WorkerPoolError: the children do not start.
        """
        with self._lock:
            executor, pings, self._pings = self._executor, self._pings, []
        try:
            for ping in pings:
                ping.result(timeout=_START_SECONDS)
        except (BrokenProcessPool, FutureTimeout, threading.BrokenBarrierError) as exc:
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            if executor is not None:
                for proc in _processes(executor):
                    proc.kill()
                executor.shutdown(wait=False, cancel_futures=True)
            raise WorkerPoolError(f"worker processes do not start: {exc!r}") from None

    def _start_pool(self) -> ProcessPoolExecutor:
        executor = self._spawn()
        if not self._started:
            start = (self._token_secret, self._previous_secrets, self._registry)
            self._submit_start(executor, _child_start, start)
            self._started = True
        return executor

    def _spawn(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # "spawn": the parent has threads (IMAP, asyncio's executor); fork would copy locks.
            context = multiprocessing.get_context("spawn")
            self._barrier = context.Barrier(self._processes)
            executor = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=context,
                initializer=_child_init,
                initargs=(self._memory_mb, logging.getLogger().getEffectiveLevel(),
                          os.getpid(), self._barrier),
            )
            _widen_pipes(executor)
            _prompt_threads()
            self._pings = []
            # Each submit spawns a child (all before any answers): every child of this pool
            # starts in the scrubbed environment, and each takes one start task.
            self._submit_start(executor, _child_prepare, (self._config,))
            self._executor, self._started = executor, False
        return self._executor

    def _submit_start(self, executor: ProcessPoolExecutor, task: Callable[..., bool],
                      args: tuple[Any, ...]) -> None:
        """One start task per child (the barrier sees that no child takes two)."""
        try:
            with _scrubbed_environment(self._config):
                self._pings += [executor.submit(task, *args) for _ in range(self._processes)]
        except BrokenProcessPool as exc:
            for proc in _processes(executor):
                proc.kill()
            executor.shutdown(wait=False, cancel_futures=True)
            if self._executor is executor:
                self._executor = None
            raise WorkerPoolError(f"worker processes do not start: {exc!r}") from None

    def _restart(self) -> None:
        """Kill the children (the running pool's and any retired pool's: a hung task may be
        in either); the next work starts fresh ones."""
        with self._lock:
            executor, self._executor = self._executor, None
            procs, self._retired = [p for p, _ in self._retired], []
        if executor is not None:
            procs += _processes(executor)
            executor.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.kill()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the children: let them finish their task, kill any still alive after
        `timeout` seconds (a clean stop never waits on a hung parse)."""
        with self._lock:
            executor, self._executor = self._executor, None
            # (the barriers stay referenced until the children have stopped)
            retired, self._retired = self._retired, []
        procs = [p for p, _ in retired]
        if executor is not None:
            procs += _processes(executor)
            executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)

    def _healthy(self) -> bool:
        """Whether a fresh child starts and answers (after a crash, before blaming a mail)."""
        try:
            pool = self._pool()
            self._await_start()
            return bool(pool.submit(_child_ping).result(timeout=60))
        except (BrokenProcessPool, FutureTimeout, OSError, WorkerPoolError):
            self._restart()
            return False

    def submit(self, items: Sequence[tuple[int, bytes]], now: datetime) -> Submitted:
        """Start parsing and deciding (inbound id, raw bytes) pairs; `collect` waits for them.
        Submitting the next batch before applying the current one keeps both cores busy."""
        return self._submit(_child_analyse, [(i, (raw, now)) for i, raw in items])

    def submit_renders(self, jobs: Sequence[RenderJob]) -> Submitted:
        """Start rendering replies (see `Pipeline.render`); `collect` waits for them."""
        return self._submit(partial(_each, _child_render),
                            [(job.inbound_id, (job,)) for job in jobs])

    def _groups(self, indices: Sequence[int]) -> list[list[int]]:
        """Messages per task: several, so per-task overhead is shared (up to 16)."""
        size = max(1, min(16, len(indices) // (2 * self._processes)))
        return [list(indices[k : k + size]) for k in range(0, len(indices), size)]

    def _submit(self, task: Task, items: list[tuple[int, tuple[Any, ...]]]) -> Submitted:
        """Hand `items` to the children in groups, one `task` call per group."""
        try:
            pool = self._pool()
            futures = [
                (group, pool.submit(task, [items[i][1] for i in group]))
                for group in self._groups(range(len(items)))
            ]
        except (BrokenProcessPool, WorkerPoolError):
            self._restart()
            futures = []
        return Submitted(task, items, futures)

    def collect(self, submitted: Submitted) -> list[Any]:
        """The results of a submit, in order (an `Overrun` for a message whose child hung or
        died).

        Raises:
            WorkerPoolError: the children cannot start or keep dying on harmless input.
        """
        task, items = submitted.task, submitted.items
        results: list[Any] = [None] * len(items)
        pending = list(range(len(items)))
        first = submitted.futures or None
        isolate = False  # after a hung or crashed task: one message per task, to find the culprit
        if first is not None:
            self._await_start()
        while pending:
            if first is not None:
                futures, first = first, None
            else:
                groups = [[i] for i in pending[:1]] if isolate else self._groups(pending)
                pool = self._pool()
                try:
                    futures = [
                        (g, pool.submit(task, [items[i][1] for i in g])) for g in groups
                    ]
                    self._await_start()
                except BrokenProcessPool:
                    self._restart()
                    if not self._healthy():
                        raise WorkerPoolError("worker processes do not start") from None
                    continue
            done: set[int] = set()
            for group, fut in futures:
                try:
                    for i, result in zip(group, fut.result(timeout=self._timeout * len(group))):
                        results[i] = result
                        done.add(i)
                except FutureTimeout:
                    self._restart()
                    if len(group) == 1:
                        i = group[0]
                        log.warning("inbound %s took over %.0f s: %s", items[i][0],
                                    self._timeout, TOO_COMPLEX)
                        results[i] = Overrun(items[i][0],
                                             f"{TOO_COMPLEX}: over {self._timeout:g} s")
                        done.add(i)
                    isolate = True
                    break
                except BrokenProcessPool:
                    self._restart()
                    if isolate and len(group) == 1:
                        if not self._healthy():
                            raise WorkerPoolError("worker processes keep dying") from None
                        i = group[0]
                        log.warning("a worker process died on inbound %s: %s", items[i][0],
                                    TOO_COMPLEX)
                        results[i] = Overrun(items[i][0], f"{TOO_COMPLEX}: worker process died")
                        done.add(i)
                    isolate = True
                    break
            pending = [i for i in pending if i not in done]
        self._last_used = self._clock()  # idle counts from the end of the work
        return [r for r in results if r is not None]


def _widen_pipes(executor: ProcessPoolExecutor) -> None:
    """Give the pool's task and result pipes 1 MiB each instead of 64 KiB (Linux;
    private attributes: nothing happens where they are missing).

    A task of 16 mails, or their decisions, is often several hundred KiB. Through 64 KiB the
    writer blocks until the reader has taken the rest, and the parent's reading (or
    writing) thread takes the GIL again for every 64 KiB, waiting up to a switch interval
    (5 ms) each time behind the parent's main thread, while the child sits blocked."""
    size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size is None:
        return
    for conn in (getattr(getattr(executor, "_call_queue", None), "_writer", None),
                 getattr(getattr(executor, "_result_queue", None), "_reader", None)):
        if conn is not None:
            with suppress(OSError, ValueError, AttributeError):
                fcntl.fcntl(conn.fileno(), size, PIPE_BYTES)


def _prompt_threads() -> None:
    """Let this process's threads take turns with the GIL every `SWITCH_INTERVAL` instead of
    every 5 ms (Python's default): the pool's feeder and result threads wake on a pipe and
    then wait for the GIL behind a main thread that is busy writing the previous batch,
    while the children wait for their next task or to hand in their results."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


def _processes(executor: ProcessPoolExecutor) -> list[Any]:
    """The executor's child processes (a private attribute: empty if it is gone)."""
    return list((getattr(executor, "_processes", None) or {}).values())


@dataclass
class Submitted:
    """Work handed to the children, not yet collected: (inbound id, arguments) per item, and
    the task each group of them is handed to."""

    task: Task
    items: list[tuple[int, tuple[Any, ...]]]
    futures: list[tuple[list[int], Future[list[Any]]]]
