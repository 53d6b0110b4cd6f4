"""IMAP intake (imapclient, blocking): one thread per mailbox.

Cycle: connect and log in → SELECT → take in every UID above the checkpoint (BODY.PEEK[],
so fetching never sets \\Seen) → after each message is committed, mark it (\\Seen plus our
keyword, or MOVE) and advance the checkpoint → IDLE (or sleep and poll) → repeat.

* Checkpoints are (UIDVALIDITY, last UID). A new UIDVALIDITY (RFC 3501 §2.3.1.1: UIDs may
  have been reused) resets the checkpoint to 0 and rescans; the store's dedup on content and
  Message-ID+sender makes the rescan create nothing twice.
* IDLE is re-issued every `min(idle_seconds, timeout_seconds / 2)` — far inside RFC 2177's 29
  minutes — and leaving IDLE needs the server's tagged answer within the socket timeout, so a
  half-dead connection is noticed within `timeout_seconds`. A server that closes the socket
  (EOF, which imapclient's idle_check swallows) is noticed within a second; EXISTS that the
  server sent during SEARCH/FETCH/STORE (filed away by imaplib), or right behind IDLE's
  "+ idling" (left in imaplib's read buffer), triggers another pass at once instead of
  waiting for the next IDLE period.
* after_store = "move" creates `move_to` when it is missing (MOVE would fail for every mail).
* Memory is bounded (the take-in pass, mailbot/ingest/imap_fetch.py): sizes (RFC822.SIZE)
  come first; one FETCH takes at most `batch` messages and `batch_bytes` bytes. A message over `limits.message_bytes` is never fetched
  whole: its header section (at most `limits.header_bytes`) is stored as a stand-in that the
  worker quarantines `too_large`, telling a person (never automatic mail) the limit.
* The checkpoint never passes a UID that was not taken in: a UID the server answered
  without the item asked for (expunged meanwhile, or a broken server) is tried again in
  the next pass; later UIDs stored meanwhile are remembered and not fetched again.
* Network errors reconnect with exponential backoff and jitter (tenacity), capped at 60 s and
  logged per attempt; wrong credentials are logged as such and retried slowly (every 5 min).
* auth = "oauth2": AUTHENTICATE XOAUTH2/OAUTHBEARER with a token from `mailbot.oauth`. A
  refused token is replaced by a fresh one once, on the same connection; a session whose
  token nears its expiry is ended (also from IDLE) and opened again with a new token, since
  servers may drop or refuse a session whose token expired. No token is ever logged
  (imapclient redacts AUTHENTICATE lines; the SASL response itself is not logged).
* Several daemons on one database: only the holder of the store lease ``imap:<name>:<folder>``
  polls (`Store.acquire_lease`); it renews the lease every third of `lease_seconds` (also
  while in IDLE) and gives it up at a clean stop. The others stand by and take over within
  `lease_seconds` of the holder's death. A holder that finds its lease taken (it stalled
  past the expiry) disconnects and stands by; a short overlap costs nothing, because the
  store recognises a message taken in twice.
"""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import tenacity
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from mailbot import metrics
from mailbot.config import ImapMailboxConfig, LimitsConfig
from mailbot.errors import TemporaryIngestError
from mailbot.ingest.imap_fetch import FolderTaker
from mailbot.ingest.intake import Intake
from mailbot.oauth import AccessToken, SaslResponder, TokenError, TokenSource, sasl_payload
from mailbot.store import Store, new_lease_holder

log = logging.getLogger(__name__)

