"""The daemon's loopback HTTP endpoint: RFC 8058 one-click unsubscribe plus monitoring.

`DaemonHttpServer` is the strict asyncio server of `mailbot.unsubscribe_http` (its limits:
head 8 KiB, body 1 KiB, 10 s, one request per connection, 64 connections) with three more
routes when monitoring is on (`monitoring.enabled`):

* ``GET /healthz``: 200 ``{"status": "alive"}`` — the event loop answers.
* ``GET /readyz``: 200 or 503 with the checks and their reasons (`mailbot.health`).
* ``GET /metrics``: the Prometheus text format (`mailbot.metrics`).

Another method on them gets 405 (``Allow: GET``). Without ``news.http_enabled`` the
unsubscribe routes answer 404.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from mailbot import metrics
from mailbot.config import Config
from mailbot.health import Report
from mailbot.looplag import LoopLag
from mailbot.store import Store, utcnow
from mailbot.unsubscribe_http import (
    NOT_FOUND,
    Request,
    Response,
    UnsubscribeServer,
    _Reject,
    _text,
    read_request,
)

MONITORING_PATHS = ("/healthz", "/readyz", "/metrics")


class DaemonHttpServer(UnsubscribeServer):
    """The unsubscribe endpoint with the monitoring routes; `ready` runs the readiness
    checks, `scrape` returns the metrics text (both None: monitoring off)."""

    def __init__(self, store: Store, host: str, port: int, *, unsubscribe: bool = True,
                 ready: Callable[[], Awaitable[Report]] | None = None,
                 scrape: Callable[[], Awaitable[bytes]] | None = None, **kwargs: Any) -> None:
        super().__init__(store, host, port, **kwargs)
        self._unsubscribe = unsubscribe
        self._ready = ready
        self._scrape = scrape

    @classmethod
    def for_daemon(cls, config: Config, store: Store, *,
                   ready: Callable[[], Awaitable[Report]] | None,
                   scrape: Callable[[], Awaitable[bytes]] | None) -> DaemonHttpServer:
        news = config.news
        return cls(store, news.http_host, news.http_port, unsubscribe=news.http_enabled,
                   ready=ready, scrape=scrape, base_url=news.base_url, list_name=news.from_name)

    async def _answer(self, reader: asyncio.StreamReader) -> Response | None:
        try:
            request = await read_request(reader)
            if request is None:
                return None
            if request.path in MONITORING_PATHS and self._ready is not None:
                return await self._monitoring(request)
            if not self._unsubscribe:
                return _text(404, NOT_FOUND)
            return await self._route_request(request)
        except _Reject as reject:
            return reject.response

    async def _monitoring(self, request: Request) -> Response:
        if request.method != "GET":
            return _text(405, "Method not allowed", ("Allow", "GET"))
        if request.path == "/healthz":
            return _json(200, {"status": "alive"})
        if request.path == "/readyz":
            assert self._ready is not None
            report = await self._ready()
            return _json(200 if report.ready else 503, report.as_json())
        assert self._scrape is not None
        return Response(200, await self._scrape(), metrics.CONTENT_TYPE)


def _json(status: int, value: dict[str, Any]) -> Response:
    body = (json.dumps(value, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    return Response(status, body, "application/json")


def scraper(store: Store, loop_lag: LoopLag, timeout: float
            ) -> Callable[[], Awaitable[bytes]]:
    """`/metrics`: read the queue depths from the store (within `timeout`; on failure the
    gauges keep their last values and `mailbot_store_up` is 0), then render the registry."""

    def read() -> None:
        now = utcnow()
        metrics.set_queues(store.count_inbound(), store.count_outbox(),
                           store.oldest_due_outbox(now), now)

    async def scrape() -> bytes:
        try:
            await asyncio.wait_for(asyncio.to_thread(read), timeout)
            metrics.STORE_UP.set(1)
        except Exception:  # noqa: BLE001 - the store is away: say so in the metrics
            metrics.STORE_UP.set(0)
        metrics.LOOP_LAG_MAX.set(loop_lag.worst)
        return metrics.render()

    return scrape
