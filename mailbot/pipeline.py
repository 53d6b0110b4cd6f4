"""The stages one message goes through, the same in the daemon, in `replay` and in
`replay --dry-run`:

1. **decide** (`Decider.analyse`, or `analyse_many` for several): the limits on the raw
   bytes (:mod:`mailbot.ingest.limits`), parsing, the rules; a message over a limit is
   decided `quarantined` here;
2. **draft** (`Pipeline.draft`): a new ticket's year and deadline (the worker then numbers the
   batch's tickets);
3. **render** (`Pipeline.render`): the outcome handler's replies as bytes (without an
   automatic reply the worker foresees the rate limits hold back: `RenderJob.hold`), and
   the attachment files of mail that goes on an existing ticket (a new ticket's are
   written in stage 1, where the mail was parsed: see `Analysis.saved_attachments`);
4. **write**: the worker's transaction (:mod:`mailbot.worker`, :mod:`mailbot.handlers`).

Stages 1 and 3 run in the child processes of :mod:`mailbot.isolation` (or in this process
with `worker.processes = 0`); each child holds a `Pipeline` of its own without a store
(`Pipeline.isolated`). A dry run stops after
stage 2 and uses a `Pipeline` without a store (`Pipeline.offline`).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.actions import ReplyContext, TicketDraft, ticket_draft
from mailbot.attachments import AttachmentStore, FileAttachment, SavedAttachment
from mailbot.business_hours import BusinessCalendar
from mailbot.classify.decide import decide
from mailbot.classify.rules import LicenseRegistry, RuleContext, TicketIndex
from mailbot.config import TOKEN_SECRET_CREDENTIAL, Config, read_token_secret
from mailbot.domain import (
    Decision,
    DecisionKind,
    Mail,
    OutgoingMail,
    RuleResult,
    TicketInfo,
    TicketView,
    wire,
)
from mailbot.errors import StoreUnavailableError
from mailbot.handlers import HANDLERS, Registry, render_replies
from mailbot.ingest.limits import Violation, check_attachments, header_section
from mailbot.ingest.limits import check as check_limits
from mailbot.ingest.parse import parse, parse_with_tree
from mailbot.registry import DictRegistry
from mailbot.replies.conversation import (
    ATTACHMENTS_LIMIT,
    ConversationRenderer,
    attachments_in,
    attachments_of,
    within_limit,
)
from mailbot.replies.render import ReplyRenderer

if TYPE_CHECKING:
    from email.message import Message

    from mailbot.store import Store

log = logging.getLogger(__name__)

TOKEN_SECRET_SETTING = "reply-token-secret"


def token_secret(config: Config, store: Store) -> bytes:
    """The secret of the staff notices' reply tokens: the configured one (a systemd
    credential preferred, see `config.read_token_secret`), else, where
    `conversation.token_secret_from_store` allows it, one made at random and kept in the
    store (shared by every daemon on the database; logged as a warning)."""
    configured = read_token_secret(config.conversation)
    if configured:
        return configured
    log.warning("the reply-token secret is kept in the database: a copy of it (a backup) "
                "can mint staff reply addresses; give it as the systemd credential %r "
                "(conversation.token_secret_credential) instead", TOKEN_SECRET_CREDENTIAL)
    return store.secret(TOKEN_SECRET_SETTING)


def attachments_read_limit(config: Config) -> int:
    """Bytes of attachments read from a message: enough for a ticket's files and a staff
    reply's relay (each cuts its own limit with `within_limit`)."""
    return max(config.limits.ticket_attachment_bytes, ATTACHMENTS_LIMIT, 1)


def keep_attachments(config: Config, attached: Sequence[FileAttachment], budget: int | None
                     ) -> tuple[tuple[SavedAttachment, ...], tuple[SavedAttachment, ...]]:
    """Write a ticket's attachment files, in order, each that still fits `budget` (what the
    ticket may keep; None: the whole per-ticket limit). Returns (written, left out); what is
    left out is described (name, size, hash), checked before writing and never written."""
    files = AttachmentStore(config.path(config.store.attachments_dir))
    limit = config.limits.ticket_attachment_bytes
    budget = limit if budget is None else min(budget, limit)
    saved, skipped = files.save_within(
        ((name, ctype, payload) for name, ctype, payload, _ in attached), max(budget, 0))
    return tuple(saved), tuple(skipped)


