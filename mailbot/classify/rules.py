"""The rules that decide a mail: small pure functions, run in the order of `RULES`.

Each rule looks at a :class:`~mailbot.domain.Mail` and a :class:`RuleContext` and returns a
:class:`Finding` when it hits, else None. A finding with a `kind` is terminal: `decide()`
stops there. A rule's function name is written into the audit trail, so renaming one is a
visible change.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from mailbot.classify.entitlement import PRAGUE, entitlement_at
from mailbot.classify.language import detect_language
from mailbot.classify.license import extract_license_numbers
from mailbot.classify.opinion import AnchorModel, Evidence, weigh
from mailbot.classify.phrases import IdentityCache, compiled_rule, phrase_set
from mailbot.classify.settings import ClassifyConfig
from mailbot.classify.staff_auth import StaffPolicy, check_staff, sender_alignment
from mailbot.classify.text import (
    BodyParts,
    TextLimits,
    content_words,
    fold,
    forwarded_message_text,
    readable_text,
    sentences,
    split_body,
)
from mailbot.domain import (
    LOOP_HEADER,
    DecisionKind,
    LicenseRecord,
    Mail,
    Priority,
    TicketInfo,
)
from mailbot.subjects import strip_subject_prefixes
from mailbot.unsubscribe_token import without_tag

if TYPE_CHECKING:
    from mailbot.config import Config


class LicenseRegistry(Protocol):
    """The license registry as classify sees it."""

    def get(self, number: str) -> LicenseRecord | None: ...

    def rank(self, number: str) -> int:
        """The place of `number` in the registry's order (lower first)."""
        ...


class TicketIndex(Protocol):
    """Which ticket numbers exist, and what is known about them (None: only that it exists)."""

    def exists(self, ref: str) -> bool: ...

    def get(self, ref: str) -> TicketInfo | None: ...

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None: ...


class _MemoIndex:
    """A ticket index that asks its source once per question: the rules of one decision look
    the same ticket up several times (staff reply, follow-up, closed-ticket license)."""

    def __init__(self, source: TicketIndex) -> None:
        self._source = source
        self._exists: dict[str, bool] = {}
        self._info: dict[str, TicketInfo | None] = {}
        self._by_ids: dict[tuple[str, ...], str | None] = {}

    def exists(self, ref: str) -> bool:
        if ref not in self._exists:
            self._exists[ref] = self._source.exists(ref)
        return self._exists[ref]

    def get(self, ref: str) -> TicketInfo | None:
        if ref not in self._info:
            self._info[ref] = self._source.get(ref)
        return self._info[ref]

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        if message_ids not in self._by_ids:
            self._by_ids[message_ids] = self._source.by_message_ids(message_ids)
        return self._by_ids[message_ids]


