#!/usr/bin/env python3
"""News campaign throughput: `mailbot news send` queueing, then `mailbot run` sending to a
local aiosmtpd sink, throttling off (`news.rate_per_minute = 0`).

    .venv/bin/python bench/news_throughput.py [--n 10000] [--keep DIR]

Everything is on 127.0.0.1: an aiosmtpd sink in this process (tests.fixtures.servers) as
the relay, and the daemon as a subprocess, `python -m mailbot run --config TMP.toml`, with a
temporary SQLite store (WAL, as the daemon syncs it), no listener, no scheduler. The registry
(100 HOTLINE licenses, 1 NONE) and N contacts over 50 domains (plus 2 % unsubscribed and 1 %
without support, who must get nothing) are written through the Store API
(tests/e2e/test_news_crash.prepare_campaign), then the campaign (templates/news/example.md,
audience "supported") is queued with `mailbot news send` while the daemon is not running.
Then the daemon starts and sends the outbox (`outbound.concurrency` = 4 connections, at most 2
to one of the 50 recipient domains). Printed:

* queueing: recipients/s of `news send` (render + one outbox row per recipient);
* sending: mails/s from the first to the last arrival at the sink, target >= 300/s; also
  from the daemon's start to the last arrival;
* peak RSS (VmHWM) of the daemon and of each child process, sampled every 0.1 s
  (tests.fixtures.bombs.PeakRss); target: together < 200 MB. The decision processes start
  only with the first inbound mail (none arrives here); each adds about 66 MB while they run
  (`worker.pool_idle_seconds`);
* checks: one mail per eligible recipient, distinct Message-IDs, SMTP connections used,
  SIGTERM -> exit 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.corpus import measure_this_tree  # noqa: E402

measure_this_tree()

from tests.e2e.processes import DaemonProcess, db_rows
from tests.e2e.test_news_crash import prepare_campaign
from tests.fixtures.bombs import PeakRss
from tests.fixtures.servers import SmtpSink

SEND_TARGET_PER_S = 300.0
RSS_TARGET_MB = 200.0
TIME_LIMIT_S = 300.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process so far, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="eligible recipients")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the store, config and daemon log in this (new) directory")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-news-bench-"))
    sink = SmtpSink().start()
    daemon: DaemonProcess | None = None
    ok = True
    try:
        t = time.monotonic()
        cfg, people, queue_s = prepare_campaign(
            tmp, sink.port, n_eligible=args.n, n_unsubscribed=args.n // 50,
            n_ineligible=args.n // 100)
        setup_s = time.monotonic() - t - queue_s
        n = len(people.eligible)
        print(f"contacts: {n} eligible, {len(people.unsubscribed)} unsubscribed, "
              f"{len(people.ineligible)} without support (registry + contacts + "
              f"unsubscriptions in {setup_s:.1f} s)")
        print(f"queueing: news send queued {n} in {queue_s:.1f} s = {n / queue_s:.0f} recipients/s")

        daemon = DaemonProcess(cfg, tmp / "daemon.log")
        started, own_cpu = time.monotonic(), time.process_time()
        proc = daemon.start()
        rss = PeakRss(proc.pid).start()
        try:
            sink.wait_for(n, timeout=TIME_LIMIT_S)
        except TimeoutError as exc:
            print(f"FAILED: {exc}")
            ok = False
        busy_s, wall_s = cpu_seconds(proc.pid), time.monotonic() - started
        sink_cpu_s = time.process_time() - own_cpu
        rss.stop()
        code = daemon.stop(signal.SIGTERM)

        messages = sink.messages
        if not messages:
            print(f"FAILED: nothing arrived at the sink\n{daemon.log_tail()}")
            return 1
        first, last = messages[0].received_at, messages[-1].received_at
        span = max(last - first, 1e-9)
        rate = len(messages) / span
        recipients = {m.rcpt_tos[0].lower() for m in messages}
        ids = {m.message_id for m in messages}
        states: dict[str, int] = dict(db_rows(tmp / "mailbot.db",
                              "select state, count(*) from outbox group by state"))
        children = sorted(rss.children.items())
        total_mb = rss.own_mb + sum(mb for _, (_, mb) in children)
        rate_ok = rate >= SEND_TARGET_PER_S
        rss_ok = total_mb < RSS_TARGET_MB
        print(f"sending: {len(messages)} mails in {span:.1f} s from first to last arrival = "
              f"{rate:.0f} mails/s (target >= {SEND_TARGET_PER_S:.0f}/s: "
              f"{'ok' if rate_ok else 'MISSED'}); from daemon start "
              f"{last - started:.1f} s = {len(messages) / (last - started):.0f} mails/s")
        print(f"daemon CPU (user + system, main process) {busy_s:.1f} s over {wall_s:.1f} s = "
              f"{100 * busy_s / wall_s:.0f} % of a core, {1000 * busy_s / len(messages):.2f} ms "
              f"per mail; this process (the sink, RSS sampling) {sink_cpu_s:.1f} s = "
              f"{100 * sink_cpu_s / wall_s:.0f} %")
        print(f"peak RSS (VmHWM): daemon {rss.own_mb:.0f} MB" + "".join(
            f", {label} {mb:.0f} MB" for _, (label, mb) in children)
            + f"; together {total_mb:.0f} MB (target < {RSS_TARGET_MB:.0f} MB: "
              f"{'ok' if rss_ok else 'MISSED'})")
        exact = (recipients == set(people.eligible) and len(messages) == n == len(ids))
        print(f"checks: {len(recipients)} distinct recipients, {len(ids)} distinct Message-IDs, "
              f"{'exactly the eligible ones' if exact else 'NOT exactly the eligible ones'}; "
              f"{sink.connection_count} SMTP connection(s); outbox {states}; "
              f"SIGTERM -> exit {code}")
        ok = ok and rate_ok and rss_ok and exact and code == 0
    finally:
        if daemon is not None:
            daemon.kill_if_running()
        sink.stop()
        if args.keep is not None:
            shutil.copytree(tmp, args.keep)
            print(f"kept in {args.keep}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
