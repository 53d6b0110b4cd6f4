"""Issue 18: automatic replies that the rate limits will hold back are not rendered
(`RateForecast`, `Worker.prepare`), and nothing that is sent or recorded changes: a generated
corpus with repeated senders gives the same outbox rows, byte for byte, and the same decision
records with and without it, in replay's pipeline and in the daemon's (`run_once`, its clock
moving on between batches); a reply held back at prepare that a limit lets through when the
batch is written is rendered then and queued."""

from __future__ import annotations

import email.policy
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select

from mailbot import config as config_mod
from mailbot import migrations
from mailbot.ingest.intake import save_raw
from mailbot.registry import read_license_file
from mailbot.replay import replay_live
from mailbot.replies.render import ReplyRenderer
from mailbot.store import Store
from mailbot.store.models import DecisionRecord, InboundMessage, OutboxMessage
from mailbot.worker import Worker
from tests.integration.test_conversation import (
    CUSTOMER,
    MON,
    REQUEST,
    Desk,
    desk,  # noqa: F401  (the fixture)
    mail,
)
from tests.shared_data import require_shared

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
BIG_SENDER = "velky.soubor@strojirny-hranice.cz"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], Path]:
    """300 generated mails (one sender writes 80 of them, others a few each: the per-address
    limit is hit often) and five mails over a 200 kB size limit from one sender (told the
    limit within the same rate limits); the registry CSV of the corpus' licenses."""
    require_shared("tools/gen_corpus.py")
    from bench.corpus import generate, registry_from

    tmp = tmp_path_factory.mktemp("held")
    manifest = generate(300, 7, tmp / "corpus")
    licenses = tmp / "licenses.csv"
    registry_from(manifest, licenses)
    raws = [f.read_bytes() for f in sorted((tmp / "corpus").glob("*.eml"))]
    for i in range(5):
        msg = EmailMessage()
        msg["From"] = BIG_SENDER
        msg["To"] = "podpora@estelar.example"
        msg["Subject"] = f"Export mezd {i}"
        msg["Message-ID"] = f"<big-{i}@strojirny-hranice.cz>"
        msg.set_content(REQUEST + "\n" + "Podrobný výpis chyby. " * 12_000)
        raws.insert(40 * i + 7, msg.as_bytes(policy=email.policy.SMTP))
    return raws, licenses


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_HELD_TEST_SECRET", "held-replies-test-secret-" * 2)


@pytest.fixture
def counted_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The purposes of the automatic replies rendered in this process."""
    rendered: list[str] = []
    original = ReplyRenderer.render

    def counting(self: ReplyRenderer, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        if out is not None:
            rendered.append(out.purpose)
        return out

    monkeypatch.setattr(ReplyRenderer, "render", counting)
    return rendered


def _store(tmp: Path, name: str, licenses: Path) -> Store:
    store = Store.from_url(f"sqlite:///{tmp / name}.db")
    migrations.upgrade(store.engine)
    records, errors = read_license_file(licenses)
    assert not errors
    store.upsert_licenses(records)
    return store


def _config(base: config_mod.Config, tmp: Path, *, processes: int,
            total: int) -> config_mod.Config:
    return base.model_copy(update={
        "store": base.store.model_copy(update={"attachments_dir": str(tmp / "files")}),
        "limits": base.limits.model_copy(update={"message_bytes": 200_000}),
        "worker": base.worker.model_copy(update={"processes": processes}),
        "conversation": base.conversation.model_copy(  # one secret: the same notices
            update={"auto_replies_per_hour": 3, "auto_replies_total_per_hour": total,
                    "token_secret_env": "MAILBOT_HELD_TEST_SECRET"}),
    })


def _snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the outbox, the decision records and the inbound states hold (times of
    the wall clock left out)."""
    with store.session() as s:
        outbox = [tuple(r) for r in s.execute(select(
            OutboxMessage.id, OutboxMessage.purpose, OutboxMessage.message_id,
            OutboxMessage.kind, OutboxMessage.inbound_id, OutboxMessage.ticket_id,
            OutboxMessage.mail_from, OutboxMessage.rcpt_to, OutboxMessage.raw,
            OutboxMessage.state, OutboxMessage.created_at, OutboxMessage.next_attempt_at,
            OutboxMessage.auto_recipient, OutboxMessage.recipient,
            OutboxMessage.priority).order_by(OutboxMessage.id))]
        decisions = [tuple(r) for r in s.execute(select(
            DecisionRecord.inbound_id, DecisionRecord.kind, DecisionRecord.license,
            DecisionRecord.priority, DecisionRecord.missing, DecisionRecord.scope_reason,
            DecisionRecord.ticket_ref, DecisionRecord.ticket_id, DecisionRecord.language,
            DecisionRecord.reasons).order_by(DecisionRecord.inbound_id))]
        inbound = [tuple(r) for r in s.execute(select(
            InboundMessage.id, InboundMessage.state, InboundMessage.error)
            .order_by(InboundMessage.id))]
    return {"outbox": outbox, "decisions": decisions, "inbound": inbound}


