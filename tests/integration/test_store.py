"""The store on SQLite and PostgreSQL: durable dedup, ticket numbers, outbox states."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from mailbot.domain import Priority
from mailbot.ingest.intake import save_raw
from mailbot.store import OutgoingMail, Store
from tests.fixtures.store_rows import quarantine, ticket_columns

RAW = b"From: Jana <jana@novak-syn.cz>\r\nMessage-ID: <abc@x>\r\nSubject: hi\r\n\r\nbody\r\n"


def test_same_bytes_stored_once(store: Store) -> None:
    """Saving identical bytes twice returns the first row and creates no second one."""
    first = save_raw(store, RAW, "test")
    second = save_raw(store, RAW, "test")
    assert first.created and not second.created
    assert second.id == first.id
    assert store.count_inbound() == {"received": 1}


def test_same_message_id_and_sender_stored_once(store: Store) -> None:
    """A redelivery with other trace headers (same Message-ID and sender) is one record."""
    first = save_raw(store, RAW, "imap")
    again = save_raw(store, b"Received: from relay\r\n" + RAW, "lmtp")
    assert not again.created and again.id == first.id


def test_same_message_id_other_sender_is_new(store: Store) -> None:
    """Message-IDs are only unique per sender: another sender's mail is kept."""
    save_raw(store, RAW, "imap")
    other = save_raw(store, RAW.replace(b"jana@novak-syn.cz", b"eva@other.cz"), "imap")
    assert other.created


def test_claim_sets_lease_and_quarantine_requeue(store: Store) -> None:
    """A claimed message is leased (not claimed twice); a quarantined one can be requeued."""
    saved = save_raw(store, RAW, "test")
    assert [c.id for c in store.claim_inbound()] == [saved.id]
    assert store.claim_inbound() == []
    quarantine(store, saved.id, "Traceback: boom")
    assert store.count_inbound() == {"quarantined": 1}
    assert store.requeue_inbound([saved.id]) == 1
    assert store.count_inbound() == {"received": 1}


def test_ticket_numbers_sequential_per_year(store: Store) -> None:
    """Numbers count up within a year and restart in the next one, never repeating."""
    got = [store.allocate_ticket_numbers(y, n) for y, n in [(2026, 2), (2027, 1), (2026, 1)]]
    assert got == [
        [(1, "T-2026-000001"), (2, "T-2026-000002")],
        [(1, "T-2027-000001")],
        [(3, "T-2026-000003")],
    ]
    now = datetime(2026, 11, 25, 9, tzinfo=UTC)
    saved = save_raw(store, RAW, "test")
    with store.transaction() as tx:
        ticket_id = tx.open_ticket(
            inbound_id=saved.id, number="T-2026-000003", year=2026, seq=3, opened_at=now,
            deadline=now + timedelta(days=3), license="40127733", customer_email="a@b.cz",
            customer_name="A", subject="s", priority=Priority.NORMAL, language="cs",
        )
    assert ticket_columns(store, "T-2026-000003", "id", "out_seq") == (ticket_id, 1)


def test_outbox_claim_retry_dead_sent(store: Store) -> None:
    """Outbox rows move queued → (retry later) → sent, or → dead; purposes are unique."""
    mail = OutgoingMail("ack:1", "<m1@estelar.example>", "ack", "podpora@estelar.example",
                        ("a@b.cz",), b"Subject: x\r\n\r\nx\r\n")
    with store.transaction() as tx:
        tx.enqueue(mail, ticket_id=None, inbound_id=None)
        tx.enqueue(mail, ticket_id=None, inbound_id=None)  # same purpose: ignored
    claimed = store.claim_due_outbox()
    assert [c.message_id for c in claimed] == ["<m1@estelar.example>"]
    assert store.claim_due_outbox() == []  # leased
    later = datetime.now(UTC) + timedelta(minutes=5)
    store.mark_retry(claimed[0].id, "451 try later", later)
    assert store.claim_due_outbox() == []  # not due yet
    again = store.claim_due_outbox(now=later + timedelta(seconds=1))
    assert again[0].attempts == 1
    store.mark_sent(again[0].id, "250 OK")
    assert store.count_outbox() == {"sent": 1}
    row = store.get_outbox(again[0].id)
    assert row is not None and row.server_reply == "250 OK" and row.attempts == 2


