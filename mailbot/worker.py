"""Stage 4 of the pipeline (:mod:`mailbot.pipeline`) and the batches through it: claim
stored messages, decide them (in the child processes), number the batch's new tickets,
render (in the children), then write the batch in one transaction through the outcome
handlers (:mod:`mailbot.handlers`).

A message that breaks parsing or deciding is quarantined with its traceback (Mailman's
shunt queue) and the worker goes on with the next one; `mailbot quarantine retry` puts it
back after a fix.

A claimed batch is kept by a heartbeat (`worker.lease_seconds`, renewed every third) while it
is decided; its writes are fenced by the claim's token, so a batch whose claim was lost
(another daemon took the rows over) is dropped with a WARNING instead of written.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from mailbot import metrics
from mailbot.actions import (
    RATE_WINDOW,
    ActionSettings,
    HeldReply,
    Outcome,
    RateForecast,
    TicketDraft,
)
from mailbot.claims import Heartbeat, renew_interval
from mailbot.classify.decide import decide
from mailbot.config import Config
from mailbot.domain import Decision, Mail, OutgoingMail, TicketView
from mailbot.handlers import (
    HANDLERS,
    AutoReply,
    Registry,
    read_ahead,
    render_automatic,
    write_decision,
)
from mailbot.handlers.base import QuarantiningHandler
from mailbot.isolation import Overrun, Submitted, WorkerPool
from mailbot.logs import decision_log, message_key
from mailbot.pipeline import (
    TOKEN_SECRET_SETTING,
    Analysis,
    Decider,
    Pipeline,
    Rendered,
    RenderJob,
    answers_unchanged,
    quarantine_decision,
    token_secret,
)
from mailbot.replies.render import author_address, reply_recipient
from mailbot.store import ClaimedInbound, Store, Transaction, store_unavailable, utcnow
from mailbot.ticket_numbers import SQLITE_BLOCK, TicketNumbers

__all__ = ["TOKEN_SECRET_SETTING", "Analysis", "Decider", "Outcome", "Quarantined",
           "Rendered", "RenderJob", "Worker", "quarantine_decision", "token_secret"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that could not be parsed or decided."""

    inbound_id: int
    error: str
    mail: Mail | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch decided and numbered, its replies rendering; `Worker.commit` writes it.
    `held`: the automatic replies left unrendered (the rate limits will hold them back), per
    message; `forecast`: the batch's key in the worker's `RateForecast`."""

    items: list[ClaimedInbound]
    analyses: list[Analysis]
    drafts: dict[int, TicketDraft]
    renders: Submitted | list[Rendered]
    now: datetime
    held: dict[int, HeldReply] = field(default_factory=dict)
    forecast: int | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """A batch handed to the worker's pool, waiting to be applied."""

    items: list[ClaimedInbound]
    now: datetime
    submitted: Submitted | None



BATCH_BYTES = 4 * 1024 * 1024
"""Raw bytes claimed for one batch at most (at least one message): a burst of large mail is
decided in batches of its own, after the ordinary mail that arrived with it
(`Store.claim_inbound`)."""

