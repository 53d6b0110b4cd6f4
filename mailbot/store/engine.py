"""Engines: SQLite (WAL, synchronous=FULL but for `LAZY_SYNC` transactions, IMMEDIATE
transactions) or pooled PostgreSQL, and what the store needs to know about the engine's
dialect and its failures."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


def dialect_insert(dialect: str, table: Table) -> Any:
    """INSERT with the engine's ON CONFLICT clause (PostgreSQL and SQLite spell it alike)."""
    if dialect == "postgresql":
        # Imported on first use: the PostgreSQL dialect (with asyncio for its asyncpg
        # driver) costs ~40 ms at the start of every process on SQLite.
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    return sqlite_insert(table)


def store_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be used right now (down, restarting, locked,
    connection lost), so the work is to be retried, not blamed on the message."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


SQLITE_CACHE_KIB = 512
"""Each SQLite connection's page cache (SQLite's default: 2,000 KiB). Raw mail passes through
it on its way in and out, so every connection of the pool filled its cache with pages of
mail it would not read again; the operating system caches the file anyway. 512 KiB per
connection: the daemon's peak RSS in a 5,000-mail IMAP catch-up 114-115 -> 111-112 MB,
replay's CPU the same within the noise (4 alternating pairs). The pragma below is written
out (SQL is never built from strings here); a test holds it to this value."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (the module's
    # own implicit BEGIN breaks SAVEPOINT); see the "begin" listener below.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a 250 promises the mail survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA cache_size=-512")  # SQLITE_CACHE_KIB
    cur.close()


SQLITE_CACHED_STATEMENTS = 16
"""Prepared statements each SQLite connection keeps (the sqlite3 module's default: 128). A
batch's multi-row INSERTs and IN lists differ with its length, and each connection of the
pool kept up to 128 of them: 4-8 MB per connection, ~30 MB of the daemon's peak in a
catch-up; the few statements used all the time stay prepared with 16."""


WRITE_LOCK_WAIT = 10.0
"""Seconds a writer waits for the engine's write lock (`WriteLockedConnection`) before
going on to SQLite's own busy wait (as long again: `busy_timeout`)."""


class WriteLockedConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions also hold its engine's lock, taken
    before BEGIN IMMEDIATE and given back once COMMIT or ROLLBACK has returned.

    SQLite has one write lock per database, and a writer that finds it taken polls: its busy
    handler sleeps 1, 2, 5 … up to 100 ms between tries, so under load (the outbox's sending
    threads, the intakes and the worker all writing) a commit waits for sleeps rather than
    for the writer before it, and any of the pollers, not the first, gets the lock next. The
    threads of one process queue on a lock instead and each is woken as the writer before
    it finishes. Other processes on the database (a CLI command) still meet SQLite's busy
    wait; a writer that waited `WRITE_LOCK_WAIT` for the lock goes on without it to that
    wait, so nothing here can hang longer than SQLite alone would."""

    write_lock: threading.Lock | None = None  # set per engine by `make_engine`
    lock_holder: list[int | None] = [None]  # the thread holding it (per engine, too)
    _holds_lock = False
    full_sync = True  # PRAGMA synchronous is FULL (not NORMAL: `LAZY_SYNC`)

    def hold_write_lock(self) -> None:
        """Take the engine's write lock for the transaction about to begin (if it comes).
        A thread that holds it already (a write transaction on another connection) does
        not wait for itself: SQLite's busy wait decides, as without the lock."""
        if self.write_lock is None or self._holds_lock:
            return
        me = threading.get_ident()
        if self.lock_holder[0] == me:
            return
        if self.write_lock.acquire(timeout=WRITE_LOCK_WAIT):
            self._holds_lock = True
            self.lock_holder[0] = me

    def release_write_lock(self) -> None:
        if self._holds_lock:
            self._holds_lock = False
            self.lock_holder[0] = None
            assert self.write_lock is not None
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_write_lock()


READ_ONLY = "mailbot_read_only"
"""Execution option of a connection whose transactions only read (SQLite: BEGIN DEFERRED)."""

LAZY_SYNC = "mailbot_lazy_sync"
"""Execution option of a connection whose write transactions need not be on disk when they
commit (SQLite: `PRAGMA synchronous=NORMAL` for them, no fsync; other engines: ignored).

SQLite appends every commit to one write-ahead log, in order, and an fsync of it makes every
commit before it durable too. So a power loss can only lose a tail of the commits: the state
after it is the state after some commit. mailbot keeps the fsync where it promises something
to the outside (a 250 or an IMAP checkpoint; a message about to leave, claimed in the outbox;
its outcome; ticket numbers reserved, so that none is ever handed out twice): every commit
before such a point is on disk by then. The worker's claims and decisions
(`StoreBase.session(durable=False)`, `StoreBase.writing`) only need to be on disk before their
replies leave, which the outbox claim's fsync sees to; lost in a power loss, the mail is still
stored and is decided again, and no reply of it had gone out.
PostgreSQL keeps synchronous commits: there the server can fail while the daemon runs on."""


def make_engine(url: str, *, echo: bool = False, pool_size: int = 5,
                readonly: bool = False) -> Engine:
    """An engine with the embedded-default settings (SQLite WAL) or a pooled server engine.

    SQLite transactions begin IMMEDIATE (taking the one write lock at once, so a busy writer
    is waited for instead of failing a read-then-write transaction at its first write), the
    threads of this process queued on a lock of the engine's (`WriteLockedConnection`);
    `readonly` engines (the decision children), and connections with the execution option
    `READ_ONLY` (`StoreBase.reading`), begin DEFERRED: they never wait for or hold the lock.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The engine's own connection class, so that its write lock is the engine's.
        factory = type("EngineConnection", (WriteLockedConnection,),
                       {"write_lock": threading.Lock(), "lock_holder": [None]})
        engine = create_engine(url, echo=echo, connect_args={
            "timeout": 30, "cached_statements": SQLITE_CACHED_STATEMENTS,
            "factory": factory})
        event.listen(engine, "connect", _sqlite_pragmas)
        def _begin(conn: Any) -> None:
            options = conn.get_execution_options()
            if readonly or options.get(READ_ONLY, False):
                conn.exec_driver_sql("BEGIN")
                return
            dbapi_conn = conn.connection.dbapi_connection
            lazy = bool(options.get(LAZY_SYNC, False))
            if dbapi_conn.full_sync == lazy:  # (not within a transaction: SQLite refuses)
                conn.exec_driver_sql("PRAGMA synchronous=NORMAL" if lazy
                                     else "PRAGMA synchronous=FULL")
                dbapi_conn.full_sync = not lazy
            dbapi_conn.hold_write_lock()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                dbapi_conn.release_write_lock()
                raise

        event.listen(engine, "begin", _begin)
        return engine
    return create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )

