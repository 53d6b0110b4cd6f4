"""What the rules consult: the context of one decision and the facts of one mail.

:class:`RuleContext` holds everything besides the mail (settings, registry, ticket index, clock);
:class:`MailFacts` what the rules derive from the mail's text, computed once per mail and shared
by every rule of one decision. :class:`Finding` is what a rule returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload
from zoneinfo import ZoneInfo

from mailbot.classify.entitlement import PRAGUE
from mailbot.classify.language import detect_language
from mailbot.classify.license import (
    extract_folded_license_numbers,
    extract_license_numbers,
    without_license_numbers,
)
from mailbot.classify.learned import request_features
from mailbot.classify.opinion import AnchorModel, Evidence
from mailbot.classify.phrases import IdentityCache, compiled_rule, phrase_set
from mailbot.classify.settings import ClassifyConfig
from mailbot.classify.staff_auth import StaffPolicy
from mailbot.classify.text import (
    BodyParts,
    TextLimits,
    fold,
    folded_content_words,
    forwarded_message_text,
    join_folded,
    readable_text,
    sentences,
    split_body,
)
from mailbot.domain import DecisionKind, LicenseRecord, Mail, Priority, TicketInfo
from mailbot.subjects import REPLY_PREFIX, strip_subject_prefixes

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


SCOPE_LABELS = ("data_export", "training", "global_configuration", "custom_development")
"""The second opinion's labels for work outside the support service (scope reasons)."""

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
        self.description_faults = phrase_set(model.description_faults)
        self.description_fault_exceptions = phrase_set(model.description_fault_exceptions)
        self.scope_signals = phrase_set(model.scope_signals) if model.scope_signals else None
        self.scope_faults = phrase_set(model.scope_faults)
        self.not_emergency = phrase_set(settings.not_emergency_phrases)
        self.elsewhere = phrase_set(settings.elsewhere_phrases)
        self.nowhere = phrase_set(settings.nowhere_phrases)
        self.resolved = phrase_set(settings.resolved_phrases)
        self.ongoing = phrase_set(settings.ongoing_phrases)
        self.no_description = phrase_set(settings.no_description_phrases)
        self.vague_trouble = phrase_set(settings.vague_trouble_phrases)
        self.unsubscribe = tuple(compiled_rule(r) for r in settings.unsubscribe)
        self.scope = tuple(compiled_rule(r) for r in settings.scope)
        self.emergency = tuple(compiled_rule(r) for r in settings.emergency)


_compiled: IdentityCache[ClassifyConfig, _Compiled] = IdentityCache(_Compiled, 16)
"""The compiled form of the `[classify]` settings (the config is frozen)."""


_T = TypeVar("_T")


