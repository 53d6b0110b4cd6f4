"""The outbox dispatcher over the wire: sent, retried on 4xx with backoff, dead on 5xx."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from mailbot.config import OutboundConfig
from mailbot.replies.outbox import GroupCommit, OutboxDispatcher, retry_delay
from mailbot.replies.smtp import SmtpSender
from mailbot.store import OutgoingMail, SendAttempt, Store


def queue(store: Store, n: int) -> None:
    with store.transaction() as tx:
        for i in range(n):
            raw = (f"From: podpora@estelar.example\r\nTo: c{i}@example.org\r\n"
                   f"Message-ID: <m{i}@estelar.example>\r\nSubject: ack {i}\r\n\r\nbody\r\n").encode()
            tx.enqueue(OutgoingMail(f"test:{i}", f"<m{i}@estelar.example>", "ack",
                                    "podpora@estelar.example", (f"c{i}@example.org",), raw),
                       ticket_id=None, inbound_id=None)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def dispatcher(store: Store, sink, clock: Clock, horizon_hours: float = 48) -> OutboxDispatcher:
    sender = SmtpSender(OutboundConfig(mode="smtp", host="127.0.0.1", port=sink.port,
                                       security="none"))
    return OutboxDispatcher(store, sender, horizon=timedelta(hours=horizon_hours), clock=clock)


def test_all_sent_with_one_connection(store: Store, smtp_sink) -> None:
    """Every queued reply reaches the relay once, over one reused connection."""
    queue(store, 30)
    d = dispatcher(store, smtp_sink, Clock())
    assert d.send_due() == 30
    assert d.send_due() == 0
    assert sorted(m.message_id for m in smtp_sink.messages) == sorted(
        f"<m{i}@estelar.example>" for i in range(30))
    assert smtp_sink.connection_count == 1
    assert store.count_outbox() == {"sent": 30}


def test_4xx_is_retried_later_and_then_sent(store: Store, smtp_sink) -> None:
    """A 451 at RCPT keeps the row queued with a later due time; it is sent when due."""
    queue(store, 1)
    clock = Clock()
    d = dispatcher(store, smtp_sink, clock)
    smtp_sink.fail_next("RCPT", 451)
    d.send_due()
    [row] = store.list_outbox()
    assert row.state == "queued" and row.attempts == 1 and "451" in (row.last_error or "")
    assert row.next_attempt_at > clock.now + timedelta(seconds=40)
    assert d.send_due() == 0  # not due yet
    clock.now = row.next_attempt_at + timedelta(seconds=1)
    assert d.send_due() == 1
    assert store.count_outbox() == {"sent": 1}
    assert len(smtp_sink.messages) == 1


def test_5xx_is_dead_with_reason(store: Store, smtp_sink) -> None:
    """A 550 makes the row dead with the server's words; it is never retried."""
    queue(store, 1)
    clock = Clock()
    d = dispatcher(store, smtp_sink, clock)
    smtp_sink.fail_next("RCPT", 550, text="5.1.1 no such user")
    d.send_due()
    [row] = store.list_outbox()
    assert row.state == "dead" and "550" in (row.last_error or "")
    clock.now += timedelta(days=1)
    assert d.send_due() == 0
    assert smtp_sink.messages == []


def test_transient_failures_past_horizon_go_dead(store: Store, smtp_sink) -> None:
    """A message still refused with 4xx after the retry horizon is given up (dead)."""
    queue(store, 1)
    clock = Clock()
    d = dispatcher(store, smtp_sink, clock, horizon_hours=1)
    smtp_sink.fail_rate("DATA", 421, 1.0)
    for _ in range(20):
        d.send_due()
        [row] = store.list_outbox()
        if row.state == "dead":
            break
        clock.now = row.next_attempt_at + timedelta(seconds=1)
    assert row.state == "dead" and "gave up" in (row.last_error or "")