def test_lease_has_one_holder_until_it_expires(store: Store) -> None:
    """A lease is held by one daemon; renewed by it; taken by another only once expired;
    released at a clean stop."""
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert store.acquire_lease("imap:support", "a", 30, now=t0)
    assert not store.acquire_lease("imap:support", "b", 30, now=t0 + timedelta(seconds=10))
    assert store.acquire_lease("imap:support", "a", 30, now=t0 + timedelta(seconds=20))  # renew
    # 30 s after the renewal, not after the first take
    assert not store.acquire_lease("imap:support", "b", 30, now=t0 + timedelta(seconds=45))
    assert store.lease_holder("imap:support", now=t0 + timedelta(seconds=45)) == "a"
    assert store.acquire_lease("imap:support", "b", 30, now=t0 + timedelta(seconds=51))
    assert not store.acquire_lease("imap:support", "a", 30, now=t0 + timedelta(seconds=52))
    store.release_lease("imap:support", "a")  # not a's any more: no effect
    assert store.lease_holder("imap:support", now=t0 + timedelta(seconds=52)) == "b"
    store.release_lease("imap:support", "b")
    assert store.lease_holder("imap:support", now=t0 + timedelta(seconds=52)) is None
    assert store.acquire_lease("imap:support", "a", 30, now=t0 + timedelta(seconds=53))
    assert store.acquire_lease("imap:other", "b", 30, now=t0 + timedelta(seconds=53))


def test_lease_race_has_one_winner(store: Store) -> None:
    """Eight threads take a free lease at the same moment: exactly one gets it."""
    barrier = threading.Barrier(8)
    results: dict[str, bool | Exception] = {}

    def take(holder: str) -> None:
        barrier.wait()
        try:
            results[holder] = store.acquire_lease("imap:race", holder, 30)
        except Exception as exc:  # noqa: BLE001 - a lost race must not raise: recorded
            results[holder] = exc

    threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8 and all(isinstance(r, bool) for r in results.values()), results
    won = [holder for holder, got in results.items() if got is True]
    assert len(won) == 1
    assert store.lease_holder("imap:race") == won[0]


def test_upserts_update_in_place_and_last_row_wins(store: Store) -> None:
    """Licenses and contacts are written by key: a second import updates, a key twice in
    one import keeps the later row."""
    import dataclasses
    from datetime import date

    from mailbot.contacts import Contact
    from mailbot.domain import LicenseRecord, Tier

    first = LicenseRecord("51880264", "Novák & syn", "novak-syn.cz", date(2026, 6, 15),
                          Tier.START, None)
    store.upsert_licenses([first])
    store.upsert_licenses([dataclasses.replace(first, customer="Novák a syn s.r.o.")])
    store.upsert_contacts([Contact("a@novak-syn.cz", "51880264", "Jana", "cs"),
                           Contact("a@novak-syn.cz", "51880264", "Jana Nová", "en")])
    assert [(c.name, c.language) for c in store.contacts()] == [("Jana Nová", "en")]
    assert [r.customer for r in store.license_snapshot().values()] == ["Novák a syn s.r.o."]


# --- claims: short, renewed, fenced (issue 14, item 7) ----------------------------------

def _queue_one(store: Store) -> None:
    mail = OutgoingMail("ack:claim", "<claim@estelar.example>", "ack", "podpora@estelar.example",
                        ("a@b.cz",), b"Subject: x\r\n\r\nx\r\n")
    with store.transaction() as tx:
        tx.enqueue(mail, ticket_id=None, inbound_id=None, now=datetime.now(UTC) - timedelta(hours=1))


