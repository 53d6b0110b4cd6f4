"""A new, complete, entitled, in-scope request: open a ticket, acknowledge it to the customer
(`replies/ack`), tell the staff (`staff/notice`), and on an emergency alert
`schedule.emergency_notify` and the SMS gateway (`staff/emergency`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailbot.actions import ReplyContext, TicketDraft
from mailbot.domain import (
    Decision,
    DecisionKind,
    Mail,
    OutgoingMail,
    Priority,
    TicketInfo,
    TicketView,
    ticket_message_id,
)
from mailbot.handlers.base import Act, AutoReply, Effect, Handler, ReplyJob

if TYPE_CHECKING:
    from mailbot.store import Transaction


class TicketHandler(Handler):
    kinds = frozenset({DecisionKind.TICKET})
    opens_ticket = True
    on_ticket = True

    def automatic(self, inbound_id: int, decision: Decision, ticket: TicketDraft | None,
                  domain: str) -> AutoReply | None:
        assert ticket is not None
        view = ticket.view
        return AutoReply(f"ack:{inbound_id}", "ack",
                         ticket_message_id(view.number, 1, domain), view)

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        assert job.ticket is not None
        decision, mail, view = job.decision, job.mail, job.ticket.view
        domain = ctx.mailbox.message_id_domain
        info = new_ticket_info(view, decision, mail)
        out: list[OutgoingMail | None] = [ctx.conversation.notice(
            event="new", ticket=info, customer=decision.customer,
            entitlement_end=decision.entitlement_end, mail=mail, text=job.body,
            inbound_id=job.inbound_id, now=job.now, purpose=f"notice:{job.inbound_id}",
            suspicious=job.suspicious)]
        if info.priority is Priority.EMERGENCY and ctx.emergency_recipients:
            out.append(ctx.conversation.staff_alert(
                kind="emergency", ticket=info, recipients=ctx.emergency_recipients,
                message_id=ticket_message_id(info.number, f"x{job.inbound_id}", domain),
                now=job.now, purpose=f"emergency:{job.inbound_id}", text=job.newest))
        return [o for o in out if o is not None]

    def write(self, tx: Transaction, act: Act) -> Effect:
        assert act.ticket is not None
        decision, mail, view = act.decision, act.mail, act.ticket.view
        ticket_id = tx.open_ticket(
            inbound_id=act.inbound_id,
            number=view.number,
            year=act.ticket.year,
            seq=act.ticket.seq,
            opened_at=view.opened_at,
            deadline=view.deadline,
            license=decision.license,
            customer_email=view.customer_email,
            customer_name=decision.customer.customer if decision.customer else mail.from_name,
            subject=view.subject,
            priority=view.priority,
            language=decision.language,
            message_id=mail.message_id,
            related_ticket=decision.related_ticket,
        )
        return Effect(ticket_id, view.number, view.deadline)


def new_ticket_info(view: TicketView, decision: Decision, mail: Mail) -> TicketInfo:
    """The ticket about to be opened, as the staff notice shows it."""
    return TicketInfo(
        number=view.number, state="open", subject=view.subject,
        customer_email=view.customer_email,
        customer_name=decision.customer.customer if decision.customer else mail.from_name,
        license=view.license, priority=view.priority, language=decision.language,
        opened_at=view.opened_at, deadline=view.deadline,
    )
