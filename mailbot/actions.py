"""Acting on a decision, in three steps so the expensive part can run in a child process:

1. `ticket_draft` (pure): for a new ticket, its year and deadline in the business calendar.
2. `render_replies` (pure): the replies as bytes — the ticket's number is known by then, because
   the worker allocates numbers for a whole batch first (`Store.allocate_ticket_numbers`, like a
   database sequence: never reused; a crash between allocation and commit leaves a gap).
3. `write_decision`, inside the worker's transaction: ticket, ticket event, outbox rows, the
   decision record and the inbound row's state commit together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from mailbot.business_hours import BusinessCalendar
from mailbot.config import MailboxConfig
from mailbot.domain import (
    Decision,
    DecisionKind,
    Mail,
    Priority,
    TicketView,
    other_message_id,
    ticket_message_id,
)
from mailbot.replies.render import RenderedReply, ReplyRenderer
from mailbot.store import OutgoingMail, Transaction

log = logging.getLogger(__name__)

REJECTIONS = frozenset(
    {
        DecisionKind.REJECT_INCOMPLETE,
        DecisionKind.REJECT_UNKNOWN_LICENSE,
        DecisionKind.REJECT_EXPIRED,
        DecisionKind.REJECT_SCOPE,
    }
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What was done for one message."""

    inbound_id: int
    decision: Decision
    ticket_number: str | None = None
    deadline: datetime | None = None
    replies: int = 0
    mail: Mail | None = None


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


def render_replies(
    ctx: ReplyContext,
    *,
    inbound_id: int,
    mail: Mail,
    decision: Decision,
    ticket: TicketDraft | None,
    now: datetime,
) -> tuple[OutgoingMail, ...]:
    """The replies `decision` sends (pure: templates and the `email` package only)."""
    domain = ctx.mailbox.message_id_domain
    sender = ctx.mailbox.support_address
    reply: RenderedReply | None
    if decision.kind is DecisionKind.TICKET:
        assert ticket is not None
        message_id = ticket_message_id(ticket.view.number, 1, domain)
        reply = ctx.renderer.render_reply(
            decision, mail, ticket=ticket.view, message_id=message_id, now=now
        )
        return (_outgoing(reply, f"ack:{inbound_id}", "ack", sender),) if reply else ()
    if decision.kind in REJECTIONS:
        message_id = other_message_id(f"reject-{inbound_id}", domain)
        reply = ctx.renderer.render_reply(decision, mail, ticket=None, message_id=message_id,
                                          now=now)
        if reply is not None:
            return (_outgoing(reply, f"reject:{inbound_id}", decision.kind.value, sender),)
    return ()


def _outgoing(reply: RenderedReply, purpose: str, kind: str, mail_from: str) -> OutgoingMail:
    return OutgoingMail(
        purpose=purpose,
        message_id=reply.message_id,
        kind=kind,
        mail_from=mail_from,
        rcpt_to=(reply.recipient,),
        raw=reply.raw,
    )


def reasons_json(decision: Decision) -> list[dict[str, object]]:
    return [{"rule": r.rule, "hit": r.hit, "detail": r.detail} for r in decision.reasons]


def write_decision(
    tx: Transaction,
    *,
    inbound_id: int,
    mail: Mail,
    decision: Decision,
    ticket: TicketDraft | None,
    replies: tuple[OutgoingMail, ...],
) -> Outcome:
    """Record `decision` for message `inbound_id`: ticket, events, replies, decision record."""
    ticket_id: int | None = None
    ticket_number: str | None = decision.ticket_ref
    deadline: datetime | None = None

    if decision.kind is DecisionKind.TICKET:
        assert ticket is not None
        view = ticket.view
        ticket_id = tx.open_ticket(
            inbound_id=inbound_id,
            number=view.number,
            year=ticket.year,
            seq=ticket.seq,
            opened_at=view.opened_at,
            deadline=view.deadline,
            license=decision.license,
            customer_email=view.customer_email,
            customer_name=decision.customer.customer if decision.customer else mail.from_name,
            subject=view.subject,
            priority=view.priority,
            language=decision.language,
        )
        ticket_number, deadline = view.number, view.deadline

    elif decision.kind in (DecisionKind.FOLLOWUP, DecisionKind.STAFF_REPLY):
        existing = tx.find_ticket(decision.ticket_ref or "")
        if existing is not None:
            ticket_id = existing.id
            kind = "customer_mail" if decision.kind is DecisionKind.FOLLOWUP else "staff_mail"
            tx.add_ticket_event(existing.id, kind, inbound_id=inbound_id,
                                author=mail.from_addr or "")

    elif decision.kind is DecisionKind.UNSUBSCRIBE and mail.from_addr:
        tx.unsubscribe(mail.from_addr, inbound_id)

    for out in replies:
        tx.enqueue(out, ticket_id=ticket_id, inbound_id=inbound_id)

    tx.record_decision(
        inbound_id,
        kind=decision.kind.value,
        license=decision.license,
        priority=decision.priority.value if decision.priority else None,
        missing=decision.missing,
        scope_reason=decision.scope_reason,
        ticket_ref=ticket_number,
        ticket_id=ticket_id,
        language=decision.language,
        reasons=reasons_json(decision),
    )
    return Outcome(inbound_id, decision, ticket_number, deadline, len(replies), mail)
