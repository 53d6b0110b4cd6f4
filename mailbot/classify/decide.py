"""decide(mail, ctx) -> Decision: run `RULES` in order and keep the audit trail."""

from __future__ import annotations

from mailbot.classify.rules import (
    RULES,
    Finding,
    Rule,
    RuleContext,
    chosen_license,
    entitlement_end,
    mail_language,
)
from mailbot.domain import Decision, DecisionKind, Mail, RuleResult

NEW_REQUEST_KINDS = frozenset(
    (
        DecisionKind.REJECT_INCOMPLETE,
        DecisionKind.REJECT_UNKNOWN_LICENSE,
        DecisionKind.REJECT_EXPIRED,
        DecisionKind.REJECT_SCOPE,
        DecisionKind.TICKET,
    )
)
"""Decisions about a new request: these carry the license, customer and entitlement end."""


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
        reasons.append(
            RuleResult(rule.__name__, finding is not None, finding.detail if finding else "")
        )
        if finding is None:
            continue
        flags |= finding.flags
        if finding.kind is not None:
            final = finding
            break
    if final is None or final.kind is None:
        raise ValueError("no rule decided the mail; RULES must end with a catch-all")
    license_number = customer = end = None
    if final.kind in NEW_REQUEST_KINDS:
        license_number, customer = chosen_license(mail, ctx)
        if customer is not None:
            end = entitlement_end(customer, ctx.now, ctx.zone)
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
    )
