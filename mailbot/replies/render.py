"""Customer replies: a Decision + the inbound Mail → one checked `OutgoingMail` (pure).

Templates live in ``<templates_dir>/replies/{kind}.{lang}.{txt|html}.j2`` and extend
``_layout.{txt|html}.j2``; the wording of each language is written once, in
``_texts.{lang}.j2``, and shared by the text and the HTML part (see :mod:`.layout`).

Security (reliability.md §1):
- Customer text is only ever template *data*, cleaned and defanged (:mod:`.sanitize`); the
  headers are written token by token from cleaned and validated values (:mod:`.mime`), so
  no value can end a header line or add a header or recipient.
- The recipient is the address the mail's From header names, and only if email-validator
  accepts it: a mail without a usable From gets no reply, even when parsing took its sender
  from Sender or Reply-To, and Reply-To is never used, so a forged Reply-To cannot aim
  auto-replies at a third party (`author_address`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from email.headerregistry import Address
from typing import Any, Final

from jinja2 import TemplateNotFound

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config
from mailbot.domain import (
    LOOP_HEADER,
    Decision,
    DecisionKind,
    Mail,
    OutgoingMail,
    Priority,
    TicketView,
)
from mailbot.errors import ConfigError, MailbotError
from mailbot.ingest.limits import human_size
from mailbot.replies.language import (
    LANGUAGES,
    choose_language,
    format_date,
    format_deadline,
    format_number,
    reply_subject,
    zone_label,
)
from mailbot.replies.layout import html_paragraphs, template_environments, text_paragraphs
from mailbot.replies.mime import (
    MSG_ID,
    HeaderError,
    address_header,
    clean_message_id,
    date_header,
    id_header,
    mail_bytes,
    plain_header,
    sealed,
    text_header,
    valid_address,
)
from mailbot.replies.sanitize import NAME_LIMIT, clean_header_text, defang, quote_excerpt

__all__ = [
    "NO_REPLY_KINDS",
    "REPLY_TEMPLATES",
    "ReplyRenderError",
    "ReplyRenderer",
    "author_address",
    "reply_recipient",
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

MAX_REFERENCES: Final = 20

# Values for Decision.missing (labelled data: "license" and/or "description").
MISSING_LICENSE: Final = "license"
MISSING_DESCRIPTION: Final = "description"


class ReplyRenderError(MailbotError):
    """A reply could not be built safely (bad input from mailbot itself, or a header check failed)."""


def author_address(mail: Mail) -> str | None:
    """The address an automatic reply may go to: the mail's sender if the From header named
    it, else None.

    Parsing takes `Mail.from_addr` from From, else Sender, else Reply-To (the rules judge a
    mail by it; `Mail.from_header` says which); a reply goes only where From pointed."""
    return mail.from_addr if mail.from_header else None


def reply_recipient(mail: Mail, own: frozenset[str]) -> tuple[str, str] | None:
    """(display name, address) an automatic reply to `mail` goes to (`author_address`,
    validated), or None if there is none, it is invalid, or it is one of `own`; logs nothing
    (`ReplyRenderer.recipient` says why not)."""
    address = valid_address(author_address(mail))
    if address is None or address.lower() in own:
        return None
    return clean_header_text(mail.from_name, NAME_LIMIT), address


def _references(mail: Mail, parent: str | None) -> list[str]:
    """RFC 5322 §3.6.4: the parent's References (or its single In-Reply-To) + its Message-ID."""
    chain = list(mail.references) or (list(mail.in_reply_to) if len(mail.in_reply_to) == 1 else [])
    ids: list[str] = []
    for raw in chain:
        for token in raw.split():
            mid = clean_message_id(token)
            if mid and mid not in ids and mid != parent:
                ids.append(mid)
    if len(ids) > MAX_REFERENCES - 1:  # keep the thread root and the newest ones
        ids = [ids[0], *ids[-(MAX_REFERENCES - 2) :]]
    if parent:
        ids.append(parent)
    return ids



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
            "zone_label": zone_label(self._zone),
            "response_days": int(days) if days and float(days).is_integer() else None,
            "response_hours": format_number(config.calendar.ticket_hours),
            "emergency_hours": format_number(config.calendar.emergency_hours),
        }
        try:
            self._from = address_header("From", ((self._support_name, self._support_address),))
            self._fixed = (
                "Auto-Submitted: auto-replied\r\n"  # RFC 3834 §5
                "X-Auto-Response-Suppress: All\r\n"  # Exchange: no out-of-office answers
                + plain_header(LOOP_HEADER, self._support_address)
            )
            self._languages = {lang: plain_header("Content-Language", lang)  # RFC 3282
                               for lang in LANGUAGES}
        except HeaderError as exc:
            raise ConfigError(f"reply headers: {exc}") from None
        directory = config.path(config.replies.templates_dir)
        if not directory.is_dir():
            raise ConfigError(f"replies.templates_dir: {directory} is not a directory")
        self._text_env, self._html_env = template_environments(directory)
        self._text_env.filters["paragraphs"] = text_paragraphs
        self._html_env.filters["paragraphs"] = html_paragraphs
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
        """The address to answer (`author_address`: From's), or None if there is none, it
        is invalid, or it is ours."""
        to = self._recipient(mail)
        return Address(display_name=to[0], addr_spec=to[1]) if to else None

    def _recipient(self, mail: Mail) -> tuple[str, str] | None:
        """`recipient` as (display name, address)."""
        to = reply_recipient(mail, self._own)
        if to is None:
            author = author_address(mail)
            if author and valid_address(author) is None:
                log.warning("not replying to invalid sender address %r", author)
            elif not author and mail.from_addr:
                log.warning("not replying to %r: not the From address", mail.from_addr)
        return to

    def render(
        self,
        decision: Decision,
        mail: Mail,
        *,
        ticket: TicketView | None,
        message_id: str,
        now: datetime,
        purpose: str,
        template: str | None = None,
    ) -> OutgoingMail | None:
        """The reply to `mail` for `decision` as the outbox row `purpose` (kind: the
        template's name; an automatic reply, `auto`), or None when no reply is due.

        `template` names the reply template when it is not the decision kind's own (the note
        to the sender of a message over the size limit).

        None for the kinds in NO_REPLY_KINDS, and also when the mail's From address is
        missing (also when parsing took the sender from Sender or Reply-To), fails validation
        (email-validator, no deliverability check) or is one of our own: such a mail simply
        gets no automatic reply (a warning is logged).

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
        if not MSG_ID.fullmatch(message_id):
            raise ReplyRenderError(f"malformed Message-ID for the reply: {message_id!r}")
        if now.tzinfo is None:
            raise ReplyRenderError("now must be an aware datetime")
        to = self._recipient(mail)
        if to is None:
            return None
        if decision.kind is not DecisionKind.TICKET:
            ticket = None  # rejections open no ticket: plain "Re: subject", no tag

        lang = choose_language(decision.language, self._default_language)
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

        parent = clean_message_id(mail.message_id)
        references = _references(mail, parent)
        try:
            headers = [
                self._from,
                address_header("To", (to,)),
                text_header("Subject", subject),
                date_header(now.astimezone(self._zone)),
                id_header("Message-ID", (message_id,)),
            ]
            if parent:
                headers.append(id_header("In-Reply-To", (parent,)))
            if references:
                headers.append(id_header("References", references))
            headers.append(self._fixed)
            headers.append(self._languages[lang])
            raw = mail_bytes(headers, text, html)
        except HeaderError as exc:
            raise ReplyRenderError(str(exc)) from exc
        return sealed(raw, (to[1],), purpose=purpose, kind=template, message_id=message_id,
                      mail_from=self._support_address, auto=True)

    def _context(
        self,
        decision: Decision,
        mail: Mail,
        ticket: TicketView | None,
        lang: str,
        subject: str,
    ) -> dict[str, Any]:
        """The explicit values a template may use (never the Config or the Mail itself)."""
        quoted, truncated = quote_excerpt(mail.text)
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
