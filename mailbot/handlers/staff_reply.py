"""A verified staff reply to a ticket: recorded on the ticket, its `#commands` applied, its
text sent on to the customer (`relay`); a wrong command gets an error mail back to the staff
member (`staff/command_error`) and nothing is done."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.actions import ReplyContext
from mailbot.business_hours import BusinessCalendar
from mailbot.classify.commands import COMMAND_EVENTS
from mailbot.domain import Decision, DecisionKind, Mail, OutgoingMail, TicketInfo
from mailbot.handlers.base import Act, ExistingTicketHandler, ReplyJob

if TYPE_CHECKING:
    from mailbot.store import LockedTicket, Transaction


class StaffReplyHandler(ExistingTicketHandler):
    kinds = frozenset({DecisionKind.STAFF_REPLY})

    def ticket_replies(self, ctx: ReplyContext, job: ReplyJob, ticket: TicketInfo
                       ) -> list[OutgoingMail]:
        decision = job.decision
        if decision.command_errors:
            error = ctx.conversation.command_error(
                mail=job.mail, ticket_number=ticket.number,
                errors=decision.command_errors, inbound_id=job.inbound_id, now=job.now,
                purpose=f"cmderr:{job.inbound_id}")
            return [] if error is None else [error]
        if relays_to_customer(decision, job.mail):
            relay = ctx.conversation.relay(ticket=ticket, decision=decision,
                                           mail=job.mail, attachments=job.attachments,
                                           inbound_id=job.inbound_id, now=job.now,
                                           purpose=f"relay:{job.inbound_id}")
            if relay is not None:
                return [relay]
        return []

    def update(self, tx: Transaction, ticket: LockedTicket, act: Act) -> datetime:
        return staff_reply(tx, ticket, act.inbound_id, act.mail, act.decision,
                           act.replies, act.now, act.settings.calendar)


def relays_to_customer(decision: Decision, mail: Mail) -> bool:
    """Whether a staff reply is sent on to the customer: not an internal #note, not empty
    (commands only), and not already addressed to the customer directly."""
    ticket = decision.ticket
    if ticket is None or any(c.name == "note" for c in decision.commands):
        return False
    if not decision.staff_text.strip():
        return False
    direct = {a.lower() for a in (*mail.to, *mail.cc)}
    return ticket.customer_email.lower() not in direct


def staff_reply(tx: Transaction, ticket: LockedTicket, inbound_id: int, mail: Mail,
                decision: Decision, replies: tuple[OutgoingMail, ...], now: datetime,
                calendar: BusinessCalendar) -> datetime:
    """Record a verified staff reply and apply its commands (none if any was wrong).
    Returns the ticket's deadline now."""
    author = mail.from_addr or ""
    deadline = ticket.info.deadline
    if decision.command_errors:
        tx.add_ticket_event(ticket.id, "staff_mail_rejected", inbound_id=inbound_id,
                            author=author, detail="; ".join(decision.command_errors))
        return deadline
    note = any(c.name == "note" for c in decision.commands)
    relayed = any(r.kind == "relay" for r in replies)
    direct = ticket.info.customer_email.lower() in {a.lower() for a in (*mail.to, *mail.cc)}
    kind = "note" if note else ("answered" if relayed or direct else "staff_mail")
    tx.add_ticket_event(ticket.id, kind, inbound_id=inbound_id, author=author,
                        detail=decision.staff_text[:2000] or None)
    for command in decision.commands:
        if command.name == "close":
            tx.set_state(ticket.id, "closed", now)
        elif command.name == "wait":
            tx.set_state(ticket.id, "waiting", now)
        elif command.name == "assign":
            tx.assign(ticket.id, command.argument, now)
        elif command.name == "priority":
            deadline = calendar.deadline(ticket.info.opened_at,
                                         emergency=command.argument == "emergency")
            tx.set_priority(ticket.id, command.argument, deadline, now)
        if command.name in COMMAND_EVENTS:
            tx.add_ticket_event(ticket.id, COMMAND_EVENTS[command.name], inbound_id=inbound_id,
                                author=author, detail=command.argument or None)
    tx.touch(ticket.id, now)
    return deadline
