"""Leases: named jobs only one daemon runs at a time (`acquire_lease`), and the leases under
which inbound and outbox rows are claimed (renewed and given back here, for both queues)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mailbot.store.base import StoreBase, new_claim_token
from mailbot.store.models import InboundMessage, Lease, OutboxMessage, utcnow


def renew_claims(store: StoreBase, table: Table, ids: Sequence[int], token: str,
                 lease: timedelta, now: datetime | None, state: str, *,
                 durable: bool = True) -> set[int]:
    """Extend the lease of those rows of `table` still held under `token` (and in `state`);
    returns their ids. Rows locked by a writer right now are skipped, not waited for.
    `durable` as for `StoreBase.session`."""
    if not ids:
        return set()
    now = now or utcnow()
    held = (select(table.c.id)
            .where(table.c.id.in_(list(ids)), table.c.claim_token == token,
                   table.c.state == state)
            .with_for_update(skip_locked=True))
    with store.writing(durable=durable) as conn:
        res = conn.execute(update(table).where(table.c.id.in_(held.scalar_subquery()))
                           .values(lease_until=now + lease).returning(table.c.id))
        return {int(i) for (i,) in res}


def claim_rows(conn: Connection, table: Table, where: Sequence[Any], order: Sequence[Any],
               limit: int, lease: timedelta, now: datetime, *, sizes: Any = None,
               max_bytes: int | None = None, count_attempt: bool = False
               ) -> tuple[str, list[int]]:
    """Lock up to `limit` rows of `table` matching `where` whose lease is free (in `order`,
    skipping rows another claimer has locked) and lease them under a new claim token, in
    the transaction of `conn`; returns the token and the rows' ids in order. With
    `max_bytes`, the rows are cut where the column `sizes` adds up to more than that (the
    first always stays); with `count_attempt`, their `attempts` go up by one.

    Two statements: one chooses the ids (ordering whole rows would read the raw bytes of
    every waiting one: SQLite keeps the columns after a large value in its overflow pages,
    about 70 ms a claim with 5,000 mails waiting), one UPDATE leases them. The claimed rows
    are read by the caller after the commit (under the claim, nothing else changes them), so
    the write lock (SQLite's one) is not held while their bytes are read."""
    token = new_claim_token()
    free = or_(table.c.lease_until.is_(None), table.c.lease_until < now)
    columns = [table.c.id] if sizes is None else [table.c.id, sizes]
    picked = conn.execute(select(*columns).where(*where, free).order_by(*order).limit(limit)
                          .with_for_update(skip_locked=True)).all()
    ids: list[int] = []
    total = 0
    for row in picked:
        if max_bytes is not None and sizes is not None:
            total += row[1]
            if ids and total > max_bytes:
                break
        ids.append(int(row[0]))
    if not ids:
        return token, []
    values: dict[str, Any] = {"lease_until": now + lease, "claim_token": token}
    if count_attempt:
        values["attempts"] = table.c.attempts + 1
    # Locked by the first query (SQLite: this transaction holds the write lock).
    conn.execute(update(table).where(table.c.id.in_(ids)).values(**values))
    return token, ids


def release_claims(store: StoreBase, table: Table, ids: Sequence[int], token: str | None,
                   state: str, *, durable: bool = True) -> None:
    """Give claimed rows of `table` still in `state` back, due again at once; with `token`,
    only rows that claim still holds. `durable` as for `StoreBase.session`."""
    if not ids:
        return
    q = update(table).where(table.c.id.in_(list(ids)), table.c.state == state)
    if token is not None:
        q = q.where(table.c.claim_token == token)
    with store.writing(durable=durable) as conn:
        conn.execute(q.values(lease_until=None))


class LeaseStore(StoreBase):
    """Named leases (the IMAP poller of a mailbox) and clearing every lease at start."""

    def release_all_leases(self) -> None:
        """Clear every lease (single-process SQLite start: no other holder can exist)."""
        with self.session() as s:
            s.execute(update(InboundMessage).where(InboundMessage.lease_until.is_not(None))
                      .values(lease_until=None))
            s.execute(update(OutboxMessage).where(OutboxMessage.lease_until.is_not(None))
                      .values(lease_until=None))
            s.execute(delete(Lease))

    def acquire_lease(self, name: str, holder: str, seconds: float,
                      now: datetime | None = None) -> bool:
        """Take or renew the lease `name` for `seconds`: True when `holder` has it now (it
        was free, expired, or already `holder`'s), False when another holder's is running."""
        now = now or utcnow()
        until = now + timedelta(seconds=seconds)
        with self.session() as s:
            taken = s.connection().execute(
                update(Lease)
                .where(Lease.name == name)
                .where((Lease.holder == holder) | (Lease.expires_at < now))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return True
            if s.get(Lease, name) is not None:
                return False
            try:
                with s.begin_nested():
                    s.add(Lease(name=name, holder=holder, expires_at=until))
            except IntegrityError:  # another daemon created it meanwhile
                return False
            return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (clean stop), so another daemon takes over at once."""
        with self.session() as s:
            s.execute(delete(Lease).where(Lease.name == name).where(Lease.holder == holder))

    def lease_holder(self, name: str, now: datetime | None = None) -> str | None:
        """Who holds `name` now (None: nobody, or expired)."""
        now = now or utcnow()
        with self.session() as s:
            row = s.get(Lease, name)
            return row.holder if row is not None and row.expires_at >= now else None