def store_unavailable(exc: BaseException) -> bool:
    """`mailbot.store.store_unavailable`, imported only where SQLAlchemy already is: a
    decision process holds no store (and does not load SQLAlchemy), so no error of its can
    be the database's."""
    if "sqlalchemy" not in sys.modules:
        return False
    from mailbot.store import store_unavailable as unavailable

    return unavailable(exc)


def quarantine_decision(error: str) -> Decision:
    """The decision reported for a message that could not be decided (its last error line)."""
    lines = error.strip().splitlines() or ["unknown error"]
    return Decision(
        kind=DecisionKind.QUARANTINED,
        reasons=(RuleResult("quarantine", True, lines[-1][:300]),),
    )


class StoreTicketIndex:
    """The classify seam `TicketIndex`, answered by the store; `pending` ticket numbers
    (numbered for batches not yet written) exist too."""

    def __init__(self, store: Store, pending: frozenset[str] = frozenset()) -> None:
        self._store = store
        self._pending = pending

    def with_pending(self, pending: set[str]) -> StoreTicketIndex:
        """This index, with the ticket numbers `pending` counted as existing."""
        return StoreTicketIndex(self._store, frozenset(pending))

    def exists(self, ref: str) -> bool:
        return ref in self._pending or self._store.ticket_exists(ref)

    def get(self, ref: str) -> TicketInfo | None:
        return self._store.ticket_info(ref)

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        return self._store.ticket_for_message_ids(message_ids)


Question = tuple[str, "str | tuple[str, ...]"]
"""A question a decision asked about tickets: ("exists" | "get", ticket number) or
("by_message_ids", Message-IDs)."""


@wire
@dataclass(frozen=True, slots=True)
class Analysis:
    """A parsed and decided message, or the traceback of why it could not be.

    `provisional`: decided without the store's answer to a question about tickets (in a
    decision process, `UnansweredTickets`), each taken as "no such ticket"; `questions` are
    those questions. The worker asks the store, and decides again only where it knows a
    ticket (`answers_unchanged`)."""

    mail: Mail | None
    decision: Decision | None
    error: str | None = None
    provisional: bool = False
    questions: tuple[Question, ...] = ()
    # The attachments of a mail going on an existing ticket, read from the tree the decision
    # was made on (None: not read here; rendering reads them from the raw message).
    attachments: tuple[FileAttachment, ...] | None = None
    # The attachment files of a mail that opens a ticket, written when it was decided (its
    # budget is the whole per-ticket limit, known without the store), and those left out
    # over that limit; None: not written here. Only their names and hashes cross to the
    # worker, not their bytes (on the generated corpus 58 MB of 95 MB of mail).
    saved_attachments: tuple[SavedAttachment, ...] | None = None
    skipped_attachments: tuple[SavedAttachment, ...] = ()


STAGED_BYTES = 1 << 20
"""Raw bytes of the messages `Decider.analyse_many` parses before it decides them."""


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A message parsed and within the limits, not decided yet (`Decider.analyse_many`)."""

    mail: Mail
    tree: Message | None  # kept only where the mail has attachments to read


def staged(raws: Sequence[bytes], limit: int) -> Iterator[Sequence[bytes]]:
    """`raws` in consecutive groups of at most `limit` bytes each (a larger message alone)."""
    start, size = 0, 0
    for i, raw in enumerate(raws):
        if i > start and size + len(raw) > limit:
            yield raws[start:i]
            start, size = i, 0
        size += len(raw)
    if start < len(raws):
        yield raws[start:]


class UnansweredTickets:
    """The ticket index of a decision process, which holds no database: every question is
    answered "no such ticket" and remembered, so that decision is marked provisional."""

    def __init__(self) -> None:
        self.questions: list[Question] = []

    def exists(self, ref: str) -> bool:
        self.questions.append(("exists", ref))
        return False

    def get(self, ref: str) -> TicketInfo | None:
        self.questions.append(("get", ref))
        return None

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        self.questions.append(("by_message_ids", message_ids))
        return None


def answers_unchanged(questions: tuple[Question, ...], tickets: TicketIndex) -> bool:
    """Whether `tickets` answers each of `questions` "no such ticket", as the decision
    process did: the decision made there is then the one `tickets` would give (the rules
    are deterministic in their answers), and need not be made again."""
    for kind, arg in questions:
        if kind == "exists":
            assert isinstance(arg, str)
            if tickets.exists(arg):
                return False
        elif kind == "get":
            assert isinstance(arg, str)
            if tickets.get(arg) is not None:
                return False
        elif kind == "by_message_ids":
            assert isinstance(arg, tuple)
            if tickets.by_message_ids(arg) is not None:
                return False
        else:
            return False
    return True


@wire
@dataclass(frozen=True, slots=True)
class RenderJob:
    """A decided message whose replies are to be rendered (in a child process)."""

    inbound_id: int
    mail: Mail
    decision: Decision
    ticket: TicketDraft | None
    now: datetime
    # Only for mail that goes on a ticket whose files are not written yet: its attachments
    # as the decision process read them, else the raw message to read them from.
    raw: bytes | None = None
    attachments: tuple[FileAttachment, ...] | None = None
    # Bytes of attachments the ticket may still keep (None: the whole per-ticket limit).
    attachment_budget: int | None = None
    # The automatic reply is not rendered: the rate limits will hold it back (`RateForecast`).
    hold: bool = False


@wire
@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered replies of one message, or the traceback of why not."""

    inbound_id: int
    replies: tuple[OutgoingMail, ...]
    error: str | None = None
    attachments: tuple[SavedAttachment, ...] = ()
    # Over the ticket's budget: described, never written.
    skipped_attachments: tuple[SavedAttachment, ...] = ()


