"""Inbound mail: durable intake deduplicated on two keys, claims under a fenced lease, the
quarantine, the decision record, and the IMAP checkpoints of the intakes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.errors import TemporaryIngestError
from mailbot.store.base import StoreBase, TxBase
from mailbot.store.engine import store_unavailable
from mailbot.store.leases import claim_rows, release_claims, renew_claims
from mailbot.store.models import (
    DecisionRecord,
    ImapCheckpoint,
    InboundMessage,
    InboundRaw,
    utcnow,
)
from mailbot.store.values import (
    CheckpointInfo,
    ClaimedInbound,
    DecisionInfo,
    InboundRecord,
    NewInbound,
    SavedInbound,
    value_of,
)

# Statements of the per-message hot path, built once as Core statements on the table: no
# ORM unit of work, and SQLAlchemy reuses their compiled form.
_inbound = cast(Table, InboundMessage.__table__)
_raw = cast(Table, InboundRaw.__table__)
_INSERT_DECISION = insert(cast(Table, DecisionRecord.__table__))
# RETURNING names each row by its unique digest: one multi-row INSERT (asking SQLAlchemy to
# keep the parameters' order would make it one INSERT per row on SQLite). Statements of 20
# rows keep the prepared variants (one per row count) few.
_INSERT_INBOUND = (insert(_inbound).returning(_inbound.c.sha256, _inbound.c.id)
                   .execution_options(insertmanyvalues_page_size=20))
# The raw bytes, one prepared statement run per row (executemany, no RETURNING): SQLite never
# holds more than one bound message at a time (a multi-row INSERT of an IMAP batch's 200
# mails held a copy of all of them, 4 MB, and stayed prepared at 1 MB).
_INSERT_RAW = insert(_raw)
_KEYS_CHUNK = 400  # keys per IN list (SQLite takes up to 32766 parameters)
_MARK_DECIDED = (
    update(_inbound)
    .where(_inbound.c.id == bindparam("row_id"))
    .where(_inbound.c.state == "received")
    .values(state="decided", decided_at=bindparam("now"), lease_until=None, error=None)
)
_MARK_DECIDED_FENCED = _MARK_DECIDED.where(_inbound.c.claim_token == bindparam("token"))
# A no-op write that locks a claimed row for the rest of the transaction, if still claimed.
_HOLD_CLAIM = (
    update(_inbound)
    .where(_inbound.c.id == bindparam("row_id"))
    .where(_inbound.c.claim_token == bindparam("token"))
    .where(_inbound.c.state == "received")
    .values(claim_token=_inbound.c.claim_token)
)
# The same for many rows (an IN list): those still undecided, locked as that UPDATE locks
# them (PostgreSQL; a SQLite transaction holds the one write lock anyway); with a token,
# only those it still claims.
_HOLD_MANY = (
    select(_inbound.c.id)
    .where(_inbound.c.id.in_(bindparam("ids", expanding=True)))
    .where(_inbound.c.state == "received")
    .with_for_update(key_share=True)
)
_HOLD_MANY_FENCED = _HOLD_MANY.where(_inbound.c.claim_token == bindparam("token"))


def _keys_of(item: NewInbound) -> tuple[str, str | None]:
    """(sha256, identity): the two dedup keys, the second made of the Message-ID and sender
    the intake read from the header (None unless both are known)."""
    sha = hashlib.sha256(item.raw).hexdigest()
    identity = (
        hashlib.sha256(f"{item.message_id.lower()} {item.sender}".encode()).hexdigest()
        if item.message_id and item.sender
        else None
    )
    return sha, identity


def raws_of(conn: Connection, ids: Sequence[int]) -> dict[int, bytes]:
    """The raw bytes of these inbound messages by id: the one place they are read. A message
    whose bytes retention dropped has none here (its readers get b"")."""
    out: dict[int, bytes] = {}
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), _KEYS_CHUNK):
        query = select(_raw.c.inbound_id, _raw.c.raw).where(
            _raw.c.inbound_id.in_(unique[i:i + _KEYS_CHUNK]))
        out.update((int(row_id), bytes(raw)) for row_id, raw in conn.execute(query))
    return out


def _save_all(conn: Connection, keys: Sequence[tuple[NewInbound, str, str | None]],
              when: datetime) -> list[SavedInbound]:
    """Store the messages not stored yet, in two statements: one SELECT finds those already
    stored under either key, one multi-row INSERT writes the rest. A message matching a row
    by its bytes is that row, else the one with its identity; a message repeated within
    `keys` is stored once (the later copies get the first one's id, not created)."""
    by_sha: dict[str, int] = {}
    by_identity: dict[str, int] = {}
    shas = list({sha for _, sha, _ in keys})
    identities = list({identity for _, _, identity in keys if identity is not None})
    for i in range(0, max(len(shas), len(identities)), _KEYS_CHUNK):
        some_shas, some_ids = shas[i:i + _KEYS_CHUNK], identities[i:i + _KEYS_CHUNK]
        query = select(_inbound.c.id, _inbound.c.sha256, _inbound.c.identity).where(
            or_(_inbound.c.sha256.in_(some_shas), _inbound.c.identity.in_(some_ids)))
        for row_id, sha, identity in conn.execute(query):
            by_sha[sha] = row_id  # both keys are unique: one row each
            if identity is not None:
                by_identity[identity] = row_id
    found: list[int | None] = []  # per message: its row, or None (new), or -1 - index
    new_rows: list[dict[str, Any]] = []
    new_raws: list[bytes] = []
    batch_sha: dict[str, int] = {}  # keys of the new messages: their index in new_rows
    batch_identity: dict[str, int] = {}
    for item, sha, identity in keys:
        existing = by_sha.get(sha)
        if existing is None and identity is not None:
            existing = by_identity.get(identity)
        if existing is not None:
            found.append(existing)
            continue
        earlier = batch_sha.get(sha)
        if earlier is None and identity is not None:
            earlier = batch_identity.get(identity)
        if earlier is not None:
            found.append(-1 - earlier)  # a copy of a message new in this batch
            continue
        batch_sha[sha] = len(new_rows)
        if identity is not None:
            batch_identity[identity] = len(new_rows)
        found.append(None)
        new_rows.append(
            {"sha256": sha, "identity": identity, "message_id": item.message_id,
             "sender": item.sender, "origin": item.origin[:200], "size": len(item.raw),
             "received_at": when, "state": "received", "attempts": 0})
        new_raws.append(item.raw)
    written = ({sha: int(i) for sha, i in conn.execute(_INSERT_INBOUND, new_rows)}
               if new_rows else {})
    new_ids = [written[row["sha256"]] for row in new_rows]
    if new_ids:
        conn.execute(_INSERT_RAW, [{"inbound_id": i, "raw": raw}
                                   for i, raw in zip(new_ids, new_raws)])
    fresh = iter(new_ids)
    return [SavedInbound(next(fresh), True) if f is None
            else SavedInbound(new_ids[-1 - f], False) if f < 0
            else SavedInbound(f, False)
            for f in found]


SMALL_MAIL_BYTES = 64 * 1024
"""Mail up to this size is decided in the order it arrived."""
YIELD_BYTES = 4 * 1024
"""Larger mail is claimed as if it had arrived one mail later per this many of its bytes."""


def claim_received(conn: Connection, limit: int, lease: timedelta, now: datetime, *,
                   max_bytes: int | None = None, small_bytes: int = SMALL_MAIL_BYTES,
                   yield_bytes: int = YIELD_BYTES,
                   patience: timedelta = timedelta(seconds=60)) -> tuple[str, list[int]]:
    """The claim of `InboundStore.claim_inbound` in the transaction of `conn`: its token
    and the ids claimed, in order."""
    waited = _inbound.c.received_at < now - patience
    in_order = or_(waited, _inbound.c.size <= small_bytes)
    order = [case((waited, 0), else_=1),
             case((in_order, _inbound.c.id), else_=_inbound.c.id + _inbound.c.size / yield_bytes),
             _inbound.c.id]
    return claim_rows(conn, _inbound, [_inbound.c.state == "received"], order, limit,
                      lease, now, sizes=_inbound.c.size, max_bytes=max_bytes,
                      count_attempt=True)


class InboundStore(StoreBase):
    """The inbound queue: received → decided | quarantined."""

    def save_inbound(self, item: NewInbound, received_at: datetime | None = None
                     ) -> SavedInbound:
        """Commit raw bytes durably, once: an identical or same-identity message is not stored
        again and the existing id is returned.

        Raises:
            TemporaryIngestError: the database is unavailable (SMTP answers 451).
        """
        return self.save_inbound_many([item], received_at)[0]

    def save_inbound_many(
        self, items: Sequence[NewInbound], received_at: datetime | None = None
    ) -> list[SavedInbound]:
        """`save_inbound` for several messages in one transaction (one fsync): for batch
        intake such as replay; all are committed before this returns.

        Raises:
            TemporaryIngestError: the database is unavailable.
        """
        when = received_at or utcnow()
        keys = [(item, *_keys_of(item)) for item in items]
        try:
            try:
                with self.session() as s:
                    return _save_all(s.connection(), keys, when)
            except IntegrityError:
                # Lost a race with another intake (IMAP and LMTP, or another daemon): the
                # rows are there now, or we insert them one by one.
                results = []
                for k in keys:
                    found = self._find_inbound(k[1], k[2])
                    if found is not None:
                        results.append(SavedInbound(found, False))
                        continue
                    with self.session() as s:
                        results.append(_save_all(s.connection(), [k], when)[0])
                return results
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            raise TemporaryIngestError(f"store unavailable: {getattr(exc, 'orig', exc)}") from exc

    def _find_inbound(self, sha: str, identity: str | None) -> int | None:
        with self.session() as s:
            q = select(InboundMessage.id).where(InboundMessage.sha256 == sha)
            found = s.scalar(q)
            if found is None and identity is not None:
                found = s.scalar(
                    select(InboundMessage.id).where(InboundMessage.identity == identity)
                )
            return found

    def claim_inbound(self, limit: int = 20, lease: timedelta = timedelta(seconds=20),
                      now: datetime | None = None, *, max_bytes: int | None = None,
                      small_bytes: int = SMALL_MAIL_BYTES, yield_bytes: int = YIELD_BYTES,
                      patience: timedelta = timedelta(seconds=60)) -> list[ClaimedInbound]:
        """Take up to `limit` received messages whose lease is free under a new claim token
        (keep them with `renew_inbound`); with `max_bytes`, no more than that in all (but
        always one). Mail waiting longer than `patience` goes first, oldest first; then the
        rest in the order it arrived, except that mail larger than `small_bytes` is taken as
        if it had arrived one mail later per `yield_bytes` of its size (a 200 KB mail 50
        mails later, a 20 MB one 5,000), the older first on a tie.

        So an ordinary request sent after a burst of large hostile mail is decided in a
        batch of its own, not after the burst; and when thousands of mails wait (an IMAP
        catch-up), mail with attachments is decided among the rest, while the decision
        processes would otherwise wait for the parent, not all of it at the end (where it
        was a tail of ~2 s in 10).

        The claim is not synced to disk at its commit (`LAZY_SYNC`): a lease lost in a
        power loss only means the mail is claimed again."""
        with self.writing(durable=False) as conn:
            token, ids = claim_received(conn, limit, lease, now or utcnow(),
                                        max_bytes=max_bytes, small_bytes=small_bytes,
                                        yield_bytes=yield_bytes, patience=patience)
        return self.claimed(token, ids)

    def claimed(self, token: str, ids: Sequence[int]) -> list[ClaimedInbound]:
        """The messages of a committed claim (`claim_inbound`, `InboundTx.claim_received`),
        read in a transaction of their own: the write lock is not held while their bytes
        are read."""
        if not ids:
            return []
        with self.reading() as conn:
            rows = {r.id: r for r in conn.execute(
                select(_inbound.c.id, _inbound.c.origin, _inbound.c.received_at,
                       _inbound.c.attempts).where(_inbound.c.id.in_(list(ids))))}
            raws = raws_of(conn, ids)
        return [ClaimedInbound(i, raws.get(i, b""), rows[i].origin, rows[i].received_at,
                               rows[i].attempts, token)
                for i in ids if i in rows]

    def renew_inbound(self, inbound_ids: Sequence[int], token: str, lease: timedelta,
                      now: datetime | None = None) -> set[int]:
        """Extend the lease of those claimed rows still held under `token` (and undecided);
        returns their ids. Rows locked by a writer right now are skipped, not waited for."""
        return renew_claims(self, _inbound, inbound_ids, token, lease, now, "received",
                            durable=False)

    def get_inbound(self, inbound_id: int) -> InboundRecord | None:
        """One stored message with its state and error."""
        found = self._records(select(InboundMessage).where(InboundMessage.id == inbound_id))
        return found[0] if found else None

    def _records(self, query: Any) -> list[InboundRecord]:
        with self.session() as s:
            rows = list(s.scalars(query))
            raws = raws_of(s.connection(), [r.id for r in rows])
            return [value_of(InboundRecord, r, raw=raws.get(r.id, b"")) for r in rows]

    def release_inbound(self, inbound_ids: Sequence[int], token: str | None = None) -> None:
        """Give claimed, undecided messages back (the batch failed), due again at once;
        with `token`, only rows that claim still holds."""
        release_claims(self, _inbound, inbound_ids, token, "received", durable=False)

    def requeue_inbound(self, inbound_ids: Sequence[int]) -> int:
        """Put quarantined messages back into the queue (after a fix)."""
        with self.session() as s:
            res = s.execute(
                update(InboundMessage)
                .where(InboundMessage.id.in_(list(inbound_ids)))
                .where(InboundMessage.state == "quarantined")
                .values(state="received", lease_until=None)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]


    def list_inbound(self, state: str, limit: int = 100) -> list[InboundRecord]:
        """Messages in `state`, newest first."""
        return self._records(select(InboundMessage).where(InboundMessage.state == state)
                             .order_by(InboundMessage.id.desc()).limit(limit))

    def count_inbound(self) -> dict[str, int]:
        with self.session() as s:
            q = select(InboundMessage.state, func.count()).group_by(InboundMessage.state)
            return {state: int(n) for state, n in s.execute(q)}

    # --- IMAP checkpoints -------------------------------------------------------------

    def imap_checkpoint(self, mailbox: str) -> tuple[int, int]:
        """(uidvalidity, last stored UID) of a folder; (0, 0) before the first run."""
        with self.session() as s:
            row = s.get(ImapCheckpoint, mailbox)
            return (row.uidvalidity, row.last_uid) if row else (0, 0)

    def save_imap_checkpoint(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        with self.session() as s:
            row = s.get(ImapCheckpoint, mailbox, with_for_update=True)
            if row is None:
                s.add(ImapCheckpoint(mailbox=mailbox, uidvalidity=uidvalidity,
                                     last_uid=last_uid, updated_at=utcnow()))
                return
            if row.uidvalidity != uidvalidity or last_uid > row.last_uid:
                row.uidvalidity, row.last_uid = uidvalidity, last_uid
            row.updated_at = utcnow()

    def note_intake_error(self, mailbox: str, error: str) -> None:
        """Remember an intake's last error for `mailbot status`."""
        with self.session() as s:
            row = s.get(ImapCheckpoint, mailbox)
            if row is None:
                row = ImapCheckpoint(mailbox=mailbox, uidvalidity=0, last_uid=0,
                                     updated_at=utcnow())
                s.add(row)
            row.last_error, row.last_error_at = error[:2000], utcnow()

    def imap_checkpoints(self) -> list[CheckpointInfo]:
        return self._values(select(ImapCheckpoint).order_by(ImapCheckpoint.mailbox),
                            _checkpoint)

    def decision_for(self, inbound_id: int) -> DecisionInfo | None:
        """The recorded decision about an inbound message, if any."""
        return self._value(select(DecisionRecord).where(DecisionRecord.inbound_id == inbound_id),
                           _decision)


def _checkpoint(row: Any) -> CheckpointInfo:
    return value_of(CheckpointInfo, row)


def _decision(row: Any) -> DecisionInfo:
    return value_of(DecisionInfo, row)


class InboundTx(TxBase):
    """The writes of one message's transaction on its inbound row and decision record."""

    def __init__(self, session: Session, dialect: str, *, deferred: bool = False) -> None:
        super().__init__(session, dialect, deferred=deferred)
        # hold_claims: the rows it looked at, with the token asked for, and those it holds
        # (locked, undecided, claimed under that token) and not yet moved on.
        self._checked: dict[int, str | None] = {}
        self._held: set[int] = set()
        self._decided: set[int] = set()  # held rows mark_decided moved (maybe not written)

    def quarantine(self, inbound_id: int, error: str, token: str | None = None) -> bool:
        """Park a message that broke parsing or deciding, with the reason; with the claim's
        `token` only while that claim holds the undecided row (False: refused)."""
        if inbound_id in self._decided:
            self.flush()
        self._held.discard(inbound_id)
        q = update(InboundMessage).where(InboundMessage.id == inbound_id)
        if token is not None:
            q = q.where(InboundMessage.claim_token == token, InboundMessage.state == "received")
        res = self.s.execute(q.values(state="quarantined", error=error[:20000], lease_until=None,
                                      decided_at=utcnow()))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def claim_received(self, limit: int, lease: timedelta, *, max_bytes: int | None = None
                       ) -> tuple[str, list[int]]:
        """Claim the next waiting messages in this transaction (as `claim_inbound` does;
        the worker claims its next batch in the transaction that writes the last): the
        claim's token and ids, to read with `InboundStore.claimed` once it has committed.
        The pending rows are written first: a message this transaction decides is not
        among those it claims, even where its own claim's lease has run out."""
        self.flush()
        return claim_received(self.c, limit, lease, utcnow(), max_bytes=max_bytes)

    def hold_claims(self, claims: Sequence[tuple[int, str | None]]) -> set[int]:
        """`hold_claim` for many (inbound id, claim token) pairs in one statement per token;
        returns the ids held: locked, undecided and (with a token) still claimed by it.
        For these, `hold_claim` and `mark_decided` then run no statement of their own."""
        by_token: dict[str | None, list[int]] = {}
        for inbound_id, token in claims:
            by_token.setdefault(token, []).append(inbound_id)
            self._checked[inbound_id] = token
        held: set[int] = set()
        for token, ids in by_token.items():
            for i in range(0, len(ids), _KEYS_CHUNK):
                some = ids[i:i + _KEYS_CHUNK]
                if token is None:
                    rows = self.c.execute(_HOLD_MANY, {"ids": some})
                else:
                    rows = self.c.execute(_HOLD_MANY_FENCED, {"ids": some, "token": token})
                held.update(int(r) for r in rows.scalars())
        self._held |= held
        return held

    def hold_claim(self, inbound_id: int, token: str | None) -> bool:
        """Whether the claim `token` still holds the undecided row, locking it for the rest
        of the transaction (another daemon's claim skips it, its writes wait). None: the
        caller works without a claim (replay): True."""
        if token is None:
            return True
        if self._checked.get(inbound_id, "") == token:
            return inbound_id in self._held
        return bool(self.c.execute(_HOLD_CLAIM, {"row_id": inbound_id, "token": token}).rowcount)

    def mark_decided(self, inbound_id: int, token: str | None = None) -> bool:
        """Move a `received` message to `decided` (first, so the row is locked for the rest
        of the transaction); False when another worker already did (its lease had expired)
        or, with the claim's `token`, when that claim no longer holds the row. A row this
        transaction holds (`hold_claims`) is certain to move: that is deferred."""
        if inbound_id in self._held and (token is None or self._checked[inbound_id] == token):
            self._held.discard(inbound_id)
            self._decided.add(inbound_id)
            self._defer("decided", _MARK_DECIDED, {"row_id": inbound_id, "now": utcnow()})
            return True
        if inbound_id in self._decided:
            return False  # moved already, by this transaction
        if token is None:
            res = self.c.execute(_MARK_DECIDED, {"row_id": inbound_id, "now": utcnow()})
        else:
            res = self.c.execute(_MARK_DECIDED_FENCED,
                                 {"row_id": inbound_id, "now": utcnow(), "token": token})
        return bool(res.rowcount)

    def record_decision(
        self,
        inbound_id: int,
        *,
        kind: str,
        license: str | None,
        priority: str | None,
        missing: Sequence[str],
        scope_reason: str | None,
        ticket_ref: str | None,
        ticket_id: int | None,
        language: str,
        reasons: list[dict[str, Any]],
    ) -> None:
        self._defer("decisions", _INSERT_DECISION, {
            "inbound_id": inbound_id, "kind": kind, "license": license, "priority": priority,
            "missing": list(missing), "scope_reason": scope_reason, "ticket_ref": ticket_ref,
            "ticket_id": ticket_id, "language": language, "reasons": reasons,
            "decided_at": utcnow()})
