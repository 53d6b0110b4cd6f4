"""The daily staff digest: section membership and order, subject counts, the text and HTML
parts (HTML checked with a parser), escaping of customer text, headers and recipients."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config, load
from mailbot.domain import LOOP_HEADER, Priority, TicketInfo
from mailbot.replies.digest import (
    MAX_LINES,
    Digest,
    DigestRenderer,
    DigestRenderError,
    build_digest,
    digest_subject,
)

PRAGUE = ZoneInfo("Europe/Prague")
NOW = datetime(2026, 11, 25, 7, 30, tzinfo=PRAGUE)  # Wednesday, the digest time
SINCE = datetime(2026, 11, 24, 7, 30, tzinfo=PRAGUE)  # yesterday's digest
STAFF = ("tym-podpory@estelar.example", "vedouci@estelar.example")
MESSAGE_ID = "<mailbot-digest-20261125@estelar.example>"
HOSTILE = "<script>alert('x')</script> {{ 7*7 }} Nejde tisk"
VOID = {"meta", "br", "hr", "img", "link", "input", "col", "area", "base", "wbr"}


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=PRAGUE)


def ticket(seq: int, *, state: str = "open", opened: datetime, deadline: datetime,
           priority: Priority = Priority.NORMAL, subject: str = "Nejde tisk docházky",
           name: str = "Firma s.r.o.", assignee: str | None = None) -> TicketInfo:
    return TicketInfo(
        number=f"T-2026-{seq:06d}", state=state, subject=subject,
        customer_email=f"zakaznik{seq}@firma.cz", customer_name=name, license="4012-7733",
        priority=priority, language="cs", opened_at=opened, deadline=deadline,
        closed_at=at(19, 12) if state == "closed" else None, assignee=assignee)


OVERDUE = ticket(1, opened=at(19, 10), deadline=at(24, 10), assignee="Petr Dvořák")
DUE_TODAY = ticket(2, opened=at(20, 14), deadline=at(25, 14))
WAITING = ticket(3, state="waiting", opened=at(18, 9), deadline=at(23, 9))  # past, but paused
CLOSED = ticket(4, state="closed", opened=at(17, 9), deadline=at(20, 9))
NEW = ticket(5, opened=at(24, 15), deadline=at(27, 15), subject=HOSTILE,
             name="<b>Zlý</b> & spol.")
NEW_EMERGENCY = ticket(6, opened=at(25, 7), deadline=at(25, 11), priority=Priority.EMERGENCY)
# Opened exactly at the last digest; due 23:30 UTC on the 25th = 00:30 on the 26th in Prague.
AT_SINCE = ticket(7, opened=SINCE, deadline=datetime(2026, 11, 25, 23, 30, tzinfo=UTC))
DUE_NOW = ticket(8, opened=at(20, 9), deadline=NOW)  # not yet passed: due today
TICKETS = (OVERDUE, DUE_TODAY, WAITING, CLOSED, NEW, NEW_EMERGENCY, AT_SINCE, DUE_NOW)


@pytest.fixture(scope="module")
def config() -> Config:
    cfg = load()
    return cfg.model_copy(update={"mailbox": cfg.mailbox.model_copy(
        update={"staff_notify": STAFF})})


@pytest.fixture(scope="module")
def calendar(config: Config) -> BusinessCalendar:
    return BusinessCalendar(config.calendar)


@pytest.fixture(scope="module")
def digest(calendar: BusinessCalendar) -> Digest:
    return build_digest(TICKETS, now=NOW, since=SINCE, calendar=calendar)


def numbers(tickets: tuple[TicketInfo, ...]) -> list[int]:
    return [int(t.number.rsplit("-", 1)[1]) for t in tickets]


def render(config: Config, digest: Digest) -> tuple[EmailMessage, tuple[str, ...], bytes]:
    out = DigestRenderer(config).render(digest, message_id=MESSAGE_ID, now=NOW, purpose="digest:1")
    assert out is not None and out.kind == "digest" and out.purpose == "digest:1"
    raw, recipients = out.raw, out.rcpt_to
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    return msg, recipients, raw


def parts(msg: EmailMessage) -> tuple[str, str]:
    text_part = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    assert text_part is not None and html_part is not None
    return text_part.get_content(), html_part.get_content()


class Collector(HTMLParser):
    """Start tags with their attributes, text, and whether every element closes in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(html: str) -> Collector:
    p = Collector()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors
    assert not p.stack, f"unclosed: {p.stack}"
    return p


