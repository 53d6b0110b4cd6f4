"""The rules about tickets: references to existing tickets, follow-ups, staff replies, and
unsubscribe requests (which a ticket reference overrides)."""

from __future__ import annotations

import re
from functools import lru_cache

from mailbot.classify.facts import Finding, RuleContext, address_domain, mail_facts
from mailbot.classify.staff_auth import Verdict, check_staff, sender_alignment
from mailbot.classify.text import fold
from mailbot.domain import DecisionKind, Mail, TicketInfo
from mailbot.unsubscribe_token import without_tag


_TICKET_TAG = re.compile(r"\[#\s*(T-\d{4}-\d{6})\s*\]", re.I)


@lru_cache(maxsize=16)
def _ticket_message_id(domain: str) -> re.Pattern[str]:
    return re.compile(rf"<ticket-(T-\d{{4}}-\d{{6}})(?:\.[a-z]?\d+)?@{re.escape(domain)}>",
                      re.IGNORECASE)


def ticket_references(mail: Mail, ctx: RuleContext) -> tuple[str, ...]:
    """Ticket numbers the mail refers to: subject tag, then In-Reply-To, then References."""
    refs = [m.group(1).upper() for m in _TICKET_TAG.finditer(mail.subject)]
    msgid = _ticket_message_id(ctx.message_id_domain)
    for ids in (mail.in_reply_to, mail.references):
        for value in ids:
            refs += [m.group(1).upper() for m in msgid.finditer(value)]
    return tuple(dict.fromkeys(refs))


def known_ticket(mail: Mail, ctx: RuleContext) -> str | None:
    """The first referenced ticket that exists (any well-formed one in dry-run), or None.

    Without a ticket tag or one of our Message-IDs, In-Reply-To/References may still name a
    mail recorded on a ticket (the customer's own, or a staff member's sent directly).
    """
    refs = ticket_references(mail, ctx)
    for ref in refs:
        if ctx.known_tickets is None or ctx.known_tickets.exists(ref):
            return ref
    if refs or ctx.known_tickets is None:
        return None
    ids = tuple(dict.fromkeys(
        token for value in (*mail.in_reply_to, *mail.references) for token in value.split()
        if token.startswith("<") and token.endswith(">")))
    return ctx.known_tickets.by_message_ids(ids[-20:]) if ids else None


def ticket_by_ref(ref: str, ctx: RuleContext) -> TicketInfo | None:
    """What the store knows of ticket `ref` (None in dry-run or when only existence is known)."""
    return ctx.known_tickets.get(ref) if ctx.known_tickets is not None else None


def sender_belongs(mail: Mail, ticket: TicketInfo, ctx: RuleContext) -> bool:
    """Whether the sender may write on the customer's behalf: the ticket's own address, or
    the email domain of the ticket's license in the registry (never a free-mail domain).

    Where our MTA's Authentication-Results are on the mail, the From domain must also be
    authenticated by them (:func:`sender_unaligned`): a forged From never belongs.
    """
    sender = (mail.from_addr or "").lower()
    if not sender or sender_unaligned(mail, ctx):
        return False
    if sender == ticket.customer_email.lower():
        return True
    record = ctx.registry.get(ticket.license) if ticket.license else None
    domain = (record.email_domain if record else address_domain(ticket.customer_email)).lower()
    return bool(domain) and not is_freemail(domain, ctx) and address_domain(sender) == domain


def sender_unaligned(mail: Mail, ctx: RuleContext) -> bool:
    """Whether our MTA's trusted Authentication-Results are on the mail and do not
    authenticate its From domain (DKIM, DMARC or SPF aligned with it): the From is forged."""
    return sender_alignment(mail, ctx.staff.authserv_ids) == "fail"


def is_freemail(domain: str, ctx: RuleContext) -> bool:
    """Whether `domain` belongs to a free-mail provider (its users are not one customer)."""
    domain = domain.lower()
    for entry in ctx.freemail_domains:
        if entry.endswith(".*"):
            labels = domain.split(".")
            if any(".".join(labels[i:]).startswith(entry[:-1]) for i in range(len(labels))):
                return True
        elif domain == entry or domain.endswith("." + entry):
            return True
    return False


def _closed_long_ago(ticket: TicketInfo, ctx: RuleContext) -> bool:
    return (ticket.state == "closed" and ticket.closed_at is not None
            and ctx.now - ticket.closed_at > ctx.reopen_window)


def closed_ticket(mail: Mail, ctx: RuleContext) -> TicketInfo | None:
    """The referenced ticket of this sender closed longer ago than the reopen window, if any:
    the mail is then a new request that refers to it."""
    ref = known_ticket(mail, ctx)
    ticket = ticket_by_ref(ref, ctx) if ref else None
    if ticket is None or not _closed_long_ago(ticket, ctx) or not sender_belongs(mail, ticket, ctx):
        return None
    return ticket


