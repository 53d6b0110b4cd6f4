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

Headers are built with `email.policy.SMTP` header objects from cleaned values only, and the
serialized message is re-parsed to prove no header or recipient was smuggled in.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage, Message
from typing import Final


from mailbot.attachments import safe_filename
from mailbot.classify.commands import COMMANDS
from mailbot.contacts import Contact
from mailbot.classify.staff_auth import is_staff_address, reply_address
from mailbot.config import Config
from mailbot.domain import (
    LOOP_HEADER,
    Decision,
    LicenseRecord,
    Mail,
    Priority,
    TicketInfo,
    other_message_id,
    ticket_message_id,
)
from mailbot.errors import MailbotError
from mailbot.replies.render import checked_bytes as render_checked_bytes
from mailbot.replies.render import (
    clean_header_text,
    format_date,
    format_deadline,
    template_environments,
    valid_address,
)

log = logging.getLogger(__name__)

POLICY: Final = email.policy.SMTP
TEXT_LIMIT: Final = 20_000
ATTACHMENTS_LIMIT: Final = 20 * 1024 * 1024
_MIME_PARSER = email.parser.BytesParser(policy=email.policy.default)


SCHEDULED: Final = ("staff/reminder", "staff/escalation", "staff/emergency",
                    "replies/wait_reminder", "replies/wait_closed",
                    "notices/start_expiry", "notices/start_ended")
"""Templates of the timed and alert mails (text only)."""


class ConversationRenderError(MailbotError):
    """A conversation mail could not be built safely."""


@dataclass(frozen=True, slots=True)
class Built:
    """A built message, its bytes, envelope recipients and Message-ID."""

    raw: bytes
    recipients: tuple[str, ...]
    message_id: str


