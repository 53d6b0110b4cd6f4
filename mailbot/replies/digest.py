"""The daily digest to the staff list: new, open, overdue and due-today tickets (pure).

`build_digest` sorts a list of tickets into the four sections (emergencies first, then by
deadline); `DigestRenderer.render` turns a `Digest` into one multipart/alternative message
(text and simple HTML) to `mailbox.staff_notify`, in `conversation.staff_language`.

Every ticket line shows its tag ``[#T-2026-000123]`` (staff find the ticket's mail by it), and
in HTML the tag links to ``mailto:<support address>?subject=[#T-…]``: a mail written from
that link names the ticket, so it is handled as a staff reply (sent on to the customer
unless it starts with ``#note``). Each section shows at most `max_lines` tickets, then
"… a N dalších", so a store of thousands of tickets still gives a mail of bounded size.

Customer text (subjects, names) is only template data: cleaned to one line, autoescaped in
HTML, never compiled. Headers are built from cleaned values with `email.policy.SMTP`, and
the serialized message is re-parsed to prove it has exactly the headers and recipients set.
The scheduling (which day, which `since`) is :mod:`mailbot.scheduler`'s business.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, Final
from urllib.parse import quote

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config
from mailbot.domain import LOOP_HEADER, OutgoingMail, Priority, TicketInfo
from mailbot.errors import MailbotError
from mailbot.replies.language import choose_language, format_date, format_deadline
from mailbot.replies.layout import template_environments
from mailbot.replies.mime import POLICY, outgoing, set_bodies, valid_address, valid_message_id
from mailbot.replies.sanitize import clean_header_text

__all__ = ["MAX_LINES", "SECTIONS", "Digest", "DigestRenderError", "DigestRenderer",
           "build_digest", "digest_subject"]

MAX_LINES: Final = 200
"""Tickets shown per section; the rest are counted ("… a N dalších")."""

SECTIONS: Final = ("overdue", "due_today", "new", "open")
"""The sections in the order the mail shows them."""

_OPEN_STATES: Final = frozenset({"open", "waiting"})


class DigestRenderError(MailbotError):
    """The digest could not be built safely (bad Message-ID or clock, header check failed)."""


@dataclass(frozen=True, slots=True)
class Digest:
    """The tickets of one day's digest; each section emergencies first, then by deadline.

    - `new`: opened at or after the previous digest (any state);
    - `open`: state "open" or "waiting";
    - `overdue`: state "open" and the deadline has passed;
    - `due_today`: state "open", the deadline not yet passed but on today's (local) date.
    """

    day: date
    new: tuple[TicketInfo, ...]
    open: tuple[TicketInfo, ...]
    overdue: tuple[TicketInfo, ...]
    due_today: tuple[TicketInfo, ...]


def _order(ticket: TicketInfo) -> tuple[bool, datetime, str]:
    return (ticket.priority is not Priority.EMERGENCY, ticket.deadline, ticket.number)


def build_digest(tickets: Sequence[TicketInfo], *, now: datetime, since: datetime,
                 calendar: BusinessCalendar) -> Digest:
    """Sort `tickets` into the digest's sections at `now`; `since` is the previous digest.

    Local dates (the digest's day, "due today") are in the calendar's zone.

    Raises:
        ValueError: `now` or `since` is naive.
    """
    if now.tzinfo is None or since.tzinfo is None:
        raise ValueError("now and since must be aware datetimes")
    zone = calendar.zone
    today = now.astimezone(zone).date()
    new: list[TicketInfo] = []
    open_: list[TicketInfo] = []
    overdue: list[TicketInfo] = []
    due_today: list[TicketInfo] = []
    for t in tickets:
        if t.opened_at >= since:
            new.append(t)
        if t.state in _OPEN_STATES:
            open_.append(t)
        if t.state == "open":
            if t.deadline < now:
                overdue.append(t)
            elif t.deadline.astimezone(zone).date() == today:
                due_today.append(t)
    return Digest(
        day=today,
        new=tuple(sorted(new, key=_order)),
        open=tuple(sorted(open_, key=_order)),
        overdue=tuple(sorted(overdue, key=_order)),
        due_today=tuple(sorted(due_today, key=_order)),
    )


def _czech_new(n: int) -> str:
    """``1 nový``, ``3 nové``, ``5 nových`` (a požadavek is masculine inanimate)."""
    if n == 1:
        return "1 nový"
    if 2 <= n <= 4:
        return f"{n} nové"
    return f"{n} nových"


def digest_subject(digest: Digest, lang: str) -> str:
    """E.g. ``Přehled požadavků 25. 11. 2026: 3 nové, 2 po termínu``."""
    day = format_date(digest.day, lang)
    new, overdue = len(digest.new), len(digest.overdue)
    if lang == "cs":
        return f"Přehled požadavků {day}: {_czech_new(new)}, {overdue} po termínu"
    return f"Support digest {day}: {new} new, {overdue} overdue"


class DigestRenderer:
    """Renders a `Digest` as a mail to the staff list; construct once from the Config."""

    def __init__(self, config: Config, *, max_lines: int = MAX_LINES) -> None:
        """Load and compile the digest templates.

        Raises:
            jinja2.TemplateNotFound, jinja2.TemplateSyntaxError: a digest template is missing
                or broken.
        """
        box = config.mailbox
        self._support_address = box.support_address
        self._support_name = clean_header_text(box.support_name, 100)
        self._domain = box.message_id_domain
        self._zone = config.calendar.zone
        lang = config.conversation.staff_language
        self._lang = choose_language(lang, config.replies.default_language)
        self._max_lines = max(1, max_lines)
        valid = (valid_address(a) for a in box.staff_notify)
        self._recipients = tuple(dict.fromkeys(a for a in valid if a))
        self._mailto = f"mailto:{quote(self._support_address, safe='@')}?subject="
        text_env, html_env = template_environments(config.path(config.replies.templates_dir))
        self._text = text_env.get_template(f"staff/digest.{self._lang}.txt.j2")
        self._html = html_env.get_template(f"staff/digest.{self._lang}.html.j2")

    @property
    def recipients(self) -> tuple[str, ...]:
        """The valid addresses of `mailbox.staff_notify` (empty: no digest can be sent)."""
        return self._recipients

    def render(self, digest: Digest, *, message_id: str, now: datetime, purpose: str
               ) -> OutgoingMail | None:
        """The digest as the outbox row `purpose` (kind "digest"); None when
        `mailbox.staff_notify` has no valid address.

        Raises:
            DigestRenderError: a malformed `message_id`, a naive `now`, or a serialized
                message that fails the header re-check.
        """
        if not valid_message_id(message_id):
            raise DigestRenderError(f"malformed Message-ID for the digest: {message_id!r}")
        if now.tzinfo is None:
            raise DigestRenderError("now must be an aware datetime")
        recipients = self._recipients
        if not recipients:
            return None
        context = self._context(digest, now)
        text = self._text.render(context)
        html = self._html.render(context)
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(self._support_name, addr_spec=self._support_address)
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = clean_header_text(digest_subject(digest, self._lang), 250)
        msg["Date"] = email.utils.format_datetime(now.astimezone(self._zone))
        msg["Message-ID"] = message_id.strip()
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: nobody should answer it
        msg[LOOP_HEADER] = self._support_address
        set_bodies(msg, text, html)
        return outgoing(msg, recipients, purpose=purpose, kind="digest",
                        message_id=message_id.strip(), mail_from=self._support_address,
                        error=DigestRenderError)

    # -- template data --------------------------------------------------------------------

    def _context(self, digest: Digest, now: datetime) -> dict[str, Any]:
        rows: dict[str, dict[str, Any]] = {}  # a ticket in several sections is cleaned once
        sections = []
        for key in SECTIONS:
            tickets: tuple[TicketInfo, ...] = getattr(digest, key)
            shown = []
            for t in tickets[: self._max_lines]:
                row = rows.get(t.number)
                if row is None:
                    row = rows[t.number] = self._row(t)
                shown.append(row)
            sections.append({"key": key, "count": len(tickets), "rows": shown,
                             "more": max(0, len(tickets) - len(shown))})
        return {
            "day_text": format_date(digest.day, self._lang),
            "now_text": format_deadline(now, self._lang, self._zone),
            "sections": sections,
            "counts": {s["key"]: s["count"] for s in sections},
            "support_address": self._support_address,
            "support_name": self._support_name,
        }

    def _row(self, t: TicketInfo) -> dict[str, Any]:
        tag = f"[#{clean_header_text(t.number, 60)}]"
        return {
            "tag": tag,
            "mailto": self._mailto + quote(tag, safe=""),
            "emergency": t.priority is Priority.EMERGENCY,
            "state": t.state,
            "subject": clean_header_text(t.subject, 150),
            "customer_name": clean_header_text(t.customer_name, 100),
            "customer_email": clean_header_text(t.customer_email, 320),
            "license": clean_header_text(t.license or "", 60),
            "assignee": clean_header_text(t.assignee or "", 100),
            "deadline_text": format_deadline(t.deadline, self._lang, self._zone),
        }
