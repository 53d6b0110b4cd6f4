"""IMAP intake memory is bounded, and the checkpoint never passes a message not taken in.

The real Dovecot fixture; the poller's FETCH commands are recorded by wrapping imapclient's
`fetch` (arguments and the bytes each answer carried), so the bounds are asserted through
what was asked of the server, not through timing or process memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from imapclient import IMAPClient

from mailbot.migrations import open_store
from mailbot.config import Config, ImapMailboxConfig, LimitsConfig
from mailbot.ingest.imap import ImapPoller
from mailbot.ingest.intake import Intake
from tests.e2e.helpers import (
    daemon_config,
    eventually,
    import_licenses,
    request_mail,
    running,
    unique_sender,
)

PW_ENV = "MB_TEST_IMAP_PW"
KEY = "imap:support:INBOX"
LIMIT = 100 * 1024  # limits.message_bytes in these tests
HEADER_CAP = 8 * 1024  # limits.header_bytes
BATCH_BYTES = 64 * 1024  # imap.batch_bytes


@dataclass
class Fetch:
    """One FETCH the poller sent: the items asked for and the bytes per UID answered."""

    uids: list[int]
    items: list[bytes]
    answered: dict[int, int] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        return b"BODY.PEEK[]" in self.items


def _bytes_of(data: dict[bytes, Any]) -> int:
    return sum(len(v) for k, v in data.items() if k.startswith(b"BODY[") and v is not None)


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Fetch]]:
    """Every FETCH sent from a poller thread (`imap-*`), recorded around the real one."""
    recorded: list[Fetch] = []
    original = IMAPClient.fetch

    def fetch(self: IMAPClient, messages: Any, data: Any, modifiers: Any = None) -> Any:
        answer = original(self, messages, data, modifiers)
        if threading.current_thread().name.startswith("imap-"):
            uids = [messages] if isinstance(messages, (str, int)) else list(messages)
            items = [d if isinstance(d, bytes) else str(d).encode() for d in data]
            recorded.append(Fetch(uids, items, {u: _bytes_of(v) for u, v in answer.items()}))
        return answer

    monkeypatch.setattr(IMAPClient, "fetch", fetch)
    yield recorded


@pytest.fixture(autouse=True)
def _imap_env(monkeypatch: pytest.MonkeyPatch, dovecot) -> None:
    monkeypatch.setenv(PW_ENV, dovecot.password)


def _box(port: int, user: str, **kw: object) -> ImapMailboxConfig:
    opts: dict[str, object] = {"poll_seconds": 0.5, "timeout_seconds": 20}
    opts.update(kw)
    return ImapMailboxConfig(name="support", host="127.0.0.1", port=port, security="none",
                             username=user, password_env=PW_ENV, **opts)  # type: ignore[arg-type]


def _limits(base: Config) -> LimitsConfig:
    return base.limits.model_copy(update={"message_bytes": LIMIT, "header_bytes": HEADER_CAP,
                                          "attachment_bytes": LIMIT})


def _padded(kib: int, *, sender: str, auto: bool = False) -> bytes:
    """A licensed request of about `kib` KiB (plain ASCII lines appended to the text)."""
    body = ("Dobry den,\n\nv ACS-line se neulozi smenny kalendar.\n\nLicencni cislo: 4012-7733\n\n"
            + "Log: radek s podrobnostmi chyby 0123456789 abcdefghij\n" * (kib * 1024 // 53))
    raw = request_mail(subject=f"Dotaz {kib} KiB", body=body, sender=sender)
    if auto:
        raw = b"Auto-Submitted: auto-replied\r\n" + raw
    return raw


async def test_oversized_mail_is_not_fetched_whole_and_fetches_are_bounded_by_bytes(
    base_config: Config, smtp_sink, dovecot, fetches: list[Fetch]
) -> None:
    """Before: one FETCH of BODY.PEEK[] took `batch` (200) whole messages of any size.
    Now sizes come first; no FETCH answer carries more than imap.batch_bytes of bodies; a
    message over limits.message_bytes is never fetched whole: only its header section
    (capped at limits.header_bytes), stored as a stand-in that the worker quarantines
    too_large; the person who sent it is told the limit, the automatic sender is not."""
    user = dovecot.new_user()
    box = _box(dovecot.imap_port, user, batch_bytes=BATCH_BYTES)
    cfg = daemon_config(base_config, smtp_sink.port, imap=(box,)).model_copy(
        update={"limits": _limits(base_config)})
    import_licenses(cfg)
    people = [unique_sender() for _ in range(3)]
    mails = [_padded(20, sender=unique_sender()) for _ in range(6)]  # 6 × ~20 KiB > 64 KiB
    mails += [_padded(200, sender=s) for s in people]  # over the 100 KiB limit
    mails.append(_padded(300, sender=unique_sender(), auto=True))  # over it, automatic
    uids = [await asyncio.to_thread(dovecot.append, user, raw) for raw in mails]
    normal, large = uids[:6], uids[6:]
    assert sum(len(m) for m in mails[:6]) > BATCH_BYTES
    assert all(len(m) > LIMIT for m in mails[6:])

    async with running(cfg) as daemon:
        # 6 acknowledgements, 3 notes "too large" (the automatic sender gets none)
        await smtp_sink.wait_for_async(9, 30)
        await eventually(lambda: daemon.store.count_inbound().get("received", 0) == 0
                         and daemon.store.imap_checkpoint(KEY)[1] == uids[-1], 15)
        # Every message decided: the mail each decision queued was committed with it, so
        # the outbox holds all there will be (instead of: sleep 1.5 s for a wrong extra one).
        assert sum(daemon.store.count_outbox().values()) == 9
        counts = daemon.store.count_inbound()
        rows = [daemon.store.get_inbound(i) for i in range(1, 11)]

    whole = [f for f in fetches if f.whole]
    heads = [f for f in fetches if any(i.startswith(b"BODY.PEEK[HEADER]") for i in f.items)]
    fetched_whole = [u for f in whole for u in f.answered]
    assert sorted(fetched_whole) == normal  # each normal one once, no large one ever whole
    assert len(whole) >= 2
    for f in whole:
        assert sum(f.answered.values()) <= BATCH_BYTES, f
    assert sorted(u for f in heads for u in f.answered) == large
    for f in heads:
        assert f.items == [f"BODY.PEEK[HEADER]<0.{HEADER_CAP}>".encode()]
        assert all(n <= HEADER_CAP for n in f.answered.values()), f

    assert counts == {"decided": 6, "quarantined": 4}
    quarantined = [r for r in rows if r is not None and r.state == "quarantined"]
    assert len(quarantined) == 4
    for r in quarantined:
        assert r.error is not None and r.error.startswith("too_large: ")
        assert "only the header section was fetched" in r.error
        assert len(r.raw) <= HEADER_CAP + 200
    told = sorted(a for m in smtp_sink.messages for a in m.rcpt_tos if a in people)
    assert told == sorted(people)
    assert len(smtp_sink.messages) == 9


async def test_fetch_answer_without_body_does_not_move_checkpoint_past_it(
    base_config: Config, dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a UID missing from the FETCH answer was skipped and the checkpoint saved at
    the batch's last UID, so that message was never taken in. Now the checkpoint stays below
    it and the next pass takes it in (later UIDs are not fetched twice)."""
    caplog.set_level(logging.WARNING, logger="mailbot.ingest.imap")
    user = dovecot.new_user()
    uids = [await asyncio.to_thread(dovecot.append, user, request_mail(sender=unique_sender()))
            for _ in range(3)]
    store = open_store(base_config)
    poller = ImapPoller(_box(dovecot.imap_port, user), Intake(store), store, threading.Event(),
                        password=dovecot.password)
    client = await asyncio.to_thread(dovecot.imap, user)
    try:
        uidvalidity = int(client.select_folder("INBOX")[b"UIDVALIDITY"])
        real_fetch = client.fetch
        asked: list[list[int]] = []
        broken = {"uid": uids[1]}

        def fetch(messages: Any, data: Any, modifiers: Any = None) -> Any:
            """The server answers UID 2 without its body (once): a broken server."""
            answer = real_fetch(messages, data, modifiers)
            if any(b"BODY" in (d if isinstance(d, bytes) else str(d).encode()) for d in data):
                asked.append(list(messages))
                if broken.get("uid") in answer:
                    answer[broken.pop("uid")] = {b"SEQ": 2}
            return answer

        client.fetch = fetch  # type: ignore[method-assign]
        assert await asyncio.to_thread(poller.take_new, client, uidvalidity) == 2
        assert store.imap_checkpoint(KEY) == (uidvalidity, uids[0])
        assert store.count_inbound() == {"received": 2}
        assert any("UID 2: the FETCH answer has no BODY[]" in r.getMessage()
                   for r in caplog.records)

        assert await asyncio.to_thread(poller.take_new, client, uidvalidity) == 1
        assert store.imap_checkpoint(KEY) == (uidvalidity, uids[2])
        assert store.count_inbound() == {"received": 3}
        assert asked[-1] == [uids[1]]  # UID 3, already stored, was not fetched again
    finally:
        client.logout()
        store.close()


