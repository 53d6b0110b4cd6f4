"""Customer replies: a Decision + the inbound Mail → a ready-to-send EmailMessage (pure).

Templates live in ``<templates_dir>/replies/{kind}.{lang}.{txt|html}.j2`` and extend
``_layout.{txt|html}.j2``; the wording of each language is written once, in
``_texts.{lang}.j2``, and shared by the text and the HTML part.

Security (reliability.md §1):
- Customer text is only ever template *data*; nothing from a mail is compiled as a template.
  The HTML environment autoescapes, both are sandboxed and use StrictUndefined.
- Everything taken from the mail loses control characters (C0, C1, DEL, U+2028/U+2029,
  bidi and zero-width format characters) before it reaches a header, and the serialized
  message is re-parsed to prove it has exactly the headers we set (CPython 3.11.7 predates
  the generator fixes for CVE-2024-6923 and CVE-2026-0672).
- The recipient is the mail's From address only if email-validator accepts it; Reply-To is
  ignored, so a forged Reply-To cannot aim auto-replies at a third party.
- Not a reflector: a forged sender must not get the attacker's text delivered under our
  name. A reply quotes only a short excerpt (QUOTE_LINES lines, QUOTE_CHARS characters) and
  writes URLs and dotted host names in it, and in the greeting's name, defanged
  (``hxxps://evil[.]example``), so no mail client turns them into links.
"""

from __future__ import annotations

import email
import email.headerregistry
import email.parser
import email.policy
import email.quoprimime
import email.utils
import logging
import re
import textwrap
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config
from mailbot.domain import (
    LOOP_HEADER,
    Decision,
    DecisionKind,
    Mail,
    Priority,
    TicketView,
)
from mailbot.errors import ConfigError, MailbotError
from mailbot.ingest.limits import human_size

__all__ = [
    "NO_REPLY_KINDS",
    "REPLY_TEMPLATES",
    "ReplyRenderError",
    "ReplyRenderer",
    "clean_header_text",
    "format_date",
    "format_deadline",
    "reply_subject",
    "template_environments",
    "valid_address",
]

log = logging.getLogger(__name__)

REPLY_TEMPLATES: Final[Mapping[DecisionKind, str]] = {
    DecisionKind.TICKET: "ack",
    DecisionKind.REJECT_INCOMPLETE: "reject_incomplete",
    DecisionKind.REJECT_UNKNOWN_LICENSE: "reject_unknown_license",
    DecisionKind.REJECT_EXPIRED: "reject_expired",
    DecisionKind.REJECT_SCOPE: "reject_scope",
}
"""Template base name for each kind that gets an automatic reply."""

NO_REPLY_KINDS: Final[frozenset[DecisionKind]] = frozenset(
    {
        DecisionKind.IGNORE_AUTO,
        DecisionKind.UNSUBSCRIBE,
        DecisionKind.STAFF_REPLY,
        DecisionKind.FOLLOWUP,
        DecisionKind.QUARANTINED,
    }
)

LANGUAGES: Final = ("cs", "en")
SUBJECT_LIMIT: Final = 200
NAME_LIMIT: Final = 100
QUOTE_LINES: Final = 6
QUOTE_LINE_LIMIT: Final = 300
QUOTE_CHARS: Final = 300  # the whole excerpt of the customer's text in a reply
MAX_REFERENCES: Final = 20
TEXT_WIDTH: Final = 76

# Values for Decision.missing (labelled data: "license" and/or "description").
MISSING_LICENSE: Final = "license"
MISSING_DESCRIPTION: Final = "description"

_CS_WEEKDAYS = ("pondělí", "úterý", "středa", "čtvrtek", "pátek", "sobota", "neděle")
_EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EN_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

_NO_SUBJECT = {"cs": "(bez předmětu)", "en": "(no subject)"}

# Reply prefixes mail clients add (RFC 5322 §3.6.5 "Re:", and localized ones), with counters.
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|vs|odp|odpověď|antw)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.I)
_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII except < and >, no spaces
_BARE_MSG_ID = re.compile(r"[!-;=?-~]{1,248}@[!-;=?-~]{1,248}")


class ReplyRenderError(MailbotError):
    """A reply could not be built safely (bad input from mailbot itself, or a header check failed)."""


# -- sanitizing ---------------------------------------------------------------------------


