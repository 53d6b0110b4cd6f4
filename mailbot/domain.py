"""Frozen value types shared by every stage (ingest → classify → actions → replies).

Nothing here does I/O. ORM classes live in :mod:`mailbot.store` and never leave it; the
stages exchange these values instead.
"""

from __future__ import annotations

import email.utils
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, TypeVar

_T = TypeVar("_T", bound=type)


def wire(cls: _T) -> _T:
    """Pickle a frozen slots dataclass as a constructor call: (class, field values).

    These values cross between the daemon and its decision processes for every message; the
    dataclass default (`_dataclass_setstate`, one `fields()` lookup per object) costs about
    six times as much to load. Every field must be an `__init__` argument.
    """
    names = tuple(f.name for f in fields(cls))
    assert all(f.init for f in fields(cls)), cls

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, tuple([getattr(self, n) for n in names])

    cls.__reduce__ = __reduce__  # type: ignore[assignment]
    return cls


class Tier(str, enum.Enum):
    """Support tier of a license as written in the registry."""

    START = "START"
    HOTLINE = "HOTLINE"
    HOTLINE_PLUS = "HOTLINE_PLUS"
    SPECIAL = "SPECIAL"
    NONE = "NONE"


class DecisionKind(str, enum.Enum):
    """The one outcome of deciding a message (the labelled data's `expected`)."""

    IGNORE_AUTO = "ignore_auto"
    UNSUBSCRIBE = "unsubscribe"
    STAFF_REPLY = "staff_reply"
    FOLLOWUP = "followup"
    REJECT_INCOMPLETE = "reject_incomplete"
    REJECT_UNKNOWN_LICENSE = "reject_unknown_license"
    REJECT_EXPIRED = "reject_expired"
    REJECT_SCOPE = "reject_scope"
    TICKET = "ticket"
    QUARANTINED = "quarantined"


class Priority(str, enum.Enum):
    NORMAL = "normal"
    EMERGENCY = "emergency"


@wire
@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@wire
@dataclass(frozen=True, slots=True)
class Mail:
    """A parsed inbound message: what the rules may look at.

    `headers` maps lower-case header names to every value of that header, decoded to
    text (Authentication-Results as written: never RFC 2047-decoded). `text` is the readable body (text/plain, or HTML turned into text), including
    quoted and forwarded parts; classify decides which part is the customer's own words.
    `report_type` is the `report-type` of a top-level multipart/report ("" otherwise).
    `original_ids` are the Message-IDs of the messages a delivery report or bounce is
    about (RFC 3464: the returned message or its headers, or Original-Message-ID fields).
    `delivery_outcome` is what a delivery report's per-recipient fields say: "hard", "soft"
    (failed with 4.x.x only), "delayed" (no recipient failed) or "unknown" (no
    machine-readable delivery-status part, e.g. a qmail text bounce).
    `attached_text` is the readable text of messages attached to it (message/rfc822: a mail
    forwarded as an attachment), at most `ATTACHED_TEXT_LIMIT` characters; it is not in `text`.
    """

    message_id: str | None
    from_addr: str | None
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    return_path: str | None
    headers: Mapping[str, tuple[str, ...]]
    content_type: str
    report_type: str
    text: str
    html: str
    attachments: tuple[Attachment, ...] = ()
    defects: tuple[str, ...] = ()
    original_ids: tuple[str, ...] = ()
    delivery_outcome: str = "unknown"
    attached_text: str = ""
    # Whether `from_addr` is the From header's address (False: parsing fell back to Sender
    # or Reply-To, which an automatic reply never goes to).
    from_header: bool = True

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def recipients(self) -> tuple[str, ...]:
        """Every address the mail was sent to, lower-cased, in order: To, Cc, then the
        delivery agents' Delivered-To, X-Original-To and Envelope-To (where an envelope
        recipient such as a tokened reply address may appear only)."""
        found = [a.lower() for a in (*self.to, *self.cc)]
        for name in ("delivered-to", "x-original-to", "envelope-to"):
            for value in self.headers.get(name, ()):
                found += [a.lower() for a in _header_addresses(value)]
        return tuple(dict.fromkeys(found))


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(rf"[ \t]*(?:<({_ADDR_SPEC})>|({_ADDR_SPEC}))[ \t]*")


def _header_addresses(value: str) -> list[str]:
    """The addresses of one address header value, as `email.utils.getaddresses` reads them.

    The plain form delivery agents write ("a.b@example.org", "<a.b@example.org>") is taken
    as it stands, which is what the parser returns for it; anything else goes to the parser.
    """
    m = _PLAIN_ADDRESS.fullmatch(value)
    if m is not None:
        return [m.group(1) or m.group(2)]
    return [a for _, a in email.utils.getaddresses([value]) if a]


@wire
@dataclass(frozen=True, slots=True)
class LicenseRecord:
    """One row of the license registry."""

    license: str
    customer: str
    email_domain: str
    activated_on: date
    tier: Tier
    max_version_date: date | None


@wire
@dataclass(frozen=True, slots=True)
class RuleResult:
    """One line of a decision's audit trail: which rule ran, whether it hit, and why."""

    rule: str
    hit: bool
    detail: str = ""


