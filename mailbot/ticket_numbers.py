"""Ticket numbers reserved in blocks, as a database sequence's cache reserves values.

A ticket number (`T-2026-000123`) is never handed out twice: the store's counter per year
(`Store.allocate_ticket_numbers`) reserves numbers and commits at once, before the replies
that name them are rendered. Reserving them batch by batch cost the worker a write
transaction per batch, waiting for SQLite's one write lock each time. `TicketNumbers`
reserves a block and hands the numbers out from it in order:

- a clean stop gives the unused ones back (`give_back`) where nobody reserved after them:
  with one daemon on the database no number is skipped;
- a crash leaves them unused: a gap of at most one block, as a sequence's cache leaves;
- several daemons on one database (PostgreSQL) reserve only what a batch may still need
  (`block` 0), so that their tickets' numbers stay near the order in which mail arrived.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Protocol

log = logging.getLogger(__name__)

SQLITE_BLOCK = 64
"""Numbers reserved at once on SQLite (one daemon per database: the order holds)."""


class NumberCounter(Protocol):
    """The store's side (`mailbot.store.Store`)."""

    def allocate_ticket_numbers(self, year: int, count: int) -> list[tuple[int, str]]: ...

    def return_ticket_numbers(self, year: int, first: int, last: int) -> bool: ...


class TicketNumbers:
    """Reserved, not yet used ticket numbers per year (see the module docstring)."""

    def __init__(self, counter: NumberCounter, block: int) -> None:
        self._counter = counter
        self._block = block
        self._free: dict[int, deque[tuple[int, str]]] = {}

    def take(self, year: int, wanted: int = 1) -> tuple[int, str]:
        """The next number of `year` as (sequence, number); when none is left, a block is
        reserved first: `block` numbers, or `wanted` (what the batch may still need) if
        that is more."""
        free = self._free.get(year)
        if not free:
            free = self._free[year] = deque(
                self._counter.allocate_ticket_numbers(year, max(wanted, self._block, 1)))
        return free.popleft()

    def give_back(self) -> None:
        """Return the unused numbers (a clean stop). Those that cannot be returned (another
        writer reserved numbers after them) stay a gap."""
        free, self._free = self._free, {}
        for year, numbers in free.items():
            if numbers and not self._counter.return_ticket_numbers(
                    year, numbers[0][0], numbers[-1][0]):
                log.info("ticket numbers %s to %s were reserved and not used: another writer "
                         "reserved numbers after them, so they stay unused",
                         numbers[0][1], numbers[-1][1])
