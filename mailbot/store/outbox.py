"""The outbox: rendered mail queued once per purpose, claimed by the sender under a fenced
lease, each attempt's outcome committed before its thread sends the next; bounces and the
auto-reply counts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from mailbot.store.base import StoreBase, TxBase, like_escape
from mailbot.store.engine import dialect_insert
from mailbot.store.leases import claim_rows, release_claims, renew_claims
from mailbot.store.models import OutboxMessage, utcnow
from mailbot.store.values import ClaimedOutbox, OutboxRecord, OutgoingMail, value_of

PURPOSE_MAX = 200  # OutboxMessage.purpose is String(200)


def bounded_purpose(prefix: str, address: str) -> str:
    """The outbox purpose ``<prefix>:<address>``, or ``<prefix>:#<SHA-256 of the address,
    40 hex>`` when that would not fit the column (addresses may have 320 characters)."""
    purpose = f"{prefix}:{address}"
    if len(purpose) <= PURPOSE_MAX:
        return purpose
    return f"{prefix}:#{hashlib.sha256(address.encode('utf-8')).hexdigest()[:40]}"


_outbox = cast(Table, OutboxMessage.__table__)


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """The outcome of one attempt to send an outbox row, to record (`record_attempts`):
    the row's new values, written only while `token` holds its claim (None: in any case)."""

    outbox_id: int
    token: str | None
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sent(cls, outbox_id: int, reply: str, token: str | None = None) -> SendAttempt:
        """The relay took the message (`reply`: what it answered)."""
        return cls(outbox_id, token, {"state": "sent", "server_reply": reply[:2000],
                                      "sent_at": utcnow()})

    @classmethod
    def retry(cls, outbox_id: int, error: str, next_attempt_at: datetime,
              token: str | None = None) -> SendAttempt:
        """A transient failure: tried again at `next_attempt_at`."""
        return cls(outbox_id, token, {"last_error": error[:2000],
                                      "next_attempt_at": next_attempt_at})

    @classmethod
    def dead(cls, outbox_id: int, error: str, token: str | None = None) -> SendAttempt:
        """A permanent failure (or retried past the horizon): never tried again."""
        return cls(outbox_id, token, {"state": "dead", "last_error": error[:2000]})

    def statement(self) -> tuple[Any, dict[str, Any]]:
        """The UPDATE and its parameters: one statement per kind of outcome, built once
        (the outcomes are written while SQLite's write lock is held)."""
        params = {f"new_{k}": v for k, v in self.values.items()}
        params["row_id"] = self.outbox_id
        if self.token is not None:
            params["token"] = self.token
        return _attempt_update(tuple(sorted(self.values)), self.token is not None), params


@lru_cache(maxsize=16)
def _attempt_update(columns: tuple[str, ...], fenced: bool) -> Any:
    q = update(_outbox).where(_outbox.c.id == bindparam("row_id"))
    if fenced:
        q = q.where(_outbox.c.claim_token == bindparam("token"))
    return q.values(lease_until=None, attempts=_outbox.c.attempts + 1,
                    **{c: bindparam(f"new_{c}") for c in columns})
# INSERT … ON CONFLICT (purpose) DO NOTHING: of two daemons queueing the same reply (the
# scheduler runs in each), one row is written and neither transaction fails.
@lru_cache(maxsize=2)
def _insert_outbox(dialect: str) -> Any:
    return dialect_insert(dialect, _outbox).on_conflict_do_nothing(index_elements=["purpose"])


_COUNT_AUTO = (
    select(func.count())
    .select_from(_outbox)
    .where(_outbox.c.auto_recipient == bindparam("address"))
    .where(_outbox.c.created_at >= bindparam("since"))
)
_COUNT_AUTO_MANY = (
    select(_outbox.c.auto_recipient, func.count())
    .where(_outbox.c.auto_recipient.in_(bindparam("addresses", expanding=True)))
    .where(_outbox.c.created_at >= bindparam("since"))
    .group_by(_outbox.c.auto_recipient)
)
_PURPOSES = select(_outbox.c.purpose).where(
    _outbox.c.purpose.in_(bindparam("purposes", expanding=True)))
_COUNT_AUTO_TOTAL = (
    select(func.count())
    .select_from(_outbox)
    .where(_outbox.c.auto_recipient.is_not(None))
    .where(_outbox.c.created_at >= bindparam("since"))
)