NETWORK_ERRORS = (
    OSError,  # socket errors, timeouts, ssl.SSLError
    imaplib.IMAP4.abort,
    imaplib.IMAP4.error,
    IMAPClientError,
    TemporaryIngestError,
    TokenError,  # the token endpoint or command failed: retried like the network
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
        holder: str | None = None,
        limits: LimitsConfig | None = None,
        tokens: TokenSource | None = None,
        on_down: Callable[[str], None] = lambda error: None,
    ) -> None:
        """`tokens`: the access tokens for auth = "oauth2" (built from the config if None)."""
        self.config = config
        self.intake = intake
        self.store = store
        self.stop = stop
        self._password = password
        self._on_cycle = on_cycle
        self._on_down = on_down  # told of every lost connection and failed attempt
        self.key = f"imap:{config.name}:{config.folder}"
        self.holder = holder or new_lease_holder()
        self._renewed_at = 0.0
        self.limits = limits or LimitsConfig()
        self._taker = FolderTaker(config, self.limits, store, intake, stop, self.key,
                                  self._renew, repr(self))
        if config.auth == "oauth2" and tokens is None:
            from mailbot.oauth import build_token_source

            assert config.oauth2 is not None
            tokens = build_token_source(config.oauth2, config.username, f"imap {config.name}")
        self._tokens = tokens
        self._session_token: AccessToken | None = None

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
        try:
            while not self.stop.is_set():
                try:
                    self._await_lease()
                    client, uidvalidity, idle = retrying(self._open)
                    self._serve(client, uidvalidity, idle)
                except _Stopped:
                    break
                except _LeaseLost:
                    log.warning("%s: another daemon took the mailbox over; standing by", self)
                except _TokenExpiring:
                    log.info("%s: access token about to expire; logging in again", self)
                except LoginError as exc:
                    log.error("%s: login refused (check %s): %s; retrying in %ds", self,
                              "the app's access to the mailbox" if self._tokens is not None
                              else "username/password", exc, LOGIN_RETRY_SECONDS)
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
        finally:
            self._release()
        log.info("%s: stopped", self)

    # --- the lease (one poller per mailbox across daemons) -------------------------------

    def _await_lease(self) -> None:
        """Return once this daemon holds the mailbox's lease; stand by until then."""
        waiting = False
        while True:
            try:
                if self.store.acquire_lease(self.key, self.holder, self.config.lease_seconds):
                    self._renewed_at = time.monotonic()
                    if waiting:
                        log.info("%s: took the mailbox over", self)
                    return
                if not waiting:
                    log.info("%s: polled by %s; standing by", self,
                             self.store.lease_holder(self.key) or "another daemon")
                waiting = True
            except Exception:  # noqa: BLE001 - the store is away: try again shortly
                log.warning("%s: cannot reach the store for the mailbox lease", self,
                            exc_info=log.isEnabledFor(logging.DEBUG))
            self._sleep(self.config.lease_seconds / 3)

    def _renew(self) -> None:
        """Renew the lease when a third of it has passed.

        Raises:
            _LeaseLost: another daemon holds it now.
            TemporaryIngestError: the store is unreachable (reconnect and wait for it).
        """
        if time.monotonic() - self._renewed_at < self.config.lease_seconds / 3:
            return
        try:
            held = self.store.acquire_lease(self.key, self.holder, self.config.lease_seconds)
        except Exception as exc:  # noqa: BLE001
            raise TemporaryIngestError(f"mailbox lease not renewed: {exc!r}") from None
        if not held:
            raise _LeaseLost
        self._renewed_at = time.monotonic()

    def _release(self) -> None:
        try:
            self.store.release_lease(self.key, self.holder)
        except Exception:  # noqa: BLE001 - it expires by itself
            log.debug("could not release the mailbox lease", exc_info=True)

    def _pause(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: connection failed (attempt %d): %r; reconnecting in %.1fs",
                    self, state.attempt_number, exc, delay)
        self._note(f"attempt {state.attempt_number}: {exc!r}")

    def _note(self, error: str) -> None:
        self._on_down(error)
        metrics.IMAP_RECONNECTS.labels(self.config.name).inc()
        try:
            self.store.note_intake_error(self.key, error)
        except Exception:  # noqa: BLE001 - the store may be the thing that is down
            log.debug("could not record intake error", exc_info=True)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    # --- one connection --------------------------------------------------------------

    @property
    def idle_period(self) -> float:
        """Seconds between IDLE re-issues: a dead peer is noticed at the latest one socket
        read timeout after that (DONE gets no tagged answer), i.e. within timeout_seconds."""
        return min(self.config.idle_seconds, self.config.timeout_seconds / 2)

    @property
    def socket_timeout(self) -> SocketTimeout:
        c = self.config
        return SocketTimeout(connect=min(30.0, c.timeout_seconds), read=c.timeout_seconds / 2)

    def connect(self) -> IMAPClient:
        c = self.config
        timeout = self.socket_timeout
        context = ssl.create_default_context(cafile=c.ca_file)
        if not c.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = IMAPClient(c.host, port=c.port, ssl=c.security == "tls", ssl_context=context,
                            timeout=timeout, use_uid=True)
        _quiet_imaplib(client)
        try:
            if c.security == "starttls":
                client.starttls(context)
            if self._tokens is not None:
                self._oauth2_login(client, self._tokens)
            else:
                client.login(c.username, self._password or "")
        except BaseException:
            _close(client)  # a refused login must not leave the socket open until GC
            raise
        return client

    def _oauth2_login(self, client: IMAPClient, tokens: TokenSource) -> None:
        """AUTHENTICATE with the cached token; if it is refused, once more with a fresh one.

        Raises:
            LoginError: the fresh token was refused too.
            TokenError: no token to be had.
        """
        token = tokens.token()
        try:
            self._authenticate(client, token)
        except LoginError:
            log.warning("%s: access token refused; fetching a fresh one", self)
            token = tokens.refresh_after_refusal(token)
            self._authenticate(client, token)
        self._session_token = token

    def _authenticate(self, client: IMAPClient, token: AccessToken) -> None:
        c = self.config
        assert c.oauth2 is not None
        mechanism = c.oauth2.mechanism
        payload = sasl_payload(mechanism, c.username, token.value, c.host, c.port)
        client.sasl_login(mechanism.upper(), SaslResponder(payload))

    def _check_token(self) -> None:
        """End the session when its access token nears expiry (run logs in again)."""
        if (self._tokens is not None and self._session_token is not None
                and self._tokens.due(self._session_token)):
            raise _TokenExpiring

    def _open(self) -> tuple[IMAPClient, int, bool]:
        client = self.connect()
        try:
            info = client.select_folder(self.config.folder)
        except BaseException:
            _close(client)
            raise
        uidvalidity = int(info[b"UIDVALIDITY"])
        _pop_news(client)  # SELECT's own EXISTS: the first take_new covers it
        if self.config.after_store == "move":
            try:
                _ensure_folder(client, self.config.move_to)
            except BaseException:
                _close(client)
                raise
        idle = client.has_capability("IDLE")
        log.info("%s: connected (UIDVALIDITY %d, IDLE %s)", self, uidvalidity,
                 "yes" if idle else "no")
        return client, uidvalidity, idle

    def _serve(self, client: IMAPClient, uidvalidity: int, idle: bool) -> None:
        try:
            while not self.stop.is_set():
                self._renew()
                self._check_token()
                self.take_new(client, uidvalidity)
                self._on_cycle()
                if _pop_news(client):
                    continue  # mail arrived during those commands: IDLE would not report it
                if idle:
                    self._idle(client)
                else:
                    self._sleep(self.config.poll_seconds)
                    client.noop()
        finally:
            _close(client)

    def take_new(self, client: IMAPClient, uidvalidity: int) -> int:
        """Store, mark and checkpoint every message above the checkpoint; returns how many
        (the pass itself: `FolderTaker.take_new` in mailbot/ingest/imap_fetch.py)."""
        return self._taker.take_new(client, uidvalidity)

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE for news, waking every second to check `stop`."""
        period = self.idle_period
        client.idle()
        try:
            if _NEWS_LINE.search(_buffered(client)):
                return  # reported with "+ idling": idle_check would not see it (see _buffered)
            deadline = time.monotonic() + period
            while time.monotonic() < deadline and not self.stop.is_set():
                self._renew()
                self._check_token()
                responses = client.idle_check(timeout=1)
                if not responses and _peer_closed(client):
                    # imapclient's idle_check swallows EOF and returns []: without this the
                    # loop would spin on the dead socket until the period ends.
                    raise imaplib.IMAP4.abort("server closed the connection")
                if any(r[1] in (b"EXISTS", b"RECENT") for r in responses if len(r) > 1):
                    break
                if any(r and r[0] == b"BYE" for r in responses):
                    raise imaplib.IMAP4.abort("server said BYE")
        finally:
            client.idle_done()  # waits for the tagged OK: a dead server times out here


def _quiet_imaplib(client: IMAPClient) -> None:
    """imapclient sets imaplib's debug level to 5 so that its logger "imapclient.imaplib"
    sees every line; imaplib then formats what it reads whether that logger logs or not: a
    repr of each fetched message and of the whole FETCH answer, three times a FETCH's
    bytes in memory at once and 80 % of its CPU. Level 0 unless that logger logs DEBUG."""
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


_NEWS_LINE = re.compile(rb"^\* \d+ (?:EXISTS|RECENT)\r?$", re.MULTILINE | re.IGNORECASE)


def _buffered(client: IMAPClient) -> bytes:
    """What imaplib has read from the socket and not yet parsed (b"" if nothing).

    Mail that arrives between the pass's last command and IDLE is reported by the server
    right behind its "+ idling" ("* 2 EXISTS", usually in the same packet). IDLE reads that
    continuation with a buffered readline, so the news lands in imaplib's buffer, and
    idle_check, which polls the socket, would not see it before the IDLE period ended (30 s
    by default). Does not block: on an empty buffer it tries one non-blocking read.
    """
    with _nonblocking(client):
        try:
            data: bytes = client._imap.file.peek(1)
        except OSError:  # nothing to read (an SSL socket says "want read"), or the peer is gone
            return b""
    return data


def _peer_closed(client: IMAPClient) -> bool:
    """True when the server has closed the TCP connection (EOF waiting on the socket)."""
    with _nonblocking(client) as sock:
        try:
            # The plain socket's recv, also for an SSLSocket: peeks at raw bytes, consumes none.
            data = socket.socket.recv(sock, 1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # open, nothing to read
        except OSError:
            return True  # reset
    return data == b""


@contextmanager
def _nonblocking(client: IMAPClient) -> Iterator[socket.socket]:
    """The client's socket, non-blocking for real while inside (with a timeout set, CPython
    first waits up to that timeout for the socket to become readable, whatever the recv
    flags say); its timeout is restored after."""
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.settimeout(timeout)


def _pop_news(client: IMAPClient) -> bool:
    """Whether the server announced new mail (EXISTS/RECENT) in the untagged responses of
    the commands since the last call; forgets them all.

    Dovecot reports mail that arrived during SEARCH/FETCH/STORE in those commands' responses,
    which imaplib files away unseen; a following IDLE does not repeat it, so without this
    check such mail waited for the next IDLE period. Clearing also keeps the long-lived
    session's response store (FETCH flags, EXPUNGEs) from growing.
    """
    pending = client._imap.untagged_responses
    news = "EXISTS" in pending or "RECENT" in pending
    pending.clear()
    return news


def _ensure_folder(client: IMAPClient, folder: str) -> None:
    """Create the MOVE target if it is missing: MOVE to a missing folder fails with
    [TRYCREATE] for every message, and the poller would reconnect forever without marking."""
    if client.folder_exists(folder):
        return
    try:
        client.create_folder(folder)
    except IMAPClientError:
        if not client.folder_exists(folder):  # not just created by another client meanwhile
            raise
    log.info("created the folder %r for after_store = \"move\"", folder)


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


class _LeaseLost(Exception):
    """Internal: another daemon holds this mailbox's lease now."""


class _TokenExpiring(Exception):
    """Internal: the session's OAuth2 token nears expiry; log in again with a new one."""

