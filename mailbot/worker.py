"""One message through the stages: parse → decide → act. The only caller of classify and
of the reply renderer.

`Decider` parses and decides (pure work plus two read-only lookups: the license registry and
whether a ticket number exists); it runs in child processes (:mod:`mailbot.isolation`) or, with
`worker.processes = 0`, in this one. `Worker` applies each decision in one transaction.

A message that breaks parsing or deciding is quarantined with its traceback (Mailman's
shunt queue) and the worker goes on with the next one; `mailbot quarantine retry` puts it
back after a fix.

A claimed batch is kept by a heartbeat (`worker.lease_seconds`, renewed every third) while it
is decided; its writes are fenced by the claim's token, so a batch whose claim was lost
(another daemon took the rows over) is dropped with a WARNING instead of written.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


from mailbot import metrics
from mailbot.actions import (
    ActionSettings,
    Outcome,
    ReplyContext,
    TicketDraft,
    render_replies,
    ticket_draft,
    write_decision,
    write_over_limit,
)
from mailbot.attachments import AttachmentStore, SavedAttachment
from mailbot.claims import Heartbeat, renew_interval
from mailbot.business_hours import BusinessCalendar
from mailbot.classify.decide import decide
from mailbot.classify.rules import RuleContext, TicketIndex
from mailbot.config import TOKEN_SECRET_CREDENTIAL, Config, read_token_secret
from mailbot.domain import Decision, DecisionKind, Mail, RuleResult, TicketInfo, TicketView
from mailbot.ingest.limits import Violation, check_attachments, header_section
from mailbot.ingest.limits import check as check_limits
from mailbot.ingest.parse import parse
from mailbot.isolation import Overrun, Submitted, WorkerPool
from mailbot.logs import decision_log, message_key
from mailbot.registry import DictRegistry
from mailbot.replies.conversation import ConversationRenderer, attachments_of
from mailbot.replies.render import ReplyRenderer
from mailbot.errors import StoreUnavailableError
from mailbot.store import (
    ClaimedInbound,
    OutgoingMail,
    Store,
    Transaction,
    store_unavailable,
    utcnow,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that could not be parsed or decided."""

    inbound_id: int
    error: str
    mail: Mail | None = None


class _KnownTickets:
    """Tickets in the store, plus those numbered for batches not yet written."""

    def __init__(self, store_index: StoreTicketIndex, pending: set[str]) -> None:
        self._store_index = store_index
        self._pending = pending

    def exists(self, ref: str) -> bool:
        return ref in self._pending or self._store_index.exists(ref)

    def get(self, ref: str) -> TicketInfo | None:
        return self._store_index.get(ref)

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        return self._store_index.by_message_ids(message_ids)


