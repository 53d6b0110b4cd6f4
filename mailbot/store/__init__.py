"""The store: SQLAlchemy 2 models and the `Store` facade, the only package that speaks SQL.

The database is the queue (Mailman's queues, with a row state instead of a file per
stage): every inbound message is committed as raw bytes first (`received`), and each later
step is one transaction that moves its rows to the next state, so a crash at any point
re-runs a step instead of losing mail.

States:
    InboundMessage   received → decided | quarantined   (its raw bytes: InboundRaw, written once)
    OutboxMessage    queued → sent | dead | bounced   (retry: queued with a later next_attempt_at)
    Ticket           open → waiting → closed

The facade is synchronous; async callers run it in a thread (`asyncio.to_thread`). Work is
claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite, single-writer, ignores
it) under a short lease and a claim token: the claimer renews the lease while it works, and
a state change given the token happens only while that claim still holds the row. Unique
keys make every effect idempotent: one decision per inbound message, one reply per
(purpose, message), one ticket number per (year, sequence).

The worker writes a batch of decided messages in one transaction that defers its hot-path
rows (`Store.transaction(deferred=True)`, see `base.TxBase`): callers still make one named
write per row, and the transaction writes each table's rows in one statement, flushing
before any statement that must see them. Rather than handlers returning rows for the
worker to write, this keeps every handler's writes where they were and the batching in the
one package that speaks SQL.

The package: `models` (tables), `engine` (SQLite and PostgreSQL engines), `values` (the
frozen values callers get: no ORM row leaves the store), and one module per aggregate
(`inbound`, `tickets`, `outbox`, `news`, `leases`, `settings`, `retention`), each holding
the facade's methods on it (a mixin of `Store`) and its writes inside a transaction (a
mixin of `Transaction`). Mixins rather than per-aggregate objects keep every caller's
`store.method(...)` and `tx.method(...)` as it was, without forwarding methods; each part
shares only `StoreBase` (engine, `session`, the read helper) or `TxBase` (session and
connection of one transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select

from mailbot.store.base import StoreBase, new_claim_token, new_lease_holder
from mailbot.store.engine import make_engine, store_unavailable
from mailbot.store.inbound import InboundStore, InboundTx
from mailbot.store.leases import LeaseStore
from mailbot.store.models import (
    Base,
    ContactRow,
    DecisionRecord,
    ImapCheckpoint,
    InboundMessage,
    InboundRaw,
    Lease,
    LicenseRow,
    NewsToken,
    OutboxMessage,
    ScheduledCampaign,
    Setting,
    Suppression,
    Ticket,
    TicketAttachment,
    TicketCounter,
    TicketEvent,
    Unsubscription,
    utcnow,
)
from mailbot.store.news import NewsStore, NewsTx
from mailbot.store.outbox import (
    PURPOSE_MAX,
    OutboxStore,
    OutboxTx,
    SendAttempt,
    bounded_purpose,
)
from mailbot.store.retention import RetentionStore
from mailbot.store.settings import SettingsStore
from mailbot.store.tickets import TicketStore, TicketTx
from mailbot.store.values import (
    CampaignSchedule,
    CheckpointInfo,
    ClaimedInbound,
    ClaimedOutbox,
    DecisionInfo,
    InboundRecord,
    LockedTicket,
    NewInbound,
    OutboxRecord,
    OutgoingMail,
    SavedInbound,
    TicketEventRecord,
)

log = logging.getLogger(__name__)

__all__ = [
    "PURPOSE_MAX", "Base", "CampaignSchedule", "CheckpointInfo", "ClaimedInbound",
    "ClaimedOutbox", "ContactRow", "DecisionInfo", "DecisionRecord", "ImapCheckpoint",
    "InboundMessage", "InboundRaw", "InboundRecord", "Lease", "LicenseRow", "LockedTicket",
    "NewInbound",
    "NewsToken", "OutboxMessage", "OutboxRecord", "OutgoingMail", "SavedInbound",
    "ScheduledCampaign", "SendAttempt", "Setting", "Store", "Suppression", "Ticket",
    "TicketAttachment", "TicketCounter", "TicketEvent", "TicketEventRecord", "Transaction",
    "Unsubscription",
    "bounded_purpose", "make_engine", "new_claim_token", "new_lease_holder",
    "store_unavailable", "utcnow",
]


class Transaction(InboundTx, TicketTx, OutboxTx, NewsTx):
    """Named writes inside one transaction: what the worker does for one message."""


class Store(InboundStore, TicketStore, OutboxStore, NewsStore, LeaseStore, SettingsStore,
            RetentionStore):
    """Named operations on the database. All SQL of mailbot lives in this package."""

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False, pool_size: int = 5,
                 readonly: bool = False) -> Store:
        return cls(make_engine(url, echo=echo, pool_size=pool_size, readonly=readonly))

    def close(self) -> None:
        """Close the connections; on SQLite, the commits left to a later fsync (`LAZY_SYNC`)
        are on disk first (a checkpoint syncs the log before it copies it)."""
        if self.is_sqlite and self.lazy_commits:
            try:  # outside a transaction (autocommit: `_sqlite_pragmas`), where it may run
                raw = self.engine.raw_connection()
                try:
                    raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                finally:
                    raw.close()
            except Exception:  # noqa: BLE001 - the last connection's close checkpoints too
                log.warning("could not checkpoint the database before closing it",
                            exc_info=True)
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, deferred: bool = False, durable: bool = True
                    ) -> Iterator[Transaction]:
        """A unit of work for the worker's actions (a message's, or a batch's). `deferred`:
        the hot path's rows are written together (see `TxBase`), at the latest when the
        block ends, before the commit; what was to follow the commit (`after_commit`) runs
        after it. `durable=False`: the commit need not be on disk at once (`LAZY_SYNC`)."""
        with self.session(durable=durable) as s:
            tx = Transaction(s, self.engine.dialect.name, deferred=deferred)
            yield tx
            tx.flush()
        tx.run_after_commit()

    def ping(self) -> None:
        """One round trip to the database (raises what the driver raises when it is away)."""
        with self.engine.connect() as conn:
            conn.execute(select(1))
