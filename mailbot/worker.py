"""One message through the stages: parse → decide → act. The only caller of classify and
of the reply renderer.

A message that breaks parsing or deciding is quarantined with its traceback (Mailman's
shunt queue) and the worker goes on with the next one; `mailbot quarantine retry` puts it
back after a fix.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from mailbot.actions import ActionContext, Outcome, apply_decision
from mailbot.business_hours import BusinessCalendar
from mailbot.classify.decide import decide
from mailbot.classify.rules import RuleContext, TicketIndex
from mailbot.config import Config
from mailbot.domain import Decision, DecisionKind, Mail, RuleResult
from mailbot.ingest.parse import parse
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
    return Decision(
        kind=DecisionKind.QUARANTINED,
        reasons=(RuleResult("quarantine", True, error.strip().splitlines()[-1][:300]),),
    )


class Worker:
    """Decides stored messages. Build one per process; it caches the license registry."""

    REGISTRY_CHECK_SECONDS = 5.0

    def __init__(self, config: Config, store: Store, *, clock: Clock = utcnow) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.calendar = BusinessCalendar(config.calendar)
        self.actions = ActionContext(
            mailbox=config.mailbox, calendar=self.calendar, renderer=ReplyRenderer(config)
        )
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

    def context(self, now: datetime, known_tickets: TicketIndex | None) -> RuleContext:
        return RuleContext.from_config(self.config, self.registry(), now, known_tickets)

    def process(self, item: ClaimedInbound, now: datetime | None = None) -> Outcome | Quarantined:
        """Decide one stored message and apply the decision in one transaction.

        Never raises for a bad message: parse/decide errors quarantine it. Store errors
        propagate (the message stays `received` and is retried).
        """
        now = now or self.clock()
        token = message_key.set(f"in:{item.id}")
        try:
            mail: Mail | None = None
            try:
                mail = parse(item.raw)
                decision = decide(mail, self.context(now, self.tickets))
            except Exception:  # noqa: BLE001 - any parser/rule failure is contained here
                error = traceback.format_exc()
                self.store.quarantine_inbound(item.id, error)
                decision_log.warning(
                    "inbound=%s decision=quarantined error=%s",
                    item.id,
                    error.strip().splitlines()[-1][:200],
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
        for item in batch:
            self.process(item)
        return len(batch)
