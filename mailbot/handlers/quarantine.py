"""A message over a limit (size, header, parts: :mod:`mailbot.ingest.limits`): quarantined
with the reason instead of recorded as decided. The sender of one that is merely too large is
told the limit (`replies/reject_too_large`), within the auto-reply rate limits."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.actions import ActionSettings, HeldReply, TicketDraft, enqueue_replies
from mailbot.domain import Decision, DecisionKind, OutgoingMail, other_message_id
from mailbot.handlers.base import AutoReply, QuarantiningHandler

if TYPE_CHECKING:
    from mailbot.store import Transaction


class QuarantineHandler(QuarantiningHandler):
    kinds = frozenset({DecisionKind.QUARANTINED})

    def automatic(self, inbound_id: int, decision: Decision, ticket: TicketDraft | None,
                  domain: str) -> AutoReply | None:
        if "tell_sender" not in decision.flags:
            return None
        return AutoReply(f"reject:{inbound_id}", "reject_too_large",
                         other_message_id(f"limit-{inbound_id}", domain))

    def quarantine(self, tx: Transaction, *, inbound_id: int, decision: Decision,
                   replies: tuple[OutgoingMail, ...], now: datetime,
                   settings: ActionSettings, held: tuple[HeldReply, ...] = ()) -> str:
        """Quarantine the message (the reason is the quarantine error) and queue the note to
        its sender, if any. Returns the reason."""
        reason = "; ".join(r.detail for r in decision.reasons if r.hit) or "over a limit"
        _, limited = enqueue_replies(tx, replies, ticket_id=None, inbound_id=inbound_id,
                                     now=now, settings=settings, held=held)
        reason += "".join(f"; no {out.kind}: rate limit" for out, _ in limited)
        tx.quarantine(inbound_id, reason)
        return reason
