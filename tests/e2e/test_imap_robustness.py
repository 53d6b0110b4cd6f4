"""IMAP intake under faults (reliability.md R4, R5, R6, R7): the real daemon in the test's
loop, the real Dovecot fixture, replies to the aiosmtpd sink.

Every wait is bounded; each test stays well under 90 s (the half-dead-connection test is the
longest: about timeout_seconds = 20 s of waiting for the daemon to notice).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from imapclient import SEEN

from mailbot.config import Config, ImapMailboxConfig
from mailbot.ingest.imap import ImapPoller
from tests.e2e.helpers import (
    daemon_config,
    eventually,
    import_licenses,
    request_mail,
    unique_sender,
    running,
    Watch,
    watch,
)
from tests.fixtures.proxy import TcpProxy

IMAP_LOG = "mailbot.ingest.imap"
PW_ENV = "MB_TEST_IMAP_PW"


def _box(port: int, user: str, **kw: object) -> ImapMailboxConfig:
    opts: dict[str, object] = {"poll_seconds": 0.5, "timeout_seconds": 20}
    opts.update(kw)
    return ImapMailboxConfig(name="support", host="127.0.0.1", port=port, security="none",
                             username=user, password_env=PW_ENV, **opts)  # type: ignore[arg-type]


def _config(base: Config, sink_port: int, box: ImapMailboxConfig) -> Config:
    cfg = daemon_config(base, sink_port, imap=(box,))
    import_licenses(cfg)
    return cfg


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == IMAP_LOG and text in r.getMessage()]


async def _connected(caplog: pytest.LogCaptureFixture, n: int, timeout: float) -> logging.LogRecord:
    """Wait until the poller has logged its n-th successful SELECT; return that record."""
    await eventually(lambda: len(_messages(caplog, ": connected (UIDVALIDITY")) >= n, timeout)
    return _messages(caplog, ": connected (UIDVALIDITY")[n - 1]


def _inbox(dovecot, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
    """UID → flags of every message in `folder` (another client's view)."""
    client = dovecot.imap(user)
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        return {u: tuple(f) for u, f in client.get_flags(uids).items()} if uids else {}
    finally:
        client.logout()


@pytest.fixture(autouse=True)
def _imap_env(monkeypatch: pytest.MonkeyPatch, dovecot, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(PW_ENV, dovecot.password)
    caplog.set_level(logging.INFO, logger=IMAP_LOG)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Watch:
    """IMAP passes, worker passes, FETCHes and pauses of the daemons in the test."""
    return watch(monkeypatch)


# ---------------------------------------------------------------------------------------
# R4: UIDVALIDITY changes
# ---------------------------------------------------------------------------------------

async def test_uidvalidity_changed_while_stopped_and_while_running(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture, seen: Watch
) -> None:
    """A new UIDVALIDITY rescans the folder: old mail is fetched again but makes no new
    ticket or ack (store dedup), new mail after the change is taken in; the change is logged
    once per change. The rescan's passes end and the worker passes after them queue no
    more than one ack per mail (instead of: sleep 1.5 s, then count)."""
    user = dovecot.new_user()
    cfg = _config(base_config, smtp_sink.port, _box(dovecot.imap_port, user))
    for i in range(3):
        await asyncio.to_thread(dovecot.append, user, request_mail(subject=f"Dotaz {i}", sender=unique_sender()))
    async with running(cfg) as daemon:
        await smtp_sink.wait_for_async(3, 20)
        await eventually(lambda: daemon.store.imap_checkpoint("imap:support:INBOX")[1] == 3, 10)
    old = dovecot.status(user)["uidvalidity"]

    # 1) changed while the daemon is stopped
    first = old + 1000
    dovecot.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(first), "INBOX")
    async with running(cfg) as daemon:
        await _connected(caplog, 2, 10)
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Po zmene", sender=unique_sender()))
        await smtp_sink.wait_for_async(4, 15)
        await eventually(lambda: daemon.store.imap_checkpoint("imap:support:INBOX") == (first, 4), 10)
        assert len(_messages(caplog, "uidvalidity_changed")) == 1

        # 2) changed while the daemon sits in IDLE: Dovecot says BYE ("IMAP session state is
        # inconsistent") at the next change it reports; the daemon reconnects and rescans.
        second = old + 2000
        dovecot.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(second), "INBOX")
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Za behu", sender=unique_sender()))
        await smtp_sink.wait_for_async(5, 20)
        await eventually(lambda: daemon.store.imap_checkpoint("imap:support:INBOX") == (second, 5), 15)
        await seen.settled()
        assert daemon.store.count_inbound() == {"decided": 5}
        assert sum(daemon.store.count_outbox().values()) == 5
        fetched = Counter(seen.fetched_uids)
        assert all(fetched[u] >= 2 for u in (1, 2, 3, 4)), fetched  # rescans fetched them again
    assert len(_messages(caplog, "uidvalidity_changed")) == 2
    assert len(smtp_sink.messages) == 5
    assert len({m.message["In-Reply-To"] for m in smtp_sink.messages}) == 5


