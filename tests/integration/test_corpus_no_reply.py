"""The shared corpus's bounces, auto-replies, delivery notifications and feedback reports,
taken in and decided by the real worker on a real store: not one of them causes a mail
(no reply to the sender, no staff notice, no ticket)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from mailbot import config as config_mod
from mailbot.ingest.intake import save_raw
from mailbot.store import Store
from mailbot.worker import Worker
from tests.shared_data import require_shared

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
AUTOMATIC = ("is_bounce", "is_auto_reply", "is_auto_response", "is_feedback_report",
             "is_delivery_notification")


def automatic_mails() -> Iterator[tuple[str, Path]]:
    corpus = require_shared("corpus")
    for expected in sorted(corpus.glob("*/expected.jsonl")):
        for line in expected.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            fact = json.loads(line)
            if any(fact.get(key) is True for key in AUTOMATIC):
                yield f"{expected.parent.name}/{fact['file']}", expected.parent / fact["file"]


def test_corpus_automatic_mail_gets_no_reply(config: config_mod.Config, store: Store) -> None:
    cfg = config.model_copy(update={"worker": config.worker.model_copy(update={"processes": 0})})
    assert cfg.mailbox.staff_notify  # notices are on: they would count too
    worker = Worker(cfg, store)
    names: dict[int, str] = {}
    files = list(automatic_mails())
    for name, path in files:
        saved = save_raw(store, path.read_bytes(), f"corpus:{name}", received_at=NOW)
        names[saved.id] = name
    processed = 0
    while batch := store.claim_inbound(50):
        processed += len(worker.process_many(batch, now=NOW))
    answered = [(names.get(o.inbound_id or 0), o.kind) for o in store.list_outbox(limit=10_000)]
    counts = store.count_inbound()
    print(f"\ncorpus automatic mail: {len(files)} files checked ({len(names)} distinct), "
          f"{processed} decided, "
          f"{counts.get('quarantined', 0)} quarantined, outgoing mails caused: {len(answered)}")
    assert len(names) > 350 and processed == len(names)
    assert answered == []
    assert store.list_tickets() == []
