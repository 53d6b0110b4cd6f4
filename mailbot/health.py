"""Readiness of the running daemon: what `/readyz` answers and what the alerts look at.

The daemon's loops report facts to a `HealthState` (an IMAP cycle completed, a connection
was lost, the worker finished a pass); `Readiness.check()` combines them with live probes
(a query to the store, a TCP connection to the listener, the outbox's oldest due mail) into a
`Report`: ready only when every check passes, each with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mailbot import metrics
from mailbot.config import Config, ImapMailboxConfig
from mailbot.store import Store, utcnow

log = logging.getLogger(__name__)


@dataclass
class ImapHealth:
    """One mailbox's poller as last reported. Times: wall clock (UTC)."""

    connected: bool = False
    last_ok: datetime | None = None  # the last completed cycle
    down_since: datetime | None = None  # not connected since (start, or the loss)
    last_error: str = ""


@dataclass
class HealthState:
    """Facts reported by the daemon's threads and tasks (guarded by a lock)."""

    started: datetime = field(default_factory=utcnow)
    clock: Callable[[], datetime] = utcnow
    imap: dict[str, ImapHealth] = field(default_factory=dict)
    worker_pass: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def imap_cycle(self, key: str) -> None:
        """A poller completed a cycle (it is connected and took in what was there)."""
        with self._lock:
            box = self.imap.setdefault(key, ImapHealth())
            box.connected, box.last_ok, box.down_since = True, self.clock(), None

    def imap_down(self, key: str, error: str = "") -> None:
        """A poller lost its connection or failed to connect."""
        with self._lock:
            box = self.imap.setdefault(key, ImapHealth(down_since=self.started))
            if box.connected or box.down_since is None:
                box.down_since = self.clock()
            box.connected, box.last_error = False, error[:300]

    def worker_done(self) -> None:
        """The worker finished a pass (with or without mail)."""
        self.worker_pass = self.clock()

    def mailbox(self, key: str) -> ImapHealth:
        with self._lock:
            box = self.imap.get(key)
            return (ImapHealth(**vars(box)) if box is not None
                    else ImapHealth(down_since=self.started))


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of one readiness check, and the facts the alerts need."""

    checks: tuple[Check, ...]
    at: datetime
    store_ok: bool = False
    # For the alerts (None: not known, e.g. the store is away).
    listener_refused: bool | None = None
    # Per mailbox: how long without a cycle, beyond the expected period while connected.
    imap_silent: dict[str, timedelta | None] = field(default_factory=dict)
    imap_connected: dict[str, bool] = field(default_factory=dict)
    outbox_oldest_due: datetime | None = None
    quarantined: int | None = None

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not ready",
                "checked_at": self.at.isoformat(timespec="seconds"),
                "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks}}


def imap_key(box: ImapMailboxConfig) -> str:
    """The poller's store key for `box` (its checkpoint and lease name)."""
    return f"imap:{box.name}:{box.folder}"


