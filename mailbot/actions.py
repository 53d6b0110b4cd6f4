"""Acting on a decision, in three steps so the expensive part can run in a child process:

1. `ticket_draft` (pure): for a new ticket, its year and deadline in the business calendar.
2. `render_replies` (pure): the replies as bytes — the ticket's number is known by then, because
   the worker allocates numbers for a whole batch first (`Store.allocate_ticket_numbers`, like a
   database sequence: never reused; a crash between allocation and commit leaves a gap).
3. `write_decision`, inside the worker's transaction: ticket, ticket event, outbox rows, the
   decision record and the inbound row's state commit together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.attachments import SavedAttachment
from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config, MailboxConfig
from mailbot.classify.commands import COMMAND_EVENTS, latest_reply
from mailbot.classify.rules import body_text
from mailbot.domain import (
    Decision,
    DecisionKind,
    Mail,
    OutgoingMail,
    Priority,
    RuleResult,
    TicketInfo,
    TicketView,
    other_message_id,
    ticket_message_id,
)
from mailbot.replies.conversation import ConversationRenderer
from mailbot.replies.render import ReplyRenderer
from mailbot.store import LockedTicket, OutgoingMail, Transaction
from mailbot.unsubscribe_token import token_in

log = logging.getLogger(__name__)

REJECTIONS = frozenset(
    {
        DecisionKind.REJECT_INCOMPLETE,
        DecisionKind.REJECT_UNKNOWN_LICENSE,
        DecisionKind.REJECT_EXPIRED,
        DecisionKind.REJECT_SCOPE,
    }
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What was done for one message."""

    inbound_id: int
    decision: Decision
    ticket_number: str | None = None
    deadline: datetime | None = None
    replies: int = 0
    mail: Mail | None = None


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


def render_replies(
    ctx: ReplyContext,
    *,
    inbound_id: int,
    mail: Mail,
    decision: Decision,
    ticket: TicketDraft | None,
    now: datetime,
    raw: bytes | None = None,
) -> tuple[OutgoingMail, ...]:
    """The mails `decision` sends (pure: templates and the `email` package only).

    `raw` is the inbound message itself, needed only to pass a staff reply's attachments on.
    """
    domain = ctx.mailbox.message_id_domain
    conv = ctx.conversation
    out: list[OutgoingMail | None] = []
    kind = decision.kind
    # A forged staff reply is handled as customer mail; the staff see the warning in the
    # notice it causes, or in a notice of its own.
    suspicious = _suspicion(decision) if "suspicious_staff" in decision.flags else ""
    body = body_text(mail)  # the whole readable text (HTML converted once)
    newest = latest_reply(body) or body  # without the quoted earlier mail
    if kind is DecisionKind.TICKET:
        assert ticket is not None
        message_id = ticket_message_id(ticket.view.number, 1, domain)
        out.append(ctx.renderer.render(decision, mail, ticket=ticket.view,
                                       message_id=message_id, now=now,
                                       purpose=f"ack:{inbound_id}"))
        info = _new_ticket_info(ticket.view, decision, mail)
        out.append(conv.notice(event="new", ticket=info, customer=decision.customer,
                               entitlement_end=decision.entitlement_end, mail=mail,
                               text=body, inbound_id=inbound_id, now=now,
                               purpose=f"notice:{inbound_id}", suspicious=suspicious))
        if info.priority is Priority.EMERGENCY and ctx.emergency_recipients:
            out.append(conv.staff_alert(
                kind="emergency", ticket=info, recipients=ctx.emergency_recipients,
                message_id=ticket_message_id(info.number, f"x{inbound_id}", domain), now=now,
                purpose=f"emergency:{inbound_id}", text=newest))
    elif kind in REJECTIONS:
        message_id = other_message_id(f"reject-{inbound_id}", domain)
        out.append(ctx.renderer.render(decision, mail, ticket=None, message_id=message_id,
                                       now=now, purpose=f"reject:{inbound_id}"))
    elif kind is DecisionKind.FOLLOWUP and decision.ticket is not None:
        out.append(conv.notice(event="followup", ticket=decision.ticket,
                               customer=decision.customer, entitlement_end=None, mail=mail,
                               text=newest, inbound_id=inbound_id, now=now,
                               purpose=f"notice:{inbound_id}", suspicious=suspicious))
    elif kind is DecisionKind.STAFF_REPLY and decision.ticket is not None:
        if decision.command_errors:
            out.append(conv.command_error(mail=mail, ticket_number=decision.ticket.number,
                                          errors=decision.command_errors,
                                          inbound_id=inbound_id, now=now,
                                          purpose=f"cmderr:{inbound_id}"))
        elif relays_to_customer(decision, mail):
            out.append(conv.relay(ticket=decision.ticket, decision=decision, mail=mail, raw=raw,
                                  inbound_id=inbound_id, now=now, purpose=f"relay:{inbound_id}"))
    elif kind is DecisionKind.QUARANTINED and "tell_sender" in decision.flags:
        message_id = other_message_id(f"limit-{inbound_id}", domain)
        out.append(ctx.renderer.render(decision, mail, ticket=None, message_id=message_id,
                                       now=now, purpose=f"reject:{inbound_id}",
                                       template="reject_too_large"))
    if suspicious and decision.ticket is not None and not any(
            o is not None and o.kind == "notice" for o in out):
        out.append(conv.notice(event="followup", ticket=decision.ticket,
                               customer=decision.customer, entitlement_end=None, mail=mail,
                               text=body, inbound_id=inbound_id, now=now,
                               purpose=f"notice:{inbound_id}", suspicious=suspicious))
    return tuple(o for o in out if o is not None)


