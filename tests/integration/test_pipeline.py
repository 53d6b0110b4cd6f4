"""One pipeline: an outcome is whatever its registered handler does (the worker runs a fake
one registered in place of the real one), and `replay --dry-run` decides through the daemon's
stages, limits included."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from mailbot.actions import ReplyContext
from mailbot.domain import DecisionKind, RuleResult
from mailbot.handlers import HANDLERS, Act, Effect, Handler, ReplyJob
from mailbot.ingest.intake import save_raw
from mailbot.store import OutgoingMail, Transaction
from mailbot.worker import Worker
from tests.integration.test_conversation import (
    CUSTOMER,
    MON,
    Desk,
    desk,  # noqa: F401  (the fixture)
    mail,
)
from tests.integration.test_replay import NOW, json_lines, run_cli, write_config

REQUEST = ("Dobrý den,\n\npo kliknutí na Uložit se v ACS-line zobrazí chyba „Neplatný interval“ "
           "a směnný kalendář pro třetí směnu se neuloží.\n\nLicenční číslo: 4012-7733\n\n"
           "S pozdravem\nPavel Dvořák\n")


class FakeIncomplete(Handler):
    """Stands in for the rejection of an incomplete request: its own mail, its own note."""

    kinds = frozenset({DecisionKind.REJECT_INCOMPLETE})

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        raw = (f"From: {ctx.mailbox.support_address}\r\nTo: {job.mail.from_addr}\r\n"
               f"Subject: fake\r\nMessage-ID: <fake-{job.inbound_id}@estelar.example>\r\n\r\n"
               "fake\r\n").encode()
        return [OutgoingMail(f"fake:{job.inbound_id}", f"<fake-{job.inbound_id}@estelar.example>",
                             "fake", ctx.mailbox.support_address, (job.mail.from_addr or "",),
                             raw)]

    def write(self, tx: Transaction, act: Act) -> Effect:
        return Effect(notes=(RuleResult("fake_handler", True, f"wrote {len(act.replies)}"),))


def test_a_handler_registered_for_a_kind_is_what_the_worker_runs(desk: Desk) -> None:
    """Registering a handler is all an outcome needs: the worker renders its replies and
    writes its rows; the other kinds keep their handlers."""
    desk.worker = Worker(desk.worker.config, desk.store,
                         handlers=HANDLERS.replacing(FakeIncomplete()))
    incomplete = mail(CUSTOMER, "Nefunguje to", "Dobrý den, nefunguje to. Díky")
    out = desk.receive(incomplete, MON)
    assert out.decision.kind is DecisionKind.REJECT_INCOMPLETE
    assert [m["Subject"] for m in desk.sent()] == ["fake"]
    record = desk.store.decision_for(out.inbound_id)
    assert record is not None
    assert {"rule": "fake_handler", "hit": True, "detail": "wrote 1"} in record.reasons
    request = mail(CUSTOMER, "Nejde uložit směnný kalendář", REQUEST)
    out = desk.receive(request, MON + timedelta(minutes=1))
    assert out.decision.kind is DecisionKind.TICKET
    assert len(desk.sent("ack")) == 1


def _too_large(tmp_path: Path) -> Path:
    """A complete request over a 2 kB size limit, and a config with that limit."""
    mails = tmp_path / "mails"
    mails.mkdir()
    body = REQUEST + "\n" + "Podrobnosti v příloze. " * 200
    (mails / "big.eml").write_bytes(mail(f"Pavel Dvořák <{CUSTOMER}>", "Nejde uložit", body))
    return mails


def test_dry_run_quarantines_mail_over_the_size_limit_as_the_daemon_does(tmp_path: Path) -> None:
    """replay --dry-run applies the daemon's limits: a mail over `limits.message_bytes` is
    `quarantined` (too_large), in a dry run as in a live replay, not a ticket."""
    mails = _too_large(tmp_path)
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'live.db'}")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("message_bytes = 26214400", "message_bytes = 2048", 1),
                   encoding="utf-8")
    licenses = tmp_path / "licenses.csv"
    licenses.write_text("license,customer,email_domain,activated_on,support_tier,"
                        "max_version_date\n40127733,Strojírny Hranice a.s.,"
                        "strojirny-hranice.cz,2026-08-03,START,2027-02-03\n", encoding="utf-8")
    common = ("--json", "--now", NOW, "--licenses", str(licenses), "--config", str(cfg))
    code, out = run_cli("replay", str(mails), "--dry-run", *common)
    assert code == 0, out
    [dry] = json_lines(out)
    code, out = run_cli("replay", str(mails), *common)
    assert code == 0, out
    [live] = json_lines(out)
    assert dry["decision"] == live["decision"] == "quarantined"
    assert any("too_large" in str(r) for r in dry["reasons"]), dry["reasons"]


def _requests(n: int) -> list[bytes]:
    return [mail(f"zakaznik{i}@firma{i}.cz", f"Nejde uložit kalendář {i}", REQUEST)
            .replace(b"Message-ID: <", f"Message-ID: <p{i}-".encode(), 1)
            for i in range(n)]


def test_the_daemon_worker_keeps_batches_in_flight_while_full_ones_come(desk: Desk) -> None:
    """`run_once` keeps full batches on their way (the children decide the next while this
    one is written) and drains the pipeline when a short batch shows the queue is empty:
    every message written once, tickets numbered in arrival order, no claim left."""
    for raw in _requests(25):
        save_raw(desk.store, raw, "test", received_at=MON)
    worker = desk.worker
    assert worker.run_once(10) == 10
    assert worker.run_once(10) == 10
    assert desk.store.count_inbound() == {"received": 25}  # claimed, none written yet
    assert worker.run_once(10) == 5  # a short batch: everything is written now
    assert desk.store.count_inbound() == {"decided": 25}
    tickets = desk.store.list_tickets(states=("open",))
    assert sorted(t.number for t in tickets) == [f"T-2026-{i:06d}" for i in range(1, 26)]
    assert worker.run_once(10) == 0


def test_a_clean_stop_writes_the_batches_in_flight(desk: Desk) -> None:
    """Closing the worker finishes what it claimed: no claim left behind, no ticket number
    allocated and unused."""
    for raw in _requests(20):
        save_raw(desk.store, raw, "test", received_at=MON)
    worker = desk.worker
    assert worker.run_once(10) == 10
    assert worker.run_once(10) == 10
    worker.close()
    assert desk.store.count_inbound() == {"decided": 20}
    assert desk.store.ticket_counter(2026) == 20


def _leased(desk: Desk) -> dict[str, list[int]]:
    """Undecided inbound ids per claim token, of the rows whose lease runs."""
    from sqlalchemy import text

    with desk.store.engine.connect() as conn:
        rows = conn.execute(text("select id, claim_token from inbound_messages where "
                                 "state = 'received' and lease_until is not null")).all()
    out: dict[str, list[int]] = {}
    for i, token in sorted(rows):
        out.setdefault(token, []).append(int(i))
    return out


def test_a_write_claims_the_next_batch_while_full_ones_come(desk: Desk) -> None:
    """While full batches keep coming, the transaction that writes a batch also claims the
    next one (one write transaction per batch, not two), which the next `run_once` decides:
    every message written once, in arrival order, no claim left."""
    for raw in _requests(45):
        save_raw(desk.store, raw, "test", received_at=MON)
    worker = desk.worker
    claims: list[int] = []
    claim = desk.store.claim_inbound

    def counted(*args: object, **kwargs: object) -> object:
        claims.append(1)
        return claim(*args, **kwargs)  # type: ignore[arg-type]

    desk.store.claim_inbound = counted  # type: ignore[method-assign]
    assert [worker.run_once(10) for _ in range(3)] == [10, 10, 10]
    # Batch 1 written; 2 and 3 in flight; 4 claimed in batch 1's transaction.
    assert desk.store.count_inbound() == {"decided": 10, "received": 35}
    leased = _leased(desk)
    assert sorted(len(ids) for ids in leased.values()) == [10, 10, 10]
    assert [i for ids in leased.values() for i in ids] == list(range(11, 41))
    assert len(claims) == 3
    assert worker.run_once(10) == 10  # batch 4, claimed ahead: no claim of its own
    assert len(claims) == 3
    assert worker.run_once(10) == 5  # short: everything is written
    assert desk.store.count_inbound() == {"decided": 45}
    assert _numbers(desk) == [f"T-2026-{i:06d}" for i in range(1, 46)]
    assert _leased(desk) == {}
    assert worker.run_once(10) == 0


def test_a_clean_stop_gives_the_batch_claimed_ahead_back(desk: Desk) -> None:
    """Closing the worker writes the batches in flight and releases the one claimed ahead:
    it waits, unclaimed, for the next start (due at once, not after its lease)."""
    for raw in _requests(45):
        save_raw(desk.store, raw, "test", received_at=MON)
    worker = desk.worker
    assert [worker.run_once(10) for _ in range(3)] == [10, 10, 10]
    worker.close()
    assert desk.store.count_inbound() == {"decided": 30, "received": 15}
    assert _leased(desk) == {}
    next_worker = Worker(worker.config, desk.store, hold_back=False)
    assert next_worker.run_once(20) == 15
    assert desk.store.count_inbound() == {"decided": 45}
    assert _numbers(desk) == [f"T-2026-{i:06d}" for i in range(1, 46)]


def _numbers(desk: Desk) -> list[str]:
    return sorted(t.number for t in desk.store.list_tickets(states=("open",)))


def test_ticket_numbers_are_reserved_ahead_and_the_unused_given_back(desk: Desk) -> None:
    """The worker reserves ticket numbers ahead (on SQLite a block of 64, one write for many
    batches; on PostgreSQL what a batch may still need), numbers the tickets in arrival
    order from them, and gives the unused ones back at a clean stop: none skipped."""
    from mailbot.ticket_numbers import SQLITE_BLOCK

    for raw in _requests(25):
        save_raw(desk.store, raw, "test", received_at=MON)
    worker = desk.worker
    assert worker.run_once(10) == 10
    # Nothing numbered yet (the batch is in flight), but numbers are reserved for it.
    assert worker.run_once(10) == 10
    reserved = desk.store.ticket_counter(2026)
    assert reserved == (SQLITE_BLOCK if desk.store.is_sqlite else 10)
    assert worker.run_once(10) == 5
    # PostgreSQL: each batch reserved its size (each of these mails opens a ticket).
    assert desk.store.ticket_counter(2026) == (SQLITE_BLOCK if desk.store.is_sqlite else 25)
    assert _numbers(desk) == [f"T-2026-{i:06d}" for i in range(1, 26)]
    worker.close()
    assert desk.store.ticket_counter(2026) == 25
    # The next worker goes on where the tickets end.
    save_raw(desk.store, _requests(26)[-1], "test", received_at=MON)
    Worker(worker.config, desk.store, hold_back=False).process_many(
        desk.store.claim_inbound(10, timedelta(seconds=30)))
    assert _numbers(desk)[-1] == "T-2026-000026"


def test_numbers_reserved_after_this_workers_stay_a_gap(desk: Desk) -> None:
    """Unused numbers are given back only while nobody reserved after them: another writer
    (a second daemon, `mailbot replay`) took the next ones, so they stay unused, and no
    number is handed out twice."""
    for raw in _requests(3):
        save_raw(desk.store, raw, "test", received_at=MON)
    worker = desk.worker
    assert worker.run_once(10) == 3
    reserved = desk.store.ticket_counter(2026)
    [(seq, other)] = desk.store.allocate_ticket_numbers(2026, 1)  # another writer
    assert seq == reserved + 1
    worker.close()
    assert desk.store.ticket_counter(2026) == reserved + 1  # not given back
    save_raw(desk.store, _requests(4)[-1], "test", received_at=MON)
    next_worker = Worker(worker.config, desk.store, hold_back=False)
    next_worker.process_many(desk.store.claim_inbound(10, timedelta(seconds=30)))
    numbers = _numbers(desk)
    assert numbers[:3] == ["T-2026-000001", "T-2026-000002", "T-2026-000003"]
    assert numbers[3] == f"T-2026-{reserved + 2:06d}" and other not in numbers


def test_a_worker_stopped_without_closing_leaves_its_reserve_unused(desk: Desk) -> None:
    """A crash (no `close`): the numbers the worker reserved and did not use are never
    handed out by the next one; each ticket's number is its own."""
    for raw in _requests(2):
        save_raw(desk.store, raw, "test", received_at=MON)
    assert desk.worker.run_once(10) == 2
    reserved = desk.store.ticket_counter(2026)
    for raw in _requests(4)[2:]:
        save_raw(desk.store, raw, "test", received_at=MON)
    after_crash = Worker(desk.worker.config, desk.store, hold_back=False)
    after_crash.process_many(desk.store.claim_inbound(10, timedelta(seconds=30)))
    after_crash.close()
    numbers = _numbers(desk)
    assert numbers == ["T-2026-000001", "T-2026-000002",
                       f"T-2026-{reserved + 1:06d}", f"T-2026-{reserved + 2:06d}"]


