"""What every part of the store shares: the session of a facade call, the one helper for
reads that turn rows into values, and the connection of a `Transaction` with its deferred
writes (`TxBase`)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from mailbot.store.engine import LAZY_SYNC, READ_ONLY, dialect_insert

V = TypeVar("V")


def new_lease_holder() -> str:
    """A name for this process in leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_claim_token() -> str:
    """A claim's fencing token: host and pid (who holds the rows) and a random part (unique
    per claim). A state change of a claimed row names it in its WHERE clause."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex}"


def like_escape(text: str) -> str:
    """`text` for a LIKE pattern with escape character backslash: ``%`` and ``_`` literal."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class StoreBase:
    """The engine and sessions the facade's per-aggregate parts (mixins of `Store`) share."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.lazy_commits = False  # whether a commit was left to a later fsync (`LAZY_SYNC`)

    @contextmanager
    def session(self, *, durable: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error (for
        the store's own modules, and for tests that arrange rows). `durable=False`: the
        commit need not be on disk at once (`LAZY_SYNC`: the worker's claims and decisions)."""
        with self._sessions() as s, s.begin():
            if not durable:
                s.connection(execution_options={LAZY_SYNC: True})
                self.lazy_commits = True
            yield s

    @contextmanager
    def writing(self, *, durable: bool = True) -> Iterator[Connection]:
        """A connection in a write transaction (`engine.begin()`), with `durable` as for
        `session`."""
        with self.engine.connect() as conn:
            if not durable:
                conn.execution_options(**{LAZY_SYNC: True})
                self.lazy_commits = True
            with conn.begin():
                yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection in a transaction that only reads the last committed state. On SQLite
        it begins DEFERRED: it neither waits for nor holds the one write lock, so the
        worker's reads between its writes do not queue behind the outbox's and the intakes'
        commits (nor hold them up)."""
        with self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn

    def _values(self, query: Any, to_value: Callable[[Any], V]) -> list[V]:
        """The rows `query` selects, each turned into a value inside the session."""
        with self.session() as s:
            return [to_value(row) for row in s.scalars(query)]

    def _value(self, query: Any, to_value: Callable[[Any], V]) -> V | None:
        """The first row `query` selects as a value, or None."""
        found = self._values(query.limit(1), to_value)
        return found[0] if found else None

    def _upsert(self, model: Any, key: str, rows: list[dict[str, Any]]) -> None:
        """INSERT … ON CONFLICT (key) DO UPDATE for all `rows` in one transaction (one
        statement per row, no read first). Later rows for a key win."""
        rows = list({row[key]: row for row in rows}.values())  # one statement may not
        if not rows:                                            # touch a row twice
            return
        table = cast(Table, model.__table__)
        stmt = dialect_insert(self.engine.dialect.name, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key],
            set_={name: stmt.excluded[name] for name in rows[0] if name != key})
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)


FLUSH_ORDER = ("decided", "tickets", "events", "attachments", "outbox", "decisions")
"""The deferred statements of a transaction in the order `TxBase.flush` runs them: inbound
rows decided, then the tickets (their ids are needed by the rest), then the rows that refer
to tickets."""


class TxBase:
    """One transaction of named writes: the session, and its connection on which the hot
    path's Core statements run.

    Deferred writes. The hot path's writes (a message decided, tickets, ticket events and
    attachments, outbox rows, decision records) are collected per statement and written by
    `flush`, one executemany (or multi-row INSERT) per statement, in `FLUSH_ORDER`. A
    transaction made with ``deferred=False`` (the default) flushes after each such write,
    so it behaves as if each were executed at once. A deferred one (the worker's batches)
    flushes before any statement that reads or changes what is still pending, and when the
    transaction ends (`Store.transaction`); it therefore reads what it wrote, in order, and
    a write that breaks a constraint fails the transaction, only later.

    Provisional ticket ids: a deferred `open_ticket` returns a negative id standing for the
    ticket until it is written; every method of the transaction accepts it (the flush puts
    the real id in its place). It must not be used outside the transaction.
    """

    def __init__(self, session: Session, dialect: str, *, deferred: bool = False) -> None:
        self.s = session
        self.dialect = dialect
        self.c = session.connection()  # Core statements of the hot path run on it
        self.deferred = deferred
        # Per kind of FLUSH_ORDER: the statement and the rows waiting for it.
        self._pending: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        self._provisional: list[int] = []  # of each pending ticket row, in order
        self._tickets_opened = 0
        self._ticket_ids: dict[int, int] = {}  # provisional id -> real id once written
        self._after_commit: list[Callable[[], object]] = []

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run `action` once this transaction has committed, not at all if it rolls back
        (`Store.transaction`): a log line about what it wrote is then true, is written
        once if a failed batch is written again message by message, and is not written
        while the transaction holds SQLite's one write lock."""
        self._after_commit.append(action)

    def run_after_commit(self) -> None:
        """The actions of `after_commit`, in order (called once the commit has returned)."""
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()

    def _defer(self, kind: str, statement: Any, row: dict[str, Any]) -> None:
        """Queue `row` for `statement`; written at once unless the transaction defers."""
        entry = self._pending.get(kind)
        if entry is None:
            self._pending[kind] = (statement, [row])
        else:
            entry[1].append(row)
        if not self.deferred:
            self.flush()

    def _pending_rows(self, kind: str) -> list[dict[str, Any]]:
        entry = self._pending.get(kind)
        return entry[1] if entry is not None else []

    def flush_if_queued(self, message_ids: Sequence[str]) -> None:
        """Write the pending rows if an outbox row among them has one of these Message-IDs
        (before a statement about those mails)."""
        ids = set(message_ids)
        if any(row["message_id"] in ids for row in self._pending_rows("outbox")):
            self.flush()

    def new_ticket_id(self) -> int:
        """A provisional id for a ticket about to be deferred (see the class docstring)."""
        self._tickets_opened += 1
        provisional = -self._tickets_opened
        self._provisional.append(provisional)
        return provisional

    def real_ticket_id(self, ticket_id: int) -> int:
        """The real id of a ticket (writing the pending rows if it is still provisional)."""
        if ticket_id >= 0:
            return ticket_id
        if ticket_id not in self._ticket_ids:
            self.flush()
        return self._ticket_ids[ticket_id]

    def flush(self) -> None:
        """Write every pending row: one statement per kind, in `FLUSH_ORDER`.

        Raises:
            RuntimeError: a message the transaction held was not moved to decided (its
                claim was lost after all): the transaction must not commit.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        provisional, self._provisional = self._provisional, []
        for kind in FLUSH_ORDER:
            if kind not in pending:
                continue
            statement, rows = pending[kind]
            if kind == "tickets":  # RETURNING (number, id)
                ids = {number: int(i) for number, i in self.c.execute(statement, rows)}
                self._ticket_ids.update(
                    (p, ids[row["number"]]) for p, row in zip(provisional, rows))
                continue
            for row in rows:
                ticket_id = row.get("ticket_id")
                if ticket_id is not None and ticket_id < 0:
                    row["ticket_id"] = self._ticket_ids[ticket_id]
            result = self.c.execute(statement, rows)
            if kind == "decided" and result.rowcount != len(rows) and (
                    len(rows) == 1 or result.supports_sane_multi_rowcount()):
                raise RuntimeError(f"{len(rows) - result.rowcount} held inbound row(s) "
                                   "were not received any more")
