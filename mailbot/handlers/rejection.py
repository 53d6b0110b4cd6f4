"""A new request that is not taken on (incomplete, unknown or expired license, out of scope):
a reply to the sender saying why, from the template named like the decision kind
(`replies/reject_incomplete`, …). Nothing else is written."""

from __future__ import annotations

from mailbot.actions import TicketDraft
from mailbot.domain import Decision, DecisionKind, other_message_id
from mailbot.handlers.base import AutoReply, Handler


class RejectionHandler(Handler):
    kinds = frozenset({
        DecisionKind.REJECT_INCOMPLETE,
        DecisionKind.REJECT_UNKNOWN_LICENSE,
        DecisionKind.REJECT_EXPIRED,
        DecisionKind.REJECT_SCOPE,
    })

    def automatic(self, inbound_id: int, decision: Decision, ticket: TicketDraft | None,
                  domain: str) -> AutoReply | None:
        return AutoReply(f"reject:{inbound_id}", decision.kind.value,
                         other_message_id(f"reject-{inbound_id}", domain))
