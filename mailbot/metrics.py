"""The daemon's Prometheus metrics (prometheus-client), one registry per process.

Counters are bumped where things happen (intake, worker, outbox sender, IMAP poller); the
queue depths, the outbox's oldest due age and the event-loop lag are read when `/metrics` is
scraped (`render`). Names follow the Prometheus conventions (`_total`, `_seconds`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
# What `generate_latest` writes (names with underscores): the classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RECEIVED = Counter("mailbot_mail_received", "New mail stored, by intake (smtp, lmtp, imap, file).",
                   ["via"], registry=REGISTRY)
DECIDED = Counter("mailbot_mail_decided", "Mail decided and acted on, by decision kind.",
                  ["kind"], registry=REGISTRY)
QUARANTINED = Counter("mailbot_mail_quarantined",
                      "Mail quarantined, by reason (too_large, too_complex, error, ...).",
                      ["reason"], registry=REGISTRY)
OUTBOX = Counter("mailbot_outbox_attempts",
                 "Outbox send attempts by outcome (sent, retried, dead).", ["outcome"],
                 registry=REGISTRY)
IMAP_RECONNECTS = Counter("mailbot_imap_reconnects",
                          "IMAP connections lost or attempts failed (each is retried).",
                          ["mailbox"], registry=REGISTRY)
ALERTS = Counter("mailbot_alerts", "Alert mails queued, by condition and state.",
                 ["condition", "state"], registry=REGISTRY)
STAGE = Histogram("mailbot_stage_seconds",
                  "Latency per stage: store (intake commit), wait (stored to decided), "
                  "decide (a worker batch), send (one SMTP delivery).", ["stage"],
                  buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600),
                  registry=REGISTRY)
LOOP_LAG = Histogram("mailbot_event_loop_lag_seconds",
                     "How late the event loop's 50 ms timer fired.",
                     buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
                     registry=REGISTRY)
INBOUND = Gauge("mailbot_inbound_messages", "Stored mail by state (received = waiting).",
                ["state"], registry=REGISTRY)
OUTBOX_DEPTH = Gauge("mailbot_outbox_messages", "Outbox rows by state.", ["state"],
                     registry=REGISTRY)
OUTBOX_OLDEST = Gauge("mailbot_outbox_oldest_due_age_seconds",
                      "Age of the oldest outbox mail that is due and unsent (0: none).",
                      registry=REGISTRY)
STORE_UP = Gauge("mailbot_store_up", "1 when the last scrape could read the store.",
                 registry=REGISTRY)
READY = Gauge("mailbot_ready", "1 when the last readiness check passed.", registry=REGISTRY)
LOOP_LAG_MAX = Gauge("mailbot_event_loop_lag_max_seconds",
                     "The worst event-loop lag since start.", registry=REGISTRY)

_INBOUND_STATES = ("received", "decided", "quarantined")
_OUTBOX_STATES = ("queued", "sent", "dead", "bounced")


def quarantine_reason(error: str) -> str:
    """A short label for a quarantine error: the limit name (``too_large: …``) or `error`."""
    head = error.strip().split(":", 1)[0]
    return head if head.isidentifier() and head.startswith("too_") else "error"


def set_queues(inbound: dict[str, int], outbox: dict[str, int],
               oldest_due: datetime | None, now: datetime) -> None:
    """Record the queue depths and the oldest due outbox age read from the store."""
    for state in {*_INBOUND_STATES, *inbound}:
        INBOUND.labels(state).set(inbound.get(state, 0))
    for state in {*_OUTBOX_STATES, *outbox}:
        OUTBOX_DEPTH.labels(state).set(outbox.get(state, 0))
    OUTBOX_OLDEST.set(max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0)


def observe_waits(received: Iterable[datetime]) -> None:
    """Record how long each message of a decided batch waited since it was stored."""
    now = datetime.now(timezone.utc)
    for at in received:
        STAGE.labels("wait").observe(max(0.0, (now - at).total_seconds()))


def render() -> bytes:
    """The registry in the Prometheus text format (version 0.0.4)."""
    return generate_latest(REGISTRY)
