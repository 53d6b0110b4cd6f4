"""The configuration of the mail servers mailbot talks to: outbound SMTP, the listener,
IMAP mailboxes, and OAuth2 tokens for them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from mailbot.config_sections import Address, _Section


OAUTH2_DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    # Client credentials for Exchange Online IMAP/SMTP (the app's granted permissions).
    "microsoft": ("https://outlook.office365.com/.default",),
    # Full mail access, the only scope Gmail's IMAP and SMTP accept.
    "google": ("https://mail.google.com/",),
    "command": (),
}


class OAuth2Config(_Section):
    """An OAuth2 access token for IMAP/SMTP (SASL XOAUTH2 or OAUTHBEARER); see `mailbot.oauth`.

    provider "microsoft": client credentials (`tenant_id`, `client_id`, the client secret);
    "google": a service account key with domain-wide delegation (`service_account_key_*`),
    or a stored refresh token (`refresh_token_*` with `client_id` and the client secret);
    "command": `command` prints the token (or a JSON object with access_token/expires_in).
    Secrets come from the environment (`*_env`) or systemd credentials (`*_credential`).
    """

    provider: Literal["microsoft", "google", "command"]
    mechanism: Literal["xoauth2", "oauthbearer"] = "xoauth2"
    # Empty: the provider's default (OAUTH2_DEFAULT_SCOPES).
    scopes: tuple[str, ...] = ()
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_credential: str | None = None
    # Microsoft: default https://login.microsoftonline.com/<tenant_id> (national clouds differ).
    authority: str | None = None
    service_account_key_env: str | None = None
    service_account_key_credential: str | None = None
    refresh_token_env: str | None = None
    refresh_token_credential: str | None = None
    # Google refresh tokens: default https://oauth2.googleapis.com/token.
    token_url: str | None = None
    command: tuple[str, ...] = ()
    command_timeout_seconds: float = Field(default=20.0, gt=0, le=600)
    # A command that prints a bare token: assume it is valid this long.
    command_token_seconds: float = Field(default=300.0, ge=10, le=86400)
    # CA bundle for the token endpoint's TLS certificate (default: the system's).
    ca_file: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _provider_settings(self) -> OAuth2Config:
        def need(key: str, present: bool, why: str) -> None:
            if not present:
                raise ValueError(f"{key} is required for {why} (got none)")

        provider = f'provider = "{self.provider}"'
        if self.provider == "microsoft":
            need("tenant_id", bool(self.tenant_id), provider)
            need("client_id", bool(self.client_id), provider)
            need("client_secret_env or client_secret_credential",
                 bool(self.client_secret_env or self.client_secret_credential), provider)
        elif self.provider == "google":
            key = bool(self.service_account_key_env or self.service_account_key_credential)
            token = bool(self.refresh_token_env or self.refresh_token_credential)
            if key == token:
                raise ValueError(
                    f"{provider} takes either service_account_key_env/_credential or "
                    f"refresh_token_env/_credential (got {'both' if key else 'neither'})"
                )
            if token:
                why = f"{provider} with a refresh token"
                need("client_id", bool(self.client_id), why)
                need("client_secret_env or client_secret_credential",
                     bool(self.client_secret_env or self.client_secret_credential), why)
        else:
            need("command", bool(self.command), provider)
        for url in (self.authority, self.token_url):
            if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
                raise ValueError(f"expected an http(s) URL, got {url!r}")
        return self

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        return self.scopes or OAUTH2_DEFAULT_SCOPES[self.provider]


def _check_auth(auth: str, oauth2: OAuth2Config | None, has_password: bool) -> None:
    if auth == "oauth2" and oauth2 is None:
        raise ValueError('auth = "oauth2" needs an oauth2 section (got none)')
    if auth == "password" and oauth2 is not None:
        raise ValueError('an oauth2 section needs auth = "oauth2" (got auth = "password")')
    if auth == "oauth2" and has_password:
        raise ValueError('auth = "oauth2" takes no password_env/password_credential '
                         "(got one)")


class OutboundConfig(_Section):
    """Where replies go: a directory sink (one .eml each) or an SMTP relay."""

    mode: Literal["directory", "smtp"] = "directory"
    directory: str = "var/sent"
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    verify_tls: bool = True
    ca_file: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_credential: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_horizon_hours: float = Field(default=48.0, gt=0)
    # The first retry waits this long, each later one twice as long (at most an hour).
    retry_base_seconds: float = Field(default=60.0, gt=0, le=3600)
    # A sending daemon's claim on a batch, renewed every third of it while the batch is
    # sent; after it (the daemon died) another one sends it.
    lease_seconds: float = Field(default=20.0, ge=5)
    batch: int = Field(default=50, ge=1, le=10_000)
    # Sending threads, each with its own connection to the relay (smtp mode); at most
    # `per_domain_concurrency` of them send to one recipient domain at a time (0: no limit).
    concurrency: int = Field(default=4, ge=1, le=64)
    per_domain_concurrency: int = Field(default=2, ge=0, le=64)
    # "oauth2": AUTH XOAUTH2/OAUTHBEARER as `username` with a token from [outbound.oauth2].
    auth: Literal["password", "oauth2"] = "password"
    oauth2: OAuth2Config | None = None

    @model_validator(mode="after")
    def _auth_settings(self) -> OutboundConfig:
        _check_auth(self.auth, self.oauth2, bool(self.password_env or self.password_credential))
        if self.auth == "oauth2" and not self.username:
            raise ValueError('auth = "oauth2" needs username, the mailbox to send as (got none)')
        return self


class ListenerConfig(_Section):
    """SMTP or LMTP intake (aiosmtpd). `recipients` empty: the mailbox's own addresses
    (with `+tag` sub-addresses) are accepted, every other recipient gets 550."""

    enabled: bool = True
    protocol: Literal["smtp", "lmtp"] = "smtp"
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    recipients: tuple[Address, ...] = ()


class ImapMailboxConfig(_Section):
    """One IMAP mailbox polled (IDLE where offered). Plain connections need security="none"."""

    name: str = "support"
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "tls"
    verify_tls: bool = True
    ca_file: str | None = None
    username: str
    password_env: str | None = None
    password_credential: str | None = None
    folder: str = "INBOX"
    # After a message is stored: "flag" sets \Seen plus `keyword`; "move" moves it.
    after_store: Literal["flag", "move"] = "flag"
    keyword: str = "$MailbotStored"
    move_to: str = "Processed"
    poll_seconds: float = Field(default=60.0, gt=0)
    idle_seconds: float = Field(default=600.0, gt=0, le=1740)  # RFC 2177: < 29 min
    # Of several daemons on one database, one polls this mailbox; when it dies, another
    # takes over within this many seconds (it renews its lease every third of it).
    lease_seconds: float = Field(default=30.0, ge=3, le=3600)
    timeout_seconds: float = Field(default=60.0, gt=0)
    batch: int = Field(default=200, ge=1, le=10_000)
    # One FETCH takes at most `batch` messages and `batch_bytes` bytes (by RFC822.SIZE; a
    # larger message alone). Over limits.message_bytes: only the header section is fetched.
    batch_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)
    # "oauth2": AUTHENTICATE XOAUTH2/OAUTHBEARER with a token from [imap.oauth2].
    auth: Literal["password", "oauth2"] = "password"
    oauth2: OAuth2Config | None = None

    @model_validator(mode="after")
    def _auth_settings(self) -> ImapMailboxConfig:
        _check_auth(self.auth, self.oauth2, bool(self.password_env or self.password_credential))
        return self