def _record(row: Any) -> OutboxRecord:
    return value_of(OutboxRecord, row)


class OutboxStore(StoreBase):
    """The outbox queue: queued → sent | dead | bounced."""

    def claim_due_outbox(
        self, limit: int = 50, lease: timedelta = timedelta(seconds=20), now: datetime | None = None
    ) -> list[ClaimedOutbox]:
        """Take up to `limit` queued messages that are due and not leased by another sender,
        under a new claim token (keep them with `renew_outbox`)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            token, ids = claim_rows(
                conn, _outbox,
                [_outbox.c.state == "queued", _outbox.c.next_attempt_at <= now],
                [_outbox.c.priority, _outbox.c.next_attempt_at, _outbox.c.id],
                limit, lease, now)
        if not ids:
            return []
        c = _outbox.c
        with self.reading() as conn:
            rows = {r.id: r for r in conn.execute(
                select(c.id, c.message_id, c.mail_from, c.rcpt_to, c.raw, c.attempts,
                       c.created_at).where(c.id.in_(ids)))}
        return [ClaimedOutbox(i, r.message_id, r.mail_from, tuple(r.rcpt_to), r.raw,
                              r.attempts, r.created_at, token)
                for i in ids if (r := rows.get(i)) is not None]

    def renew_outbox(self, outbox_ids: Sequence[int], token: str, lease: timedelta,
                     now: datetime | None = None) -> set[int]:
        """Extend the lease of those claimed rows still held under `token` (and queued);
        returns their ids. Rows locked by a writer right now are skipped, not waited for."""
        return renew_claims(self, _outbox, outbox_ids, token, lease, now, "queued")

    def outbox_claim_held(self, outbox_id: int, token: str, lease: timedelta) -> bool:
        """Renew one claimed row, waiting for any lock on it: whether `token` still holds it."""
        with self.engine.begin() as conn:
            res = conn.execute(update(_outbox)
                               .where(_outbox.c.id == outbox_id, _outbox.c.claim_token == token,
                                      _outbox.c.state == "queued")
                               .values(lease_until=utcnow() + lease))
            return bool(res.rowcount)

    def release_outbox(self, outbox_ids: Sequence[int], token: str | None = None) -> None:
        """Give claimed rows back unsent (clean stop), so they are due again at once; with
        `token`, only rows that claim still holds."""
        release_claims(self, _outbox, outbox_ids, token, "queued")

    def record_attempts(self, attempts: Sequence[SendAttempt]
                        | Callable[[], Sequence[SendAttempt]]) -> list[bool]:
        """Record send attempts' outcomes in one transaction, through Core (an ORM session
        costs 4x as much), each only while its claim's token holds the row (without a
        token: in any case); per attempt, False when refused. `attempts` may be a function
        giving them, called once the transaction has begun (on SQLite: holds the write
        lock), so that the sending threads' outcomes handed in while it waited for the lock
        share its commit (`GroupCommit`)."""
        with self.engine.begin() as conn:
            taken = attempts() if callable(attempts) else attempts
            return [bool(conn.execute(*a.statement()).rowcount) for a in taken]

    def _update_outbox(self, attempt: SendAttempt) -> bool:
        return self.record_attempts([attempt])[0]

    def mark_sent(self, outbox_id: int, reply: str, token: str | None = None) -> bool:
        """The relay took the message; False when `token` no longer holds the row."""
        return self._update_outbox(SendAttempt.sent(outbox_id, reply, token))

    def mark_retry(self, outbox_id: int, error: str, next_attempt_at: datetime,
                   token: str | None = None) -> bool:
        return self._update_outbox(SendAttempt.retry(outbox_id, error, next_attempt_at, token))

    def mark_dead(self, outbox_id: int, error: str, token: str | None = None) -> bool:
        return self._update_outbox(SendAttempt.dead(outbox_id, error, token))

    def retry_outbox(self, outbox_ids: Sequence[int]) -> int:
        """Queue dead (or retrying) messages again, due now."""
        with self.session() as s:
            res = s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(list(outbox_ids)))
                .where(OutboxMessage.state.in_(("dead", "queued")))
                .values(state="queued", next_attempt_at=utcnow(), lease_until=None)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def list_outbox(self, state: str | None = None, limit: int = 100) -> list[OutboxRecord]:
        """Outbox rows (in `state`), newest first."""
        q = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
        if state:
            q = q.where(OutboxMessage.state == state)
        return self._values(q, _record)

    def get_outbox(self, outbox_id: int) -> OutboxRecord | None:
        return self._value(select(OutboxMessage).where(OutboxMessage.id == outbox_id), _record)

    def count_outbox(self) -> dict[str, int]:
        with self.session() as s:
            q = select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
            return {state: int(n) for state, n in s.execute(q)}

    def oldest_unsent(self) -> datetime | None:
        """Creation time of the oldest reply still waiting to be sent."""
        with self.session() as s:
            return s.scalar(
                select(func.min(OutboxMessage.created_at)).where(OutboxMessage.state == "queued")
            )

    def oldest_due_outbox(self, now: datetime) -> datetime | None:
        """Since when the longest-waiting due mail has been due: its `next_attempt_at` if it
        was never tried, else its creation (a retried row's next attempt moves on)."""
        since = case((OutboxMessage.attempts == 0, OutboxMessage.next_attempt_at),
                     else_=OutboxMessage.created_at)
        with self.session() as s:
            oldest: datetime | None = s.scalar(
                select(func.min(since))
                .where(OutboxMessage.state == "queued")
                .where((OutboxMessage.next_attempt_at <= now) | (OutboxMessage.attempts > 0))
            )
            return oldest

    def purposes_with_prefix(self, prefix: str, limit: int = 100) -> list[str]:
        """The newest outbox purposes starting with `prefix` (alerts keep their state here)."""
        with self.session() as s:
            q = (select(OutboxMessage.purpose)
                 .where(OutboxMessage.purpose.like(like_escape(prefix) + "%", escape="\\"))
                 .order_by(OutboxMessage.id.desc()).limit(limit))
            return list(s.scalars(q))

    def auto_reply_counts(self, addresses: Sequence[str], since: datetime) -> dict[str, int]:
        """The automatic replies queued since `since` to each of `addresses` (lowercase), as
        the per-address limit counts them (`OutboxTx.read_outbox`): one grouped query per
        400 addresses."""
        wanted = list(dict.fromkeys(addresses))
        counts = dict.fromkeys(wanted, 0)
        with self.reading() as conn:
            for i in range(0, len(wanted), 400):
                counts.update((address, int(n)) for address, n in conn.execute(
                    _COUNT_AUTO_MANY, {"addresses": wanted[i:i + 400], "since": since}))
        return counts

    def auto_replies_total(self, since: datetime) -> int:
        """The automatic replies queued since `since` to anyone, as the total limit counts
        them (a scan: no index leads with created_at)."""
        with self.reading() as conn:
            return int(conn.execute(_COUNT_AUTO_TOTAL, {"since": since}).scalar() or 0)

    def existing_purposes(self, purposes: Sequence[str]) -> set[str]:
        """Which of these outbox purposes are already queued or sent."""
        found: set[str] = set()
        items = list(dict.fromkeys(purposes))
        with self.session() as s:
            for i in range(0, len(items), 500):
                chunk = items[i : i + 500]
                found.update(s.scalars(select(OutboxMessage.purpose)
                                       .where(OutboxMessage.purpose.in_(chunk))))
        return found



class OutboxTx(TxBase):
    """The writes on the outbox inside one transaction.

    Automatic replies are counted (`auto_replies_since`, `auto_replies_total_since`) once
    per transaction, window start and address, and from then on kept up to date here as
    `enqueue` queues them: within the transaction the counts are exact; mail another daemon
    commits meanwhile is seen by the next transaction (as before, when it was counted per
    reply: the other's uncommitted rows were never seen either).
    """

    def __init__(self, session: Session, dialect: str, *, deferred: bool = False) -> None:
        super().__init__(session, dialect, deferred=deferred)
        self._auto_total: dict[datetime, int] = {}  # per window start
        self._auto_counts: dict[datetime, dict[str, int]] = {}  # per window start, address
        self._purposes: dict[str, bool] = {}  # purpose -> queued already (read_outbox)

    def read_outbox(self, purposes: Sequence[str], auto_addresses: Sequence[str],
                    since: datetime) -> None:
        """Read in one go what queueing a batch of mail will ask: which of `purposes` are
        queued already (a deferred transaction then queues the others with the batch's
        other rows), and the automatic replies since `since`, to each of `auto_addresses`
        and to anyone."""
        if auto_addresses:
            self.auto_replies_total_since(since)
        wanted = [p for p in dict.fromkeys(purposes) if p not in self._purposes]
        for i in range(0, len(wanted), 400):
            some = wanted[i:i + 400]
            self.flush()
            present = set(self.c.execute(_PURPOSES, {"purposes": some}).scalars())
            self._purposes.update((p, p in present) for p in some)
        counts = self._auto_counts.setdefault(since, {})
        addresses = [a for a in dict.fromkeys(a.lower() for a in auto_addresses)
                     if a not in counts]
        for i in range(0, len(addresses), 400):
            some = addresses[i:i + 400]
            self.flush()
            found = {address: n for address, n in self.c.execute(
                _COUNT_AUTO_MANY, {"addresses": some, "since": since})}
            counts.update((a, int(found.get(a, 0))) for a in some)

    def auto_replies_since(self, address: str, since: datetime) -> int:
        """Automatic replies queued to `address` since `since` (this transaction's included)."""
        counts = self._auto_counts.setdefault(since, {})
        key = address.lower()
        if key not in counts:
            self.flush()
            counts[key] = int(self.c.execute(
                _COUNT_AUTO, {"address": key, "since": since}).scalar() or 0)
        return counts[key]

    def auto_replies_total_since(self, since: datetime) -> int:
        """Automatic replies queued to anyone since `since` (this transaction's included).
        The scan is not cheap (no index leads with created_at): once per transaction."""
        if since not in self._auto_total:
            self.flush()
            self._auto_total[since] = int(
                self.c.execute(_COUNT_AUTO_TOTAL, {"since": since}).scalar() or 0)
        return self._auto_total[since]

    def auto_total_read(self, since: datetime) -> bool:
        """Whether `auto_replies_total_since(since)` was read in this transaction (it is
        then kept up to date without another scan)."""
        return since in self._auto_total

    def _counted(self, recipient: str | None, created_at: datetime) -> None:
        """An automatic reply to `recipient` was queued: count it where it is counted."""
        for since in self._auto_total:
            if created_at >= since and recipient is not None:
                self._auto_total[since] += 1
        for since, counts in self._auto_counts.items():
            if created_at >= since and recipient in counts:
                counts[recipient] += 1

    def mark_bounced(self, message_ids: Sequence[str], now: datetime, *,
                     hard: bool = True) -> int:
        """Mark our outgoing messages that a delivery report returned as `bounced`, `hard`
        or soft (failed with 4.x.x only, which bounce_news does not count). A hard report
        upgrades an earlier soft bounce."""
        if not message_ids:
            return 0
        self.flush_if_queued(message_ids)
        upgrade = (OutboxMessage.state == "bounced") & (OutboxMessage.bounce == "soft")
        res = self.s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.message_id.in_(list(message_ids)))
            .where(OutboxMessage.state.in_(("sent", "queued")) | (upgrade if hard else False))
            .values(state="bounced", bounced_at=now, lease_until=None,
                    bounce="hard" if hard else "soft")
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def enqueue(self, mail: OutgoingMail, *, ticket_id: int | None, inbound_id: int | None,
                due: datetime | None = None, now: datetime | None = None) -> bool:
        """Queue a rendered reply; a second reply for the same purpose is not queued.

        In a deferred transaction, a reply whose purpose `read_outbox` found free is
        written with the transaction's other rows."""
        now = now or utcnow()
        recipient = mail.rcpt_to[0].lower()[:320] if mail.rcpt_to else None
        row = {"purpose": mail.purpose, "message_id": mail.message_id, "kind": mail.kind,
               "ticket_id": ticket_id, "inbound_id": inbound_id, "mail_from": mail.mail_from,
               "rcpt_to": list(mail.rcpt_to), "raw": mail.raw, "state": "queued",
               "attempts": 0, "next_attempt_at": due or now, "created_at": now,
               "auto_recipient": recipient if mail.auto else None,
               "priority": 1 if mail.bulk else 0, "recipient": recipient}
        queued = self._purposes.get(mail.purpose)
        if queued:
            return False
        if queued is not None and self.deferred:
            self._purposes[mail.purpose] = True
            self._defer("outbox", _insert_outbox(self.dialect), row)
        else:
            self.flush()
            row["ticket_id"] = None if ticket_id is None else self.real_ticket_id(ticket_id)
            if not self.c.execute(_insert_outbox(self.dialect), row).rowcount:
                return False
            if queued is not None:
                self._purposes[mail.purpose] = True
        if mail.auto:
            self._counted(recipient, now)
        return True