def test_stale_outbox_claim_cannot_mark_sent_retry_or_dead(store: Store) -> None:
    """A sender whose lease ran out while another daemon took the row over: its sent, retry
    and dead writes are refused; the new holder's are not."""
    _queue_one(store)
    past = datetime.now(UTC) - timedelta(minutes=10)
    [stale] = store.claim_due_outbox(lease=timedelta(seconds=20), now=past)
    [fresh] = store.claim_due_outbox()  # the stale lease has run out: taken over
    assert stale.id == fresh.id and stale.token != fresh.token
    assert store.mark_sent(stale.id, "250 late", stale.token) is False
    assert store.mark_dead(stale.id, "550 late", stale.token) is False
    assert store.mark_retry(stale.id, "451 late", datetime.now(UTC), stale.token) is False
    store.release_outbox([stale.id], stale.token)  # not the stale claim's to release
    row = store.get_outbox(stale.id)
    assert row is not None and row.state == "queued" and row.attempts == 0
    assert row.claim_token == fresh.token and row.lease_until is not None
    assert store.claim_due_outbox() == []  # still held by the new holder
    assert store.mark_sent(fresh.id, "250 OK", fresh.token) is True
    assert store.count_outbox() == {"sent": 1}


def test_stale_inbound_claim_cannot_quarantine_or_decide(store: Store) -> None:
    """The worker's counterpart: after a take-over the old claim can neither quarantine the
    message (not even after the new holder decided it) nor mark it decided."""
    saved = save_raw(store, RAW, "test")
    past = datetime.now(UTC) - timedelta(minutes=10)
    [stale] = store.claim_inbound(lease=timedelta(seconds=20), now=past)
    [fresh] = store.claim_inbound()
    assert stale.id == fresh.id == saved.id and stale.token != fresh.token
    assert quarantine(store, saved.id, "Traceback: late", stale.token) is False
    with store.transaction() as tx:
        assert not tx.hold_claim(saved.id, stale.token)
        assert not tx.mark_decided(saved.id, stale.token)
        assert not tx.quarantine(saved.id, "Traceback: late", stale.token)
    store.release_inbound([saved.id], stale.token)
    assert store.claim_inbound() == []  # the release did not free the new holder's claim
    with store.transaction() as tx:
        assert tx.hold_claim(saved.id, fresh.token) and tx.mark_decided(saved.id, fresh.token)
    assert quarantine(store, saved.id, "Traceback: late", stale.token) is False
    assert store.count_inbound() == {"decided": 1}


def test_renewed_claim_is_not_taken_over_after_its_first_lease(store: Store) -> None:
    """A claim renewed by its heartbeat lasts a lease from the renewal, not from the claim:
    another daemon cannot take a slow batch while it is being worked on."""
    _queue_one(store)
    save_raw(store, RAW, "test")
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    lease = timedelta(seconds=20)
    [out] = store.claim_due_outbox(lease=lease, now=t0)
    [inb] = store.claim_inbound(lease=lease, now=t0)
    assert out.token and inb.token
    renewed = t0 + timedelta(seconds=15)
    assert store.renew_outbox([out.id], out.token, lease, now=renewed) == {out.id}
    assert store.renew_inbound([inb.id], inb.token, lease, now=renewed) == {inb.id}
    later = t0 + timedelta(seconds=25)  # past the first lease, within the renewed one
    assert store.claim_due_outbox(now=later) == []
    assert store.claim_inbound(now=later) == []
    # Once taken over, the old claim cannot renew any more.
    taken = t0 + timedelta(seconds=40)
    [out2] = store.claim_due_outbox(now=taken)
    [inb2] = store.claim_inbound(now=taken)
    assert store.renew_outbox([out.id], out.token, lease) == set()
    assert store.renew_inbound([inb.id], inb.token, lease) == set()
    assert store.renew_outbox([out.id], str(out2.token), lease) == {out.id}
    assert store.renew_inbound([inb.id], str(inb2.token), lease) == {inb.id}


def test_worker_with_a_lost_claim_writes_nothing(config, store: Store, caplog) -> None:
    """A worker whose batch outlived its lease and was taken over by another daemon drops
    its decision (WARNING with the row id); the new holder decides the message, once."""
    import logging

    from mailbot.worker import Worker

    cfg = config.model_copy(update={"worker": config.worker.model_copy(
        update={"processes": 0})})
    saved = save_raw(store, RAW, "test")
    stale = store.claim_inbound(1, timedelta(seconds=-60))  # its lease has run out
    fresh = store.claim_inbound()
    worker = Worker(cfg, store)
    with caplog.at_level(logging.WARNING, logger="mailbot.worker"):
        worker.process_many(stale)
    assert store.count_inbound() == {"received": 1}
    assert store.decision_for(saved.id) is None and store.count_outbox() == {}
    assert any(f"inbound {saved.id}: claim lost" in r.getMessage() for r in caplog.records)
    worker.process_many(fresh)
    assert store.count_inbound() == {"decided": 1}
    assert store.decision_for(saved.id) is not None


