"""Outbound SMTP: the only code that talks to the relay.

`SmtpSender` keeps one connection open and reuses it for every message (a connection per
message costs a TCP + EHLO + STARTTLS + AUTH round trip each time); it reconnects when the
server dropped the link or after a network error. A transaction is all-or-nothing: if any
RCPT is refused the transaction is reset and nothing is sent, so a retry never duplicates
mail to the recipients that were accepted. Replies map onto the error tree once:

* 2xx after DATA            -> the reply text is returned ("250 2.0.0 Ok: queued as ...")
* 4xx, network trouble,
  disconnect after DATA     -> :class:`TransientDeliveryError` (a lost DATA reply counts as 451)
* 5xx                       -> :class:`PermanentDeliveryError`

`SmtpSender.send` blocks (smtplib); call it from a thread with ``asyncio.to_thread``. A lock
serialises callers so concurrent threads share the one connection safely.

With ``auth = "oauth2"`` the sender authenticates with AUTH XOAUTH2 or OAUTHBEARER and an
access token from `mailbot.oauth` (one `TokenSource` shared by all sending threads); a refused
token is replaced by a fresh one once on the same connection.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mailbot.config import OutboundConfig, read_secret
from mailbot.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from mailbot.oauth import AccessToken, SaslResponder, TokenError, TokenSource, sasl_payload

if TYPE_CHECKING:
    from mailbot.config import Config

log = logging.getLogger(__name__)

# A lost reply after DATA leaves the outcome unknown; RFC 5321 §4.1.1.4 says the client must
# treat it as a temporary failure, so it is retried (possible duplicate, same Message-ID).
LOST_REPLY_CODE = 451

_warned_unverified: set[tuple[str, int]] = set()
_warn_lock = threading.Lock()


@runtime_checkable
class Transport(Protocol):
    """Where an outgoing message goes: an SMTP relay or a directory of .eml files."""

    def send(self, msg_bytes: bytes, mail_from: str, rcpt_to: Sequence[str]) -> str:
        """Hand one message over and return the receiver's final reply text.

        Raises:
            TransientDeliveryError: try again later.
            PermanentDeliveryError: never try again.
        """
        ...

    def close(self) -> None:
        """Release connections or files; sending again reopens them."""
        ...


def check_envelope(mail_from: str, rcpt_to: Sequence[str]) -> None:
    """Refuse envelope addresses that could inject SMTP commands or headers.

    Raises:
        PermanentDeliveryError: no recipients, or CR/LF/NUL in an address.
    """
    if isinstance(rcpt_to, str):
        raise TypeError("rcpt_to must be a sequence of addresses, not a str")
    if not rcpt_to:
        raise PermanentDeliveryError("no recipients", code=None)
    if any(not rcpt for rcpt in rcpt_to):
        raise PermanentDeliveryError("empty recipient address", code=None)
    for address in (mail_from, *rcpt_to):  # mail_from may be "" (the null reverse-path)
        if any(ch in address for ch in "\r\n\0") or address.strip() != address:
            raise PermanentDeliveryError(f"invalid envelope address {address!r}", code=None)


_EOL = re.compile(rb"\r\n|\r|\n")


def to_crlf(msg_bytes: bytes) -> bytes:
    """Every line ending as CRLF (RFC 5321 §2.3.8), so a bare LF can never end DATA early."""
    if b"\r" not in msg_bytes:  # 10x faster than the regex
        return msg_bytes.replace(b"\n", b"\r\n")
    if msg_bytes.count(b"\r\n") == msg_bytes.count(b"\n") == msg_bytes.count(b"\r"):
        return msg_bytes  # CRLF throughout already: mailbot's own rendering (3 C-level scans)
    return _EOL.sub(b"\r\n", msg_bytes)


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {text}".strip()


def _error_for(code: int, message: bytes | str, stage: str) -> DeliveryError:
    text = f"{stage}: {_reply_text(code, message)}"
    if 500 <= code <= 599:
        return PermanentDeliveryError(text, code=code)
    # 4xx, and anything unexpected (1xx/3xx at the wrong time): try again later.
    return TransientDeliveryError(text, code=code)


def tls_context(config: OutboundConfig) -> ssl.SSLContext:
    """The client TLS context: verified against the system or `ca_file` unless told otherwise."""
    context = ssl.create_default_context(cafile=config.ca_file)
    if not config.verify_tls:
        key = (config.host, config.port)
        with _warn_lock:
            if key not in _warned_unverified:
                _warned_unverified.add(key)
                log.warning(
                    "outbound.verify_tls = false: the certificate of %s:%d is NOT verified",
                    config.host,
                    config.port,
                )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpSender:
    """An SMTP client that reuses one connection across messages (see the module docstring)."""

    def __init__(
        self,
        config: OutboundConfig,
        *,
        password: str | None = None,
        local_hostname: str | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        """Build a sender; no connection is made until the first `send`.

        `password` overrides the secret named by `password_env`/`password_credential`;
        `tokens` are the access tokens for auth = "oauth2" (built from the config if None).

        Raises:
            ConfigError: a username without a password, or a missing secret.
        """
        self._config = config
        self._tokens = tokens
        if config.auth == "oauth2":
            self._tokens = tokens or outbound_tokens(config)
            password = ""  # not used: the token is the credential
        if password is None:
            password = read_secret(config.password_env, config.password_credential)
        if config.username and password is None:
            raise ConfigError(
                "outbound.username is set but neither password_env nor password_credential is"
            )
        self._password = password
        self._local_hostname = local_hostname
        self._context: ssl.SSLContext | None = (
            tls_context(config) if config.security != "none" else None
        )
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._lock = threading.Lock()
        self.connections_opened = 0

    def __repr__(self) -> str:  # never shows the password
        c = self._config
        return f"SmtpSender({c.host}:{c.port}, security={c.security}, user={c.username!r})"

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection --------------------------------------------------------------------

    def _open(self) -> smtplib.SMTP:
        """Connect, say EHLO, secure and authenticate.

        Raises:
            TransientDeliveryError: the relay is unreachable, refuses TLS or login.
        """
        c = self._config
        hostname = self._local_hostname
        if hostname is None:
            hostname = self._local_hostname = socket.getfqdn()
        smtp: smtplib.SMTP | None = None
        try:
            if c.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    c.host, c.port, local_hostname=hostname,
                    timeout=c.timeout_seconds, context=self._context,
                )
            else:
                smtp = smtplib.SMTP(
                    c.host, c.port, local_hostname=hostname, timeout=c.timeout_seconds
                )
            code, message = smtp.ehlo()
            if code != 250:
                raise _error_for(code, message, "EHLO")
            if c.security == "starttls":
                if not smtp.has_extn("starttls"):
                    # Never fall back to plaintext: the server may be stripping STARTTLS.
                    raise TransientDeliveryError(
                        f"{c.host}:{c.port} does not offer STARTTLS (security = starttls)"
                    )
                code, message = smtp.starttls(context=self._context)
                if code != 220:
                    raise TransientDeliveryError(
                        f"STARTTLS: {_reply_text(code, message)}", code=code
                    )
                smtp.ehlo()
            if c.username and self._tokens is not None:
                self._oauth2_login(smtp, self._tokens)
            elif c.username:
                assert self._password is not None
                try:
                    smtp.login(c.username, self._password)
                except smtplib.SMTPAuthenticationError as exc:
                    # A bad password is a configuration problem, not the message's: retry it
                    # until someone fixes the secret (the outbox horizon caps the attempts).
                    raise TransientDeliveryError(
                        f"AUTH as {c.username!r} refused: {_reply_text(exc.smtp_code, exc.smtp_error)}",
                        code=exc.smtp_code,
                    ) from None
                except smtplib.SMTPNotSupportedError:
                    raise TransientDeliveryError(
                        f"{c.host}:{c.port} offers no AUTH (outbound.username is set)"
                    ) from None
        except DeliveryError:
            self._discard(smtp)
            raise
        except ssl.SSLCertVerificationError as exc:
            self._discard(smtp)
            raise TransientDeliveryError(
                f"TLS certificate of {c.host}:{c.port} not trusted: {exc.verify_message}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            self._discard(smtp)
            raise _error_for(exc.smtp_code, exc.smtp_error, "connect") from None
        except (smtplib.SMTPException, OSError) as exc:
            self._discard(smtp)
            raise TransientDeliveryError(
                f"cannot connect to {c.host}:{c.port}: {exc!r}"
            ) from None
        self.connections_opened += 1
        self._sent_on_connection = 0
        log.debug("connected to %s:%d (%s)", c.host, c.port, c.security)
        return smtp

    def _oauth2_login(self, smtp: smtplib.SMTP, tokens: TokenSource) -> None:
        """AUTH with the cached token; if refused, once more with a fresh one.

        Raises:
            TransientDeliveryError: no token, no such AUTH mechanism, or refused twice.
        """
        c = self._config
        oauth2, username = c.oauth2, c.username
        assert oauth2 is not None and username
        mechanism = oauth2.mechanism.upper()
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        if mechanism not in offered:
            raise TransientDeliveryError(
                f"{c.host}:{c.port} does not offer AUTH {mechanism} (offers: "
                f"{' '.join(offered) or 'none'})"
            )
        def authenticate(token: AccessToken) -> None:
            payload = sasl_payload(oauth2.mechanism, username, token.value, c.host, c.port)
            smtp.auth(mechanism, SaslResponder(payload), initial_response_ok=True)

        try:
            token = tokens.token()
            try:
                authenticate(token)
            except smtplib.SMTPAuthenticationError:
                log.warning("AUTH %s as %r: access token refused; fetching a fresh one",
                            mechanism, c.username)
                authenticate(tokens.refresh_after_refusal(token))
        except TokenError as exc:
            raise TransientDeliveryError(f"no access token for {c.username!r}: {exc}") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientDeliveryError(
                f"AUTH {mechanism} as {c.username!r} refused: "
                f"{_reply_text(exc.smtp_code, exc.smtp_error)}",
                code=exc.smtp_code,
            ) from None

    @staticmethod
    def _discard(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

    def _drop(self) -> None:
        self._discard(self._smtp)
        self._smtp = None

    def close(self) -> None:
        """Say QUIT and close the connection (the next `send` reconnects)."""
        with self._lock:
            if self._smtp is not None:
                try:
                    self._smtp.quit()
                except (smtplib.SMTPException, OSError):
                    pass
                self._drop()

    # -- sending -----------------------------------------------------------------------

    def send(self, msg_bytes: bytes, mail_from: str, rcpt_to: Sequence[str]) -> str:
        """Send one message over the shared connection; return the final reply ("250 ...").

        Raises:
            TransientDeliveryError: 4xx, connection trouble, or no reply after DATA (451).
            PermanentDeliveryError: 5xx, or an envelope that can never be sent.
        """
        check_envelope(mail_from, rcpt_to)
        msg_bytes = to_crlf(msg_bytes)
        with self._lock:
            reused = self._smtp is not None
            if self._smtp is None:
                self._smtp = self._open()
            try:
                return self._transaction(self._smtp, msg_bytes, mail_from, rcpt_to)
            except _StaleConnection:
                if not reused:
                    raise TransientDeliveryError(
                        "the server closed a fresh connection before MAIL FROM",
                        code=LOST_REPLY_CODE,
                    ) from None
                # An idle connection the server has since closed (timeout, 421, restart):
                # nothing was accepted yet, so one immediate retry on a new connection is safe.
                log.debug("reused connection was closed by the server; reconnecting")
                self._smtp = self._open()
                try:
                    return self._transaction(self._smtp, msg_bytes, mail_from, rcpt_to)
                except _StaleConnection:
                    raise TransientDeliveryError(
                        "the server closed the connection before MAIL FROM",
                        code=LOST_REPLY_CODE,
                    ) from None

    def _transaction(
        self, smtp: smtplib.SMTP, msg_bytes: bytes, mail_from: str, rcpt_to: Sequence[str]
    ) -> str:
        mail_options: list[str] = []
        if not msg_bytes.isascii() and smtp.has_extn("8bitmime"):
            mail_options.append("BODY=8BITMIME")
        if not (mail_from.isascii() and all(r.isascii() for r in rcpt_to)):
            if not smtp.has_extn("smtputf8"):
                raise PermanentDeliveryError(
                    "non-ASCII envelope address but the relay lacks SMTPUTF8", code=None
                )
            mail_options.append("SMTPUTF8")

        # MAIL FROM: a failure here on a reused connection means it went stale.
        try:
            code, message = smtp.mail(mail_from, mail_options)
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            self._drop()
            raise _StaleConnection() from None
        except OSError as exc:  # timeouts and other socket errors
            self._drop()
            raise TransientDeliveryError(f"MAIL FROM: {exc!r}") from None
        if code == 421:
            self._drop()
            raise _StaleConnection()
        if code != 250:
            self._reset(smtp)
            raise _error_for(code, message, "MAIL FROM")

        try:
            refused: list[tuple[str, int, bytes]] = []
            for rcpt in rcpt_to:
                code, message = smtp.rcpt(rcpt)
                if code == 421:
                    self._drop()
                    raise _error_for(code, message, f"RCPT TO:<{rcpt}>")
                if code not in (250, 251):
                    refused.append((rcpt, code, message))
            if refused:
                self._reset(smtp)
                # All-or-nothing: any temporary refusal makes the whole message transient.
                worst = min(code for _, code, _ in refused)  # a 4xx sorts before a 5xx
                detail = "; ".join(f"<{r}> {_reply_text(c, m)}" for r, c, m in refused)
                error = PermanentDeliveryError if worst >= 500 else TransientDeliveryError
                raise error(f"RCPT TO refused: {detail}", code=worst)
            try:
                code, message = smtp.data(msg_bytes)
            except smtplib.SMTPDataError as exc:  # the DATA command itself (no 354)
                self._reset(smtp)
                raise _error_for(exc.smtp_code, exc.smtp_error, "DATA") from None
        except DeliveryError:
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TransientDeliveryError(
                f"connection lost during the transaction: {exc!r}", code=LOST_REPLY_CODE
            ) from None
        if code == 421:
            self._drop()
        if not 200 <= code <= 299:
            raise _error_for(code, message, "end of DATA")
        self._sent_on_connection += 1
        return _reply_text(code, message)

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a refused command so the connection can carry the next message."""
        try:
            code, _ = smtp.rset()
            if code != 250:
                self._drop()
        except (smtplib.SMTPException, OSError):
            self._drop()


