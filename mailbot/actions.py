"""Helpers shared by the outcome handlers (:mod:`mailbot.handlers`): the ticket draft, what
rendering and writing need from the config, the outbox's rate limits.

Acting on a decision runs in three steps so the expensive part can run in a child process:

1. `ticket_draft` (pure): for a new ticket, its year and deadline in the business calendar.
2. rendering (pure: `handlers.render_replies`): the replies as bytes — the ticket's number is
   known by then, because the worker allocates numbers for a whole batch first
   (`Store.allocate_ticket_numbers`, like a database sequence: never reused; a crash between
   allocation and commit leaves a gap).
3. writing (`handlers.write_decision`), inside the worker's transaction: ticket, ticket event,
   outbox rows, the decision record and the inbound row's state commit together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config, MailboxConfig
from mailbot.domain import Decision, Mail, OutgoingMail, Priority, TicketView, wire
from mailbot.replies.conversation import ConversationRenderer
from mailbot.replies.render import ReplyRenderer

if TYPE_CHECKING:
    from mailbot.store import Transaction

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Outcome:
    """What was done for one message."""

    inbound_id: int
    decision: Decision
    ticket_number: str | None = None
    deadline: datetime | None = None
    replies: int = 0
    mail: Mail | None = None


@wire
@dataclass(frozen=True, slots=True)
class TicketDraft:
    """A ticket about to be opened: its number (once allocated) and what the reply says."""

    year: int
    seq: int
    view: TicketView


def ticket_draft(
    decision: Decision, mail: Mail, received_at: datetime, calendar: BusinessCalendar
) -> tuple[int, TicketView]:
    """The year (for numbering) and the view of the ticket `decision` opens; the number in the
    view is a placeholder until `with_number`."""
    priority = decision.priority or Priority.NORMAL
    deadline = calendar.deadline(received_at, emergency=priority is Priority.EMERGENCY)
    view = TicketView(
        number="",
        subject=mail.subject[:1000],
        priority=priority,
        opened_at=received_at,
        deadline=deadline,
        customer_email=mail.from_addr or "",
        license=decision.license,
    )
    return received_at.astimezone(calendar.zone).year, view


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What rendering replies needs (built once per process)."""

    mailbox: MailboxConfig
    renderer: ReplyRenderer
    conversation: ConversationRenderer
    # Told of every emergency ticket at once (schedule.emergency_notify and sms_gateway).
    emergency_recipients: tuple[str, ...] = ()


def suspicion(decision: Decision) -> str:
    """Why a mail that claims to be a staff reply is not trusted (for the staff's warning)."""
    for r in decision.reasons:
        if r.rule == "staff_reply" and r.hit:
            return r.detail
    return "unverified sender"


def reasons_json(decision: Decision) -> list[dict[str, object]]:
    """The decision's audit trail as the decision record stores it."""
    return [{"rule": r.rule, "hit": r.hit, "detail": r.detail} for r in decision.reasons]


@dataclass(frozen=True, slots=True)
class ActionSettings:
    """What acting on decisions needs besides the transaction (from the config)."""

    calendar: BusinessCalendar
    auto_replies_per_hour: int
    ticket_attachment_bytes: int
    unsubscribe_address: str
    news_bounce_limit: int
    auto_replies_total_per_hour: int = 200

    @classmethod
    def from_config(cls, config: Config, calendar: BusinessCalendar) -> ActionSettings:
        return cls(calendar, config.conversation.auto_replies_per_hour,
                   config.limits.ticket_attachment_bytes, config.mailbox.unsubscribe_address,
                   config.news.bounce_limit, config.conversation.auto_replies_total_per_hour)


def enqueue_replies(tx: Transaction, replies: tuple[OutgoingMail, ...], *, ticket_id: int | None,
                    inbound_id: int, now: datetime, settings: ActionSettings
                    ) -> tuple[int, list[tuple[OutgoingMail, str]]]:
    """Queue the replies of one message; automatic ones only within the rate limits (per
    sender, and for all senders together). Returns how many were queued and those a limit
    held back, each with the limit reached."""
    queued, limited = 0, []
    for out in replies:
        why = rate_limit_reached(tx, out, now, settings) if out.auto else None
        if why is not None:
            log.warning("auto-reply rate limit: no %s to %s (%s)", out.kind,
                        out.rcpt_to[0] if out.rcpt_to else "-", why)
            limited.append((out, why))
            continue
        queued += tx.enqueue(out, ticket_id=ticket_id, inbound_id=inbound_id, now=now)
    return queued, limited


RATE_WINDOW = timedelta(hours=1)
"""The auto-reply rate limits count the automatic replies queued within this long."""


def read_outbox_ahead(tx: Transaction, replies: Iterable[OutgoingMail], now: datetime
                      ) -> None:
    """Read in one go what `enqueue_replies` will ask about `replies` (a whole batch's, all
    queued at `now`): whether each is queued already, and the counts of the rate limits."""
    replies = list(replies)
    tx.read_outbox([out.purpose for out in replies],
                   [out.rcpt_to[0] for out in replies if out.auto and out.rcpt_to],
                   now - RATE_WINDOW)


def over_rate_limit(tx: Transaction, out: OutgoingMail, now: datetime, limit: int) -> bool:
    """RFC 3834 §2: at most `limit` automatic replies to one address per hour."""
    if not out.rcpt_to:
        return False
    return tx.auto_replies_since(out.rcpt_to[0], now - RATE_WINDOW) >= limit


def rate_limit_reached(tx: Transaction, out: OutgoingMail, now: datetime,
                       settings: ActionSettings) -> str | None:
    """Which limit holds back the automatic reply `out`, if any: `auto_replies_per_hour` to
    its address, or `auto_replies_total_per_hour` to everyone (mail with forged senders, each
    under the per-address limit, must not make mailbot a reflector of its text)."""
    if over_rate_limit(tx, out, now, settings.auto_replies_per_hour):
        return f"{settings.auto_replies_per_hour} per hour to this address reached"
    total = settings.auto_replies_total_per_hour
    if tx.auto_replies_total_since(now - RATE_WINDOW) >= total:
        return f"{total} per hour to all addresses reached"
    return None