def test_small_mail_is_claimed_before_a_burst_of_large_mail(store: Store) -> None:
    """An ordinary request stored after a burst of large mail is claimed first and in a batch
    of its own byte budget (the burst waits, in batches of its own); mail that has waited
    longer than the patience goes first whatever its size (no starvation)."""
    from mailbot.ingest.intake import save_raw_many

    big = [b"Subject: junk %d\r\nMessage-ID: <b%d@x>\r\n\r\n" % (i, i) + b"1234,5678 " * 40_000
           for i in range(3)]
    small = b"Subject: help\r\nMessage-ID: <s@x>\r\n\r\nNejde tisk, licence 4012-7733\r\n"
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    saved = save_raw_many(store, [(raw, "lmtp") for raw in big], received_at=t0)
    [request] = save_raw_many(store, [(small, "lmtp")], received_at=t0 + timedelta(seconds=1))
    first = store.claim_inbound(32, now=t0 + timedelta(seconds=2), max_bytes=1024 * 1024)
    assert [c.id for c in first][0] == request.id
    assert len(first) == 3  # the request and two of the 400 kB mails fit in 1 MiB
    store.release_inbound([c.id for c in first], first[0].token)
    # Past the patience, the oldest large mail goes first again.
    late = store.claim_inbound(1, now=t0 + timedelta(seconds=120))
    assert [c.id for c in late] == [saved[0].id]


def test_large_mail_yields_to_later_mail_in_proportion_to_its_size(store: Store) -> None:
    """When many mails wait (an IMAP catch-up), a 200 KiB mail is claimed as if it had
    arrived 50 mails later (one per 4 KiB of it; the older first on a tie), not after all of
    them: mail with attachments is decided among the rest, not as a tail at the end."""
    from mailbot.ingest.intake import save_raw_many

    head = b"Subject: priloha\r\nMessage-ID: <big@x>\r\n\r\n"
    big = head + b"x" * (200 * 1024 - len(head))
    small = [b"Subject: help %d\r\nMessage-ID: <s%d@x>\r\n\r\nNejde tisk\r\n" % (i, i)
             for i in range(100)]
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    [large] = save_raw_many(store, [(big, "imap")], received_at=t0)
    ordinary = save_raw_many(store, [(raw, "imap") for raw in small], received_at=t0)
    claimed = [c.id for c in store.claim_inbound(200, now=t0 + timedelta(seconds=2))]
    assert claimed.index(large.id) == 49
    assert [i for i in claimed if i != large.id] == [s.id for s in ordinary]


def test_choosing_a_batch_reads_no_waiting_mail(store: Store) -> None:
    """A claim orders the waiting mail by its ids and sizes alone (on SQLite from the index
    ix_inbound_claim, not the rows: the raw bytes of every waiting mail were read per claim,
    ~70 ms with 5,000 waiting); only the chosen rows are loaded, in the claim's order."""
    from sqlalchemy import event

    from mailbot.ingest.intake import save_raw_many

    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    saved = save_raw_many(store, [(RAW.replace(b"<abc@x>", b"<%d@x>" % i), "lmtp")
                                  for i in range(5)], received_at=t0)
    statements: list[tuple[str, object]] = []

    def seen(conn: object, cursor: object, statement: str, parameters: object,
             context: object, executemany: bool) -> None:
        statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        claimed = store.claim_inbound(3, now=t0 + timedelta(seconds=1))
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert [c.id for c in claimed] == [s.id for s in saved[:3]]
    assert all(c.raw.startswith(b"From: Jana") for c in claimed)
    [(choose, params)] = [(st, p) for st, p in statements if "ORDER BY" in st and "LIMIT" in st]
    assert "raw" not in choose.split("FROM")[0]
    if store.is_sqlite:
        with store.engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + choose, params))  # type: ignore[arg-type]
        assert "COVERING INDEX ix_inbound_claim" in plan, plan


