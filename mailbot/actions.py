"""Acting on a decision: the writes and replies for one message, inside one transaction.

`apply_decision` is called by the worker with an open :class:`mailbot.store.Transaction`;
everything it does (ticket, ticket event, rendered replies in the outbox, the decision
record, the inbound row's state) commits together or not at all.
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
class ActionContext:
    """The long-lived collaborators actions need (built once by the worker)."""

    mailbox: MailboxConfig
    calendar: BusinessCalendar
    renderer: ReplyRenderer


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


def apply_decision(
    tx: Transaction,
    ctx: ActionContext,
    *,
    inbound_id: int,
    mail: Mail,
    decision: Decision,
    received_at: datetime,
    now: datetime,
) -> Outcome:
    """Record `decision` for message `inbound_id` and queue its replies (one transaction)."""
    ticket_id: int | None = None
    ticket_number: str | None = decision.ticket_ref
    deadline: datetime | None = None
    replies = 0
    domain = ctx.mailbox.message_id_domain
    sender = ctx.mailbox.support_address

    if decision.kind is DecisionKind.TICKET:
        emergency = decision.priority is Priority.EMERGENCY
        deadline = ctx.calendar.deadline(received_at, emergency=emergency)
        local = received_at.astimezone(ctx.calendar.zone)
        ticket = tx.open_ticket(
            inbound_id=inbound_id,
            opened_at=received_at,
            deadline=deadline,
            year=local.year,
            license=decision.license,
            customer_email=mail.from_addr or "",
            customer_name=decision.customer.customer if decision.customer else mail.from_name,
            subject=mail.subject,
            priority=decision.priority or Priority.NORMAL,
            language=decision.language,
        )
        ticket_id, ticket_number = ticket.id, ticket.number
        message_id = ticket_message_id(ticket.number, ticket.out_seq, domain)
        reply = ctx.renderer.render_reply(
            decision, mail, ticket=ticket.view, message_id=message_id, now=now
        )
        if reply is not None:
            out = _outgoing(reply, f"ack:{inbound_id}", "ack", sender)
            tx.enqueue(out, ticket_id=ticket_id, inbound_id=inbound_id)
            replies += 1

    elif decision.kind in REJECTIONS:
        message_id = other_message_id(f"reject-{inbound_id}", domain)
        reply = ctx.renderer.render_reply(
            decision, mail, ticket=None, message_id=message_id, now=now
        )
        if reply is not None:
            out = _outgoing(reply, f"reject:{inbound_id}", decision.kind.value, sender)
            tx.enqueue(out, ticket_id=None, inbound_id=inbound_id)
            replies += 1

    elif decision.kind in (DecisionKind.FOLLOWUP, DecisionKind.STAFF_REPLY):
        existing = tx.find_ticket(decision.ticket_ref or "")
        if existing is not None:
            ticket_id = existing.id
            kind = "customer_mail" if decision.kind is DecisionKind.FOLLOWUP else "staff_mail"
            tx.add_ticket_event(existing.id, kind, inbound_id=inbound_id,
                                author=mail.from_addr or "")

    elif decision.kind is DecisionKind.UNSUBSCRIBE and mail.from_addr:
        tx.unsubscribe(mail.from_addr, inbound_id)

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
    return Outcome(inbound_id, decision, ticket_number, deadline, replies, mail)