def ticket_rows(p: Collector) -> list[dict[str, str | None]]:
    return [a for tag, a in p.tags if tag == "tr" and "ticket" in (a.get("class") or "").split()]


# -- sections ---------------------------------------------------------------------------


def test_sections_membership_and_order(digest: Digest) -> None:
    assert digest.day == NOW.date()
    assert numbers(digest.new) == [6, 7, 5]  # emergency first, then by deadline
    assert numbers(digest.open) == [6, 3, 1, 8, 2, 7, 5]  # the closed ticket 4 left out
    assert numbers(digest.overdue) == [1]  # waiting ticket 3 is paused, not overdue
    assert numbers(digest.due_today) == [6, 8, 2]  # 7 is due tomorrow in Prague


def test_since_is_inclusive_and_clock_must_be_aware(calendar: BusinessCalendar) -> None:
    d = build_digest([AT_SINCE], now=NOW, since=AT_SINCE.opened_at, calendar=calendar)
    assert d.new == (AT_SINCE,)
    later = build_digest([AT_SINCE], now=NOW, since=SINCE + timedelta(seconds=1),
                         calendar=calendar)
    assert later.new == ()
    with pytest.raises(ValueError):
        build_digest([], now=NOW.replace(tzinfo=None), since=SINCE, calendar=calendar)


def test_subject_counts_and_czech_plurals(digest: Digest) -> None:
    assert digest_subject(digest, "cs") == "Přehled požadavků 25. 11. 2026: 3 nové, 1 po termínu"
    assert digest_subject(digest, "en") == "Support digest 25 November 2026: 3 new, 1 overdue"
    for n, words in ((0, "0 nových"), (1, "1 nový"), (4, "4 nové"), (5, "5 nových")):
        d = replace(digest, new=(NEW,) * n)
        assert digest_subject(d, "cs").endswith(f": {words}, 1 po termínu")


# -- the message ------------------------------------------------------------------------


def test_headers_and_recipients(config: Config, digest: Digest) -> None:
    msg, recipients, raw = render(config, digest)
    assert recipients == STAFF
    assert sorted(msg.keys()) == sorted([
        "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", LOOP_HEADER,
        "MIME-Version", "Content-Type"])
    assert msg["Subject"] == "Přehled požadavků 25. 11. 2026: 3 nové, 1 po termínu"
    assert msg["From"].addresses[0].addr_spec == "podpora@estelar.example"
    assert [a.addr_spec for a in msg["To"].addresses] == list(STAFF)
    assert msg["Message-ID"] == MESSAGE_ID
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg[LOOP_HEADER] == "podpora@estelar.example"
    assert msg["Date"].datetime == NOW
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_text_part_has_tags_and_raw_customer_text(config: Config, digest: Digest) -> None:
    text, _ = parts(render(config, digest)[0])
    for t in TICKETS:
        assert (f"[#{t.number}]" in text) is (t is not CLOSED)
    assert "PO TERMÍNU (1)" in text and "TERMÍN DNES (3)" in text
    assert "NOVÉ OD MINULÉHO PŘEHLEDU (3)" in text
    assert "HAVÁRIE" in text and "čeká na zákazníka" in text
    assert "řeší: Petr Dvořák · termín: úterý 24. 11. 2026 10:00" in text
    assert HOSTILE in text and "49" not in text  # data, never a template


