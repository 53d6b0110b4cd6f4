"""The customer wrote again about a ticket: record it on the ticket (a paused deadline resumes
with the working time that was left, a closed ticket reopens) and pass the new text to the
staff (`staff/notice`)."""

from __future__ import annotations

from datetime import datetime

from mailbot.actions import ReplyContext, built
from mailbot.business_hours import BusinessCalendar
from mailbot.domain import DecisionKind, Mail
from mailbot.handlers.base import Act, Effect, Handler, ReplyJob
from mailbot.store import OutgoingMail, Ticket, Transaction


class FollowupHandler(Handler):
    kinds = frozenset({DecisionKind.FOLLOWUP})
    on_ticket = True

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        decision = job.decision
        if decision.ticket is None:
            return []
        notice = ctx.conversation.notice(
            event="followup", ticket=decision.ticket, customer=decision.customer,
            entitlement_end=None, mail=job.mail, text=job.newest, inbound_id=job.inbound_id,
            now=job.now, suspicious=job.suspicious)
        if notice is None:
            return []
        return [built(notice, f"notice:{job.inbound_id}", "notice", ctx.mailbox.support_address)]

    def write(self, tx: Transaction, act: Act) -> Effect:
        existing = tx.find_ticket(act.decision.ticket_ref or "")
        if existing is None:
            return Effect()
        customer_followup(tx, existing, act.inbound_id, act.mail, act.now,
                          act.settings.calendar)
        return Effect(existing.id, deadline=existing.deadline)


def customer_followup(tx: Transaction, ticket: Ticket, inbound_id: int, mail: Mail,
                      now: datetime, calendar: BusinessCalendar) -> None:
    """The customer wrote again: record it, resume a paused deadline, reopen a closed ticket."""
    tx.add_ticket_event(ticket.id, "customer_mail", inbound_id=inbound_id,
                        author=mail.from_addr or "")
    if mail.message_id:
        ticket.last_message_id = mail.message_id[:998]
    if ticket.state == "waiting":
        ticket.deadline = resumed_deadline(ticket, now, calendar)
        tx.set_state(ticket, "open", now)
        tx.add_ticket_event(ticket.id, "resumed", inbound_id=inbound_id)
    elif ticket.state == "closed":
        ticket.deadline = calendar.deadline(now, emergency=ticket.priority == "emergency")
        tx.set_state(ticket, "open", now)
        tx.add_ticket_event(ticket.id, "reopened", inbound_id=inbound_id)
    ticket.updated_at = now


def resumed_deadline(ticket: Ticket, now: datetime, calendar: BusinessCalendar) -> datetime:
    """The deadline after waiting for the customer: the working time that was left when the
    wait began, counted from now."""
    since = ticket.waiting_since or now
    left = max(0.0, calendar.working_hours_between(since, ticket.deadline))
    return calendar.add_working_hours(now, left)