def _is_unsafe(ch: str) -> bool:
    # Cc: C0/C1 controls incl. CR, LF, NUL, U+0085; Cf: bidi overrides, zero-width chars;
    # Zl/Zp: U+2028/U+2029; Cs: lone surrogates from surrogateescape decoding.
    return unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"}


class _UnsafeTable(dict[int, "int | str"]):
    """`str.translate` table: unsafe characters (see `_is_unsafe`) become `unsafe`, others
    stay; filled per character on first use (the same test, one lookup afterwards)."""

    def __init__(self, unsafe: str, overrides: Mapping[int, str] = {}) -> None:
        super().__init__(overrides)
        self._unsafe = unsafe

    def __missing__(self, code: int) -> int | str:
        value: int | str = self._unsafe if _is_unsafe(chr(code)) else code
        if len(self) < 65536:
            self[code] = value
        return value


_HEADER_UNSAFE = _UnsafeTable(" ")
_BODY_UNSAFE = _UnsafeTable("", {ord("\t"): " "})


def clean_header_text(value: str, limit: int = SUBJECT_LIMIT) -> str:
    """`value` on one line, safe for a header: control/format characters become spaces,
    runs of whitespace collapse, and the result is cut to `limit` characters (with "…").

    "=?" becomes "= ?": the email package decodes RFC 2047 encoded words it finds in a header
    value set as text (also inside a quoted display name), so "=?utf-8?q?=0D=0A…?=" in
    customer text would become a line break, a surrogate or another address."""
    cleaned = value.translate(_HEADER_UNSAFE).replace("=?", "= ?")
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def _clean_body_line(line: str) -> str:
    cleaned = line.translate(_BODY_UNSAFE).rstrip()
    if len(cleaned) > QUOTE_LINE_LIMIT:
        cleaned = cleaned[: QUOTE_LINE_LIMIT - 1] + "…"
    return cleaned


def _quote(text: str) -> tuple[list[str], bool]:
    """A short excerpt of the customer's text: at most QUOTE_LINES lines and QUOTE_CHARS
    characters (a line over the budget is cut at a word with "…"), defanged; and whether
    more followed."""
    # Only the head of a huge body is looked at; str.splitlines() also splits on
    # U+2028/U+2029/U+0085 and the other Unicode line separators.
    head_text = text[: QUOTE_LINES * QUOTE_LINE_LIMIT * 2]
    lines = [_clean_body_line(line) for line in head_text.splitlines()]
    cut = len(head_text) < len(text)
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    head: list[str] = []
    budget = QUOTE_CHARS
    for line in lines[:QUOTE_LINES]:
        if len(line) > budget:
            shortened = line[:budget].rsplit(" ", 1)[0] if " " in line[:budget] else line[:budget]
            head.append(shortened.rstrip() + "…")
            cut = True
            break
        head.append(line)
        budget -= len(line)
    truncated = cut or len(lines) > len(head)
    while head and not head[-1]:
        head.pop()
    return [defang(line) for line in head], truncated


# A URL's scheme and authority, and a dotted host name (also an address's domain, a "www."
# name or a file name: mail clients make links of all of those that end in a TLD).
_URL = re.compile(r"\b([a-z][a-z0-9+.-]{0,30})://([^\s/?#<>\"'\\]*)", re.IGNORECASE)
_HOST = re.compile(r"(?<![\w.-])(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]{1,62}(?![\w-])")
_DEFANGED_SCHEMES = {"http": "hxxp", "https": "hxxps"}


def _defang_url(m: re.Match[str]) -> str:
    scheme = m.group(1)
    shown = _DEFANGED_SCHEMES.get(scheme.lower())
    start = f"{shown}://" if shown else f"{scheme}[:]//"
    return start + m.group(2).replace(".", "[.]")


def defang(text: str) -> str:
    """`text` with its URLs and dotted host names made inert (``hxxps://evil[.]example/x``,
    ``www[.]evil[.]example``, ``eve@evil[.]example``): quoted customer text must not become
    links in a mail we send."""
    text = _URL.sub(_defang_url, text)
    return _HOST.sub(lambda m: m.group(0).replace(".", "[.]"), text)


def _clean_message_id(value: str | None) -> str | None:
    if not value:
        return None
    cleaned = clean_header_text(value, 1000).strip()
    if _MSG_ID.fullmatch(cleaned):
        return cleaned
    if _BARE_MSG_ID.fullmatch(cleaned):
        return f"<{cleaned}>"
    return None