def test_batch_intake_dedups_as_one_by_one(store: Store) -> None:
    """`save_raw_many` stores a batch in one SELECT and one INSERT with the dedup of single
    saves: stored bytes or a stored identity are that row, and a message twice in the batch
    (same bytes, or same identity with other trace headers) is stored once, the copy reporting
    the first one's id as not created."""
    from mailbot.ingest.intake import save_raw_many

    stored = save_raw(store, RAW, "imap")
    other = RAW.replace(b"<abc@x>", b"<def@x>")
    third = RAW.replace(b"<abc@x>", b"<ghi@x>")
    saved = save_raw_many(store, [
        (other, "lmtp"),
        (b"Received: from relay\r\n" + RAW, "lmtp"),  # the stored one, redelivered
        (other, "lmtp"),
        (RAW, "lmtp"),
        (b"Received: from relay\r\n" + other, "lmtp"),  # the first of this batch, redelivered
        (third, "lmtp"),
    ])
    first, last = saved[0].id, saved[5].id
    assert stored.id < first < last
    assert [(s.id, s.created) for s in saved] == [
        (first, True), (stored.id, False), (first, False), (stored.id, False), (first, False),
        (last, True)]
    assert store.count_inbound() == {"received": 3}
    assert [r.origin for r in store.list_inbound("received")] == ["lmtp", "lmtp", "imap"]


def _mail(purpose: str, message_id: str, to: str = "jana@novak-syn.cz") -> OutgoingMail:
    return OutgoingMail(purpose, message_id, "ack", "podpora@estelar.example", (to,),
                        b"Subject: x\r\n\r\nx\r\n", auto=True)


def test_deferred_transaction_reads_its_own_writes(store: Store) -> None:
    """A deferred transaction (the worker's batch) writes its rows together when it ends, yet
    behaves as if each were written at once: a ticket it opened exists and is found (with its
    real id), the provisional id it got is taken by every write, counts and purposes include
    what it queued, attachments count against the ticket's budget."""
    from mailbot.attachments import SavedAttachment

    now = datetime(2026, 11, 25, 9, tzinfo=UTC)
    since = now - timedelta(hours=1)
    first = save_raw(store, RAW, "test")
    second = save_raw(store, RAW.replace(b"<abc@x>", b"<def@x>"), "test")
    with store.transaction() as tx:
        assert tx.enqueue(_mail("ack:old", "<old@estelar.example>"), ticket_id=None,
                          inbound_id=None, now=now - timedelta(minutes=5))
    number = "T-2026-000001"
    files = [SavedAttachment(f"f{i}.pdf", "application/pdf", 600, f"{i}" * 64)
             for i in range(3)]
    with store.transaction(deferred=True) as tx:
        tx.read_outbox(["ack:old", "ack:1"], ["Jana@Novak-Syn.cz"], since)
        assert tx.auto_replies_since("jana@novak-syn.cz", since) == 1
        ticket_id = tx.open_ticket(
            inbound_id=first.id, number=number, year=2026, seq=1, opened_at=now,
            deadline=now + timedelta(days=3), license="40127733",
            customer_email="jana@novak-syn.cz", customer_name="Jana", subject="s",
            priority=Priority.NORMAL, language="cs")
        assert ticket_id < 0  # provisional until written
        assert tx.ticket_exists(number)
        assert not tx.enqueue(_mail("ack:old", "<old2@estelar.example>"), ticket_id=ticket_id,
                              inbound_id=first.id, now=now)
        assert tx.enqueue(_mail("ack:1", "<a1@estelar.example>"), ticket_id=ticket_id,
                          inbound_id=first.id, now=now)
        assert tx.auto_replies_since("JANA@novak-syn.cz", since) == 2
        assert tx.auto_replies_total_since(since) == 2
        assert tx.add_attachments(ticket_id, first.id, files[:2], 1000, now) == [files[1]]
        tx.record_decision(first.id, kind="ticket", license=None, priority="normal",
                           missing=[], scope_reason=None, ticket_ref=number,
                           ticket_id=ticket_id, language="cs", reasons=[])
        locked = tx.find_ticket(number)  # writes what is pending: the row is there
        assert locked is not None and locked.id > 0 and locked.info.number == number
        tx.touch(ticket_id, now, last_message_id="<later@x>")  # still takes the provisional id
        tx.add_ticket_event(locked.id, "customer_mail", inbound_id=second.id)
        # The budget counts the attachment written above (now under the real id).
        assert tx.add_attachments(locked.id, second.id, files[2:], 1000, now) == files[2:]
        assert tx.add_attachments(ticket_id, second.id, [files[0]], 1200, now) == []
    assert ticket_columns(store, number, "id", "last_message_id") == (locked.id, "<later@x>")
    assert [e.kind for e in store.ticket_events(number)] == ["opened", "customer_mail"]
    assert [a.filename for a in store.ticket_attachments(number)] == ["f0.pdf", "f0.pdf"]
    ack = next(r for r in store.list_outbox() if r.purpose == "ack:1")
    assert ack.ticket_id == locked.id and ack.inbound_id == first.id
    decision = store.decision_for(first.id)
    assert decision is not None and decision.ticket_id == locked.id
    assert store.count_outbox() == {"queued": 2}