async def test_uidlist_deleted_uids_reused(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture, seen: Watch
) -> None:
    """Deleting dovecot-uidlist (and the index) gives a new UIDVALIDITY and reuses UIDs 1..n
    (reliability.md): no new ticket for the renumbered old mail; new mail is taken in."""
    user = dovecot.new_user()
    cfg = _config(base_config, smtp_sink.port, _box(dovecot.imap_port, user))
    for i in range(3):
        await asyncio.to_thread(dovecot.append, user, request_mail(subject=f"Dotaz {i}", sender=unique_sender()))
    async with running(cfg) as daemon:
        await smtp_sink.wait_for_async(3, 20)
        await eventually(lambda: daemon.store.imap_checkpoint("imap:support:INBOX")[1] == 3, 10)
    before = dovecot.status(user)

    maildir = Path(dovecot.root) / "mail" / user / "Maildir"
    assert (maildir / "dovecot-uidlist").exists()
    for path in [maildir / "dovecot-uidlist", *map(Path, glob.glob(str(maildir / "dovecot.index*")))]:
        path.unlink()
    after = dovecot.status(user)
    assert after["uidvalidity"] != before["uidvalidity"]
    assert sorted(_inbox(dovecot, user)) == [1, 2, 3]  # the same UIDs, now for maybe other mail

    async with running(cfg) as daemon:
        await _connected(caplog, 2, 10)
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Novy dotaz", sender=unique_sender()))
        await smtp_sink.wait_for_async(4, 15)
        await eventually(
            lambda: daemon.store.imap_checkpoint("imap:support:INBOX") == (after["uidvalidity"], 4), 10)
        await seen.settled()
        assert daemon.store.count_inbound() == {"decided": 4}
        assert sum(daemon.store.count_outbox().values()) == 4
        fetched = Counter(seen.fetched_uids)
        assert all(fetched[u] >= 2 for u in (1, 2, 3)), fetched  # the rescan took them again
    assert len(smtp_sink.messages) == 4
    assert len(_messages(caplog, "uidvalidity_changed")) == 1


# ---------------------------------------------------------------------------------------
# R6: server restart while the daemon is in IDLE
# ---------------------------------------------------------------------------------------

async def test_dovecot_restart_during_idle_reconnects_and_takes_new_mail(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture, seen: Watch
) -> None:
    """Dovecot stopped and started while the daemon is in IDLE (default timeouts: IDLE period
    30 s). The orphaned imap child keeps serving the old connection ~10 s (so mail appended
    right after the start still arrives over it) and then says BYE; the daemon reconnects by
    itself about 1 s later and takes in mail appended after that."""
    user = dovecot.new_user()
    cfg = _config(base_config, smtp_sink.port, _box(dovecot.imap_port, user, timeout_seconds=60))
    async with running(cfg) as daemon:
        await _connected(caplog, 1, 10)
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Pred restartem", sender=unique_sender()))
        await smtp_sink.wait_for_async(1, 15)
        await seen.poller_idle()  # the pass that took it has ended: back in IDLE

        t_stop = time.time()
        await asyncio.to_thread(dovecot.stop)
        t_down = time.time()
        await asyncio.to_thread(dovecot.start)
        t_up = time.time()  # listening and greeting again
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="V mezere", sender=unique_sender()))
        t_gap = time.monotonic()
        record = await _connected(caplog, 2, 30)
        [lost] = _messages(caplog, "connection lost")
        noticed = lost.created - t_stop
        reconnect = record.created - lost.created
        since_up = record.created - t_up
        gap_taken = (await smtp_sink.wait_for_async(2, 15))[1].received_at - t_gap
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Po restartu", sender=unique_sender()))
        t_append = time.monotonic()
        await smtp_sink.wait_for_async(3, 15)
        taken = time.monotonic() - t_append
        print(f"\n[R6] dovecot stop took {t_down - t_stop:.2f} s, start {t_up - t_down:.2f} s; "
              f"old connection ended {noticed:.2f} s after the stop ({lost.getMessage().split(': ', 1)[1]}); "
              f"re-SELECT {reconnect:.2f} s after that, {since_up:.2f} s after the server listened again; "
              f"mail appended right after the start acked in {gap_taken:.2f} s; "
              f"mail appended after the reconnect acked in {taken:.2f} s")
        assert noticed <= 20, noticed  # the server's BYE (or the end of the IDLE period)
        assert reconnect <= 2.5, reconnect  # 1 s pause, then the first attempt succeeds
        assert daemon.store.count_inbound() == {"decided": 3}
    assert len(smtp_sink.messages) == 3