def _references(mail: Mail, parent: str | None) -> list[str]:
    """RFC 5322 §3.6.4: the parent's References (or its single In-Reply-To) + its Message-ID."""
    chain = list(mail.references) or (list(mail.in_reply_to) if len(mail.in_reply_to) == 1 else [])
    ids: list[str] = []
    for raw in chain:
        for token in raw.split():
            mid = _clean_message_id(token)
            if mid and mid not in ids and mid != parent:
                ids.append(mid)
    if len(ids) > MAX_REFERENCES - 1:  # keep the thread root and the newest ones
        ids = [ids[0], *ids[-(MAX_REFERENCES - 2) :]]
    if parent:
        ids.append(parent)
    return ids


def reply_subject(original: str, lang: str, ticket_number: str | None = None) -> str:
    """``Re: [#T-…] subject`` for a ticket, ``Re: subject`` otherwise; one Re:, one tag."""
    subject = clean_header_text(original, 1000)
    tag = f"[#{clean_header_text(ticket_number, 60)}]" if ticket_number else None
    previous = None
    while subject != previous:
        previous = subject
        subject = _REPLY_PREFIX.sub("", subject)
        if tag:
            subject = subject.replace(tag, " ")
        subject = " ".join(subject.split())
    if not subject:
        subject = _NO_SUBJECT.get(lang, _NO_SUBJECT["en"])
    full = f"Re: {tag} {subject}" if tag else f"Re: {subject}"
    return clean_header_text(full, SUBJECT_LIMIT)


# -- dates in the customer's language -----------------------------------------------------


def _zone_label(zone: ZoneInfo) -> str:
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
        f"{local.year}, {clock} ({_zone_label(zone)} time)"
    )


def format_date(day: date, lang: str) -> str:
    """E.g. ``31. 5. 2026`` or ``31 May 2026``."""
    if lang == "cs":
        return f"{day.day}. {day.month}. {day.year}"
    return f"{day.day} {_EN_MONTHS[day.month - 1]} {day.year}"


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- paragraph markup shared by the text and HTML layouts ---------------------------------


def _blocks(value: str) -> Iterator[list[str]]:
    """Paragraphs of `value` (split at blank lines), each a list of stripped lines."""
    block: list[str] = []
    for line in value.splitlines():
        stripped = line.strip()
        if stripped:
            block.append(stripped)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _kept_line(line: str) -> str:
    return line[1:].removeprefix(" ") if line.startswith("|") else line


def _list_items(lines: Iterable[str]) -> list[str]:
    items: list[str] = []
    for line in lines:
        if line.startswith("- ") or not items:
            items.append(line.removeprefix("- "))
        else:
            items[-1] += " " + line
    return items


# Spaces a line must not break at: after a one-letter word (Czech typography: "a", "v",
# "k" never end a line), inside numbers such as "1234 5678" and dates such as "25. 11. 2026".
_NO_BREAK = re.compile(r"(?<=\b[aikosuvzAIKOSUVZ]) |(?<=\d) (?=\d)|(?<=\d\.) (?=\d)")