class Readiness:
    """Runs the checks; `listener` gives the bound (host, port) of the listener, None when
    it is not bound."""

    def __init__(self, config: Config, store: Store, state: HealthState, *,
                 listener: Callable[[], tuple[str, int] | None] = lambda: None,
                 holder: str = "") -> None:
        self.config = config
        self.store = store
        self.state = state
        self.listener = listener
        self.holder = holder

    async def check(self) -> Report:
        mon = self.config.monitoring
        now = self.state.clock()
        checks: list[Check] = []
        facts: dict[str, Any] = {}
        try:
            facts = await asyncio.wait_for(asyncio.to_thread(self._read_store, now),
                                           mon.store_timeout_seconds)
            checks.append(Check("store", True, "answers"))
        except TimeoutError:
            checks.append(Check("store", False,
                                f"no answer within {mon.store_timeout_seconds:g} s"))
        except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
            checks.append(Check("store", False, f"unreachable: {type(exc).__name__}"))
        store_ok = checks[0].ok
        refused: bool | None = None
        if self.config.listener.enabled:
            refused = not await self._listener_accepts()
            checks.append(Check("listener", not refused,
                                "refuses connections" if refused else "accepts connections"))
        silent: dict[str, timedelta | None] = {}
        connected: dict[str, bool] = {}
        for box in self.config.imap:
            check, silent[box.name] = self._imap(box, now, facts.get("holders", {}))
            checks.append(check)
            connected[box.name] = self.state.mailbox(imap_key(box)).connected
        stall = timedelta(seconds=mon.worker_stall_seconds)
        beat = self.state.worker_pass or self.state.started
        checks.append(Check("worker", now - beat <= stall,
                            f"last pass {age_text(now - beat)} ago" if self.state.worker_pass
                            else f"no pass yet ({age_text(now - beat)} since start)"))
        oldest: datetime | None = facts.get("oldest_due")
        if not store_ok:
            checks.append(Check("outbox", False, "unknown: the store is unreachable"))
        elif oldest is None:
            checks.append(Check("outbox", True, "nothing due"))
        else:
            age = now - oldest
            limit = timedelta(minutes=mon.outbox_stuck_minutes)
            checks.append(Check("outbox", age <= limit,
                                f"oldest due mail waiting {age_text(age)} (limit {age_text(limit)})"))
        return Report(tuple(checks), now, store_ok, refused, silent, connected,
                      oldest if store_ok else None, facts.get("quarantined"))

    def _read_store(self, now: datetime) -> dict[str, Any]:
        self.store.ping()
        holders = {}
        if not self.store.is_sqlite:  # another daemon may hold a mailbox (standby here)
            holders = {box.name: self.store.lease_holder(imap_key(box), now)
                       for box in self.config.imap}
        return {"oldest_due": self.store.oldest_due_outbox(now),
                "quarantined": self.store.count_inbound().get("quarantined", 0),
                "holders": holders}

    def _imap(self, box: ImapMailboxConfig, now: datetime, holders: dict[str, str | None]
              ) -> tuple[Check, timedelta | None]:
        """The mailbox's check and how long it has gone without a cycle beyond the expected
        IDLE/poll period (None: polled by another daemon)."""
        name = f"imap:{box.name}"
        holder = holders.get(box.name)
        if holder and holder != self.holder:
            return Check(name, True, "polled by another daemon"), None
        h = self.state.mailbox(imap_key(box))
        silent = now - (h.last_ok or self.state.started)
        grace = timedelta(seconds=self.config.monitoring.imap_grace_seconds)
        if h.connected:
            # A cycle ends at least every IDLE period (or poll interval); a read times out.
            period = timedelta(seconds=max(min(box.idle_seconds, box.timeout_seconds / 2),
                                           box.poll_seconds) + box.timeout_seconds)
            ok = silent <= period + grace
            return (Check(name, ok, f"connected, last cycle {age_text(silent)} ago"),
                    max(timedelta(0), silent - period))
        down = now - (h.down_since or self.state.started)
        error = f" ({h.last_error})" if h.last_error else ""
        return Check(name, down <= grace,
                     f"not connected for {age_text(down)}, retrying{error}"), silent

    async def _listener_accepts(self) -> bool:
        bound = self.listener()
        if bound is None:
            return False
        host, port = bound
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        return True


def age_text(delta: timedelta) -> str:
    """A duration for people: seconds, minutes, or hours and minutes."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Monitor:
    """Checks readiness every `monitoring.check_seconds` and hands each report to `alerts`.

    Of several daemons on one database, only the holder of the store lease ``alerts``
    (three check periods) sends alerts; on SQLite there is one daemon and no lease.
    """

    LEASE = "alerts"

    def __init__(self, readiness: Readiness, *,
                 alerts: Callable[[Report], list[str]] | None = None,
                 forget: Callable[[], None] = lambda: None,
                 queued: Callable[[], None] = lambda: None) -> None:
        self.readiness = readiness
        self.alerts = alerts
        self.forget = forget
        self.queued = queued
        self.last: Report | None = None
        self._held = False
        self._failing: tuple[str, ...] = ()

    async def ready(self) -> Report:
        """Run the checks now (`/readyz`)."""
        report = await self.readiness.check()
        metrics.READY.set(1 if report.ready else 0)
        self.last = report
        return report

    async def run(self, stop: asyncio.Event) -> None:
        period = self.readiness.config.monitoring.check_seconds
        while not stop.is_set():
            try:
                report = await self.ready()
                failing = tuple(c.name for c in report.checks if not c.ok)
                if failing != self._failing:  # log changes, not every period
                    if failing:
                        log.warning("not ready: %s", "; ".join(
                            f"{c.name}: {c.detail}" for c in report.checks if not c.ok))
                    else:
                        log.info("ready again")
                    self._failing = failing
                if self.alerts is not None and await asyncio.to_thread(self._may_alert, period):
                    if await asyncio.to_thread(self.alerts, report):
                        self.queued()
            except Exception:  # noqa: BLE001 - e.g. the store went away mid-way: next period
                log.exception("monitoring check failed; retrying at the next period")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        store, holder = self.readiness.store, self.readiness.holder
        if self._held and not store.is_sqlite:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.release_lease, self.LEASE, holder)

    def _may_alert(self, period: float) -> bool:
        store = self.readiness.store
        held = store.is_sqlite or store.acquire_lease(self.LEASE, self.readiness.holder,
                                                      max(3.0, 3 * period))
        if held and not self._held:
            self.forget()  # another daemon may have queued alerts while it held the lease
        self._held = held
        return held
