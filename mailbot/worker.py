"""One message through the stages: parse → decide → act. The only caller of classify and
of the reply renderer.

`Decider` parses and decides (pure work plus two read-only lookups: the license registry and
whether a ticket number exists); it runs in child processes (:mod:`mailbot.isolation`) or, with
`worker.processes = 0`, in this one. `Worker` applies each decision in one transaction.

A message that breaks parsing or deciding is quarantined with its traceback (Mailman's
shunt queue) and the worker goes on with the next one; `mailbot quarantine retry` puts it
back after a fix.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from mailbot.actions import ActionContext, Outcome, apply_decision
from mailbot.business_hours import BusinessCalendar
from mailbot.classify.decide import decide
from mailbot.classify.rules import RuleContext
from mailbot.config import Config
from mailbot.domain import Decision, DecisionKind, Mail, RuleResult
from mailbot.ingest.parse import parse
from mailbot.isolation import Analysis, DecisionPool
from mailbot.logs import decision_log, message_key
from mailbot.registry import DictRegistry
from mailbot.replies.render import ReplyRenderer
from mailbot.store import ClaimedInbound, Store, utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that could not be parsed or decided."""

    inbound_id: int
    error: str
    mail: Mail | None = None


class StoreTicketIndex:
    """The classify seam `TicketIndex`, answered by the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def exists(self, ref: str) -> bool:
        return self._store.ticket_exists(ref)


def quarantine_decision(error: str) -> Decision:
    lines = error.strip().splitlines() or ["unknown error"]
    return Decision(
        kind=DecisionKind.QUARANTINED,
        reasons=(RuleResult("quarantine", True, lines[-1][:300]),),
    )


class Decider:
    """Parses and decides raw messages; caches the license registry of its store."""

    REGISTRY_CHECK_SECONDS = 5.0

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.tickets = StoreTicketIndex(store)
        self._registry = DictRegistry({})
        self._registry_version: object = None
        self._registry_checked = 0.0

    def registry(self) -> DictRegistry:
        """The license registry, reloaded when the table changed (checked every few s)."""
        mono = time.monotonic()
        if self._registry_version is None or mono - self._registry_checked > self.REGISTRY_CHECK_SECONDS:
            version = self.store.license_version()
            if version != self._registry_version:
                self._registry = DictRegistry(self.store.license_snapshot())
                self._registry_version = version
            self._registry_checked = mono
        return self._registry

    def analyse(self, raw: bytes, now: datetime, *, trust_refs: bool = False) -> Analysis:
        """Parse and decide; never raises (the error comes back with the traceback)."""
        mail: Mail | None = None
        try:
            mail = parse(raw)
            ctx = RuleContext.from_config(
                self.config, self.registry(), now, None if trust_refs else self.tickets
            )
            return Analysis(mail, decide(mail, ctx))
        except Exception:  # noqa: BLE001 - any parser/rule failure is contained here
            return Analysis(mail, None, traceback.format_exc())


class Worker:
    """Decides stored messages and applies the decisions. Build one per process."""

    def __init__(self, config: Config, store: Store, *, clock: Clock = utcnow,
                 pool: DecisionPool | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.pool = pool
        self.decider = Decider(config, store)
        self.calendar = BusinessCalendar(config.calendar)
        self.actions = ActionContext(
            mailbox=config.mailbox, calendar=self.calendar, renderer=ReplyRenderer(config)
        )

    @classmethod
    def from_config(cls, config: Config, store: Store, *, clock: Clock = utcnow) -> Worker:
        """A worker with the configured decision pool (`worker.processes`, 0 = in-process)."""
        w = config.worker
        pool = (
            DecisionPool(config, processes=w.processes, timeout=w.parse_timeout_seconds,
                         memory_mb=w.memory_mb)
            if w.processes > 0
            else None
        )
        return cls(config, store, clock=clock, pool=pool)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def analyse_many(self, raws: Sequence[bytes], now: datetime) -> list[Analysis]:
        if self.pool is not None:
            return self.pool.analyse_many(raws, now)
        return [self.decider.analyse(raw, now) for raw in raws]

    def process(self, item: ClaimedInbound, now: datetime | None = None) -> Outcome | Quarantined:
        """Decide one stored message and apply the decision in one transaction."""
        return self.process_many([item], now)[0]

    def process_many(
        self, items: Sequence[ClaimedInbound], now: datetime | None = None
    ) -> list[Outcome | Quarantined]:
        """Decide messages (in the pool, in parallel) and apply each in its own transaction.

        Never raises for a bad message: parse/decide errors quarantine it. Store errors
        propagate (the message stays `received` and is retried).
        """
        now = now or self.clock()
        analyses = self.analyse_many([item.raw for item in items], now)
        return [self.apply(item, analysis, now) for item, analysis in zip(items, analyses)]

    def apply(self, item: ClaimedInbound, analysis: Analysis, now: datetime) -> Outcome | Quarantined:
        """Act on one analysed message (one transaction), or quarantine it."""
        token = message_key.set(f"in:{item.id}")
        try:
            mail, decision = analysis.mail, analysis.decision
            if decision is None or mail is None:
                error = analysis.error or "no decision"
                self.store.quarantine_inbound(item.id, error)
                decision_log.warning(
                    "inbound=%s decision=quarantined error=%s",
                    item.id,
                    (error.strip().splitlines() or ["?"])[-1][:200],
                )
                return Quarantined(item.id, error, mail)
            with self.store.transaction() as tx:
                if tx.inbound_state(item.id) != "received":
                    # Another worker finished it while we were deciding (lease expired).
                    return Outcome(item.id, decision, mail=mail)
                outcome = apply_decision(
                    tx,
                    self.actions,
                    inbound_id=item.id,
                    mail=mail,
                    decision=decision,
                    received_at=item.received_at,
                    now=now,
                )
            decision_log.info(
                "inbound=%s from=%s decision=%s ticket=%s license=%s hits=%s",
                item.id,
                mail.from_addr,
                decision.kind.value,
                outcome.ticket_number,
                decision.license,
                ",".join(decision.hits),
            )
            return outcome
        finally:
            message_key.reset(token)

    def run_once(self, limit: int = 20) -> int:
        """Claim and decide up to `limit` waiting messages; returns how many were taken."""
        batch = self.store.claim_inbound(limit)
        if batch:
            self.process_many(batch)
        return len(batch)
