"""The auto-reply rate limits' log lines, bounded: a burst cannot flood the warnings.

Every automatic reply a limit holds back is recorded in its message's decision (the
`rate_limit` note) and logged. Mail from one address in a loop, or thousands of forged
senders running into the total limit, would each make a WARNING line; operators alert on
those. So the first reply held back per limit (per address, or the total for all addresses)
within a window is logged at WARNING, saying that more follow at INFO, and the rest at
INFO: nothing disappears from the log, the warnings stay one per limit and hour.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

log = logging.getLogger("mailbot.actions")  # where these lines were logged before

ALL_ADDRESSES = ""
"""The key of the total limit (all addresses together)."""


class LimitWarnings:
    """Which limits have been warned about within the last `window` seconds (at most
    `size` addresses remembered, the oldest forgotten first)."""

    def __init__(self, window: float = 3600.0, size: int = 10_000) -> None:
        self._window = window
        self._size = size
        self._warned: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _first(self, key: str, now: float) -> bool:
        """Whether `key` was not warned about within the window (it is now)."""
        with self._lock:
            last = self._warned.get(key)
            if last is not None and now - last < self._window:
                return False
            self._warned[key] = now
            self._warned.move_to_end(key)
            while len(self._warned) > self._size:
                self._warned.popitem(last=False)
            return True

    def held(self, kind: str, recipient: str, why: str, *, per_address: bool,
             now: float | None = None) -> None:
        """Log an automatic reply of `kind` to `recipient` that a limit held back (`why`):
        the per-address limit (`per_address`) or the total one."""
        key = recipient.lower() if per_address else ALL_ADDRESSES
        if self._first(key, time.monotonic() if now is None else now):
            log.warning("auto-reply rate limit: no %s to %s (%s); more held back by this "
                        "limit within the hour are logged at INFO", kind, recipient, why)
        else:
            log.info("auto-reply rate limit: no %s to %s (%s)", kind, recipient, why)