def relays_to_customer(decision: Decision, mail: Mail) -> bool:
    """Whether a staff reply is sent on to the customer: not an internal #note, not empty
    (commands only), and not already addressed to the customer directly."""
    ticket = decision.ticket
    if ticket is None or any(c.name == "note" for c in decision.commands):
        return False
    if not decision.staff_text.strip():
        return False
    direct = {a.lower() for a in (*mail.to, *mail.cc)}
    return ticket.customer_email.lower() not in direct


def _suspicion(decision: Decision) -> str:
    for r in decision.reasons:
        if r.rule == "staff_reply" and r.hit:
            return r.detail
    return "unverified sender"


def _new_ticket_info(view: TicketView, decision: Decision, mail: Mail) -> TicketInfo:
    return TicketInfo(
        number=view.number, state="open", subject=view.subject,
        customer_email=view.customer_email,
        customer_name=decision.customer.customer if decision.customer else mail.from_name,
        license=view.license, priority=view.priority, language=decision.language,
        opened_at=view.opened_at, deadline=view.deadline,
    )


def reasons_json(decision: Decision) -> list[dict[str, object]]:
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
) -> Outcome:
    """Record `decision` for message `inbound_id`: ticket, events, replies, attachments, the
    decision record."""
    ticket_id: int | None = None
    ticket_number: str | None = decision.ticket_ref
    deadline: datetime | None = None
    notes: list[RuleResult] = []

    if decision.kind is DecisionKind.TICKET:
        assert ticket is not None
        view = ticket.view
        ticket_id = tx.open_ticket(
            inbound_id=inbound_id,
            number=view.number,
            year=ticket.year,
            seq=ticket.seq,
            opened_at=view.opened_at,
            deadline=view.deadline,
            license=decision.license,
            customer_email=view.customer_email,
            customer_name=decision.customer.customer if decision.customer else mail.from_name,
            subject=view.subject,
            priority=view.priority,
            language=decision.language,
            message_id=mail.message_id,
            related_ticket=decision.related_ticket,
        )
        ticket_number, deadline = view.number, view.deadline

    elif decision.kind is DecisionKind.FOLLOWUP:
        existing = tx.find_ticket(decision.ticket_ref or "")
        if existing is not None:
            ticket_id = existing.id
            deadline = customer_followup(tx, existing, inbound_id, mail, now, settings.calendar)

    elif decision.kind is DecisionKind.STAFF_REPLY:
        existing = tx.find_ticket(decision.ticket_ref or "")
        if existing is not None:
            ticket_id = existing.id
            deadline = staff_reply(tx, existing, inbound_id, mail, decision, replies, now,
                                   settings.calendar)

    elif decision.kind is DecisionKind.UNSUBSCRIBE:
        for address in unsubscribed_addresses(tx, mail, settings.unsubscribe_address):
            tx.unsubscribe(address, inbound_id)

    elif decision.bounced_ids:  # hard (or non-standard) bounces count towards suppression
        marked = tx.mark_bounced(decision.bounced_ids, now, hard=decision.bounce_hard)
        kind = "hard" if decision.bounce_hard else "soft"
        notes.append(RuleResult("bounced", bool(marked), f"{marked} outgoing marked bounced "
                                f"({kind})"))
        if decision.bounce_hard:
            for address in tx.bounce_news(decision.bounced_ids, settings.news_bounce_limit, now):
                notes.append(RuleResult("suppressed", True, f"{address}: news mail bounced"))

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
                                      now=now, settings=settings)
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
                    _suspicion(decision))
    return Outcome(inbound_id, decision, ticket_number, deadline, queued, mail)


