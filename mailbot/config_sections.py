"""The sections of the configuration: one frozen pydantic model per TOML table.

Every model forbids unknown keys; field validators give the messages that
:func:`mailbot.config.parse` turns into one line naming the bad key.
"""

from __future__ import annotations

import os
import re
from datetime import date, time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from mailbot.classify.text import BODY_TEXT_CHARS, QUOTE_SCAN_CHARS
from mailbot.config_secrets import previous_secret


_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _check_address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(f"expected an e-mail address like name@example.com, got {value!r}")
    return value.lower()


def _check_domain(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9.-]+\.[a-z0-9-]+", value.lower()):
        raise ValueError(f"expected a domain like example.com, got {value!r}")
    return value.lower()


Address = Annotated[str, AfterValidator(_check_address)]
Domain = Annotated[str, AfterValidator(_check_domain)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Section):
    """`url`: any SQLAlchemy URL; a relative SQLite path is taken relative to the config root."""

    url: str = "sqlite:///var/mailbot.db"
    # Attachment files (content-addressed), relative to the config root.
    attachments_dir: str = "var/attachments"
    echo: bool = False
    pool_size: int = Field(default=5, ge=1, le=100)


class MailboxConfig(_Section):
    support_address: Address = "podpora@estelar.example"
    support_name: str = "ESTELAR podpora"
    unsubscribe_address: Address = "novinky-odhlaseni@estelar.example"
    staff_domains: tuple[Domain, ...] = ("estelar.example",)
    staff_addresses: tuple[Address, ...] = ()
    staff_notify: tuple[Address, ...] = ()
    message_id_domain: Domain = "estelar.example"
    # Further local addresses that are "ours" (aliases of the support mailbox).
    aliases: tuple[Address, ...] = ()

    def own_addresses(self) -> frozenset[str]:
        return frozenset(
            (self.support_address, self.unsubscribe_address, *self.aliases)
        )


def _check_hhmm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"expected HH:MM, got {value!r}")
    return value


