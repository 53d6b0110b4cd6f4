"""Helpers for end-to-end tests: sample mail, daemon configs, running the daemon in the
test's loop, sending over SMTP/LMTP."""

from __future__ import annotations

import asyncio
import email.policy
import itertools
import smtplib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from mailbot.app import Daemon
from mailbot.config import Config, ImapMailboxConfig

LICENSES = b"""license,customer,email_domain,activated_on,support_tier,max_version_date
40127733,Strojirny Hranice a.s.,strojirny-hranice.cz,2026-08-03,START,2027-02-03
"""


_senders = itertools.count(1)


def unique_sender() -> str:
    """A fresh customer address (one sender gets at most 3 automatic replies an hour)."""
    return f"zakaznik{next(_senders)}@strojirny-hranice.cz"


def request_mail(subject: str = "Nejde ulozit smenny kalendar", body: str | None = None,
                 sender: str = "dvorak@strojirny-hranice.cz") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Pavel Dvořák <{sender}>"
    msg["To"] = "podpora@estelar.example"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="strojirny-hranice.cz")
    msg["Date"] = "Tue, 24 Nov 2026 09:00:00 +0100"
    msg.set_content(body or (
        "Dobrý den,\n\npo kliknutí na Uložit se v ACS-line zobrazí chyba „Neplatný interval“ "
        "a směnný kalendář pro třetí směnu se neuloží. Prosím o radu, jak postupovat.\n\n"
        "Licenční číslo: 4012-7733\n\nS pozdravem\nPavel Dvořák\n"
    ))
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as a real client sends