@lru_cache(maxsize=1024)  # most paragraphs are template wording, the same in every reply
def _fill(text: str, initial: str = "", subsequent: str = "") -> str:
    glued = _NO_BREAK.sub("\u00a0", text)  # textwrap does not break at U+00A0
    wrapped = textwrap.fill(
        glued,
        width=TEXT_WIDTH,
        initial_indent=initial,
        subsequent_indent=subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapped.replace("\u00a0", " ")


def _text_paragraphs(value: str) -> str:
    """Jinja filter (text): flow and wrap paragraphs; "- " lists; "| " lines kept."""
    out: list[str] = []
    for lines in _blocks(str(value)):
        if lines[0].startswith("|"):
            out.append("\n".join(_kept_line(line) for line in lines))
        elif lines[0].startswith("- "):
            out.append("\n".join(_fill(item, "- ", "  ") for item in _list_items(lines)))
        else:
            out.append(_fill(" ".join(lines)))
    return "\n\n".join(out) + "\n"


def _html_paragraphs(value: str) -> Markup:
    """Jinja filter (HTML): the same markup as <p>, <ul> and <br>; input is escaped Markup."""
    safe = escape(value)  # Markup passes through; a plain str would be escaped here
    out: list[Markup] = []
    for lines in _blocks(str(safe)):
        # Each line is a slice of already-escaped Markup, so wrapping it in Markup is sound.
        if lines[0].startswith("|"):
            body = Markup("<br>\n").join(Markup(_kept_line(line)) for line in lines)
            out.append(Markup("<p>{}</p>").format(body))
        elif lines[0].startswith("- "):
            items = Markup("").join(
                Markup("<li>{}</li>\n").format(Markup(item)) for item in _list_items(lines)
            )
            out.append(Markup("<ul>\n{}</ul>").format(items))
        else:
            out.append(Markup("<p>{}</p>").format(Markup(" ".join(lines))))
    return Markup("\n").join(out)


# -- the renderer -------------------------------------------------------------------------


def valid_address(value: str | None) -> str | None:
    """`value` as an ASCII address mailbot may send to, else None: accepted by
    email-validator (no deliverability check: the relay judges that; *.test allowed for test
    rigs; no SMTPUTF8, which mailbot does not send) and holding no encoded word, which the
    `email` package would decode in a header."""
    if not value or len(value) > 320:
        return None
    try:
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=False,
                               test_environment=True)
    except EmailNotValidError:
        return None
    if valid.ascii_email is None or "=?" in valid.ascii_email:
        return None
    return valid.ascii_email


def template_environments(directory: Path) -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    """The sandboxed Jinja2 environments for text (no escaping) and HTML (autoescaped) of the
    templates under `directory`; undefined names are errors."""
    common: dict[str, Any] = dict(loader=FileSystemLoader(directory), undefined=StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True)
    return (SandboxedEnvironment(autoescape=False, **common),
            SandboxedEnvironment(autoescape=True, **common))



@dataclass(frozen=True, slots=True)
class RenderedReply:
    """A rendered, checked reply and its bytes as they will be sent."""

    message: EmailMessage
    raw: bytes
    recipient: str
    message_id: str


