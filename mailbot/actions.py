"""Helpers shared by the outcome handlers (:mod:`mailbot.handlers`): the ticket draft, what
rendering and writing need from the config, the outbox's rate limits.

Acting on a decision runs in three steps so the expensive part can run in a child process:

1. `ticket_draft` (pure): for a new ticket, its year and deadline in the business calendar.
2. rendering (pure: `handlers.render_replies`): the replies as bytes — the ticket's number is
   known by then, because the worker numbers a whole batch's tickets first, from numbers it
   reserved ahead (`mailbot.ticket_numbers`, like a database sequence's cache: never reused;
   a crash leaves the reserved and unused ones a gap).
3. writing (`handlers.write_decision`), inside the worker's transaction: ticket, ticket event,
   outbox rows, the decision record and the inbound row's state commit together or not at all.

Automatic replies the rate limits will hold back at step 3 are foreseen before step 2
(`RateForecast`) and not rendered; step 3 checks them as if they were (`HeldReply`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config, MailboxConfig
from mailbot.domain import Decision, Mail, OutgoingMail, Priority, TicketView, wire
from mailbot.limit_log import LimitWarnings
from mailbot.replies.conversation import ConversationRenderer
from mailbot.replies.render import ReplyRenderer

if TYPE_CHECKING:
    from mailbot.store import Transaction

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Outcome:
    """What was done for one message."""

    inbound_id: int
    decision: Decision
    ticket_number: str | None = None
    deadline: datetime | None = None
    replies: int = 0
    mail: Mail | None = None


@wire
@dataclass(frozen=True, slots=True)
class TicketDraft:
    """A ticket about to be opened: its number (once allocated) and what the reply says."""

    year: int
    seq: int
    view: TicketView


def ticket_draft(
    decision: Decision, mail: Mail, received_at: datetime, calendar: BusinessCalendar
) -> tuple[int, TicketView]:
    """The year (for numbering) and the view of the ticket `decision` opens; the number in the
    view is a placeholder until `with_number`."""
    priority = decision.priority or Priority.NORMAL
    deadline = calendar.deadline(received_at, emergency=priority is Priority.EMERGENCY)
    view = TicketView(
        number="",
        subject=mail.subject[:1000],
        priority=priority,
        opened_at=received_at,
        deadline=deadline,
        customer_email=mail.from_addr or "",
        license=decision.license,
    )
    return received_at.astimezone(calendar.zone).year, view


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What rendering replies needs (built once per process)."""

    mailbox: MailboxConfig
    renderer: ReplyRenderer
    conversation: ConversationRenderer
    # Told of every emergency ticket at once (schedule.emergency_notify and sms_gateway).
    emergency_recipients: tuple[str, ...] = ()


def suspicion(decision: Decision) -> str:
    """Why a mail that claims to be a staff reply is not trusted (for the staff's warning)."""
    for r in decision.reasons:
        if r.rule == "staff_reply" and r.hit:
            return r.detail
    return "unverified sender"


def reasons_json(decision: Decision) -> list[dict[str, object]]:
    """The decision's audit trail as the decision record stores it."""
    return [{"rule": r.rule, "hit": r.hit, "detail": r.detail} for r in decision.reasons]


@dataclass(frozen=True, slots=True)
class ActionSettings:
    """What acting on decisions needs besides the transaction (from the config)."""

    calendar: BusinessCalendar
    auto_replies_per_hour: int
    ticket_attachment_bytes: int
    unsubscribe_address: str
    news_bounce_limit: int
    auto_replies_total_per_hour: int = 200

    @classmethod
    def from_config(cls, config: Config, calendar: BusinessCalendar) -> ActionSettings:
        return cls(calendar, config.conversation.auto_replies_per_hour,
                   config.limits.ticket_attachment_bytes, config.mailbox.unsubscribe_address,
                   config.news.bounce_limit, config.conversation.auto_replies_total_per_hour)


@dataclass(frozen=True, slots=True)
class HeldReply:
    """An automatic reply left unrendered because the rate limits were foreseen to hold it
    back (`RateForecast`): what the check when its batch is written and the decision
    record's note need, and how to render it after all if that check lets it through."""

    purpose: str
    kind: str
    rcpt_to: tuple[str, ...]
    render: Callable[[], OutgoingMail | None]
    auto: ClassVar[bool] = True


def enqueue_replies(tx: Transaction, replies: tuple[OutgoingMail, ...], *, ticket_id: int | None,
                    inbound_id: int, now: datetime, settings: ActionSettings,
                    held: tuple[HeldReply, ...] = ()
                    ) -> tuple[int, list[tuple[OutgoingMail | HeldReply, str]]]:
    """Queue the replies of one message; automatic ones only within the rate limits (per
    sender, and for all senders together). `held` are automatic replies not rendered because
    a limit was foreseen to hold them back: checked first (where they were rendered, they
    come first), and rendered now if no limit holds them back after all. Returns how many
    were queued and those a limit held back, each with the limit reached."""
    queued = 0
    limited: list[tuple[OutgoingMail | HeldReply, str]] = []
    every: tuple[OutgoingMail | HeldReply, ...] = (*held, *replies)
    for out in every:
        reached = rate_limit_reached(tx, out, now, settings) if out.auto else None
        if reached is not None:
            tx.after_commit(partial(LIMIT_WARNINGS.held, out.kind,
                                    out.rcpt_to[0] if out.rcpt_to else "-", reached.text,
                                    per_address=reached.per_address))
            limited.append((out, reached.text))
            continue
        if isinstance(out, HeldReply):
            log.info("auto-reply rate limit: %s to %s allowed after all; rendered now",
                     out.kind, out.rcpt_to[0])
            rendered = out.render()
            if rendered is None:
                continue
            out = rendered
        queued += tx.enqueue(out, ticket_id=ticket_id, inbound_id=inbound_id, now=now)
    return queued, limited


