"""Inbound mail: durable intake deduplicated on two keys, claims under a fenced lease, the
quarantine, the decision record, and the IMAP checkpoints of the intakes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.errors import TemporaryIngestError
from mailbot.store.base import StoreBase, TxBase
from mailbot.store.engine import store_unavailable
from mailbot.store.leases import claim_rows, release_claims, renew_claims
from mailbot.store.models import DecisionRecord, ImapCheckpoint, InboundMessage, utcnow
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
_INSERT_DECISION = insert(cast(Table, DecisionRecord.__table__))
_INSERT_INBOUND = insert(_inbound).returning(_inbound.c.id)
_INBOUND_BY_KEYS = (
    select(_inbound.c.id)
    .where(or_(_inbound.c.sha256 == bindparam("sha"),
               _inbound.c.identity == bindparam("identity")))
    .limit(1)
)
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



SMALL_MAIL_BYTES = 64 * 1024
"""Mail up to this size is decided before larger mail that has not waited long."""

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
                    return [self._save_one(s, *k, when) for k in keys]
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
                        results.append(self._save_one(s, *k, when))
                return results
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            raise TemporaryIngestError(f"store unavailable: {getattr(exc, 'orig', exc)}") from exc

    @staticmethod
    def _save_one(s: Session, item: NewInbound, sha: str, identity: str | None,
                  when: datetime) -> SavedInbound:
        conn = s.connection()
        existing = conn.execute(
            _INBOUND_BY_KEYS, {"sha": sha, "identity": identity or "-"}
        ).scalar()
        if existing is not None:
            return SavedInbound(existing, False)
        new_id = conn.execute(
            _INSERT_INBOUND,
            {"sha256": sha, "identity": identity, "message_id": item.message_id,
             "sender": item.sender, "origin": item.origin[:200], "size": len(item.raw),
             "raw": item.raw, "received_at": when, "state": "received", "attempts": 0},
        ).scalar()
        assert new_id is not None
        return SavedInbound(int(new_id), True)

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
                      small_bytes: int = SMALL_MAIL_BYTES,
                      patience: timedelta = timedelta(seconds=60)) -> list[ClaimedInbound]:
        """Take up to `limit` received messages whose lease is free under a new claim token
        (keep them with `renew_inbound`): mail waiting longer than `patience` first, then
        mail of at most `small_bytes`, then the rest, each oldest first; with `max_bytes`,
        no more than that in all (but always one). An ordinary request sent after a burst of
        large hostile mail is so decided in a batch of its own, not after the burst."""
        now = now or utcnow()
        order = [case((InboundMessage.received_at < now - patience, 0),
                      (InboundMessage.size <= small_bytes, 1), else_=2),
                 InboundMessage.id]
        with self.session() as s:
            token, rows = claim_rows(s, InboundMessage, [InboundMessage.state == "received"],
                                     order, limit, lease, now, sizes=InboundMessage.size,
                                     max_bytes=max_bytes)
            for row in rows:
                row.attempts += 1
            return [
                ClaimedInbound(r.id, r.raw, r.origin, r.received_at, r.attempts, token)
                for r in rows
            ]

    def renew_inbound(self, inbound_ids: Sequence[int], token: str, lease: timedelta,
                      now: datetime | None = None) -> set[int]:
        """Extend the lease of those claimed rows still held under `token` (and undecided);
        returns their ids. Rows locked by a writer right now are skipped, not waited for."""
        return renew_claims(self.engine, _inbound, inbound_ids, token, lease, now, "received")

    def get_inbound(self, inbound_id: int) -> InboundRecord | None:
        """One stored message with its state and error."""
        return self._value(select(InboundMessage).where(InboundMessage.id == inbound_id),
                           _inbound_record)

    def release_inbound(self, inbound_ids: Sequence[int], token: str | None = None) -> None:
        """Give claimed, undecided messages back (the batch failed), due again at once;
        with `token`, only rows that claim still holds."""
        release_claims(self.engine, _inbound, inbound_ids, token, "received")

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
        return self._values(select(InboundMessage).where(InboundMessage.state == state)
                            .order_by(InboundMessage.id.desc()).limit(limit), _inbound_record)

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


def _inbound_record(row: Any) -> InboundRecord:
    return value_of(InboundRecord, row)


def _checkpoint(row: Any) -> CheckpointInfo:
    return value_of(CheckpointInfo, row)


def _decision(row: Any) -> DecisionInfo:
    return value_of(DecisionInfo, row)


class InboundTx(TxBase):
    """The writes of one message's transaction on its inbound row and decision record."""

    def quarantine(self, inbound_id: int, error: str, token: str | None = None) -> bool:
        """Park a message that broke parsing or deciding, with the reason; with the claim's
        `token` only while that claim holds the undecided row (False: refused)."""
        q = update(InboundMessage).where(InboundMessage.id == inbound_id)
        if token is not None:
            q = q.where(InboundMessage.claim_token == token, InboundMessage.state == "received")
        res = self.s.execute(q.values(state="quarantined", error=error[:20000], lease_until=None,
                                      decided_at=utcnow()))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def hold_claim(self, inbound_id: int, token: str | None) -> bool:
        """Whether the claim `token` still holds the undecided row, locking it for the rest
        of the transaction (another daemon's claim skips it, its writes wait). None: the
        caller works without a claim (replay): True."""
        if token is None:
            return True
        return bool(self.c.execute(_HOLD_CLAIM, {"row_id": inbound_id, "token": token}).rowcount)

    def mark_decided(self, inbound_id: int, token: str | None = None) -> bool:
        """Move a `received` message to `decided` (first, so the row is locked for the rest
        of the transaction); False when another worker already did (its lease had expired)
        or, with the claim's `token`, when that claim no longer holds the row."""
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
        now = utcnow()
        self.c.execute(
            _INSERT_DECISION,
            {"inbound_id": inbound_id, "kind": kind, "license": license, "priority": priority,
             "missing": list(missing), "scope_reason": scope_reason, "ticket_ref": ticket_ref,
             "ticket_id": ticket_id, "language": language, "reasons": reasons,
             "decided_at": now},
        )