def write_over_limit(tx: Transaction, *, inbound_id: int, decision: Decision,
                     replies: tuple[OutgoingMail, ...], now: datetime,
                     settings: ActionSettings) -> str:
    """Quarantine a message that is over a limit (the reason is the quarantine error) and
    queue the note to its sender, if any. Returns the reason."""
    reason = "; ".join(r.detail for r in decision.reasons if r.hit) or "over a limit"
    _, limited = enqueue_replies(tx, replies, ticket_id=None, inbound_id=inbound_id, now=now,
                                 settings=settings)
    reason += "".join(f"; no {out.kind}: rate limit" for out, _ in limited)
    tx.quarantine(inbound_id, reason)
    return reason


def enqueue_replies(tx: Transaction, replies: tuple[OutgoingMail, ...], *, ticket_id: int | None,
                    inbound_id: int, now: datetime, settings: ActionSettings
                    ) -> tuple[int, list[tuple[OutgoingMail, str]]]:
    """Queue the replies of one message; automatic ones only within the rate limits (per
    sender, and for all senders together). Returns how many were queued and those a limit
    held back, each with the limit reached."""
    queued, limited = 0, []
    for out in replies:
        why = rate_limit_reached(tx, out, now, settings) if out.auto else None
        if why is not None:
            log.warning("auto-reply rate limit: no %s to %s (%s)", out.kind,
                        out.rcpt_to[0] if out.rcpt_to else "-", why)
            limited.append((out, why))
            continue
        queued += tx.enqueue(out, ticket_id=ticket_id, inbound_id=inbound_id, now=now)
    return queued, limited


def unsubscribed_addresses(tx: Transaction, mail: Mail, unsubscribe_address: str) -> list[str]:
    """Who an unsubscribe request is for: the address a mailing's token names (the
    `List-Unsubscribe` mailto, which may be answered from another address), and the sender."""
    found: list[str] = []
    for address in mail.recipients():
        token = token_in(address, unsubscribe_address)
        email = tx.news_token_email(token) if token else None
        if email and email not in found:
            found.append(email)
    if mail.from_addr and mail.from_addr.lower() not in found:
        found.append(mail.from_addr.lower())
    return found


def over_rate_limit(tx: Transaction, out: OutgoingMail, now: datetime, limit: int) -> bool:
    """RFC 3834 §2: at most `limit` automatic replies to one address per hour."""
    if not out.rcpt_to:
        return False
    return tx.auto_replies_since(out.rcpt_to[0], now - timedelta(hours=1)) >= limit