def test_disconnect_after_data_is_retried_same_message_id(store: Store, smtp_sink) -> None:
    """A lost reply after DATA counts as 451: resent later with the same Message-ID."""
    queue(store, 1)
    clock = Clock()
    d = dispatcher(store, smtp_sink, clock)
    smtp_sink.disconnect_after_data()
    d.send_due()
    [row] = store.list_outbox()
    assert row.state == "queued"
    clock.now = row.next_attempt_at + timedelta(seconds=1)
    d.send_due()
    ids = [m.message_id for m in smtp_sink.unacknowledged + smtp_sink.messages]
    assert ids == ["<m0@estelar.example>", "<m0@estelar.example>"]


def test_clean_stop_releases_unsent(store: Store, smtp_sink) -> None:
    """With stop set the batch is released unsent: due again at once, nothing lost."""
    queue(store, 5)
    d = dispatcher(store, smtp_sink, Clock())
    stop = threading.Event()
    stop.set()
    assert d.send_due(stop) == 5
    assert smtp_sink.messages == []
    assert len(store.claim_due_outbox()) == 5


def test_retry_delay_grows_and_is_capped() -> None:
    """Backoff doubles per attempt (±20 % jitter) and stops growing at the cap."""
    mid = lambda a: retry_delay(a, rng=lambda: 0.5).total_seconds()  # noqa: E731
    assert [mid(a) for a in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert mid(30) == 3600.0
    assert retry_delay(1, rng=lambda: 0.0).total_seconds() == 48.0


def queue_to(store: Store, addresses: list[str]) -> None:
    with store.transaction() as tx:
        for i, address in enumerate(addresses):
            raw = (f"From: podpora@estelar.example\r\nTo: {address}\r\n"
                   f"Message-ID: <d{i}@estelar.example>\r\nSubject: news {i}\r\n\r\nbody\r\n"
                   ).encode()
            tx.enqueue(OutgoingMail(f"bulk:{i}", f"<d{i}@estelar.example>", "news",
                                    "podpora@estelar.example", (address,), raw, bulk=True),
                       ticket_id=None, inbound_id=None)


def sender_factory(sink) -> SmtpSender:
    return SmtpSender(OutboundConfig(mode="smtp", host="127.0.0.1", port=sink.port,
                                     security="none"))


def test_threads_send_in_parallel_at_most_per_domain(store: Store, smtp_sink) -> None:
    """Four sending threads, two per domain: two slow domains are served two at a time each,
    never three, and every message arrives once."""
    addresses = [f"c{i}@{'a' if i % 2 else 'b'}.example" for i in range(16)]
    queue_to(store, addresses)
    smtp_sink.stall_next("DATA", 0.3, times=16)
    d = OutboxDispatcher(store, lambda: sender_factory(smtp_sink), batch=16, concurrency=4,
                         per_domain=2)
    try:
        assert d.send_due() == 16
    finally:
        d.close()
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(addresses)
    assert smtp_sink.peak_in_data == {"a.example": 2, "b.example": 2}
    assert smtp_sink.peak_in_data_total == 4
    assert smtp_sink.connections_made == 4  # a connection per thread, reused
    assert store.count_outbox() == {"sent": 16}


def test_one_domain_is_held_to_its_limit(store: Store, smtp_sink) -> None:
    """All mail to one domain: eight threads, yet at most two transactions there at once."""
    queue_to(store, [f"c{i}@one.example" for i in range(10)])
    smtp_sink.stall_next("DATA", 0.3, times=10)
    d = OutboxDispatcher(store, lambda: sender_factory(smtp_sink), batch=10, concurrency=8,
                         per_domain=2)
    try:
        assert d.send_due() == 10
    finally:
        d.close()
    assert smtp_sink.peak_in_data == {"one.example": 2}
    assert len(smtp_sink.messages) == 10


def test_service_mail_goes_before_queued_bulk_mail(store: Store, smtp_sink) -> None:
    """An acknowledgement queued after a campaign is sent in the first batch."""
    queue_to(store, [f"n{i}@bulk.example" for i in range(30)])
    queue(store, 1)  # service mail, queued last
    d = dispatcher(store, smtp_sink, Clock())
    d.batch = 5
    d.send_due()
    assert [m.message_id for m in smtp_sink.messages][0] == "<m0@estelar.example>"
    assert len(smtp_sink.messages) == 5


def test_clean_stop_with_threads_sends_nothing_twice(store: Store, smtp_sink) -> None:
    """A stop while four threads send: what was sent is marked, the rest released queued,
    and the next run sends only the rest."""
    queue_to(store, [f"c{i}@x{i % 4}.example" for i in range(40)])
    smtp_sink.stall_next("DATA", 0.1, times=40)
    stop = threading.Event()
    d = OutboxDispatcher(store, lambda: sender_factory(smtp_sink), batch=40, concurrency=4,
                         per_domain=1)
    # Stop once the first messages are at the relay (not after a fixed time).
    timer = threading.Thread(target=lambda: (smtp_sink.wait_for(4, 30), stop.set()))
    timer.start()
    try:
        d.send_due(stop)
        counts = store.count_outbox()
        assert 0 < counts["sent"] < 40 and counts["sent"] + counts["queued"] == 40
        assert counts["sent"] == len(smtp_sink.messages)
        assert all(r.lease_until is None for r in store.list_outbox("queued"))
        d.send_due()
    finally:
        stop.set()
        timer.join(30)
        d.close()
    assert store.count_outbox() == {"sent": 40}
    ids = [m.message_id for m in smtp_sink.messages]
    assert len(ids) == len(set(ids)) == 40


# --- claims: short, renewed, fenced (issue 14, item 7) ----------------------------------

def test_slow_data_beyond_the_lease_is_not_sent_twice(store: Store, store_url: str,
                                                      smtp_sink) -> None:
    """A relay that answers DATA long after the claim's lease: the heartbeat keeps the claim,
    so a second daemon polling all the while never takes the row, and it arrives once."""
    import time

    queue(store, 1)
    # A lease long enough that a loaded 2-core machine still renews it in time (the
    # heartbeat runs every third of it), the stall over two of them.
    lease = timedelta(seconds=6)
    smtp_sink.stall_next("DATA", 13.0)
    slow = OutboxDispatcher(store, sender_factory(smtp_sink), lease=lease)
    other_store = Store.from_url(store_url)  # the second daemon's own connections
    other = OutboxDispatcher(other_store, sender_factory(smtp_sink), lease=lease)
    sending = threading.Thread(target=slow.send_due)
    sending.start()
    # The slow daemon claims the row first (else the other one could simply win the race).
    for _ in range(200):  # bounded: 10 s at most
        row = store.list_outbox()[0]
        if row.lease_until is not None:
            break
        time.sleep(0.05)
    assert row.lease_until is not None, "the slow sender never claimed the row"
    taken_by_other = 0
    try:
        for _ in range(500):  # bounded: about 50 s at most
            if not sending.is_alive():
                break
            taken_by_other += other.send_due()
            time.sleep(0.1)
    finally:
        sending.join(30)
        slow.close()
        other.close()
        other_store.close()
    assert not sending.is_alive()
    assert taken_by_other == 0
    assert [m.message_id for m in smtp_sink.messages] == ["<m0@estelar.example>"]
    assert store.count_outbox() == {"sent": 1}


def test_sender_that_lost_its_claim_does_not_send(store: Store, smtp_sink, caplog) -> None:
    """A sender whose claim was taken over (its lease ran out, another daemon holds the row
    now) does not send the message, logs it with the row id and writes nothing."""
    import logging

    queue(store, 1)
    [stale] = store.claim_due_outbox(lease=timedelta(seconds=-60))  # the lease has run out
    [fresh] = store.claim_due_outbox()
    d = dispatcher(store, smtp_sink, Clock())
    with caplog.at_level(logging.WARNING, logger="mailbot.replies.outbox"):
        d.send_one(stale)
    assert smtp_sink.messages == []
    row = store.get_outbox(stale.id)
    assert row is not None and row.state == "queued" and row.attempts == 0
    assert any(f"outbox {stale.id} " in r.getMessage() and "claim lost" in r.getMessage()
               for r in caplog.records)
    assert d.send_one(fresh) == "sent"
    assert [m.message_id for m in smtp_sink.messages] == ["<m0@estelar.example>"]


def test_sent_after_the_claim_was_lost_is_logged_and_counted(store: Store, smtp_sink,
                                                             caplog) -> None:
    """The claim is lost during the send (the sender stalled beyond its lease and another
    daemon took the row): the relay has the message, the `sent` write is refused, and that
    is logged (WARNING, row id) and counted instead of overwriting the new holder's row."""
    import logging

    queue(store, 1)
    [mine] = store.claim_due_outbox(lease=timedelta(seconds=20))
    smtp_sink.stall_next("DATA", 2.0)
    d = dispatcher(store, smtp_sink, Clock())
    result: list[str] = []
    with caplog.at_level(logging.WARNING, logger="mailbot.replies.outbox"):
        sending = threading.Thread(target=lambda: result.append(d.send_one(mine)))
        sending.start()
        for _ in range(300):  # bounded: wait until the message is in DATA at the relay
            if smtp_sink.peak_in_data_total:
                break
            threading.Event().wait(0.01)
        # Another daemon whose clock is past our lease takes the row over.
        [theirs] = store.claim_due_outbox(now=datetime.now(UTC) + timedelta(minutes=1))
        sending.join(30)
    assert result == ["sent"] and len(smtp_sink.messages) == 1
    assert d.lost == {"sent_unrecorded": 1}
    row = store.get_outbox(mine.id)
    assert row is not None and row.state == "queued" and row.claim_token == theirs.token
    assert any(f"outbox {mine.id} " in r.getMessage() and "claim was lost" in r.getMessage()
               for r in caplog.records)


def test_outcomes_handed_in_together_share_one_commit(store: Store) -> None:
    """Outcomes handed to `GroupCommit` while its commit waits for the store are written in
    that commit: each thread learns whether its own claim held (a stale token's outcome is
    refused), and the rows hold what each reported."""
    queue(store, 6)
    claimed = store.claim_due_outbox(6)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    group = GroupCommit(store)
    results: dict[int, bool] = {}
    errors: list[BaseException] = []
    # While this transaction is open the first thread's commit waits for the store; the
    # others hand their outcomes in meanwhile.
    with store.session() as s:
        s.connection().exec_driver_sql("SELECT 1")  # holds the write lock on SQLite
        threads = []
        for i, item in enumerate(claimed):
            token = item.token if i != 3 else "stale"
            attempt = (SendAttempt.sent(item.id, "250 ok", token) if i % 2 == 0 else
                       SendAttempt.retry(item.id, "451 later", datetime.now(UTC), token))

            def record(attempt: SendAttempt = attempt, i: int = i) -> None:
                try:
                    results[i] = group.record(attempt)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads.append(threading.Thread(target=record))
        for t in threads:
            t.start()
        for _ in range(100):  # every thread has handed its outcome in (bounded wait)
            if len(group._pending) >= 6 or not store.is_sqlite:
                break
            threading.Event().wait(0.02)
        commits.clear()  # this transaction's own commit follows
    for t in threads:
        t.join(10)
    committed = len(commits)
    assert not errors, errors
    assert results == {0: True, 1: True, 2: True, 3: False, 4: True, 5: True}
    rows = {r.id: r for r in store.list_outbox()}
    states = [rows[item.id].state for item in claimed]
    assert states == ["sent", "queued", "sent", "queued", "sent", "queued"]
    assert rows[claimed[3].id].attempts == 0  # refused: nothing written
    if store.is_sqlite:  # this transaction's, then one for all six outcomes
        assert committed == 2


def test_an_error_of_the_shared_commit_reaches_every_thread_in_it(store: Store) -> None:
    """If the transaction of a group fails, each thread whose outcome it held gets the error
    (its row stays as claimed); the next outcome is written in a commit of its own."""
    queue(store, 2)
    claimed = store.claim_due_outbox(2)
    group = GroupCommit(store)
    real = store.record_attempts
    calls = []

    def failing(attempts):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk full")
        return real(attempts)

    store.record_attempts = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            group.record(SendAttempt.sent(claimed[0].id, "250 ok", claimed[0].token))
        assert group.record(SendAttempt.sent(claimed[1].id, "250 ok", claimed[1].token))
    finally:
        del store.record_attempts
    states = {r.id: r.state for r in store.list_outbox()}
    assert states == {claimed[0].id: "queued", claimed[1].id: "sent"}
