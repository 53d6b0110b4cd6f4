"""The store: SQLAlchemy 2 models and the `Store` facade, the only module that speaks SQL.

The database is the queue (Mailman's queues, with a row state instead of a file per
stage): every inbound message is committed as raw bytes first (`received`), and each later
step is one transaction that moves its rows to the next state, so a crash at any point
re-runs a step instead of losing mail.

States:
    InboundMessage   received → decided | quarantined
    OutboxMessage    queued → sent | dead | bounced   (retry: queued with a later next_attempt_at)
    Ticket           open → waiting → closed

The facade is synchronous; async callers run it in a thread (`asyncio.to_thread`). Work is
claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite, single-writer, ignores
it) under a short lease and a claim token: the claimer renews the lease while it works, and
a state change given the token happens only while that claim still holds the row. Unique
keys make every effect idempotent: one decision per inbound message, one reply per
(purpose, message), one ticket number per (year, sequence).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import logging
import os
import re
import secrets
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    delete,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from mailbot.attachments import SavedAttachment
from mailbot.contacts import Contact
from mailbot.domain import LicenseRecord, Priority, TicketInfo, Tier
from mailbot.domain import OutgoingMail as OutgoingMail  # the outbox API takes it
from mailbot.errors import TemporaryIngestError

log = logging.getLogger(__name__)


PURPOSE_MAX = 200  # OutboxMessage.purpose is String(200)


def bounded_purpose(prefix: str, address: str) -> str:
    """The outbox purpose ``<prefix>:<address>``, or ``<prefix>:#<SHA-256 of the address,
    40 hex>`` when that would not fit the column (addresses may have 320 characters)."""
    purpose = f"{prefix}:{address}"
    if len(purpose) <= PURPOSE_MAX:
        return purpose
    return f"{prefix}:#{hashlib.sha256(address.encode('utf-8')).hexdigest()[:40]}"


def _dialect_insert(dialect: str, table: Table) -> Any:
    """INSERT with the engine's ON CONFLICT clause (PostgreSQL and SQLite spell it alike)."""
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def store_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be used right now (down, restarting, locked,
    connection lost), so the work is to be retried, not blamed on the message."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def new_lease_holder() -> str:
    """A name for this process in leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_claim_token() -> str:
    """A claim's fencing token: host and pid (who holds the rows) and a random part (unique
    per claim). A state change of a claimed row names it in its WHERE clause."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex}"


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
    """One received message, raw bytes as they arrived, deduplicated on two keys."""

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
    raw: Mapped[bytes] = mapped_column(LargeBinary)
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
    )


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


# ----------------------------------------------------------------------------- values



def _detached(s: Session, q: Any) -> list[Any]:
    """The rows of `q`, detached from the session so they can be read after it closes."""
    rows = list(s.scalars(q))
    for r in rows:
        s.expunge(r)
    return rows


def ticket_info(t: Ticket) -> TicketInfo:
    """The value view of a ticket row."""
    return TicketInfo(
        number=t.number,
        state=t.state,
        subject=t.subject,
        customer_email=t.customer_email,
        customer_name=t.customer_name,
        license=t.license,
        priority=Priority(t.priority),
        language=t.language,
        opened_at=t.opened_at,
        deadline=t.deadline,
        closed_at=t.closed_at,
        assignee=t.assignee,
        first_message_id=t.first_message_id,
        last_message_id=t.last_message_id,
        waiting_since=t.waiting_since,
    )


@dataclass(frozen=True, slots=True)
class SavedInbound:
    """Result of `save_inbound`: the row's id and whether this call created it."""

    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class ClaimedInbound:
    id: int
    raw: bytes
    origin: str
    received_at: datetime
    attempts: int
    # The claim's fencing token; None for rows handled without a claim (replay).
    token: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignSchedule:
    """A scheduled campaign: one-off (`cron` None; `queued_at` once done) or recurring
    (`due_at` the next run, `queued_at` the last one)."""

    name: str
    due_at: datetime
    cron: str | None
    queued_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedOutbox:
    id: int
    message_id: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: datetime
    # The claim's fencing token (see ClaimedInbound.token).
    token: str | None = None


def _like_escape(text: str) -> str:
    """`text` for a LIKE pattern with escape character backslash: ``%`` and ``_`` literal."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_MSGID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>\"(),;:]+@[^\s<>\"(),;:]+)")


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    end2 = raw.find(b"\n\n")
    cut = [e for e in (end, end2) if e >= 0]
    return raw[: min(cut)] if cut else raw[:65536]


def _keys_of(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(sha256, identity, Message-ID, sender): the two dedup keys and what they are made of."""
    sha = hashlib.sha256(raw).hexdigest()
    message_id, sender = identity_of(raw)
    identity = (
        hashlib.sha256(f"{message_id.lower()} {sender}".encode()).hexdigest()
        if message_id and sender
        else None
    )
    return sha, identity, message_id, sender


def identity_of(raw: bytes) -> tuple[str | None, str | None]:
    """Message-ID and From address read cheaply from the header block (never raises)."""
    head = _header_block(raw)[:262144]
    message_id: str | None = None
    sender: str | None = None
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        mid = headers.get("message-id")
        if mid:
            message_id = " ".join(str(mid).split())[:998] or None
        frm = headers.get("from")
        if frm:
            m = _ADDR.search(str(frm))
            if m:
                sender = (m.group(1) or m.group(2)).lower()[:320]
    except Exception:  # noqa: BLE001 - identity is a best effort; sha256 still dedups
        log.debug("identity_of: header block unreadable", exc_info=True)
    return message_id, sender