def rate_limit_reached(tx: Transaction, out: OutgoingMail, now: datetime,
                       settings: ActionSettings) -> str | None:
    """Which limit holds back the automatic reply `out`, if any: `auto_replies_per_hour` to
    its address, or `auto_replies_total_per_hour` to everyone (mail with forged senders, each
    under the per-address limit, must not make mailbot a reflector of its text)."""
    if over_rate_limit(tx, out, now, settings.auto_replies_per_hour):
        return f"{settings.auto_replies_per_hour} per hour to this address reached"
    total = settings.auto_replies_total_per_hour
    if tx.auto_replies_total_since(now - timedelta(hours=1)) >= total:
        return f"{total} per hour to all addresses reached"
    return None


def customer_followup(tx: Transaction, ticket: LockedTicket, inbound_id: int, mail: Mail,
                      now: datetime, calendar: BusinessCalendar) -> datetime:
    """The customer wrote again: record it, resume a paused deadline, reopen a closed ticket.
    Returns the ticket's deadline now."""
    tx.add_ticket_event(ticket.id, "customer_mail", inbound_id=inbound_id,
                        author=mail.from_addr or "")
    tx.touch(ticket.id, now, last_message_id=mail.message_id)
    info, deadline = ticket.info, ticket.info.deadline
    if info.state == "waiting":
        deadline = resumed_deadline(info, now, calendar)
        tx.resume(ticket.id, deadline, now)
        tx.add_ticket_event(ticket.id, "resumed", inbound_id=inbound_id)
    elif info.state == "closed":
        deadline = calendar.deadline(now, emergency=info.priority == "emergency")
        tx.resume(ticket.id, deadline, now)
        tx.add_ticket_event(ticket.id, "reopened", inbound_id=inbound_id)
    return deadline


def resumed_deadline(ticket: TicketInfo, now: datetime, calendar: BusinessCalendar) -> datetime:
    """The deadline after waiting for the customer: the working time that was left when the
    wait began, counted from now."""
    since = ticket.waiting_since or now
    left = max(0.0, calendar.working_hours_between(since, ticket.deadline))
    return calendar.add_working_hours(now, left)


def staff_reply(tx: Transaction, ticket: LockedTicket, inbound_id: int, mail: Mail,
                decision: Decision, replies: tuple[OutgoingMail, ...], now: datetime,
                calendar: BusinessCalendar) -> datetime:
    """Record a verified staff reply and apply its commands (none if any was wrong).
    Returns the ticket's deadline now."""
    author = mail.from_addr or ""
    deadline = ticket.info.deadline
    if decision.command_errors:
        tx.add_ticket_event(ticket.id, "staff_mail_rejected", inbound_id=inbound_id,
                            author=author, detail="; ".join(decision.command_errors))
        return deadline
    note = any(c.name == "note" for c in decision.commands)
    relayed = any(r.kind == "relay" for r in replies)
    direct = ticket.info.customer_email.lower() in {a.lower() for a in (*mail.to, *mail.cc)}
    kind = "note" if note else ("answered" if relayed or direct else "staff_mail")
    tx.add_ticket_event(ticket.id, kind, inbound_id=inbound_id, author=author,
                        detail=decision.staff_text[:2000] or None)
    for command in decision.commands:
        if command.name == "close":
            tx.set_state(ticket.id, "closed", now)
        elif command.name == "wait":
            tx.set_state(ticket.id, "waiting", now)
        elif command.name == "assign":
            tx.assign(ticket.id, command.argument, now)
        elif command.name == "priority":
            deadline = calendar.deadline(ticket.info.opened_at,
                                         emergency=command.argument == "emergency")
            tx.set_priority(ticket.id, command.argument, deadline, now)
        if command.name in COMMAND_EVENTS:
            tx.add_ticket_event(ticket.id, COMMAND_EVENTS[command.name], inbound_id=inbound_id,
                                author=author, detail=command.argument or None)
    tx.touch(ticket.id, now)
    return deadline
