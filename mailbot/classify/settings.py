"""The `[classify]` section of the configuration: patterns and phrase lists the rules use.

Phrases are matched on text folded to lower case without diacritics (see
:func:`mailbot.classify.text.fold`), so write them folded too; the validator folds them anyway.

Phrase syntax (see :mod:`mailbot.classify.phrases`): words are matched whole and in order,
with only punctuation or spaces between them; ``word*`` matches any word that starts with
``word`` (Czech and Slovak inflect: ``skoleni*`` finds školení, školením, školenie); ``..``
between two words allows up to three other words there (``nejde .. spustit``).

A :class:`PhraseRule` is tested sentence by sentence: it hits in a sentence where one of its
``phrases`` occurs, or where every group of ``all_of`` has a phrase, unless one of its
``unless`` phrases occurs in that same sentence, and none of its ``unless_anywhere``
phrases occurs in any sentence.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailbot.classify.learned import TrainedModel
from mailbot.classify.text import fold


def _fold_all(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for v in (fold(x) for x in values) if v)


class PhraseRule(BaseModel):
    """Phrases that make one finding (a scope reason, an emergency signal, an unsubscribe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
    phrases: tuple[str, ...] = ()
    all_of: tuple[tuple[str, ...], ...] = ()
    unless: tuple[str, ...] = ()
    # Phrases that cancel the rule wherever they stand in the text looked at (another
    # sentence says the export already runs, or that it fails: a problem report).
    unless_anywhere: tuple[str, ...] = ()

    @field_validator("phrases", "unless", "unless_anywhere")
    @classmethod
    def _fold_phrases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _fold_all(value)

    @field_validator("all_of")
    @classmethod
    def _fold_groups(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        groups = tuple(_fold_all(g) for g in value)
        if any(not g for g in groups):
            raise ValueError("every all_of group needs at least one phrase")
        return groups


class ModelConfig(BaseModel):
    """The second opinion (:mod:`mailbot.classify.opinion`): anchor sentences per label and
    how sure it must be to decide where the phrase rules are silent.

    Scope: an out-of-scope label (`data_export`, `training`, `global_configuration`,
    `custom_development`) must score `scope_threshold` and lead `in_scope` by `scope_margin`.
    Emergency: `emergency` must score `emergency_threshold` and lead `normal` by
    `emergency_margin`. Scores are cosines, 0 to 1.

    Before the anchors, where the phrase rules are silent, the models `learned` names (a file
    written by `mailbot model train`, :mod:`mailbot.classify.learned`) are asked: a request
    is out of scope when their probability of it is `learned_scope_threshold` or more, or
    `learned_scope_with_anchors` or more where the anchors lean out of scope too (their best
    out-of-scope label above in scope), in scope (the anchors not asked) at
    `learned_in_scope_below` or less; an emergency likewise
    with `learned_emergency_threshold` and `learned_normal_below`. In between, the anchors
    decide. A phrase rule's out-of-scope hit is overruled only where the model's probability
    of in scope reaches `learned_overrule_in_scope`. The loaded file is `trained` (set by the
    config loader, never by the TOML).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    enabled: bool = True
    learned: str | None = None
    learned_scope_threshold: float = Field(default=0.95, ge=0, le=1)
    learned_scope_with_anchors: float | None = Field(default=None, ge=0, le=1)
    learned_in_scope_below: float = Field(default=0.1, ge=0, le=1)
    learned_emergency_threshold: float = Field(default=0.9, ge=0, le=1)
    learned_normal_below: float = Field(default=0.05, ge=0, le=1)
    # A request the word count takes as described lacks a description when the learned
    # model's probability of that is this or more ("please have a technician call us", "from
    # December Mr Novák looks after the system"); None: the word count alone decides.
    learned_no_description: float | None = Field(default=None, ge=0, le=1)
    # ...but never where a sentence of the request names a fault ("the server went down",
    # "balances are wrong"): what a model of few examples learnt from courtesy must not
    # outweigh a problem stated.
    description_faults: tuple[str, ...] = ()
    # Words the fault words' patterns would take that name no fault ("ne*": "někdo", "neboť",
    # "nejlépe"): blanked out before the search.
    description_fault_exceptions: tuple[str, ...] = ()
    # A phrase rule's out-of-scope hit stands unless the learned model is this sure the
    # request is in scope (an export or training only mentioned); None: it always stands.
    learned_overrule_in_scope: float | None = Field(default=None, ge=0, le=1)
    trained: TrainedModel | None = Field(default=None, exclude=True, repr=False)

    @property
    def learned_models(self) -> TrainedModel | None:
        """The learned models the rules ask: none when the second opinion is switched off."""
        return self.trained if self.enabled else None
    scope_threshold: float = Field(default=0.5, ge=0, le=1)
    scope_margin: float = Field(default=0.15, ge=0, le=1)
    emergency_threshold: float = Field(default=0.5, ge=0, le=1)
    emergency_margin: float = Field(default=0.15, ge=0, le=1)
    anchors: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Words of failure an emergency anchor's match must contain (not just "morning shift").
    emergency_signals: tuple[str, ...] = ()
    # Words of asking an out-of-scope anchor's match must contain (a sentence that only
    # states something, "both managers have the same role", asks for no work); () = any.
    scope_signals: tuple[str, ...] = ()
    # A fault reported ("the month-end closing crashes with an error"): where no phrase rule
    # of scope hits, the learned model below learned_scope_threshold and the anchors do not
    # reject such a request (they read its topic words, not what it asks for).
    scope_faults: tuple[str, ...] = ()

    @field_validator("emergency_signals", "scope_signals", "description_faults",
                     "description_fault_exceptions", "scope_faults")
    @classmethod
    def _fold_signals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _fold_all(value)

    @field_validator("anchors")
    @classmethod
    def _fold_anchors(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {label: _fold_all(texts) for label, texts in value.items()}


# The name the first version of this section used for scope entries.
ScopeRule = PhraseRule


class SpamVerdict(BaseModel):
    """An upstream spam filter's verdict: a header whose value, matched from its start
    with `pattern` (a regular expression, case-insensitive), says the mail is spam."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str
    pattern: str

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not re.fullmatch(r"[!-9;-~]{1,76}", value):
            raise ValueError(f"not a header field name: {value!r}")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


DEFAULT_SPAM_VERDICTS = (
    SpamVerdict(header="X-Spam-Flag", pattern=r"yes\b"),  # SpamAssassin
    SpamVerdict(header="X-Spam-Status", pattern=r"yes\b"),  # SpamAssassin: "Yes, score=…"
    SpamVerdict(header="X-Spam", pattern=r"yes\b"),  # Rspamd
)


class ClassifyConfig(BaseModel):
    """Patterns and phrase lists of the classify rules (the values live in mailbot.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A license number: 8 digits, optionally split 4+4 by a hyphen or a space; never part of
    # a longer digit run (9 digits, a phone number's groups, an account "123456789/0800"),
    # nor glued to letters (a DIČ "CZ27712345"). Eight digits in one run may stand before
    # a space and another number: the next line of a signature, folded into this one
    # ("lic. č. 45091876 / 0905 318 442").
    license_pattern: str = (
        r"(?<![\w/+])(?<!\d[ .-])(?:\d{8}(?![.-]?\d)|\d{4}[- ]?\d{4}(?![ .-]?\d))"
        r"(?!/\d)(?![.,]\d)"
    )
    # Words that must stand shortly before a license number (phrase syntax, folded).
    license_context: tuple[str, ...] = ("licen*", "lic", "c. licence", "license no")
    # How many characters may lie between the context word and the number.
    license_context_window: int = Field(default=40, ge=1, le=200)
    # Words that, standing between the context word and a number, mean the number is
    # something else (an IČO, a phone, an invoice…).
    license_distractors: tuple[str, ...] = (
        "ico", "dic", "ic dph", "tel*", "mobil*", "phone", "fax", "faktur*", "invoice",
        "objednav*", "order", "uctu", "ucet", "account", "iban", "psc", "datum", "date",
    )
    scope: tuple[PhraseRule, ...] = ()
    emergency: tuple[PhraseRule, ...] = ()
    not_emergency_phrases: tuple[str, ...] = ()
    # What lies outside the product ("the network and the other systems work"): blanked out
    # before looking for not_emergency_phrases, which speak of a part of the product.
    elsewhere_phrases: tuple[str, ...] = ()
    # Not on a single one ("nejde spustit ani na jednom počítači"): read as "nikde"
    # (nowhere) by the emergency rules, so it is not taken for "na jednom počítači" (on one).
    nowhere_phrases: tuple[str, ...] = ()
    # The sender's own words that an outage is over ("that is solved now", "since the
    # restart it runs"), told of in their own text or in a mail they forward.
    resolved_phrases: tuple[str, ...] = ()
    # The sender's own words that it still goes on ("still nobody can clock in"): an outage
    # then is not over, whatever came back up on the way.
    ongoing_phrases: tuple[str, ...] = ()
    unsubscribe: tuple[PhraseRule, ...] = ()
    auto_subject_phrases: tuple[str, ...] = ()
    # The opening of an absence notice sent without automatic-mail headers.
    out_of_office_phrases: tuple[str, ...] = ()
    # Delivery-failure wording anywhere in a body (bounces without report or headers).
    bounce_body_phrases: tuple[str, ...] = ()
    # Opt-out footers of newsletters and spam, in the sender's own text and signature.
    bulk_body_phrases: tuple[str, ...] = ()
    no_description_phrases: tuple[str, ...] = ()
    # Trouble named only vaguely ("se objevily jisté potíže", "some issues", "not entirely
    # happy with how it behaves"): a request that says only this, and no sentence of which
    # names a fault (`model.description_faults`), describes nothing however long it is.
    vague_trouble_phrases: tuple[str, ...] = ()
    # Words that carry no description of a problem (greetings, pronouns, "call me",
    # "see the attachment", the product's own name…); ``word*`` stops every word so begun.
    description_stopwords: tuple[str, ...] = ()
    # A description needs at least this many content words in the subject and the
    # customer's own text (stopwords, numbers and words shorter than 3 letters not counted).
    min_description_words: int = Field(default=4, ge=0, le=100)
    # Words that mark a text as English for the reply language (else Czech/Slovak → "cs").
    english_words: tuple[str, ...] = ()
    czech_words: tuple[str, ...] = ()
    model: ModelConfig = ModelConfig()
    # Verdicts of the upstream spam filter that make a mail ignored (never answered, never a
    # ticket). Only a "yes" is honoured: a sender can write these headers too, and a forged
    # "yes" only harms the sender, while a forged "no" is never read.
    spam_verdicts: tuple[SpamVerdict, ...] = DEFAULT_SPAM_VERDICTS

    @field_validator("license_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator(
        "license_context",
        "license_distractors",
        "not_emergency_phrases",
        "elsewhere_phrases",
        "nowhere_phrases",
        "resolved_phrases",
        "ongoing_phrases",
        "auto_subject_phrases",
        "out_of_office_phrases",
        "bounce_body_phrases",
        "bulk_body_phrases",
        "no_description_phrases",
        "vague_trouble_phrases",
        "description_stopwords",
        "english_words",
        "czech_words",
    )
    @classmethod
    def _fold_phrases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _fold_all(value)
