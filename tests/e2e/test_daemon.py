"""The whole daemon in the test's loop: mail in over SMTP/LMTP and IMAP, replies out over
SMTP to a real aiosmtpd sink, Dovecot as the IMAP server."""

from __future__ import annotations

import asyncio
import os
import smtplib
import sqlite3
from pathlib import Path

import pytest

from mailbot.config import Config, ImapMailboxConfig
from mailbot.store import Store
from tests.e2e.helpers import (
    daemon_config,
    eventually,
    import_licenses,
    request_mail,
    running,
    smtp_send,
    watch,
)


async def test_smtp_request_gets_ack_with_ticket_tag(base_config: Config, smtp_sink, tmp_path: Path) -> None:
    """A request over SMTP is answered 250 after commit, and the ack reaches the relay."""
    cfg = daemon_config(base_config, smtp_sink.port)
    import_licenses(cfg)
    async with running(cfg) as daemon:
        raw = request_mail()
        port = daemon.listen_port
        await asyncio.to_thread(smtp_send, port, raw)
        [ack] = await asyncio.to_thread(smtp_sink.wait_for, 1, 10)
    msg = ack.message
    assert "[#T-2026-000001]" in str(msg["Subject"]) or "[#T-" in str(msg["Subject"])
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] and msg["In-Reply-To"] in raw.decode()
    assert ack.rcpt_tos == ("dvorak@strojirny-hranice.cz",)
    assert str(msg["Message-ID"]).startswith("<ticket-T-")


async def test_a_burst_over_gives_its_memory_back(base_config: Config, smtp_sink,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """When the worker finds nothing more to do after deciding mail, the allocator's free
    memory goes back to the system (mailbot.memory.trim), once per burst."""
    from mailbot import memory

    trims: list[bool] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(True) or True)
    cfg = daemon_config(base_config, smtp_sink.port)
    import_licenses(cfg)
    async with running(cfg) as daemon:
        await asyncio.sleep(0.5)
        assert trims == []  # nothing decided yet
        await asyncio.to_thread(smtp_send, daemon.listen_port, request_mail())
        await asyncio.to_thread(smtp_sink.wait_for, 1, 10)
        await eventually(lambda: trims == [True])
        await asyncio.sleep(0.5)  # idle polls do not trim again
    assert trims == [True]


async def test_listener_refuses_foreign_recipient_and_oversize(base_config: Config, smtp_sink) -> None:
    """550 for a recipient that is not ours, 552 above the size limit; nothing stored."""
    cfg = daemon_config(base_config, smtp_sink.port, max_bytes=20_000)
    async with running(cfg) as daemon:
        port = daemon.listen_port
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asyncio.to_thread(smtp_send, port, request_mail(), "someone@else.example")
        assert refused.value.recipients["someone@else.example"][0] == 550
        big = request_mail(body=("x" * 70 + "\n") * 600)
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # SIZE= in MAIL FROM
            await asyncio.to_thread(smtp_send, port, big)
        assert declared.value.smtp_code == 552
        assert await asyncio.to_thread(_data_without_size, port, big) == 552
        assert daemon.store.count_inbound() == {}


def _data_without_size(port: int, raw: bytes) -> int:
    """Send DATA without announcing SIZE, so only the byte count can stop it."""
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo()
        c.mail("dvorak@strojirny-hranice.cz")
        c.rcpt("podpora@estelar.example")
        code, _ = c.data(raw)
        return code


async def test_lmtp_answers_451_when_store_unavailable(base_config: Config, smtp_sink, tmp_path: Path) -> None:
    """With the inbound table gone the listener answers 451 (never 250 without a commit)."""
    cfg = daemon_config(base_config, smtp_sink.port, protocol="lmtp")
    async with running(cfg) as daemon:
        db = cfg.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as c:
            c.execute("ALTER TABLE inbound_messages RENAME TO inbound_away")
        with pytest.raises(smtplib.SMTPDataError) as err:
            await asyncio.to_thread(smtp_send, daemon.listen_port, request_mail(), lmtp=True)
        assert err.value.smtp_code == 451
        with sqlite3.connect(db) as c:
            c.execute("ALTER TABLE inbound_away RENAME TO inbound_messages")
        result = await asyncio.to_thread(smtp_send, daemon.listen_port, request_mail(), lmtp=True)
        assert result == {}
        await asyncio.to_thread(smtp_sink.wait_for, 1, 10)


async def test_imap_append_to_ack_then_restart_processes_nothing_twice(
    base_config: Config, smtp_sink, dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAP APPEND → ack at the sink, message flagged; a restart takes nothing in twice: its
    first IMAP pass ends without fetching any message (the store's dedup would hide a
    re-fetch, so the FETCHes are counted), and the worker passes after it queue nothing."""
    user = dovecot.new_user()
    box = ImapMailboxConfig(name="support", host="127.0.0.1", port=dovecot.imap_port,
                            security="none", username=user, password_env="MB_TEST_IMAP_PW",
                            poll_seconds=0.5, timeout_seconds=10)
    cfg = daemon_config(base_config, smtp_sink.port, imap=(box,))
    import_licenses(cfg)
    os.environ["MB_TEST_IMAP_PW"] = dovecot.password
    raw = request_mail()
    await asyncio.to_thread(dovecot.append, user, raw)
    async with running(cfg) as daemon:
        [ack] = await asyncio.to_thread(smtp_sink.wait_for, 1, 15)
        assert "[#T-" in str(ack.message["Subject"])
        client = await asyncio.to_thread(dovecot.imap, user)
        client.select_folder("INBOX")
        flags = client.get_flags(client.search(["ALL"]))
        client.logout()
        assert all(b"\\Seen" in f and b"$MailbotStored" in f for f in flags.values())
        # New mail while IDLE is picked up too.
        await asyncio.to_thread(dovecot.append, user, request_mail(subject="Druhý dotaz"))
        await asyncio.to_thread(smtp_sink.wait_for, 2, 15)
        store: Store = daemon.store
        counts = store.count_inbound()
        queued = sum(store.count_outbox().values())
    seen = watch(monkeypatch)
    async with running(cfg) as daemon:
        await seen.settled()
        assert seen.taken[0] == 0 and seen.fetched_uids == []
        assert daemon.store.count_inbound() == counts == {"decided": 2}
        assert sum(daemon.store.count_outbox().values()) == queued == 2
    assert len(smtp_sink.messages) == 2