class CalendarConfig(_Section):
    """Business hours; `closure_days` are extra non-working days besides public holidays."""

    timezone: str = "Europe/Prague"
    opens: Annotated[str, AfterValidator(_check_hhmm)] = "08:00"
    closes: Annotated[str, AfterValidator(_check_hhmm)] = "17:00"
    holidays_country: str = "CZ"
    closure_days: tuple[date, ...] = ()
    ticket_hours: float = Field(default=27.0, gt=0, le=1000)
    emergency_hours: float = Field(default=4.0, gt=0, le=1000)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("holidays_country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        from mailbot import public_holidays

        if not public_holidays.supported(value):
            raise ValueError(f"unknown holidays country code {value!r}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def open_time(self) -> time:
        return time.fromisoformat(self.opens)

    @property
    def close_time(self) -> time:
        return time.fromisoformat(self.closes)


class RepliesConfig(_Section):
    templates_dir: str = "templates"
    default_language: Literal["cs", "en"] = "cs"
    # Offer for customers whose support ended (shown in reject_expired).
    tiers_offer_url: str = "https://estelar.example/hotline"



class ConversationConfig(_Section):
    """Staff notices, staff replies by mail, follow-ups and loop protection.

    A staff reply is trusted only when the topmost Authentication-Results header comes from
    one of `authserv_ids` (our own border MTA) and shows DKIM pass for the From domain (or
    its organizational domain) or DMARC pass, or when it is addressed to a notice's
    per-ticket reply address, whose HMAC token (`token_secret_env` /
    `token_secret_credential`; else a random secret kept in the store; the previous one of a
    rotation in `token_secret_previous_*`) is valid for `token_days`. `verify_staff = false`
    trusts the From header alone (a warning is logged at start): only for mailboxes no
    outsider can write to. `freemail_domains` never stand for a customer's organization.
    """

    staff_language: Literal["cs", "en"] = "cs"
    authserv_ids: tuple[str, ...] = ()
    verify_staff: bool = True
    token_secret_env: str | None = None
    token_secret_credential: str | None = None
    # Rotation: the secret before the current one; its tokens stay valid (until they expire,
    # at most token_days) while it is named here. Never used to make tokens.
    token_secret_previous_env: str | None = None
    token_secret_previous_credential: str | None = None
    token_days: int = Field(default=14, ge=1, le=3650)
    # Domains that never stand for a customer: only the ticket's own address may follow up
    # from them. "gmx.*" is any domain beginning with "gmx."; subdomains match too.
    freemail_domains: tuple[str, ...] = (
        "gmail.com", "googlemail.com", "seznam.cz", "email.cz", "post.cz", "spoluzaci.cz",
        "centrum.cz", "atlas.cz", "volny.cz", "tiscali.cz", "quick.cz", "azet.sk",
        "centrum.sk", "zoznam.sk", "pobox.sk", "outlook.com", "hotmail.com", "live.com",
        "msn.com", "yahoo.com", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com",
        "gmx.*", "web.de", "t-online.de", "mail.ru", "yandex.ru", "proton.me",
        "protonmail.com", "zoho.com", "mail.com", "o2.pl", "wp.pl", "onet.pl", "interia.pl",
    )
    # No secret configured (and no `reply-token-secret` credential): false refuses to start;
    # true uses a random one kept in the store, with a warning at start (a backup of the
    # database could then mint reply tokens).
    token_secret_from_store: bool = True
    # A follow-up to a ticket closed at most this long ago reopens it; later, it is a new
    # request that refers to the old ticket.
    reopen_days: float = Field(default=14.0, ge=0)
    # RFC 3834 §2: automatic replies (acknowledgements, rejections) per sender and hour.
    auto_replies_per_hour: int = Field(default=3, ge=0, le=1000)
    # ... and to all senders together: forged senders cannot turn mailbot into a reflector.
    auto_replies_total_per_hour: int = Field(default=200, ge=0, le=1_000_000)
    # Relayed staff replies show the staff member's name; their address only if true.
    expose_staff_address: bool = False

    @field_validator("authserv_ids")
    @classmethod
    def _lower_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", item):
                raise ValueError(f"expected a host name like mx.example.com, got {item!r}")
        return tuple(v.lower() for v in value)

    @field_validator("freemail_domains")
    @classmethod
    def _check_freemail(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.([a-z0-9-]+|\*)", item.lower()):
                raise ValueError(f"expected a domain like gmail.com or gmx.*, got {item!r}")
        return tuple(v.lower() for v in value)

    @field_validator("token_secret_previous_env")
    @classmethod
    def _previous_env_set(cls, value: str | None) -> str | None:
        if value and value not in os.environ:
            raise ValueError(f"environment variable {value} is not set")
        return value

    @field_validator("token_secret_previous_credential")
    @classmethod
    def _previous_credential_there(cls, value: str | None) -> str | None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if value and not (directory and (Path(directory) / value).is_file()):
            raise ValueError(f"credential {value!r} not found in $CREDENTIALS_DIRECTORY")
        return value

    def previous_token_secrets(self) -> tuple[bytes, ...]:
        """The rotation's previous reply-token secret, if one is configured (read once)."""
        return previous_secret(self.token_secret_previous_env,
                                self.token_secret_previous_credential)



class ScheduleConfig(_Section):
    """Timed work of `mailbot run`: deadline reminders and escalation, waiting tickets, the
    daily digest. `lead_address` gets escalations (empty: the staff list);
    `emergency_notify` (and `sms_gateway`, an e-mail-to-SMS address) hear of every emergency
    ticket at once."""

    enabled: bool = True
    tick_seconds: float = Field(default=30.0, gt=0, le=3600)
    reminder_hours: float = Field(default=4.0, ge=0, le=100)
    lead_address: Address | None = None
    emergency_notify: tuple[Address, ...] = ()
    sms_gateway: Address | None = None
    # Waiting for the customer: a polite reminder after this many working days, and the
    # ticket closed (with a notice) after as many again.
    wait_reminder_days: float = Field(default=5.0, gt=0, le=365)
    wait_close_days: float = Field(default=5.0, gt=0, le=365)
    digest: bool = True
    digest_time: Annotated[str, AfterValidator(_check_hhmm)] = "07:30"
    digest_when_empty: bool = False  # a digest on days without new or open tickets


class NewsConfig(_Section):
    """News mailings. `base_url` (https) enables the RFC 8058 one-click unsubscribe link;
    `rate_per_minute` spaces the mails out (0: as fast as the outbox sends).

    `http_enabled` has the daemon serve that link itself: plain HTTP on `http_host` and
    `http_port` (loopback), behind a reverse proxy that terminates HTTPS for `base_url` and
    forwards its ``/unsubscribe/`` path there (see `mailbot.unsubscribe_http`)."""

    directory: str = "templates/news"
    from_name: str = "ESTELAR novinky"
    list_id: str = "novinky.estelar.example"
    base_url: str | None = None
    rate_per_minute: int = Field(default=0, ge=0, le=1_000_000)
    # Bounce reports about this many news mails to one address suppress it.
    bounce_limit: int = Field(default=2, ge=1, le=100)
    # The one-click unsubscribe endpoint of the daemon (plain HTTP; port 0: any free one).
    http_enabled: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8025, ge=0, le=65535)

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, value: str) -> str:
        # RFC 2919: a dot-atom, written between angle brackets in List-Id
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
                            value):
            raise ValueError(f"expected a list id such as novinky.example.cz, got {value!r}")
        return value

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d+)?(/[\w./-]*)?", value):
            raise ValueError(f"expected an https:// URL, got {value!r}")
        return value