class _StaleConnection(Exception):
    """Internal: the server closed the connection before MAIL FROM was accepted."""


def build_transport(config: Config) -> Transport:
    """The configured outbound transport: a `DirectorySink` or an `SmtpSender`.

    Raises:
        ConfigError: a missing secret.
    """
    from mailbot.replies.sink import DirectorySink

    outbound = config.outbound
    if outbound.mode == "directory":
        return DirectorySink(config.path(outbound.directory))
    return SmtpSender(outbound)


def sending_transports(config: Config) -> Transport | Callable[[], Transport]:
    """What the outbox's sending threads use: the one directory sink they share, or a
    factory of SMTP senders (a connection each) whose secret is read once, now.

    Raises:
        ConfigError: a missing secret (at start, not at the first send).
    """
    outbound = config.outbound
    if outbound.mode == "directory":
        return build_transport(config)
    password = read_secret(outbound.password_env, outbound.password_credential)
    tokens = outbound_tokens(outbound)  # one token cache for all sending threads
    first = [SmtpSender(outbound, password=password, tokens=tokens)]  # checks the secret now
    return lambda: (first.pop() if first
                    else SmtpSender(outbound, password=password, tokens=tokens))


def outbound_tokens(outbound: OutboundConfig) -> TokenSource | None:
    """The access tokens for auth = "oauth2" (secrets read now), else None.

    Raises:
        ConfigError: a missing secret or provider package.
    """
    if outbound.auth != "oauth2":
        return None
    from mailbot.oauth import build_token_source

    assert outbound.oauth2 is not None and outbound.username
    return build_token_source(outbound.oauth2, outbound.username, "outbound")