def daemon_config(base: Config, sink_port: int, *, listener_port: int = 0,
                  protocol: str = "smtp", imap: tuple[ImapMailboxConfig, ...] = (),
                  max_bytes: int = 1_000_000, staff_notify: tuple[str, ...] = ()) -> Config:
    """A daemon on the test sink. Staff notices are off unless `staff_notify` names
    recipients, so the sink receives only what goes to customers; no daily digest."""
    return base.model_copy(update={
        "schedule": base.schedule.model_copy(update={"digest": False}),
        "mailbox": base.mailbox.model_copy(update={"staff_notify": staff_notify}),
        "listener": base.listener.model_copy(update={
            "port": listener_port, "protocol": protocol, "max_message_bytes": max_bytes}),
        "outbound": base.outbound.model_copy(update={
            "mode": "smtp", "host": "127.0.0.1", "port": sink_port, "security": "none"}),
        "worker": base.worker.model_copy(update={"poll_seconds": 0.2}),
        "imap": imap,
    })


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Daemon]:
    """Start the daemon as a task; stop it cleanly (as SIGTERM would) on exit."""
    daemon = await asyncio.to_thread(Daemon.build, config)
    started = asyncio.Event()
    task = asyncio.create_task(daemon.run(install_signals=False, ready=lambda d: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield daemon
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 15)


def import_licenses(config: Config | str) -> None:
    """The sample registry into the store of `config` (migrated) or at a URL (migrated
    already)."""
    from mailbot.migrations import open_store
    from mailbot.registry import read_license_csv
    from mailbot.store import Store

    store = Store.from_url(config) if isinstance(config, str) else open_store(config)
    records, errors = read_license_csv(LICENSES.decode())
    assert not errors
    store.upsert_licenses(records)
    store.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def smtp_send(port: int, raw: bytes, rcpt: str = "podpora@estelar.example",
               lmtp: bool = False, sender: str = "dvorak@strojirny-hranice.cz"
               ) -> dict[str, tuple[int, bytes]]:
    """Deliver `raw` to the daemon's listener as a client would (30 s timeout)."""
    cls = smtplib.LMTP if lmtp else smtplib.SMTP
    with cls("127.0.0.1", port, timeout=30) as c:
        return c.sendmail(sender, [rcpt], raw)




def feed(port: int, mails: list[bytes], accepted: list[str], stop: threading.Event, *,
         lmtp: bool = False, refused: Counter[str] | None = None,
         sender: str = "customer@strojirny-hranice.cz") -> None:
    """Deliver like an MTA: retry each mail after a 4xx or a lost connection until a 250 (or
    `stop`), give it up after a 5xx; append each accepted Message-ID to `accepted`, count
    refusals in `refused`."""
    client = smtplib.LMTP if lmtp else smtplib.SMTP
    for raw in mails:
        mid = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        while not stop.is_set():
            try:
                with client("127.0.0.1", port, timeout=30) as c:
                    c.sendmail(sender, ["podpora@estelar.example"], raw)
                accepted.append(mid)
                break
            except smtplib.SMTPResponseException as exc:
                if refused is not None:
                    refused[str(exc.smtp_code)] += 1
                if exc.smtp_code >= 500:
                    break  # refused for good: an MTA would bounce it, not retry
            except (OSError, smtplib.SMTPException) as exc:
                if refused is not None:
                    refused[type(exc).__name__] += 1
            time.sleep(0.05)


class Watch:
    """What the daemons in this test did, seen by wrapping the real methods (class-level,
    through `monkeypatch`; every call goes on to the original):

    * IMAP passes: `ImapPoller.take_new` calls started and ended, and what each returned;
    * worker passes: `HealthState.worker_done` calls (one per finished `run_once`);
    * FETCHes of whole messages sent from a poller thread, by the UIDs answered;
    * the poller's chosen pauses (`ImapPoller._pause`, seconds).

    These are positive signals: a test waits for the pass that must have happened, instead
    of sleeping and asserting that nothing changed meanwhile (the store's deduplication
    hides a message taken in twice; only the FETCH shows it).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passes_started = 0
        self.passes_ended = 0
        self.taken: list[int] = []  # take_new's result per ended pass
        self.worker_passes = 0
        self.body_fetches: list[list[int]] = []
        self.pauses: list[float] = []

    @property
    def fetched_uids(self) -> list[int]:
        with self.lock:
            return [u for f in self.body_fetches for u in f]

    async def poller_idle(self, timeout: float = 15.0) -> None:
        """Return once at least one IMAP pass has ended and none is in flight: whatever the
        poller took in (and the checkpoint it saved) is committed."""
        await eventually(lambda: self.passes_ended >= 1
                         and self.passes_started == self.passes_ended, timeout)

    async def worker_caught_up(self, timeout: float = 15.0) -> None:
        """Return after two more worker passes: the second began after this call, so every
        message stored before it has been decided (and its mail queued) by then."""
        start = self.worker_passes
        await eventually(lambda: self.worker_passes >= start + 2, timeout)

    async def settled(self, timeout: float = 15.0) -> None:
        """The poller's passes so far have ended and the worker has decided what they took."""
        await self.poller_idle(timeout)
        await self.worker_caught_up(timeout)


def watch(monkeypatch: Any) -> Watch:
    """Install a `Watch` on ImapPoller, HealthState and IMAPClient for this test."""
    from imapclient import IMAPClient

    from mailbot.health import HealthState
    from mailbot.ingest.imap import ImapPoller

    w = Watch()
    take_new, worker_done, fetch, pause = (ImapPoller.take_new, HealthState.worker_done,
                                           IMAPClient.fetch, ImapPoller._pause)

    def watched_take_new(self: ImapPoller, client: Any, uidvalidity: int) -> int:
        with w.lock:
            w.passes_started += 1
        try:
            n = take_new(self, client, uidvalidity)
            with w.lock:
                w.taken.append(n)
            return n
        finally:
            with w.lock:
                w.passes_ended += 1

    def watched_worker_done(self: HealthState) -> None:
        worker_done(self)
        with w.lock:
            w.worker_passes += 1

    def watched_fetch(self: IMAPClient, messages: Any, data: Any, modifiers: Any = None) -> Any:
        answer = fetch(self, messages, data, modifiers)
        items = [d if isinstance(d, bytes) else str(d).encode() for d in data]
        if (threading.current_thread().name.startswith("imap-")
                and any(i.startswith(b"BODY.PEEK[]") for i in items)):
            with w.lock:
                w.body_fetches.append(sorted(answer))
        return answer

    def watched_pause(self: ImapPoller, seconds: float) -> None:
        with w.lock:
            w.pauses.append(seconds)
        pause(self, seconds)

    monkeypatch.setattr(ImapPoller, "take_new", watched_take_new)
    monkeypatch.setattr(HealthState, "worker_done", watched_worker_done)
    monkeypatch.setattr(IMAPClient, "fetch", watched_fetch)
    monkeypatch.setattr(ImapPoller, "_pause", watched_pause)
    return w