# ---------------------------------------------------------------------------------------
# R7: a half-dead connection
# ---------------------------------------------------------------------------------------

def test_default_timeouts_detect_a_dead_connection_within_60_s() -> None:
    """Defaults: IDLE re-issued every 30 s, socket read timeout 30 s: the tagged answer to DONE
    is overdue at most 30 + 30 = 60 s after the connection died."""
    box = ImapMailboxConfig(host="imap.example", username="bot")
    assert box.timeout_seconds == 60
    poller = ImapPoller(box, intake=None, store=None, stop=None, password=None)  # type: ignore[arg-type]
    assert poller.idle_period == 30
    assert poller.socket_timeout.read == 30
    assert poller.idle_period + poller.socket_timeout.read <= 60


async def test_half_dead_connection_is_noticed_and_replaced(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture, seen: Watch
) -> None:
    timeout = 20.0
    user = dovecot.new_user()
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        cfg = _config(base_config, smtp_sink.port, _box(proxy.port, user, timeout_seconds=timeout))
        async with running(cfg) as daemon:
            await _connected(caplog, 1, 10)
            await asyncio.to_thread(dovecot.append, user, request_mail(subject="Pred zamrznutim", sender=unique_sender()))
            await smtp_sink.wait_for_async(1, 15)
            await seen.poller_idle()  # the pass that took it has ended: back in IDLE
            assert proxy.connections == 1

            proxy.freeze()  # nothing passes, nothing closes
            t_freeze = time.monotonic()
            t_new = await asyncio.to_thread(proxy.wait_for_connections, 2, timeout + 10)
            detected = t_new - t_freeze
            await _connected(caplog, 2, 10)
            await asyncio.to_thread(dovecot.append, user, request_mail(subject="Po zamrznuti", sender=unique_sender()))
            t_append = time.monotonic()
            await smtp_sink.wait_for_async(2, 15)
            taken = time.monotonic() - t_append
            print(f"\n[R7] timeout_seconds={timeout:.0f}: frozen connection replaced after "
                  f"{detected:.2f} s; new mail acked {taken:.2f} s after APPEND")
            assert detected <= timeout + 3, detected
            assert daemon.store.count_inbound() == {"decided": 2}
            assert proxy.connections == 2
    assert len(smtp_sink.messages) == 2


# ---------------------------------------------------------------------------------------
# Wrong credentials
# ---------------------------------------------------------------------------------------

async def test_wrong_password_logged_once_recorded_and_stops_cleanly(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, seen: Watch
) -> None:
    """A refused login is logged once and recorded (without the password), and the poller
    then pauses the slow login retry (300 s) rather than spinning: the pause it chose is
    recorded (instead of: sleep 3 s, then count logins). A stop ends that pause at once.
    The password the daemon tried appears in no log record and not in the recorded error
    (the server's own password is the word "secret", which other log lines use)."""
    tried = "wrong-pw-5c81e7"
    monkeypatch.setenv(PW_ENV, tried)
    user = dovecot.new_user()
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:  # counts the logins tried
        cfg = _config(base_config, smtp_sink.port, _box(proxy.port, user))
        async with running(cfg) as daemon:
            await eventually(lambda: bool(_messages(caplog, "login refused")), 10)
            await eventually(lambda: bool(seen.pauses), 10)
            assert seen.pauses == [300.0]
            assert len(_messages(caplog, "login refused")) == 1
            assert proxy.connections == 1
            await eventually(lambda: proxy.open_connections == 0, 5)  # closed, not leaked
            [checkpoint] = daemon.store.imap_checkpoints()
            assert checkpoint.last_error and "login refused" in checkpoint.last_error
            assert tried not in checkpoint.last_error
            t_stop = time.monotonic()
        stopped = time.monotonic() - t_stop
    print(f"\n[login] daemon with a refused login stopped in {stopped * 1000:.0f} ms")
    assert stopped < 10
    assert not [r.getMessage() for r in caplog.records if tried in r.getMessage()]


# ---------------------------------------------------------------------------------------
# R5: mark modes and other clients' flags
# ---------------------------------------------------------------------------------------