# ----------------------------------------------------------------------------- facade


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (the module's
    # own implicit BEGIN breaks SAVEPOINT); see the "begin" listener below.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a 250 promises the mail survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str, *, echo: bool = False, pool_size: int = 5,
                readonly: bool = False) -> Engine:
    """An engine with the embedded-default settings (SQLite WAL) or a pooled server engine.

    SQLite transactions begin IMMEDIATE (taking the one write lock at once, so a busy writer
    is waited for instead of failing a read-then-write transaction at its first write);
    `readonly` engines (the decision children) begin DEFERRED and never block writers.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN" if readonly else "BEGIN IMMEDIATE"

        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        event.listen(engine, "begin", _begin)
        return engine
    return create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


class Store:
    """Named operations on the database. All SQL of mailbot lives here."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._reader: Engine | None = None  # SQLite: reads that never take the write lock

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False, pool_size: int = 5,
                 readonly: bool = False) -> Store:
        return cls(make_engine(url, echo=echo, pool_size=pool_size, readonly=readonly))

    def close(self) -> None:
        self.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A unit of work for the worker's actions (one per message)."""
        with self.session() as s:
            yield Transaction(s, self.engine.dialect.name)

    # --- inbound -------------------------------------------------------------------

    def save_inbound(
        self, raw: bytes, origin: str, received_at: datetime | None = None
    ) -> SavedInbound:
        """Commit raw bytes durably, once: an identical or same-identity message is not stored
        again and the existing id is returned.

        Raises:
            TemporaryIngestError: the database is unavailable (SMTP answers 451).
        """
        return self.save_inbound_many([(raw, origin)], received_at)[0]

    def save_inbound_many(
        self, messages: Sequence[tuple[bytes, str]], received_at: datetime | None = None
    ) -> list[SavedInbound]:
        """`save_inbound` for several (raw, origin) pairs in one transaction (one fsync):
        for batch intake such as replay; all are committed before this returns.

        Raises:
            TemporaryIngestError: the database is unavailable.
        """
        when = received_at or utcnow()
        keys = [(raw, origin, *_keys_of(raw)) for raw, origin in messages]
        try:
            try:
                with self.session() as s:
                    return [self._save_one(s, *k, when) for k in keys]
            except IntegrityError:
                # Lost a race with another intake (IMAP and LMTP, or another daemon): the
                # rows are there now, or we insert them one by one.
                results = []
                for k in keys:
                    found = self._find_inbound(k[2], k[3])
                    if found is not None:
                        results.append(SavedInbound(found, False))
                        continue
                    with self.session() as s:
                        results.append(self._save_one(s, *k, when))
                return results
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            raise TemporaryIngestError(f"store unavailable: {getattr(exc, 'orig', exc)}") from exc

    @staticmethod
    def _save_one(s: Session, raw: bytes, origin: str, sha: str, identity: str | None,
                  message_id: str | None, sender: str | None, when: datetime) -> SavedInbound:
        conn = s.connection()
        existing = conn.execute(
            _INBOUND_BY_KEYS, {"sha": sha, "identity": identity or "-"}
        ).scalar()
        if existing is not None:
            return SavedInbound(existing, False)
        new_id = conn.execute(
            _INSERT_INBOUND,
            {"sha256": sha, "identity": identity, "message_id": message_id, "sender": sender,
             "origin": origin[:200], "size": len(raw), "raw": raw, "received_at": when,
             "state": "received", "attempts": 0},
        ).scalar()
        assert new_id is not None
        return SavedInbound(int(new_id), True)

    def _find_inbound(self, sha: str, identity: str | None) -> int | None:
        with self.session() as s:
            q = select(InboundMessage.id).where(InboundMessage.sha256 == sha)
            found = s.scalar(q)
            if found is None and identity is not None:
                found = s.scalar(
                    select(InboundMessage.id).where(InboundMessage.identity == identity)
                )
            return found

    def claim_inbound(self, limit: int = 20, lease: timedelta = timedelta(seconds=20),
                      now: datetime | None = None) -> list[ClaimedInbound]:
        """Take up to `limit` received messages whose lease is free, oldest first, under a
        new claim token (keep them with `renew_inbound`)."""
        now = now or utcnow()
        token = new_claim_token()
        with self.session() as s:
            q = (
                select(InboundMessage)
                .where(InboundMessage.state == "received")
                .where((InboundMessage.lease_until.is_(None)) | (InboundMessage.lease_until < now))
                .order_by(InboundMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = list(s.scalars(q))
            for row in rows:
                row.lease_until = now + lease
                row.attempts += 1
                row.claim_token = token
            return [
                ClaimedInbound(r.id, r.raw, r.origin, r.received_at, r.attempts, token)
                for r in rows
            ]

    def renew_inbound(self, inbound_ids: Sequence[int], token: str, lease: timedelta,
                      now: datetime | None = None) -> set[int]:
        """Extend the lease of those claimed rows still held under `token` (and undecided);
        returns their ids. Rows locked by a writer right now are skipped, not waited for."""
        return self._renew(_inbound, inbound_ids, token, lease, now, "received")

    def _renew(self, table: Table, ids: Sequence[int], token: str, lease: timedelta,
               now: datetime | None, state: str) -> set[int]:
        if not ids:
            return set()
        now = now or utcnow()
        held = (select(table.c.id)
                .where(table.c.id.in_(list(ids)), table.c.claim_token == token,
                       table.c.state == state)
                .with_for_update(skip_locked=True))
        with self.engine.begin() as conn:
            res = conn.execute(update(table).where(table.c.id.in_(held.scalar_subquery()))
                               .values(lease_until=now + lease).returning(table.c.id))
            return {int(i) for (i,) in res}

    def get_inbound(self, inbound_id: int) -> InboundMessage | None:
        """One stored message with its state and error (detached from the session)."""
        with self.session() as s:
            r = s.get(InboundMessage, inbound_id)
            if r is not None:
                s.expunge(r)
            return r

    def quarantine_inbound(self, inbound_id: int, error: str, token: str | None = None) -> bool:
        """Park a message that broke parsing or deciding, with the reason (Mailman's shunt).
        With the claim's `token`, only while that claim holds the undecided row; False when
        it was refused (another daemon claimed the row since)."""
        with self.session() as s:
            q = update(InboundMessage).where(InboundMessage.id == inbound_id)
            if token is not None:
                q = q.where(InboundMessage.claim_token == token,
                            InboundMessage.state == "received")
            res = s.execute(q.values(state="quarantined", error=error[:20000], lease_until=None,
                                     decided_at=utcnow()))
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def release_inbound(self, inbound_ids: Sequence[int], token: str | None = None) -> None:
        """Give claimed, undecided messages back (the batch failed), due again at once;
        with `token`, only rows that claim still holds."""
        with self.session() as s:
            q = (update(InboundMessage)
                 .where(InboundMessage.id.in_(list(inbound_ids)))
                 .where(InboundMessage.state == "received"))
            if token is not None:
                q = q.where(InboundMessage.claim_token == token)
            s.execute(q.values(lease_until=None))

    def requeue_inbound(self, inbound_ids: Sequence[int]) -> int:
        """Put quarantined messages back into the queue (after a fix)."""
        with self.session() as s:
            res = s.execute(
                update(InboundMessage)
                .where(InboundMessage.id.in_(list(inbound_ids)))
                .where(InboundMessage.state == "quarantined")
                .values(state="received", lease_until=None)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def list_inbound(self, state: str, limit: int = 100) -> list[InboundMessage]:
        with self.session() as s:
            q = (
                select(InboundMessage)
                .where(InboundMessage.state == state)
                .order_by(InboundMessage.id.desc())
                .limit(limit)
            )
            return _detached(s, q)

    def count_inbound(self) -> dict[str, int]:
        with self.session() as s:
            q = select(InboundMessage.state, func.count()).group_by(InboundMessage.state)
            return {state: int(n) for state, n in s.execute(q)}

    # --- IMAP checkpoints -------------------------------------------------------------

    def imap_checkpoint(self, mailbox: str) -> tuple[int, int]:
        """(uidvalidity, last stored UID) of a folder; (0, 0) before the first run."""
        with self.session() as s:
            row = s.get(ImapCheckpoint, mailbox)
            return (row.uidvalidity, row.last_uid) if row else (0, 0)

    def save_imap_checkpoint(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        with self.session() as s:
            row = s.get(ImapCheckpoint, mailbox, with_for_update=True)
            if row is None:
                s.add(ImapCheckpoint(mailbox=mailbox, uidvalidity=uidvalidity,
                                     last_uid=last_uid, updated_at=utcnow()))
                return
            if row.uidvalidity != uidvalidity or last_uid > row.last_uid:
                row.uidvalidity, row.last_uid = uidvalidity, last_uid
            row.updated_at = utcnow()

    def note_intake_error(self, mailbox: str, error: str) -> None:
        """Remember an intake's last error for `mailbot status`."""
        with self.session() as s:
            row = s.get(ImapCheckpoint, mailbox)
            if row is None:
                row = ImapCheckpoint(mailbox=mailbox, uidvalidity=0, last_uid=0,
                                     updated_at=utcnow())
                s.add(row)
            row.last_error, row.last_error_at = error[:2000], utcnow()

    def imap_checkpoints(self) -> list[ImapCheckpoint]:
        with self.session() as s:
            return _detached(s, select(ImapCheckpoint).order_by(ImapCheckpoint.mailbox))

    # --- licenses ------------------------------------------------------------------

    def upsert_licenses(self, records: Sequence[LicenseRecord]) -> int:
        """Insert or update registry rows by license number; returns how many were written.
        The records' order is the registry's order (`license_snapshot` keeps it)."""
        now = utcnow()
        self._upsert(LicenseRow, "license", [
            {"license": r.license, "customer": r.customer, "email_domain": r.email_domain,
             "activated_on": r.activated_on, "support_tier": r.tier.value,
             "max_version_date": r.max_version_date, "updated_at": now, "position": i}
            for i, r in enumerate(records)])
        return len(records)

    def upsert_contacts(self, contacts: Sequence[Contact]) -> int:
        """Insert or update contacts by address; returns how many were written."""
        now = utcnow()
        self._upsert(ContactRow, "email", [
            {"email": c.email, "license": c.license, "name": c.name, "language": c.language,
             "updated_at": now} for c in contacts])
        return len(contacts)

    def _upsert(self, model: type[Base], key: str, rows: list[dict[str, Any]]) -> None:
        """INSERT … ON CONFLICT (key) DO UPDATE for all `rows` in one transaction (one
        statement per row, no read first). Later rows for a key win."""
        rows = list({row[key]: row for row in rows}.values())  # one statement may not
        if not rows:                                            # touch a row twice
            return
        table = cast(Table, model.__table__)
        stmt = _dialect_insert(self.engine.dialect.name, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key],
            set_={name: stmt.excluded[name] for name in rows[0] if name != key})
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    def contacts(self, license: str | None = None) -> list[Contact]:
        """Contacts (of one license), by address."""
        with self.session() as s:
            q = select(ContactRow).order_by(ContactRow.email)
            if license is not None:
                q = q.where(ContactRow.license == license)
            return [Contact(r.email, r.license, r.name, r.language) for r in s.scalars(q)]

    def campaign_status(self, campaign: str) -> dict[str, int]:
        """Outbox states of a campaign's (or a run's) mails, plus how many recipients
        unsubscribed since."""
        with self.session() as s:
            q = (select(OutboxMessage.state, func.count())
                 .where(OutboxMessage.purpose.like(f"news:{_like_escape(campaign)}:%",
                                                   escape="\\"))
                 .group_by(OutboxMessage.state))
            counts = {state: int(n) for state, n in s.execute(q)}
            counts["unsubscribed"] = int(s.scalar(
                select(func.count()).select_from(NewsToken)
                .join(Unsubscription, Unsubscription.address == NewsToken.email)
                .where(NewsToken.campaign == campaign)) or 0)
            return counts

    def suppressed(self) -> list[tuple[str, str, datetime]]:
        """Addresses no mailing may reach: (address, reason, since)."""
        with self.session() as s:
            rows = s.execute(select(Unsubscription.address, Unsubscription.created_at)).all()
            found = [(a.lower(), "unsubscribed", t) for a, t in rows]
            bounced = s.execute(select(Suppression.address, Suppression.reason,
                                       Suppression.created_at)).all()
            found += [(a, r, t) for a, r, t in bounced]
            return sorted(found, key=lambda row: row[2])

    def campaign_runs(self, name: str) -> list[str]:
        """The ids of the runs of recurring campaign `name` that queued mail (NAME@…), oldest
        first."""
        with self.session() as s:
            return list(s.scalars(
                select(NewsToken.campaign).distinct()
                .where(NewsToken.campaign.like(f"{_like_escape(name)}@%", escape="\\"))
                .order_by(NewsToken.campaign)))

    def schedule_campaign(self, name: str, due_at: datetime, cron: str | None = None) -> None:
        """Queue campaign `name` at `due_at` (again: the time is moved, if not yet queued);
        with `cron`, a recurring schedule whose next run is `due_at`. Changing a recurring
        schedule to a one-off makes it due again."""
        with self.session() as s:
            row = s.get(ScheduledCampaign, name)
            if row is None:
                s.add(ScheduledCampaign(name=name, due_at=due_at, cron=cron))
            elif cron is not None or row.cron is not None:
                if cron is None:
                    row.queued_at = None
                row.cron, row.due_at = cron, due_at
            elif row.queued_at is None:
                row.due_at = due_at

    def due_campaigns(self, now: datetime) -> list[CampaignSchedule]:
        """Schedules due at `now`: one-offs not yet queued, recurring ones whose run is due."""
        with self.session() as s:
            rows = s.scalars(select(ScheduledCampaign)
                             .where(ScheduledCampaign.queued_at.is_(None)
                                    | ScheduledCampaign.cron.is_not(None))
                             .where(ScheduledCampaign.due_at <= now)
                             .order_by(ScheduledCampaign.due_at))
            return [CampaignSchedule(r.name, r.due_at, r.cron, r.queued_at) for r in rows]

    def scheduled_campaigns(self) -> list[CampaignSchedule]:
        """All schedules, by name."""
        with self.session() as s:
            rows = s.scalars(select(ScheduledCampaign).order_by(ScheduledCampaign.name))
            return [CampaignSchedule(r.name, r.due_at, r.cron, r.queued_at) for r in rows]

    def campaign_queued(self, name: str, now: datetime, due_at: datetime | None = None,
                        next_due: datetime | None = None) -> bool:
        """Record that `name` was queued at `now`. A recurring run passes the `due_at` it ran
        for and its `next_due`: the row moves on only if still at `due_at` (of two
        schedulers running the same occurrence, one moves it). True when the row changed."""
        with self.session() as s:
            q = update(ScheduledCampaign).where(ScheduledCampaign.name == name)
            if due_at is not None:
                q = q.where(ScheduledCampaign.due_at == due_at)
            values: dict[str, Any] = {"queued_at": now}
            if next_due is not None:
                values["due_at"] = next_due
            return bool(s.execute(q.values(**values)).rowcount)  # type: ignore[attr-defined]

    def license_snapshot(self) -> dict[str, LicenseRecord]:
        """The whole registry as values (small: one row per customer license), in the
        registry's order (of the imports; rows never imported with an order come last)."""
        with self.session() as s:
            return {
                r.license: LicenseRecord(
                    license=r.license,
                    customer=r.customer,
                    email_domain=r.email_domain,
                    activated_on=r.activated_on,
                    tier=Tier(r.support_tier),
                    max_version_date=r.max_version_date,
                )
                for r in s.scalars(select(LicenseRow).order_by(
                    LicenseRow.position.is_(None), LicenseRow.position, LicenseRow.license))
            }

    def license_version(self) -> tuple[int, datetime | None]:
        """Cheap change marker of the registry (row count, newest update)."""
        with self.session() as s:
            n, newest = s.execute(
                select(func.count(), func.max(LicenseRow.updated_at))
            ).one()
            return int(n), newest

    # --- tickets -------------------------------------------------------------------

    def ticket_exists(self, number: str) -> bool:
        with self.session() as s:
            return s.scalar(select(Ticket.id).where(Ticket.number == number)) is not None

    def ticket_counter(self, year: int) -> int:
        """The last ticket sequence number handed out for `year` (0 before the first)."""
        with self.session() as s:
            last = s.scalar(select(TicketCounter.last_seq).where(TicketCounter.year == year))
            return int(last or 0)

    def allocate_ticket_numbers(self, year: int, count: int) -> list[tuple[int, str]]:
        """Reserve `count` consecutive ticket numbers of `year` and commit at once, like a
        database sequence: a number is never handed out twice; one whose ticket is never
        written (a crash before the batch commits) leaves a gap."""
        if count <= 0:
            return []
        with self.session() as s:
            last = s.connection().execute(_BUMP_COUNTER, {"for_year": year, "count": count}).scalar()
            if last is None:  # the year's first tickets
                try:
                    with s.begin_nested():
                        s.execute(insert(TicketCounter), {"year": year, "last_seq": count})
                    last = count
                except IntegrityError:  # another writer created it meanwhile
                    last = s.connection().execute(
                        _BUMP_COUNTER, {"for_year": year, "count": count}).scalar()
            assert last is not None
        first = int(last) - count + 1
        return [(seq, f"T-{year}-{seq:06d}") for seq in range(first, int(last) + 1)]

    def get_ticket(self, number: str) -> Ticket | None:
        with self.session() as s:
            t = s.scalar(select(Ticket).where(Ticket.number == number))
            if t is not None:
                s.expunge(t)
            return t

    def ticket_info(self, number: str) -> TicketInfo | None:
        with self.session() as s:
            t = s.scalar(select(Ticket).where(Ticket.number == number))
            return ticket_info(t) if t is not None else None

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        """The ticket that one of these Message-IDs (a customer's or staff member's mail
        recorded on it) belongs to, or None."""
        ids = [m for m in message_ids if m][:50]
        if not ids:
            return None
        with self.session() as s:
            q = (
                select(Ticket.number)
                .join(TicketEvent, TicketEvent.ticket_id == Ticket.id)
                .join(InboundMessage, InboundMessage.id == TicketEvent.inbound_id)
                .where(InboundMessage.message_id.in_(ids))
                .order_by(TicketEvent.id.desc())
                .limit(1)
            )
            return s.scalar(q)

    def list_tickets(
        self,
        *,
        states: Sequence[str] = (),
        overdue_at: datetime | None = None,
        assignee: str | None = None,
        limit: int = 200,
    ) -> list[TicketInfo]:
        """Tickets, newest first; `overdue_at`: only open ones whose deadline has passed."""
        with self.session() as s:
            q = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
            if states:
                q = q.where(Ticket.state.in_(list(states)))
            if overdue_at is not None:
                q = q.where(Ticket.state == "open").where(Ticket.deadline < overdue_at)
            if assignee is not None:
                q = q.where(func.lower(Ticket.assignee) == assignee.lower())
            return [ticket_info(t) for t in s.scalars(q)]

    def existing_purposes(self, purposes: Sequence[str]) -> set[str]:
        """Which of these outbox purposes are already queued or sent."""
        found: set[str] = set()
        items = list(dict.fromkeys(purposes))
        with self.session() as s:
            for i in range(0, len(items), 500):
                chunk = items[i : i + 500]
                found.update(s.scalars(select(OutboxMessage.purpose)
                                       .where(OutboxMessage.purpose.in_(chunk))))
        return found

    def ticket_events(self, number: str) -> list[TicketEvent]:
        with self.session() as s:
            q = (
                select(TicketEvent)
                .join(Ticket, Ticket.id == TicketEvent.ticket_id)
                .where(Ticket.number == number)
                .order_by(TicketEvent.id)
            )
            return _detached(s, q)

    def ticket_attachments(self, number: str) -> list[TicketAttachment]:
        with self.session() as s:
            q = (
                select(TicketAttachment)
                .join(Ticket, Ticket.id == TicketAttachment.ticket_id)
                .where(Ticket.number == number)
                .order_by(TicketAttachment.id)
            )
            return _detached(s, q)

    def set_ticket_state(self, number: str, state: str, *, by: str, now: datetime | None = None
                         ) -> bool:
        """Close, reopen or put a ticket on hold from the CLI; False if there is no such ticket."""
        now = now or utcnow()
        with self.transaction() as tx:
            t = tx.find_ticket(number)
            if t is None:
                return False
            tx.set_state(t, state, now)
            tx.add_ticket_event(t.id, state if state != "open" else "reopened", author=by)
            return True

    def assign_ticket(self, number: str, name: str, *, by: str) -> bool:
        with self.transaction() as tx:
            t = tx.find_ticket(number)
            if t is None:
                return False
            t.assignee = name[:100]
            t.updated_at = utcnow()
            tx.add_ticket_event(t.id, "assigned", author=by, detail=name)
            return True

    # --- settings -------------------------------------------------------------------

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret shared by every daemon on this database, made on first use."""
        with self.session() as s:
            row = s.get(Setting, name)
            if row is not None:
                return bytes(row.value)
        value = secrets.token_bytes(size)
        try:
            with self.session() as s:
                s.add(Setting(name=name, value=value, created_at=utcnow()))
        except IntegrityError:  # another daemon made it first
            pass
        with self.session() as s:
            row = s.get(Setting, name)
            assert row is not None
            return bytes(row.value)

    # --- attachments and retention ------------------------------------------------

    def ticket_attachment_bytes(self, number: str) -> int:
        """Bytes of attachments a ticket keeps now (0 for an unknown ticket)."""
        with self.session() as s:
            return int(s.scalar(
                select(func.coalesce(func.sum(TicketAttachment.size), 0))
                .join(Ticket, Ticket.id == TicketAttachment.ticket_id)
                .where(Ticket.number == number)) or 0)

    def attachment_digests(self, exclude: Sequence[int] = ()) -> set[str]:
        """The SHA-256 of every attachment file a row refers to (rows `exclude` left out)."""
        q = select(TicketAttachment.sha256).distinct()
        if exclude:
            q = q.where(TicketAttachment.id.not_in(list(exclude)))
        with self.session() as s:
            return set(s.scalars(q))

    @staticmethod
    def _raw_purgeable(cutoff: datetime) -> Any:
        """Decided inbound mail received before `cutoff`, raw bytes still kept, about no
        ticket other than ones closed before `cutoff` (never received or quarantined mail)."""
        live = or_(Ticket.state != "closed", Ticket.closed_at.is_(None),
                   Ticket.closed_at >= cutoff)
        about_live_ticket = or_(
            select(Ticket.id).where(Ticket.inbound_id == InboundMessage.id, live).exists(),
            select(DecisionRecord.id).join(Ticket, Ticket.id == DecisionRecord.ticket_id)
            .where(DecisionRecord.inbound_id == InboundMessage.id, live).exists(),
            select(TicketEvent.id).join(Ticket, Ticket.id == TicketEvent.ticket_id)
            .where(TicketEvent.inbound_id == InboundMessage.id, live).exists(),
            select(TicketAttachment.id).join(Ticket, Ticket.id == TicketAttachment.ticket_id)
            .where(TicketAttachment.inbound_id == InboundMessage.id, live).exists(),
        )
        return (InboundMessage.state == "decided", InboundMessage.received_at < cutoff,
                func.length(InboundMessage.raw) > 0, ~about_live_ticket)

    def raw_purgeable(self, cutoff: datetime, limit: int) -> list[tuple[int, int]]:
        """(id, size) of up to `limit` inbound messages whose raw bytes retention may drop."""
        with self.session() as s:
            rows = s.execute(select(InboundMessage.id, InboundMessage.size)
                             .where(*self._raw_purgeable(cutoff))
                             .order_by(InboundMessage.id).limit(limit))
            return [(int(i), int(n)) for i, n in rows]

    def purge_raw(self, ids: Sequence[int], cutoff: datetime) -> list[tuple[int, int]]:
        """Drop the raw bytes of these messages (the row, its keys and size stay, so dedup
        and the audit trail keep working), re-checking that each is still purgeable;
        returns (id, size) of those dropped."""
        if not ids:
            return []
        with self.session() as s:
            rows = [(int(i), int(n)) for i, n in s.execute(
                select(InboundMessage.id, InboundMessage.size)
                .where(InboundMessage.id.in_(list(ids)), *self._raw_purgeable(cutoff))
                .with_for_update())]
            if rows:
                s.execute(update(InboundMessage)
                          .where(InboundMessage.id.in_([i for i, _ in rows]))
                          .values(raw=b"").execution_options(synchronize_session=False))
            return rows

    @staticmethod
    def _attachments_purgeable(cutoff: datetime) -> Any:
        closed = select(Ticket.id).where(Ticket.id == TicketAttachment.ticket_id,
                                         Ticket.state == "closed",
                                         Ticket.closed_at.is_not(None),
                                         Ticket.closed_at < cutoff).exists()
        return (closed,)

    def attachments_purgeable(self, cutoff: datetime, limit: int
                              ) -> list[tuple[int, int, str, int]]:
        """(row id, ticket id, sha256, size) of up to `limit` attachments of tickets closed
        before `cutoff`."""
        with self.session() as s:
            rows = s.execute(select(TicketAttachment.id, TicketAttachment.ticket_id,
                                    TicketAttachment.sha256, TicketAttachment.size)
                             .where(*self._attachments_purgeable(cutoff))
                             .order_by(TicketAttachment.id).limit(limit))
            return [(int(i), int(t), str(h), int(n)) for i, t, h, n in rows]

    def purge_attachments(self, ids: Sequence[int], cutoff: datetime) -> int:
        """Remove these attachment rows if their ticket is still closed since before
        `cutoff`, with an `attachments_purged` event per ticket; the files, no longer referred
        to, go with the orphans."""
        if not ids:
            return 0
        now = utcnow()
        with self.session() as s:
            rows = s.execute(select(TicketAttachment.ticket_id, func.count())
                             .where(TicketAttachment.id.in_(list(ids)),
                                    *self._attachments_purgeable(cutoff))
                             .group_by(TicketAttachment.ticket_id)).all()
            result = s.execute(delete(TicketAttachment)
                               .where(TicketAttachment.id.in_(list(ids)),
                                      *self._attachments_purgeable(cutoff))
                               .execution_options(synchronize_session=False))
            for ticket_id, count in rows:
                s.add(TicketEvent(ticket_id=ticket_id, kind="attachments_purged", author="",
                                  created_at=now, detail=f"{count} removed by retention"))
            return int(cast(Any, result).rowcount or 0)

    def claim_due_outbox(
        self, limit: int = 50, lease: timedelta = timedelta(seconds=20), now: datetime | None = None
    ) -> list[ClaimedOutbox]:
        """Take up to `limit` queued messages that are due and not leased by another sender,
        under a new claim token (keep them with `renew_outbox`)."""
        now = now or utcnow()
        token = new_claim_token()
        with self.session() as s:
            q = (
                select(OutboxMessage)
                .where(OutboxMessage.state == "queued")
                .where(OutboxMessage.next_attempt_at <= now)
                .where((OutboxMessage.lease_until.is_(None)) | (OutboxMessage.lease_until < now))
                .order_by(OutboxMessage.priority, OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = list(s.scalars(q))
            for r in rows:
                r.lease_until = now + lease
                r.claim_token = token
            return [
                ClaimedOutbox(r.id, r.message_id, r.mail_from, tuple(r.rcpt_to), r.raw,
                              r.attempts, r.created_at, token)
                for r in rows
            ]

    def renew_outbox(self, outbox_ids: Sequence[int], token: str, lease: timedelta,
                     now: datetime | None = None) -> set[int]:
        """Extend the lease of those claimed rows still held under `token` (and queued);
        returns their ids. Rows locked by a writer right now are skipped, not waited for."""
        return self._renew(_outbox, outbox_ids, token, lease, now, "queued")

    def outbox_claim_held(self, outbox_id: int, token: str, lease: timedelta) -> bool:
        """Renew one claimed row, waiting for any lock on it: whether `token` still holds it."""
        with self.engine.begin() as conn:
            res = conn.execute(update(_outbox)
                               .where(_outbox.c.id == outbox_id, _outbox.c.claim_token == token,
                                      _outbox.c.state == "queued")
                               .values(lease_until=utcnow() + lease))
            return bool(res.rowcount)

    def release_outbox(self, outbox_ids: Sequence[int], token: str | None = None) -> None:
        """Give claimed rows back unsent (clean stop), so they are due again at once; with
        `token`, only rows that claim still holds."""
        if not outbox_ids:
            return
        with self.session() as s:
            q = (update(OutboxMessage)
                 .where(OutboxMessage.id.in_(list(outbox_ids)))
                 .where(OutboxMessage.state == "queued"))
            if token is not None:
                q = q.where(OutboxMessage.claim_token == token)
            s.execute(q.values(lease_until=None))

    def release_all_leases(self) -> None:
        """Clear every lease (single-process SQLite start: no other holder can exist)."""
        with self.session() as s:
            s.execute(update(InboundMessage).where(InboundMessage.lease_until.is_not(None))
                      .values(lease_until=None))
            s.execute(update(OutboxMessage).where(OutboxMessage.lease_until.is_not(None))
                      .values(lease_until=None))
            s.execute(delete(Lease))

    def acquire_lease(self, name: str, holder: str, seconds: float,
                      now: datetime | None = None) -> bool:
        """Take or renew the lease `name` for `seconds`: True when `holder` has it now (it
        was free, expired, or already `holder`'s), False when another holder's is running."""
        now = now or utcnow()
        until = now + timedelta(seconds=seconds)
        with self.session() as s:
            taken = s.connection().execute(
                update(Lease)
                .where(Lease.name == name)
                .where((Lease.holder == holder) | (Lease.expires_at < now))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return True
            if s.get(Lease, name) is not None:
                return False
            try:
                with s.begin_nested():
                    s.add(Lease(name=name, holder=holder, expires_at=until))
            except IntegrityError:  # another daemon created it meanwhile
                return False
            return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (clean stop), so another daemon takes over at once."""
        with self.session() as s:
            s.execute(delete(Lease).where(Lease.name == name).where(Lease.holder == holder))

    def lease_holder(self, name: str, now: datetime | None = None) -> str | None:
        """Who holds `name` now (None: nobody, or expired)."""
        now = now or utcnow()
        with self.session() as s:
            row = s.get(Lease, name)
            return row.holder if row is not None and row.expires_at >= now else None

    def _update_outbox(self, outbox_id: int, token: str | None, **values: Any) -> bool:
        """Record one send attempt's outcome in a transaction of its own, through Core (each
        sent mail is committed before the next is sent; an ORM session costs 4x as much).
        With the claim's `token`, only while that claim holds the row: False when refused."""
        q = update(_outbox).where(_outbox.c.id == outbox_id)
        if token is not None:
            q = q.where(_outbox.c.claim_token == token)
        with self.engine.begin() as conn:
            res = conn.execute(q.values(lease_until=None, attempts=_outbox.c.attempts + 1,
                                        **values))
            return bool(res.rowcount)

    def mark_sent(self, outbox_id: int, reply: str, token: str | None = None) -> bool:
        """The relay took the message; False when `token` no longer holds the row."""
        return self._update_outbox(outbox_id, token, state="sent", server_reply=reply[:2000],
                                   sent_at=utcnow())

    def mark_retry(self, outbox_id: int, error: str, next_attempt_at: datetime,
                   token: str | None = None) -> bool:
        return self._update_outbox(outbox_id, token, last_error=error[:2000],
                                   next_attempt_at=next_attempt_at)

    def mark_dead(self, outbox_id: int, error: str, token: str | None = None) -> bool:
        return self._update_outbox(outbox_id, token, state="dead", last_error=error[:2000])

    def retry_outbox(self, outbox_ids: Sequence[int]) -> int:
        """Queue dead (or retrying) messages again, due now."""
        with self.session() as s:
            res = s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(list(outbox_ids)))
                .where(OutboxMessage.state.in_(("dead", "queued")))
                .values(state="queued", next_attempt_at=utcnow(), lease_until=None)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def list_outbox(self, state: str | None = None, limit: int = 100) -> list[OutboxMessage]:
        with self.session() as s:
            q = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
            if state:
                q = q.where(OutboxMessage.state == state)
            return _detached(s, q)

    def get_outbox(self, outbox_id: int) -> OutboxMessage | None:
        with self.session() as s:
            r = s.get(OutboxMessage, outbox_id)
            if r is not None:
                s.expunge(r)
            return r

    def count_outbox(self) -> dict[str, int]:
        with self.session() as s:
            q = select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
            return {state: int(n) for state, n in s.execute(q)}

    def oldest_unsent(self) -> datetime | None:
        """Creation time of the oldest reply still waiting to be sent."""
        with self.session() as s:
            return s.scalar(
                select(func.min(OutboxMessage.created_at)).where(OutboxMessage.state == "queued")
            )

    def ping(self) -> None:
        """One round trip to the database (raises what the driver raises when it is away)."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def oldest_due_outbox(self, now: datetime) -> datetime | None:
        """Since when the longest-waiting due mail has been due: its `next_attempt_at` if it
        was never tried, else its creation (a retried row's next attempt moves on)."""
        from sqlalchemy import case

        since = case((OutboxMessage.attempts == 0, OutboxMessage.next_attempt_at),
                     else_=OutboxMessage.created_at)
        with self.session() as s:
            oldest: datetime | None = s.scalar(
                select(func.min(since))
                .where(OutboxMessage.state == "queued")
                .where((OutboxMessage.next_attempt_at <= now) | (OutboxMessage.attempts > 0))
            )
            return oldest

    def purposes_with_prefix(self, prefix: str, limit: int = 100) -> list[str]:
        """The newest outbox purposes starting with `prefix` (alerts keep their state here)."""
        with self.session() as s:
            q = (select(OutboxMessage.purpose)
                 .where(OutboxMessage.purpose.like(_like_escape(prefix) + "%", escape="\\"))
                 .order_by(OutboxMessage.id.desc()).limit(limit))
            return list(s.scalars(q))

    def decision_for(self, inbound_id: int) -> DecisionRecord | None:
        with self.session() as s:
            r = s.scalar(select(DecisionRecord).where(DecisionRecord.inbound_id == inbound_id))
            if r is not None:
                s.expunge(r)
            return r

    def sla_rows(self, opened_from: datetime, opened_to: datetime
                 ) -> list[tuple[TicketInfo, datetime | None, datetime | None]]:
        """Tickets opened in ``[opened_from, opened_to)``, oldest first, each with the time of
        its first ``answered`` event and of its first ``closed`` event (or None);
        read-only, for :func:`mailbot.sla.sla_report`."""
        from sqlalchemy.sql import Subquery

        def first(*kinds: str) -> Subquery:
            return (
                select(TicketEvent.ticket_id, func.min(TicketEvent.created_at).label("at"))
                .where(TicketEvent.kind.in_(kinds))
                .group_by(TicketEvent.ticket_id)
                .subquery()
            )

        answered, closed = first("answered"), first("closed")
        q = (
            select(Ticket, answered.c.at, closed.c.at)
            .outerjoin(answered, answered.c.ticket_id == Ticket.id)
            .outerjoin(closed, closed.c.ticket_id == Ticket.id)
            .where(Ticket.opened_at >= opened_from, Ticket.opened_at < opened_to)
            .order_by(Ticket.opened_at, Ticket.id)
        )
        with self.session() as s:
            return [(ticket_info(t), a, c) for t, a, c in s.execute(q)]

    def news_token_known(self, token: str) -> bool:
        """Whether `token` is an unsubscribe token, read without a write lock (SQLite: a
        DEFERRED transaction, so a GET answers while a writer holds the database)."""
        if not self.is_sqlite:
            with self.session() as s:
                return s.scalar(select(NewsToken.email).where(NewsToken.token == token)) is not None
        if self._reader is None:
            self._reader = make_engine(self.engine.url.render_as_string(hide_password=False),
                                       pool_size=1, readonly=True)
        with self._reader.connect() as c:
            return c.scalar(select(NewsToken.email).where(NewsToken.token == token)) is not None

    def unsubscribe_by_token(self, token: str, now: datetime) -> str | None:
        """The one-click unsubscribe (RFC 8058): unsubscribe the address `token` was made
        for, in one transaction. Returns that address (also when it was unsubscribed
        already), or None for an unknown token (nothing changes)."""
        with self.transaction() as tx:
            email = tx.news_token_email(token)
            if email is None:
                return None
            tx.unsubscribe(email, None, now)
            return email.lower()


# Statements of the per-message hot path, built once as Core statements on the tables: no
# ORM unit of work, and SQLAlchemy reuses their compiled form.
_inbound = cast(Table, InboundMessage.__table__)
_tickets = cast(Table, Ticket.__table__)
_outbox = cast(Table, OutboxMessage.__table__)
_counters = cast(Table, TicketCounter.__table__)
_INSERT_DECISION = insert(cast(Table, DecisionRecord.__table__))
_INSERT_INBOUND = insert(_inbound).returning(_inbound.c.id)
_INSERT_TICKET = insert(_tickets).returning(_tickets.c.id)
_INSERT_EVENT = insert(cast(Table, TicketEvent.__table__))
_BUMP_COUNTER = (
    update(_counters)
    .where(_counters.c.year == bindparam("for_year"))
    .values(last_seq=_counters.c.last_seq + bindparam("count"))
    .returning(_counters.c.last_seq)
)
_INBOUND_BY_KEYS = (
    select(_inbound.c.id)
    .where(or_(_inbound.c.sha256 == bindparam("sha"),
               _inbound.c.identity == bindparam("identity")))
    .limit(1)
)
# INSERT … ON CONFLICT (purpose) DO NOTHING: of two daemons queueing the same reply (the
# scheduler runs in each), one row is written and neither transaction fails.
_INSERT_OUTBOX = {
    dialect: _dialect_insert(dialect, _outbox).on_conflict_do_nothing(index_elements=["purpose"])
    for dialect in ("postgresql", "sqlite")
}
_COUNT_AUTO = (
    select(func.count())
    .select_from(_outbox)
    .where(_outbox.c.auto_recipient == bindparam("address"))
    .where(_outbox.c.created_at >= bindparam("since"))
)
_COUNT_AUTO_TOTAL = (
    select(func.count())
    .select_from(_outbox)
    .where(_outbox.c.auto_recipient.is_not(None))
    .where(_outbox.c.created_at >= bindparam("since"))
)
_MARK_DECIDED = (
    update(_inbound)
    .where(_inbound.c.id == bindparam("row_id"))
    .where(_inbound.c.state == "received")
    .values(state="decided", decided_at=bindparam("now"), lease_until=None, error=None)
)
_MARK_DECIDED_FENCED = _MARK_DECIDED.where(_inbound.c.claim_token == bindparam("token"))
# A no-op write that locks a claimed row for the rest of the transaction, if still claimed.
_HOLD_CLAIM = (
    update(_inbound)
    .where(_inbound.c.id == bindparam("row_id"))
    .where(_inbound.c.claim_token == bindparam("token"))
    .where(_inbound.c.state == "received")
    .values(claim_token=_inbound.c.claim_token)
)
_TICKET_BY_NUMBER = select(_tickets.c.id).where(_tickets.c.number == bindparam("number"))


class Transaction:
    """Named writes inside one transaction: what the worker does for one message."""

    def __init__(self, session: Session, dialect: str) -> None:
        self.s = session
        self.dialect = dialect
        self.c = session.connection()  # Core statements of the hot path run on it
        self._auto_total: dict[datetime, int] = {}  # auto_replies_total_since, per `since`

    def quarantine(self, inbound_id: int, error: str, token: str | None = None) -> bool:
        """Park a message that broke parsing or deciding, with the reason; with the claim's
        `token` only while that claim holds the undecided row (False: refused)."""
        q = update(InboundMessage).where(InboundMessage.id == inbound_id)
        if token is not None:
            q = q.where(InboundMessage.claim_token == token, InboundMessage.state == "received")
        res = self.s.execute(q.values(state="quarantined", error=error[:20000], lease_until=None,
                                      decided_at=utcnow()))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def hold_claim(self, inbound_id: int, token: str | None) -> bool:
        """Whether the claim `token` still holds the undecided row, locking it for the rest
        of the transaction (another daemon's claim skips it, its writes wait). None: the
        caller works without a claim (replay): True."""
        if token is None:
            return True
        return bool(self.c.execute(_HOLD_CLAIM, {"row_id": inbound_id, "token": token}).rowcount)

    def mark_decided(self, inbound_id: int, token: str | None = None) -> bool:
        """Move a `received` message to `decided` (first, so the row is locked for the rest
        of the transaction); False when another worker already did (its lease had expired)
        or, with the claim's `token`, when that claim no longer holds the row."""
        if token is None:
            res = self.c.execute(_MARK_DECIDED, {"row_id": inbound_id, "now": utcnow()})
        else:
            res = self.c.execute(_MARK_DECIDED_FENCED,
                                 {"row_id": inbound_id, "now": utcnow(), "token": token})
        return bool(res.rowcount)

    def ticket_exists(self, number: str) -> bool:
        """Whether a ticket exists, including one opened earlier in this transaction."""
        return self.c.execute(_TICKET_BY_NUMBER, {"number": number}).scalar() is not None

    def open_ticket(
        self,
        *,
        inbound_id: int,
        number: str,
        year: int,
        seq: int,
        opened_at: datetime,
        deadline: datetime,
        license: str | None,
        customer_email: str,
        customer_name: str,
        subject: str,
        priority: Priority,
        language: str,
        message_id: str | None = None,
        related_ticket: str | None = None,
    ) -> int:
        """Insert a ticket under its allocated number; its first outgoing message (the ack)
        is sequence 1. Returns the ticket's id."""
        message_id = message_id[:998] if message_id else None
        ticket_id = self.c.execute(
            _INSERT_TICKET,
            {"number": number, "year": year, "seq": seq, "inbound_id": inbound_id,
             "license": license, "customer_email": customer_email,
             "customer_name": customer_name[:300], "subject": subject[:1000],
             "priority": priority.value, "state": "open", "language": language,
             "opened_at": opened_at, "deadline": deadline, "out_seq": 1,
             "first_message_id": message_id, "last_message_id": message_id,
             "related_ticket": related_ticket, "updated_at": opened_at},
        ).scalar()
        assert ticket_id is not None
        self.add_ticket_event(int(ticket_id), "opened", inbound_id=inbound_id,
                              author=customer_email)
        return int(ticket_id)

    def find_ticket(self, number: str) -> Ticket | None:
        return self.s.scalar(select(Ticket).where(Ticket.number == number).with_for_update())

    def set_state(self, ticket: Ticket, state: str, now: datetime) -> None:
        """Move a ticket to open, waiting or closed, keeping the timestamps consistent."""
        ticket.state = state
        ticket.closed_at = now if state == "closed" else None
        ticket.waiting_since = now if state == "waiting" else None
        ticket.updated_at = now

    def add_ticket_event(
        self, ticket_id: int, kind: str, *, inbound_id: int | None = None, author: str = "",
        detail: str | None = None,
    ) -> None:
        self.c.execute(
            _INSERT_EVENT,
            {"ticket_id": ticket_id, "kind": kind, "inbound_id": inbound_id,
             "author": author[:320], "created_at": utcnow(),
             "detail": detail[:2000] if detail else None},
        )

    def add_attachments(self, ticket_id: int, inbound_id: int,
                        attachments: Sequence[SavedAttachment], budget: int,
                        now: datetime) -> list[SavedAttachment]:
        """Record attachments on a ticket while the ticket's total stays within `budget`
        bytes; returns those left out."""
        used = int(self.s.scalar(select(func.coalesce(func.sum(TicketAttachment.size), 0))
                                 .where(TicketAttachment.ticket_id == ticket_id)) or 0)
        skipped = []
        for a in attachments:
            if used + a.size > budget:
                skipped.append(a)
                continue
            exists = self.s.scalar(select(TicketAttachment.id).where(
                TicketAttachment.inbound_id == inbound_id, TicketAttachment.sha256 == a.sha256,
                TicketAttachment.filename == a.filename[:200]))
            if exists is None:
                self.s.add(TicketAttachment(
                    ticket_id=ticket_id, inbound_id=inbound_id, filename=a.filename[:200],
                    content_type=a.content_type[:200], size=a.size, sha256=a.sha256,
                    created_at=now))
                used += a.size
        self.s.flush()
        return skipped

    def add_news_token(self, token: str, email: str, campaign: str, now: datetime) -> None:
        self.s.add(NewsToken(token=token, email=email, campaign=campaign, created_at=now))

    def bounce_news(self, message_ids: Sequence[str], limit: int, now: datetime) -> list[str]:
        """After a hard bounce report: suppress the recipients of these news mails whose news
        mail has bounced hard `limit` times in all. Returns the addresses suppressed now.

        Soft bounces (see mark_bounced) do not count.
        """
        addresses = set(self.s.scalars(
            select(OutboxMessage.recipient)
            .where(OutboxMessage.message_id.in_(list(message_ids)))
            .where(OutboxMessage.kind == "news", OutboxMessage.recipient.is_not(None))))
        if not addresses:
            return []
        counts = self.s.execute(
            select(OutboxMessage.recipient, func.count())
            .where(OutboxMessage.kind == "news", OutboxMessage.state == "bounced",
                   OutboxMessage.bounce == "hard", OutboxMessage.recipient.in_(addresses))
            .group_by(OutboxMessage.recipient)).all()
        already = set(self.s.scalars(
            select(Suppression.address).where(Suppression.address.in_(addresses))))
        suppressed: list[str] = []
        for address, bounced in sorted(counts):
            if address is not None and bounced >= limit and address not in already:
                self.s.add(Suppression(address=address, reason="bounced",
                                       detail=f"{bounced} hard bounces of news mail",
                                       created_at=now))
                suppressed.append(address)
        return suppressed

    def news_token_email(self, token: str) -> str | None:
        """The address an unsubscribe token was made for."""
        return self.s.scalar(select(NewsToken.email).where(NewsToken.token == token))

    def auto_replies_since(self, address: str, since: datetime) -> int:
        """Automatic replies queued to `address` since `since` (this transaction's included)."""
        return int(self.c.execute(
            _COUNT_AUTO, {"address": address.lower(), "since": since}).scalar() or 0)

    def auto_replies_total_since(self, since: datetime) -> int:
        """Automatic replies queued to anyone since `since` (this transaction's included).

        Counted once per transaction and `since` (the scan is not cheap: no index leads
        with created_at), then kept up to date by `enqueue`."""
        if since not in self._auto_total:
            self._auto_total[since] = int(
                self.c.execute(_COUNT_AUTO_TOTAL, {"since": since}).scalar() or 0)
        return self._auto_total[since]

    def mark_bounced(self, message_ids: Sequence[str], now: datetime, *,
                     hard: bool = True) -> int:
        """Mark our outgoing messages that a delivery report returned as `bounced`, `hard`
        or soft (failed with 4.x.x only, which bounce_news does not count). A hard report
        upgrades an earlier soft bounce."""
        if not message_ids:
            return 0
        upgrade = (OutboxMessage.state == "bounced") & (OutboxMessage.bounce == "soft")
        res = self.s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.message_id.in_(list(message_ids)))
            .where(OutboxMessage.state.in_(("sent", "queued")) | (upgrade if hard else False))
            .values(state="bounced", bounced_at=now, lease_until=None,
                    bounce="hard" if hard else "soft")
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def record_decision(
        self,
        inbound_id: int,
        *,
        kind: str,
        license: str | None,
        priority: str | None,
        missing: Sequence[str],
        scope_reason: str | None,
        ticket_ref: str | None,
        ticket_id: int | None,
        language: str,
        reasons: list[dict[str, Any]],
    ) -> None:
        now = utcnow()
        self.c.execute(
            _INSERT_DECISION,
            {"inbound_id": inbound_id, "kind": kind, "license": license, "priority": priority,
             "missing": list(missing), "scope_reason": scope_reason, "ticket_ref": ticket_ref,
             "ticket_id": ticket_id, "language": language, "reasons": reasons,
             "decided_at": now},
        )

    def enqueue(self, mail: OutgoingMail, *, ticket_id: int | None, inbound_id: int | None,
                due: datetime | None = None, now: datetime | None = None) -> bool:
        """Queue a rendered reply; a second reply for the same purpose is not queued."""
        now = now or utcnow()
        recipient = mail.rcpt_to[0].lower()[:320] if mail.rcpt_to else None
        result = self.c.execute(
            _INSERT_OUTBOX[self.dialect],
            {"purpose": mail.purpose, "message_id": mail.message_id, "kind": mail.kind,
             "ticket_id": ticket_id, "inbound_id": inbound_id, "mail_from": mail.mail_from,
             "rcpt_to": list(mail.rcpt_to), "raw": mail.raw, "state": "queued",
             "attempts": 0, "next_attempt_at": due or now, "created_at": now,
             "auto_recipient": recipient if mail.auto else None,
             "priority": 1 if mail.bulk else 0, "recipient": recipient},
        )
        if mail.auto and result.rowcount:
            for since in self._auto_total:
                self._auto_total[since] += 1
        return bool(result.rowcount)

    def unsubscribe(self, address: str, inbound_id: int | None,
                    now: datetime | None = None) -> None:
        """Record that `address` wants no more mailings (idempotent, also when another daemon
        or a one-click POST records it at the same moment)."""
        address = address.lower()
        if self.s.get(Unsubscription, address) is not None:
            return
        try:
            with self.s.begin_nested():
                self.s.add(Unsubscription(address=address, inbound_id=inbound_id,
                                          created_at=now or utcnow()))
        except IntegrityError:  # recorded meanwhile
            pass
