"""Composition root: builds the store, worker, intakes and sender from a Config and runs them.

This is the only place that wires objects together; everything else receives what it needs
as arguments. `run()` is the daemon: one asyncio process with

* the SMTP/LMTP listener (aiosmtpd, on an event loop of its own in a thread),
* one thread per IMAP mailbox (imapclient blocks),
* the worker loop (decides stored mail; woken by every intake),
* the outbox loop (sends due replies),
* the one-click unsubscribe endpoint when `news.http_enabled` (plain HTTP, on this loop),
  with /healthz, /readyz and /metrics and the monitor loop (alert mails) when
  `monitoring.enabled` (`mailbot.daemon_http`, `mailbot.health`, `mailbot.alerts`),
* the systemd watchdog.

SIGTERM/SIGINT: the listener stops taking mail (new DATA gets 421), the unsubscribe endpoint
stops listening (requests in progress get 5 s), IMAP threads finish the message in hand,
the worker finishes its batch, the sender finishes the message in flight and releases the
rest; then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from mailbot import memory, migrations, sdnotify
from mailbot.config import Config, read_secret
from mailbot.daemon_http import DaemonHttpServer, scraper
from mailbot.health import HealthState, Monitor, Readiness, imap_key
from mailbot.looplag import LoopLag
from mailbot.replies.conversation import ConversationRenderer
from mailbot.scheduler import Scheduler, digest_builder
from mailbot.ingest.imap import ImapPoller
from mailbot.ingest.intake import Intake
from mailbot.replies.outbox import OutboxDispatcher
from mailbot.replies.smtp import Transport, sending_transports
from mailbot.store import Store, new_lease_holder, utcnow
from mailbot.unsubscribe_http import UnsubscribeServer
from mailbot.worker import Worker

if TYPE_CHECKING:  # aiosmtpd is loaded only with the listener enabled (IMAP alone: not)
    from mailbot.ingest.lmtp import IntakeHandler, ListenerThread

log = logging.getLogger(__name__)
SCHEDULER_LEASE = "scheduler"


@dataclass
class Daemon:
    """The running pieces of `mailbot run`. Build with `Daemon.build(config)`."""

    config: Config
    store: Store
    worker: Worker
    dispatcher: OutboxDispatcher
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    thread_stop: threading.Event = field(default_factory=threading.Event)
    listener: ListenerThread | None = None
    handler: IntakeHandler | None = None
    unsubscribe_http: UnsubscribeServer | None = None
    loop_lag: LoopLag = field(default_factory=LoopLag)
    health: HealthState = field(default_factory=HealthState)
    monitor: Monitor | None = None
    # This daemon's name in store leases (the scheduler, IMAP mailboxes).
    holder: str = field(default_factory=new_lease_holder)
    _worker_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, config: Config, *, transport: Transport | None = None) -> Daemon:
        store = migrations.open_store(config)
        if store.is_sqlite:
            # Embedded mode is one process: leases left by a killed run have no holder.
            store.release_all_leases()
        out = config.outbound
        dispatcher = OutboxDispatcher(
            store,
            transport or sending_transports(config),
            batch=out.batch,
            concurrency=out.concurrency,
            per_domain=out.per_domain_concurrency,
            horizon=timedelta(hours=out.retry_horizon_hours),
            base_delay=out.retry_base_seconds,
            lease=timedelta(seconds=out.lease_seconds),
        )
        return cls(config, store, Worker.from_config(config, store), dispatcher)

    @property
    def listen_port(self) -> int | None:
        return self.listener.port if self.listener is not None else None

    @property
    def http_port(self) -> int | None:
        """The bound port of the one-click unsubscribe endpoint (None: not running)."""
        return self.unsubscribe_http.port if self.unsubscribe_http is not None else None

    async def run(self, *, install_signals: bool = True,
                  ready: Callable[[Daemon], None] | None = None) -> None:
        """Run until `stop` is set (or SIGTERM/SIGINT), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop.set)
        if self.stop.is_set():
            log.info("stop requested during start-up")

        def wake_worker() -> None:
            loop.call_soon_threadsafe(self._worker_wake.set)

        intake = Intake(self.store, wake=wake_worker)
        cfg = self.config
        if cfg.news.http_enabled:
            if not cfg.news.base_url:
                log.warning("news.http_enabled without news.base_url: mailings carry no "
                            "one-click link to this endpoint")
            self.unsubscribe_http = self._http_server()
            await self.unsubscribe_http.start()
        if cfg.monitoring.enabled and self.unsubscribe_http is None:
            self.unsubscribe_http = self._http_server()  # monitoring only, no unsubscribe
            await self.unsubscribe_http.start()
        if cfg.alerts.enabled and self.monitor is None:
            self.monitor = self._build_monitor()  # alerts without the HTTP routes
        if cfg.listener.enabled:
            from mailbot.ingest.lmtp import IntakeHandler, ListenerThread, RecipientPolicy

            addresses = cfg.listener.recipients or tuple(cfg.mailbox.own_addresses())
            self.handler = IntakeHandler(intake, RecipientPolicy(addresses),
                                         lmtp=cfg.listener.protocol == "lmtp")
            self.listener = ListenerThread(
                self.handler, cfg.listener.host, cfg.listener.port,
                lmtp=cfg.listener.protocol == "lmtp", max_bytes=cfg.listener.max_message_bytes,
            )
            await asyncio.to_thread(self.listener.start)
        threads = [self._start_imap(box, intake) for box in cfg.imap]
        tasks = [
            asyncio.create_task(self._worker_loop(), name="worker"),
            asyncio.create_task(self._outbox_loop(), name="outbox"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
            asyncio.create_task(self.loop_lag.run(self.stop), name="loop-lag"),
        ]
        if cfg.schedule.enabled:
            tasks.append(asyncio.create_task(self._schedule_loop(), name="schedule"))
        if self.monitor is not None:
            tasks.append(asyncio.create_task(self.monitor.run(self.stop), name="monitor"))
        sdnotify.notify("READY=1\nSTATUS=taking mail")
        log.info("mailbot running (store %s, outbound %s)", self.store.engine.url.render_as_string(
            hide_password=True), cfg.outbound.mode)
        if not cfg.conversation.verify_staff:
            log.warning("conversation.verify_staff = false: a From header alone makes a staff "
                        "reply; anyone can forge one")
        elif not cfg.conversation.authserv_ids:
            log.info("conversation.authserv_ids is empty: only notices' reply tokens prove a "
                     "staff reply")
        if ready is not None:
            ready(self)
        try:
            await self.stop.wait()
        finally:
            sdnotify.notify("STOPPING=1")
            log.info("stopping: no new mail; finishing what is in flight")
            self.thread_stop.set()
            if self.handler is not None:
                self.handler.accepting = False
            closing = (asyncio.create_task(asyncio.to_thread(self.listener.close))
                       if self.listener is not None else None)
            closing_http = (asyncio.create_task(self.unsubscribe_http.close())
                            if self.unsubscribe_http is not None else None)
            self._worker_wake.set()
            self._outbox_wake.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in threads:
                await asyncio.to_thread(t.join, 10)
                if t.is_alive():
                    log.warning("%s did not stop within 10 s; leaving it behind", t.name)
            if closing is not None:
                await closing
            if closing_http is not None:
                await closing_http
            await asyncio.to_thread(self.dispatcher.close)
            await asyncio.to_thread(self.worker.close)
            self.store.close()
            log.info("stopped (event-loop lag: max %.1f ms, p99 %.1f ms over %d samples)",
                     self.loop_lag.max_ms, self.loop_lag.percentile_ms(99),
                     len(self.loop_lag.samples))

    def _start_imap(self, box: object, intake: Intake) -> threading.Thread:
        from mailbot.config import ImapMailboxConfig

        assert isinstance(box, ImapMailboxConfig)
        password = read_secret(box.password_env, box.password_credential)
        if box.security == "none":
            log.warning("imap %s: plain connection without TLS (security = \"none\")", box.name)
        elif not box.verify_tls:
            log.warning("imap %s: verify_tls = false: the certificate is NOT verified", box.name)
        key = imap_key(box)
        poller = ImapPoller(box, intake, self.store, self.thread_stop, password=password,
                            holder=self.holder,
                            limits=self.config.limits,
                            on_cycle=lambda: self.health.imap_cycle(key),
                            on_down=lambda error: self.health.imap_down(key, error))
        thread = threading.Thread(target=poller.run, name=f"imap-{box.name}", daemon=True)
        thread.start()
        return thread

    async def _worker_loop(self) -> None:
        cfg = self.config.worker
        failures = 0
        try:  # mail may be waiting: the children start while the intakes connect
            await asyncio.to_thread(self.worker.warm)
        except Exception:  # noqa: BLE001 - the first batch starts them (or reports why not)
            log.warning("could not start the decision processes yet", exc_info=True)
        busy = False
        while not self.stop.is_set():
            self._worker_wake.clear()
            try:
                n = await asyncio.to_thread(self.worker.run_once, cfg.batch)
                failures = 0
                self.health.worker_done()
            except Exception:  # noqa: BLE001 - e.g. the database is briefly down
                failures += 1
                delay = min(60.0, 2.0 ** (failures - 1))
                log.exception("worker: batch failed (%d in a row); retrying in %.0f s",
                              failures, delay)
                n = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
            if n:
                busy = True
                self._outbox_wake.set()
                continue
            if busy:  # a burst is over: what it freed goes back to the system
                busy = False
                await asyncio.to_thread(memory.trim)
            if self.worker.pool is not None and cfg.pool_idle_seconds:
                await asyncio.to_thread(self.worker.rest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._worker_wake.wait(), cfg.poll_seconds)

    async def _outbox_loop(self) -> None:
        while not self.stop.is_set():
            self._outbox_wake.clear()
            try:
                n = await asyncio.to_thread(self.dispatcher.send_due, self.thread_stop)
            except Exception:  # noqa: BLE001
                log.exception("outbox: batch failed; retrying")
                n = 0
                await asyncio.sleep(1.0)
            if n:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_wake.wait(), 1.0)

    async def _schedule_loop(self) -> None:
        """Queue the timed mails that are due (reminders, escalations, waiting tickets, the
        digest, notices, scheduled campaigns) every `schedule.tick_seconds`.

        Of several daemons on one database, the holder of the store lease "scheduler" does
        it (lease: three ticks); another takes over when it dies. Should two ever overlap (a
        tick longer than the lease), the outbox's unique purposes still send nothing twice.
        """
        def build() -> Scheduler:  # compiles templates and may read the store: off the loop
            return Scheduler(
                self.config, self.store,
                ConversationRenderer(self.config, self.worker.decider.token_secret()),
                digest_builder(self.config))

        tick = self.config.schedule.tick_seconds
        holder = self.holder
        scheduler = await asyncio.to_thread(build)
        try:
            while not self.stop.is_set():
                try:
                    # SQLite is one process (no other scheduler): no lease to write.
                    if self.store.is_sqlite or await asyncio.to_thread(
                            self.store.acquire_lease, SCHEDULER_LEASE, holder, max(1.0, 3 * tick)):
                        if await asyncio.to_thread(scheduler.run_due, utcnow()):
                            self._outbox_wake.set()
                except Exception:  # noqa: BLE001 - the store is away or a bug: try next tick
                    log.exception("scheduled work failed; retrying at the next tick")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), tick)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release_lease, SCHEDULER_LEASE, holder)

    def _http_server(self) -> DaemonHttpServer:
        """The loopback HTTP endpoint: unsubscribe (news.http_enabled) and, with
        monitoring.enabled, /healthz, /readyz and /metrics (the monitor is built here)."""
        cfg = self.config
        if not cfg.monitoring.enabled:
            return DaemonHttpServer.for_daemon(cfg, self.store, ready=None, scrape=None)
        self.monitor = self._build_monitor()
        return DaemonHttpServer.for_daemon(
            cfg, self.store, ready=self.monitor.ready,
            scrape=scraper(self.store, self.loop_lag, cfg.monitoring.store_timeout_seconds))

    def _build_monitor(self) -> Monitor:
        """The readiness checks, with the alerts when `alerts.enabled`."""
        cfg = self.config
        readiness = Readiness(cfg, self.store, self.health, holder=self.holder, listener=lambda: (
            (cfg.listener.host, self.listener.port) if self.listener is not None
            and self.listener.port is not None else None))
        alerts = None
        if cfg.alerts.enabled:
            from mailbot.alerts import Alerts

            alerts = Alerts(cfg, self.store)
        return Monitor(readiness, alerts=alerts.run if alerts else None,
                       forget=alerts.forget if alerts else lambda: None,
                       queued=self._outbox_wake.set)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while not self.stop.is_set():
            sdnotify.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), interval)


async def run(config: Config, early_stop: threading.Event | None = None) -> None:
    """`mailbot run`: build the daemon and run it until SIGTERM/SIGINT (also one that came
    in while it was starting: `early_stop`)."""
    daemon = await asyncio.to_thread(Daemon.build, config)
    memory.settled()
    if early_stop is not None and early_stop.is_set():
        daemon.stop.set()
    await daemon.run()