class Decider:
    """Stage 1: checks the limits, parses and decides raw messages; caches the license
    registry of its store. Without a store it decides against the `registry` it is given and
    trusts a well-formed ticket reference (nothing to check it against)."""

    REGISTRY_CHECK_SECONDS = 5.0

    def __init__(self, config: Config, store: Store | None,
                 registry: LicenseRegistry | None = None,
                 tickets: UnansweredTickets | None = None,
                 attachment_kinds: frozenset[DecisionKind] = frozenset(),
                 writing_kinds: frozenset[DecisionKind] = frozenset()) -> None:
        """`attachment_kinds`: the decisions whose mail goes on a ticket, whose attachments
        are read from the parsed tree (`Analysis.attachments`); of those, `writing_kinds`
        (decisions that open a ticket) have their files written here at once
        (`Analysis.saved_attachments`)."""
        self.config = config
        self.attachment_kinds = attachment_kinds
        self.writing_kinds = writing_kinds
        self.store = store
        self.store_tickets = StoreTicketIndex(store) if store else None
        self.tickets: TicketIndex | None = self.store_tickets or tickets
        self._unanswered = tickets
        self._fixed_registry = registry
        self._registry = DictRegistry({})
        self._registry_version: object = None
        self._registry_checked = 0.0
        self._secret: bytes | None = None
        self._previous: tuple[bytes, ...] | None = None
        self.limits = config.limits

    def use_registry(self, registry: LicenseRegistry) -> None:
        """Decide against `registry` from now on (a decision process is given its registry
        after it has started)."""
        self._fixed_registry = registry

    def use_token_secret(self, secret: bytes, previous: tuple[bytes, ...] = ()) -> None:
        """Use this reply-token secret and the rotation's previous ones (a child gets the
        parent's, not its sources: it starts without secret variables)."""
        self._secret = secret
        self._previous = previous

    def token_secret(self) -> bytes:
        """The reply-token secret (without a store: the configured one or none)."""
        if self._secret is None:
            if self.store is None:
                self._secret = read_token_secret(self.config.conversation) or b""
            else:
                self._secret = token_secret(self.config, self.store)
        return self._secret

    def context(self, now: datetime, tickets: TicketIndex | None = None) -> RuleContext:
        """The rules' context for deciding at `now`."""
        return RuleContext.from_config(self.config, self.registry(), now,
                                       tickets or self.tickets, self.token_secret(),
                                       self._previous)

    def registry(self, *, refresh: bool = True, max_age: float | None = None) -> LicenseRegistry:
        """The license registry, reloaded when the table changed (checked when the last check
        is older than `max_age` seconds, by default every few seconds)."""
        if self._fixed_registry is not None or self.store is None:
            return self._fixed_registry or self._registry
        mono = time.monotonic()
        age = self.REGISTRY_CHECK_SECONDS if max_age is None else max_age
        stale = self._registry_version is None or mono - self._registry_checked >= age
        if refresh and stale:
            version = self.store.license_version()
            if version != self._registry_version:
                self._registry = DictRegistry(self.store.license_snapshot())
                self._registry_version = version
            self._registry_checked = mono
        return self._registry

    def analyse(self, raw: bytes, now: datetime) -> Analysis:
        """Check the limits, parse and decide; never raises (the error comes back with the
        traceback)."""
        return self._decided(self._parsed(raw, now), now)

    def analyse_many(self, raws: Sequence[bytes], now: datetime) -> list[Analysis]:
        """`analyse` of each message, stage by stage: up to `STAGED_BYTES` of them parsed,
        then those decided, so each stage's code and tables stay in the CPU's caches from one
        message to the next (~4 % less CPU than alternating, in groups of 16 generated
        mails). A message larger than that goes alone: few parsed messages are held at once."""
        out: list[Analysis] = []
        for group in staged(raws, STAGED_BYTES):
            parsed = [self._parsed(raw, now) for raw in group]
            out += [self._decided(p, now) for p in parsed]
        return out

    def _parsed(self, raw: bytes, now: datetime) -> _Parsed | Analysis:
        """The limits checked and the message parsed (the tree kept where it has attachments
        to read); a message over a limit or that breaks the parser is analysed already."""
        mail: Mail | None = None
        try:
            violation = check_limits(raw, self.limits)
            if violation is not None:
                return self.over_limit(raw, violation, now)
            mail, tree = parse_with_tree(raw)
            violation = check_attachments(
                [(a.filename, a.size) for a in mail.attachments], self.limits)
            if violation is not None:
                return self.over_limit(raw, violation, now, mail)
            # With no attachments there is nothing to read from the tree: not held.
            return _Parsed(mail, tree if mail.attachments else None)
        except Exception as exc:  # noqa: BLE001 - any parser/rule failure is contained here
            return self._failed(exc, mail)

    def _decided(self, parsed: _Parsed | Analysis, now: datetime) -> Analysis:
        """A parsed message decided, and the attachments of one going on a ticket read."""
        if isinstance(parsed, Analysis):
            return parsed
        mail, tree = parsed.mail, parsed.tree
        try:
            if self._unanswered is not None:
                self._unanswered.questions = []
            decision = decide(mail, self.context(now))
            files = saved = None
            skipped: tuple[SavedAttachment, ...] = ()
            if tree is not None and decision.kind in self.writing_kinds:
                # A provisional decision the worker changes leaves these files to orphan
                # removal; one it keeps finds them written (`AttachmentStore.save`).
                saved, skipped = keep_attachments(self.config, attachments_in(
                    tree, attachments_read_limit(self.config)), None)
            elif tree is not None and decision.kind in self.attachment_kinds:
                files = tuple(attachments_in(tree, attachments_read_limit(self.config)))
            if self._unanswered is not None and self._unanswered.questions:
                return Analysis(mail, decision, provisional=True,
                                questions=tuple(self._unanswered.questions), attachments=files,
                                saved_attachments=saved, skipped_attachments=skipped)
            return Analysis(mail, decision, attachments=files, saved_attachments=saved,
                            skipped_attachments=skipped)
        except Exception as exc:  # noqa: BLE001 - any rule failure is contained here
            return self._failed(exc, mail)

    @staticmethod
    def _failed(exc: Exception, mail: Mail | None) -> Analysis:
        """The analysis of a message whose parse or rules raised `exc` (call it while
        handling `exc`: the traceback is kept)."""
        if store_unavailable(exc):  # the store's fault, not the message's: retry later
            raise StoreUnavailableError(f"store unavailable while deciding: {exc}") from None
        return Analysis(mail, None, traceback.format_exc())

    def over_limit(self, raw: bytes, violation: Violation, now: datetime,
                   mail: Mail | None = None) -> Analysis:
        """A message over a limit: quarantined with the reason. The sender of one that is
        merely too large is told the limit, unless the mail is automatic (the automatic-mail
        rules run on its headers alone)."""
        reasons = [RuleResult("limits", True, str(violation))]
        flags = {"over_limit", violation.code}
        language: str = self.config.replies.default_language
        if violation.answerable:
            if mail is None:
                head = header_section(raw, self.limits.header_bytes) or b""
                mail = parse(head + b"\r\n\r\n")
            probe = decide(mail, self.context(now))
            language = probe.language
            if probe.kind is DecisionKind.IGNORE_AUTO:
                reasons += [r for r in probe.reasons if r.hit]
            else:
                flags.add("tell_sender")
        decision = Decision(kind=DecisionKind.QUARANTINED, reasons=tuple(reasons),
                            language=language, flags=frozenset(flags))
        return Analysis(mail, decision)