async def test_move_mode_moves_stored_mail_to_processed(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    user = dovecot.new_user()
    cfg = _config(base_config, smtp_sink.port,
                  _box(dovecot.imap_port, user, after_store="move", move_to="Processed"))
    await asyncio.to_thread(dovecot.append, user, request_mail(subject="Prvni", sender=unique_sender()))
    async with running(cfg) as daemon:
        await smtp_sink.wait_for_async(1, 15)
        await _connected(caplog, 1, 10)
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Druhy", sender=unique_sender()))
        await smtp_sink.wait_for_async(2, 15)
        await eventually(lambda: dovecot.status(user, "Processed")["messages"] == 2, 10)
        assert _inbox(dovecot, user) == {}
        assert len(_inbox(dovecot, user, "Processed")) == 2
        assert daemon.store.count_inbound() == {"decided": 2}
        assert not _messages(caplog, "connection lost")


async def test_seen_set_by_another_client_does_not_hide_mail(
    base_config: Config, smtp_sink, dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    """mailbot never reads \\Seen as state: mail another client has read is still taken in."""
    user = dovecot.new_user()
    cfg = _config(base_config, smtp_sink.port, _box(dovecot.imap_port, user))
    await asyncio.to_thread(dovecot.append, user, request_mail(subject="Uz precteno", sender=unique_sender()), "INBOX",
                            (SEEN,))
    uid = await asyncio.to_thread(dovecot.append, user, request_mail(subject="Precte jiny klient", sender=unique_sender()))
    client = await asyncio.to_thread(dovecot.imap, user)
    client.select_folder("INBOX")
    client.add_flags([uid], [SEEN])
    client.logout()
    assert dovecot.status(user)["unseen"] == 0
    async with running(cfg) as daemon:
        await smtp_sink.wait_for_async(2, 15)
        await _connected(caplog, 1, 10)
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Za behu precteno", sender=unique_sender()),
                                "INBOX", (SEEN,))
        await smtp_sink.wait_for_async(3, 15)
        await eventually(lambda: all(b"$MailbotStored" in f for f in _inbox(dovecot, user).values())
                         and len(_inbox(dovecot, user)) == 3, 10)
        assert daemon.store.count_inbound() == {"decided": 3}


# ---------------------------------------------------------------------------------------
# Several daemons: one poller per mailbox (the store lease)
# ---------------------------------------------------------------------------------------

async def test_standby_poller_takes_over_when_the_lease_expires(
    base_config: Config, dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    """A mailbox whose lease another (dead) daemon holds is not polled until the lease
    expires; then this poller takes it over and takes the mail in; a clean stop frees it."""
    import threading

    from mailbot.migrations import open_store
    from mailbot.ingest.intake import Intake

    user = dovecot.new_user()
    box = _box(dovecot.imap_port, user, lease_seconds=6)
    store = open_store(base_config)
    key = "imap:support:INBOX"
    assert store.acquire_lease(key, "dead-daemon", 6)
    await asyncio.to_thread(dovecot.append, user, request_mail(sender=unique_sender()))
    stop = threading.Event()
    poller = ImapPoller(box, Intake(store), store, stop, password=dovecot.password,
                        holder="standby")
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        await eventually(lambda: bool(_messages(caplog, "polled by dead-daemon; standing by")), 5)
        assert store.count_inbound() == {}  # the lease holder's mailbox: not touched
        await eventually(lambda: store.count_inbound() == {"received": 1}, 15)
        assert store.lease_holder(key) == "standby"
        assert _messages(caplog, "took the mailbox over")
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive()
    assert store.lease_holder(key) is None  # released at the clean stop
    store.close()


# ---------------------------------------------------------------------------------------
# Mail that arrives just before IDLE
# ---------------------------------------------------------------------------------------

def test_mail_reported_with_idles_continuation_ends_the_idle_at_once(dovecot) -> None:
    """Mail appended after the pass's last command is reported right behind "+ idling"
    (Dovecot syncs when IDLE starts, one packet). imaplib reads that continuation with a
    buffered readline, so the EXISTS waits in its buffer where idle_check's socket poll does
    not look: before the fix every such mail waited out the IDLE period (30 s by default),
    which made the restart test above fail now and then. Default timeouts here."""
    user = dovecot.new_user()
    dovecot.append(user, request_mail(subject="Uz prectena"))
    poller = ImapPoller(_box(dovecot.imap_port, user, timeout_seconds=60), intake=None,  # type: ignore[arg-type]
                        store=None, stop=threading.Event(), password=dovecot.password)  # type: ignore[arg-type]
    assert poller.idle_period == 30
    poller._renewed_at = time.monotonic()  # no store: the lease counts as just renewed
    client = poller.connect()
    try:
        client.select_folder("INBOX")
        client._imap.untagged_responses.clear()  # the pass has seen what SELECT reported
        dovecot.append(user, request_mail(subject="Tesne pred IDLE"))
        start = time.monotonic()
        poller._idle(client)
        waited = time.monotonic() - start
        assert waited < 5, f"IDLE sat on the reported mail for {waited:.1f} s"
        assert client.search(["UNSEEN"]) == [1, 2]  # the connection is usable after DONE
    finally:
        client.logout()
