"""One handler per decision outcome, and the two steps every outcome goes through.

`HANDLERS` maps each `DecisionKind` to the handler that acts on it and is checked complete
when this package is imported: a kind without a handler raises `RegistryError` naming it.
Adding an outcome = one module here (a `Handler` subclass) registered below, plus its
templates.

* `render_replies` (pure, in the render stage): the handler's automatic reply to the sender
  (`Handler.automatic`; not rendered where the worker foresees that the rate limits hold it
  back), its other replies, then a warning to the staff about a forged staff reply if no
  notice carried it.
* `write_decision` (in the worker's transaction): the handler's rows, then for every outcome
  the attachments on the ticket, the replies in the outbox (within the rate limits) and the
  decision record.

The worker writes a batch in one deferred transaction (:class:`mailbot.store.base.TxBase`):
`read_ahead` first reads what the batch's writes will check (queued purposes, rate-limit
counts, recorded attachments), the handlers then call the transaction's named writes as for
a single message, and the transaction collects the rows and writes them one statement per
table. Handlers thus keep one home per outcome and never see the batching.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.actions import (
    ActionSettings,
    HeldReply,
    Outcome,
    ReplyContext,
    TicketDraft,
    enqueue_replies,
    read_outbox_ahead,
    reasons_json,
    suspicion,
)
from mailbot.attachments import FileAttachment, SavedAttachment
from mailbot.classify.rules import body_text
from mailbot.domain import Decision, Mail, OutgoingMail, RuleResult
from mailbot.handlers.base import (
    Act,
    AutoReply,
    Effect,
    Handler,
    Registry,
    RegistryError,
    ReplyJob,
)
from mailbot.handlers.followup import FollowupHandler
from mailbot.handlers.ignore import IgnoreHandler
from mailbot.handlers.quarantine import QuarantineHandler
from mailbot.handlers.rejection import RejectionHandler
from mailbot.handlers.staff_reply import StaffReplyHandler
from mailbot.handlers.ticket import TicketHandler
from mailbot.handlers.unsubscribe import UnsubscribeHandler

if TYPE_CHECKING:
    from mailbot.store import Transaction

__all__ = ["HANDLERS", "Act", "AutoReply", "Effect", "Handler", "Registry", "RegistryError",
           "ReplyJob", "read_ahead", "render_automatic", "render_replies", "write_decision"]

log = logging.getLogger(__name__)

HANDLERS = Registry([
    TicketHandler(),
    RejectionHandler(),
    FollowupHandler(),
    StaffReplyHandler(),
    UnsubscribeHandler(),
    IgnoreHandler(),
    QuarantineHandler(),
])
"""The handler of every decision kind (the worker, its children and replay use it)."""


def render_replies(
    ctx: ReplyContext,
    *,
    inbound_id: int,
    mail: Mail,
    decision: Decision,
    ticket: TicketDraft | None,
    now: datetime,
    attachments: Sequence[FileAttachment] = (),
    handlers: Registry = HANDLERS,
    hold: bool = False,
) -> tuple[OutgoingMail, ...]:
    """The mails `decision` sends (pure: templates and the `email` package only): the
    handler's automatic reply first (unless `hold`: the rate limits will hold it back),
    then its other mails.

    `attachments` are the inbound message's, needed only to pass a staff reply's on.
    """
    # A forged staff reply is handled as customer mail; the staff see the warning in the
    # notice it causes, or in a notice of its own.
    suspicious = suspicion(decision) if "suspicious_staff" in decision.flags else ""
    body = body_text(mail)  # the whole readable text (HTML converted once)
    job = ReplyJob(inbound_id, mail, decision, ticket, now, tuple(attachments), body,
                   suspicious)
    handler = handlers[decision.kind]
    auto = handler.automatic(inbound_id, decision, ticket, ctx.mailbox.message_id_domain)
    reply = None if auto is None or hold else render_automatic(ctx, auto, mail, decision, now)
    out = ([] if reply is None else [reply]) + handler.replies(ctx, job)
    if suspicious and decision.ticket is not None and not any(o.kind == "notice" for o in out):
        warn = ctx.conversation.notice(
            event="followup", ticket=decision.ticket, customer=decision.customer,
            entitlement_end=None, mail=mail, text=body, inbound_id=inbound_id, now=now,
            purpose=f"notice:{inbound_id}", suspicious=suspicious)
        if warn is not None:
            out.append(warn)
    return tuple(out)


def render_automatic(ctx: ReplyContext, auto: AutoReply, mail: Mail, decision: Decision,
                     now: datetime) -> OutgoingMail | None:
    """A handler's automatic reply `auto` to `mail` (None where the sender gets none)."""
    return ctx.renderer.render(decision, mail, ticket=auto.ticket, message_id=auto.message_id,
                               now=now, purpose=auto.purpose, template=auto.template)