class ReplyRenderer:
    """Builds the automatic reply to one message; construct once from the Config."""

    def __init__(self, config: Config) -> None:
        """Load and check every reply template.

        Raises:
            ConfigError: the templates directory or one of the reply templates is missing
                or does not compile.
        """
        self._support_name = clean_header_text(config.mailbox.support_name, NAME_LIMIT)
        self._support_address = config.mailbox.support_address
        self._own = config.mailbox.own_addresses()
        self._zone = config.calendar.zone
        self._calendar = BusinessCalendar(config.calendar)
        self._default_language = config.replies.default_language
        self._tiers_offer_url = config.replies.tiers_offer_url
        opens, closes = config.calendar.open_time, config.calendar.close_time
        day_hours = (closes.hour * 60 + closes.minute - opens.hour * 60 - opens.minute) / 60
        days = config.calendar.ticket_hours / day_hours if day_hours > 0 else 0.0
        self._static: dict[str, Any] = {
            "support_name": self._support_name,
            "support_address": self._support_address,
            "opens_text": f"{opens.hour}:{opens.minute:02d}",
            "closes_text": f"{closes.hour}:{closes.minute:02d}",
            "zone_label": _zone_label(self._zone),
            "response_days": int(days) if days and float(days).is_integer() else None,
            "response_hours": _format_number(config.calendar.ticket_hours),
            "emergency_hours": _format_number(config.calendar.emergency_hours),
        }
        self._policy, self._headers, self._languages = _reply_headers(
            self._support_name, self._support_address
        )
        self._text_part = tuple(
            (name, self._headers[f"text/plain {name}"]) for name in _PART_HEADERS
        )
        # add_alternative gives the second part a MIME-Version of its own, kept as it was.
        self._html_part = (
            *((name, self._headers[f"text/html {name}"]) for name in _PART_HEADERS),
            ("MIME-Version", self._headers["MIME-Version"]),
        )
        directory = config.path(config.replies.templates_dir)
        if not directory.is_dir():
            raise ConfigError(f"replies.templates_dir: {directory} is not a directory")
        self._text_env, self._html_env = template_environments(directory)
        self._text_env.filters["paragraphs"] = _text_paragraphs
        self._html_env.filters["paragraphs"] = _html_paragraphs
        self._size_limit = human_size(config.limits.message_bytes)
        self._attachment_limit = human_size(config.limits.attachment_bytes)
        for name in (*REPLY_TEMPLATES.values(), "reject_too_large"):
            for lang in LANGUAGES:
                for env, fmt in ((self._text_env, "txt"), (self._html_env, "html")):
                    template = f"replies/{name}.{lang}.{fmt}.j2"
                    try:
                        env.get_template(template)
                    except TemplateNotFound as exc:
                        raise ConfigError(f"reply template {exc.name} not found in {directory}") from None
                    except Exception as exc:  # TemplateSyntaxError and friends
                        raise ConfigError(f"reply template {template}: {exc}") from None

    def recipient(self, mail: Mail) -> Address | None:
        """The address to answer (the mail's From), or None if it is missing, invalid, or ours."""
        address = valid_address(mail.from_addr)
        if address is None:
            if mail.from_addr:
                log.warning("not replying to invalid sender address %r", mail.from_addr)
            return None
        if address.lower() in self._own:
            return None
        return Address(display_name=clean_header_text(mail.from_name, NAME_LIMIT),
                       addr_spec=address)

    def render(
        self,
        decision: Decision,
        mail: Mail,
        *,
        ticket: TicketView | None,
        message_id: str,
        now: datetime,
    ) -> EmailMessage | None:
        """The reply message (see `render_reply`), or None when no reply is due."""
        reply = self.render_reply(decision, mail, ticket=ticket, message_id=message_id, now=now)
        return reply.message if reply is not None else None

    def render_reply(
        self,
        decision: Decision,
        mail: Mail,
        *,
        ticket: TicketView | None,
        message_id: str,
        now: datetime,
        template: str | None = None,
    ) -> RenderedReply | None:
        """The reply to `mail` for `decision`, or None when no reply is due.

        `template` names the reply template when it is not the decision kind's own (the note
        to the sender of a message over the size limit).

        None for the kinds in NO_REPLY_KINDS, and also when the sender's address is missing,
        fails validation (email-validator, no deliverability check) or is one of our own:
        such a mail simply gets no automatic reply (a warning is logged).

        Raises:
            ReplyRenderError: a ticket reply without `ticket`, a malformed `message_id`, a
                naive `now`, or a serialized message that fails the header re-check.
        """
        template = template or REPLY_TEMPLATES.get(decision.kind)
        if template is None:
            if decision.kind not in NO_REPLY_KINDS:
                raise ReplyRenderError(f"no reply template for decision kind {decision.kind!r}")
            return None
        if decision.kind is DecisionKind.TICKET and ticket is None:
            raise ReplyRenderError("a ticket acknowledgement needs the ticket")
        if not _MSG_ID.fullmatch(message_id):
            raise ReplyRenderError(f"malformed Message-ID for the reply: {message_id!r}")
        if now.tzinfo is None:
            raise ReplyRenderError("now must be an aware datetime")
        to = self.recipient(mail)
        if to is None:
            return None
        if decision.kind is not DecisionKind.TICKET:
            ticket = None  # rejections open no ticket: plain "Re: subject", no tag

        lang = decision.language if decision.language in LANGUAGES else self._default_language
        ticket_number = ticket.number if ticket is not None else None
        subject = reply_subject(mail.subject or (ticket.subject if ticket else ""), lang, ticket_number)
        context = self._context(decision, mail, ticket, lang, subject)
        if template == "reject_too_large":
            attachment = "attachment_too_large" in decision.flags
            context["attachment_limit"] = attachment
            context["size_limit"] = self._attachment_limit if attachment else self._size_limit
        text = self._text_env.get_template(f"replies/{template}.{lang}.txt.j2").render(
            context, html=False
        )
        html = self._html_env.get_template(f"replies/{template}.{lang}.html.j2").render(
            context, html=True
        )

        policy = self._policy
        msg = EmailMessage(policy=policy)
        fixed = self._headers
        msg["From"] = fixed["From"]
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = email.utils.format_datetime(now.astimezone(self._zone))
        msg["Message-ID"] = message_id
        parent = _clean_message_id(mail.message_id)
        if parent:
            msg["In-Reply-To"] = parent
        references = _references(mail, parent)
        if references:
            msg["References"] = " ".join(references)
        msg["Auto-Submitted"] = fixed["Auto-Submitted"]  # RFC 3834 §5
        msg["X-Auto-Response-Suppress"] = fixed["X-Auto-Response-Suppress"]  # Exchange: no OOF
        msg[LOOP_HEADER] = fixed[LOOP_HEADER]
        # The structure set_content + add_alternative would build, without their
        # repeated Content-Type re-parsing: multipart/alternative with a text/plain and a
        # text/html part, both UTF-8 quoted-printable.
        msg["MIME-Version"] = fixed["MIME-Version"]
        msg["Content-Type"] = fixed["Content-Type"]
        msg["Content-Language"] = self._languages[lang]  # RFC 3282
        msg.attach(self._part(text, self._text_part))
        msg.attach(self._part(html, self._html_part))
        raw = checked_bytes(msg, (to.addr_spec,), alternatives=True)
        return RenderedReply(msg, raw, to.addr_spec, message_id)

    def _part(self, body: str, headers: tuple[tuple[str, Any], ...]) -> EmailMessage:
        """A text/* part of `body` as set_content(cte="quoted-printable") would make it."""
        part = EmailMessage(policy=self._policy)
        for name, header in headers:
            part[name] = header
        part.set_payload(_quoted_printable(body, self._policy))
        return part

    def _context(
        self,
        decision: Decision,
        mail: Mail,
        ticket: TicketView | None,
        lang: str,
        subject: str,
    ) -> dict[str, Any]:
        """The explicit values a template may use (never the Config or the Mail itself)."""
        quoted, truncated = _quote(mail.text)
        license_number = clean_header_text(
            (ticket.license if ticket and ticket.license else None) or decision.license or "", 40
        )
        context: dict[str, Any] = {
            **self._static,
            "lang": lang,
            "title": subject,
            "customer_name": defang(clean_header_text(mail.from_name, NAME_LIMIT)),
            "quoted": quoted,
            "quoted_truncated": truncated,
            "license_number": license_number,
        }
        kind = decision.kind
        if kind is DecisionKind.TICKET:
            assert ticket is not None
            context["ticket_number"] = clean_header_text(ticket.number, 60)
            context["emergency"] = (
                ticket.priority is Priority.EMERGENCY or decision.priority is Priority.EMERGENCY
            )
            context["deadline_text"] = format_deadline(ticket.deadline, lang, self._zone)
            context["after_hours"] = not self._calendar.is_open(ticket.opened_at)
            context["work_starts_text"] = format_deadline(
                self._calendar.next_opening(ticket.opened_at), lang, self._zone)
        elif kind is DecisionKind.REJECT_INCOMPLETE:
            missing = {m.lower() for m in decision.missing}
            missing_license = MISSING_LICENSE in missing
            missing_description = MISSING_DESCRIPTION in missing
            if not (missing_license or missing_description):
                log.warning("reject_incomplete without known 'missing' items: %r", decision.missing)
                missing_license = missing_description = True
            context["missing_license"] = missing_license
            context["missing_description"] = missing_description
        elif kind is DecisionKind.REJECT_EXPIRED:
            end = decision.entitlement_end
            context["support_end_text"] = format_date(end, lang) if end else ""
            context["tiers_offer_url"] = self._tiers_offer_url
        elif kind is DecisionKind.REJECT_SCOPE:
            context["scope_reason"] = decision.scope_reason or ""
        return context


