"""Heartbeats of claimed work: renewals while the work lasts, no thread for work that ends
before its first renewal is due."""

from __future__ import annotations

import threading
import time

from mailbot.claims import Heartbeat


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_work_shorter_than_an_interval_starts_no_thread_and_never_renews() -> None:
    """Most batches end long before a third of their lease: entering and leaving the
    heartbeat then starts no thread of its own, and the renewal is never called, not even
    when its time comes after the work has ended."""
    calls: list[float] = []
    for _ in range(50):
        with Heartbeat(lambda: calls.append(time.monotonic()), 0.2, "hb-short"):
            assert not _threads_named("hb-short")
    time.sleep(0.4)  # past every first renewal's time
    assert calls == []
    assert not _threads_named("hb-short")


def test_long_work_is_renewed_every_interval_until_it_ends() -> None:
    """Work that outlasts the interval is renewed at each interval from the start, in a
    thread named after the heartbeat; after the context is left, no renewal follows."""
    calls: list[float] = []
    started = time.monotonic()
    with Heartbeat(lambda: calls.append(time.monotonic() - started), 0.1, "hb-long") as beat:
        deadline = time.monotonic() + 5.0  # bounded: at most 5 s
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _threads_named("hb-long")
    ended = len(calls)
    assert ended >= 3 and beat.beats == ended
    assert calls[0] >= 0.1  # the first renewal one interval after the start
    time.sleep(0.3)
    assert len(calls) == ended
    assert not _threads_named("hb-long")


def test_a_failing_renewal_is_tried_again_at_the_next_beat() -> None:
    """A renewal that raises (the database briefly away) is logged and tried again."""
    calls: list[int] = []

    def renew() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    with Heartbeat(renew, 0.05, "hb-fail") as beat:
        deadline = time.monotonic() + 5.0
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) >= 2 and beat.beats == len(calls) - 1


def test_heartbeats_due_in_any_order_each_start_on_time() -> None:
    """A heartbeat entered after a slower one, but due sooner, is not kept waiting behind
    it (the shared waker wakes for the sooner time)."""
    slow: list[float] = []
    fast: list[float] = []
    started = time.monotonic()
    with Heartbeat(lambda: slow.append(time.monotonic() - started), 2.0, "hb-slow"):
        with Heartbeat(lambda: fast.append(time.monotonic() - started), 0.05, "hb-fast"):
            deadline = time.monotonic() + 5.0
            while not fast and time.monotonic() < deadline:
                time.sleep(0.01)
    assert fast and fast[0] < 1.0
    assert slow == []


def test_what_a_renewal_holds_is_freed_when_the_work_ends() -> None:
    """The heartbeat waits for its first renewal's time in the shared waker even after the
    work has ended; what its renewal holds (an outbox batch and its messages) is not kept
    alive until then."""
    import gc
    import weakref

    class Batch:
        pass

    batch = Batch()
    held = weakref.ref(batch)
    with Heartbeat(lambda b=batch: b, 30.0, "hb-held"):
        pass
    del batch
    gc.collect()
    assert held() is None
