"""A new request that is not taken on (incomplete, unknown or expired license, out of scope):
a reply to the sender saying why, from the template named like the decision kind
(`replies/reject_incomplete`, …). Nothing else is written."""

from __future__ import annotations

from mailbot.actions import ReplyContext
from mailbot.domain import DecisionKind, OutgoingMail, other_message_id
from mailbot.handlers.base import Handler, ReplyJob


class RejectionHandler(Handler):
    kinds = frozenset({
        DecisionKind.REJECT_INCOMPLETE,
        DecisionKind.REJECT_UNKNOWN_LICENSE,
        DecisionKind.REJECT_EXPIRED,
        DecisionKind.REJECT_SCOPE,
    })

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        kind = job.decision.kind
        message_id = other_message_id(f"reject-{job.inbound_id}", ctx.mailbox.message_id_domain)
        reply = ctx.renderer.render(job.decision, job.mail, ticket=None, message_id=message_id,
                                    now=job.now, purpose=f"reject:{job.inbound_id}",
                                    template=kind.value)
        return [] if reply is None else [reply]