@wire
@dataclass(frozen=True, slots=True)
class TicketInfo:
    """What the rules and the conversation mails know about an existing ticket.

    `state` is "open", "waiting" (for the customer) or "closed". The message ids are the
    customer's first and latest mail, so a relayed staff reply threads in their client.
    """

    number: str
    state: str
    subject: str
    customer_email: str
    customer_name: str
    license: str | None
    priority: Priority
    language: str
    opened_at: datetime
    deadline: datetime
    closed_at: datetime | None = None
    assignee: str | None = None
    first_message_id: str | None = None
    last_message_id: str | None = None
    waiting_since: datetime | None = None


@wire
@dataclass(frozen=True, slots=True)
class StaffCommand:
    """One `#command argument` line at the top of a staff reply."""

    name: str
    argument: str = ""


@wire
@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message, with the reasons (every rule's hit or miss)."""

    kind: DecisionKind
    reasons: tuple[RuleResult, ...]
    license: str | None = None
    priority: Priority | None = None
    missing: tuple[str, ...] = ()
    scope_reason: str | None = None
    ticket_ref: str | None = None
    language: str = "cs"
    customer: LicenseRecord | None = None
    entitlement_end: date | None = None
    flags: frozenset[str] = field(default_factory=frozenset)
    # Conversations: the ticket a follow-up or staff reply belongs to (or, for a new
    # request about a long-closed ticket, the old one), the staff reply's own text and
    # commands, and the outgoing Message-IDs a bounce reports as undeliverable.
    ticket: TicketInfo | None = None
    related_ticket: str | None = None
    staff_text: str = ""
    commands: tuple[StaffCommand, ...] = ()
    command_errors: tuple[str, ...] = ()
    bounced_ids: tuple[str, ...] = ()
    # Whether that bounce counts towards news suppression (hard or non-standard, not soft).
    bounce_hard: bool = True

    @property
    def hits(self) -> tuple[str, ...]:
        """Names (with details) of the rules that hit, for logs and `reasons` output."""
        return tuple(
            f"{r.rule}:{r.detail}" if r.detail else r.rule for r in self.reasons if r.hit
        )


_DECISION_REST = tuple(f.name for f in fields(Decision)
                       if f.name not in ("kind", "reasons", "priority"))
_KINDS = {kind.value: kind for kind in DecisionKind}
_PRIORITIES = {priority.value: priority for priority in Priority}
_MISSES: dict[str, RuleResult] = {}  # rule name -> its plain miss, shared


def _decision_reduce(self: Decision) -> tuple[Any, tuple[Any, ...]]:
    """A decision as `wire` pickles it, but its ~20 reasons packed (a plain miss as its rule's
    name, any other as a (rule, hit, detail) tuple) and its kind and priority as their
    values: the decision crosses between the processes twice per message, and this takes
    half the time to pickle and load."""
    return _decision_from_wire, (
        self.kind.value,
        tuple([r.rule if not (r.hit or r.detail) else (r.rule, r.hit, r.detail)
               for r in self.reasons]),
        self.priority.value if self.priority is not None else None,
        tuple([getattr(self, name) for name in _DECISION_REST]))


def _miss(rule: str) -> RuleResult:
    found = _MISSES.get(rule)
    if found is None:
        if len(_MISSES) >= 1024:
            _MISSES.clear()  # rule names come from the code; bounded all the same
        found = _MISSES[rule] = RuleResult(rule, False)
    return found


def _decision_from_wire(kind: str, reasons: tuple[str | tuple[str, bool, str], ...],
                        priority: str | None, rest: tuple[Any, ...]) -> Decision:
    return Decision(kind=_KINDS[kind],
                    reasons=tuple([_miss(r) if isinstance(r, str) else RuleResult(*r)
                                   for r in reasons]),
                    priority=_PRIORITIES[priority] if priority is not None else None,
                    **dict(zip(_DECISION_REST, rest)))


Decision.__reduce__ = _decision_reduce  # type: ignore[assignment,method-assign]


@wire
@dataclass(frozen=True, slots=True)
class TicketView:
    """What a reply needs to know about a ticket."""

    number: str
    subject: str
    priority: Priority
    opened_at: datetime
    deadline: datetime
    customer_email: str
    license: str | None = None


@wire
@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A rendered mail as it will be sent, from the renderer to the outbox: its bytes
    (written once, see `mailbot.replies.mime`), envelope and outbox bookkeeping. `purpose` is the outbox's unique key (one mail per purpose)."""

    purpose: str
    message_id: str
    kind: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    # An automatic reply (acknowledgement, rejection): counted by the per-sender rate limit.
    auto: bool = False
    # Bulk mail (news) waits behind service mail in the outbox (OutboxMessage.priority).
    bulk: bool = False


def ticket_message_id(ticket_number: str, sequence: int | str, domain: str) -> str:
    """Message-ID of a message mailbot sends about a ticket: `1` is the acknowledgement,
    `n<inbound id>` a notice to staff, `r<inbound id>` a relayed staff reply.

    The form `<ticket-T-2026-000145.1@estelar.example>` lets a reply's In-Reply-To or
    References name its ticket without a store lookup.
    """
    return f"<ticket-{ticket_number}.{sequence}@{domain}>"


def other_message_id(token: str, domain: str) -> str:
    """Message-ID of a message mailbot sends outside any ticket (rejections, notices)."""
    return f"<mailbot-{token}@{domain}>"


LOOP_HEADER = "X-Mailbot-Loop"