class Worker:
    """Decides stored messages and applies the decisions. Build one per process.

    `handlers` act on the decisions (the children of `pool` always use `HANDLERS`).
    `hold_back`: automatic replies that the rate limits will hold back are not rendered
    (`RateForecast`); False renders every one (what is sent and recorded is the same)."""

    def __init__(self, config: Config, store: Store, *, clock: Clock = utcnow,
                 pool: WorkerPool | None = None, handlers: Registry = HANDLERS,
                 hold_back: bool = True) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.pool = pool
        self.handlers = handlers
        self.pipeline = Pipeline(config, store, handlers=handlers)
        self.decider = self.pipeline.decider
        self.calendar = self.pipeline.calendar
        self.settings = ActionSettings.from_config(config, self.calendar)
        self.forecast = RateForecast(self.settings) if hold_back else None
        # Ticket numbers reserved ahead (a block on SQLite, a batch's worth otherwise).
        self._numbers = TicketNumbers(store, SQLITE_BLOCK if store.is_sqlite else 0)
        # Ticket numbers given to batches not yet committed (a reply may name one).
        self._allocated: set[str] = set()
        # Messages of the batch being committed whose claim was lost (not written here).
        self._lost: set[int] = set()
        # Claimed batches on their way through `run_once`'s pipeline, oldest first.
        self._in_flight: list[_InFlight] = []
        # The next batch, claimed (token, ids) in the transaction that wrote the last one.
        self._claimed_ahead: tuple[str, list[int]] | None = None

    @classmethod
    def from_config(cls, config: Config, store: Store, *, clock: Clock = utcnow,
                    pool: WorkerPool | None = None) -> Worker:
        """A worker with the configured pool of child processes (`worker.processes`,
        0 = everything in this process), or with `pool` (`WorkerPool.from_config`, spawned
        before the store was opened)."""
        secret = token_secret(config, store)  # made here once; the children are given it
        previous = config.conversation.previous_token_secrets()
        # The children start with `warm` or the first mail to decide; idle, they stop.
        pool = pool or WorkerPool.from_config(config)
        if pool is not None:
            pool.use_token_secret(secret, previous)
        worker = cls(config, store, clock=clock, pool=pool)
        worker.decider.use_token_secret(secret, previous)
        return worker

    def warm(self) -> None:
        """Start the child processes now, without waiting for them: their start-up (about a
        second) overlaps this process's own work (replay's first files, the daemon's first
        IMAP fetch)."""
        if self.pool is not None:
            self.pool.use_registry(self.decider.registry())
            self.pool.warm()

    def close(self) -> None:
        """Finish the batches still in flight (`drain`), give the ticket numbers reserved
        and not used back, and stop the child processes."""
        try:
            self.drain()
        except Exception:  # noqa: BLE001 - e.g. the database is away: they were given back
            log.warning("could not finish the batches in flight; they are decided again "
                        "at the next start", exc_info=True)
        try:
            self._numbers.give_back()
        except Exception:  # noqa: BLE001 - the database is away: the numbers stay a gap
            log.warning("could not give the unused ticket numbers back", exc_info=True)
        if self.pool is not None:
            self.pool.close()

    def rest(self) -> None:
        """Between batches with nothing to do: stop the child processes once they have been
        idle for `worker.pool_idle_seconds` (0: never)."""
        idle = self.config.worker.pool_idle_seconds
        if self.pool is not None and idle > 0:
            self.pool.stop_if_idle(idle)

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
        submitted = None
        if self.pool is not None:
            # Checked for every batch (one cheap query): the children are given the
            # registry as it is now, e.g. just after `mailbot licenses import`.
            self.pool.use_registry(self.decider.registry(max_age=0))
            submitted = self.pool.submit([(i.id, i.raw) for i in items], now)
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
            analyses = self.decider.analyse_many([item.raw for item in items], now)
        else:
            assert self.pool is not None
            analyses = [
                Analysis(None, None, a.reason) if isinstance(a, Overrun) else a
                for a in self.pool.collect(started.submitted)
            ]
        analyses, drafts = self._number_tickets(items, analyses, now)
        jobs = [
            self._render_job(item, a, drafts.get(item.id), now)
            for item, a in zip(items, analyses)
            if a.mail is not None and a.decision is not None
        ]
        jobs, held, forecast = self._hold_back(jobs, now)
        renders: Submitted | list[Rendered]
        if self.pool is None or not jobs:
            renders = [self.pipeline.render(job) for job in jobs]
        else:
            renders = self.pool.submit_renders(jobs)
        return Prepared(items, analyses, drafts, renders, now, held, forecast)

    def _hold_back(self, jobs: list[RenderJob], now: datetime
                   ) -> tuple[list[RenderJob], dict[int, HeldReply], int | None]:
        """The batch's jobs, those whose automatic reply the rate limits will hold back
        marked `hold` (not rendered), with the replies held per message and the batch's key
        in the forecast. The store is asked once for the counts per address, and for the
        total where it may matter (`RateForecast.total_may_hold`); a reply is held only where
        its recipient is the address counted (`reply_recipient`)."""
        if self.forecast is None or not jobs:
            return jobs, {}, None
        domain = self.config.mailbox.message_id_domain
        autos: list[AutoReply | None] = [
            self.handlers[job.decision.kind].automatic(job.inbound_id, job.decision,
                                                       job.ticket, domain) for job in jobs]
        authors = [author_address(job.mail) if auto else None for job, auto in zip(jobs, autos)]
        addresses = [author.lower() if author else None for author in authors]
        wanted = [a for a in addresses if a is not None]
        if not wanted:
            return jobs, {}, None
        since = now - RATE_WINDOW
        counts = self.store.auto_reply_counts(wanted, since)
        total = (self.store.auto_replies_total(since)
                 if self.forecast.total_may_hold(now, len(wanted)) else 0)
        forecast, flags = self.forecast.hold_back(addresses, now, counts, total)
        held: dict[int, HeldReply] = {}
        own = self.config.mailbox.own_addresses()
        out = []
        for job, auto, address, flag in zip(jobs, autos, addresses, flags):
            to = reply_recipient(job.mail, own) if flag else None
            if auto is not None and to is not None and to[1].lower() == address:
                held[job.inbound_id] = HeldReply(auto.purpose, auto.template, (to[1],),
                                                 partial(self._render_held, job, auto))
                job = replace(job, hold=True)
            out.append(job)
        return out, held, forecast

    def _render_held(self, job: RenderJob, auto: AutoReply) -> OutgoingMail | None:
        """A held automatic reply that the limits let through after all, rendered here."""
        return render_automatic(self.pipeline.reply_context(), auto, job.mail, job.decision,
                                job.now)

    def _render_job(self, item: ClaimedInbound, analysis: Analysis, ticket: TicketDraft | None,
                    now: datetime) -> RenderJob:
        """What rendering `item`'s replies needs: where it goes on a ticket whose files are
        not written yet (`Analysis.saved_attachments`), its attachments as the decision
        process read them, else the raw message to read them from."""
        mail, decision = analysis.mail, analysis.decision
        assert mail is not None and decision is not None
        if (analysis.saved_attachments is not None
                or not self.pipeline.needs_attachments(mail, decision)):
            return RenderJob(item.id, mail, decision, ticket, now)
        attachments = analysis.attachments
        return RenderJob(item.id, mail, decision, ticket, now,
                         raw=item.raw if attachments is None else None, attachments=attachments,
                         attachment_budget=self._attachment_budget(mail, decision))

    def _attachment_budget(self, mail: Mail, decision: Decision) -> int | None:
        """What an existing ticket may still keep of attachments (a new one: everything), so
        files over the budget are never written. `add_attachments` checks again when the
        batch commits; what two mails of one batch write over it is left to orphan removal."""
        if self.handlers[decision.kind].opens_ticket:
            return None
        used = self.store.ticket_attachment_bytes(decision.ticket_ref or "")
        return max(0, self.config.limits.ticket_attachment_bytes - used)

    def commit(self, prepared: Prepared, *, claim_ahead: int = 0
               ) -> list[Outcome | Quarantined]:
        """Write a prepared batch in one transaction (see `process_many`). `claim_ahead`:
        up to that many waiting messages are claimed in the same transaction, for the next
        `run_once` (one write transaction per batch instead of two)."""
        try:
            return self._commit(prepared, claim_ahead)
        finally:
            if self.forecast is not None and prepared.forecast is not None:
                self.forecast.written(prepared.forecast)

    def _commit(self, prepared: Prepared, claim_ahead: int = 0) -> list[Outcome | Quarantined]:
        items, analyses, drafts = prepared.items, prepared.analyses, prepared.drafts
        held = prepared.held
        if not items:
            return []
        renders, since = prepared.renders, prepared.now - RATE_WINDOW
        if isinstance(renders, Submitted):
            assert self.pool is not None
            renders = [
                Rendered(r.inbound_id, (), r.reason) if isinstance(r, Overrun) else r
                for r in self.pool.collect(renders)
            ]
        rendered = {r.inbound_id: r for r in renders}
        for item, a in zip(items, analyses):  # a new ticket's files, written when decided
            if a.saved_attachments is not None and item.id in rendered:
                rendered[item.id] = replace(rendered[item.id], attachments=a.saved_attachments,
                                            skipped_attachments=a.skipped_attachments)
        self._allocated.difference_update(d.view.number for d in drafts.values())
        self._lost.clear()
        try:
            with self.store.transaction(deferred=True, durable=False) as tx:  # (LAZY_SYNC)
                tx.hold_claims([(item.id, item.token) for item in items])
                read_ahead(tx, replies=[*held.values(),
                                        *(out for r in renders for out in r.replies)],
                           attachments_of=[i for i, r in rendered.items() if r.attachments],
                           now=prepared.now)
                results = [self._apply(tx, item, a, drafts.get(item.id), rendered.get(item.id),
                                       prepared.now, held.get(item.id))
                           for item, a in zip(items, analyses)]
                if self.forecast is not None and tx.auto_total_read(since):
                    self.forecast.seen_total(since, tx.auto_replies_total_since(since))
                ahead = (tx.claim_received(claim_ahead, self._lease(), max_bytes=BATCH_BYTES)
                         if claim_ahead else None)
            if ahead is not None and ahead[1]:  # committed: the next `_claim` takes them
                self._claimed_ahead = ahead
        except Exception as exc:  # noqa: BLE001 - one message's writes failed: find which
            if store_unavailable(exc):
                raise  # the database is away: everything stays queued
            # One by one, each in its own transaction: a message whose writes fail again is
            # quarantined with the traceback (also in a batch of one: never retried forever).
            log.warning("batch of %d failed; applying one by one", len(items), exc_info=True)
            results = [self._apply_alone(item, a, drafts.get(item.id), rendered.get(item.id),
                                         prepared.now, held.get(item.id))
                       for item, a in zip(items, analyses)]
        for result in results:
            if result.inbound_id not in self._lost:
                self._log(result)
        return results

    def _number_tickets(
        self, items: Sequence[ClaimedInbound], analyses: Sequence[Analysis], now: datetime
    ) -> tuple[list[Analysis], dict[int, TicketDraft]]:
        """Give the batch's new tickets their numbers, in input order per year (taken from
        the numbers reserved ahead, `TicketNumbers`).

        A child cannot look tickets up (its decision is then provisional), and a reference
        found unknown may name a ticket committed since, one numbered in a batch still on its
        way, or one opened by an earlier message of this batch: those messages are decided
        again here with the store, in order, as if processed one by one (a child's decision
        stands where the store too knows none of the tickets it asked about).
        """
        out: list[Analysis] = []
        drafts: dict[int, TicketDraft] = {}
        batch_numbers: set[str] = set()
        for left, (item, a) in enumerate(zip(items, analyses)):
            d, mail = a.decision, a.mail
            if d is not None and mail is not None and (a.provisional
                                                        or "unknown_ticket" in d.flags):
                assert self.decider.store_tickets is not None
                known = self.decider.store_tickets.with_pending(self._allocated | batch_numbers)
                if not (a.questions and answers_unchanged(a.questions, known)):
                    ctx = self.decider.context(now, known)
                    try:
                        a = Analysis(mail, decide(mail, ctx))
                    except Exception:  # noqa: BLE001
                        a = Analysis(mail, None, traceback.format_exc())
            out.append(a)
            draft = (self.pipeline.draft(a.decision, a.mail, item.received_at)
                     if a.decision is not None and a.mail is not None else None)
            if draft is None:
                continue
            year, view = draft
            seq, number = self._numbers.take(year, wanted=len(items) - left)
            batch_numbers.add(number)
            drafts[item.id] = TicketDraft(year, seq, replace(view, number=number))
        self._allocated.update(batch_numbers)
        return out, drafts

    def _apply_alone(self, item: ClaimedInbound, analysis: Analysis,
                     draft: TicketDraft | None, rendered: Rendered | None, now: datetime,
                     held: HeldReply | None = None) -> Outcome | Quarantined:
        """One message in its own transaction; if writing it fails, it is quarantined."""
        try:
            with self.store.transaction(durable=False) as tx:
                return self._apply(tx, item, analysis, draft, rendered, now, held)
        except Exception as exc:  # noqa: BLE001 - a bug in acting on this message: park it
            if store_unavailable(exc):
                raise
            error = traceback.format_exc()
            with self.store.transaction(durable=False) as tx:
                if not tx.quarantine(item.id, error, item.token):
                    return self._claim_lost(item, analysis)
            return Quarantined(item.id, error, analysis.mail)

    def _apply(self, tx: Transaction, item: ClaimedInbound, analysis: Analysis,
               draft: TicketDraft | None, rendered: Rendered | None, now: datetime,
               held: HeldReply | None = None) -> Outcome | Quarantined:
        mail, decision = analysis.mail, analysis.decision
        kept = (held,) if held is not None else ()
        if not tx.hold_claim(item.id, item.token):  # the row stays locked until commit
            return self._claim_lost(item, analysis)
        handler = self.handlers[decision.kind] if decision is not None else None
        if isinstance(handler, QuarantiningHandler) and (
                rendered is None or not rendered.error):  # over a limit (notes rendered if any)
            assert decision is not None
            reason = handler.quarantine(tx, inbound_id=item.id, decision=decision,
                                        replies=rendered.replies if rendered else (), now=now,
                                        settings=self.settings, held=kept)
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
                              skipped_attachments=rendered.skipped_attachments,
                              handlers=self.handlers, held=kept)

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
        """Claim up to `limit` waiting messages and move the worker's pipeline on; returns how
        many messages this call claimed, or if none, how many it wrote (0: nothing to do).

        The pipeline holds up to two claimed batches besides the one being written: while
        this thread writes batch k, the children render batch k+1 and parse batch k+2. A
        batch is kept in flight only while full batches keep coming (more mail is likely
        waiting); a short batch, or none, drains the pipeline in the same call, so a lone
        message is decided as soon as it arrives. Each batch in flight keeps its claim by a
        heartbeat; if a step fails, every batch in flight is given back (due at once).
        """
        try:
            batch = self._claim(limit)
            done = self._advance(drain=batch is None or len(batch.items) < limit, new=batch,
                                 limit=limit)
        except Exception:
            # E.g. the database went away: if it is back, the batches are due at once
            # rather than after their lease; if not, the lease frees them later.
            self._release_in_flight()
            raise
        return len(batch.items) if batch is not None else done

    def drain(self) -> int:
        """Write every batch in flight and give a batch claimed ahead back (a clean stop
        leaves no claimed mail behind; `close` gives the reserved ticket numbers back too);
        returns how many messages were written. On failure the batches are given back and
        the error raised."""
        try:
            written = self._advance(drain=True, new=None)
        except Exception:
            self._release_in_flight()
            raise
        self._release_ahead()
        return written

    def _lease(self) -> timedelta:
        return timedelta(seconds=self.config.worker.lease_seconds)

    def _claim(self, limit: int) -> _InFlight | None:
        """The next batch: the one claimed ahead by the last write, or claimed now."""
        lease = self._lease()
        ahead, self._claimed_ahead = self._claimed_ahead, None
        items = (self.store.claimed(*ahead) if ahead is not None
                 else self.store.claim_inbound(limit, lease, max_bytes=BATCH_BYTES))
        if not items:
            return None
        ids, token = [item.id for item in items], items[0].token
        assert token is not None
        beat = Heartbeat(lambda: self.store.renew_inbound(ids, token, lease),
                         renew_interval(lease.total_seconds()), "worker-claim")
        flight = _InFlight(items, token, beat)
        self._in_flight.append(flight)
        beat.__enter__()
        flight.stage = self.start(items)
        return flight

    def _advance(self, *, drain: bool, new: _InFlight | None, limit: int = 0) -> int:
        """Prepare the oldest started batch and write the oldest prepared one (all of them
        when `drain`); returns how many messages were written. While full batches come
        (not `drain`), a write also claims the next batch of `limit` (`commit`)."""
        written = 0
        while True:
            waiting = [f for f in self._in_flight if f is not new or drain]
            prepared = [f for f in waiting if isinstance(f.stage, Prepared)]
            started = [f for f in waiting if isinstance(f.stage, Started)]
            if started:  # hand its replies to the children before writing the older batch
                started[0].stage = self.prepare(started[0].stage)  # type: ignore[arg-type]
            if prepared and (drain or len(self._in_flight) > 2 or started):
                written += self._write(prepared[0], 0 if drain else limit)
            if not drain or not self._in_flight:
                return written

    def _write(self, flight: _InFlight, claim_ahead: int = 0) -> int:
        assert isinstance(flight.stage, Prepared)
        with metrics.STAGE.labels("decide").time():
            # On failure the batch stays in flight: released.
            self.commit(flight.stage, claim_ahead=claim_ahead)
        self._in_flight.remove(flight)
        flight.heartbeat.__exit__(None, None, None)
        metrics.observe_waits(item.received_at for item in flight.items)
        return len(flight.items)

    def _release_ahead(self) -> None:
        """Give the batch claimed ahead back (a clean stop, a failure)."""
        ahead, self._claimed_ahead = self._claimed_ahead, None
        if ahead is not None:
            self.store.release_inbound(ahead[1], ahead[0])

    def _release_in_flight(self) -> None:
        """Give every batch in flight back (claimed, not written), the one claimed ahead
        too."""
        try:
            self._release_ahead()
        except Exception:  # noqa: BLE001 - the database is away: the lease frees them
            log.debug("could not release the batch claimed ahead", exc_info=True)
        flights, self._in_flight = self._in_flight, []
        if self.forecast is not None:
            self.forecast.clear()
        for flight in flights:
            flight.heartbeat.__exit__(None, None, None)
            try:
                self.store.release_inbound([i.id for i in flight.items], flight.token)
            except Exception:  # noqa: BLE001
                log.debug("could not release a failed batch", exc_info=True)


@dataclass
class _InFlight:
    """A claimed batch in the worker's pipeline: its claim's heartbeat and its stage."""

    items: list[ClaimedInbound]
    token: str
    heartbeat: Heartbeat
    stage: Started | Prepared | None = None
