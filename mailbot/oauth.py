"""OAuth2 access tokens for IMAP and SMTP (SASL XOAUTH2 / OAUTHBEARER).

Microsoft 365 and Google Workspace accept no passwords for IMAP/SMTP any more. A
:class:`TokenSource` hands out an access token from one provider and caches it:

* ``microsoft``: client credentials of an app registration (`msal`), for a shared mailbox;
* ``google``: a service account with domain-wide delegation acting as the mailbox, or a
  stored refresh token (`google-auth`);
* ``command``: a program that prints the token (bounded in time and output size).

A cached token is used until `REFRESH_MARGIN_SECONDS` (at most half its lifetime) before it
expires; after the server refused a token, `TokenSource.refresh_after_refusal` fetches a fresh
one (once per refused token, whichever thread asks). msal and google-auth are optional extras
imported only when their provider is configured.

Tokens are secrets: they are never logged (`AccessToken`'s repr hides the value) and no
error message quotes one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from mailbot.config import OAuth2Config, read_secret
from mailbot.errors import ConfigError

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 300.0
COMMAND_OUTPUT_LIMIT = 64 * 1024
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")  # printable ASCII: it goes into a SASL string


class TokenError(Exception):
    """No access token: the token endpoint or command failed or refused (message has no secret)."""


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds); the value never shows in repr."""

    value: str = field(repr=False)
    expires_at: float
    issued_at: float

    def refresh_at(self) -> float:
        """When to stop using it: the margin before expiry, at most half its lifetime."""
        lifetime = max(0.0, self.expires_at - self.issued_at)
        return self.expires_at - min(REFRESH_MARGIN_SECONDS, lifetime / 2)


class TokenProvider(Protocol):
    """Asks the issuer for a token; `fresh` bypasses any cache of the library underneath."""

    def fetch(self, *, fresh: bool) -> AccessToken: ...


