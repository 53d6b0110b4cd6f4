#!/usr/bin/env python3
"""Outbox throughput: N queued replies delivered by OutboxDispatcher to a local aiosmtpd sink.

    .venv/bin/python bench/outbox_throughput.py [--n 5000] [--size 2048] [--batch 50]

Creates a store on a temporary SQLite file (WAL, as the daemon runs it),
enqueues N OutgoingMail rows in one transaction, then calls
``OutboxDispatcher(store, SmtpSender(...)).send_due()`` until nothing is left. Prints
mails/s (target >= 300/s), the number of SMTP connections the sink saw (target: 1, the
sender reuses its connection), and a split of the wall time into claim / SMTP send /
record_attempts (the commit of outcomes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailbot.migrations import open_store
from mailbot.config import Config, OutboundConfig, StoreConfig
from mailbot.replies.outbox import OutboxDispatcher
from mailbot.replies.smtp import SmtpSender
from mailbot.store import OutgoingMail, Store
from tests.fixtures.servers import SmtpSink

TARGET_PER_S = 300.0
TIME_LIMIT_S = 180.0


def enqueue(store: Store, n: int, size: int) -> None:
    body = ("Dobrý den, děkujeme za zprávu; požadavek jsme zaevidovali.\r\n" * (size // 60 + 1))
    with store.transaction() as tx:
        for i in range(n):
            mid = f"<bench-{i}@estelar.example>"
            raw = (
                f"From: ESTELAR podpora <podpora@estelar.example>\r\nTo: c{i}@example.org\r\n"
                f"Subject: [#T-2026-{i:06d}] Potvrzeni\r\nMessage-ID: {mid}\r\n"
                f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                f"\r\n{body}"
            ).encode()
            tx.enqueue(
                OutgoingMail(f"bench:{i}", mid, "ack", "podpora@estelar.example",
                             (f"c{i}@example.org",), raw),
                ticket_id=None, inbound_id=None,
            )


class Timed:
    """Wraps a callable and adds up its wall time."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--size", type=int, default=2048, help="approximate body bytes per reply")
    p.add_argument("--batch", type=int, default=OutboundConfig().batch,
                   help="rows claimed per send_due() (the daemon's outbound.batch)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailbot-outbox-bench-") as tmp:
        cfg = Config(root=Path(tmp), store=StoreConfig(url=f"sqlite:///{tmp}/bench.db"))
        store = open_store(cfg)
        t0 = time.perf_counter()
        enqueue(store, args.n, args.size)
        t_enqueue = time.perf_counter() - t0
        with SmtpSink() as sink:
            sender = SmtpSender(OutboundConfig(mode="smtp", host="127.0.0.1", port=sink.port,
                                               security="none"))
            dispatcher = OutboxDispatcher(store, sender, batch=args.batch)
            # Time the three parts of the loop without changing the code under test.
            claim = store.claim_due_outbox = Timed(store.claim_due_outbox)  # type: ignore[method-assign]
            mark = store.record_attempts = Timed(store.record_attempts)  # type: ignore[method-assign]
            send = sender.send = Timed(sender.send)  # type: ignore[method-assign]
            started = time.perf_counter()
            rounds = 0
            while time.perf_counter() - started < TIME_LIMIT_S and rounds < args.n + 10:
                rounds += 1
                if dispatcher.send_due() == 0:
                    break
            elapsed = time.perf_counter() - started
            sender.close()
            sink.wait_for(min(args.n, len(sink.messages)), 10)
            received = len(sink.messages)
            unique = len({m.message_id for m in sink.messages})
            counts = store.count_outbox()
            connections = sink.connection_count
        store.close()
    sent = counts.get("sent", 0)
    rate = sent / elapsed if elapsed else 0.0
    print(f"outbox: {args.n} replies of ~{args.size} B queued in {t_enqueue:.2f} s; "
          f"send_due(batch={args.batch}) x {rounds}")
    print(f"delivered: {sent} sent in {elapsed:.2f} s = {rate:.0f} mails/s "
          f"(target >= {TARGET_PER_S:.0f}/s: {'OK' if rate >= TARGET_PER_S else 'MISSED'})")
    print(f"sink: {received} messages ({unique} distinct Message-IDs) over {connections} "
          f"SMTP connection(s); outbox states {counts}")
    other = elapsed - claim.seconds - send.seconds - mark.seconds
    for name, t in (("claim_due_outbox", claim), ("SMTP send", send), ("record_attempts", mark)):
        per = t.seconds / t.calls * 1000 if t.calls else 0.0
        print(f"  {name:17s} {t.seconds:6.2f} s  ({t.calls} calls, {per:.2f} ms/call, "
              f"{t.seconds / elapsed:.0%})")
    print(f"  {'other':17s} {other:6.2f} s")
    ok = sent == args.n and received == args.n and unique == args.n
    if not ok:
        print("PROBLEM: not every reply was delivered exactly once")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