class Pipeline:
    """Stages 1–3 for one process (see the module head); the worker adds stage 4."""

    def __init__(self, config: Config, store: Store | None, *,
                 registry: LicenseRegistry | None = None,
                 tickets: UnansweredTickets | None = None,
                 handlers: Registry = HANDLERS, writes_files: bool = True) -> None:
        """`writes_files`: False for a pipeline that must write nothing (a dry run)."""
        self.config = config
        self.decider = Decider(
            config, store, registry, tickets,
            frozenset(kind for kind in DecisionKind if handlers[kind].on_ticket),
            frozenset(kind for kind in DecisionKind
                      if writes_files and handlers[kind].on_ticket and handlers[kind].opens_ticket))
        self.handlers = handlers
        self.calendar = BusinessCalendar(config.calendar)
        self._replies: ReplyContext | None = None

    @classmethod
    def offline(cls, config: Config, registry: LicenseRegistry) -> Pipeline:
        """A pipeline without a store (`replay --dry-run`): decides against `registry`."""
        return cls(config, None, registry=registry, writes_files=False)

    @classmethod
    def isolated(cls, config: Config, registry: LicenseRegistry) -> Pipeline:
        """A decision process's pipeline: no store; decides against `registry`, and a
        decision that asked about tickets comes back provisional."""
        return cls(config, None, registry=registry, tickets=UnansweredTickets())

    def analyse(self, raw: bytes, now: datetime) -> Analysis:
        """Stage 1 (see `Decider.analyse`)."""
        return self.decider.analyse(raw, now)

    def draft(self, decision: Decision, mail: Mail, received_at: datetime
              ) -> tuple[int, TicketView] | None:
        """Stage 2: the year and view of the ticket `decision` opens (None if it opens none)."""
        if not self.handlers[decision.kind].opens_ticket:
            return None
        return ticket_draft(decision, mail, received_at, self.calendar)

    def needs_attachments(self, mail: Mail, decision: Decision) -> bool:
        """Whether rendering needs the mail's attachments (kept on the ticket, and a staff
        reply's relayed): those of a mail that goes on a ticket. The raw message is sent
        along where the decision process did not read them (`Analysis.attachments`)."""
        return self.handlers[decision.kind].on_ticket and bool(mail.attachments)

    def reply_context(self) -> ReplyContext:
        """What rendering replies needs (the templates compiled at the first use)."""
        if self._replies is None:
            sched = self.config.schedule
            secret = self.decider.token_secret()
            self._replies = ReplyContext(
                self.config.mailbox, ReplyRenderer(self.config),
                ConversationRenderer(self.config, secret),
                (*sched.emergency_notify, *((sched.sms_gateway,) if sched.sms_gateway else ())))
        return self._replies

    def render(self, job: RenderJob) -> Rendered:
        """Stage 3: the replies of one decided message and its attachment files; never raises
        (errors come back as text)."""
        ctx = self.reply_context()
        try:
            attached: tuple[FileAttachment, ...] = ()
            if self.needs_attachments(job.mail, job.decision):
                attached = job.attachments if job.attachments is not None else tuple(
                    attachments_of(job.raw, attachments_read_limit(self.config))
                    if job.raw is not None else ())
            replies = render_replies(ctx, inbound_id=job.inbound_id, mail=job.mail,
                                     decision=job.decision, ticket=job.ticket, now=job.now,
                                     attachments=within_limit(attached, ATTACHMENTS_LIMIT),
                                     handlers=self.handlers, hold=job.hold)
            saved: tuple[SavedAttachment, ...] = ()
            skipped: tuple[SavedAttachment, ...] = ()
            if attached:
                saved, skipped = keep_attachments(self.config, attached, job.attachment_budget)
            return Rendered(job.inbound_id, replies, attachments=saved,
                            skipped_attachments=skipped)
        except Exception as exc:  # noqa: BLE001 - a template or header bug: quarantine it
            if store_unavailable(exc):
                raise StoreUnavailableError(f"store unavailable while rendering: {exc}") from None
            return Rendered(job.inbound_id, (), traceback.format_exc())
