"""Retention on a generated SQLite store: `mailbot.retention.purge` dry run and real runs
(one batch each, as the scheduler does) over N decided messages, half of them on tickets
closed long ago with an attachment file each, plus orphan files. Prints ms per run and
rows/files per second. Usage: bench/retention.py [--n 20000] [--batch 1000]"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import update  # noqa: E402

from mailbot import config as config_mod  # noqa: E402
from mailbot import migrations  # noqa: E402
from mailbot.attachments import AttachmentStore  # noqa: E402
from mailbot.ingest.intake import save_raw_many  # noqa: E402
from mailbot.retention import purge  # noqa: E402
from mailbot.store import InboundMessage, Store, Ticket, TicketAttachment  # noqa: E402

NOW = datetime(2027, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=400)


def build(root: Path, n: int) -> tuple[config_mod.Config, Store]:
    cfg = config_mod.Config().model_copy(update={
        "store": config_mod.StoreConfig(url=f"sqlite:///{root / 'm.db'}",
                                        attachments_dir=str(root / "files")),
    })
    store = Store.from_url(cfg.database_url)
    migrations.upgrade(store.engine)
    body = b"x" * 4000
    mails = [(b"Message-ID: <%d@bench>\r\nFrom: a%d@b.cz\r\n\r\n" % (i, i) + body, "bench")
             for i in range(n)]
    for start in range(0, n, 2000):
        save_raw_many(store, mails[start:start + 2000], received_at=OLD)
    files = AttachmentStore(cfg.path(cfg.store.attachments_dir))
    with store.session() as s:
        s.execute(update(InboundMessage).values(state="decided", decided_at=OLD))
        for i in range(1, n // 2 + 1):
            t = Ticket(number=f"T-2026-{i:06d}", year=2026, seq=i, inbound_id=i,
                       customer_email="a@b.cz", subject="s", priority="normal", state="closed",
                       opened_at=OLD, deadline=OLD, closed_at=OLD + timedelta(days=1))
            s.add(t)
            s.flush()
            saved = files.save(f"{i}.log", "text/plain", b"%d " % i * 2500)
            s.add(TicketAttachment(ticket_id=t.id, inbound_id=i, filename=saved.filename,
                                   content_type=saved.content_type, size=saved.size,
                                   sha256=saved.sha256, created_at=OLD))
    for i in range(n // 10):
        files.save("orphan", "text/plain", b"orphan %d " % i * 1000)
    then = time.time() - 3 * 86_400
    for f in (root / "files").rglob("*"):
        if f.is_file():
            os.utime(f, (then, then))
    return cfg, store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg, store = build(Path(tmp), args.n)
        print(f"built {args.n} messages, {args.n // 2} closed tickets with a file each, "
              f"{args.n // 10} orphans in {time.perf_counter() - t0:.1f} s")
        cfg = cfg.model_copy(update={"retention": config_mod.RetentionConfig(
            raw_days=30, attachment_days=30, batch=args.batch)})
        t0 = time.perf_counter()
        dry = purge(cfg, store, NOW, dry_run=True)
        print(f"dry run (one batch): {(time.perf_counter() - t0) * 1000:.0f} ms: {dry}")
        runs, totals, worst = 0, [0, 0, 0], 0.0
        t_all = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            r = purge(cfg, store, NOW)
            worst = max(worst, time.perf_counter() - t0)
            runs += 1
            totals = [totals[0] + r.raw_messages, totals[1] + r.attachments, totals[2] + r.files]
            if not r.more or runs > 10_000:
                break
        elapsed = time.perf_counter() - t_all
        print(f"{runs} runs of batch {args.batch}: {totals[0]} raw, {totals[1]} attachments, "
              f"{totals[2]} files in {elapsed:.1f} s (worst run {worst * 1000:.0f} ms; "
              f"{(totals[0] + totals[1] + totals[2]) / elapsed:.0f} items/s)")
        store.close()


if __name__ == "__main__":
    main()
