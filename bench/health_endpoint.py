"""Cost of monitoring: /readyz and /metrics round trips of a running daemon (in-process,
SQLite) over an outbox of --rows sent mails, the store queries behind them, and one counter
increment on the mail path.

    .venv/bin/python bench/health_endpoint.py [--rows 100000] [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from mailbot import config as config_mod  # noqa: E402
from mailbot import metrics  # noqa: E402
from mailbot.app import Daemon  # noqa: E402
from mailbot.migrations import open_store  # noqa: E402
from mailbot.store import OutboxMessage, utcnow  # noqa: E402


def get(port: int, path: str) -> float:
    start = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status in (200, 503), r.status
    return time.perf_counter() - start


def fill(cfg: config_mod.Config, rows: int) -> None:
    store = open_store(cfg)
    now = utcnow()
    with store.engine.begin() as conn:
        for start in range(0, rows, 10_000):
            conn.execute(insert(OutboxMessage), [
                {"purpose": f"bench:{i}", "message_id": f"<b{i}@x.example>", "kind": "ack",
                 "mail_from": "a@x.example", "rcpt_to": ["b@y.example"], "raw": b"x",
                 "state": "sent", "attempts": 1, "next_attempt_at": now, "created_at": now,
                 "priority": 0} for i in range(start, min(rows, start + 10_000))])
    t = time.perf_counter()
    for _ in range(20):
        store.oldest_due_outbox(utcnow())
    print(f"oldest_due_outbox over {rows} rows: {(time.perf_counter() - t) / 20 * 1000:.2f} ms")
    t = time.perf_counter()
    for _ in range(20):
        store.purposes_with_prefix("alert:quarantine:", limit=1)
    print(f"purposes_with_prefix over {rows} rows: "
          f"{(time.perf_counter() - t) / 20 * 1000:.2f} ms (read once per daemon start)")
    store.close()


async def measure(cfg: config_mod.Config, n: int) -> None:
    daemon = await asyncio.to_thread(Daemon.build, cfg)
    started = asyncio.Event()
    task = asyncio.create_task(daemon.run(install_signals=False, ready=lambda d: started.set()))
    await started.wait()
    assert daemon.http_port is not None
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            times = sorted([await asyncio.to_thread(get, daemon.http_port, path)
                            for _ in range(n)])
            print(f"GET {path:9s} n={n}: median {statistics.median(times) * 1000:.2f} ms, "
                  f"p99 {times[int(0.99 * (n - 1))] * 1000:.2f} ms")
    finally:
        daemon.stop.set()
        await task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = config_mod.load()
        cfg = base.model_copy(update={
            "store": base.store.model_copy(update={"url": f"sqlite:///{tmp}/bench.db"}),
            "outbound": base.outbound.model_copy(update={"directory": f"{tmp}/sent"}),
            "listener": base.listener.model_copy(update={"port": 0}),
            "news": base.news.model_copy(update={"http_port": 0}),
            "monitoring": base.monitoring.model_copy(update={"enabled": True}),
            "worker": base.worker.model_copy(update={"processes": 0}),
        })
        fill(cfg, args.rows)
        asyncio.run(measure(cfg, args.n))
    counter = metrics.RECEIVED.labels("bench")
    t = time.perf_counter()
    for _ in range(1_000_000):
        counter.inc()
    print(f"counter increment: {time.perf_counter() - t:.2f} µs per call (1,000,000 calls)")


if __name__ == "__main__":
    main()