@dataclass(frozen=True, slots=True)
class RuleContext:
    """Everything the rules may consult besides the mail itself (no I/O behind it but the seams).

    `known_tickets` None means dry-run: a well-formed ticket reference is trusted.
    """

    settings: ClassifyConfig
    support_address: str
    unsubscribe_address: str
    own_addresses: frozenset[str]
    staff: StaffPolicy
    message_id_domain: str
    registry: LicenseRegistry
    now: datetime
    known_tickets: TicketIndex | None = None
    zone: ZoneInfo = PRAGUE
    default_language: str = "cs"
    reopen_window: timedelta = timedelta(days=14)
    # Free-mail domains ("gmx.*": any gmx. domain): never a customer's organization.
    freemail_domains: tuple[str, ...] = ()
    text_limits: TextLimits = TextLimits()

    @classmethod
    def from_config(
        cls,
        config: Config,
        registry: LicenseRegistry,
        now: datetime,
        known_tickets: TicketIndex | None,
        token_secret: bytes = b"",
        previous_secrets: tuple[bytes, ...] | None = None,
    ) -> RuleContext:
        """The context of one decision, built from the loaded configuration.

        `token_secret` verifies staff notices' reply addresses (none given: no token is valid);
        `previous_secrets` those of the rotation (None: read from the configured sources).
        Ticket lookups are remembered for the life of the context (one decision).
        """
        box = config.mailbox
        conv = config.conversation
        staff = StaffPolicy(
            staff_domains=frozenset(d.lower() for d in box.staff_domains),
            staff_addresses=frozenset(a.lower() for a in box.staff_addresses),
            authserv_ids=frozenset(conv.authserv_ids),
            support_address=box.support_address.lower(),
            token_secret=token_secret,
            verify=conv.verify_staff,
            previous_secrets=(conv.previous_token_secrets() if previous_secrets is None
                              else previous_secrets),
        )
        return cls(
            settings=config.classify,
            support_address=box.support_address.lower(),
            unsubscribe_address=box.unsubscribe_address.lower(),
            own_addresses=frozenset(a.lower() for a in box.own_addresses()),
            staff=staff,
            message_id_domain=box.message_id_domain.lower(),
            registry=registry,
            now=now,
            known_tickets=_MemoIndex(known_tickets) if known_tickets is not None else None,
            zone=config.calendar.zone,
            default_language=config.replies.default_language,
            reopen_window=timedelta(days=conv.reopen_days),
            freemail_domains=conv.freemail_domains,
            text_limits=TextLimits(config.limits.body_text_chars, config.limits.quote_scan_chars),
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule found; `kind` None means a note that lets the next rules run."""

    kind: DecisionKind | None
    detail: str = ""
    priority: Priority | None = None
    missing: tuple[str, ...] = ()
    scope_reason: str | None = None
    ticket_ref: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)


NEW_REQUEST = frozenset({"new_request"})
"""Flags of a finding that decides a new request: its decision carries the license, the
customer, the entitlement end and a related closed ticket."""
BOUNCE = frozenset({"bounce"})
"""Flags of a finding that reports a delivery failure: its decision carries the Message-IDs of our
mail that it reports undeliverable."""


Rule = Callable[[Mail, RuleContext], "Finding | None"]


# --- facts the rules share ---------------------------------------------------------------


class _Compiled:
    """What the rules need of one ClassifyConfig, compiled once (word sets, phrase sets)."""

    def __init__(self, settings: ClassifyConfig) -> None:
        words = settings.description_stopwords
        self.stopwords = frozenset(w for w in words if not w.endswith("*"))
        self.stop_prefixes = tuple(w[:-1] for w in words if w.endswith("*") and len(w) > 1)
        self.english = frozenset(settings.english_words)
        self.czech = frozenset(settings.czech_words)
        self.bounce_body = phrase_set(settings.bounce_body_phrases)
        self.bulk_body = phrase_set(settings.bulk_body_phrases)
        self.auto_subject = phrase_set(settings.auto_subject_phrases)
        self.out_of_office = phrase_set(settings.out_of_office_phrases)
        model = settings.model
        self.model = AnchorModel(model.anchors) if model.enabled and model.anchors else None
        self.emergency_signals = phrase_set(model.emergency_signals)
        self.not_emergency = phrase_set(settings.not_emergency_phrases)
        self.resolved = phrase_set(settings.resolved_phrases)
        self.no_description = phrase_set(settings.no_description_phrases)
        self.unsubscribe = tuple(compiled_rule(r) for r in settings.unsubscribe)
        self.scope = tuple(compiled_rule(r) for r in settings.scope)
        self.emergency = tuple(compiled_rule(r) for r in settings.emergency)


_compiled: IdentityCache[ClassifyConfig, _Compiled] = IdentityCache(_Compiled, 16)
"""The compiled form of the `[classify]` settings (the config is frozen)."""


class MailFacts:
    """What the rules derive from one mail's text, each computed once and shared.

    Depends only on the mail's (immutable) subject, text and html, the settings and the
    text limits: every rule reads at most `limits.body_text_chars` of the body.
    """

    def __init__(self, mail: Mail, settings: ClassifyConfig,
                 limits: TextLimits = TextLimits()) -> None:
        self.mail = mail
        self.settings = settings
        self.limits = limits
        self.compiled = _compiled(settings)
        self._opinions: dict[tuple[str, ...], dict[str, Evidence]] = {}

    @cached_property
    def body(self) -> str:
        return readable_text(self.mail.text, self.mail.html)[: self.limits.body_text_chars]

    @cached_property
    def folded_body(self) -> str:
        return fold(self.body)

    @cached_property
    def parts(self) -> BodyParts:
        return split_body(self.body, self.mail.subject, self.limits.quote_scan_chars)

    @cached_property
    def subject(self) -> str:
        """The subject without reply prefixes."""
        return strip_subject_prefixes(self.mail.subject)

    @cached_property
    def forwarded_own(self) -> str:
        """The own text of forwarded mail, inline or attached as message/rfc822 ("" when
        nothing was forwarded): it counts as the customer's words."""
        texts = (self.parts.forwarded, self.mail.attached_text)
        limit = self.limits.quote_scan_chars
        return "\n\n".join(forwarded_message_text(t, limit) for t in texts if t.strip()).strip()

    @cached_property
    def own_sentences(self) -> tuple[str, ...]:
        """Folded sentences of the subject and the sender's own text."""
        return sentences(self.subject) + sentences(self.parts.own)

    @cached_property
    def own_joined(self) -> str:
        return "\n".join(self.own_sentences)

    @cached_property
    def own_describes(self) -> bool:
        """Whether the sender's own text (without the subject) describes something."""
        return _describes(self.parts.own, "", self.settings, self.compiled)

    @cached_property
    def request_sentences(self) -> tuple[str, ...]:
        """The subject, the sender's own text and forwarded mail: the request."""
        return self.own_sentences + sentences(self.forwarded_own)

    @cached_property
    def request_joined(self) -> str:
        return "\n".join(self.request_sentences)

    @cached_property
    def forwarded_sentences(self) -> tuple[str, ...]:
        return sentences(self.forwarded_own)

    def opinion(self, texts: tuple[str, ...]) -> dict[str, Evidence]:
        """The second opinion's best evidence per label for `texts` (none: no model)."""
        model = self.compiled.model
        if model is None:
            return {}
        if texts not in self._opinions:
            signals = self.compiled.emergency_signals.search
            self._opinions[texts] = model.per_label(texts, {"emergency": signals})
        return self._opinions[texts]

    @cached_property
    def has_description(self) -> bool:
        if _describes(self.parts.own, self.subject, self.settings, self.compiled):
            return True
        return bool(self.forwarded_own) and _describes(
            self.forwarded_own, self.subject, self.settings, self.compiled
        )

    @cached_property
    def license_candidates(self) -> tuple[str, ...]:
        found = extract_license_numbers(self.mail.subject, self.settings)
        found += extract_license_numbers(self.body, self.settings)
        if self.mail.attached_text:
            found += extract_license_numbers(self.mail.attached_text, self.settings)
        return tuple(dict.fromkeys(found))


_LAST = threading.local()


def mail_facts(mail: Mail, ctx: RuleContext) -> MailFacts:
    """The shared facts of `mail`: the last mail's are kept (per thread), so every rule of
    one decision reuses them. The entry holds the mail itself, so identity is reliable."""
    facts: MailFacts | None = getattr(_LAST, "facts", None)
    if (facts is None or facts.mail is not mail or facts.settings is not ctx.settings
            or facts.limits is not ctx.text_limits):
        facts = _LAST.facts = MailFacts(mail, ctx.settings, ctx.text_limits)
    return facts


def body_text(mail: Mail) -> str:
    """The readable body (HTML converted when the mail has no plain text)."""
    return readable_text(mail.text, mail.html)


def request_sentences(mail: Mail, ctx: RuleContext) -> tuple[str, ...]:
    """Folded sentences of the customer's own words: the subject and the new text.

    A forwarded mail counts as the request only when the sender's own text describes
    nothing ("see below").
    """
    return mail_facts(mail, ctx).request_sentences


def _describes_text(folded: str, settings: ClassifyConfig, compiled: _Compiled) -> bool:
    folded = compiled.no_description.blank_out(folded)
    words = content_words(folded, compiled.stopwords, compiled.stop_prefixes)
    return len(words) >= settings.min_description_words


def _describes(text: str, subject: str, settings: ClassifyConfig, compiled: _Compiled) -> bool:
    return _describes_text(fold(f"{subject}\n{text}"), settings, compiled)


def has_description(mail: Mail, ctx: RuleContext) -> bool:
    """Whether the subject and the sender's own text describe a problem."""
    return mail_facts(mail, ctx).has_description


def license_candidates(mail: Mail, ctx: RuleContext) -> tuple[str, ...]:
    """License numbers in the subject, then the whole body (quotes and signature included)."""
    return mail_facts(mail, ctx).license_candidates


def request_licenses(mail: Mail, ctx: RuleContext) -> tuple[str, ...]:
    """License numbers of a new request: the mail's own, else the license of the closed
    ticket it answers (a customer writing again long after a ticket was closed)."""
    candidates = license_candidates(mail, ctx)
    if candidates:
        return candidates
    related = closed_ticket(mail, ctx)
    return (related.license,) if related is not None and related.license else ()


def chosen_license(mail: Mail, ctx: RuleContext) -> tuple[str | None, LicenseRecord | None]:
    """Of the registered candidates, the first in the registry's order; with none
    registered, the first candidate (unregistered)."""
    candidates = request_licenses(mail, ctx)
    registered = [(n, r) for n in candidates if (r := ctx.registry.get(n)) is not None]
    if registered:
        return min(registered, key=lambda pair: ctx.registry.rank(pair[0]))
    return (candidates[0] if candidates else None), None


def mail_language(mail: Mail, ctx: RuleContext) -> str:
    """The reply language of the customer's text ("cs" for Czech and Slovak, else "en")."""
    facts = mail_facts(mail, ctx)
    compiled = facts.compiled
    parts = facts.parts
    text = f"{facts.subject}\n{parts.own or parts.forwarded}"
    return detect_language(text, compiled.english, compiled.czech, ctx.default_language)


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
    domain = (record.email_domain if record else _domain(ticket.customer_email)).lower()
    return bool(domain) and not is_freemail(domain, ctx) and _domain(sender) == domain


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


def _header_values(mail: Mail, name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in mail.headers.get(name, ()))


def _has_header(mail: Mail, name: str) -> bool:
    return name in mail.headers


def _local_part(address: str | None) -> str:
    return (address or "").split("@", 1)[0].lower()


def _domain(address: str | None) -> str:
    return (address or "").rpartition("@")[2].lower()


# --- automatic mail ------------------------------------------------------------------------

OWN_MESSAGE_ID = re.compile(r"<(?:ticket|mailbot)-[^@<>\s]*@([^<>\s]+)>", re.I)
"""Message-IDs mailbot makes (`domain.ticket_message_id`, `other_message_id`)."""


def own_mail(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Mail that mailbot sent itself (loop header, our address, our Message-ID) comes back."""
    if _has_header(mail, LOOP_HEADER.lower()):
        return Finding(DecisionKind.IGNORE_AUTO, LOOP_HEADER)
    for value in _header_values(mail, "x-loop"):  # the conventional loop header (RFC 3834 §5)
        if any(address in value.lower() for address in ctx.own_addresses):
            return Finding(DecisionKind.IGNORE_AUTO, f"x-loop: {value[:80]}")
    if mail.from_addr and mail.from_addr.lower() in ctx.own_addresses:
        return Finding(DecisionKind.IGNORE_AUTO, f"from {mail.from_addr}")
    m = OWN_MESSAGE_ID.fullmatch((mail.message_id or "").strip())
    if m and m.group(1).lower() == ctx.message_id_domain:
        return Finding(DecisionKind.IGNORE_AUTO, f"message-id {mail.message_id}")
    return None


_DAEMONS = re.compile(r"(mailer-?daemon|mail-?daemon|post_?master|mdaemon)")
_ROBOTS = re.compile(r"(no-?reply|do-?not-?reply|donotreply|bounces?|.+-bounces?|.+-request)(\+.*)?")
_DAEMON_NAMES = ("mail delivery system", "mail delivery subsystem", "mailer-daemon", "postmaster")


def bounce(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Delivery failures: RFC 3464 reports, null Return-Path, MAILER-DAEMON, Exchange NDRs."""
    if mail.content_type == "multipart/report" and mail.report_type.lower() == "delivery-status":
        return Finding(DecisionKind.IGNORE_AUTO, "report-type=delivery-status", flags=BOUNCE)
    for path in _header_values(mail, "return-path") or (mail.return_path or "",):
        if path.replace(" ", "") in ("<>", "<<>>"):
            return Finding(DecisionKind.IGNORE_AUTO, "return-path <>", flags=BOUNCE)
    if _DAEMONS.fullmatch(_local_part(mail.from_addr)):
        return Finding(DecisionKind.IGNORE_AUTO, f"from {mail.from_addr}", flags=BOUNCE)
    if fold(mail.from_name) in _DAEMON_NAMES:
        return Finding(DecisionKind.IGNORE_AUTO, f"from name {mail.from_name}", flags=BOUNCE)
    for name in ("x-ms-exchange-message-is-ndr", "x-failed-recipients"):
        if _has_header(mail, name):
            return Finding(DecisionKind.IGNORE_AUTO, name, flags=BOUNCE)
    facts = mail_facts(mail, ctx)
    hit = facts.compiled.bounce_body.first(facts.folded_body)
    if hit:
        return Finding(DecisionKind.IGNORE_AUTO, f"body: {hit}", flags=BOUNCE)
    return None


def robot_sender(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Senders nobody reads (no-reply, list bounce and request addresses) get no answer."""
    local = _local_part(mail.from_addr)
    if _ROBOTS.fullmatch(local):
        return Finding(DecisionKind.IGNORE_AUTO, f"from {mail.from_addr}")
    return None


def read_receipt(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Read receipts (RFC 8098 disposition notifications) need no answer."""
    if mail.report_type.lower() == "disposition-notification":
        return Finding(DecisionKind.IGNORE_AUTO, "report-type=disposition-notification")
    if mail.content_type == "message/disposition-notification":
        return Finding(DecisionKind.IGNORE_AUTO, mail.content_type)
    return None


def feedback_report(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Abuse and feedback-loop reports (RFC 5965 ARF) are about mail, not support requests."""
    if mail.report_type.lower() == "feedback-report":
        return Finding(DecisionKind.IGNORE_AUTO, "report-type=feedback-report")
    if any(a.content_type == "message/feedback-report" for a in mail.attachments):
        return Finding(DecisionKind.IGNORE_AUTO, "message/feedback-report part")
    return None


_AUTO_PRECEDENCE = frozenset(("bulk", "junk", "list", "auto_reply", "auto-reply"))


def auto_reply_headers(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Auto-Submitted other than "no" (RFC 3834), X-Autoreply and kin, Precedence bulk/junk/list."""
    for value in _header_values(mail, "auto-submitted"):
        token = value.split(";", 1)[0].strip().lower()
        if token and token != "no":
            return Finding(DecisionKind.IGNORE_AUTO, f"auto-submitted: {token}")
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress", "x-autogenerated"):
        if _has_header(mail, name):
            return Finding(DecisionKind.IGNORE_AUTO, name)
    for value in _header_values(mail, "precedence"):
        if value.lower() in _AUTO_PRECEDENCE:
            return Finding(DecisionKind.IGNORE_AUTO, f"precedence: {value.lower()}")
    return None


def mailing_list(mail: Mail, ctx: RuleContext) -> Finding | None:
    """List mail and newsletters (List-Id, List-Unsubscribe: RFC 2919, 2369) are not requests."""
    for name in ("list-id", "list-unsubscribe"):
        if _has_header(mail, name):
            return Finding(DecisionKind.IGNORE_AUTO, name)
    return None


def bulk_footer(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Newsletters and spam without list headers, known by their opt-out footer."""
    facts = mail_facts(mail, ctx)
    parts = facts.parts
    hit = facts.compiled.bulk_body.first(fold(f"{parts.own}\n{parts.signature}"))
    return Finding(DecisionKind.IGNORE_AUTO, hit) if hit else None


def out_of_office(mail: Mail, ctx: RuleContext) -> Finding | None:
    """An absence notice without any automatic-mail header: a short own text that opens with
    "I am out of the office until …" (a request that merely mentions an absence is longer)."""
    facts = mail_facts(mail, ctx)
    opening = sentences(facts.parts.own)[:3]
    if not opening or len(facts.parts.own.split()) > 60:
        return None
    hit = facts.compiled.out_of_office.first("\n".join(opening))
    return Finding(DecisionKind.IGNORE_AUTO, f"out of office: {hit}") if hit else None


def auto_subject(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Out-of-office notices, receipts and bounces that only their subject gives away."""
    hit = mail_facts(mail, ctx).compiled.auto_subject.first(fold(mail.subject))
    return Finding(DecisionKind.IGNORE_AUTO, hit) if hit else None


def spam_verdict(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Mail our upstream spam filter judged spam (`classify.spam_verdicts`, e.g.
    `X-Spam-Flag: YES`) is kept but never answered and never a ticket. Every value of the
    header is looked at: a "no" the sender wrote cannot hide our MTA's "yes"."""
    for verdict in ctx.settings.spam_verdicts:
        for value in _header_values(mail, verdict.header.lower()):
            if _spam_pattern(verdict.pattern).match(value):
                shown = " ".join(value.split())
                shown = shown if len(shown) <= 60 else shown[:59] + "…"
                return Finding(DecisionKind.IGNORE_AUTO, f"spam verdict {verdict.header}: {shown}")
    return None


@lru_cache(maxsize=64)
def _spam_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# --- unsubscribe, tickets --------------------------------------------------------------------


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
        text += tuple(f"{subject} {s}" for s in sentences(facts.parts.own))
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


def staff_reply(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Mail from the staff about a ticket goes to that ticket, if it proves it is from staff
    (:mod:`mailbot.classify.staff_auth`); otherwise it is noted as suspicious and handled
    as a customer's mail."""
    ref = known_ticket(mail, ctx) if ctx.staff.is_staff_address(mail.from_addr) else None
    if ref is None:
        return None
    verdict = check_staff(mail, ctx.staff, ref, ctx.now.astimezone(ctx.zone).date())
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


# --- new requests ----------------------------------------------------------------------------


def incomplete_request(mail: Mail, ctx: RuleContext) -> Finding | None:
    """A new request needs a description of the problem and a license number."""
    missing = []
    if not has_description(mail, ctx):
        missing.append("description")
    if not request_licenses(mail, ctx):
        missing.append("license")
    if not missing:
        return None
    return Finding(DecisionKind.REJECT_INCOMPLETE, ",".join(missing),
                   missing=tuple(sorted(missing)), flags=NEW_REQUEST)


def unknown_license(mail: Mail, ctx: RuleContext) -> Finding | None:
    """No license number the mail gives is in the registry."""
    number, record = chosen_license(mail, ctx)
    if number is None or record is not None:
        return None
    return Finding(DecisionKind.REJECT_UNKNOWN_LICENSE, number, flags=NEW_REQUEST)


def expired_license(mail: Mail, ctx: RuleContext) -> Finding | None:
    """The license's support has ended (or its tier gives none)."""
    number, record = chosen_license(mail, ctx)
    if record is None:
        return None
    valid, ends_on = entitlement_at(record, ctx.now, ctx.zone)
    if valid:
        return None
    return Finding(DecisionKind.REJECT_EXPIRED, f"{number} {record.tier.value} ends {ends_on}",
                   flags=NEW_REQUEST)


def out_of_scope(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Work the support service does not do (exports, training, whole setups, development)."""
    facts = mail_facts(mail, ctx)
    text, joined = facts.request_sentences, facts.request_joined
    for compiled in facts.compiled.scope:
        hit = compiled.match(text, joined)
        if hit:
            reason = compiled.rule.reason
            return Finding(DecisionKind.REJECT_SCOPE, f"{reason}: {hit}", scope_reason=reason,
                           flags=NEW_REQUEST)
    model = ctx.settings.model
    sure = weigh(facts.opinion(text), SCOPE_LABELS, "in_scope", model.scope_threshold,
                 model.scope_margin)
    if sure is not None:
        top, other = sure
        return Finding(DecisionKind.REJECT_SCOPE, _opinion_detail(top, "in_scope", other),
                       scope_reason=top.label, flags=NEW_REQUEST)
    return None


SCOPE_LABELS = ("data_export", "training", "global_configuration", "custom_development")
"""The second opinion's labels for work outside the support service (scope reasons)."""


def _opinion_detail(top: Evidence, against: str, other: float) -> str:
    return (f"model {top.label} {top.score:.2f} vs {against} {other:.2f}: "
            f"\"{top.text[:80]}\" ~ \"{top.anchor[:60]}\"")


def emergency(mail: Mail, ctx: RuleContext) -> Finding | None:
    """The system stopped for everyone (server down, nobody can clock in): an emergency ticket."""
    facts = mail_facts(mail, ctx)
    text, joined = facts.request_sentences, facts.request_joined
    not_emergency = facts.compiled.not_emergency.search
    if not_emergency(joined) and any(not_emergency(s) for s in text):
        return None
    own, forwarded = facts.own_sentences, facts.forwarded_sentences
    own_joined = facts.own_joined
    for compiled in facts.compiled.emergency:
        hit = compiled.match(own, own_joined)
        # A forwarded report counts unless the sender's own words say it is over
        # ("that was last week and is solved"): their words are the newer ones.
        if not hit and forwarded and not facts.compiled.resolved.search(own_joined):
            hit = compiled.match(forwarded)
        if hit:
            reason = compiled.rule.reason
            return Finding(DecisionKind.TICKET, f"{reason}: {hit}", priority=Priority.EMERGENCY,
                           flags=NEW_REQUEST)
    model = ctx.settings.model
    told = own if forwarded and facts.compiled.resolved.search(own_joined) else text
    sure = weigh(facts.opinion(told), ("emergency",), "normal", model.emergency_threshold,
                 model.emergency_margin)
    if sure is not None:
        top, other = sure
        return Finding(DecisionKind.TICKET, _opinion_detail(top, "normal", other),
                       priority=Priority.EMERGENCY, flags=NEW_REQUEST)
    return None


def new_ticket(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Every complete, entitled, in-scope request becomes a normal ticket."""
    return Finding(DecisionKind.TICKET, priority=Priority.NORMAL, flags=NEW_REQUEST)


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


def entitlement_end(record: LicenseRecord, now: datetime, zone: ZoneInfo) -> date | None:
    """The last day of support of `record` (None: open-ended or no support)."""
    return entitlement_at(record, now, zone).ends_on