class MonitoringConfig(_Section):
    """Health and metrics on the daemon's HTTP endpoint (`/healthz`, `/readyz`, `/metrics`),
    served on `news.http_host`:`news.http_port` (with or without news unsubscribe).

    Readiness: the store answers within `store_timeout_seconds`, the listener accepts a
    connection, each IMAP mailbox is connected or was lost less than `imap_grace_seconds`
    ago, the worker finished a pass less than `worker_stall_seconds` ago, and the oldest due
    outbox mail is younger than `outbox_stuck_minutes`. `check_seconds`: how often the
    daemon checks (for alerts; `/readyz` checks on every request)."""

    enabled: bool = False
    check_seconds: float = Field(default=15.0, gt=0, le=3600)
    store_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    imap_grace_seconds: float = Field(default=120.0, ge=0, le=86_400)
    worker_stall_seconds: float = Field(default=600.0, gt=0, le=86_400)
    outbox_stuck_minutes: float = Field(default=30.0, gt=0, le=100_000)


class AlertsConfig(_Section):
    """Alert mails to `schedule.lead_address` (else the staff list): intake stopped (no
    successful IMAP cycle for `intake_stopped_minutes`, or the listener refuses connections),
    the outbox's oldest due mail older than `outbox_stuck_minutes`, mail quarantined. One
    mail when a condition starts, one when it clears; checked every `monitoring.check_seconds`
    by the daemon holding the scheduler lease."""

    enabled: bool = False
    intake_stopped_minutes: float = Field(default=15.0, gt=0, le=100_000)
    outbox_stuck_minutes: float = Field(default=60.0, gt=0, le=100_000)
    quarantine: bool = True


class TierOffer(_Section):
    """A paid support tier offered when START ends (shown in the notices)."""

    name: str
    price: str = ""
    url: str = ""


class NoticesConfig(_Section):
    """Notices to a license's contacts before HOTLINE START ends (`days_before`) and on its
    last day (`final_notice`), each at most once per license, contact and occasion."""

    start_expiry: bool = True
    days_before: tuple[int, ...] = (30, 7)
    final_notice: bool = True
    # A notice is not sent later than this many days after its occasion (daemon down).
    grace_days: int = Field(default=14, ge=0, le=365)
    tiers: tuple[TierOffer, ...] = (
        TierOffer(name="HOTLINE", url="https://estelar.example/hotline"),
        TierOffer(name="HOTLINE PLUS", url="https://estelar.example/hotline-plus"),
        TierOffer(name="HOTLINE speciál", url="https://estelar.example/hotline-special"),
    )

    @field_validator("days_before")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d <= 0 or d > 365 for d in value):
            raise ValueError(f"expected days between 1 and 365, got {list(value)}")
        return tuple(sorted(set(value), reverse=True))


class LimitsConfig(_Section):
    """What a message may be: over a limit it is quarantined with the reason (a sender of a
    merely too large message is told the limit; structural excess gets no reply)."""

    message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    header_bytes: int = Field(default=256 * 1024, ge=1024)
    header_fields: int = Field(default=1000, ge=10)
    mime_parts: int = Field(default=1000, ge=1)
    multiparts: int = Field(default=50, ge=1)
    attachment_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # Attachments kept per ticket (files under `attachments_dir`), in all.
    ticket_attachment_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    # Text the rules read: the first characters of a body's readable text, and of those
    # the part split into own text, quotes and signature (the rest counts as quoted).
    body_text_chars: int = Field(default=BODY_TEXT_CHARS, ge=1024, le=16 * 1024 * 1024)
    quote_scan_chars: int = Field(default=QUOTE_SCAN_CHARS, ge=1024, le=1024 * 1024)


class RetentionConfig(_Section):
    """What the scheduler removes (also `mailbot purge`); days 0: keep forever.

    `raw_days`: the raw bytes of decided inbound mail received that long ago, unless the mail
    belongs to a ticket not closed that long (received or quarantined mail is never touched).
    `attachment_days`: the attachments of tickets closed that long ago. Attachment files no
    row refers to are removed once unchanged for `orphan_grace_hours` (a write in flight is
    younger). Each run handles at most `batch` rows and files; runs are `interval_minutes`
    apart (sooner while there is more to do)."""

    raw_days: int = Field(default=0, ge=0, le=36500)
    attachment_days: int = Field(default=0, ge=0, le=36500)
    orphan_grace_hours: float = Field(default=24.0, ge=1, le=24 * 365)
    batch: int = Field(default=1000, ge=1, le=1_000_000)
    interval_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)


class WorkerConfig(_Section):
    """Deciding stored mail. `processes` child processes parse and decide (0: in-process),
    each capped at `memory_mb` of address space and `parse_timeout_seconds` per message."""

    poll_seconds: float = Field(default=2.0, gt=0)
    # Mails claimed per batch at most (and at most 4 MiB of them; a lone mail never waits
    # for more): in a 5,000-mail IMAP catch-up, 64 decided 6-9 % faster than 32.
    batch: int = Field(default=64, ge=1, le=1000)
    # A daemon's claim on a batch to decide, renewed every third of it while the batch is
    # decided; after it (the daemon died) another one decides the mail.
    lease_seconds: float = Field(default=20.0, ge=3)
    processes: int = Field(default=2, ge=0, le=64)
    # The processes start with the first mail to decide and stop after this long without
    # any (0: they stay once started).
    pool_idle_seconds: float = Field(default=300.0, ge=0)
    parse_timeout_seconds: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=1024, ge=0)
