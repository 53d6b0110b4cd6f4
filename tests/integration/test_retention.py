"""Disk use and retention through the real worker and store (SQLite and PostgreSQL): the
per-ticket attachment budget is checked before a file is written, and `mailbot purge`
(dry run, then for real) lets go exactly what `[retention]` allows."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailbot import config as config_mod
from mailbot.cli import cli
from mailbot.ingest.intake import save_raw
from mailbot.replies.conversation import ConversationRenderer
from mailbot.scheduler import Scheduler
from mailbot.store import InboundMessage, Store
from tests.fixtures.store_rows import quarantine
from tests.integration.test_conversation import CUSTOMER, MON, REQUEST, Desk, mail
from tests.integration.test_replay import write_config

NOW = MON + timedelta(days=90)


@pytest.fixture
def desk(config: config_mod.Config, store: Store, tmp_path: Path) -> Desk:
    cfg = config.model_copy(update={
        "store": config.store.model_copy(update={"attachments_dir": str(tmp_path / "files")}),
        "limits": config.limits.model_copy(update={"ticket_attachment_bytes": 10_000}),
        "worker": config.worker.model_copy(update={"processes": 0}),
    })
    return Desk(cfg, store)


def with_retention(config: config_mod.Config) -> config_mod.Config:
    return config.model_copy(update={"retention": config.retention.model_copy(
        update={"raw_days": 30, "attachment_days": 30})})


def file_of(tmp_path: Path, payload: bytes) -> Path:
    digest = hashlib.sha256(payload).hexdigest()
    return tmp_path / "files" / digest[:2] / digest


def test_attachment_over_the_ticket_budget_is_never_written(desk: Desk, tmp_path: Path) -> None:
    """A follow-up whose attachment does not fit the ticket's remaining budget: the file is
    not written at all (it used to be written, then left unreferenced), and the ticket notes
    it as skipped."""
    raw = mail(CUSTOMER, "Nejde uložit", REQUEST, attachment=("first.log", b"log " * 1000))
    number = desk.receive(raw, MON).ticket_number
    assert number
    big = b"x" * 7000
    more = mail(CUSTOMER, f"Re: [#{number}] x", "Posílám další log.", attachment=("big.log", big))
    desk.receive(more, MON + timedelta(minutes=5))
    assert [a.filename for a in desk.store.ticket_attachments(number)] == ["first.log"]
    assert {e.kind: e.detail for e in desk.store.ticket_events(number)}[
        "attachments_skipped"] == "big.log"
    assert file_of(tmp_path, b"log " * 1000).exists()
    assert not file_of(tmp_path, big).exists()


def _age_files(root: Path, seconds: float) -> None:
    then = time.time() - seconds
    for f in root.rglob("*"):
        if f.is_file():
            os.utime(f, (then, then))


def _setup(desk: Desk, tmp_path: Path) -> dict[str, object]:
    """Tickets closed long ago, open, closed recently (each with an attachment); an ignored
    auto-reply, a quarantined and a received message, all from MON; an old and a young
    orphan file."""
    numbers = {}
    for name in ("closed", "open", "recent"):
        raw = mail(CUSTOMER, f"Dotaz {name}", REQUEST, attachment=(f"{name}.log", name.encode() * 300))
        numbers[name] = desk.receive(raw, MON).ticket_number
    desk.store.set_ticket_state(str(numbers["closed"]), "closed", by="test", now=MON + timedelta(days=1))
    desk.store.set_ticket_state(str(numbers["recent"]), "closed", by="test", now=NOW - timedelta(days=5))
    auto = mail(CUSTOMER, "Auto reply", "Jsem mimo kancelář.",
                headers={"Auto-Submitted": "auto-replied"})
    assert desk.receive(auto, MON).decision.kind.value == "ignore_auto"
    quarantined = save_raw(desk.store, mail(CUSTOMER, "Q", "q"), "test", received_at=MON).id
    quarantine(desk.store, quarantined, "Traceback: test")
    save_raw(desk.store, mail(CUSTOMER, "R", "r"), "test", received_at=MON)
    orphan = file_of(tmp_path, b"old orphan")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"old orphan")
    _age_files(tmp_path / "files", 2 * 86_400)
    young = file_of(tmp_path, b"young orphan")
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"young orphan")
    return numbers


def raws(store: Store) -> dict[str, int]:
    """Subject of each inbound message → length of its raw bytes kept."""
    with store.session() as s:
        ids = s.scalars(select(InboundMessage.id)).all()
    out = {}
    for inbound_id in ids:
        record = store.get_inbound(inbound_id)
        assert record is not None
        raw = record.raw
        subject = re.search(rb"Subject: (.*)\r\n", raw)
        out[subject.group(1).decode() if subject else "(purged)"] = len(raw)
    return out


def test_purge_dry_run_then_real_run_keeps_open_quarantined_and_received(
        desk: Desk, store_url: str, tmp_path: Path) -> None:
    """`mailbot purge --dry-run --json` counts, changes nothing; `mailbot purge` removes the
    raw bytes of decided mail of no live ticket and the attachments of the ticket closed 89
    days ago (and its file, and the old orphan), nothing of the open or recently closed
    tickets, the quarantined or the received message, or the young orphan."""
    numbers = _setup(desk, tmp_path)
    sizes = raws(desk.store)
    expected_raw = sizes["Dotaz closed"] + sizes["Auto reply"]
    cfg = write_config(tmp_path, store_url)
    text = cfg.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^raw_days = 0", "raw_days = 30", text)
    text = re.sub(r"(?m)^attachment_days = 0", "attachment_days = 30", text)
    cfg.write_text(text, encoding="utf-8")
    before = raws(desk.store)
    closed_file, old_orphan = file_of(tmp_path, b"closed" * 300), file_of(tmp_path, b"old orphan")

    def purge(*extra: str) -> dict[str, object]:
        result = CliRunner().invoke(
            cli, ["purge", "--json", "--now", NOW.isoformat(), "--config", str(cfg), *extra],
            catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output.strip().splitlines()[-1]))

    expected = {"raw_messages": 2, "raw_bytes": expected_raw, "attachments": 1,
                "attachment_bytes": 1800, "files": 2, "file_bytes": 1800 + len(b"old orphan"),
                "more": False}
    dry = purge("--dry-run")
    assert dry == {"dry_run": True, **expected}
    assert raws(desk.store) == before and closed_file.exists() and old_orphan.exists()
    assert len(desk.store.ticket_attachments(str(numbers["closed"]))) == 1

    assert purge() == {"dry_run": False, **expected}
    after = raws(desk.store)
    assert "Dotaz closed" not in after and "Auto reply" not in after
    assert after["(purged)"] == 0
    for kept in ("Dotaz open", "Dotaz recent", "Q", "R"):
        assert after[kept] == before[kept] > 0
    assert not closed_file.exists() and not old_orphan.exists()
    for kept_file in (b"open" * 300, b"recent" * 300, b"young orphan"):
        assert file_of(tmp_path, kept_file).exists()
    assert desk.store.ticket_attachments(str(numbers["closed"])) == []
    assert len(desk.store.ticket_attachments(str(numbers["open"]))) == 1
    assert "attachments_purged" in [e.kind for e in desk.store.ticket_events(str(numbers["closed"]))]
    assert purge() == {"dry_run": False, "raw_messages": 0, "raw_bytes": 0, "attachments": 0,
                       "attachment_bytes": 0, "files": 0, "file_bytes": 0, "more": False}


def test_scheduler_applies_retention_once_per_interval(desk: Desk, tmp_path: Path) -> None:
    """The scheduler's tick runs retention, then not again until `interval_minutes` passed."""
    _setup(desk, tmp_path)
    config = with_retention(desk.worker.config)
    scheduler = Scheduler(config, desk.store, ConversationRenderer(config, b"k" * 32))
    first = scheduler.retention(NOW)
    assert first is not None and (first.raw_messages, first.attachments, first.files) == (2, 1, 2)
    assert scheduler.retention(NOW + timedelta(minutes=1)) is None
    again = scheduler.retention(NOW + timedelta(minutes=61))
    assert again is not None and again.empty