class SameMessageId(FakeIncomplete):
    """A faulty outcome: every reply it sends has the same Message-ID (unique in the outbox)."""

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        return [replace(out, message_id="<same@estelar.example>")
                for out in super().replies(ctx, job)]


def test_a_batch_whose_writes_break_is_applied_one_by_one(
        desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    """When a batch's writes break a constraint (here only when the batch is written), the
    batch is written again message by message: the message whose writes break is
    quarantined with the error, the others are decided as usual."""
    desk.worker = Worker(desk.worker.config, desk.store,
                         handlers=HANDLERS.replacing(SameMessageId()))
    for i, text in enumerate(["Dobrý den, nefunguje to. Díky", REQUEST,
                              "Dobrý den, zase nefunguje. Díky"]):
        save_raw(desk.store, mail(CUSTOMER, f"Dotaz {i}", text), "test",
                 received_at=MON + timedelta(minutes=i))
    batch = desk.store.claim_inbound(10)
    with caplog.at_level(logging.WARNING, logger="mailbot.worker"):
        results = desk.worker.process_many(batch, now=MON + timedelta(minutes=5))
    assert "batch of 3 failed; applying one by one" in caplog.messages
    assert [type(r).__name__ for r in results] == ["Outcome", "Outcome", "Quarantined"]
    assert "IntegrityError" in results[2].error  # type: ignore[union-attr]
    assert desk.store.count_inbound() == {"decided": 2, "quarantined": 1}
    assert sorted(m["Subject"] for m in desk.sent() if m["Subject"] == "fake") == ["fake"]
    assert len(desk.sent("ack")) == 1


def test_only_the_commits_that_promise_something_wait_for_the_disk(desk: Desk) -> None:
    """SQLite: the intake's commit (before its 250), the outbox claim (before a reply leaves;
    it syncs the decisions before it) and the outcome are synced (PRAGMA synchronous=FULL at
    their commit); the worker's claim and its batch of decisions are not (NORMAL), and the
    commits after them are synced again on the same connections."""
    store = desk.store
    if not store.is_sqlite:
        pytest.skip("PostgreSQL commits are all synchronous")
    commits: list[tuple[int, set[str]]] = []
    writes: dict[int, set[str]] = {}

    def statement(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        words = sql.split()
        if words[0] in ("INSERT", "UPDATE", "DELETE"):
            writes.setdefault(id(conn), set()).add(" ".join(words[:3]))

    def commit(conn: Any) -> None:
        if id(conn) in writes:  # (reads commit too)
            raw = conn.connection.dbapi_connection
            commits.append((raw.execute("PRAGMA synchronous").fetchone()[0],
                            writes.pop(id(conn))))

    event.listen(store.engine, "before_cursor_execute", statement)
    event.listen(store.engine, "commit", commit)
    try:
        for raw in _requests(3):
            save_raw(store, raw, "test", received_at=MON)
        assert desk.worker.run_once(10) == 3
        claimed = store.claim_due_outbox(limit=10)
        assert len(claimed) == 6  # the acknowledgements and the staff notices
        store.mark_sent(claimed[0].id, "250 OK", claimed[0].token)
    finally:
        event.remove(store.engine, "before_cursor_execute", statement)
        event.remove(store.engine, "commit", commit)

    def levels(sql: str) -> list[int]:
        return [level for level, done in commits if sql in done]

    assert levels("INSERT INTO inbound_messages") == [2, 2, 2]  # the intake
    assert levels("UPDATE inbound_messages SET") == [1, 1]  # the claim, the batch's decisions
    assert levels("INSERT INTO tickets") == [1]
    assert levels("UPDATE outbox SET") == [2, 2]  # the outbox claim, the outcome
    assert commits[-1][0] == 2 and commits[-2][0] == 2
