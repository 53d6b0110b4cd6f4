"""The rules that decide a mail: small pure functions, run in the order of `RULES`.

Each rule looks at a :class:`~mailbot.domain.Mail` and a :class:`RuleContext` and returns a
:class:`Finding` when it hits, else None. A finding with a `kind` is terminal: `decide()`
stops there. A rule's function name is written into the audit trail, so renaming one is a
visible change.

The rules live by subject: :mod:`~mailbot.classify.rules_auto` (automatic mail),
:mod:`~mailbot.classify.rules_tickets` (tickets, staff, unsubscribe) and
:mod:`~mailbot.classify.rules_request` (new requests); what they consult is in
:mod:`~mailbot.classify.facts`. This module orders them and re-exports the names others import.
"""

from __future__ import annotations

from mailbot.classify.facts import (
    BOUNCE,
    NEW_REQUEST,
    Finding,
    LicenseRegistry,
    MailFacts,
    Rule,
    RuleContext,
    TicketIndex,
    body_text,
    has_description,
    license_candidates,
    mail_facts,
    mail_language,
    request_sentences,
)
from mailbot.classify.rules_auto import (
    OWN_MESSAGE_ID,
    auto_reply_headers,
    auto_subject,
    bounce,
    bulk_footer,
    feedback_report,
    mailing_list,
    out_of_office,
    own_mail,
    read_receipt,
    robot_sender,
    spam_verdict,
)
from mailbot.classify.rules_request import (
    SCOPE_LABELS,
    chosen_license,
    emergency,
    entitlement_end,
    expired_license,
    incomplete_request,
    new_ticket,
    out_of_scope,
    request_licenses,
    unknown_license,
)
from mailbot.classify.rules_tickets import (
    closed_ticket,
    followup,
    is_freemail,
    known_ticket,
    sender_belongs,
    sender_unaligned,
    staff_reply,
    ticket_by_ref,
    ticket_references,
    unknown_ticket,
    unsubscribe_request,
)

__all__ = [
    "BOUNCE", "NEW_REQUEST", "OWN_MESSAGE_ID", "RULES", "SCOPE_LABELS", "Finding",
    "LicenseRegistry", "MailFacts", "Rule", "RuleContext", "TicketIndex", "body_text",
    "chosen_license", "closed_ticket", "entitlement_end", "has_description", "is_freemail",
    "known_ticket", "license_candidates", "mail_facts", "mail_language", "request_licenses",
    "request_sentences", "sender_belongs", "sender_unaligned", "ticket_by_ref",
    "ticket_references",
]

RULES: tuple[Rule, ...] = (
    own_mail,
    bounce,
    robot_sender,
    read_receipt,
    feedback_report,
    auto_reply_headers,
    mailing_list,
    bulk_footer,
    auto_subject,
    out_of_office,
    spam_verdict,
    unsubscribe_request,
    unknown_ticket,
    staff_reply,
    followup,
    incomplete_request,
    unknown_license,
    expired_license,
    out_of_scope,
    emergency,
    new_ticket,
)
"""The rules in the order they run; the first terminal finding decides."""
