"""Tickets: numbers allocated like a database sequence, the tickets and their history and
attachments, and the changes staff, customers and the scheduler make to them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Subquery

from mailbot.attachments import SavedAttachment
from mailbot.domain import Priority, TicketInfo
from mailbot.store.base import StoreBase, TxBase
from mailbot.store.models import (
    InboundMessage,
    Ticket,
    TicketAttachment,
    TicketCounter,
    TicketEvent,
    utcnow,
)
from mailbot.store.values import LockedTicket, TicketEventRecord, ticket_value, value_of

_tickets = cast(Table, Ticket.__table__)
_counters = cast(Table, TicketCounter.__table__)
_attachments = cast(Table, TicketAttachment.__table__)
# RETURNING names each row by its unique number (see inbound._INSERT_INBOUND).
_INSERT_TICKET = insert(_tickets).returning(_tickets.c.number, _tickets.c.id)
_INSERT_EVENT = insert(cast(Table, TicketEvent.__table__))
_INSERT_ATTACHMENT = insert(_attachments)
_ATTACHMENT_BYTES = (select(func.coalesce(func.sum(_attachments.c.size), 0))
                     .where(_attachments.c.ticket_id == bindparam("ticket_id")))
_ATTACHMENT_KEYS = (select(_attachments.c.inbound_id, _attachments.c.sha256,
                           _attachments.c.filename)
                    .where(_attachments.c.inbound_id.in_(bindparam("ids", expanding=True))))
_BUMP_COUNTER = (
    update(_counters)
    .where(_counters.c.year == bindparam("for_year"))
    .values(last_seq=_counters.c.last_seq + bindparam("count"))
    .returning(_counters.c.last_seq)
)
_TICKET_BY_NUMBER = select(_tickets.c.id).where(_tickets.c.number == bindparam("number"))
# The worker's questions about tickets (built once: a statement built per call costs more
# than the query it runs).
_TICKET_ROW = select(_tickets).where(_tickets.c.number == bindparam("number"))
_TICKET_ROW_LOCKED = _TICKET_ROW.with_for_update()
_TICKET_FOR_MESSAGE_IDS = (
    select(Ticket.number)
    .join(TicketEvent, TicketEvent.ticket_id == Ticket.id)
    .join(InboundMessage, InboundMessage.id == TicketEvent.inbound_id)
    .where(InboundMessage.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(TicketEvent.id.desc())
    .limit(1)
)


def _event(row: Any) -> TicketEventRecord:
    return value_of(TicketEventRecord, row)


def _attachment(row: Any) -> SavedAttachment:
    return SavedAttachment(row.filename, row.content_type, row.size, row.sha256)


class TicketStore(StoreBase):
    """Tickets outside the worker's transaction: reads, the CLI's changes, numbering."""

    def ticket_exists(self, number: str) -> bool:
        with self.reading() as c:
            return c.execute(_TICKET_BY_NUMBER, {"number": number}).scalar() is not None

    def ticket_counter(self, year: int) -> int:
        """The last ticket sequence number handed out for `year` (0 before the first)."""
        with self.reading() as c:
            last = c.scalar(select(TicketCounter.last_seq).where(TicketCounter.year == year))
            return int(last or 0)

    def allocate_ticket_numbers(self, year: int, count: int) -> list[tuple[int, str]]:
        """Reserve `count` consecutive ticket numbers of `year` and commit at once, like a
        database sequence: a number is never handed out twice; one whose ticket is never
        written (a crash before the batch commits) leaves a gap."""
        if count <= 0:
            return []
        with self.session() as s:
            last = s.connection().execute(_BUMP_COUNTER, {"for_year": year, "count": count}).scalar()
            if last is None:  # the year's first tickets
                try:
                    with s.begin_nested():
                        s.execute(insert(TicketCounter), {"year": year, "last_seq": count})
                    last = count
                except IntegrityError:  # another writer created it meanwhile
                    last = s.connection().execute(
                        _BUMP_COUNTER, {"for_year": year, "count": count}).scalar()
            assert last is not None
        first = int(last) - count + 1
        return [(seq, f"T-{year}-{seq:06d}") for seq in range(first, int(last) + 1)]

    def return_ticket_numbers(self, year: int, first: int, last: int) -> bool:
        """Give the reserved, unused numbers `first`…`last` of `year` back: the counter
        goes back to `first` - 1 if `last` is still the last number handed out (no one
        reserved after them); returns whether it did. Numbers not given back stay a gap."""
        if first > last:
            return True
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(_counters)
                .where(_counters.c.year == year, _counters.c.last_seq == last)
                .values(last_seq=first - 1)).rowcount)

    def ticket_info(self, number: str) -> TicketInfo | None:
        with self.reading() as c:
            row = c.execute(_TICKET_ROW, {"number": number}).one_or_none()
            return ticket_value(row) if row is not None else None

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        """The ticket that one of these Message-IDs (a customer's or staff member's mail
        recorded on it) belongs to, or None."""
        ids = [m for m in message_ids if m][:50]
        if not ids:
            return None
        with self.reading() as c:
            return c.execute(_TICKET_FOR_MESSAGE_IDS, {"ids": ids}).scalar()

    def list_tickets(
        self,
        *,
        states: Sequence[str] = (),
        overdue_at: datetime | None = None,
        assignee: str | None = None,
        limit: int = 200,
    ) -> list[TicketInfo]:
        """Tickets, newest first; `overdue_at`: only open ones whose deadline has passed."""
        q = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
        if states:
            q = q.where(Ticket.state.in_(list(states)))
        if overdue_at is not None:
            q = q.where(Ticket.state == "open").where(Ticket.deadline < overdue_at)
        if assignee is not None:
            q = q.where(func.lower(Ticket.assignee) == assignee.lower())
        return self._values(q, ticket_value)

    def ticket_events(self, number: str) -> list[TicketEventRecord]:
        return self._values(select(TicketEvent).join(Ticket, Ticket.id == TicketEvent.ticket_id)
                            .where(Ticket.number == number).order_by(TicketEvent.id), _event)

    def ticket_attachments(self, number: str) -> list[SavedAttachment]:
        return self._values(select(TicketAttachment)
                            .join(Ticket, Ticket.id == TicketAttachment.ticket_id)
                            .where(Ticket.number == number).order_by(TicketAttachment.id),
                            _attachment)

    def ticket_attachment_bytes(self, number: str) -> int:
        """Bytes of attachments a ticket keeps now (0 for an unknown ticket)."""
        with self.reading() as c:
            return int(c.scalar(
                select(func.coalesce(func.sum(TicketAttachment.size), 0))
                .join(Ticket, Ticket.id == TicketAttachment.ticket_id)
                .where(Ticket.number == number)) or 0)

    def set_ticket_state(self, number: str, state: str, *, by: str, now: datetime | None = None
                         ) -> bool:
        """Close, reopen or put a ticket on hold from the CLI; False if there is no such ticket."""
        now = now or utcnow()
        with self.session() as s:
            tx = TicketTx(s, self.engine.dialect.name)
            t = tx.find_ticket(number)
            if t is None:
                return False
            tx.set_state(t.id, state, now)
            tx.add_ticket_event(t.id, state if state != "open" else "reopened", author=by)
            return True

    def assign_ticket(self, number: str, name: str, *, by: str) -> bool:
        with self.session() as s:
            tx = TicketTx(s, self.engine.dialect.name)
            t = tx.find_ticket(number)
            if t is None:
                return False
            tx.assign(t.id, name, utcnow())
            tx.add_ticket_event(t.id, "assigned", author=by, detail=name)
            return True

    def sla_rows(self, opened_from: datetime, opened_to: datetime
                 ) -> list[tuple[TicketInfo, datetime | None, datetime | None]]:
        """Tickets opened in ``[opened_from, opened_to)``, oldest first, each with the time of
        its first ``answered`` event and of its first ``closed`` event (or None);
        read-only, for :func:`mailbot.sla.sla_report`."""

        def first(*kinds: str) -> Subquery:
            return (
                select(TicketEvent.ticket_id, func.min(TicketEvent.created_at).label("at"))
                .where(TicketEvent.kind.in_(kinds))
                .group_by(TicketEvent.ticket_id)
                .subquery()
            )

        answered, closed = first("answered"), first("closed")
        q = (
            select(Ticket, answered.c.at, closed.c.at)
            .outerjoin(answered, answered.c.ticket_id == Ticket.id)
            .outerjoin(closed, closed.c.ticket_id == Ticket.id)
            .where(Ticket.opened_at >= opened_from, Ticket.opened_at < opened_to)
            .order_by(Ticket.opened_at, Ticket.id)
        )
        with self.session() as s:
            return [(ticket_value(t), a, c) for t, a, c in s.execute(q)]


class TicketTx(TxBase):
    """The writes on tickets inside one transaction."""

    def __init__(self, session: Session, dialect: str, *, deferred: bool = False) -> None:
        super().__init__(session, dialect, deferred=deferred)
        # (sha256, filename) of the attachments recorded per inbound message, where read.
        self._attachment_keys: dict[int, set[tuple[str, str]]] = {}

    def _pending_ticket(self, number: str) -> bool:
        return any(row["number"] == number for row in self._pending_rows("tickets"))

    def ticket_exists(self, number: str) -> bool:
        """Whether a ticket exists, including one opened earlier in this transaction."""
        if self._pending_ticket(number):
            return True
        return self.c.execute(_TICKET_BY_NUMBER, {"number": number}).scalar() is not None

    def open_ticket(
        self,
        *,
        inbound_id: int,
        number: str,
        year: int,
        seq: int,
        opened_at: datetime,
        deadline: datetime,
        license: str | None,
        customer_email: str,
        customer_name: str,
        subject: str,
        priority: Priority,
        language: str,
        message_id: str | None = None,
        related_ticket: str | None = None,
    ) -> int:
        """Insert a ticket under its allocated number; its first outgoing message (the ack)
        is sequence 1. Returns the ticket's id (provisional in a deferred transaction)."""
        message_id = message_id[:998] if message_id else None
        ticket_id = self.new_ticket_id()
        self._defer("tickets", _INSERT_TICKET, {
            "number": number, "year": year, "seq": seq, "inbound_id": inbound_id,
            "license": license, "customer_email": customer_email,
            "customer_name": customer_name[:300], "subject": subject[:1000],
            "priority": priority.value, "state": "open", "language": language,
            "opened_at": opened_at, "deadline": deadline, "out_seq": 1,
            "first_message_id": message_id, "last_message_id": message_id,
            "related_ticket": related_ticket, "updated_at": opened_at})
        self.add_ticket_event(ticket_id, "opened", inbound_id=inbound_id,
                              author=customer_email)
        return ticket_id if self.deferred else self.real_ticket_id(ticket_id)

    def find_ticket(self, number: str) -> LockedTicket | None:
        """The ticket `number` as it is now (read through Core, so never a stale copy of an
        earlier read), its row locked until the transaction ends."""
        if self._pending_ticket(number):
            self.flush()
        t = self.c.execute(_TICKET_ROW_LOCKED, {"number": number}).one_or_none()
        return LockedTicket(t.id, ticket_value(t)) if t is not None else None

    def _change(self, ticket_id: int, now: datetime, **values: Any) -> None:
        self.c.execute(update(_tickets).where(_tickets.c.id == self.real_ticket_id(ticket_id))
                       .values(updated_at=now, **values))

    def set_state(self, ticket_id: int, state: str, now: datetime) -> None:
        """Move a ticket to open, waiting or closed, keeping the timestamps consistent."""
        self._change(ticket_id, now, state=state,
                     closed_at=now if state == "closed" else None,
                     waiting_since=now if state == "waiting" else None)

    def resume(self, ticket_id: int, deadline: datetime, now: datetime) -> None:
        """Open a waiting or closed ticket again, due at `deadline`."""
        self._change(ticket_id, now, deadline=deadline)
        self.set_state(ticket_id, "open", now)

    def assign(self, ticket_id: int, assignee: str, now: datetime) -> None:
        self._change(ticket_id, now, assignee=assignee[:100])

    def set_priority(self, ticket_id: int, priority: str, deadline: datetime,
                     now: datetime) -> None:
        """Change the priority, and the deadline that follows from it."""
        self._change(ticket_id, now, priority=priority, deadline=deadline)

    def touch(self, ticket_id: int, now: datetime, *, last_message_id: str | None = None
              ) -> None:
        """Mark the ticket updated at `now`; with the customer's latest Message-ID, which
        relayed staff replies then thread under."""
        if last_message_id:
            self._change(ticket_id, now, last_message_id=last_message_id[:998])
        else:
            self._change(ticket_id, now)

    def add_ticket_event(
        self, ticket_id: int, kind: str, *, inbound_id: int | None = None, author: str = "",
        detail: str | None = None,
    ) -> None:
        self._defer("events", _INSERT_EVENT, {
            "ticket_id": ticket_id, "kind": kind, "inbound_id": inbound_id,
            "author": author[:320], "created_at": utcnow(),
            "detail": detail[:2000] if detail else None})

    def read_attachment_keys(self, inbound_ids: Sequence[int]) -> None:
        """Read in one statement which attachments are recorded for these messages (what
        `add_attachments` checks for each), e.g. for a batch about to be written."""
        ids = [i for i in dict.fromkeys(inbound_ids) if i not in self._attachment_keys]
        for i in range(0, len(ids), 400):
            some = ids[i:i + 400]
            for inbound_id in some:
                self._attachment_keys[inbound_id] = set()
            for inbound_id, sha, filename in self.c.execute(_ATTACHMENT_KEYS, {"ids": some}):
                self._attachment_keys[inbound_id].add((sha, filename))

    def add_attachments(self, ticket_id: int, inbound_id: int,
                        attachments: Sequence[SavedAttachment], budget: int,
                        now: datetime) -> list[SavedAttachment]:
        """Record attachments on a ticket while the ticket's total stays within `budget`
        bytes; returns those left out."""
        real = self._ticket_ids.get(ticket_id, ticket_id)  # negative: not written yet
        used = sum(row["size"] for row in self._pending_rows("attachments")
                   if row["ticket_id"] in (ticket_id, real))
        if real >= 0:
            used += int(self.c.execute(_ATTACHMENT_BYTES, {"ticket_id": real}).scalar() or 0)
        if inbound_id not in self._attachment_keys:
            self.read_attachment_keys([inbound_id])
        recorded = self._attachment_keys[inbound_id]
        skipped = []
        for a in attachments:
            if used + a.size > budget:
                skipped.append(a)
                continue
            key = (a.sha256, a.filename[:200])
            if key not in recorded:
                recorded.add(key)
                self._defer("attachments", _INSERT_ATTACHMENT, {
                    "ticket_id": ticket_id, "inbound_id": inbound_id, "filename": a.filename[:200],
                    "content_type": a.content_type[:200], "size": a.size, "sha256": a.sha256,
                    "created_at": now})
                used += a.size
        return skipped