class TokenSource:
    """A provider's token, cached and refreshed before expiry; safe to share between threads."""

    def __init__(self, provider: TokenProvider, name: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._provider = provider
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenSource({self.name})"

    def token(self) -> AccessToken:
        """The cached token, or a new one when it is due for refresh.

        Raises:
            TokenError: the provider gave none.
        """
        with self._lock:
            if self._token is not None and not self.due(self._token):
                return self._token
            return self._fetch(fresh=False)

    def refresh_after_refusal(self, refused: AccessToken) -> AccessToken:
        """A fresh token after the server refused `refused` (another thread may have
        fetched one meanwhile: then that one).

        Raises:
            TokenError: the provider gave none.
        """
        with self._lock:
            current = self._token
            if current is not None and current is not refused and not self.due(current):
                return current
            return self._fetch(fresh=True)

    def due(self, token: AccessToken) -> bool:
        """Whether `token` should no longer be used (refresh margin reached)."""
        return self._clock() >= token.refresh_at()

    def _fetch(self, *, fresh: bool) -> AccessToken:
        self._token = None
        token = self._provider.fetch(fresh=fresh)
        self._token = token
        self.fetches += 1
        log.info("oauth2 %s: new access token, valid for %.0f s", self.name,
                 token.expires_at - self._clock())
        return token


# --- SASL ----------------------------------------------------------------------------


def sasl_payload(mechanism: str, user: str, token: str, host: str, port: int) -> str:
    """The client's SASL response: XOAUTH2 (Google's and Microsoft's format) or
    OAUTHBEARER (RFC 7628 §3.1, with the GS2 header naming `user`)."""
    if mechanism == "xoauth2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01"
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"


class SaslResponder:
    """The SASL client side for imapclient's `sasl_login` and smtplib's `auth`: the payload
    first, then an empty response to the server's error challenge (RFC 7628 §3.2.3)."""

    def __init__(self, payload: str) -> None:
        self._payload = payload
        self._sent = False

    def __repr__(self) -> str:
        return "SaslResponder(…)"

    def __call__(self, challenge: bytes | None = None) -> str:
        if self._sent:
            return ""
        self._sent = True
        return self._payload


# --- providers -----------------------------------------------------------------------


def _now() -> float:
    return time.time()


def _secret(cfg: OAuth2Config, name: str) -> str | None:
    value = read_secret(getattr(cfg, f"{name}_env"), getattr(cfg, f"{name}_credential"), name)
    return value.strip() if value is not None else None


def _missing_extra(package: str, extra: str, provider: str) -> ConfigError:
    return ConfigError(
        f'oauth2 provider = "{provider}" needs the {package} package: '
        f'pip install "mailbot[{extra}]"'
    )


class MicrosoftProvider:
    """Client credentials at the Microsoft identity platform (msal) for a shared mailbox."""

    def __init__(self, cfg: OAuth2Config) -> None:
        try:
            import msal  # noqa: F401
        except ImportError:
            raise _missing_extra("msal", "microsoft", "microsoft") from None
        secret = _secret(cfg, "client_secret")
        assert secret is not None and cfg.client_id and cfg.tenant_id  # config validated
        self._cfg = cfg
        self._secret = secret
        self._authority = cfg.authority or f"https://login.microsoftonline.com/{cfg.tenant_id}"
        self._app: Any = None

    def __repr__(self) -> str:
        return f"MicrosoftProvider({self._authority})"

    def _application(self) -> Any:
        import msal

        # Discovery of the tenant happens here, over the network: not at start-up.
        return msal.ConfidentialClientApplication(
            self._cfg.client_id,
            client_credential=self._secret,
            authority=self._authority,
            token_cache=msal.TokenCache(),
            http_client=_http_session(self._cfg),
            instance_discovery=False,  # no call to login.microsoftonline.com for others
        )

    def fetch(self, *, fresh: bool) -> AccessToken:
        issued = _now()
        try:
            if self._app is None or fresh:  # a new app has an empty msal token cache
                self._app = self._application()
            result = self._app.acquire_token_for_client(list(self._cfg.effective_scopes))
        except Exception as exc:  # noqa: BLE001 - network, discovery: msal raises many kinds
            self._app = None
            raise TokenError(f"microsoft token endpoint: {type(exc).__name__}: "
                             f"{_clip(str(exc))}") from None
        if "access_token" not in result:
            self._app = None  # msal would answer the same 400 from its own cache for 60 s
            raise TokenError(f"microsoft refused the token request: {result.get('error')}: "
                             f"{_clip(str(result.get('error_description', '')))}")
        return AccessToken(str(result["access_token"]),
                           issued + float(result.get("expires_in", 3600)), issued)


class GoogleProvider:
    """A service account with domain-wide delegation acting as the mailbox, or a stored
    refresh token (google-auth)."""

    DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"

    def __init__(self, cfg: OAuth2Config, subject: str) -> None:
        try:
            import google.auth.transport.requests  # noqa: F401
            import google.oauth2.credentials  # noqa: F401
            import google.oauth2.service_account  # noqa: F401
        except ImportError:
            raise _missing_extra("google-auth and requests", "google", "google") from None
        self._cfg = cfg
        scopes = list(cfg.effective_scopes)
        key = _secret(cfg, "service_account_key")
        if key is not None:
            from google.oauth2 import service_account

            try:
                info = json.loads(key)
                self._credentials: Any = service_account.Credentials.from_service_account_info(
                    info, scopes=scopes, subject=subject)  # type: ignore[no-untyped-call]
            except (ValueError, KeyError, TypeError) as exc:
                # Never the key's text: only what kind of problem it has.
                raise ConfigError(f"oauth2 service_account_key: not a service account key "
                                  f"file ({type(exc).__name__})") from None
        else:
            from google.oauth2 import credentials

            refresh_token = _secret(cfg, "refresh_token")
            secret = _secret(cfg, "client_secret")
            self._credentials = credentials.Credentials(  # type: ignore[no-untyped-call]
                None, refresh_token=refresh_token, client_id=cfg.client_id,
                client_secret=secret, token_uri=cfg.token_url or self.DEFAULT_TOKEN_URL,
                scopes=scopes,
            )

    def __repr__(self) -> str:
        return "GoogleProvider()"

    def fetch(self, *, fresh: bool) -> AccessToken:
        import google.auth.exceptions
        from google.auth.transport.requests import Request

        session = _http_session(self._cfg)
        issued = _now()
        try:
            self._credentials.refresh(Request(session))
        except google.auth.exceptions.RefreshError as exc:
            raise TokenError(f"google refused the token request: {_clip(str(exc))}") from None
        except Exception as exc:  # noqa: BLE001 - transport errors of several libraries
            raise TokenError(f"google token endpoint: {type(exc).__name__}: "
                             f"{_clip(str(exc))}") from None
        finally:
            session.close()
        expiry = self._credentials.expiry  # naive UTC
        expires_at = (expiry.replace(tzinfo=timezone.utc).timestamp()
                      if isinstance(expiry, datetime) else issued + 3600)
        return AccessToken(str(self._credentials.token), expires_at, issued)


class CommandProvider:
    """Runs `command` (no shell) and reads the token from its standard output: a bare token
    (valid `command_token_seconds`) or a JSON object with access_token and expires_in."""

    def __init__(self, cfg: OAuth2Config) -> None:
        self._cfg = cfg

    def __repr__(self) -> str:
        return f"CommandProvider({self._cfg.command[0]!r})"

    def fetch(self, *, fresh: bool) -> AccessToken:
        issued = _now()
        out = run_bounded(list(self._cfg.command), self._cfg.command_timeout_seconds,
                          COMMAND_OUTPUT_LIMIT)
        text = out.decode("utf-8", "replace").strip()
        lifetime = self._cfg.command_token_seconds
        if text.startswith("{"):
            try:
                data = json.loads(text)
                token = str(data["access_token"])
                # At least 10 s: a token said to expire at once would make a login loop.
                lifetime = max(10.0, float(data.get("expires_in", lifetime)))
            except (ValueError, KeyError, TypeError):
                raise TokenError("oauth2 command printed JSON without a usable access_token "
                                 "/ expires_in") from None
        else:
            token = text.splitlines()[0].strip() if text else ""
        if not _TOKEN.fullmatch(token):
            raise TokenError("oauth2 command printed no token (expected one line of "
                             "printable ASCII, or JSON)")
        return AccessToken(token, issued + lifetime, issued)


def run_bounded(argv: list[str], timeout: float, limit: int) -> bytes:
    """Run `argv` without a shell; its standard output, at most `limit` bytes in `timeout`
    seconds (the process is killed past either).

    Raises:
        TokenError: it could not start, failed, took too long or printed too much.
    """
    name = os.path.basename(argv[0])
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise TokenError(f"oauth2 command {name!r} cannot start: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    sizes = dict.fromkeys(chunks, 0)
    deadline = time.monotonic() + timeout
    problem: str | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        while selector.get_map() and problem is None:
            left = deadline - time.monotonic()
            if left <= 0:
                problem = f"gave no answer within {timeout:g} s"
                break
            for key, _ in selector.select(left):
                fd = key.fd
                data = os.read(fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                if sizes[fd] < limit:
                    chunks[fd].append(data[: limit - sizes[fd]])
                sizes[fd] += len(data)
                if fd == out_fd and sizes[fd] > limit:
                    problem = f"printed more than {limit} bytes"
    if problem is not None:
        proc.kill()
    try:
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        problem = problem or f"did not exit within {timeout:g} s"
        code = -1
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if problem is not None:
        raise TokenError(f"oauth2 command {name!r} {problem}")
    if code != 0:
        err = b"".join(chunks[err_fd]).decode("utf-8", "replace")
        raise TokenError(f"oauth2 command {name!r} exited with {code}: {_clip(err)}")
    return b"".join(chunks[out_fd])


def _http_session(cfg: OAuth2Config) -> Any:
    """A requests session with the section's timeout, and its `ca_file` passed with every
    request: a session-wide ``verify`` loses against $REQUESTS_CA_BUNDLE in requests."""
    import requests

    session = requests.Session()
    fixed: dict[str, Any] = {"timeout": cfg.timeout_seconds}
    if cfg.ca_file:
        fixed["verify"] = cfg.ca_file
    plain = session.request

    def request(method: str, url: str, **kwargs: Any) -> Any:
        kwargs.update(fixed)
        return plain(method, url, **kwargs)

    setattr(session, "request", request)  # noqa: B010 - replaces the bound method
    return session


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def build_token_source(cfg: OAuth2Config, username: str, name: str) -> TokenSource:
    """The token source for one server section (secrets are read now).

    Raises:
        ConfigError: a missing secret, an unusable key, or the provider's package missing.
    """
    provider: TokenProvider
    if cfg.provider == "microsoft":
        provider = MicrosoftProvider(cfg)
    elif cfg.provider == "google":
        provider = GoogleProvider(cfg, subject=username)
    else:
        provider = CommandProvider(cfg)
    return TokenSource(provider, name)