def _replay(store: Store, config: config_mod.Config, raws: list[bytes], *,
            hold_back: bool) -> None:
    """`mailbot replay`'s pipeline at one instant (batches of 32, two in flight)."""
    if config.worker.processes:  # the daemon's and replay's worker: holding back
        assert hold_back
        worker = Worker.from_config(config, store)
    else:
        worker = Worker(config, store, hold_back=hold_back)
    try:
        messages = ((f"{i:06d}.eml", raw) for i, raw in enumerate(raws))
        for _ in replay_live(messages, worker, store, NOW, chunk=32):
            pass
    finally:
        worker.close()


def _daemon(store: Store, config: config_mod.Config, raws: list[bytes], *,
            hold_back: bool) -> None:
    """The daemon's pipeline (`run_once`, batches of 20 kept in flight) with its clock
    moving on 6 minutes per batch: the window slides over the batches in flight."""
    for i, raw in enumerate(raws):
        save_raw(store, raw, "test", received_at=NOW + timedelta(seconds=i))
    ticks: Iterator[datetime] = (NOW + timedelta(minutes=6 * k) for k in range(10_000))
    worker = Worker(config, store, hold_back=hold_back, clock=lambda: next(ticks))
    try:
        while worker.run_once(20):
            pass
    finally:
        worker.close()


