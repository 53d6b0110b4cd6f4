"""Logging set up once at start: stderr (journald), %-style, with the current message key.

`message_key` is a contextvar set by the worker and intake; a filter copies it onto every
record so that one grep finds everything that happened to one message. The
`mailbot.decision` logger writes one line per decided message (Mailman's `vette`).
"""

from __future__ import annotations

import contextvars
import logging
import sys

message_key: contextvars.ContextVar[str] = contextvars.ContextVar("message_key", default="-")

decision_log = logging.getLogger("mailbot.decision")


class _KeyFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.message_key = message_key.get()
        return True


def setup(level: str | int = "INFO") -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    if any(getattr(h, "_mailbot", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._mailbot = True  # type: ignore[attr-defined]
    handler.addFilter(_KeyFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(message_key)s] %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that narrate every connection or migration step at INFO.
    for noisy in ("alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
