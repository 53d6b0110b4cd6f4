"""IMAP intake (imapclient, blocking): one thread per mailbox.

Cycle: connect and log in → SELECT → take in every UID above the checkpoint (BODY.PEEK[],
so fetching never sets \\Seen) → after each message is committed, mark it (\\Seen plus our
keyword, or MOVE) and advance the checkpoint → IDLE (or sleep and poll) → repeat.

* Checkpoints are (UIDVALIDITY, last UID). A new UIDVALIDITY (RFC 3501 §2.3.1.1: UIDs may
  have been reused) resets the checkpoint to 0 and rescans; the store's dedup on content and
  Message-ID+sender makes the rescan create nothing twice.
* IDLE is re-issued every `min(idle_seconds, timeout_seconds / 2)` — far inside RFC 2177's 29
  minutes — and leaving IDLE needs the server's tagged answer within the socket timeout, so a
  half-dead connection is noticed within `timeout_seconds`.
* Network errors reconnect with exponential backoff and jitter (tenacity), capped at 60 s and
  logged per attempt; wrong credentials are logged as such and retried slowly (every 5 min).
"""

from __future__ import annotations

import imaplib
import logging
import ssl
import threading
import time
from collections.abc import Callable

import tenacity
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SEEN, SocketTimeout

from mailbot.config import ImapMailboxConfig
from mailbot.errors import TemporaryIngestError
from mailbot.ingest.intake import Intake
from mailbot.store import Store

log = logging.getLogger(__name__)

NETWORK_ERRORS = (
    OSError,  # socket errors, timeouts, ssl.SSLError
    imaplib.IMAP4.abort,
    imaplib.IMAP4.error,
    IMAPClientError,
    TemporaryIngestError,
)
LOGIN_RETRY_SECONDS = 300.0


