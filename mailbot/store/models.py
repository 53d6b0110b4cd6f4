"""The SQLAlchemy models: one class per table. They never leave :mod:`mailbot.store`;
callers get the frozen values of :mod:`mailbot.store.values`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every engine (SQLite drops offsets)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """On SQLite, `process_bind_param` and then straight to the text SQLAlchemy's
        DATETIME stores ("2026-11-25 09:00:00.000000", microseconds always): its own
        processor formats through a dict and `%` (2.0 µs a value, 1.2 µs this way), the
        costliest part of writing a row with several datetimes."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            naive_utc = self.process_bind_param(value, dialect)
            return None if naive_utc is None else naive_utc.isoformat(" ", "microseconds")

        return process


class Base(DeclarativeBase):
    pass


class LicenseRow(Base):
    __tablename__ = "licenses"

    license: Mapped[str] = mapped_column(String(8), primary_key=True)
    customer: Mapped[str] = mapped_column(String(300))
    email_domain: Mapped[str] = mapped_column(String(255))
    activated_on: Mapped[date]
    support_tier: Mapped[str] = mapped_column(String(20))
    max_version_date: Mapped[date | None]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Row number in the last import that named it: the registry's order.
    position: Mapped[int | None] = mapped_column(Integer, default=None)


class InboundMessage(Base):
    """One received message, deduplicated on two keys; its raw bytes are an `InboundRaw`
    row, written once (a claim or a decision rewrites this row, never the mail)."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # sha256 of "<message-id> <sender>" where both exist: the same mail delivered twice
    # with different trace headers (IMAP and LMTP, or a resend) is one record.
    identity: Mapped[str | None] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998))
    sender: Mapped[str | None] = mapped_column(String(320))
    origin: Mapped[str] = mapped_column(String(200))
    size: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(20), default="received")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The token of the latest claim (new_claim_token): only its holder may change the row.
    claim_token: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_inbound_state", "state", "id"),
        Index("ix_inbound_message_id", "message_id"),
        # What a claim orders waiting mail by, so choosing a batch reads no row (its raw).
        Index("ix_inbound_claim", "state", "lease_until", "received_at", "size"),
    )


class InboundRaw(Base):
    """The raw bytes of an inbound message as they arrived, in a table of their own: SQLite
    rewrites a whole row (its overflow pages too) on every update, so the mail lives apart
    from the state that changes. Retention deletes the row (the message keeps its keys)."""

    __tablename__ = "inbound_raw"

    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"), primary_key=True,
                                            autoincrement=False)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    year: Mapped[int]
    seq: Mapped[int]
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"), unique=True)
    license: Mapped[str | None] = mapped_column(String(8))
    customer_email: Mapped[str] = mapped_column(String(320))
    customer_name: Mapped[str] = mapped_column(String(300), default="")
    subject: Mapped[str] = mapped_column(String(1000))
    priority: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="open")
    language: Mapped[str] = mapped_column(String(5), default="cs")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    # 1 once the acknowledgement (`<ticket-N.1@…>`) is queued; later mails about the ticket
    # are named by their cause instead (`.n<inbound>` notice, `.r<inbound>` relay, …).
    out_seq: Mapped[int] = mapped_column(default=0)
    assignee: Mapped[str | None] = mapped_column(String(100))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The customer's first and latest Message-ID: relayed staff replies thread under them.
    first_message_id: Mapped[str | None] = mapped_column(String(998))
    last_message_id: Mapped[str | None] = mapped_column(String(998))
    # A new ticket opened by a follow-up to a long-closed one names the old ticket here.
    related_ticket: Mapped[str | None] = mapped_column(String(20))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("year", "seq"), Index("ix_ticket_state", "state"))


class TicketCounter(Base):
    __tablename__ = "ticket_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(default=0)


class TicketEvent(Base):
    """A ticket's history: inbound mail appended, replies sent, notes."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    kind: Mapped[str] = mapped_column(String(30))
    author: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(Text)


class DecisionRecord(Base):
    """The audit trail of one message: the decision and every rule's hit or miss."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    license: Mapped[str | None] = mapped_column(String(8))
    priority: Mapped[str | None] = mapped_column(String(20))
    missing: Mapped[list[str]] = mapped_column(JSON, default=list)
    scope_reason: Mapped[str | None] = mapped_column(String(60))
    ticket_ref: Mapped[str | None] = mapped_column(String(20))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    language: Mapped[str] = mapped_column(String(5), default="cs")
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """A rendered outgoing message. `purpose` is unique: one reply per cause."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(200), unique=True)
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_to: Mapped[list[str]] = mapped_column(JSON)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    server_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set for automatic replies (RFC 3834): the rate limit per sender counts these rows.
    auto_recipient: Mapped[str | None] = mapped_column(String(320))
    # The (first) recipient, lower-cased: bounces are counted per address.
    recipient: Mapped[str | None] = mapped_column(String(320))
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # For a bounced message: "hard" (5.x.x, or a non-standard bounce) or "soft" (4.x.x).
    bounce: Mapped[str | None] = mapped_column(String(10))
    # 0: service mail (ticket replies, notices), sent first; 1: bulk mail (news).
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    # The token of the latest claim (new_claim_token): only its holder may change the row.
    claim_token: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_outbox_due", "state", "priority", "next_attempt_at"),
        Index("ix_outbox_auto", "auto_recipient", "created_at"),
        Index("ix_outbox_recipient", "recipient", "kind"),
    )


class ImapCheckpoint(Base):
    """How far one IMAP folder has been taken in (UIDs are only valid within UIDVALIDITY)."""

    __tablename__ = "imap_checkpoints"

    mailbox: Mapped[str] = mapped_column(String(300), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(default=0)
    last_uid: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TicketAttachment(Base):
    """An attachment of a mail on a ticket; the bytes are a file named by `sha256`
    (:mod:`mailbot.attachments`), the name here is sanitised."""

    __tablename__ = "ticket_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"))
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("inbound_id", "sha256", "filename"),)


class ContactRow(Base):
    """A contact of a license (the contacts list), one row per address."""

    __tablename__ = "contacts"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    license: Mapped[str] = mapped_column(String(8), index=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    language: Mapped[str] = mapped_column(String(5), default="cs")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NewsToken(Base):
    """A recipient's unsubscribe token of one campaign (in List-Unsubscribe)."""

    __tablename__ = "news_tokens"

    token: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    campaign: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An address no mailing may reach for a reason other than an unsubscribe (bounces)."""

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScheduledCampaign(Base):
    """A campaign to queue at `due_at` (`mailbot news schedule`); `queued_at` once done."""

    __tablename__ = "scheduled_campaigns"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A recurring schedule (cron expression, in the business time zone); `due_at` is then
    # the next run.
    cron: Mapped[str | None] = mapped_column(String(100))


class Setting(Base):
    """Small named values the daemons share (e.g. the generated reply-token secret)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """A named job only one daemon may run at a time (the IMAP poller of a mailbox): held by
    `holder` until `expires_at`, renewed by it well before; an expired lease is free."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Unsubscription(Base):
    __tablename__ = "unsubscriptions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

