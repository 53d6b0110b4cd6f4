"""The outbox dispatcher over the wire: sent, retried on 4xx with backoff, dead on 5xx."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from mailbot.config import OutboundConfig
from mailbot.replies.outbox import OutboxDispatcher, retry_delay
from mailbot.replies.smtp import SmtpSender
from mailbot.store import OutgoingMail, Store


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