def _rate_limited(snapshot: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    return [r["detail"] for d in snapshot["decisions"] for r in d[-1] if r["rule"] == "rate_limit"]


@pytest.mark.parametrize(("run", "total"), [(_replay, 1_000_000), (_replay, 60),
                                            (_daemon, 1_000_000), (_daemon, 25)])
def test_held_replies_change_nothing_sent_or_recorded(
        run: Any, total: int, corpus: tuple[list[bytes], Path], base_config: config_mod.Config,
        tmp_path: Path, counted_renders: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same mail with and without holding back: identical outbox rows (bytes, order,
    times), decision records (their `rate_limit` notes included) and quarantined mail; only
    the automatic replies a limit held back are no longer rendered — every one rendered
    with holding back is queued, and none held back had to be rendered when written (the
    forecast is exact here: one process, no failures)."""
    raws, licenses = corpus
    late: list[str] = []
    render_held = Worker._render_held
    monkeypatch.setattr(Worker, "_render_held",
                        lambda self, job, auto: late.append(auto.purpose)
                        or render_held(self, job, auto))
    config = _config(base_config, tmp_path, processes=0, total=total)
    plain, held = _store(tmp_path, "plain", licenses), _store(tmp_path, "held", licenses)
    run(plain, config, raws, hold_back=False)
    every = len(counted_renders)
    counted_renders.clear()
    run(held, config, raws, hold_back=True)
    before, after = _snapshot(plain), _snapshot(held)
    assert after == before
    limited = _rate_limited(after)
    assert len(limited) > 30, "the limits were not hit: the test shows nothing"
    assert any("per hour to this address" in d for d in limited)
    if total < 1000:
        assert any("to all addresses" in d for d in limited)
    quarantined_notes = sum("no reject_too_large: rate limit" in (e or "")
                            for _, _, e in after["inbound"])
    assert quarantined_notes > 0  # the senders of mail over a limit are told within them
    auto_rows = [r for r in after["outbox"] if r[12] is not None]
    assert sorted(counted_renders) == sorted(r[1] for r in auto_rows)
    assert every == len(counted_renders) + len(limited) + quarantined_notes
    assert late == []
    plain.close()
    held.close()


def test_held_replies_with_the_decision_processes(
        corpus: tuple[list[bytes], Path], base_config: config_mod.Config,
        tmp_path: Path) -> None:
    """The children render without the held replies (`RenderJob.hold` crosses the pipe):
    the outcome is the same as rendering everything in this process."""
    raws, licenses = corpus
    raws = raws[:160]
    plain, held = _store(tmp_path, "plain", licenses), _store(tmp_path, "held", licenses)
    _replay(plain, _config(base_config, tmp_path, processes=0, total=1_000_000), raws,
            hold_back=False)
    _replay(held, _config(base_config, tmp_path, processes=2, total=1_000_000), raws,
            hold_back=True)
    before, after = _snapshot(plain), _snapshot(held)
    assert after == before
    assert len(_rate_limited(after)) > 10
    plain.close()
    held.close()


def _fourth_request(desk: Desk) -> Any:
    """Three acknowledgements to CUSTOMER, then a fourth request prepared (not yet written):
    its acknowledgement is held back."""
    for i in range(3):
        desk.receive(mail(CUSTOMER, f"Kalendář {i}", REQUEST), MON + timedelta(minutes=i))
    save_raw(desk.store, mail(CUSTOMER, "Kalendář 3", REQUEST), "test",
             received_at=MON + timedelta(minutes=3))
    [item] = desk.store.claim_inbound(5)
    prepared = desk.worker.prepare(desk.worker.start([item], MON + timedelta(minutes=3)))
    [held] = prepared.held.values()
    assert (held.purpose, held.kind, held.rcpt_to) == (f"ack:{item.id}", "ack", (CUSTOMER,))
    assert [r.kind for r in prepared.renders[0].replies] == ["notice"]  # type: ignore[index]
    return prepared


def _acks_and_notes(desk: Desk, inbound_id: int) -> tuple[list[str], list[str]]:
    record = desk.store.decision_for(inbound_id)
    assert record is not None
    return ([m["To"].addresses[0].addr_spec for m in desk.sent("ack")],
            [r["detail"] for r in record.reasons if r["rule"] == "rate_limit"])


def test_a_held_reply_is_rendered_when_rows_went_away_before_the_write(
        desk: Desk, counted_renders: list[str]) -> None:
    """Held back at prepare, but the acknowledgements it was counted against are gone when
    the batch is written: the check then lets it through, and it is rendered and queued
    (the same bytes as rendered in the render stage), with no `rate_limit` note."""
    prepared = _fourth_request(desk)
    inbound_id = prepared.items[0].id
    with desk.store.session() as s:
        s.execute(delete(OutboxMessage).where(OutboxMessage.kind == "ack"))
    counted_renders.clear()
    desk.worker.commit(prepared)
    assert counted_renders == [f"ack:{inbound_id}"]
    acks, notes = _acks_and_notes(desk, inbound_id)
    assert (acks, notes) == ([CUSTOMER], [])
    [row] = [r for r in desk.store.list_outbox() if r.kind == "ack"]
    again = prepared.held[inbound_id].render()  # the same render, once more
    assert again is not None and row.raw == again.raw


def test_a_held_reply_is_rendered_when_the_limit_was_raised_before_the_write(
        desk: Desk) -> None:
    """Held back at prepare under a limit of 3, written under a limit of 4: queued."""
    prepared = _fourth_request(desk)
    worker = desk.worker
    worker.settings = replace(worker.settings, auto_replies_per_hour=4)
    worker.commit(prepared)
    acks, notes = _acks_and_notes(desk, prepared.items[0].id)
    assert (acks, notes) == ([CUSTOMER] * 4, [])


def test_a_held_reply_still_held_when_written_keeps_its_note(desk: Desk) -> None:
    """The usual case: held at prepare, held when written; the note is the one the check
    writes, as when the reply was rendered."""
    prepared = _fourth_request(desk)
    desk.worker.commit(prepared)
    acks, notes = _acks_and_notes(desk, prepared.items[0].id)
    assert acks == [CUSTOMER] * 3
    assert notes == [f"no ack to {CUSTOMER}: 3 per hour to this address reached"]
