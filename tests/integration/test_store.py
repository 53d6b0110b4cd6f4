"""The store on SQLite and PostgreSQL: durable dedup, ticket numbers, outbox states."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from mailbot.domain import Priority
from mailbot.store import OutgoingMail, Store

RAW = b"From: Jana <jana@novak-syn.cz>\r\nMessage-ID: <abc@x>\r\nSubject: hi\r\n\r\nbody\r\n"


def test_same_bytes_stored_once(store: Store) -> None:
    """Saving identical bytes twice returns the first row and creates no second one."""
    first = store.save_inbound(RAW, "test")
    second = store.save_inbound(RAW, "test")
    assert first.created and not second.created
    assert second.id == first.id
    assert store.count_inbound() == {"received": 1}


def test_same_message_id_and_sender_stored_once(store: Store) -> None:
    """A redelivery with other trace headers (same Message-ID and sender) is one record."""
    first = store.save_inbound(RAW, "imap")
    again = store.save_inbound(b"Received: from relay\r\n" + RAW, "lmtp")
    assert not again.created and again.id == first.id


def test_same_message_id_other_sender_is_new(store: Store) -> None:
    """Message-IDs are only unique per sender: another sender's mail is kept."""
    store.save_inbound(RAW, "imap")
    other = store.save_inbound(RAW.replace(b"jana@novak-syn.cz", b"eva@other.cz"), "imap")
    assert other.created


def test_claim_sets_lease_and_quarantine_requeue(store: Store) -> None:
    """A claimed message is leased (not claimed twice); a quarantined one can be requeued."""
    saved = store.save_inbound(RAW, "test")
    assert [c.id for c in store.claim_inbound()] == [saved.id]
    assert store.claim_inbound() == []
    store.quarantine_inbound(saved.id, "Traceback: boom")
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
    saved = store.save_inbound(RAW, "test")
    with store.transaction() as tx:
        ticket_id = tx.open_ticket(
            inbound_id=saved.id, number="T-2026-000003", year=2026, seq=3, opened_at=now,
            deadline=now + timedelta(days=3), license="40127733", customer_email="a@b.cz",
            customer_name="A", subject="s", priority=Priority.NORMAL, language="cs",
        )
    ticket = store.get_ticket("T-2026-000003")
    assert ticket is not None and ticket.id == ticket_id and ticket.out_seq == 1


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
