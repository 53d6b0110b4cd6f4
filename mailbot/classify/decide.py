"""decide(mail, ctx) -> Decision: run `RULES` in order and keep the audit trail.

Which facts a decision carries follows from what the deciding rule found, never from its kind
or its name: a finding flagged `NEW_REQUEST` brings the license, customer and entitlement, one
with a `ticket_ref` the ticket (and a staff reply's commands), one flagged `BOUNCE` the
Message-IDs it reports. What each kind of decision *does* is in :mod:`mailbot.handlers`.
"""

from __future__ import annotations

from mailbot.classify.commands import latest_reply, parse_commands
from mailbot.classify.rules import (
    BOUNCE,
    NEW_REQUEST,
    OWN_MESSAGE_ID,
    RULES,
    Finding,
    Rule,
    RuleContext,
    body_text,
    chosen_license,
    closed_ticket,
    entitlement_end,
    known_ticket,
    mail_language,
    ticket_by_ref,
)
from mailbot.domain import Decision, DecisionKind, Mail, RuleResult, StaffCommand

def decide(mail: Mail, ctx: RuleContext, rules: tuple[Rule, ...] = RULES) -> Decision:
    """What to do with `mail`: the first terminal finding of `rules`, with every rule's result.

    Raises:
        ValueError: no rule reached a decision (the rule list lacks a final catch-all).
    """
    reasons: list[RuleResult] = []
    flags: set[str] = set()
    final: Finding | None = None
    for rule in rules:
        finding = rule(mail, ctx)
        if finding is None:
            reasons.append(_missed(rule.__name__))
            continue
        reasons.append(RuleResult(rule.__name__, True, finding.detail))
        flags |= finding.flags
        if finding.kind is not None:
            final = finding
            break
    if final is None or final.kind is None:
        raise ValueError("no rule decided the mail; RULES must end with a catch-all")
    license_number = customer = end = ticket = related = None
    staff_text = ""
    commands: tuple[StaffCommand, ...] = ()
    errors: tuple[str, ...] = ()
    bounced: tuple[str, ...] = ()
    bounce_hard = True
    if final.flags >= NEW_REQUEST:
        license_number, customer = chosen_license(mail, ctx)
        if customer is not None:
            end = entitlement_end(customer, ctx.now, ctx.zone)
        old = closed_ticket(mail, ctx)
        related = old.number if old is not None else None
        if related is None and "unaligned_sender" in flags:  # a forged From: refer, not join
            related = known_ticket(mail, ctx)
    elif final.ticket_ref is not None:
        ticket = ticket_by_ref(final.ticket_ref, ctx)
        if ticket is not None and ticket.license:
            customer = ctx.registry.get(ticket.license)
        if final.kind is DecisionKind.STAFF_REPLY:
            commands, staff_text, errors = parse_commands(latest_reply(body_text(mail)),
                                                          ctx.staff.is_staff_address)
    elif final.flags >= BOUNCE:
        bounced, bounce_hard = bounced_mail(mail, ctx.message_id_domain)
    if "suspicious_staff" in flags and ticket is None:
        ref = known_ticket(mail, ctx)  # the ticket a forged staff reply pretends to answer
        ticket = ticket_by_ref(ref, ctx) if ref else None
    return Decision(
        kind=final.kind,
        reasons=tuple(reasons),
        license=license_number,
        priority=final.priority,
        missing=final.missing,
        scope_reason=final.scope_reason,
        ticket_ref=final.ticket_ref,
        language=mail_language(mail, ctx),
        customer=customer,
        entitlement_end=end,
        flags=frozenset(flags),
        ticket=ticket,
        related_ticket=related,
        staff_text=staff_text,
        commands=commands,
        command_errors=errors,
        bounced_ids=bounced,
        bounce_hard=bounce_hard,
    )


_MISSED: dict[str, RuleResult] = {}


def _missed(name: str) -> RuleResult:
    """The audit line of rule `name` that did not hit (a frozen value: one per rule name)."""
    result = _MISSED.get(name)
    if result is None:
        result = RuleResult(name, False, "")
        if len(_MISSED) < 1024:
            _MISSED[name] = result
    return result


def bounced_mail(mail: Mail, domain: str) -> tuple[tuple[str, ...], bool]:
    """Our Message-IDs a bounce reports as undeliverable, and whether it counts as hard.

    A "delayed" report (no recipient failed: the mail is still on its way) bounces
    nothing. A "soft" one (failed with 4.x.x statuses only) marks the mail bounced but does
    not count towards news suppression. "unknown" (no machine-readable delivery status,
    e.g. a qmail or Exchange text bounce) counts as hard: such a notice is almost always
    a permanent failure.
    """
    if mail.delivery_outcome == "delayed":
        return (), True
    return own_message_ids(mail.original_ids, domain), mail.delivery_outcome != "soft"


def own_message_ids(ids: tuple[str, ...], domain: str) -> tuple[str, ...]:
    """The Message-IDs among `ids` that mailbot made (to mark those replies bounced)."""
    out = []
    for value in ids:
        m = OWN_MESSAGE_ID.fullmatch(value.strip())
        if m and m.group(1).lower() == domain.lower():
            out.append(value.strip())
    return tuple(out)