def test_deferred_write_breaking_a_constraint_fails_the_transaction(store: Store) -> None:
    """A deferred row that breaks a constraint fails the transaction when it is written (at
    the latest when the transaction ends): nothing of it is committed."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    now = datetime(2026, 11, 25, 9, tzinfo=UTC)
    with pytest.raises(IntegrityError), store.transaction(deferred=True) as tx:
        tx.read_outbox(["ack:1", "ack:2"], [], now)
        assert tx.enqueue(_mail("ack:1", "<same@estelar.example>"), ticket_id=None,
                          inbound_id=None, now=now)
        assert tx.enqueue(_mail("ack:2", "<same@estelar.example>"), ticket_id=None,
                          inbound_id=None, now=now)
    assert store.count_outbox() == {}


def test_batch_hold_claims_fences_like_hold_claim(store: Store) -> None:
    """`hold_claims` holds, in one statement, the rows its claim still holds undecided: a
    row another daemon took over is not held (nor decided under the old token), the others
    are decided once; rows worked without a claim are held while undecided."""
    a = save_raw(store, RAW, "test")
    b = save_raw(store, RAW.replace(b"<abc@x>", b"<def@x>"), "test")
    c = save_raw(store, RAW.replace(b"<abc@x>", b"<ghi@x>"), "test")
    past = datetime.now(UTC) - timedelta(minutes=10)
    stale = store.claim_inbound(2, lease=timedelta(seconds=20), now=past)
    assert [s.id for s in stale] == [a.id, b.id]
    [taken] = store.claim_inbound(1)  # another daemon takes the first one over
    assert taken.id == a.id
    token = stale[0].token
    with store.transaction(deferred=True) as tx:
        assert tx.hold_claims([(a.id, token), (b.id, token), (c.id, None)]) == {b.id, c.id}
        assert not tx.hold_claim(a.id, token) and not tx.mark_decided(a.id, token)
        assert tx.hold_claim(b.id, token) and tx.mark_decided(b.id, token)
        assert not tx.mark_decided(b.id, token)  # moved already
        assert not tx.hold_claim(b.id, token)
        assert tx.mark_decided(c.id)
    assert [r.id for r in store.list_inbound("decided")] == [c.id, b.id]
    assert [r.id for r in store.list_inbound("received")] == [a.id]


def test_sqlite_connections_keep_few_prepared_statements(tmp_path: Path) -> None:
    """Statements that differ with a batch's length (IN lists, multi-row INSERTs) are not
    all kept prepared by each pooled connection: 100 distinct large ones leave < 2 MB of
    SQLite memory behind (the sqlite3 module's default of 128 kept 5.5 MB)."""
    import ctypes
    import ctypes.util

    from sqlalchemy import select

    from mailbot import migrations
    from mailbot.store.models import InboundMessage

    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3 to ask")
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    store = Store.from_url(f"sqlite:///{tmp_path / 'statements.db'}")
    migrations.upgrade(store.engine)
    try:
        if lib.sqlite3_memory_used() <= 0:
            pytest.skip("the sqlite3 module does not use the shared libsqlite3")
        before = lib.sqlite3_memory_used()
        with store.engine.connect() as conn:
            for n in range(300, 400):
                conn.execute(select(InboundMessage.id)
                             .where(InboundMessage.id.in_(list(range(n))))).all()
            kept = lib.sqlite3_memory_used() - before
    finally:
        store.close()
    assert kept < 2_000_000


def test_storing_a_batch_copies_a_few_raw_messages_at_a_time(tmp_path: Path) -> None:
    """SQLite copies each bound raw message: a batch of 180 mails of 20 kB (3.6 MB) is
    written 20 rows a statement, so SQLite's own memory peaks at a fraction of the batch
    (2.2 MB over the start; one statement of all rows: 7.7 MB)."""
    import ctypes
    import ctypes.util

    from mailbot import migrations
    from mailbot.ingest.intake import save_raw_many

    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3 to ask")
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    store = Store.from_url(f"sqlite:///{tmp_path / 'batch.db'}")
    migrations.upgrade(store.engine)
    try:
        if lib.sqlite3_memory_used() <= 0:
            pytest.skip("the sqlite3 module does not use the shared libsqlite3")
        mails = [(RAW.replace(b"<abc@x>", b"<%d@x>" % i) + b"x" * 20_000, "imap")
                 for i in range(200)]
        save_raw_many(store, mails[:20])  # the connection and its page cache set up
        base = lib.sqlite3_memory_used()
        lib.sqlite3_memory_highwater(1)  # reset
        saved = save_raw_many(store, mails[20:])
        peak = lib.sqlite3_memory_highwater(0) - base
    finally:
        store.close()
    assert all(s.created for s in saved)
    assert peak < 4_000_000, peak


def test_reads_between_the_workers_writes_do_not_wait_for_the_write_lock(store: Store) -> None:
    """While another writer holds a transaction open (on SQLite: the one write lock), the
    worker's reads answer at once with the last committed state instead of queueing behind
    it (one that waited would fail: 'database is locked')."""
    if not store.is_sqlite:
        pytest.skip("PostgreSQL readers never wait for writers")
    store.allocate_ticket_numbers(2026, 3)
    with store.session() as s:  # BEGIN IMMEDIATE: holds the write lock until the block ends
        s.connection().exec_driver_sql(
            "UPDATE ticket_counters SET last_seq = 99 WHERE year = 2026")
        other = Store.from_url(str(store.engine.url))
        event.listen(other.engine, "connect",  # a read that waited would fail at once
                     lambda conn, _: conn.execute("PRAGMA busy_timeout = 0"))
        try:
            assert other.ticket_counter(2026) == 3
            assert not other.ticket_exists("T-2026-000001")
            assert other.auto_reply_counts(["a@b.cz"], datetime(2026, 1, 1, tzinfo=UTC)) == {
                "a@b.cz": 0}
            assert other.license_version() == (0, None)
            assert other.ticket_attachment_bytes("T-2026-000001") == 0
            assert other.ticket_info("T-2026-000001") is None
            assert other.ticket_for_message_ids(["<a@b.cz>"]) is None
        finally:
            other.close()
    assert store.ticket_counter(2026) == 99


def _no_busy_wait(store: Store) -> None:
    """SQLite's own busy wait off: a writer that found the write lock taken would fail at
    once ('database is locked') instead of polling for it."""
    store.engine.dispose()
    event.listen(store.engine, "connect",
                 lambda conn, _: conn.execute("PRAGMA busy_timeout = 0"))


def test_writers_of_one_process_queue_for_the_write_lock(store: Store) -> None:
    """A thread that begins a write while another thread's write transaction is open waits
    for its commit on the engine's lock and then writes, without SQLite's busy wait (turned
    off here: it would fail at once), and a write that failed gives the lock back."""
    if not store.is_sqlite:
        pytest.skip("PostgreSQL has no one write lock")
    _no_busy_wait(store)
    store.allocate_ticket_numbers(2026, 1)
    inside, wrote = threading.Event(), []
    failed: list[BaseException] = []

    def second_writer() -> None:
        inside.wait(5)
        try:
            wrote.append(store.allocate_ticket_numbers(2026, 1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    with store.session() as s:  # BEGIN IMMEDIATE: holds the write lock until the block ends
        s.connection().exec_driver_sql(
            "UPDATE ticket_counters SET last_seq = 10 WHERE year = 2026")
        inside.set()
        thread.join(0.3)
        assert thread.is_alive() and not wrote  # waiting for this transaction
    thread.join(5)
    assert not failed, failed
    assert wrote == [[(11, "T-2026-000011")]]
    with pytest.raises(ZeroDivisionError), store.session() as s:
        s.connection().exec_driver_sql(
            "UPDATE ticket_counters SET last_seq = 50 WHERE year = 2026")
        1 / 0  # noqa: B018 - the transaction rolls back
    assert store.allocate_ticket_numbers(2026, 1) == [(12, "T-2026-000012")]


def test_a_second_engine_on_the_file_still_meets_sqlites_busy_wait(store: Store) -> None:
    """The lock is per engine: another engine (another process's) does not queue on it, and
    with no busy wait its write fails while this one's transaction is open, as before."""
    if not store.is_sqlite:
        pytest.skip("PostgreSQL has no one write lock")
    store.allocate_ticket_numbers(2026, 1)
    other = Store.from_url(str(store.engine.url))
    _no_busy_wait(other)
    try:
        with store.session() as s:
            s.connection().exec_driver_sql(
                "UPDATE ticket_counters SET last_seq = 10 WHERE year = 2026")
            with pytest.raises(Exception, match="locked"):
                other.allocate_ticket_numbers(2026, 1)
        assert other.allocate_ticket_numbers(2026, 1) == [(11, "T-2026-000011")]
    finally:
        other.close()


def test_actions_after_commit_run_once_it_returned_and_never_after_a_rollback(
        store: Store) -> None:
    """What a transaction leaves for after its commit (a log line about a reply the rate
    limit held back) runs once the rows are committed, in order, and not at all when the
    transaction rolls back (the batch written again message by message logs it once)."""
    ran: list[tuple[str, int]] = []

    def seen(name: str) -> None:  # the committed counter, read from outside the transaction
        ran.append((name, store.ticket_counter(2026)))

    with store.transaction(deferred=True) as tx:
        tx.c.exec_driver_sql("INSERT INTO ticket_counters (year, last_seq) VALUES (2026, 7)")
        tx.after_commit(lambda: seen("first"))
        tx.after_commit(lambda: seen("second"))
        assert ran == []
    assert ran == [("first", 7), ("second", 7)]
    ran.clear()
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.c.exec_driver_sql("UPDATE ticket_counters SET last_seq = 9 WHERE year = 2026")
        tx.after_commit(lambda: seen("rolled back"))
        raise RuntimeError("a write failed")
    assert ran == [] and store.ticket_counter(2026) == 7


def test_a_thread_holding_the_write_lock_does_not_wait_for_itself(store: Store) -> None:
    """A write transaction begun on a second connection by the thread that holds one open
    meets SQLite's lock at once (busy wait off: 'database is locked'), as without the
    engine's lock, instead of first waiting out `WRITE_LOCK_WAIT` for itself."""
    if not store.is_sqlite:
        pytest.skip("PostgreSQL has no one write lock")
    _no_busy_wait(store)
    store.allocate_ticket_numbers(2026, 1)
    with store.session() as s:
        s.connection().exec_driver_sql(
            "UPDATE ticket_counters SET last_seq = 10 WHERE year = 2026")
        started = time.monotonic()
        with pytest.raises(Exception, match="locked"):
            store.allocate_ticket_numbers(2026, 1)
        assert time.monotonic() - started < 2.0
    assert store.allocate_ticket_numbers(2026, 1) == [(11, "T-2026-000011")]


def test_sqlite_connections_are_durable_and_keep_a_small_page_cache(tmp_path: Path) -> None:
    """Every SQLite connection of a store writes ahead with a sync at each commit (a 250
    promises the mail survives power loss) and keeps 512 KiB of pages, not SQLite's 2 MB:
    raw mail passes through each connection's cache."""
    from sqlalchemy import text

    from mailbot.store.engine import SQLITE_CACHE_KIB

    store = Store.from_url(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA cache_size")).scalar() == -SQLITE_CACHE_KIB
    finally:
        store.engine.dispose()
