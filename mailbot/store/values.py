"""Frozen values the store hands out: what callers read instead of ORM rows (which never
leave the store), and the claims and results of its operations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from mailbot.domain import OutgoingMail as OutgoingMail  # the outbox API takes it
from mailbot.domain import Priority, TicketInfo, wire

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class LockedTicket:
    """A ticket read for update inside a `Transaction` (its row stays locked until commit):
    the id its events and mails refer to, and what it was when read. Changes go through the
    transaction (`set_state`, `resume`, `assign`, `set_priority`, `touch`), not this value."""

    id: int
    info: TicketInfo


@dataclass(frozen=True, slots=True)
class NewInbound:
    """A message to store: its raw bytes, where it came from, and its identity (Message-ID
    and From address, read from the header by the intake: `mailbot.ingest.identity`)."""

    raw: bytes
    origin: str
    message_id: str | None
    sender: str | None


@dataclass(frozen=True, slots=True)
class SavedInbound:
    """Result of `save_inbound`: the row's id and whether this call created it."""

    id: int
    created: bool


@wire
@dataclass(frozen=True, slots=True)
class ClaimedInbound:
    """A received message taken for deciding (`Store.claim_inbound`)."""

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
    """A queued mail taken for sending (`Store.claim_due_outbox`)."""

    id: int
    message_id: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: datetime
    # The claim's fencing token (see ClaimedInbound.token).
    token: str | None = None


def value_of(cls: type[V], row: Any, **given: Any) -> V:
    """The frozen value `cls` of a row: each field not `given` read from the attribute of
    its name (lists copied, so the value shares nothing with the session)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: _copied(getattr(row, f.name)) for f in fields if f.name not in given},
               **given)


def _copied(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def ticket_value(t: Any) -> TicketInfo:
    """The value view of a ticket (an ORM row or a Core row of the tickets table)."""
    return value_of(TicketInfo, t, priority=Priority(t.priority))


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """A stored inbound message as it is now (`Store.get_inbound`, `list_inbound`)."""

    id: int
    state: str
    origin: str
    sender: str | None
    message_id: str | None
    size: int
    raw: bytes
    received_at: datetime
    decided_at: datetime | None
    attempts: int
    error: str | None
    lease_until: datetime | None
    claim_token: str | None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An outbox row as it is now (`Store.get_outbox`, `list_outbox`)."""

    id: int
    purpose: str
    message_id: str
    kind: str
    ticket_id: int | None
    inbound_id: int | None
    mail_from: str
    rcpt_to: list[str]
    raw: bytes
    state: str
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    last_error: str | None
    server_reply: str | None
    created_at: datetime
    sent_at: datetime | None
    recipient: str | None
    bounced_at: datetime | None
    bounce: str | None
    priority: int
    claim_token: str | None


@dataclass(frozen=True, slots=True)
class TicketEventRecord:
    """One entry of a ticket's history."""

    id: int
    kind: str
    author: str
    created_at: datetime
    detail: str | None
    inbound_id: int | None


@dataclass(frozen=True, slots=True)
class DecisionInfo:
    """The recorded decision about one inbound message (the audit trail)."""

    inbound_id: int
    kind: str
    license: str | None
    priority: str | None
    missing: list[str]
    scope_reason: str | None
    ticket_ref: str | None
    ticket_id: int | None
    language: str
    reasons: list[dict[str, Any]]
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """How far one IMAP folder has been taken in, and its intake's last error."""

    mailbox: str
    uidvalidity: int
    last_uid: int
    updated_at: datetime
    last_error: str | None
    last_error_at: datetime | None