class ImapPoller:
    """Takes one IMAP folder in, forever, until `stop` is set."""

    def __init__(
        self,
        config: ImapMailboxConfig,
        intake: Intake,
        store: Store,
        stop: threading.Event,
        *,
        password: str | None,
        on_cycle: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.intake = intake
        self.store = store
        self.stop = stop
        self._password = password
        self._on_cycle = on_cycle
        self.key = f"imap:{config.name}:{config.folder}"

    def __repr__(self) -> str:  # never shows the password
        c = self.config
        return f"ImapPoller({c.username}@{c.host}:{c.port}/{c.folder})"

    # --- the outer loop ----------------------------------------------------------------

    def run(self) -> None:
        """Run sessions until stopped; connecting is retried with backoff (tenacity)."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, NETWORK_ERRORS) and not isinstance(e, LoginError)
            ),
            wait=tenacity.wait_exponential_jitter(initial=1, max=60),
            stop=tenacity.stop_never,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        while not self.stop.is_set():
            try:
                client, uidvalidity, idle = retrying(self._open)
                self._serve(client, uidvalidity, idle)
            except _Stopped:
                break
            except LoginError as exc:
                log.error("%s: login refused (check username/password): %s; retrying in %ds",
                          self, exc, LOGIN_RETRY_SECONDS)
                self._note(f"login refused: {exc}")
                self._pause(LOGIN_RETRY_SECONDS)
            except NETWORK_ERRORS as exc:
                log.warning("%s: connection lost: %r; reconnecting", self, exc)
                self._note(f"connection lost: {exc!r}")
                self._pause(1.0)
            except Exception as exc:  # noqa: BLE001 - an intake thread must not die
                log.exception("%s: unexpected error; reconnecting in 30 s", self)
                self._note(f"unexpected: {exc!r}")
                self._pause(30.0)
        log.info("%s: stopped", self)

    def _pause(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: connection failed (attempt %d): %r; reconnecting in %.1fs",
                    self, state.attempt_number, exc, delay)
        self._note(f"attempt {state.attempt_number}: {exc!r}")

    def _note(self, error: str) -> None:
        try:
            self.store.note_intake_error(self.key, error)
        except Exception:  # noqa: BLE001 - the store may be the thing that is down
            log.debug("could not record intake error", exc_info=True)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    # --- one connection --------------------------------------------------------------

    def connect(self) -> IMAPClient:
        c = self.config
        timeout = SocketTimeout(connect=min(30.0, c.timeout_seconds), read=c.timeout_seconds / 2)
        context = ssl.create_default_context(cafile=c.ca_file)
        if not c.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = IMAPClient(c.host, port=c.port, ssl=c.security == "tls", ssl_context=context,
                            timeout=timeout, use_uid=True)
        if c.security == "starttls":
            client.starttls(context)
        client.login(c.username, self._password or "")
        return client

    def _open(self) -> tuple[IMAPClient, int, bool]:
        client = self.connect()
        try:
            info = client.select_folder(self.config.folder)
        except BaseException:
            _close(client)
            raise
        uidvalidity = int(info[b"UIDVALIDITY"])
        idle = client.has_capability("IDLE")
        log.info("%s: connected (UIDVALIDITY %d, IDLE %s)", self, uidvalidity,
                 "yes" if idle else "no")
        return client, uidvalidity, idle

    def _serve(self, client: IMAPClient, uidvalidity: int, idle: bool) -> None:
        try:
            while not self.stop.is_set():
                self.take_new(client, uidvalidity)
                self._on_cycle()
                if idle:
                    self._idle(client)
                else:
                    self._sleep(self.config.poll_seconds)
                    client.noop()
        finally:
            _close(client)

    def take_new(self, client: IMAPClient, uidvalidity: int) -> int:
        """Store, mark and checkpoint every message above the checkpoint; returns how many."""
        known_validity, last_uid = self.store.imap_checkpoint(self.key)
        if known_validity and known_validity != uidvalidity:
            log.warning("%s: uidvalidity_changed %d -> %d; rescanning the folder "
                        "(duplicates are recognised by the store)", self, known_validity,
                        uidvalidity)
            last_uid = 0
        uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        taken = 0
        for start in range(0, len(uids), self.config.batch):
            if self.stop.is_set():
                break
            chunk = uids[start : start + self.config.batch]
            fetched = client.fetch(chunk, [b"BODY.PEEK[]"])
            for uid in chunk:
                data = fetched.get(uid)
                if data is None:  # expunged meanwhile by another client
                    continue
                raw = data.get(b"BODY[]")
                if raw is None:
                    continue
                self.intake.accept_blocking(bytes(raw), f"{self.key}:{uidvalidity}:{uid}")
                self._mark(client, uid)
                self.store.save_imap_checkpoint(self.key, uidvalidity, uid)
                taken += 1
        if not uids and known_validity != uidvalidity:
            self.store.save_imap_checkpoint(self.key, uidvalidity, last_uid)
        return taken

    def _mark(self, client: IMAPClient, uid: int) -> None:
        if self.config.after_store == "move":
            if client.has_capability("MOVE"):
                client.move([uid], self.config.move_to)
            else:
                client.copy([uid], self.config.move_to)
                client.delete_messages([uid])
                client.uid_expunge([uid])
        else:
            client.add_flags([uid], [SEEN, self.config.keyword.encode()])

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE for news, waking every second to check `stop`."""
        period = min(self.config.idle_seconds, self.config.timeout_seconds / 2)
        client.idle()
        try:
            deadline = time.monotonic() + period
            while time.monotonic() < deadline and not self.stop.is_set():
                responses = client.idle_check(timeout=1)
                if any(r[1] in (b"EXISTS", b"RECENT") for r in responses if len(r) > 1):
                    break
                if any(r and r[0] == b"BYE" for r in responses):
                    raise imaplib.IMAP4.abort("server said BYE")
        finally:
            client.idle_done()  # waits for the tagged OK: a dead server times out here


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may already be gone
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


class _Stopped(Exception):
    """Internal: `stop` was set while sleeping."""