# -- header objects and the serialization policy ------------------------------------------

# Boundary of the multipart/alternative: both parts are quoted-printable, whose output never
# holds "==" ("=" always starts "=XX" or a soft line break), so it cannot occur in a part.
# Constant, so that the generator and the re-check do not compile a fresh regex per reply.
BOUNDARY: Final = "===============mailbot-alternative=="
_PART_HEADERS: Final = ("Content-Type", "Content-Transfer-Encoding")


class _HeaderRegistry(email.headerregistry.HeaderRegistry):
    """The stdlib header registry, building each header class once per name rather than
    once per header (its ``__getitem__`` creates a new class on every call)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


class _ReplyPolicy(email.policy.EmailPolicy):
    """``email.policy.SMTP`` that serializes the renderer's constant header objects from a
    memo of their fold (computed by this policy class itself, for the same settings)."""

    constant_folds: Mapping[int, tuple[Any, tuple[Any, ...], bytes]] = {}

    def _fold_settings(self) -> tuple[Any, ...]:
        return (self.linesep, self.max_line_length, self.utf8, self.cte_type, self.refold_source)

    def fold_binary(self, name: str, value: Any) -> bytes:
        entry = self.constant_folds.get(id(value))
        if entry is not None and entry[0] is value and entry[1] == (name, *self._fold_settings()):
            return entry[2]
        return super().fold_binary(name, value)


def _reply_headers(
    support_name: str, support_address: str
) -> tuple[_ReplyPolicy, dict[str, Any], dict[str, Any]]:
    """The policy, the header objects every reply carries, and Content-Language per language.

    Every header object comes from the policy's header factory, as ``msg[name] = value``
    would make it; assigning such an object stores it without parsing it again.
    """
    # The settings of email.policy.SMTP.
    base = _ReplyPolicy(linesep="\r\n", header_factory=_HeaderRegistry())
    make = base.header_factory
    headers: dict[str, Any] = {
        "From": make("From", Address(display_name=support_name, addr_spec=support_address)),
        "Auto-Submitted": make("Auto-Submitted", "auto-replied"),
        "X-Auto-Response-Suppress": make("X-Auto-Response-Suppress", "All"),
        LOOP_HEADER: make(LOOP_HEADER, support_address),
        "MIME-Version": make("MIME-Version", "1.0"),
        "Content-Type": make("Content-Type", f'multipart/alternative; boundary="{BOUNDARY}"'),
    }
    for subtype in ("plain", "html"):
        headers[f"text/{subtype} Content-Type"] = make(
            "Content-Type", f'text/{subtype}; charset="utf-8"'
        )
        headers[f"text/{subtype} Content-Transfer-Encoding"] = make(
            "Content-Transfer-Encoding", "quoted-printable"
        )
    languages = {lang: make("Content-Language", lang) for lang in LANGUAGES}
    for header in (*headers.values(), *languages.values()):
        if header.defects:
            raise ConfigError(f"reply header {header.name}: {header.defects[0]}")
    folds = {
        id(header): (
            header,
            (header.name, *base._fold_settings()),
            base.fold_binary(header.name, header),
        )
        for header in (*headers.values(), *languages.values())
    }
    return base.clone(constant_folds=folds), headers, languages  # type: ignore[call-arg]


def _quoted_printable(body: str, policy: email.policy.EmailPolicy) -> str:
    """`body` in UTF-8 quoted-printable, exactly as ``set_content(cte="quoted-printable")``."""
    lines = body.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    width = policy.max_line_length  # 78 in the reply policy; set_content passes it alike
    return email.quoprimime.body_encode(normal.decode("latin-1"), width)  # type: ignore[arg-type]


def checked_bytes(msg: EmailMessage, recipients: Sequence[str], *,
                  error: type[Exception] = ReplyRenderError, alternatives: bool = False
                  ) -> bytes:
    """Serialize, then re-parse the bytes we would send: the same header names and exactly
    `recipients` in To (with `alternatives`, also a two-part multipart/alternative).

    Returns the bytes, so the message is serialized once. The re-parse uses compat32, which
    splits headers exactly like any receiving MTA would and is ~3x cheaper than re-building
    header objects.

    Raises:
        `error`: the message does not serialize, or the re-parse differs (a header-injection
            symptom).
    """
    try:
        raw = msg.as_bytes()
    except (ValueError, UnicodeError) as exc:
        raise error(f"message does not serialize: {exc}") from exc
    head = raw.split(b"\r\n\r\n", 1)[0]
    if b"\r\n" not in raw or any(b"\r" in line or b"\n" in line for line in head.split(b"\r\n")):
        raise error("header section has a bare CR or LF")
    parsed = _COMPAT_PARSER.parsebytes(raw, headersonly=not alternatives)
    expected = sorted(k.lower() for k in msg.keys())
    got = sorted(k.lower() for k in parsed.keys())
    if got != expected:
        raise error(f"headers changed in serialization: {got} != {expected}")
    addresses = {a.lower() for _, a in email.utils.getaddresses(
        [str(v) for v in parsed.get_all("to", [])])}
    if addresses != {r.lower() for r in recipients}:
        raise error(f"recipients changed in serialization: {addresses}")
    if alternatives and (parsed.get_content_type() != "multipart/alternative"
                         or len(parsed.get_payload()) != 2):
        raise error("not a two-part multipart/alternative")
    return raw


_COMPAT_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
