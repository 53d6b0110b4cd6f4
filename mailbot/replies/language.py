"""Language choice, subjects and dates in the customer's language (pure).

Every mail mailbot writes takes its language from `choose_language` (the customer's, the
ticket's or the contact's, else the configured `replies.default_language`) and its subject
from here; the prefixes a reply drops come from :mod:`mailbot.subjects`, shared with classify.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final
from zoneinfo import ZoneInfo

from mailbot.replies.sanitize import SUBJECT_LIMIT, clean_header_text
from mailbot.subjects import REPLY_PREFIX

__all__ = [
    "LANGUAGES",
    "alert_subject",
    "choose_language",
    "command_error_subject",
    "format_date",
    "format_deadline",
    "notice_subject",
    "reply_subject",
    "ticket_reply_subject",
]

LANGUAGES: Final = ("cs", "en")

_CS_WEEKDAYS = ("pondělí", "úterý", "středa", "čtvrtek", "pátek", "sobota", "neděle")
_EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EN_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

_NO_SUBJECT = {"cs": "(bez předmětu)", "en": "(no subject)"}


def choose_language(wanted: str | None, default: str) -> str:
    """`wanted` when mailbot writes in it, else `default` (the configured default language)."""
    return wanted if wanted in LANGUAGES else default


def reply_subject(original: str, lang: str, ticket_number: str | None = None) -> str:
    """``Re: [#T-…] subject`` for a ticket, ``Re: subject`` otherwise; one Re:, one tag."""
    subject = clean_header_text(original, 1000)
    tag = f"[#{clean_header_text(ticket_number, 60)}]" if ticket_number else None
    previous = None
    while subject != previous:
        previous = subject
        subject = REPLY_PREFIX.sub("", subject)
        if tag:
            subject = subject.replace(tag, " ")
        subject = " ".join(subject.split())
    if not subject:
        subject = _NO_SUBJECT.get(lang, _NO_SUBJECT["en"])
    full = f"Re: {tag} {subject}" if tag else f"Re: {subject}"
    return clean_header_text(full, SUBJECT_LIMIT)



def ticket_reply_subject(subject: str, ticket_number: str) -> str:
    """``Re: [#T-…] subject`` of a relayed staff reply or a timed note to the customer (the
    ticket's subject as stored)."""
    shown = clean_header_text(subject, 200) or _NO_SUBJECT["cs"]
    return clean_header_text(f"Re: [#{ticket_number}] {shown}", 250)


_EMERGENCY = {"cs": "HAVÁRIE", "en": "EMERGENCY"}
_ALERT_WORDS = {"reminder": {"cs": "Blíží se termín", "en": "Deadline approaching"},
                "escalation": {"cs": "PO TERMÍNU", "en": "OVERDUE"},
                "emergency": _EMERGENCY}
_NOT_PROCESSED = {"cs": "Nezpracováno", "en": "Not processed"}


def notice_subject(ticket_number: str, subject: str, lang: str, *, emergency: bool) -> str:
    """A staff notice's subject: ``[#T-…] subject``, ``HAVÁRIE``/``EMERGENCY`` first."""
    prefix = f"{_EMERGENCY[lang]} " if emergency else ""
    return clean_header_text(f"{prefix}[#{ticket_number}] {subject}", 250)


def alert_subject(kind: str, ticket_number: str, subject: str, lang: str) -> str:
    """A reminder, escalation or emergency alert's subject: ``WORD: [#T-…] subject``."""
    return clean_header_text(f"{_ALERT_WORDS[kind][lang]}: [#{ticket_number}] {subject}", 250)


def command_error_subject(ticket_number: str, subject: str, lang: str) -> str:
    """The subject of the note that a staff reply was not acted on."""
    return clean_header_text(f"{_NOT_PROCESSED[lang]}: [#{ticket_number}] {subject}", 250)


# -- dates in the customer's language -----------------------------------------------------


def zone_label(zone: ZoneInfo) -> str:
    return zone.key.rsplit("/", 1)[-1].replace("_", " ")


def format_deadline(when: datetime, lang: str, zone: ZoneInfo) -> str:
    """E.g. ``středa 25. 11. 2026 16:00`` or ``Wednesday 25 November 2026, 16:00 (Prague time)``.

    Raises:
        ValueError: `when` is naive.
    """
    if when.tzinfo is None:
        raise ValueError("deadline must be an aware datetime")
    local = when.astimezone(zone)
    clock = f"{local.hour}:{local.minute:02d}"
    if lang == "cs":
        return f"{_CS_WEEKDAYS[local.weekday()]} {local.day}. {local.month}. {local.year} {clock}"
    return (
        f"{_EN_WEEKDAYS[local.weekday()]} {local.day} {_EN_MONTHS[local.month - 1]} "
        f"{local.year}, {clock} ({zone_label(zone)} time)"
    )


def format_date(day: date, lang: str) -> str:
    """E.g. ``31. 5. 2026`` or ``31 May 2026``."""
    if lang == "cs":
        return f"{day.day}. {day.month}. {day.year}"
    return f"{day.day} {_EN_MONTHS[day.month - 1]} {day.year}"


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


