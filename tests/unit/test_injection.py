"""Header and template injection through everything a mail carries into the mails mailbot
writes: the customer reply (`ReplyRenderer.render`), the staff notice and the relayed
staff reply (`ConversationRenderer.notice` / `.relay`).

Hostile subjects, display names, addresses, bodies and attachment filenames (CR, LF, NUL,
U+2028, U+0085, RFC 2047 encoded words that decode to line breaks, 2,000-character strings)
must give bytes that re-parse with exactly the headers the renderer set, each once, the one
recipient in To (the configured staff list for notices), no Bcc or Cc, and no CR/LF/NUL in
any header, raw or decoded. The only "no mail" answer is the documented None (no reply kind,
or no valid recipient); anything raised is a failure. Customer text is template data: it
comes out literally in text parts and escaped in HTML parts, is never evaluated, and the
templates see plain values only, never the Config.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from email.message import EmailMessage, Message
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import jinja2.defaults
import jinja2.environment
import jinja2.sandbox
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mailbot.config import Config
from mailbot.domain import (
    Attachment,
    Decision,
    DecisionKind,
    LicenseRecord,
    Mail,
    OutgoingMail,
    Priority,
    Tier,
    TicketInfo,
    TicketView,
    other_message_id,
    ticket_message_id,
)
from mailbot.replies.conversation import ConversationRenderer, attachments_of
from mailbot.replies.mime import valid_address
from mailbot.replies.render import ReplyRenderer

ANSWERED = (DecisionKind.REJECT_EXPIRED, DecisionKind.REJECT_INCOMPLETE,
            DecisionKind.REJECT_SCOPE, DecisionKind.REJECT_UNKNOWN_LICENSE, DecisionKind.TICKET)
"""The kinds that get an automatic reply, written here (not the renderer's own table)."""

PRAGUE = ZoneInfo("Europe/Prague")
NOW = datetime(2026, 11, 20, 16, 0, tzinfo=PRAGUE)
DEADLINE = datetime(2026, 11, 25, 16, 0, tzinfo=PRAGUE)
TICKET_NO = "T-2026-000145"
CUSTOMER = "jan.novak@firma.cz"
STAFF = ("tym-podpory@estelar.example", "vedouci-podpory@estelar.example")
SMTP_HOST = "smtp-relay.secret-host.internal"
SMTP_USER = "mailbot-relay-user"
SECRET = b"secret"
VICTIM = "victim@example.com"

# Header names each kind of mail carries: (always, sometimes).
REPLY_HEADERS = ({"from", "to", "subject", "date", "message-id", "auto-submitted",
                  "x-auto-response-suppress", "x-mailbot-loop", "mime-version", "content-type",
                  "content-language"}, {"in-reply-to", "references"})
NOTICE_HEADERS = ({"from", "to", "reply-to", "subject", "date", "message-id", "x-mailbot-loop",
                   "references", "auto-submitted", "mime-version", "content-type"}, set[str]())
RELAY_HEADERS = ({"from", "to", "subject", "date", "message-id", "x-mailbot-loop",
                  "in-reply-to", "references", "mime-version", "content-type"},
                 {"content-transfer-encoding", "reply-to"})

# Everything that must never appear in a header line, raw or decoded.
FORBIDDEN = re.compile("[\r\n\x00\u2028\u2029\u0085]")
_FOLD = re.compile(r"\r\n(?=[ \t])")
_COMPAT = email.parser.BytesParser(policy=email.policy.compat32)


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


PIECES = [
    "\r\n", "\n", "\r", "\x00", "\u2028", "\u2029", "\u0085", "\t", "\x0b", "\x0c", "\x1c",
    "\r\nBcc: " + VICTIM, "\nTo: " + VICTIM, "\r\n\r\n<html>", "\nX-Evil: 1",
    "=?utf-8?q?Hi=0D=0ABcc:_victim@example.com?=", _b64_word("\r\nBcc: " + VICTIM),
    "=?utf-8?q?=0A?=", "=?iso-8859-2?q?=0D?=", "=?", "?=", '"', "<", ">", ",", ";", ":", "@",
    "\\", "(", ")", "[", "]", VICTIM, "{{ 7*7 }}", "{% include 'x' %}", "é", "Ž", "\U0001f600",
    "\u202e", "\u200b", "\ufeff", "\u00a0", " ", "  ",
]
HOSTILE = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=10).map("".join),
    st.sampled_from(PIECES).map(lambda p: (p * 2000)[:2000]),
    st.text(min_size=1, max_size=8).map(lambda s: (s * (2000 // len(s) + 1))[:2000]),
)
ADDRESSES = st.one_of(
    st.emails(),
    st.sampled_from([
        CUSTOMER, "jan@pekárna.cz", "ján@firma.cz", "jan@localhost", "", "not-an-address",
        f"{CUSTOMER}\r\nBcc: {VICTIM}", f"{CUSTOMER}\nBcc: {VICTIM}", f"{CUSTOMER}, {VICTIM}",
        f"Jan <{CUSTOMER}>", '"a\r\nb"@firma.cz', "=?utf-8?q?=0D=0A?=@example.com",
        "=?utf-8?q?victim=40example.com?=@firma.cz", "a=?b?=c@firma.cz", f"{VICTIM}\x00",
        "podpora@estelar.example", "x" * 70 + "@firma.cz", "jan@" + "a" * 250 + ".cz",
    ]),
    HOSTILE,
)
MESSAGE_IDS = st.one_of(
    st.none(),
    st.sampled_from(["<m-1@firma.cz>", f"<a@b>\r\nBcc: {VICTIM}", "=?utf-8?q?=0D=0ABcc:_x?=",
                     "<=?utf-8?q?=0D=0A?=@firma.cz>", "m-1@firma.cz", "<a b@c>", "<>"]),
    HOSTILE,
)


def make_mail(**changes: Any) -> Mail:
    values: dict[str, Any] = dict(
        message_id="<m-1@firma.cz>", from_addr=CUSTOMER, from_name="Jan Novák",
        to=("podpora@estelar.example",), cc=(), subject="Nejde tisk docházky",
        date=datetime(2026, 11, 20, 15, 40, tzinfo=PRAGUE), in_reply_to=("<m-0@firma.cz>",),
        references=("<root@firma.cz>", "<m-0@firma.cz>"), return_path=f"<{CUSTOMER}>",
        headers={}, content_type="text/plain", report_type="",
        text="Dobrý den,\nod rána nejde tisk docházky.\n\nLicence 4012 7733\n", html="",
    )
    values.update(changes)
    return Mail(**values)


def make_decision(kind: DecisionKind, lang: str = "cs", **changes: Any) -> Decision:
    values: dict[str, Any] = dict(
        kind=kind, reasons=(), license="40127733",
        priority=Priority.NORMAL if kind is DecisionKind.TICKET else None,
        missing=("license", "description") if kind is DecisionKind.REJECT_INCOMPLETE else (),
        scope_reason="training" if kind is DecisionKind.REJECT_SCOPE else None,
        language=lang,
        entitlement_end=date(2026, 5, 31) if kind is DecisionKind.REJECT_EXPIRED else None,
    )
    values.update(changes)
    return Decision(**values)


def make_view(subject: str = "Nejde tisk docházky") -> TicketView:
    return TicketView(number=TICKET_NO, subject=subject, priority=Priority.NORMAL,
                      opened_at=NOW, deadline=DEADLINE, customer_email=CUSTOMER,
                      license="40127733")


def make_info(**changes: Any) -> TicketInfo:
    values: dict[str, Any] = dict(
        number=TICKET_NO, state="open", subject="Nejde tisk docházky", customer_email=CUSTOMER,
        customer_name="Jan Novák", license="40127733", priority=Priority.NORMAL, language="cs",
        opened_at=NOW, deadline=DEADLINE, first_message_id="<m-0@firma.cz>",
        last_message_id="<m-1@firma.cz>",
    )
    values.update(changes)
    return TicketInfo(**values)


def make_config(*, expose: bool = False) -> Config:
    cfg = Config()
    return cfg.model_copy(update={
        "mailbox": cfg.mailbox.model_copy(update={"staff_notify": STAFF}),
        "outbound": cfg.outbound.model_copy(update={"host": SMTP_HOST, "username": SMTP_USER}),
        "conversation": cfg.conversation.model_copy(update={"expose_staff_address": expose}),
    })


@pytest.fixture(scope="module")
def config() -> Config:
    return make_config()


@pytest.fixture(scope="module")
def renderer(config: Config) -> ReplyRenderer:
    return ReplyRenderer(config)


@pytest.fixture(scope="module")
def conversation(config: Config) -> ConversationRenderer:
    return ConversationRenderer(config, SECRET)


@pytest.fixture(scope="module")
def exposing() -> ConversationRenderer:
    """expose_staff_address = true: the staff member's own address is the relay's From."""
    return ConversationRenderer(make_config(expose=True), SECRET)


# ---------------------------------------------------------------------------- checks


def _decoded(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


def check_bytes(raw: bytes, headers: tuple[set[str], set[str]], recipients: tuple[str, ...],
                set_names: list[str] | None = None) -> Message:
    """The serialized mail: a clean header section, the expected headers once each, the
    recipients in To and nowhere else; every MIME part's headers and filenames clean."""
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep
    for i, line in enumerate(head.split(b"\r\n")):
        assert line and not re.search(rb"[\r\n\x00]", line), line
        if i == 0:
            assert line[:1] not in (b" ", b"\t"), line
        elif b":" not in line:
            assert line[:1] in (b" ", b"\t"), line  # a folded continuation
    parsed = _COMPAT.parsebytes(raw)
    names = Counter(k.lower() for k in parsed.keys())
    assert max(names.values()) == 1, names
    required, optional = headers
    assert required <= set(names) <= required | optional, sorted(names)
    if set_names is not None:
        assert set(names) == {n.lower() for n in set_names}
    assert "bcc" not in names and "cc" not in names
    to = [addr.lower() for _, addr in email.utils.getaddresses(parsed.get_all("to", []))]
    assert to == [r.lower() for r in recipients], (to, recipients)
    for part in parsed.walk():
        for name, value in part.items():
            unfolded = _FOLD.sub("", value)
            assert not FORBIDDEN.search(name + unfolded), (name, value)
            assert not FORBIDDEN.search(_decoded(unfolded)), (name, _decoded(unfolded))
        filename = part.get_filename()
        if filename is not None:
            assert not FORBIDDEN.search(filename), filename
            assert "/" not in filename and not filename.startswith(".")
    modern = email.message_from_bytes(raw, policy=email.policy.default)
    for part in modern.walk():  # every header also parses with the modern policy
        for name in part.keys():
            assert not FORBIDDEN.search(str(part[name])), (name, str(part[name]))
    return parsed


def bodies(raw: bytes) -> tuple[str, str]:
    """The text and HTML parts as received (HTML "" when there is none), LF line ends."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None
    return (str(text.get_content()).replace("\r\n", "\n"),
            str(html.get_content()).replace("\r\n", "\n") if html is not None else "")


def built(result: OutgoingMail | None) -> OutgoingMail:
    assert result is not None
    return result


# ------------------------------------------------- (a) properties over hostile input

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(subject=HOSTILE, name=HOSTILE, addr=ADDRESSES, body=HOSTILE,
       filenames=st.lists(HOSTILE, max_size=3), message_id=MESSAGE_IDS,
       references=st.lists(MESSAGE_IDS.filter(lambda v: v is not None), max_size=3),
       kind=st.sampled_from(sorted(DecisionKind, key=lambda k: k.value)),
       lang=st.sampled_from(["cs", "en", "sk", ""]))
def test_reply_has_exactly_its_headers_and_one_recipient(
    renderer: ReplyRenderer, subject: str, name: str, addr: str, body: str,
    filenames: list[str], message_id: str | None, references: list[str], kind: DecisionKind,
    lang: str,
) -> None:
    """Any subject, name, From address, body, filenames and ids: the reply re-parses with its
    own headers and the one validated recipient, or is the documented None."""
    mail = make_mail(subject=subject, from_name=name, from_addr=addr, text=body,
                     message_id=message_id, references=tuple(references),
                     attachments=tuple(Attachment(f, "application/pdf", 1) for f in filenames))
    decision = make_decision(kind, lang, missing=("license",) if "a" in name else ())
    is_ticket = kind is DecisionKind.TICKET
    reply = renderer.render(
        decision, mail, ticket=make_view(subject) if is_ticket else None,
        message_id=ticket_message_id(TICKET_NO, 1, "estelar.example") if is_ticket
        else other_message_id("reject-1", "estelar.example"), now=NOW, purpose="t:1")
    to = renderer.recipient(mail)
    if kind not in ANSWERED or to is None:
        assert reply is None
        return
    assert reply is not None
    assert reply.rcpt_to == (to.addr_spec,) and to.addr_spec == valid_address(addr)
    check_bytes(reply.raw, REPLY_HEADERS, (to.addr_spec,))
    _, html = bodies(reply.raw)
    assert "<script" not in html.lower() and html.startswith("<!DOCTYPE html>")


@PROPERTY
@given(subject=HOSTILE, name=HOSTILE, addr=ADDRESSES, body=HOSTILE, customer=HOSTILE,
       filenames=st.lists(HOSTILE, max_size=3), assignee=HOSTILE, suspicious=HOSTILE,
       event=st.sampled_from(["new", "followup"]), state=st.sampled_from(["open", "closed"]),
       registry=st.booleans())
def test_notice_goes_to_the_staff_list_only(
    conversation: ConversationRenderer, subject: str, name: str, addr: str, body: str,
    customer: str, filenames: list[str], assignee: str, suspicious: str, event: str,
    state: str, registry: bool,
) -> None:
    """Any customer text in the notice: To is exactly the configured staff list, Reply-To
    the ticket's reply address, and nothing else is added."""
    mail = make_mail(subject=subject, from_name=name, from_addr=addr, text=body,
                     attachments=tuple(Attachment(f, "application/pdf", 1) for f in filenames))
    record = LicenseRecord("40127733", customer, "firma.cz", date(2026, 8, 3), Tier.START,
                           None) if registry else None
    ticket = make_info(subject=subject, customer_name=customer, customer_email=addr,
                       assignee=assignee or None, state=state)
    out = built(conversation.notice(event=event, ticket=ticket, customer=record,
                                    entitlement_end=date(2027, 2, 3), mail=mail, text=body,
                                    inbound_id=7, now=NOW, purpose="t:1", suspicious=suspicious))
    assert out.rcpt_to == STAFF
    parsed = check_bytes(out.raw, NOTICE_HEADERS, STAFF)
    reply_to = email.utils.getaddresses(parsed.get_all("reply-to", []))
    assert len(reply_to) == 1 and reply_to[0][1].startswith(f"podpora+{TICKET_NO}.")


def staff_mail(filenames: list[str], styles: list[int], charset: str) -> bytes:
    """A staff reply with one attachment per filename, each named in one of four ways."""
    parts = [b"Content-Type: text/plain; charset=utf-8\r\n\r\nDobry den.\r\n"]
    for name, style in zip(filenames, styles):
        data = name.encode("utf-8", "surrogatepass")
        if style == 0:  # RFC 2231, percent-encoded: CR, LF and NUL pass the MIME syntax
            param = (b"filename*=" + charset.encode("utf-8", "replace") + b"''"
                     + b"".join(b"%%%02X" % c for c in data))
        elif style == 1:  # an RFC 2047 word in a quoted filename (common, not standard)
            param = b'filename="=?utf-8?b?' + base64.b64encode(data) + b'?="'
        elif style == 2:  # raw UTF-8 in the quoted filename (RFC 6532 style)
            param = b'filename="' + data.replace(b'"', b"").replace(b"\\", b"") + b'"'
        else:  # name= on Content-Type only
            param = b'filename="x.bin"; name*=' + b"utf-8''" + b"".join(b"%%%02X" % c for c in data)
        ctype = b"text/plain; charset=" + charset.encode("utf-8", "replace") if style == 3 \
            else b"application/octet-stream"
        parts.append(b"Content-Type: " + ctype + b"\r\nContent-Disposition: attachment; "
                     + param + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                     + base64.b64encode(b"data\r\n") + b"\r\n")
    body = b"".join(b"--BOUNDARY\r\n" + p for p in parts) + b"--BOUNDARY--\r\n"
    return (b"From: Jan Podpora <jan@estelar.example>\r\nTo: podpora@estelar.example\r\n"
            b"Subject: Re: [#" + TICKET_NO.encode() + b"] x\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="BOUNDARY"\r\n\r\n' + body)


@PROPERTY
@given(subject=HOSTILE, customer=HOSTILE, customer_email=ADDRESSES, staff_name=HOSTILE,
       staff_addr=ADDRESSES, staff_text=HOSTILE, filenames=st.lists(HOSTILE, max_size=3),
       styles=st.lists(st.integers(0, 3), min_size=3, max_size=3),
       charset=st.sampled_from(["utf-8", "UTF-8", "iso-8859-2", "x-unknown", "utf\x008", "",
                                "zlib", "utf-16", "\r\nX-Evil: 1"]),
       first_id=MESSAGE_IDS, last_id=MESSAGE_IDS, expose=st.booleans(),
       lang=st.sampled_from(["cs", "en", "de"]))
def test_relay_goes_to_the_customer_only(
    conversation: ConversationRenderer, exposing: ConversationRenderer, subject: str,
    customer: str, customer_email: str, staff_name: str, staff_addr: str, staff_text: str,
    filenames: list[str], styles: list[int], charset: str, first_id: str | None,
    last_id: str | None, expose: bool, lang: str,
) -> None:
    """Any ticket subject, customer name and address, staff name and address, staff text,
    attachment filenames and stored message ids: the relay has one To, the customer's
    validated address (or is None when there is none), and its own headers only."""
    ticket = make_info(subject=subject, customer_name=customer, customer_email=customer_email,
                       first_message_id=first_id, last_message_id=last_id, language=lang)
    decision = make_decision(DecisionKind.STAFF_REPLY, staff_text=staff_text, ticket=ticket)
    mail = make_mail(from_name=staff_name, from_addr=staff_addr, subject=subject)
    renderer = exposing if expose else conversation
    out = renderer.relay(ticket=ticket, decision=decision, mail=mail,
                         attachments=attachments_of(staff_mail(filenames, styles, charset)),
                         inbound_id=9, now=NOW, purpose="t:1")
    to = valid_address(customer_email)
    if to is None:
        assert out is None
        return
    assert out is not None and out.rcpt_to == (to,)
    parsed = check_bytes(out.raw, RELAY_HEADERS, (to,))
    assert ("reply-to" in parsed) == (expose and valid_address(staff_addr) is not None)
    assert ("content-transfer-encoding" in parsed) == (not parsed.is_multipart())


# --------------------------------------------------------- (b) the cases

BCC_SUBJECT = "Hello\r\nBcc: victim@example.com"
INJECTING_NAMES = ["Eve\r\nBcc: victim@example.com", "Eve\nX-Evil: 1\r\n\r\nbody",
                   "Eve\rTo: victim@example.com", "=?utf-8?q?Eve=0D=0ABcc:_victim@example.com?=",
                   _b64_word("Eve\r\nBcc: victim@example.com")]
INJECTING_SUBJECTS = [BCC_SUBJECT, "Hello\nBcc: victim@example.com",
                      "Hello\u2028Bcc: victim@example.com\u0085X-Evil: 1",
                      "=?utf-8?q?Hello=0D=0ABcc:_victim@example.com?=",
                      "Re: " + _b64_word("Hello\r\nBcc: victim@example.com")]
TEMPLATE_PAYLOADS = [
    "{{ config }}", "{{7*7}}", "{{ ''.__class__.__mro__ }}", '{% include "x" %}',
    "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
]
HTML_ESCAPED = {
    "<script>alert(1)</script>": "&lt;script&gt;alert(1)&lt;/script&gt;",
    '"><img src=x onerror=alert(1)>': "&gt;&lt;img src=x onerror=alert(1)&gt;",
}


def _no_injected_header(raw: bytes) -> None:
    parsed = _COMPAT.parsebytes(raw)
    names = {k.lower() for k in parsed.keys()}
    assert not names & {"bcc", "cc", "x-evil"}, names
    assert len(parsed.get_all("to", [])) == 1
    assert VICTIM not in [a for _, a in email.utils.getaddresses(parsed.get_all("to", []))]


@pytest.mark.parametrize("subject", INJECTING_SUBJECTS)
@pytest.mark.parametrize("name", ["Jan Novák", *INJECTING_NAMES])
def test_injected_subject_or_name_adds_no_header(
    renderer: ReplyRenderer, conversation: ConversationRenderer, subject: str, name: str
) -> None:
    """`Hello\\r\\nBcc: victim@example.com`, and display names with CR/LF (also as encoded
    words): the reply, the notice and the relay each keep their own headers and recipient."""
    mail = make_mail(subject=subject, from_name=name)
    for kind in (DecisionKind.TICKET, DecisionKind.REJECT_INCOMPLETE):
        is_ticket = kind is DecisionKind.TICKET
        reply = renderer.render(
            make_decision(kind), mail, ticket=make_view(subject) if is_ticket else None,
            message_id=other_message_id("r-1", "estelar.example"), now=NOW, purpose="t:1")
        assert reply is not None
        check_bytes(reply.raw, REPLY_HEADERS, (CUSTOMER,))
        _no_injected_header(reply.raw)
        subject_header = email.message_from_bytes(reply.raw, policy=email.policy.default)["Subject"]
        # The injected text survives as Subject text on one line: decoded, or an encoded word
        # kept literally (its "=?" broken up so that no client decodes it).
        assert "Bcc: victim@example.com" in str(subject_header) or "= ?" in str(subject_header)
    ticket = make_info(subject=subject, customer_name=name)
    notice = built(conversation.notice(event="new", ticket=ticket, customer=None,
                                       entitlement_end=None, mail=mail, text=mail.text,
                                       inbound_id=7, now=NOW, purpose="t:1"))
    check_bytes(notice.raw, NOTICE_HEADERS, STAFF)
    staff = make_mail(from_name=name, from_addr="jan@estelar.example", subject=subject)
    relay = built(conversation.relay(
        ticket=ticket, mail=staff, inbound_id=9, now=NOW, purpose="t:1",
        decision=make_decision(DecisionKind.STAFF_REPLY, staff_text="Dobrý den.", ticket=ticket)))
    check_bytes(relay.raw, RELAY_HEADERS, (CUSTOMER,))
    _no_injected_header(relay.raw)


@pytest.mark.parametrize("addr", [f"{CUSTOMER}\r\nBcc: {VICTIM}", f"{CUSTOMER}, {VICTIM}",
                                  "=?utf-8?q?=0D=0A?=@example.com",
                                  "=?utf-8?q?victim=40example.com?=@firma.cz"])
def test_injecting_sender_address_gets_no_reply(
    renderer: ReplyRenderer, addr: str
) -> None:
    """A From address that would smuggle a recipient gets no reply (the documented None)."""
    mail = make_mail(from_addr=addr)
    reply = renderer.render(make_decision(DecisionKind.REJECT_INCOMPLETE), mail,
                                  ticket=None, message_id=other_message_id("r-1", "estelar.example"),
                                  now=NOW, purpose="t:1")
    assert reply is None


@pytest.mark.parametrize("stored_id", [f"<a@b>\r\nBcc: {VICTIM}",
                                       "=?utf-8?q?=0D=0ABcc:_victim@example.com?=",
                                       "<=?utf-8?q?=0D=0ABcc:_victim@example.com?=@firma.cz>",
                                       "<a b@c>", "m-1@firma.cz"])
def test_stored_customer_message_ids_cannot_inject(
    conversation: ConversationRenderer, stored_id: str
) -> None:
    """The customer's Message-IDs kept with the ticket thread the relayed staff reply and the
    timed notes; a malformed or encoded one is left out, never raises or adds a header."""
    ticket = make_info(first_message_id=stored_id, last_message_id=stored_id)
    relay = built(conversation.relay(
        ticket=ticket, mail=make_mail(from_addr="jan@estelar.example"),
        inbound_id=9, now=NOW, purpose="t:1",
        decision=make_decision(DecisionKind.STAFF_REPLY, staff_text="Dobrý den.", ticket=ticket)))
    note = built(conversation.customer_note(  # the scheduler's timed note to the customer
        kind="wait_reminder", ticket=ticket, message_id="<note-1@estelar.example>", now=NOW, purpose="t:1"))
    ack = ticket_message_id(TICKET_NO, 1, "estelar.example")
    for raw in (relay.raw, note.raw):
        _no_injected_header(raw)
        parsed = _COMPAT.parsebytes(raw)
        assert parsed["In-Reply-To"] == ack
        assert ack in str(parsed["References"]).split()
        check_bytes(raw, (RELAY_HEADERS[0], RELAY_HEADERS[1] | {"auto-submitted"}), (CUSTOMER,))


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Mapping[str, Any]]]]:
    """Every (template name, variables and globals) a template is rendered with, meanwhile."""
    seen: list[tuple[str, Mapping[str, Any]]] = []
    original = jinja2.environment.Template.new_context

    def spy(self: jinja2.environment.Template, vars: dict[str, Any] | None = None,
            shared: bool = False, locals: Mapping[str, Any] | None = None) -> Any:
        seen.append((str(self.name), {**self.globals, **(vars or {})}))
        return original(self, vars, shared, locals)

    monkeypatch.setattr(jinja2.environment.Template, "new_context", spy)
    yield seen


def _plain(value: object) -> bool:
    """Data only: text, numbers, flags and containers of them (no objects with attributes
    a template could walk, such as the Config, a Mail or a Decision)."""
    if value is None or isinstance(value, (str, int, float, bool, Markup)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def check_contexts(seen: list[tuple[str, Mapping[str, Any]]]) -> None:
    assert seen
    builtin = jinja2.defaults.DEFAULT_NAMESPACE
    for name, context in seen:
        for key, value in context.items():
            if key in builtin and value in (builtin[key], jinja2.sandbox.safe_range):
                continue  # Jinja's own globals: range, dict, lipsum, cycler, joiner, namespace
            assert _plain(value), (name, key, type(value))
            assert not isinstance(value, Config)
            assert key.lower() not in ("config", "settings", "mail", "decision", "os", "env")


@pytest.mark.parametrize("lang", ["cs", "en"])
def test_customer_text_is_literal_data_never_template(
    renderer: ReplyRenderer, conversation: ConversationRenderer, config: Config, lang: str,
    contexts: list[tuple[str, Mapping[str, Any]]],
) -> None:
    """`{{ config }}`, `{{7*7}}`, `{{ ''.__class__.__mro__ }}`, `{% include "x" %}`,
    `<script>` and an attribute break-out: literal in every text part, escaped in every HTML
    part, not evaluated, and no config value (SMTP host, templates path) in any mail; the
    templates get plain values only."""
    # The payloads first: a reply quotes only the first lines of the customer's text.
    body = "\n".join(TEMPLATE_PAYLOADS) + "\nDobrý den, licence 4012 7733\n"
    name = "Eve {{7*7}} <b>x</b>"
    mail = make_mail(text=body, from_name=name, subject="Hi {{ config }} {{7*7}}")
    raws: list[tuple[str, bytes]] = []
    for kind in ANSWERED:
        is_ticket = kind is DecisionKind.TICKET
        reply = renderer.render(
            make_decision(kind, lang), mail, ticket=make_view() if is_ticket else None,
            message_id=other_message_id("r-1", "estelar.example"), now=NOW, purpose="t:1")
        assert reply is not None
        raws.append((kind.value, reply.raw))
    ticket = make_info(language=lang)
    notice = built(conversation.notice(event="new", ticket=ticket, customer=None,
                                       entitlement_end=None, mail=mail, text=body,
                                       inbound_id=7, now=NOW, purpose="t:1"))
    raws.append(("notice", notice.raw))
    relay = built(conversation.relay(
        ticket=ticket, mail=make_mail(from_addr="jan@estelar.example"),
        inbound_id=9, now=NOW, purpose="t:1",
        decision=make_decision(DecisionKind.STAFF_REPLY, staff_text=body, ticket=ticket)))
    raws.append(("relay", relay.raw))
    templates_path = str(config.path(config.replies.templates_dir))
    for what, raw in raws:
        text, html = bodies(raw)
        everything = raw.decode("ascii", "replace") + text + html
        for payload in TEMPLATE_PAYLOADS:
            assert payload in text, (what, payload)
        assert "49" not in text and "49" not in html, what  # {{7*7}} was not evaluated
        assert "<class" not in text and "&lt;class" not in html, what
        assert SMTP_HOST not in everything and SMTP_USER not in everything, what
        assert templates_path not in everything, what
        assert "Config(" not in everything and "StoreConfig" not in everything, what
        if html:
            assert "<script" not in html and "<img" not in html, what
            for payload, escaped in HTML_ESCAPED.items():
                assert escaped in html, (what, payload)
            assert "{{ config }}" in html and "{{7*7}}" in html, what
            assert "<b>x</b>" not in html, what
    check_contexts(contexts)