RATE_WINDOW = timedelta(hours=1)
"""The auto-reply rate limits count the automatic replies queued within this long."""

LIMIT_WARNINGS = LimitWarnings(RATE_WINDOW.total_seconds())
"""This process's log of replies held back (one WARNING per limit and window)."""


def read_outbox_ahead(tx: Transaction, replies: Iterable[OutgoingMail | HeldReply],
                      now: datetime) -> None:
    """Read in one go what `enqueue_replies` will ask about `replies` (a whole batch's, all
    queued at `now`): whether each is queued already, and the counts of the rate limits."""
    replies = list(replies)
    tx.read_outbox([out.purpose for out in replies],
                   [out.rcpt_to[0] for out in replies if out.auto and out.rcpt_to],
                   now - RATE_WINDOW)


def over_rate_limit(tx: Transaction, out: OutgoingMail | HeldReply, now: datetime,
                    limit: int) -> bool:
    """RFC 3834 §2: at most `limit` automatic replies to one address per hour."""
    if not out.rcpt_to:
        return False
    return tx.auto_replies_since(out.rcpt_to[0], now - RATE_WINDOW) >= limit


class LimitReached(NamedTuple):
    """A rate limit that holds an automatic reply back: as the decision records it, and
    whether it is the per-address limit (else the total)."""

    text: str
    per_address: bool


def rate_limit_reached(tx: Transaction, out: OutgoingMail | HeldReply, now: datetime,
                       settings: ActionSettings) -> LimitReached | None:
    """Which limit holds back the automatic reply `out`, if any: `auto_replies_per_hour` to
    its address, or `auto_replies_total_per_hour` to everyone (mail with forged senders, each
    under the per-address limit, must not make mailbot a reflector of its text)."""
    if over_rate_limit(tx, out, now, settings.auto_replies_per_hour):
        return LimitReached(f"{settings.auto_replies_per_hour} per hour to this address "
                            "reached", True)
    total = settings.auto_replies_total_per_hour
    if tx.auto_replies_total_since(now - RATE_WINDOW) >= total:
        return LimitReached(f"{total} per hour to all addresses reached", False)
    return None


class RateForecast:
    """Foresees, when a batch is prepared, which of its automatic replies the rate limits
    will hold back when it is written, so they need not be rendered (the worker's
    `prepare`). Batches are written in the order they are prepared, each checking the limits
    at its own `now` (`enqueue_replies`), so the count a reply will meet is what the store
    holds now within that window, plus the replies planned (rendered) for the batches
    prepared before it and not yet written, plus those earlier in its own batch. A forecast
    can still be wrong (a batch fails, a row is deleted, a reply turns out a duplicate):
    the check when the batch is written stays the authority, and a held reply it lets
    through is rendered then (`HeldReply`)."""

    def __init__(self, settings: ActionSettings) -> None:
        self.settings = settings
        # Per batch not yet written: its planned automatic replies (address, queued at).
        self._planned: dict[int, list[tuple[str, datetime]]] = {}
        self._batches = 0
        # The total the last batch written counted (window start, replies), see `seen_total`.
        self._total: tuple[datetime, int] | None = None

    def seen_total(self, since: datetime, total: int) -> None:
        """A batch was written: `total` automatic replies (its own included) were queued
        since `since`."""
        self._total = (since, total)

    def total_may_hold(self, now: datetime, planned: int) -> bool:
        """Whether the total limit may hold back one of `planned` more automatic replies in
        a batch written at `now`. False where the total the last batch written counted (an
        older window holds at least the replies of a newer one), plus the replies planned
        since, stays below the limit: then the store's total need not be read (a scan). Mail
        another daemon queued meanwhile is not seen: a reply may then be rendered in vain,
        never held wrongly."""
        since = now - RATE_WINDOW
        if self._total is None or self._total[0] > since:
            return True
        pending = sum(at >= since for planned_ in self._planned.values() for _, at in planned_)
        return self._total[1] + pending + planned >= self.settings.auto_replies_total_per_hour

    def hold_back(self, addresses: Sequence[str | None], now: datetime,
                  counts: Mapping[str, int], total: int) -> tuple[int, list[bool]]:
        """For a batch to be written at `now` whose messages send an automatic reply to
        `addresses` (lowercase; None: no automatic reply): which of them a limit will hold
        back, given the store's `counts` per address and `total` within the window ending
        at `now`. Returns the batch's key for `written` and a flag per message."""
        since = now - RATE_WINDOW
        per = {a: counts.get(a, 0) for a in addresses if a is not None}
        for planned in self._planned.values():
            for earlier, at in planned:
                if at >= since:
                    total += 1
                    if earlier in per:
                        per[earlier] += 1
        flags: list[bool] = []
        mine: list[tuple[str, datetime]] = []
        for address in addresses:
            if address is None:
                flags.append(False)
            elif (per[address] >= self.settings.auto_replies_per_hour
                  or total >= self.settings.auto_replies_total_per_hour):
                flags.append(True)
            else:
                flags.append(False)
                per[address] += 1
                total += 1
                mine.append((address, now))
        self._batches += 1
        self._planned[self._batches] = mine
        return self._batches, flags

    def written(self, batch: int) -> None:
        """The batch `batch` is written (or given up): its replies are the store's now."""
        self._planned.pop(batch, None)

    def clear(self) -> None:
        """Every batch not yet written was given up."""
        self._planned.clear()
