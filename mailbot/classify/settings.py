"""The `[classify]` section of the configuration: patterns and phrase lists the rules use.

Phrases are matched on text folded to lower case without diacritics (see
:func:`mailbot.classify.text.fold`), so write them folded too; the validator folds them anyway.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ScopeRule(BaseModel):
    """Phrases that put a request out of scope, with the reason reported to the customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
    phrases: tuple[str, ...]


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A license number: 8 digits, optionally split 4+4 by a hyphen or a space.
    license_pattern: str = r"(?<![\d-])(\d{4})[- ]?(\d{4})(?![\d-])"
    # Words that must stand shortly before a license number (folded).
    license_context: tuple[str, ...] = (
        "licence",
        "license",
        "licencni cislo",
        "licencne cislo",
        "c. licence",
        "cislo licence",
        "license no",
        "lic",
    )
    # How many characters may lie between the context word and the number.
    license_context_window: int = Field(default=40, ge=1, le=200)
    scope: tuple[ScopeRule, ...] = ()
    emergency_phrases: tuple[str, ...] = ()
    not_emergency_phrases: tuple[str, ...] = ()
    unsubscribe_phrases: tuple[str, ...] = ()
    auto_subject_phrases: tuple[str, ...] = ()
    no_description_phrases: tuple[str, ...] = ()
    # A description needs at least this many words of the customer's own text.
    min_description_words: int = Field(default=6, ge=0, le=100)

    @field_validator("license_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value
