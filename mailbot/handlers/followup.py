"""The customer wrote again about a ticket: record it on the ticket (a paused deadline resumes
with the working time that was left, a closed ticket reopens) and pass the new text to the
staff (`staff/notice`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.actions import ReplyContext
from mailbot.business_hours import BusinessCalendar
from mailbot.domain import DecisionKind, Mail, OutgoingMail, TicketInfo
from mailbot.handlers.base import Act, ExistingTicketHandler, ReplyJob

if TYPE_CHECKING:
    from mailbot.store import LockedTicket, Transaction


class FollowupHandler(ExistingTicketHandler):
    kinds = frozenset({DecisionKind.FOLLOWUP})

    def ticket_replies(self, ctx: ReplyContext, job: ReplyJob, ticket: TicketInfo
                       ) -> list[OutgoingMail]:
        notice = ctx.conversation.notice(
            event="followup", ticket=ticket, customer=job.decision.customer,
            entitlement_end=None, mail=job.mail, text=job.newest, inbound_id=job.inbound_id,
            now=job.now, purpose=f"notice:{job.inbound_id}", suspicious=job.suspicious)
        return [] if notice is None else [notice]

    def update(self, tx: Transaction, ticket: LockedTicket, act: Act) -> datetime:
        return customer_followup(tx, ticket, act.inbound_id, act.mail, act.now,
                                 act.settings.calendar)


def customer_followup(tx: Transaction, ticket: LockedTicket, inbound_id: int, mail: Mail,
                      now: datetime, calendar: BusinessCalendar) -> datetime:
    """The customer wrote again: record it, resume a paused deadline, reopen a closed ticket.
    Returns the ticket's deadline now."""
    tx.add_ticket_event(ticket.id, "customer_mail", inbound_id=inbound_id,
                        author=mail.from_addr or "")
    tx.touch(ticket.id, now, last_message_id=mail.message_id)
    info, deadline = ticket.info, ticket.info.deadline
    if info.state == "waiting":
        deadline = resumed_deadline(info, now, calendar)
        tx.resume(ticket.id, deadline, now)
        tx.add_ticket_event(ticket.id, "resumed", inbound_id=inbound_id)
    elif info.state == "closed":
        deadline = calendar.deadline(now, emergency=info.priority == "emergency")
        tx.resume(ticket.id, deadline, now)
        tx.add_ticket_event(ticket.id, "reopened", inbound_id=inbound_id)
    return deadline


def resumed_deadline(ticket: TicketInfo, now: datetime, calendar: BusinessCalendar) -> datetime:
    """The deadline after waiting for the customer: the working time that was left when the
    wait began, counted from now."""
    since = ticket.waiting_since or now
    left = max(0.0, calendar.working_hours_between(since, ticket.deadline))
    return calendar.add_working_hours(now, left)
