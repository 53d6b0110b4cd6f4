"""`mailbot replay`: run stored mail files through the same path as live mail.

Live (default): each message is saved to the store, decided and acted on exactly as if it
had arrived over LMTP or IMAP (tickets, outbox replies). A dry run writes nothing: the same
pipeline's decide and draft stages (:mod:`mailbot.pipeline`: the limits, parsing, the rules,
a new ticket's deadline) run against a registry snapshot, and it reports what would happen;
a well-formed ticket reference is then trusted (no store to check it against).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbot.classify.rules import LicenseRegistry
from mailbot.config import Config
from mailbot.domain import Decision, DecisionKind, Mail, Priority, RuleResult
from mailbot.ingest.parse import parse
from mailbot.ingest.identity import identity_of
from mailbot.ingest.intake import save_raw_many
from mailbot.pipeline import Pipeline, quarantine_decision
from mailbot.store import ClaimedInbound, SavedInbound, Store
from mailbot.worker import Prepared, Quarantined, Started, Worker


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One message's outcome, as printed by `replay --json`."""

    file: str
    message_id: str | None
    sender: str | None
    subject: str | None
    decision: Decision
    ticket_ref: str | None
    deadline: datetime | None

    def as_json(self) -> dict[str, Any]:
        d = self.decision
        quarantined = d.kind is DecisionKind.QUARANTINED
        return {
            "file": self.file,
            "message_id": self.message_id,
            "from": self.sender,
            "subject": self.subject,
            "decision": d.kind.value,
            "license": d.license,
            "priority": d.priority.value if d.priority else None,
            "missing": list(d.missing),
            "scope_reason": d.scope_reason,
            "ticket_ref": self.ticket_ref,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "reasons": [r.detail for r in d.reasons] if quarantined else list(d.hits),
        }


def _result(label: str, raw: bytes, mail: Mail | None, decision: Decision,
            ticket_ref: str | None, deadline: datetime | None) -> ReplayResult:
    if mail is not None:
        return ReplayResult(label, mail.message_id, mail.from_addr, mail.subject, decision,
                            ticket_ref, deadline)
    message_id, sender = identity_of(raw)
    return ReplayResult(label, message_id, sender, None, decision, ticket_ref, deadline)


def replay_dry(
    messages: Iterator[tuple[str, bytes]],
    config: Config,
    registry: LicenseRegistry,
    now: datetime,
    *,
    pipeline: Pipeline | None = None,
) -> Iterator[ReplayResult]:
    """Decide each message without writing anything: the daemon's decide and draft stages
    (limits included), on `pipeline` or one without a store that decides against
    `registry`."""
    pipeline = pipeline or Pipeline.offline(config, registry)
    for label, raw in messages:
        analysis = pipeline.analyse(raw, now)
        mail, decision = analysis.mail, analysis.decision
        if decision is None:  # reported as quarantined, replay goes on
            error = analysis.error or "no decision"
            yield _result(label, raw, mail, quarantine_decision(error), None, None)
            continue
        draft = pipeline.draft(decision, mail, now) if mail is not None else None
        deadline = draft[1].deadline if draft is not None else None
        yield _result(label, raw, mail, decision, decision.ticket_ref, deadline)


FIRST_CHUNK = 16
"""Messages in the first chunk; each next one is twice as large, up to `chunk`: the decision
processes get work sooner, instead of waiting while a whole chunk is read and stored."""


def replay_live(
    messages: Iterator[tuple[str, bytes]],
    worker: Worker,
    store: Store,
    now: datetime,
    *,
    chunk: int = 128,
) -> Iterator[ReplayResult]:
    """Store, decide and act on each message as live intake would.

    Messages are taken `chunk` at a time so the worker's decision pool parses the next ones
    while this process writes; results come out in input order.
    """
    # A three-stage pipeline: while batch k-1 is written here, the children render batch k
    # and parse batch k+1.
    prepared: Batch | None = None
    started: Batch | None = None
    size = min(chunk, FIRST_CHUNK)
    while True:
        batch = list(itertools.islice(messages, size))
        size = min(chunk, size * 2)
        new: Batch | None = None
        if batch:
            saved = save_raw_many(
                store,
                [(raw, f"replay:{label}"[:200]) for label, raw in batch], received_at=now
            )
            fresh = [
                ClaimedInbound(s.id, raw, f"replay:{label}", now, 1)
                for (label, raw), s in zip(batch, saved)
                if s.created
            ]
            new = Batch(batch, saved, worker.start(fresh, now))
        if started is not None:
            started.prepared = worker.prepare(started.started)
        if prepared is not None:
            yield from _finish(prepared, worker, store)
        if new is None and started is None:
            return
        prepared, started = started, new


@dataclass
class Batch:
    """A chunk of replayed messages moving through the pipeline."""

    messages: list[tuple[str, bytes]]
    saved: list[SavedInbound]
    started: Started
    prepared: Prepared | None = None


def _finish(batch: Batch, worker: Worker, store: Store) -> Iterator[ReplayResult]:
    assert batch.prepared is not None
    outcomes = iter(worker.commit(batch.prepared))
    for (label, raw), s in zip(batch.messages, batch.saved):
        if not s.created:
            mail: Mail | None
            try:
                mail = parse(raw)
            except Exception:  # noqa: BLE001 - reported without parsed fields
                mail = None
            yield _duplicate(label, raw, mail, store, s.id)
            continue
        outcome = next(outcomes)
        if isinstance(outcome, Quarantined):
            yield _result(label, raw, outcome.mail, quarantine_decision(outcome.error),
                          None, None)
        else:
            yield _result(label, raw, outcome.mail, outcome.decision, outcome.ticket_number,
                          outcome.deadline)


def _duplicate(label: str, raw: bytes, mail: Mail | None, store: Store, inbound_id: int
               ) -> ReplayResult:
    record = store.decision_for(inbound_id)
    kind = DecisionKind(record.kind) if record else DecisionKind.QUARANTINED
    decision = Decision(
        kind=kind,
        reasons=(RuleResult("duplicate", True, f"already stored as inbound {inbound_id}"),),
        license=record.license if record else None,
        priority=Priority(record.priority) if record and record.priority else None,
        missing=tuple(record.missing) if record else (),
        scope_reason=record.scope_reason if record else None,
    )
    return _result(label, raw, mail, decision, record.ticket_ref if record else None, None)