class StoreTicketIndex:
    """The classify seam `TicketIndex`, answered by the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def exists(self, ref: str) -> bool:
        return self._store.ticket_exists(ref)

    def get(self, ref: str) -> TicketInfo | None:
        return self._store.ticket_info(ref)

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        return self._store.ticket_for_message_ids(message_ids)


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


def quarantine_decision(error: str) -> Decision:
    lines = error.strip().splitlines() or ["unknown error"]
    return Decision(
        kind=DecisionKind.QUARANTINED,
        reasons=(RuleResult("quarantine", True, lines[-1][:300]),),
    )


@dataclass(frozen=True, slots=True)
class Analysis:
    """A parsed and decided message, or the traceback of why it could not be."""

    mail: Mail | None
    decision: Decision | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RenderJob:
    """A decided message whose replies are to be rendered (in a child process)."""

    inbound_id: int
    mail: Mail
    decision: Decision
    ticket: TicketDraft | None
    now: datetime
    raw: bytes | None = None  # only for staff replies (attachments are passed on)
    # Bytes of attachments the ticket may still keep (None: the whole per-ticket limit).
    attachment_budget: int | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered replies of one message, or the traceback of why not."""

    inbound_id: int
    replies: tuple[OutgoingMail, ...]
    error: str | None = None
    attachments: tuple[SavedAttachment, ...] = ()
    # Over the ticket's budget: described, never written.
    skipped_attachments: tuple[SavedAttachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch decided and numbered, its replies rendering; `Worker.commit` writes it."""

    items: list[ClaimedInbound]
    analyses: list[Analysis]
    drafts: dict[int, TicketDraft]
    renders: Submitted | list[Rendered]
    now: datetime


@dataclass(frozen=True, slots=True)
class Started:
    """A batch handed to the worker's pool, waiting to be applied."""

    items: list[ClaimedInbound]
    now: datetime
    submitted: Submitted | None


TICKET_KINDS = frozenset((DecisionKind.TICKET, DecisionKind.FOLLOWUP, DecisionKind.STAFF_REPLY))
"""Decisions that put the mail (and its attachments) on a ticket."""


def needs_raw(mail: Mail, decision: Decision) -> bool:
    """Whether rendering needs the raw message: for the attachments of a mail that goes on a
    ticket (kept, and a staff reply's relayed)."""
    return decision.kind in TICKET_KINDS and bool(mail.attachments)


class Decider:
    """Parses and decides raw messages; caches the license registry of its store."""

    REGISTRY_CHECK_SECONDS = 5.0

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.tickets = StoreTicketIndex(store)
        self._replies: ReplyContext | None = None
        self._registry = DictRegistry({})
        self._registry_version: object = None
        self._registry_checked = 0.0
        self._secret: bytes | None = None
        self._previous: tuple[bytes, ...] | None = None
        self.limits = config.limits

    def use_token_secret(self, secret: bytes, previous: tuple[bytes, ...] = ()) -> None:
        """Use this reply-token secret and the rotation's previous ones (a child gets the
        parent's, not its sources: it starts without secret variables)."""
        self._secret = secret
        self._previous = previous

    def token_secret(self) -> bytes:
        if self._secret is None:
            self._secret = token_secret(self.config, self.store)
        return self._secret

    def context(self, now: datetime, tickets: TicketIndex | None = None) -> RuleContext:
        """The rules' context for deciding at `now`."""
        return RuleContext.from_config(self.config, self.registry(), now,
                                       tickets or self.tickets, self.token_secret(),
                                       self._previous)

    def registry(self, *, refresh: bool = True) -> DictRegistry:
        """The license registry, reloaded when the table changed (checked every few s)."""
        mono = time.monotonic()
        stale = (self._registry_version is None
                 or mono - self._registry_checked > self.REGISTRY_CHECK_SECONDS)
        if refresh and stale:
            version = self.store.license_version()
            if version != self._registry_version:
                self._registry = DictRegistry(self.store.license_snapshot())
                self._registry_version = version
            self._registry_checked = mono
        return self._registry

    def analyse(self, raw: bytes, now: datetime) -> Analysis:
        """Parse and decide; never raises (the error comes back with the traceback)."""
        mail: Mail | None = None
        try:
            violation = check_limits(raw, self.limits)
            if violation is not None:
                return self.over_limit(raw, violation, now)
            mail = parse(raw)
            violation = check_attachments(
                [(a.filename, a.size) for a in mail.attachments], self.limits)
            if violation is not None:
                return self.over_limit(raw, violation, now, mail)
            return Analysis(mail, decide(mail, self.context(now)))
        except Exception as exc:  # noqa: BLE001 - any parser/rule failure is contained here
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

    def render(self, job: RenderJob) -> Rendered:
        """The replies of one decided message; never raises (errors come back as text)."""
        if self._replies is None:
            sched = self.config.schedule
            self._replies = ReplyContext(
                self.config.mailbox, ReplyRenderer(self.config),
                ConversationRenderer(self.config, self.token_secret()),
                (*sched.emergency_notify, *((sched.sms_gateway,) if sched.sms_gateway else ())))
        try:
            replies = render_replies(self._replies, inbound_id=job.inbound_id, mail=job.mail,
                                     decision=job.decision, ticket=job.ticket, now=job.now,
                                     raw=job.raw)
            saved: list[SavedAttachment] = []
            skipped: list[SavedAttachment] = []
            if job.raw is not None and job.mail.attachments and job.decision.kind in TICKET_KINDS:
                files = AttachmentStore(self.config.path(self.config.store.attachments_dir))
                limit = self.config.limits.ticket_attachment_bytes
                budget = limit if job.attachment_budget is None else job.attachment_budget
                saved, skipped = files.save_within(  # the budget is checked before writing
                    ((name, ctype, payload) for name, ctype, payload, _ in
                     attachments_of(job.raw, max(limit, 1))), max(budget, 0))
            return Rendered(job.inbound_id, replies, attachments=tuple(saved),
                            skipped_attachments=tuple(skipped))
        except Exception as exc:  # noqa: BLE001 - a template or header bug: quarantine it
            if store_unavailable(exc):
                raise StoreUnavailableError(f"store unavailable while rendering: {exc}") from None
            return Rendered(job.inbound_id, (), traceback.format_exc())


class Worker:
    """Decides stored messages and applies the decisions. Build one per process."""

    def __init__(self, config: Config, store: Store, *, clock: Clock = utcnow,
                 pool: WorkerPool | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.pool = pool
        self.decider = Decider(config, store)
        self.calendar = BusinessCalendar(config.calendar)
        self.settings = ActionSettings.from_config(config, self.calendar)
        # Ticket numbers allocated to batches not yet committed (a reply may name one).
        self._allocated: set[str] = set()
        # Messages of the batch being committed whose claim was lost (not written here).
        self._lost: set[int] = set()

    @classmethod
    def from_config(cls, config: Config, store: Store, *, clock: Clock = utcnow) -> Worker:
        """A worker with the configured pool of child processes (`worker.processes`,
        0 = everything in this process)."""
        w = config.worker
        secret = token_secret(config, store)  # made here once; the children are given it
        previous = config.conversation.previous_token_secrets()
        pool = None
        if w.processes > 0:
            # The children start with the first mail to decide (about a second), not before.
            pool = WorkerPool(config, processes=w.processes, timeout=w.parse_timeout_seconds,
                              memory_mb=w.memory_mb, token_secret=secret,
                              previous_secrets=previous)
        worker = cls(config, store, clock=clock, pool=pool)
        worker.decider.use_token_secret(secret, previous)
        return worker

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def rest(self) -> None:
        """Between batches with nothing to do: stop the child processes once they have been
        idle for `worker.pool_idle_seconds` (0: never)."""
        idle = self.config.worker.pool_idle_seconds
        if self.pool is not None and idle > 0:
            self.pool.stop_if_idle(idle)

    def process(self, item: ClaimedInbound, now: datetime | None = None) -> Outcome | Quarantined:
        """Decide one stored message and apply the decision (see `process_many`)."""
        return self.process_many([item], now)[0]

    def process_many(
        self, items: Sequence[ClaimedInbound], now: datetime | None = None
    ) -> list[Outcome | Quarantined]:
        """Parse and decide messages (in the child processes when there is a pool), then apply
        them: one transaction for the batch (one fsync); if it fails, each message is written
        in a transaction of its own, so a message's effects commit together or not at all.

        Never raises for a bad message: parse/decide errors quarantine it. Store errors
        propagate (the messages stay `received` and are retried).

        Raises:
            WorkerPoolError: the pool cannot work at all (the messages stay queued).
        """
        return self.finish(self.start(items, now))

    def start(self, items: Sequence[ClaimedInbound], now: datetime | None = None) -> Started:
        """Hand messages to the pool (if any); `finish` applies them. Starting the next batch
        before finishing this one lets the children parse while this process writes."""
        now = now or self.clock()
        submitted = (
            self.pool.submit([(i.id, i.raw) for i in items], now) if self.pool is not None
            else None
        )
        return Started(list(items), now, submitted)

    def finish(self, started: Started) -> list[Outcome | Quarantined]:
        """Apply a started batch (see `process_many`): tickets get numbers, replies are
        rendered (in the children), then one transaction writes the batch."""
        return self.commit(self.prepare(started))

    def prepare(self, started: Started) -> Prepared:
        """Collect the decisions, allocate the new tickets' numbers, and hand the replies to
        the children for rendering; `commit` writes. Preparing batch k+1 before committing
        batch k keeps the children rendering while this process writes."""
        items, now = started.items, started.now
        if started.submitted is None:
            analyses = [self.decider.analyse(item.raw, now) for item in items]
        else:
            assert self.pool is not None
            analyses = [
                Analysis(None, None, a.reason) if isinstance(a, Overrun) else a
                for a in self.pool.collect(started.submitted)
            ]
        analyses, drafts = self._number_tickets(items, analyses, now)
        jobs = [
            RenderJob(item.id, a.mail, a.decision, drafts.get(item.id), now,
                      item.raw if needs_raw(a.mail, a.decision) else None,
                      self._attachment_budget(a.mail, a.decision))
            for item, a in zip(items, analyses)
            if a.mail is not None and a.decision is not None
        ]
        renders: Submitted | list[Rendered]
        if self.pool is None or not jobs:
            renders = [self.decider.render(job) for job in jobs]
        else:
            renders = self.pool.submit_renders(jobs)
        return Prepared(items, analyses, drafts, renders, now)

    def _attachment_budget(self, mail: Mail, decision: Decision) -> int | None:
        """What an existing ticket may still keep of attachments (a new one: everything), so
        files over the budget are never written. `add_attachments` checks again when the
        batch commits; what two mails of one batch write over it is left to orphan removal."""
        if not needs_raw(mail, decision) or decision.kind is DecisionKind.TICKET:
            return None
        used = self.store.ticket_attachment_bytes(decision.ticket_ref or "")
        return max(0, self.config.limits.ticket_attachment_bytes - used)

    def commit(self, prepared: Prepared) -> list[Outcome | Quarantined]:
        """Write a prepared batch in one transaction (see `process_many`)."""
        items, analyses, drafts = prepared.items, prepared.analyses, prepared.drafts
        if not items:
            return []
        renders = prepared.renders
        if isinstance(renders, Submitted):
            assert self.pool is not None
            renders = [
                Rendered(r.inbound_id, (), r.reason) if isinstance(r, Overrun) else r
                for r in self.pool.collect(renders)
            ]
        rendered = {r.inbound_id: r for r in renders}
        self._allocated.difference_update(d.view.number for d in drafts.values())
        self._lost.clear()
        try:
            with self.store.transaction() as tx:
                results = [self._apply(tx, item, a, drafts.get(item.id), rendered.get(item.id),
                                       prepared.now)
                           for item, a in zip(items, analyses)]
        except Exception as exc:  # noqa: BLE001 - one message's writes failed: find which
            if store_unavailable(exc):
                raise  # the database is away: everything stays queued
            # One by one, each in its own transaction: a message whose writes fail again is
            # quarantined with the traceback (also in a batch of one: never retried forever).
            log.warning("batch of %d failed; applying one by one", len(items), exc_info=True)
            results = [self._apply_alone(item, a, drafts.get(item.id), rendered.get(item.id),
                                         prepared.now)
                       for item, a in zip(items, analyses)]
        for result in results:
            if result.inbound_id not in self._lost:
                self._log(result)
        return results

    def _number_tickets(
        self, items: Sequence[ClaimedInbound], analyses: Sequence[Analysis], now: datetime
    ) -> tuple[list[Analysis], dict[int, TicketDraft]]:
        """Give the batch's new tickets their numbers, in input order per year.

        A reference a child found unknown may name a ticket committed since, one numbered in
        a batch still on its way, or one opened by an earlier message of this batch: those
        messages are decided again here, in order, as if processed one by one. Numbers are
        predicted from the counter, then allocated; another daemon allocating at the same
        moment only shifts them (the allocation is what counts).
        """
        out: list[Analysis] = []
        views: dict[int, list[tuple[int, TicketView]]] = {}
        predicted: dict[int, int] = {}
        batch_numbers: set[str] = set()
        for item, a in zip(items, analyses):
            d, mail = a.decision, a.mail
            if d is not None and mail is not None and "unknown_ticket" in d.flags:
                known = _KnownTickets(self.decider.tickets, self._allocated | batch_numbers)
                ctx = self.decider.context(now, known)
                try:
                    a = Analysis(mail, decide(mail, ctx))
                except Exception:  # noqa: BLE001
                    a = Analysis(mail, None, traceback.format_exc())
            out.append(a)
            if a.decision is None or a.mail is None or a.decision.kind is not DecisionKind.TICKET:
                continue
            year, view = ticket_draft(a.decision, a.mail, item.received_at, self.calendar)
            if year not in predicted:
                predicted[year] = self.store.ticket_counter(year)
            predicted[year] += 1
            batch_numbers.add(f"T-{year}-{predicted[year]:06d}")
            views.setdefault(year, []).append((item.id, view))
        drafts: dict[int, TicketDraft] = {}
        for year, year_views in views.items():
            numbers = self.store.allocate_ticket_numbers(year, len(year_views))
            self._allocated.update(number for _, number in numbers)
            for (inbound_id, view), (seq, number) in zip(year_views, numbers):
                drafts[inbound_id] = TicketDraft(year, seq, replace(view, number=number))
        return out, drafts

    def _apply_alone(self, item: ClaimedInbound, analysis: Analysis,
                     draft: TicketDraft | None, rendered: Rendered | None, now: datetime
                     ) -> Outcome | Quarantined:
        """One message in its own transaction; if writing it fails, it is quarantined."""
        try:
            with self.store.transaction() as tx:
                return self._apply(tx, item, analysis, draft, rendered, now)
        except Exception as exc:  # noqa: BLE001 - a bug in acting on this message: park it
            if store_unavailable(exc):
                raise
            error = traceback.format_exc()
            with self.store.transaction() as tx:
                if not tx.quarantine(item.id, error, item.token):
                    return self._claim_lost(item, analysis)
            return Quarantined(item.id, error, analysis.mail)

    def _apply(self, tx: Transaction, item: ClaimedInbound, analysis: Analysis,
               draft: TicketDraft | None, rendered: Rendered | None, now: datetime
               ) -> Outcome | Quarantined:
        mail, decision = analysis.mail, analysis.decision
        if not tx.hold_claim(item.id, item.token):  # the row stays locked until commit
            return self._claim_lost(item, analysis)
        if decision is not None and decision.kind is DecisionKind.QUARANTINED and (
                rendered is None or not rendered.error):  # over a limit (notes rendered if any)
            reason = write_over_limit(tx, inbound_id=item.id, decision=decision,
                                      replies=rendered.replies if rendered else (), now=now,
                                      settings=self.settings)
            return Quarantined(item.id, reason, mail)
        error = analysis.error or (rendered.error if rendered is not None else "not rendered")
        if decision is None or mail is None or rendered is None or rendered.error:
            error = error or "no decision"
            tx.quarantine(item.id, error, item.token)
            return Quarantined(item.id, error, mail)
        if not tx.mark_decided(item.id, item.token):
            # Another worker finished it while we were deciding (lease expired).
            return Outcome(item.id, decision, mail=mail)
        return write_decision(tx, inbound_id=item.id, mail=mail, decision=decision,
                              ticket=draft, replies=rendered.replies, now=now,
                              settings=self.settings, attachments=rendered.attachments,
                              skipped_attachments=rendered.skipped_attachments)

    def _claim_lost(self, item: ClaimedInbound, analysis: Analysis) -> Outcome:
        """A message whose claim another daemon has taken over (this one's lease ran out):
        nothing is written for it here; the holder decides it."""
        log.warning("inbound %s: claim lost (the lease ran out and another daemon took the "
                    "message over); this daemon's decision is not written", item.id)
        self._lost.add(item.id)
        return Outcome(item.id, analysis.decision or quarantine_decision(
            analysis.error or "claim lost"), mail=analysis.mail)

    @staticmethod
    def _log(result: Outcome | Quarantined) -> None:
        token = message_key.set(f"in:{result.inbound_id}")
        try:
            if isinstance(result, Quarantined):
                metrics.QUARANTINED.labels(metrics.quarantine_reason(result.error)).inc()
                decision_log.warning(
                    "inbound=%s decision=quarantined error=%s",
                    result.inbound_id,
                    (result.error.strip().splitlines() or ["?"])[-1][:200],
                )
                return
            d = result.decision
            metrics.DECIDED.labels(d.kind.value).inc()
            decision_log.info(
                "inbound=%s from=%s decision=%s ticket=%s license=%s hits=%s",
                result.inbound_id,
                result.mail.from_addr if result.mail else None,
                d.kind.value,
                result.ticket_number,
                d.license,
                ",".join(d.hits),
            )
        finally:
            message_key.reset(token)

    def run_once(self, limit: int = 20) -> int:
        """Claim and decide up to `limit` waiting messages, renewing the claim while they are
        decided (a slow batch keeps it); returns how many were taken."""
        seconds = self.config.worker.lease_seconds
        lease = timedelta(seconds=seconds)
        batch = self.store.claim_inbound(limit, lease)
        if batch:
            ids, token = [item.id for item in batch], batch[0].token
            assert token is not None
            try:
                with Heartbeat(lambda: self.store.renew_inbound(ids, token, lease),
                               renew_interval(seconds), "worker-claim"), \
                        metrics.STAGE.labels("decide").time():
                    self.process_many(batch)
                metrics.observe_waits(item.received_at for item in batch)
            except Exception:
                # E.g. the database went away: if it is back, the batch is due at once
                # rather than after its lease; if not, the lease frees it later.
                try:
                    self.store.release_inbound(ids, token)
                except Exception:  # noqa: BLE001
                    log.debug("could not release the failed batch", exc_info=True)
                raise
        return len(batch)