class _once(Generic[_T]):  # noqa: N801 - used as a decorator, like property
    """A property computed on first use and kept in the instance's ``__dict__`` (the
    attribute then shadows this descriptor): `functools.cached_property` without its
    per-access lock (Python 3.11), which cost more than most facts; a MailFacts is used by
    one decision in one thread, and a fact computed twice is the same value."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _once[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _once[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


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

    @_once
    def body(self) -> str:
        return readable_text(self.mail.text, self.mail.html)[: self.limits.body_text_chars]

    @_once
    def folded_body(self) -> str:
        return fold(self.body)

    @_once
    def parts(self) -> BodyParts:
        return split_body(self.body, self.mail.subject, self.limits.quote_scan_chars,
                          self.mail.from_name)

    @_once
    def subject(self) -> str:
        """The subject without reply prefixes."""
        return strip_subject_prefixes(self.mail.subject)

    @_once
    def forwarded_own(self) -> str:
        """The own text of forwarded mail, inline or attached as message/rfc822 ("" when
        nothing was forwarded): it counts as the customer's words."""
        texts = (self.parts.forwarded, self.mail.attached_text)
        limit = self.limits.quote_scan_chars
        return "\n\n".join(forwarded_message_text(t, limit) for t in texts if t.strip()).strip()

    def _said(self, folded: tuple[str, ...]) -> tuple[str, ...]:
        """Folded sentences without license mentions ("licence 1234 5678"), which say
        nothing about the request; sentences left without a word are dropped."""
        said = (without_license_numbers(s, self.settings) for s in folded)
        return tuple(s for s in said if s)

    @_once
    def own_text_sentences(self) -> tuple[str, ...]:
        """Folded sentences of the sender's own text (without the subject)."""
        return sentences(self.parts.own)

    @_once
    def subject_quoted(self) -> bool:
        """Whether the subject is the earlier mail's: a reply ("Re: …", no forward among its
        prefixes) that quotes the mail it answers. Its subject is that mail's topic (our
        sales offer for an export, say), no more the sender's words than the quote is."""
        subject = self.mail.subject
        if REPLY_PREFIX.match(subject) is None or not self.parts.quoted:
            return False
        return REPLY_PREFIX.sub("", subject).strip() == self.subject  # no "Fwd:" left

    @_once
    def own_sentences(self) -> tuple[str, ...]:
        """Folded sentences of the subject and the sender's own text (license mentions
        left out); a quoted reply's subject is not the sender's (:attr:`subject_quoted`)."""
        own = self._said(self.own_text_sentences)
        return own if self.subject_quoted else self._said(sentences(self.subject)) + own

    @_once
    def own_joined(self) -> str:
        return "\n".join(self.own_sentences)

    @_once
    def outage_over(self) -> bool:
        """Whether the sender's own words say an outage is over ("a restart fixed it, since
        then it runs") and none says it still goes on: tense, not the words of the outage.
        A phrase is looked for within a sentence ("the morning shift is already here.
        The server runs" says nothing is over)."""
        compiled, own = self.compiled, self.own_joined
        return (compiled.resolved.in_a_sentence(self.own_sentences, own) is not None
                and not compiled.ongoing.search(own))

    @_once
    def own_describes(self) -> bool:
        """Whether the sender's own text (without the subject) describes something."""
        return _describes_text(self.parts.own_folded, self.settings, self.compiled)

    @_once
    def request_sentences(self) -> tuple[str, ...]:
        """The subject, the sender's own text and forwarded mail: the request."""
        return self.own_sentences + self.forwarded_sentences

    @_once
    def request_windows(self) -> tuple[str, ...]:
        """The request's sentences, then each two neighbouring ones of the same part (own
        text, forwarded mail) joined: a request often names the system in one sentence and
        asks for the work in the next ("Our payroll is done in X. Could the hours flow
        there by themselves?")."""
        own, forwarded = self.own_sentences, self.forwarded_sentences
        pairs = [f"{a} {b}" for part in (own, forwarded) for a, b in zip(part, part[1:])]
        return (*self.request_sentences, *pairs)

    @_once
    def request_joined(self) -> str:
        return "\n".join(self.request_sentences)

    @_once
    def scope_hit(self) -> tuple[str, str] | None:
        """The first out-of-scope phrase rule that hits in the request: its reason and the
        evidence; None when none does."""
        windows, joined = self.request_windows, self.request_joined
        for compiled in self.compiled.scope:
            hit = compiled.match(windows, joined)
            if hit:
                return compiled.rule.reason, hit
        return None

    @_once
    def forwarded_sentences(self) -> tuple[str, ...]:
        return self._said(sentences(self.forwarded_own))

    @_once
    def request_features(self) -> tuple[str, ...]:
        """The learned models' features of the request (:func:`learned.request_features`)."""
        return request_features(self.request_sentences)

    def opinion(self, texts: tuple[str, ...]) -> dict[str, Evidence]:
        """The second opinion's best evidence per label for `texts` (none: no model)."""
        model = self.compiled.model
        if model is None:
            return {}
        if texts not in self._opinions:
            # A signal in a text (a sentence, or two joined by a space) occurs in the texts
            # joined by newlines: only the signals found there are looked for in each.
            joined = "\n".join(texts)
            emergency = self.compiled.emergency_signals
            in_emergency = emergency.occurring(joined)
            require: dict[str, Callable[[str], bool]] = {
                "emergency": lambda text: emergency.first_of(text, in_emergency) is not None}
            scope = self.compiled.scope_signals
            if scope is not None:
                in_scope = scope.occurring(joined)
                asks = lambda text: scope.first_of(text, in_scope) is not None  # noqa: E731
                require.update(dict.fromkeys(SCOPE_LABELS, asks))
            self._opinions[texts] = model.per_label(texts, require)
        return self._opinions[texts]

    @_once
    def has_description(self) -> bool:
        """Whether the subject and the sender's own text describe something; a quoted
        reply's subject is the earlier mail's topic (:attr:`subject_quoted`), our
        newsletter's say, and describes nothing of the sender's."""
        if self.subject_quoted:
            own = self.parts.own_folded
        else:
            own = join_folded((fold(self.subject), self.parts.own_folded))  # fold(subject\nown)
        if _describes_text(own, self.settings, self.compiled):
            return True
        return bool(self.forwarded_own) and _describes(
            self.forwarded_own, self.subject, self.settings, self.compiled
        )

    @_once
    def license_candidates(self) -> tuple[str, ...]:
        found = extract_license_numbers(self.mail.subject, self.settings)
        found += extract_folded_license_numbers(self.folded_body, self.settings)
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
    needed = settings.min_description_words
    words = folded_content_words(folded, compiled.stopwords, compiled.stop_prefixes, needed)
    return len(words) >= needed


def _describes(text: str, subject: str, settings: ClassifyConfig, compiled: _Compiled) -> bool:
    return _describes_text(fold(f"{subject}\n{text}"), settings, compiled)


def has_description(mail: Mail, ctx: RuleContext) -> bool:
    """Whether the subject and the sender's own text describe a problem."""
    return mail_facts(mail, ctx).has_description


def license_candidates(mail: Mail, ctx: RuleContext) -> tuple[str, ...]:
    """License numbers in the subject, then the whole body (quotes and signature included)."""
    return mail_facts(mail, ctx).license_candidates



def mail_language(mail: Mail, ctx: RuleContext) -> str:
    """The reply language of the customer's text ("cs" for Czech and Slovak, else "en")."""
    facts = mail_facts(mail, ctx)
    compiled = facts.compiled
    parts = facts.parts
    text = f"{facts.subject}\n{parts.own or parts.forwarded}"
    folded = join_folded((fold(facts.subject), parts.own_folded)) if parts.own else None
    return detect_language(text, compiled.english, compiled.czech, ctx.default_language, folded)


# --- headers and addresses -----------------------------------------------------------------


def header_values(mail: Mail, name: str) -> tuple[str, ...]:
    values = mail.headers.get(name)
    return tuple(v.strip() for v in values) if values else ()


def has_header(mail: Mail, name: str) -> bool:
    return name in mail.headers


def local_part(address: str | None) -> str:
    return (address or "").split("@", 1)[0].lower()


def address_domain(address: str | None) -> str:
    return (address or "").rpartition("@")[2].lower()