def _text(value: str, limit: int = TEXT_LIMIT) -> str:
    """Body text without control characters except newlines and tabs, cut to `limit`."""
    kept = "".join(ch for ch in value[:limit] if ch in "\n\t" or ch >= " " and ch != "\x7f")
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
        self._domain = box.message_id_domain
        self._support_name = clean_header_text(box.support_name, 100)
        self._text_env, self._html_env = template_environments(
            config.path(config.replies.templates_dir))
        for name in ("staff/notice", "staff/command_error", "replies/relay", *SCHEDULED):
            for lang in ("cs", "en"):
                self._text_env.get_template(f"{name}.{lang}.txt.j2")
        for lang in ("cs", "en"):
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
        suspicious: str = "",
    ) -> Built | None:
        """The staff notice of `event` ("new" ticket or customer "followup")."""
        recipients = tuple(a for a in self._box.staff_notify if valid_address(a))
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
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(self._support_name, addr_spec=self._box.support_address)
        msg["To"] = ", ".join(recipients)
        msg["Reply-To"] = reply_to
        prefix = {"cs": "HAVÁRIE ", "en": "EMERGENCY "}[lang] if emergency else ""
        msg["Subject"] = clean_header_text(f"{prefix}[#{ticket.number}] {ticket.subject}", 250)
        message_id = ticket_message_id(ticket.number, f"n{inbound_id}", self._domain)
        self._common(msg, message_id, now)
        ack = ticket_message_id(ticket.number, 1, self._domain)
        msg["References"] = ack
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: a notification, not a reply
        msg.set_content(body, cte="quoted-printable")
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
        return Built(checked_bytes(msg, recipients), recipients, message_id)

    # --- staff reply relayed to the customer ---------------------------------------------

    def relay(
        self,
        *,
        ticket: TicketInfo,
        decision: Decision,
        mail: Mail,
        raw: bytes | None,
        inbound_id: int,
        now: datetime,
    ) -> Built | None:
        """The staff reply as the customer receives it (None: no valid customer address)."""
        to = valid_address(ticket.customer_email)
        if to is None:
            log.warning("ticket %s: customer address %r invalid, reply not relayed",
                        ticket.number, ticket.customer_email)
            return None
        lang = ticket.language if ticket.language in ("cs", "en") else "cs"
        body = self._text_env.get_template(f"replies/relay.{lang}.txt.j2").render(
            text=_text(decision.staff_text), ticket_number=ticket.number,
            support_name=self._support_name, support_address=self._box.support_address)
        staff_name = clean_header_text(mail.from_name, 100)
        msg = EmailMessage(policy=POLICY)
        staff_addr = valid_address(mail.from_addr) if self._conv.expose_staff_address else None
        if staff_addr:
            msg["From"] = Address(staff_name or self._support_name, addr_spec=staff_addr)
            msg["Reply-To"] = Address(self._support_name, addr_spec=self._box.support_address)
        else:
            shown = f"{staff_name} ({self._support_name})" if staff_name else self._support_name
            msg["From"] = Address(clean_header_text(shown, 150),
                                  addr_spec=self._box.support_address)
        msg["To"] = Address(clean_header_text(ticket.customer_name, 100), addr_spec=to)
        subject = clean_header_text(ticket.subject, 200) or "(bez předmětu)"
        msg["Subject"] = clean_header_text(f"Re: [#{ticket.number}] {subject}", 250)
        message_id = ticket_message_id(ticket.number, f"r{inbound_id}", self._domain)
        self._common(msg, message_id, now)
        ack = ticket_message_id(ticket.number, 1, self._domain)
        # The stored ids are the customer's, as their mails had them: only well-formed ones.
        last = _message_ids(ticket.last_message_id)
        msg["In-Reply-To"] = last[0] if last else ack
        msg["References"] = " ".join(
            _message_ids(ticket.first_message_id, ack, ticket.last_message_id))
        msg.set_content(body, cte="quoted-printable")
        for filename, ctype, payload, charset in attachments_of(raw) if raw else ():
            maintype, _, subtype = ctype.partition("/")
            params = {"charset": charset} if charset else {}
            msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename,
                               params=params)
        return Built(checked_bytes(msg, (to,)), (to,), message_id)

    # --- errors back to staff ------------------------------------------------------------

    def command_error(self, *, mail: Mail, ticket_number: str, errors: Sequence[str],
                      inbound_id: int, now: datetime) -> Built | None:
        """Tell a staff member why their reply was not acted on."""
        to = valid_address(mail.from_addr)
        if to is None:
            return None
        lang = self._conv.staff_language
        body = self._text_env.get_template(f"staff/command_error.{lang}.txt.j2").render(
            ticket_number=ticket_number, errors=[clean_header_text(e, 300) for e in errors],
            commands=sorted(COMMANDS), subject=clean_header_text(mail.subject, 200))
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(self._support_name, addr_spec=self._box.support_address)
        msg["To"] = to
        word = {"cs": "Nezpracováno", "en": "Not processed"}[lang]
        msg["Subject"] = clean_header_text(f"{word}: [#{ticket_number}] {mail.subject}", 250)
        message_id = other_message_id(f"cmderr-{inbound_id}", self._domain)
        self._common(msg, message_id, now)
        parent = mail.message_id
        if parent and valid_message_id(parent):
            msg["In-Reply-To"] = parent
        msg["Auto-Submitted"] = "auto-replied"
        msg.set_content(body, cte="quoted-printable")
        return Built(checked_bytes(msg, (to,)), (to,), message_id)

    # --- alerts to staff and notes to customers (scheduler, emergencies) -----------------

    def staff_alert(self, *, kind: str, ticket: TicketInfo, recipients: Sequence[str],
                    message_id: str, now: datetime, text: str = "") -> Built | None:
        """A reminder, escalation or emergency alert about `ticket` (template
        ``staff/<kind>``); Reply-To is the ticket's reply address, as in a notice."""
        to = tuple(dict.fromkeys(a for a in recipients if valid_address(a)))
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
        words = {"reminder": ("Blíží se termín", "Deadline approaching"),
                 "escalation": ("PO TERMÍNU", "OVERDUE"),
                 "emergency": ("HAVÁRIE", "EMERGENCY")}[kind]
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(self._support_name, addr_spec=self._box.support_address)
        msg["To"] = ", ".join(to)
        msg["Reply-To"] = self._reply_to(ticket.number, to, now)
        word = words[0] if lang == "cs" else words[1]
        msg["Subject"] = clean_header_text(f"{word}: [#{ticket.number}] {ticket.subject}", 250)
        self._common(msg, message_id, now)
        msg["References"] = ticket_message_id(ticket.number, 1, self._domain)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, cte="quoted-printable")
        return Built(checked_bytes(msg, to), to, message_id)

    def customer_note(self, *, kind: str, ticket: TicketInfo, message_id: str,
                      now: datetime) -> Built | None:
        """A timed note to the customer about `ticket` (template ``replies/<kind>``),
        threaded like a relayed reply."""
        to = valid_address(ticket.customer_email)
        if to is None:
            return None
        lang = ticket.language if ticket.language in ("cs", "en") else "cs"
        body = self._text_env.get_template(f"replies/{kind}.{lang}.txt.j2").render(
            ticket_number=ticket.number, subject=clean_header_text(ticket.subject, 300),
            support_name=self._support_name, support_address=self._box.support_address)
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(self._support_name, addr_spec=self._box.support_address)
        msg["To"] = Address(clean_header_text(ticket.customer_name, 100), addr_spec=to)
        subject = clean_header_text(ticket.subject, 200) or "(bez předmětu)"
        msg["Subject"] = clean_header_text(f"Re: [#{ticket.number}] {subject}", 250)
        self._common(msg, message_id, now)
        ack = ticket_message_id(ticket.number, 1, self._domain)
        last = _message_ids(ticket.last_message_id)  # the customer's ids: well-formed only
        msg["In-Reply-To"] = last[0] if last else ack
        msg["References"] = " ".join(
            _message_ids(ticket.first_message_id, ack, ticket.last_message_id))
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, cte="quoted-printable")
        return Built(checked_bytes(msg, (to,)), (to,), message_id)

    def license_notice(self, *, contact: Contact, record: LicenseRecord, ends_on: date,
                       days_left: int, message_id: str, now: datetime) -> Built | None:
        """A notice to a contact that HOTLINE START ends in `days_left` days (0: it ended
        today), with the paid tiers on offer."""
        to = valid_address(contact.email)
        if to is None:
            return None
        lang = contact.language if contact.language in ("cs", "en") else "cs"
        kind = "start_expiry" if days_left > 0 else "start_ended"
        offers = [{"name": clean_header_text(t.name, 100), "price": clean_header_text(t.price, 100),
                   "url": clean_header_text(t.url, 300)} for t in self._notices.tiers]
        body = self._text_env.get_template(f"notices/{kind}.{lang}.txt.j2").render(
            name=clean_header_text(contact.name, 200), license_number=record.license,
            customer=clean_header_text(record.customer, 300),
            ends_on=format_date(ends_on, lang), days_left=days_left, offers=offers,
            support_name=self._support_name, support_address=self._box.support_address)
        subjects = {
            ("start_expiry", "cs"): f"Podpora HOTLINE START pro licenci {record.license} končí "
                                    f"{format_date(ends_on, 'cs')}",
            ("start_expiry", "en"): f"HOTLINE START support for license {record.license} ends "
                                    f"on {format_date(ends_on, 'en')}",
            ("start_ended", "cs"): f"Podpora HOTLINE START pro licenci {record.license} skončila",
            ("start_ended", "en"): f"HOTLINE START support for license {record.license} has ended",
        }
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(self._support_name, addr_spec=self._box.support_address)
        msg["To"] = Address(clean_header_text(contact.name, 100), addr_spec=to)
        msg["Subject"] = clean_header_text(subjects[(kind, lang)], 250)
        self._common(msg, message_id, now)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, cte="quoted-printable")
        return Built(checked_bytes(msg, (to,)), (to,), message_id)

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

    def _common(self, msg: EmailMessage, message_id: str, now: datetime) -> None:
        msg["Date"] = email.utils.format_datetime(now.astimezone(self._zone))
        msg["Message-ID"] = message_id
        msg[LOOP_HEADER] = self._box.support_address


def valid_message_id(value: str) -> bool:
    v = value.strip()
    return (v.startswith("<") and v.endswith(">") and len(v) < 250 and " " not in v
            and all(" " < ch < "\x7f" for ch in v)
            and "=?" not in v)  # the email package would decode an encoded word in it


def _message_ids(*values: str | None) -> list[str]:
    """The values that are well-formed Message-IDs, stripped, in order, once each."""
    return list(dict.fromkeys(v.strip() for v in values if v and valid_message_id(v)))


def attachments_of(raw: bytes, limit: int = ATTACHMENTS_LIMIT
                   ) -> list[tuple[str, str, bytes, str | None]]:
    """The attachments of a raw message: (cleaned filename, content type, bytes, charset of a
    text part), up to `limit` bytes in all (the rest are left out with a warning)."""
    try:
        msg = _MIME_PARSER.parsebytes(raw)
    except Exception:  # noqa: BLE001 - the staff mail parsed before; be safe anyway
        return []
    out: list[tuple[str, str, bytes, str | None]] = []
    total = 0
    for part in _attachment_parts(msg):
        try:
            payload = part.get_payload(decode=True)
            ctype = part.get_content_type()
            charset = part.get_content_charset() if ctype.startswith("text/") else None
        except Exception:  # noqa: BLE001 - e.g. ValueError: a NUL in an RFC 2231 charset
            continue
        if not isinstance(payload, bytes):
            continue
        if total + len(payload) > limit:
            log.warning("attachments over %d bytes left out of the relay", limit)
            break
        total += len(payload)
        name = safe_filename(_filename(part) or "attachment")
        if ctype.count("/") != 1 or ctype.startswith("multipart/"):
            ctype = "application/octet-stream"
        if charset is not None and not charset.replace("-", "").replace("_", "").isalnum():
            charset = None
        out.append((name, ctype, payload, charset))
    return out


def _attachment_parts(msg: Message) -> Iterable[Message]:
    for n, part in enumerate(msg.walk()):
        if n > 500:
            break
        if part.is_multipart():
            continue
        try:
            attached = bool(_filename(part)) or part.get_content_disposition() == "attachment"
        except (ValueError, LookupError, UnicodeError):  # see _filename
            continue
        if attached:
            yield part


def _filename(part: Message) -> str | None:
    """The part's filename, None when there is none or it cannot be decoded (the stdlib
    raises ValueError for an RFC 2231 `filename*=` whose charset holds a NUL)."""
    try:
        return part.get_filename()
    except (ValueError, LookupError, UnicodeError):
        return None


def checked_bytes(msg: EmailMessage, recipients: Sequence[str]) -> bytes:
    """`render.checked_bytes` raising ConversationRenderError."""
    return render_checked_bytes(msg, recipients, error=ConversationRenderError)
