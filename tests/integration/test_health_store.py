"""The store queries behind readiness and alerts, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from mailbot.store import OutgoingMail, Store, utcnow


def _queue(store: Store, n: int, *, created: timedelta, due: timedelta) -> int:
    now = utcnow()
    with store.transaction() as tx:
        tx.enqueue(OutgoingMail(f"t:{n}", f"<t{n}@x.example>", "ack", "a@x.example",
                                ("b@y.example",), b"Subject: x\r\n\r\nx\r\n"),
                   ticket_id=None, inbound_id=None, now=now - created, due=now - due)
    [row] = [r for r in store.list_outbox() if r.purpose == f"t:{n}"]
    return row.id


def test_oldest_due_counts_a_retried_mail_from_its_creation(store: Store) -> None:
    """Not yet due: nothing. Due 10 min ago: since then. A mail retried with its next attempt
    in the future is still waiting since it was queued (else a relay that refuses every
    attempt would never look stuck)."""
    now = utcnow()
    assert store.oldest_due_outbox(now) is None
    _queue(store, 1, created=timedelta(0), due=-timedelta(minutes=5))  # due in 5 min
    assert store.oldest_due_outbox(now) is None
    _queue(store, 2, created=timedelta(minutes=10), due=timedelta(minutes=10))
    oldest = store.oldest_due_outbox(utcnow())
    assert oldest is not None and abs((now - oldest) - timedelta(minutes=10)) < timedelta(seconds=5)
    retried = _queue(store, 3, created=timedelta(hours=2), due=timedelta(hours=2))
    store.mark_retry(retried, "451 try later", utcnow() + timedelta(minutes=30))
    oldest = store.oldest_due_outbox(utcnow())
    assert oldest is not None and abs((now - oldest) - timedelta(hours=2)) < timedelta(seconds=5)
    store.mark_sent(retried, "250 ok")
    oldest = store.oldest_due_outbox(utcnow())
    assert oldest is not None and now - oldest < timedelta(minutes=11)


def test_alert_purposes_by_prefix_newest_first(store: Store) -> None:
    now = utcnow()
    with store.transaction() as tx:
        for purpose in ("alert:quarantine:1", "alert:quarantine:1:recovered",
                        "alert:quarantine_x:1", "alert:outbox_stuck:2"):
            tx.enqueue(OutgoingMail(purpose, f"<{purpose}@x.example>", "alert", "a@x.example",
                                    ("b@y.example",), b"Subject: x\r\n\r\nx\r\n"),
                       ticket_id=None, inbound_id=None, now=now)
    assert store.purposes_with_prefix("alert:quarantine:", limit=1) == [
        "alert:quarantine:1:recovered"]
    assert store.purposes_with_prefix("alert:quarantine:") == [
        "alert:quarantine:1:recovered", "alert:quarantine:1"]