def test_html_part_parses_with_rows_links_and_escaping(config: Config, digest: Digest) -> None:
    _, html = parts(render(config, digest)[0])
    p = parse_html(html)
    rows = ticket_rows(p)
    shown = len(digest.new) + len(digest.open) + len(digest.overdue) + len(digest.due_today)
    assert len(rows) == shown == 14
    assert sum("emergency" in (a.get("class") or "") for a in rows) == 3  # 6 in three sections
    links = {a.get("href") for tag, a in p.tags if tag == "a"}
    assert "mailto:podpora@estelar.example?subject=%5B%23T-2026-000001%5D" in links
    assert "script" not in {tag for tag, _ in p.tags} and "b" not in {tag for tag, _ in p.tags}
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;Zlý&lt;/b&gt; &amp; spol." in html
    assert HOSTILE in "".join(p.text)  # shown to staff as the text it is


def test_long_sections_are_bounded(config: Config, calendar: BusinessCalendar) -> None:
    many = [ticket(100 + i, opened=at(10, 9), deadline=at(20, 9) + timedelta(minutes=i))
            for i in range(MAX_LINES + 50)]
    d = build_digest(many, now=NOW, since=SINCE, calendar=calendar)
    assert len(d.overdue) == len(d.open) == MAX_LINES + 50
    msg, _, _ = render(config, d)
    text, html = parts(msg)
    assert len(ticket_rows(parse_html(html))) == 2 * MAX_LINES
    assert text.count("… a 50 dalších") == 2 and html.count("… a 50 dalších") == 2
    assert "[#T-2026-000299]" in text and "[#T-2026-000300]" not in text
    assert msg["Subject"] == "Přehled požadavků 25. 11. 2026: 0 nových, 250 po termínu"


def test_empty_digest_renders(config: Config, calendar: BusinessCalendar) -> None:
    d = build_digest([], now=NOW, since=SINCE, calendar=calendar)
    text, html = parts(render(config, d)[0])
    assert text.count("(žádné)") == 4
    assert ticket_rows(parse_html(html)) == []


def test_english(config: Config, digest: Digest) -> None:
    cfg = config.model_copy(update={"conversation": config.conversation.model_copy(
        update={"staff_language": "en"})})
    msg, _, _ = render(cfg, digest)
    text, html = parts(msg)
    assert msg["Subject"] == "Support digest 25 November 2026: 3 new, 1 overdue"
    assert "OVERDUE (1)" in text and "waiting for the customer" in text
    assert "deadline: Tuesday 24 November 2026, 10:00 (Prague time)" in text
    assert len(ticket_rows(parse_html(html))) == 14


def test_bad_recipients_are_dropped(config: Config, digest: Digest) -> None:
    smuggled = "evil@example.org\r\nBcc: victim@example.org"
    cfg = config.model_copy(update={"mailbox": config.mailbox.model_copy(
        update={"staff_notify": (smuggled, STAFF[0], STAFF[0])})})
    msg, recipients, raw = render(cfg, digest)
    assert recipients == (STAFF[0],)
    assert b"victim" not in raw and "Bcc" not in msg
    nobody = config.model_copy(update={"mailbox": config.mailbox.model_copy(
        update={"staff_notify": ()})})
    assert DigestRenderer(nobody).render(digest, message_id=MESSAGE_ID, now=NOW, purpose="d") is None


def test_bad_message_id_or_naive_clock_refused(config: Config, digest: Digest) -> None:
    renderer = DigestRenderer(config)
    with pytest.raises(DigestRenderError):
        renderer.render(digest, message_id="<a@b>\r\nBcc: x@example.org", now=NOW, purpose="d")
    with pytest.raises(DigestRenderError):
        renderer.render(digest, message_id=MESSAGE_ID, now=NOW.replace(tzinfo=None), purpose="d")
