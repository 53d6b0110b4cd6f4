"""Exception tree. Each boundary translates an error exactly once.

    MailbotError
    ├── ConfigError                 bad or unreadable configuration (start-up stops, one line)
    ├── IngestError                 a message could not be taken in
    │   └── TemporaryIngestError    the store is unavailable: SMTP/LMTP answers 451, IMAP leaves mail
    ├── ParseError                  a stored message could not be parsed or decided (→ quarantine)
    └── DeliveryError               an outbound message was not accepted
        ├── TransientDeliveryError  4xx or network trouble: retried with backoff
        └── PermanentDeliveryError  5xx: the outbox row goes `dead`
"""

from __future__ import annotations


class MailbotError(Exception):
    """Base of every error mailbot raises on purpose."""


class ConfigError(MailbotError):
    """The configuration is unreadable or invalid; the message names the key."""


class IngestError(MailbotError):
    """A message could not be taken in."""


class TemporaryIngestError(IngestError):
    """The store is unavailable right now; the sender should retry (SMTP 451)."""


class StoreUnavailableError(MailbotError):
    """The database cannot be reached while deciding: the batch stays queued and is tried
    again later (never a reason to quarantine a message)."""


class ParseError(MailbotError):
    """A stored message could not be parsed or decided."""


class DeliveryError(MailbotError):
    """An outbound message was not accepted by the relay."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientDeliveryError(DeliveryError):
    """Try again later (4xx reply, connection trouble)."""


class PermanentDeliveryError(DeliveryError):
    """Never try again (5xx reply)."""
