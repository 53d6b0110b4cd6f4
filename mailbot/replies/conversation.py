"""Mail between the customer and the staff about a ticket (pure: templates and `email`).

- **Notice** to the staff list when a ticket opens or the customer writes again: the
  customer's text, license, customer and tier from the registry, deadline and priority.
  Its Reply-To is the ticket's tokened reply address, so pressing Reply in any client
  answers the ticket (:mod:`mailbot.classify.staff_auth`). A token goes only to staff
  addresses: a notice or alert with any other recipient (an SMS gateway, an outside
  assignee) gets the plain support address as Reply-To.
- **Relay** of a staff reply to the customer, from the support address, threaded under the
  customer's mails (In-Reply-To/References), with the staff's attachments.
- **Command error** back to a staff member whose reply had an unknown `#command`.

Headers are written token by token from cleaned and validated values only (:mod:`.mime`),
so no header or recipient can be smuggled in; each method returns the one `OutgoingMail` the
outbox takes, or None when there is nobody valid to send it to. Subjects and the language come from
:mod:`.language`, the HOTLINE START notices' subjects from their templates like the bodies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from email.message import Message
from typing import Final

from mailbot.attachments import FileAttachment, safe_filename
from mailbot.classify.commands import COMMANDS
from mailbot.contacts import Contact
from mailbot.classify.staff_auth import is_staff_address, reply_address
from mailbot.config import Config
from mailbot.domain import (
    LOOP_HEADER,
    Decision,
    LicenseRecord,
    Mail,
    OutgoingMail,
    Priority,
    TicketInfo,
    other_message_id,
    ticket_message_id,
)
from mailbot.errors import ConfigError, MailbotError
from mailbot.ingest.parse import attachment_filename, declared_charsets, mime_tree
from mailbot.replies.language import (
    LANGUAGES,
    alert_subject,
    choose_language,
    command_error_subject,
    format_date,
    format_deadline,
    notice_subject,
    ticket_reply_subject,
)
from mailbot.replies.layout import template_environments
from mailbot.replies.mime import (
    HeaderError,
    address_header,
    date_header,
    id_header,
    mail_bytes,
    message_ids,
    mixed_body,
    plain_header,
    sealed,
    text_header,
    valid_address,
    valid_message_id,
)
from mailbot.replies.sanitize import clean_header_text

log = logging.getLogger(__name__)

TEXT_LIMIT: Final = 20_000
ATTACHMENTS_LIMIT: Final = 20 * 1024 * 1024


SCHEDULED: Final = ("staff/reminder", "staff/escalation", "staff/emergency",
                    "replies/wait_reminder", "replies/wait_closed",
                    "notices/start_expiry", "notices/start_ended")
"""Templates of the timed and alert mails (text only)."""

SUBJECTS: Final = ("notices/start_expiry", "notices/start_ended")
"""Templates whose subject is a template too (``<name>.<lang>.subject.j2``)."""


_GENERATED: Final = "Auto-Submitted: auto-generated\r\n"


class ConversationRenderError(MailbotError):
    """A conversation mail could not be built safely."""


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def _text(value: str, limit: int = TEXT_LIMIT) -> str:
    """Body text without control characters except newlines and tabs, cut to `limit`."""
    kept = _CONTROLS.sub("", value[:limit])
    return kept + ("\n[…]" if len(value) > limit else "")


class ConversationRenderer:
    """Renders notices, relays and command errors; construct once from the Config."""

    def __init__(self, config: Config, token_secret: bytes) -> None:
        box = config.mailbox
        self._box = box
        self._conv = config.conversation
        self._notices = config.notices
        self._zone = config.calendar.zone
        self._secret = token_secret
        self._default_language = config.replies.default_language
        self._domain = box.message_id_domain
        self._support_name = clean_header_text(box.support_name, 100)
        self._support = (self._support_name, box.support_address)
        try:
            self._from = address_header("From", (self._support,))
            self._loop = plain_header(LOOP_HEADER, box.support_address)
        except HeaderError as exc:
            raise ConfigError(f"conversation headers: {exc}") from None
        self._text_env, self._html_env = template_environments(
            config.path(config.replies.templates_dir))
        for name in ("staff/notice", "staff/command_error", "replies/relay", *SCHEDULED):
            for lang in LANGUAGES:
                self._text_env.get_template(f"{name}.{lang}.txt.j2")
        for name in SUBJECTS:
            for lang in LANGUAGES:
                self._text_env.get_template(f"{name}.{lang}.subject.j2")
        for lang in LANGUAGES:
            self._html_env.get_template(f"staff/notice.{lang}.html.j2")

    # --- notices to staff ----------------------------------------------------------------

    def notice(
        self,
        *,
        event: str,
        ticket: TicketInfo,
        customer: LicenseRecord | None,
        entitlement_end: date | None,
        mail: Mail,
        text: str,
        inbound_id: int,
        now: datetime,
        purpose: str,
        suspicious: str = "",
    ) -> OutgoingMail | None:
        """The staff notice of `event` ("new" ticket or customer "followup")."""
        recipients = tuple(v for v in map(valid_address, self._box.staff_notify) if v)
        if not recipients:
            return None
        lang = self._conv.staff_language
        reply_to = self._reply_to(ticket.number, recipients, now)
        emergency = ticket.priority is Priority.EMERGENCY
        context = {
            "lang": lang,
            "event": event,
            "ticket_number": ticket.number,
            "subject": clean_header_text(ticket.subject, 300),
            "customer_name": clean_header_text(
                customer.customer if customer else ticket.customer_name, 300),
            "customer_email": clean_header_text(mail.from_addr or ticket.customer_email, 320),
            "license_number": ticket.license or "",
            "tier": customer.tier.value if customer else "",
            "support_end": format_date(entitlement_end, lang) if entitlement_end else "",
            "deadline_text": format_deadline(ticket.deadline, lang, self._zone),
            "emergency": emergency,
            "state": ticket.state,
            "assignee": ticket.assignee or "",
            "text": _text(text),
            "attachments": [clean_header_text(a.filename or "?", 200) for a in mail.attachments],
            "suspicious": suspicious,
            "commands": sorted(COMMANDS),
        }
        body = self._text_env.get_template(f"staff/notice.{lang}.txt.j2").render(context)
        html = self._html_env.get_template(f"staff/notice.{lang}.html.j2").render(context)
        message_id = ticket_message_id(ticket.number, f"n{inbound_id}", self._domain)
        ack = ticket_message_id(ticket.number, 1, self._domain)
        return self._mail(
            lambda: [
                self._from,
                address_header("To", [("", a) for a in recipients]),
                address_header("Reply-To", (("", reply_to),)),
                text_header("Subject", notice_subject(ticket.number, ticket.subject, lang,
                                                      emergency=emergency)),
                *self._common(message_id, now),
                id_header("References", (ack,)),
                _GENERATED,  # RFC 3834: a notification, not a reply
            ],
            body, html, recipients, purpose, "notice", message_id)

    # --- staff reply relayed to the customer ---------------------------------------------

    def relay(
        self,
        *,
        ticket: TicketInfo,
        decision: Decision,
        mail: Mail,
        inbound_id: int,
        now: datetime,
        purpose: str,
        attachments: Sequence[FileAttachment] = (),
    ) -> OutgoingMail | None:
        """The staff reply as the customer receives it (None: no valid customer address)."""
        to = valid_address(ticket.customer_email)
        if to is None:
            log.warning("ticket %s: customer address %r invalid, reply not relayed",
                        ticket.number, ticket.customer_email)
            return None
        lang = choose_language(ticket.language, self._default_language)
        body = self._text_env.get_template(f"replies/relay.{lang}.txt.j2").render(
            text=_text(decision.staff_text), ticket_number=ticket.number,
            support_name=self._support_name, support_address=self._box.support_address)
        staff_name = clean_header_text(mail.from_name, 100)
        staff_addr = valid_address(mail.from_addr) if self._conv.expose_staff_address else None
        if staff_addr:
            sender = [address_header("From", ((staff_name or self._support_name, staff_addr),)),
                      address_header("Reply-To", (self._support,))]
        else:
            shown = f"{staff_name} ({self._support_name})" if staff_name else self._support_name
            sender = [address_header("From", ((clean_header_text(shown, 150),
                                                self._box.support_address),))]
        message_id = ticket_message_id(ticket.number, f"r{inbound_id}", self._domain)
        return self._mail(
            lambda: [
                *sender,
                address_header("To", ((clean_header_text(ticket.customer_name, 100), to),)),
                text_header("Subject", ticket_reply_subject(ticket.subject, ticket.number)),
                *self._common(message_id, now),
                *self._thread_under_customer(ticket),
            ],
            body, None, (to,), purpose, "relay", message_id, attachments)

    # --- errors back to staff ------------------------------------------------------------

    def command_error(self, *, mail: Mail, ticket_number: str, errors: Sequence[str],
                      inbound_id: int, now: datetime, purpose: str) -> OutgoingMail | None:
        """Tell a staff member why their reply was not acted on."""
        to = valid_address(mail.from_addr)
        if to is None:
            return None
        lang = self._conv.staff_language
        body = self._text_env.get_template(f"staff/command_error.{lang}.txt.j2").render(
            ticket_number=ticket_number, errors=[clean_header_text(e, 300) for e in errors],
            commands=sorted(COMMANDS), subject=clean_header_text(mail.subject, 200))
        message_id = other_message_id(f"cmderr-{inbound_id}", self._domain)
        parent = mail.message_id
        return self._mail(
            lambda: [
                self._from,
                address_header("To", (("", to),)),
                text_header("Subject", command_error_subject(ticket_number, mail.subject, lang)),
                *self._common(message_id, now),
                *([id_header("In-Reply-To", (parent.strip(),))]
                  if parent and valid_message_id(parent) else []),
                "Auto-Submitted: auto-replied\r\n",
            ],
            body, None, (to,), purpose, "command_error", message_id)

    # --- alerts to staff and notes to customers (scheduler, emergencies) -----------------

    def staff_alert(self, *, kind: str, ticket: TicketInfo, recipients: Sequence[str],
                    message_id: str, now: datetime, purpose: str, text: str = ""
                    ) -> OutgoingMail | None:
        """A reminder, escalation or emergency alert about `ticket` (template
        ``staff/<kind>``, outbox kind `kind`); Reply-To is the ticket's reply address, as in
        a notice."""
        to = tuple(dict.fromkeys(v for v in map(valid_address, recipients) if v))
        if not to:
            return None
        lang = self._conv.staff_language
        body = self._text_env.get_template(f"staff/{kind}.{lang}.txt.j2").render(
            ticket_number=ticket.number, subject=clean_header_text(ticket.subject, 300),
            customer_name=clean_header_text(ticket.customer_name, 300),
            customer_email=clean_header_text(ticket.customer_email, 320),
            license_number=ticket.license or "", assignee=ticket.assignee or "",
            emergency=ticket.priority is Priority.EMERGENCY,
            deadline_text=format_deadline(ticket.deadline, lang, self._zone),
            text=_text(text, 2000))
        reply_to = self._reply_to(ticket.number, to, now)
        return self._mail(
            lambda: [
                self._from,
                address_header("To", [("", a) for a in to]),
                address_header("Reply-To", (("", reply_to),)),
                text_header("Subject", alert_subject(kind, ticket.number, ticket.subject, lang)),
                *self._common(message_id, now),
                id_header("References", (ticket_message_id(ticket.number, 1, self._domain),)),
                _GENERATED,
            ],
            body, None, to, purpose, kind, message_id)

    def customer_note(self, *, kind: str, ticket: TicketInfo, message_id: str,
                      now: datetime, purpose: str) -> OutgoingMail | None:
        """A timed note to the customer about `ticket` (template ``replies/<kind>``, outbox
        kind `kind`), threaded like a relayed reply."""
        to = valid_address(ticket.customer_email)
        if to is None:
            return None
        lang = choose_language(ticket.language, self._default_language)
        body = self._text_env.get_template(f"replies/{kind}.{lang}.txt.j2").render(
            ticket_number=ticket.number, subject=clean_header_text(ticket.subject, 300),
            support_name=self._support_name, support_address=self._box.support_address)
        return self._mail(
            lambda: [
                self._from,
                address_header("To", ((clean_header_text(ticket.customer_name, 100), to),)),
                text_header("Subject", ticket_reply_subject(ticket.subject, ticket.number)),
                *self._common(message_id, now),
                *self._thread_under_customer(ticket),
                _GENERATED,
            ],
            body, None, (to,), purpose, kind, message_id)

    def license_notice(self, *, contact: Contact, record: LicenseRecord, ends_on: date,
                       days_left: int, message_id: str, now: datetime, purpose: str
                       ) -> OutgoingMail | None:
        """A notice to a contact that HOTLINE START ends in `days_left` days (0: it ended
        today), with the paid tiers on offer."""
        to = valid_address(contact.email)
        if to is None:
            return None
        lang = choose_language(contact.language, self._default_language)
        kind = "start_expiry" if days_left > 0 else "start_ended"
        offers = [{"name": clean_header_text(t.name, 100), "price": clean_header_text(t.price, 100),
                   "url": clean_header_text(t.url, 300)} for t in self._notices.tiers]
        context = dict(
            name=clean_header_text(contact.name, 200), license_number=record.license,
            customer=clean_header_text(record.customer, 300),
            ends_on=format_date(ends_on, lang), days_left=days_left, offers=offers,
            support_name=self._support_name, support_address=self._box.support_address)
        body = self._text_env.get_template(f"notices/{kind}.{lang}.txt.j2").render(context)
        subject = self._text_env.get_template(f"notices/{kind}.{lang}.subject.j2").render(context)
        return self._mail(
            lambda: [
                self._from,
                address_header("To", ((clean_header_text(contact.name, 100), to),)),
                text_header("Subject", clean_header_text(subject, 250)),
                *self._common(message_id, now),
                _GENERATED,
            ],
            body, None, (to,), purpose, "start_notice", message_id)

    def _reply_to(self, ticket_number: str, recipients: Sequence[str], now: datetime) -> str:
        """The ticket's tokened reply address when every recipient is staff; else the plain
        support address (a token must never reach anyone outside the staff)."""
        box = self._box
        if not all(is_staff_address(a, box.staff_domains, box.staff_addresses)
                   for a in recipients):
            log.info("ticket %s: a recipient is not staff, Reply-To without a token",
                     ticket_number)
            return box.support_address
        expires = (now.astimezone(self._zone) + timedelta(days=self._conv.token_days)).date()
        return reply_address(box.support_address, ticket_number, self._secret, expires)

    def _common(self, message_id: str, now: datetime) -> list[str]:
        """Date, Message-ID and the loop header."""
        return [date_header(now.astimezone(self._zone)), id_header("Message-ID", (message_id,)),
                self._loop]

    def _thread_under_customer(self, ticket: TicketInfo) -> list[str]:
        """In-Reply-To and References of a mail to the customer about `ticket`: under their
        latest mail, else our acknowledgement."""
        ack = ticket_message_id(ticket.number, 1, self._domain)
        # The stored ids are the customer's, as their mails had them: only well-formed ones.
        last = message_ids(ticket.last_message_id)
        return [id_header("In-Reply-To", (last[0] if last else ack,)),
                id_header("References",
                          message_ids(ticket.first_message_id, ack, ticket.last_message_id))]

    def _mail(self, headers: Callable[[], list[str]], text: str, html: str | None,
              recipients: Sequence[str], purpose: str, kind: str, message_id: str,
              attachments: Sequence[tuple[str, str, bytes, str | None]] = ()
              ) -> OutgoingMail:
        """The mail of `headers` (made by the call, so that a value mailbot may not write
        raises ConversationRenderError) and its text (and HTML) body, or the text with
        `attachments`, to `recipients`."""
        try:
            if attachments:
                raw = "".join(headers()).encode("ascii") + mixed_body(text, attachments)
            else:
                raw = mail_bytes(headers(), text, html)
        except HeaderError as exc:
            raise ConversationRenderError(str(exc)) from exc
        return sealed(raw, recipients, purpose=purpose, kind=kind, message_id=message_id,
                      mail_from=self._box.support_address)


def attachments_of(raw: bytes, limit: int = ATTACHMENTS_LIMIT) -> list[FileAttachment]:
    """The attachments of a raw message (see `attachments_in`), up to `limit` bytes in all."""
    try:
        msg = mime_tree(raw)
    except Exception:  # noqa: BLE001 - the staff mail parsed before; be safe anyway
        return []
    return attachments_in(msg, limit)


def within_limit(attachments: Iterable[FileAttachment], limit: int) -> list[FileAttachment]:
    """The first `attachments` up to `limit` bytes in all (the rest left out with a warning),
    as `attachments_in` cuts them."""
    out: list[FileAttachment] = []
    total = 0
    for item in attachments:
        if total + len(item[2]) > limit:
            log.warning("attachments over %d bytes left out of the relay", limit)
            break
        total += len(item[2])
        out.append(item)
    return out


def attachments_in(msg: Message, limit: int = ATTACHMENTS_LIMIT) -> list[FileAttachment]:
    """The attachments of a message's `mime_tree` (the cheap compat32 one, no header
    objects): (cleaned filename, content type, bytes, charset of a text part), up to `limit`
    bytes in all (the rest are left out with a warning). Filenames are decoded as `parse`
    decodes them (RFC 2231, encoded words, raw 8-bit in the declared charsets)."""
    try:
        hints = declared_charsets(msg)
    except Exception:  # noqa: BLE001 - the staff mail parsed before; be safe anyway
        return []
    return within_limit(_read_attachments(msg, hints), limit)


def _read_attachments(msg: Message, hints: list[str]) -> Iterator[FileAttachment]:
    """Each attachment of `msg`, decoded when it is reached (`within_limit` stops early)."""
    for part, filename in _attachment_parts(msg, hints):
        try:
            payload = part.get_payload(decode=True)
            ctype = part.get_content_type()
            charset = part.get_content_charset() if ctype.startswith("text/") else None
        except Exception:  # noqa: BLE001 - e.g. ValueError: a NUL in an RFC 2231 charset
            continue
        if not isinstance(payload, bytes):
            continue
        name = safe_filename(filename or "attachment")
        if ctype.count("/") != 1 or ctype.startswith("multipart/"):
            ctype = "application/octet-stream"
        if charset is not None and not charset.replace("-", "").replace("_", "").isalnum():
            charset = None
        yield name, ctype, payload, charset


def _attachment_parts(msg: Message, hints: list[str]) -> Iterable[tuple[Message, str | None]]:
    for n, part in enumerate(msg.walk()):
        if n > 500:
            break
        if part.is_multipart():
            continue
        try:
            filename = attachment_filename(part, hints)
            attached = bool(filename) or part.get_content_disposition() == "attachment"
        except (ValueError, LookupError, UnicodeError):  # see _filename
            continue
        if attached:
            yield part, filename