def unsubscribe_request(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Mail to the newsletter unsubscribe address (always), or a request in the sender's own
    words in a mail that refers to no ticket: unsubscribe words in a ticket's mail ("how do
    I unsubscribe from the nightly export report?") are about the ticket, which keeps it."""
    # A mailing's List-Unsubscribe address carries a token: novinky-odhlaseni+<token>@…
    recipients = {without_tag(a) for a in mail.recipients()}
    if ctx.unsubscribe_address in recipients:
        return Finding(DecisionKind.UNSUBSCRIBE, f"to {ctx.unsubscribe_address}")
    facts = mail_facts(mail, ctx)
    text, joined = facts.own_sentences, facts.own_joined
    if facts.subject != mail.subject.strip():
        # A reply ("Re: Estelar novinky – listopad"): "stop sending me this" names what to
        # stop only through the subject, so each own sentence is also read after it.
        subject = fold(facts.subject)
        text += tuple(f"{subject} {s}" for s in facts.own_text_sentences)
        joined = "\n".join(text)
    for rule in facts.compiled.unsubscribe:
        hit = rule.match(text, joined)
        if hit:
            refs = ticket_references(mail, ctx) or tuple(filter(None, [known_ticket(mail, ctx)]))
            if refs:
                return Finding(None, f"{hit}: not applied, the mail is about {refs[0]}")
            return Finding(DecisionKind.UNSUBSCRIBE, hit)
    return None


def unknown_ticket(mail: Mail, ctx: RuleContext) -> Finding | None:
    """A ticket reference that names no existing ticket: noted, and the mail is taken as new."""
    refs = ticket_references(mail, ctx)
    if not refs or ctx.known_tickets is None or known_ticket(mail, ctx):
        return None
    return Finding(None, ",".join(refs), flags=frozenset({"unknown_ticket"}))


def staff_ticket(mail: Mail, ctx: RuleContext) -> tuple[str, Verdict] | None:
    """The ticket a mail from a staff address is about, and whether it proves it is from
    staff (:mod:`mailbot.classify.staff_auth`); None for anyone else's mail or no ticket."""
    ref = known_ticket(mail, ctx) if ctx.staff.is_staff_address(mail.from_addr) else None
    if ref is None:
        return None
    return ref, check_staff(mail, ctx.staff, ref, ctx.now.astimezone(ctx.zone).date())


def staff_reply(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Mail from the staff about a ticket goes to that ticket, if it proves it is from staff;
    otherwise it is noted as suspicious and handled as a customer's mail."""
    found = staff_ticket(mail, ctx)
    if found is None:
        return None
    ref, verdict = found
    if not verdict.trusted:
        return Finding(None, f"unverified {ref}: {verdict.reason}",
                       flags=frozenset({"suspicious_staff"}))
    return Finding(DecisionKind.STAFF_REPLY, f"{ref} ({verdict.reason})", ticket_ref=ref)


def followup(mail: Mail, ctx: RuleContext) -> Finding | None:
    """A customer's mail about an existing ticket (subject tag or In-Reply-To/References).

    Only the ticket's customer, or someone from the email domain of the ticket's license
    (not a free-mail domain), may follow up; anyone else's mail is a new request. A mail
    whose From our MTA's Authentication-Results do not authenticate is a new request that
    refers to the ticket (`unaligned_sender`). A ticket closed within the reopen window is
    reopened; one closed before it makes the mail a new request that refers to it.
    """
    ref = known_ticket(mail, ctx)
    if ref is None:
        return None
    ticket = ticket_by_ref(ref, ctx)
    if ticket is None:
        return Finding(DecisionKind.FOLLOWUP, ref, ticket_ref=ref)
    if sender_unaligned(mail, ctx):
        return Finding(None, f"{mail.from_addr} not authenticated for {ref}",
                       flags=frozenset({"unaligned_sender"}))
    if not sender_belongs(mail, ticket, ctx):
        return Finding(None, f"{mail.from_addr} is not a contact of {ref}",
                       flags=frozenset({"foreign_sender"}))
    if _closed_long_ago(ticket, ctx):
        return Finding(None, f"{ref} closed {ticket.closed_at:%Y-%m-%d}",
                       flags=frozenset({"closed_ticket"}))
    flags = frozenset({"reopen"}) if ticket.state == "closed" else frozenset()
    return Finding(DecisionKind.FOLLOWUP, ref, ticket_ref=ref, flags=flags)
