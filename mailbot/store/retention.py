"""Retention: which raw mail and attachments may be dropped, and dropping them while
re-checking, in the same statement, that they still may."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, func, or_, select

from mailbot.store.base import StoreBase
from mailbot.store.models import (
    DecisionRecord,
    InboundMessage,
    InboundRaw,
    Ticket,
    TicketAttachment,
    TicketEvent,
    utcnow,
)


class RetentionStore(StoreBase):
    """The purges of `mailbot purge` and the daemon's retention pass."""

    def attachment_digests(self, exclude: Sequence[int] = ()) -> set[str]:
        """The SHA-256 of every attachment file a row refers to (rows `exclude` left out)."""
        q = select(TicketAttachment.sha256).distinct()
        if exclude:
            q = q.where(TicketAttachment.id.not_in(list(exclude)))
        with self.session() as s:
            return set(s.scalars(q))

    @staticmethod
    def _raw_purgeable(cutoff: datetime) -> Any:
        """Decided inbound mail received before `cutoff`, raw bytes still kept, about no
        ticket other than ones closed before `cutoff` (never received or quarantined mail)."""
        live = or_(Ticket.state != "closed", Ticket.closed_at.is_(None),
                   Ticket.closed_at >= cutoff)
        about_live_ticket = or_(
            select(Ticket.id).where(Ticket.inbound_id == InboundMessage.id, live).exists(),
            select(DecisionRecord.id).join(Ticket, Ticket.id == DecisionRecord.ticket_id)
            .where(DecisionRecord.inbound_id == InboundMessage.id, live).exists(),
            select(TicketEvent.id).join(Ticket, Ticket.id == TicketEvent.ticket_id)
            .where(TicketEvent.inbound_id == InboundMessage.id, live).exists(),
            select(TicketAttachment.id).join(Ticket, Ticket.id == TicketAttachment.ticket_id)
            .where(TicketAttachment.inbound_id == InboundMessage.id, live).exists(),
        )
        kept = select(InboundRaw.inbound_id).where(InboundRaw.inbound_id == InboundMessage.id)
        return (InboundMessage.state == "decided", InboundMessage.received_at < cutoff,
                kept.exists(), ~about_live_ticket)

    def raw_purgeable(self, cutoff: datetime, limit: int) -> list[tuple[int, int]]:
        """(id, size) of up to `limit` inbound messages whose raw bytes retention may drop."""
        with self.session() as s:
            rows = s.execute(select(InboundMessage.id, InboundMessage.size)
                             .where(*self._raw_purgeable(cutoff))
                             .order_by(InboundMessage.id).limit(limit))
            return [(int(i), int(n)) for i, n in rows]

    def purge_raw(self, ids: Sequence[int], cutoff: datetime) -> list[tuple[int, int]]:
        """Drop the raw bytes of these messages (their `InboundRaw` rows; the message's row,
        its keys and size stay, so dedup and the audit trail keep working), re-checking that
        each is still purgeable; returns (id, size) of those dropped."""
        if not ids:
            return []
        with self.session() as s:
            rows = [(int(i), int(n)) for i, n in s.execute(
                select(InboundMessage.id, InboundMessage.size)
                .where(InboundMessage.id.in_(list(ids)), *self._raw_purgeable(cutoff))
                .with_for_update())]
            if rows:
                s.execute(delete(InboundRaw)
                          .where(InboundRaw.inbound_id.in_([i for i, _ in rows]))
                          .execution_options(synchronize_session=False))
            return rows

    @staticmethod
    def _attachments_purgeable(cutoff: datetime) -> Any:
        closed = select(Ticket.id).where(Ticket.id == TicketAttachment.ticket_id,
                                         Ticket.state == "closed",
                                         Ticket.closed_at.is_not(None),
                                         Ticket.closed_at < cutoff).exists()
        return (closed,)

    def attachments_purgeable(self, cutoff: datetime, limit: int
                              ) -> list[tuple[int, int, str, int]]:
        """(row id, ticket id, sha256, size) of up to `limit` attachments of tickets closed
        before `cutoff`."""
        with self.session() as s:
            rows = s.execute(select(TicketAttachment.id, TicketAttachment.ticket_id,
                                    TicketAttachment.sha256, TicketAttachment.size)
                             .where(*self._attachments_purgeable(cutoff))
                             .order_by(TicketAttachment.id).limit(limit))
            return [(int(i), int(t), str(h), int(n)) for i, t, h, n in rows]

    def purge_attachments(self, ids: Sequence[int], cutoff: datetime) -> int:
        """Remove these attachment rows if their ticket is still closed since before
        `cutoff`, with an `attachments_purged` event per ticket; the files, no longer referred
        to, go with the orphans."""
        if not ids:
            return 0
        now = utcnow()
        with self.session() as s:
            rows = s.execute(select(TicketAttachment.ticket_id, func.count())
                             .where(TicketAttachment.id.in_(list(ids)),
                                    *self._attachments_purgeable(cutoff))
                             .group_by(TicketAttachment.ticket_id)).all()
            result = s.execute(delete(TicketAttachment)
                               .where(TicketAttachment.id.in_(list(ids)),
                                      *self._attachments_purgeable(cutoff))
                               .execution_options(synchronize_session=False))
            for ticket_id, count in rows:
                s.add(TicketEvent(ticket_id=ticket_id, kind="attachments_purged", author="",
                                  created_at=now, detail=f"{count} removed by retention"))
            return int(cast(Any, result).rowcount or 0)