def read_ahead(tx: Transaction, *, replies: Iterable[OutgoingMail | HeldReply],
               attachments_of: Iterable[int], now: datetime) -> None:
    """Read in one go what `write_decision` will ask the store about a batch about to be
    written at `now`: the replies' purposes and rate-limit counts (those held back
    included), and the attachments recorded for the messages `attachments_of`. In a
    deferred transaction the batch's shared rows then need no statement of their own per
    message."""
    read_outbox_ahead(tx, replies, now)
    tx.read_attachment_keys(list(attachments_of))


def write_decision(
    tx: Transaction,
    *,
    inbound_id: int,
    mail: Mail,
    decision: Decision,
    ticket: TicketDraft | None,
    replies: tuple[OutgoingMail, ...],
    now: datetime,
    settings: ActionSettings,
    attachments: tuple[SavedAttachment, ...] = (),
    skipped_attachments: tuple[SavedAttachment, ...] = (),
    handlers: Registry = HANDLERS,
    held: tuple[HeldReply, ...] = (),
) -> Outcome:
    """Record `decision` for message `inbound_id`: the handler's rows, then attachments,
    replies (`held`: automatic ones left unrendered, queued first if the limits allow them
    after all) and the decision record."""
    effect = handlers[decision.kind].write(
        tx, Act(inbound_id, mail, decision, ticket, replies, now, settings))
    ticket_id = effect.ticket_id
    ticket_number = effect.ticket_number if effect.ticket_number is not None \
        else decision.ticket_ref
    notes = list(effect.notes)

    if (attachments or skipped_attachments) and ticket_id is not None:
        skipped = tx.add_attachments(ticket_id, inbound_id, attachments,
                                     settings.ticket_attachment_bytes, now)
        skipped = [*skipped, *skipped_attachments]  # the latter were never written
        if skipped:
            tx.add_ticket_event(ticket_id, "attachments_skipped", inbound_id=inbound_id,
                                detail=", ".join(a.filename for a in skipped)[:2000])
            notes.append(RuleResult("attachments", True, f"{len(skipped)} over the ticket's "
                                    f"{settings.ticket_attachment_bytes} bytes not kept"))

    queued, limited = enqueue_replies(tx, replies, ticket_id=ticket_id, inbound_id=inbound_id,
                                      now=now, settings=settings, held=held)
    notes += [RuleResult("rate_limit", True, f"no {out.kind} to {out.rcpt_to[0]}: {why}")
              for out, why in limited]

    tx.record_decision(
        inbound_id,
        kind=decision.kind.value,
        license=decision.license,
        priority=decision.priority.value if decision.priority else None,
        missing=decision.missing,
        scope_reason=decision.scope_reason,
        ticket_ref=ticket_number,
        ticket_id=ticket_id,
        language=decision.language,
        reasons=reasons_json(decision) + [
            {"rule": r.rule, "hit": r.hit, "detail": r.detail} for r in notes],
    )
    if "suspicious_staff" in decision.flags:
        log.warning("inbound=%s: mail from %s claims to be a staff reply but is not verified "
                    "(%s); handled as a customer mail", inbound_id, mail.from_addr,
                    suspicion(decision))
    return Outcome(inbound_id, decision, ticket_number, effect.deadline, queued, mail)