def test_a_fetch_holds_its_bytes_once(dovecot, caplog: pytest.LogCaptureFixture) -> None:
    """imaplib at imapclient's debug level 5 formatted a repr of every fetched message and
    of the whole answer, logged or not: ~3x the bytes at once. The poller's connection
    holds a FETCH's bytes about once, unless imapclient's imaplib logger is at DEBUG."""
    import tracemalloc

    user = dovecot.new_user()
    mails = [_padded(60, sender=unique_sender()) for _ in range(20)]  # ~1.2 MB
    for raw in mails:
        dovecot.append(user, raw)
    poller = ImapPoller(_box(dovecot.imap_port, user), Intake(None), None,  # type: ignore[arg-type]
                        threading.Event(), password=dovecot.password)
    client = poller.connect()
    try:
        client.select_folder("INBOX")
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            answer = client.fetch(list(range(1, 21)), [b"BODY.PEEK[]"])
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        fetched = sum(_bytes_of(v) for v in answer.values())
    finally:
        client.logout()
    assert fetched >= sum(len(m) for m in mails)
    assert peak < 1.5 * fetched
    with caplog.at_level(logging.DEBUG, logger="imapclient.imaplib"):
        debugged = poller.connect()  # whoever asks for imaplib's lines still gets them
        debugged.logout()
    assert any("LOGOUT" in r.getMessage() for r in caplog.records
               if r.name == "imapclient.imaplib")
