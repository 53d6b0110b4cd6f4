"""What every part of the store shares: the session of a facade call, the one helper for
reads that turn rows into values, and the connection of a `Transaction`."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailbot.store.engine import dialect_insert

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
        self._reader: Engine | None = None  # SQLite: reads that never take the write lock

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error (for
        the store's own modules, and for tests that arrange rows)."""
        with self._sessions() as s, s.begin():
            yield s

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


class TxBase:
    """One transaction of named writes: the session, and its connection on which the hot
    path's Core statements run."""

    def __init__(self, session: Session, dialect: str) -> None:
        self.s = session
        self.dialect = dialect
        self.c = session.connection()  # Core statements of the hot path run on it
        self._auto_total: dict[datetime, int] = {}  # auto_replies_total_since, per `since`
