"""What an outcome handler is, what it is given, and the registry that is checked complete.

A handler owns everything one kind of decision does: the replies it queues (rendered in the
render stage, possibly in a child process: pure), and the rows it writes through the
worker's `Transaction`. The shared tail (attachments on the ticket, the outbox with its rate
limits, the decision record) is run for every handler by :mod:`mailbot.handlers`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from mailbot.actions import ActionSettings, HeldReply, ReplyContext, TicketDraft
from mailbot.attachments import FileAttachment
from mailbot.classify.commands import latest_reply
from mailbot.domain import (
    Decision,
    DecisionKind,
    Mail,
    OutgoingMail,
    RuleResult,
    TicketInfo,
    TicketView,
)
from mailbot.errors import MailbotError

if TYPE_CHECKING:
    from mailbot.store import LockedTicket, Transaction


@dataclass(frozen=True, slots=True)
class ReplyJob:
    """What rendering the replies of one decided message is given."""

    inbound_id: int
    mail: Mail
    decision: Decision
    ticket: TicketDraft | None
    now: datetime
    attachments: tuple[FileAttachment, ...]  # the inbound message's: only to pass them on
    body: str  # the whole readable text (HTML converted once)
    suspicious: str  # why a mail claiming to be a staff reply is not trusted ("" if it is)

    @property
    def newest(self) -> str:
        """The text without the quoted earlier mail (read only by the few replies that
        show it: the cost of finding the quote is not paid for every message)."""
        return latest_reply(self.body) or self.body


@dataclass(frozen=True, slots=True)
class AutoReply:
    """A handler's automatic reply to the sender (rate-limited: `mailbot.actions`), before it
    is rendered: what `ReplyRenderer.render` is given besides the message and its decision."""

    purpose: str
    template: str
    message_id: str
    ticket: TicketView | None = None


@dataclass(frozen=True, slots=True)
class Act:
    """What writing one decided message is given (inside the worker's transaction)."""

    inbound_id: int
    mail: Mail
    decision: Decision
    ticket: TicketDraft | None
    replies: tuple[OutgoingMail, ...]
    now: datetime
    settings: ActionSettings


@dataclass(frozen=True, slots=True)
class Effect:
    """What a handler's writes did: the ticket the mail is on (its attachments and replies
    go there), the ticket's number when the handler opened it (else the decision's
    reference is reported) and deadline, and notes for the decision record."""

    ticket_id: int | None = None
    ticket_number: str | None = None
    deadline: datetime | None = None
    notes: tuple[RuleResult, ...] = field(default_factory=tuple)


class Handler:
    """What one outcome does; subclass it once per outcome and register it in
    :data:`mailbot.handlers.HANDLERS`.

    `kinds` are the decision kinds it handles. `opens_ticket`: the batch allocates a ticket
    number for it and `ReplyJob.ticket`/`Act.ticket` carry it. `on_ticket`: the mail goes on
    a ticket, so its attachments are kept there. An outcome whose message is quarantined
    rather than recorded as decided subclasses `QuarantiningHandler`.
    """

    kinds: ClassVar[frozenset[DecisionKind]] = frozenset()
    opens_ticket: ClassVar[bool] = False
    on_ticket: ClassVar[bool] = False

    def automatic(self, inbound_id: int, decision: Decision, ticket: TicketDraft | None,
                  domain: str) -> AutoReply | None:
        """The automatic reply to the sender this outcome sends, if any (none by default),
        described without rendering it (`domain`: of its Message-ID). It is rendered before
        `replies`, unless the worker foresees that the rate limits hold it back."""
        return None

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        """The other mails this outcome sends (pure: templates and the `email` package
        only)."""
        return []

    def write(self, tx: Transaction, act: Act) -> Effect:
        """The rows this outcome writes besides the shared ones (none by default)."""
        return Effect()


class QuarantiningHandler(Handler, ABC):
    """An outcome whose message is parked in quarantine instead of recorded as decided."""

    @abstractmethod
    def quarantine(self, tx: Transaction, *, inbound_id: int, decision: Decision,
                   replies: tuple[OutgoingMail, ...], now: datetime,
                   settings: ActionSettings, held: tuple[HeldReply, ...] = ()) -> str:
        """Park the message (and queue `replies`, and `held` as `enqueue_replies` does);
        returns the reason."""


class ExistingTicketHandler(Handler, ABC):
    """An outcome about a ticket that exists (the decision's `ticket` and `ticket_ref`):
    nothing is sent or written when the ticket is not found. Subclasses say what is sent
    (`ticket_replies`) and how the ticket changes (`update`)."""

    on_ticket = True

    def replies(self, ctx: ReplyContext, job: ReplyJob) -> list[OutgoingMail]:
        if job.decision.ticket is None:
            return []
        return self.ticket_replies(ctx, job, job.decision.ticket)

    def ticket_replies(self, ctx: ReplyContext, job: ReplyJob, ticket: TicketInfo
                       ) -> list[OutgoingMail]:
        """The mails sent about `ticket` (pure, like `replies`)."""
        return []

    def write(self, tx: Transaction, act: Act) -> Effect:
        existing = tx.find_ticket(act.decision.ticket_ref or "")
        if existing is None:
            return Effect()
        return Effect(existing.id, deadline=self.update(tx, existing, act))

    @abstractmethod
    def update(self, tx: Transaction, ticket: LockedTicket, act: Act) -> datetime:
        """Record the message on `ticket`; returns the ticket's deadline now."""


class RegistryError(MailbotError):
    """The handlers do not cover every decision kind exactly once."""


class Registry(Mapping[DecisionKind, Handler]):
    """The handler of every decision kind: checked complete when it is built.

    Raises:
        RegistryError: a kind has no handler, or two (the kinds are named).
    """

    def __init__(self, handlers: Iterable[Handler],
                 kinds: Iterable[DecisionKind] = DecisionKind) -> None:
        table: dict[DecisionKind, Handler] = {}
        for handler in handlers:
            if not handler.kinds:
                raise RegistryError(f"{type(handler).__name__} handles no decision kind")
            for kind in handler.kinds:
                if kind in table:
                    raise RegistryError(
                        f"decision kind {kind.value!r} has two handlers: "
                        f"{type(table[kind]).__name__} and {type(handler).__name__}")
                table[kind] = handler
        self._kinds = tuple(kinds)
        missing = [k.value for k in self._kinds if k not in table]
        if missing:
            raise RegistryError(f"no handler for decision kind {', '.join(missing)}: "
                                "add a module to mailbot/handlers/ and register it")
        self._table = table

    def __getitem__(self, kind: DecisionKind) -> Handler:
        return self._table[kind]

    def __iter__(self) -> Iterator[DecisionKind]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def replacing(self, handler: Handler) -> Registry:
        """This registry with `handler` for its kinds instead of their handlers (tests,
        extensions); the other kinds keep theirs."""
        new = Registry.__new__(Registry)
        new._kinds = self._kinds
        new._table = {**self._table, **{kind: handler for kind in handler.kinds}}
        return new
