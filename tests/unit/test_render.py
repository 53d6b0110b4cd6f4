"""ReplyRenderer: every reply kind in Czech and English, threading headers, injection safety."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import date, datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbot.config import Config
from mailbot.domain import (
    LOOP_HEADER,
    Decision,
    DecisionKind,
    Mail,
    Priority,
    TicketView,
    other_message_id,
    ticket_message_id,
)
from mailbot.errors import ConfigError
from mailbot.replies.language import format_date, format_deadline, reply_subject
from mailbot.replies.render import (
    ReplyRenderer,
    ReplyRenderError,
)
from mailbot.replies.sanitize import clean_header_text

PRAGUE = ZoneInfo("Europe/Prague")
NOW = datetime(2026, 11, 20, 16, 0, tzinfo=PRAGUE)
TICKET_NO = "T-2026-000145"
TICKET_MID = ticket_message_id(TICKET_NO, 1, "estelar.example")
REJECT_MID = other_message_id("r-1", "estelar.example")
CUSTOMER = "jan.novak@firma.cz"


def make_mail(**changes: object) -> Mail:
    mail = Mail(
        message_id="<m-1@firma.cz>",
        from_addr=CUSTOMER,
        from_name="Jan Novák",
        to=("podpora@estelar.example",),
        cc=(),
        subject="Nejde tisk docházky",
        date=datetime(2026, 11, 20, 15, 40, tzinfo=PRAGUE),
        in_reply_to=("<m-0@firma.cz>",),
        references=("<root@firma.cz>", "<m-0@firma.cz>"),
        return_path=f"<{CUSTOMER}>",
        headers={},
        content_type="text/plain",
        report_type="",
        text="Dobrý den,\nod rána nejde tisk docházky.\n\nLicence 4012 7733\n",
        html="",
    )
    return replace(mail, **changes)  # type: ignore[arg-type]


def make_decision(kind: DecisionKind, lang: str = "cs", **changes: object) -> Decision:
    decision = Decision(
        kind=kind,
        reasons=(),
        license="40127733",
        priority=Priority.NORMAL if kind is DecisionKind.TICKET else None,
        missing=("license", "description") if kind is DecisionKind.REJECT_INCOMPLETE else (),
        scope_reason="training" if kind is DecisionKind.REJECT_SCOPE else None,
        language=lang,
        entitlement_end=date(2026, 5, 31) if kind is DecisionKind.REJECT_EXPIRED else None,
    )
    return replace(decision, **changes)  # type: ignore[arg-type]


def make_ticket(priority: Priority = Priority.NORMAL) -> TicketView:
    return TicketView(
        number=TICKET_NO,
        subject="Nejde tisk docházky",
        priority=priority,
        opened_at=NOW,
        deadline=datetime(2026, 11, 25, 16, 0, tzinfo=PRAGUE),
        customer_email=CUSTOMER,
        license="40127733",
    )


@pytest.fixture(scope="module")
def renderer() -> ReplyRenderer:
    return ReplyRenderer(Config())


def render(
    renderer: ReplyRenderer,
    kind: DecisionKind,
    lang: str = "cs",
    mail: Mail | None = None,
    decision: Decision | None = None,
    ticket: TicketView | None = None,
) -> EmailMessage:
    is_ticket = kind is DecisionKind.TICKET
    out = renderer.render(
        decision or make_decision(kind, lang),
        mail or make_mail(),
        ticket=ticket or (make_ticket() if is_ticket else None),
        message_id=TICKET_MID if is_ticket else REJECT_MID,
        now=NOW,
        purpose="reply:1",
    )
    assert out is not None
    msg = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def reparse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def bodies(msg: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts as received, with CRLF turned into LF."""
    parsed = reparse(msg)
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    return (
        str(text.get_content()).replace("\r\n", "\n"),
        str(html.get_content()).replace("\r\n", "\n"),
    )


def flat(text: str) -> str:
    """`text` with line wrapping undone, for phrase checks."""
    return " ".join(text.split())


EXPECTED_REPLY: dict[DecisionKind, tuple[str, str] | None] = {
    # kind: None (no automatic reply) or a phrase only its own reply says, (Czech, English)
    DecisionKind.IGNORE_AUTO: None,
    DecisionKind.UNSUBSCRIBE: None,
    DecisionKind.STAFF_REPLY: None,
    DecisionKind.FOLLOWUP: None,
    DecisionKind.QUARANTINED: None,
    DecisionKind.TICKET: ("jako požadavek číslo T-2026-000145",
                          "as ticket number T-2026-000145"),
    DecisionKind.REJECT_INCOMPLETE: ("potřebujeme od Vás ještě",
                                     "we need the following from you"),
    DecisionKind.REJECT_UNKNOWN_LICENSE: ("v naší evidenci licencí ACS-line nenacházíme",
                                          "cannot find this number in our register"),
    DecisionKind.REJECT_EXPIRED: ("skončila dne 31. 5. 2026", "ended on 31 May 2026"),
    DecisionKind.REJECT_SCOPE: ("nespadá do rozsahu služby HOTLINE",
                                "outside the scope of the HOTLINE service"),
}
"""Written here, not read from the renderer: which kinds are answered, and with what."""
REPLY_KINDS = [k for k, v in EXPECTED_REPLY.items() if v is not None]
NO_REPLY = [k for k, v in EXPECTED_REPLY.items() if v is None]


@pytest.mark.parametrize("lang", ["cs", "en"])
@pytest.mark.parametrize("kind", REPLY_KINDS, ids=[k.value for k in REPLY_KINDS])
def test_every_reply_kind_renders_in_both_languages(
    renderer: ReplyRenderer, kind: DecisionKind, lang: str
) -> None:
    """Each kind × language renders (StrictUndefined would raise on a missing value) with
    its own template: the kind's phrase from EXPECTED_REPLY, no other kind's."""
    msg = render(renderer, kind, lang)
    parsed = reparse(msg)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Content-Language"] == lang
    assert parsed["From"] == "ESTELAR podpora <podpora@estelar.example>"
    assert parsed["To"].addresses[0].addr_spec == CUSTOMER
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed[LOOP_HEADER] == "podpora@estelar.example"
    assert parsed["Date"].datetime == NOW
    text, html = bodies(msg)
    assert f'<html lang="{lang}">' in html
    greeting = "Dobrý den," if lang == "cs" else "Dear Jan Novák,"
    assert text.startswith(greeting)
    assert "ESTELAR podpora" in text and "ESTELAR podpora" in html
    assert "od rána nejde tisk docházky" in text  # the customer's text is quoted
    assert "&lt;" not in text and "<p>" not in text
    column = 0 if lang == "cs" else 1
    for other, phrases in EXPECTED_REPLY.items():
        if phrases is not None:
            assert (phrases[column] in flat(text)) == (other is kind), (other, phrases[column])


def test_ticket_ack_states_number_deadline_and_priority(renderer: ReplyRenderer) -> None:
    """The ack names the ticket, its deadline in local time with weekday, and the priority."""
    text, html = map(flat, bodies(render(renderer, DecisionKind.TICKET, "cs")))
    assert "T-2026-000145" in text
    assert "středa 25. 11. 2026 16:00" in text and "středa 25. 11. 2026 16:00" in html
    assert "Priorita: běžná" in text
    assert "od 8:00 do 17:00" in text and "tří pracovních dnů" in text
    text_en = flat(bodies(render(renderer, DecisionKind.TICKET, "en"))[0])
    assert "Wednesday 25 November 2026, 16:00 (Prague time)" in text_en
    assert "Priority: normal" in text_en and "three working days" in text_en


def test_emergency_ack_uses_emergency_wording(renderer: ReplyRenderer) -> None:
    """An emergency ticket says so and promises the 4-hour response."""
    ticket = replace(make_ticket(Priority.EMERGENCY), deadline=datetime(2026, 11, 23, 11, tzinfo=PRAGUE))
    decision = make_decision(DecisionKind.TICKET, "cs", priority=Priority.EMERGENCY)
    text = flat(bodies(render(renderer, DecisionKind.TICKET, decision=decision, ticket=ticket))[0])
    assert "havárie" in text and "do 4 pracovních hodin" in text
    assert "pondělí 23. 11. 2026 11:00" in text
    decision_en = make_decision(DecisionKind.TICKET, "en", priority=Priority.EMERGENCY)
    text_en = flat(bodies(render(renderer, DecisionKind.TICKET, "en", decision=decision_en, ticket=ticket))[0])
    assert "emergency" in text_en and "within 4 working hours" in text_en


@pytest.mark.parametrize(
    ("missing", "license_shown", "description_shown"),
    [(("license",), True, False), (("description",), False, True), (("license", "description"), True, True)],
)
def test_reject_incomplete_names_what_is_missing(
    renderer: ReplyRenderer, missing: tuple[str, ...], license_shown: bool, description_shown: bool
) -> None:
    """Only the missing items are asked for, with how to resend."""
    for lang, lic, desc in (("cs", "číslo licence", "popis problému"), ("en", "license number", "description of the problem")):
        decision = make_decision(DecisionKind.REJECT_INCOMPLETE, lang, missing=missing, license=None)
        text, html = map(flat, bodies(render(renderer, DecisionKind.REJECT_INCOMPLETE, lang, decision=decision)))
        assert (lic in text) is license_shown
        assert (desc in text) is description_shown
        assert "podpora@estelar.example" in text
        assert "<li>" in html


def test_reject_unknown_license_quotes_the_number(renderer: ReplyRenderer) -> None:
    """The number we read is repeated and the customer is asked to check it."""
    decision = make_decision(DecisionKind.REJECT_UNKNOWN_LICENSE, license="99887766")
    text = flat(bodies(render(renderer, DecisionKind.REJECT_UNKNOWN_LICENSE, decision=decision))[0])
    assert "99887766" in text and "Zkontrolujte prosím" in text


def test_reject_expired_offers_paid_tiers(renderer: ReplyRenderer) -> None:
    """Expired support: end date, the three paid tiers, the offer URL, a paid service call."""
    for lang, end in (("cs", "31. 5. 2026"), ("en", "31 May 2026")):
        text, html = map(flat, bodies(render(renderer, DecisionKind.REJECT_EXPIRED, lang)))
        assert end in text
        for tier in ("HOTLINE,", "HOTLINE PLUS", "HOTLINE speciál"):
            assert tier in text
        assert "https://estelar.example/hotline" in text
        assert '<a href="https://estelar.example/hotline">' in html


@pytest.mark.parametrize(
    ("reason", "cs_phrase", "en_phrase"),
    [
        ("data_export", "exportu dat", "data exports"),
        ("training", "školení uživatelů", "user training"),
        ("global_configuration", "celkového nastavení systému", "configuring the whole system"),
        ("custom_development", "vývoje na zakázku", "custom development"),
        (None, "nad rámec běžné technické podpory", "beyond regular technical support"),
    ],
)
def test_reject_scope_explains_each_reason(
    renderer: ReplyRenderer, reason: str | None, cs_phrase: str, en_phrase: str
) -> None:
    """Each scope reason has its own explanation and the paid-service offer."""
    for lang, phrase, paid in (("cs", cs_phrase, "placenou službu"), ("en", en_phrase, "paid service")):
        decision = make_decision(DecisionKind.REJECT_SCOPE, lang, scope_reason=reason)
        text = flat(bodies(render(renderer, DecisionKind.REJECT_SCOPE, lang, decision=decision))[0])
        assert phrase in text and paid in text and "HOTLINE" in text


def test_threading_headers(renderer: ReplyRenderer) -> None:
    """In-Reply-To is the customer's Message-ID; References extend the customer's chain."""
    parsed = reparse(render(renderer, DecisionKind.TICKET))
    assert parsed["Message-ID"] == TICKET_MID
    assert parsed["In-Reply-To"] == "<m-1@firma.cz>"
    assert parsed["References"].split() == ["<root@firma.cz>", "<m-0@firma.cz>", "<m-1@firma.cz>"]


def test_references_fall_back_to_in_reply_to_and_skip_missing_id(renderer: ReplyRenderer) -> None:
    """Without References the parent's single In-Reply-To starts the chain; no Message-ID, no In-Reply-To."""
    mail = make_mail(references=())
    assert reparse(render(renderer, DecisionKind.TICKET, mail=mail))["References"].split() == [
        "<m-0@firma.cz>",
        "<m-1@firma.cz>",
    ]
    parsed = reparse(render(renderer, DecisionKind.TICKET, mail=make_mail(message_id=None, references=(), in_reply_to=())))
    assert parsed["In-Reply-To"] is None and parsed["References"] is None


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("Nejde tisk", "Re: [#T-2026-000145] Nejde tisk"),
        ("RE: Re: Nejde tisk", "Re: [#T-2026-000145] Nejde tisk"),
        ("Re: [#T-2026-000145] Nejde tisk", "Re: [#T-2026-000145] Nejde tisk"),
        ("[#T-2026-000145] Re: Nejde tisk", "Re: [#T-2026-000145] Nejde tisk"),
        ("Odp: AW: Nejde tisk", "Re: [#T-2026-000145] Nejde tisk"),
        ("", "Re: [#T-2026-000145] (bez předmětu)"),
    ],
)
def test_ticket_subject_has_one_re_and_one_tag(original: str, expected: str) -> None:
    """Ticket replies get `Re: [#T-…] subject`, without duplicate prefixes or tags."""
    assert reply_subject(original, "cs", TICKET_NO) == expected


def test_rejection_subject_is_re_original(renderer: ReplyRenderer) -> None:
    """Rejections answer `Re: subject`, with no ticket tag."""
    parsed = reparse(render(renderer, DecisionKind.REJECT_SCOPE, mail=make_mail(subject="Re: Školení")))
    assert parsed["Subject"] == "Re: Školení"
    assert reply_subject("", "en") == "Re: (no subject)"


def test_subject_is_capped() -> None:
    """A 2,000-character subject is cut to 200 characters."""
    subject = reply_subject("x" * 2000, "cs", TICKET_NO)
    assert len(subject) == 200 and subject.endswith("…")


@pytest.mark.parametrize(
    "field",
    [
        {"subject": "Hello\r\nBcc: victim@example.com"},
        {"subject": "Hello\nBcc: victim@example.com"},
        {"subject": "Hello\x00\u2028Bcc: victim@example.com\u0085\u2029X-Evil: 1"},
        {"from_name": "Eve\r\nBcc: victim@example.com"},
        {"from_name": "Eve\nX-Evil: 1\r\n\r\nbody"},
        {"message_id": "<m-1@firma.cz>\r\nBcc: victim@example.com"},
        {"references": ("<a@b>\r\nBcc: victim@example.com",)},
    ],
)
def test_header_injection_adds_no_header(renderer: ReplyRenderer, field: dict[str, object]) -> None:
    """CR/LF/NUL/U+2028/U+0085 in subject, name or ids never yield an extra header or recipient."""
    msg = render(renderer, DecisionKind.TICKET, mail=make_mail(**field))
    parsed = reparse(msg)
    names = {k.lower() for k in parsed.keys()}
    assert "bcc" not in names and "x-evil" not in names
    assert [a.addr_spec for a in parsed["To"].addresses] == [CUSTOMER]
    assert len(parsed.get_all("To", [])) == 1  # a name may *mention* the address, quoted
    for value in parsed.values():
        assert "\r" not in str(value) and "\n" not in str(value)
    if "subject" in field:
        assert parsed["Subject"].startswith("Re: [#T-2026-000145] Hello")
        assert "Bcc: victim@example.com" in parsed["Subject"]  # kept as text on one line


def test_customer_text_is_data_not_template(renderer: ReplyRenderer) -> None:
    """`{{ 7*7 }}`, Jinja tags and `<script>` appear literally in text and escaped in HTML."""
    body = (
        "{{ 7*7 }}\n{{ ''.__class__.__mro__ }}\n{% include 'replies/_layout.txt.j2' %}\n"
        '<script>alert(1)</script>\n"><img src=x onerror=alert(1)>\n'
    )
    for lang in ("cs", "en"):
        msg = render(renderer, DecisionKind.REJECT_INCOMPLETE, lang, mail=make_mail(text=body, from_name="<b>Eve</b> {{ 7*7 }}"))
        text, html = bodies(msg)
        assert "49" not in text and "49" not in html
        assert "{{ 7*7 }}" in text and "{{ 7*7 }}" in html
        assert "<script>alert(1)</script>" in text
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "{% include 'replies/_layout.txt.j2' %}" in text
        assert "<b>Eve</b>" not in html


def test_only_the_first_lines_are_quoted(renderer: ReplyRenderer) -> None:
    """The quote is capped at 6 lines and marked as cut."""
    body = "\n".join(f"řádek {i:02d}" for i in range(1, 31))
    text, html = bodies(render(renderer, DecisionKind.REJECT_INCOMPLETE, mail=make_mail(text=body)))
    assert "> řádek 06" in text and "řádek 07" not in text and "> […]" in text
    assert "řádek 06" in html and "řádek 07" not in html
    assert "Začátek Vaší zprávy:" in text


@pytest.mark.parametrize("kind", NO_REPLY, ids=[k.value for k in NO_REPLY])
def test_kinds_without_reply_return_none(renderer: ReplyRenderer, kind: DecisionKind) -> None:
    """ignore_auto, unsubscribe, staff_reply, followup and quarantined get no reply."""
    assert renderer.render(make_decision(kind), make_mail(), ticket=None, message_id=REJECT_MID, now=NOW, purpose="reply:1") is None


def test_every_decision_kind_is_in_the_expected_table() -> None:
    """A new DecisionKind must be placed in EXPECTED_REPLY (answered or not), so the two
    tests above cover it."""
    assert set(EXPECTED_REPLY) == set(DecisionKind)


@pytest.mark.parametrize(
    "from_addr",
    [None, "", "not-an-address", "jan@localhost", "jan@firma.cz\r\nBcc: victim@example.com",
     "ján@firma.cz", "PODPORA@estelar.example", "novinky-odhlaseni@estelar.example"],
)
def test_invalid_or_own_sender_gets_no_reply(renderer: ReplyRenderer, from_addr: str | None) -> None:
    """Documented choice: an address failing validation (or our own) → render returns None."""
    decision = make_decision(DecisionKind.REJECT_INCOMPLETE)
    mail = make_mail(from_addr=from_addr)
    assert renderer.render(decision, mail, ticket=None, message_id=REJECT_MID, now=NOW, purpose="reply:1") is None


def test_reply_to_is_ignored(renderer: ReplyRenderer) -> None:
    """A Reply-To pointing elsewhere does not redirect the auto-reply."""
    mail = make_mail(headers={"reply-to": ("victim@example.com",)})
    parsed = reparse(render(renderer, DecisionKind.REJECT_INCOMPLETE, mail=mail))
    assert [a.addr_spec for a in parsed["To"].addresses] == [CUSTOMER]


def test_idn_domain_is_sent_as_ascii(renderer: ReplyRenderer) -> None:
    """An internationalized domain is answered in its ASCII (punycode) form."""
    parsed = reparse(render(renderer, DecisionKind.REJECT_INCOMPLETE, mail=make_mail(from_addr="jan@pekárna.cz")))
    assert parsed["To"].addresses[0].addr_spec == "jan@" + "pekárna.cz".encode("idna").decode()


def test_unknown_language_falls_back_to_default(renderer: ReplyRenderer) -> None:
    """A Slovak (or any other) mail is answered in the default language."""
    parsed = reparse(render(renderer, DecisionKind.REJECT_SCOPE, decision=make_decision(DecisionKind.REJECT_SCOPE, "sk")))
    assert parsed["Content-Language"] == "cs"


def test_programming_errors_raise(renderer: ReplyRenderer) -> None:
    """A ticket reply without a ticket, a bad Message-ID or a naive clock raise ReplyRenderError."""
    decision = make_decision(DecisionKind.TICKET)
    with pytest.raises(ReplyRenderError):
        renderer.render(decision, make_mail(), ticket=None, message_id=TICKET_MID, now=NOW, purpose="reply:1")
    with pytest.raises(ReplyRenderError):
        renderer.render(decision, make_mail(), ticket=make_ticket(), message_id="<a@b>\r\nX: y", now=NOW, purpose="reply:1")
    with pytest.raises(ReplyRenderError):
        renderer.render(decision, make_mail(), ticket=make_ticket(), message_id=TICKET_MID, now=NOW.replace(tzinfo=None), purpose="reply:1")


def test_missing_templates_fail_at_start(tmp_path: Path) -> None:
    """A templates directory without the reply templates is a ConfigError at construction."""
    (tmp_path / "templates" / "replies").mkdir(parents=True)
    with pytest.raises(ConfigError, match="ack"):
        ReplyRenderer(Config(root=tmp_path))
    with pytest.raises(ConfigError, match="not a directory"):
        ReplyRenderer(Config(root=tmp_path / "nowhere"))


def test_date_formats() -> None:
    """Deadlines and dates in Czech and English, in the calendar zone."""
    utc = datetime(2026, 11, 25, 15, 0, tzinfo=ZoneInfo("UTC"))
    assert format_deadline(utc, "cs", PRAGUE) == "středa 25. 11. 2026 16:00"
    assert format_deadline(utc, "en", PRAGUE) == "Wednesday 25 November 2026, 16:00 (Prague time)"
    assert format_deadline(datetime(2026, 12, 7, 8, 5, tzinfo=PRAGUE), "cs", PRAGUE) == "pondělí 7. 12. 2026 8:05"
    assert format_date(date(2026, 5, 31), "cs") == "31. 5. 2026"
    assert format_date(date(2026, 5, 31), "en") == "31 May 2026"


def test_clean_header_text() -> None:
    """Control, separator and bidi characters become single spaces."""
    assert clean_header_text("a\r\nb\x00c\u2028d\u0085e\u202ef\tg") == "a b c d e f g"


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject=st.text(max_size=300),
    name=st.text(max_size=120),
    body=st.text(max_size=500),
)
def test_any_subject_name_or_body_renders_safely(
    renderer: ReplyRenderer, subject: str, name: str, body: str
) -> None:
    """Arbitrary Unicode in subject, display name and body never breaks the reply or its headers."""
    msg = render(renderer, DecisionKind.TICKET, mail=make_mail(subject=subject, from_name=name, text=body))
    parsed = reparse(msg)
    assert sorted(k.lower() for k in parsed.keys()) == sorted(k.lower() for k in msg.keys())
    assert [a.addr_spec for a in parsed["To"].addresses] == [CUSTOMER]
    assert len(parsed["Subject"]) <= 200


def test_urls_in_quoted_text_are_not_made_links(renderer: ReplyRenderer) -> None:
    """A forged sender's phishing text is not reflected as links under our name: URLs, www.
    names, addresses and the display name are defanged in both parts; Czech "a.s." stays."""
    body = ("Účet pozastaven, přihlaste se na https://estelar-login.example/x?a=1 nebo "
            "www.estelar-podpora.example, dotazy na eve@evil.example. Firma a.s.\n")
    mail = make_mail(text=body, from_name="Obnova na evil-login.example")
    for lang in ("cs", "en"):
        text, html = bodies(render(renderer, DecisionKind.TICKET, lang, mail=mail))
        for part in (text, html):
            for raw in ("https://estelar-login", "estelar-login.example", "www.estelar-podpora",
                        "evil.example", "evil-login.example"):
                assert raw not in part
            assert "hxxps://estelar-login[.]example/x?a=1" in part
            assert "www[.]estelar-podpora[.]example" in part and "Firma a.s." in part
        assert "<a " not in html.split("<blockquote", 1)[1]


# -- Reply-To and Sender never receive an automatic reply (parse → render) ---------------

_HEAD = (b"To: podpora@estelar.example\r\nSubject: Nejde tisk\r\nMessage-ID: <rt-1@firma.cz>\r\n"
         b"Date: Fri, 20 Nov 2026 15:40:00 +0100\r\nContent-Type: text/plain; charset=utf-8\r\n")


@pytest.mark.parametrize("fallback", ["Reply-To", "Sender"])
def test_reply_never_goes_to_reply_to_or_sender_when_from_is_missing(
        renderer: ReplyRenderer, fallback: str) -> None:
    """Parsing takes the sender from Sender or Reply-To when From names nobody (the rules
    judge the mail by it), but the automatic reply goes only where From pointed: nowhere."""
    from mailbot.ingest.parse import parse

    for from_line in (b"", b"From: undisclosed-recipients:;\r\n"):
        raw = from_line + f"{fallback}: victim@third.example\r\n".encode() + _HEAD + b"\r\nLicence 40127733\r\n"
        mail = parse(raw)
        assert mail.from_addr == "victim@third.example" and not mail.from_header
        for kind in (DecisionKind.TICKET, DecisionKind.REJECT_UNKNOWN_LICENSE):
            out = renderer.render(make_decision(kind), mail,
                                  ticket=make_ticket() if kind is DecisionKind.TICKET else None,
                                  message_id=TICKET_MID, now=NOW, purpose="reply:1")
            assert out is None


def test_reply_goes_to_from_not_reply_to(renderer: ReplyRenderer) -> None:
    """With From and a different Reply-To, the reply's envelope and To are the From address."""
    from mailbot.ingest.parse import parse

    raw = (b"From: Jan <jan.novak@firma.cz>\r\nReply-To: victim@third.example\r\n" + _HEAD
           + b"\r\nLicence 40127733\r\n")
    out = renderer.render(make_decision(DecisionKind.TICKET), parse(raw), ticket=make_ticket(),
                          message_id=TICKET_MID, now=NOW, purpose="reply:1")
    assert out is not None and out.rcpt_to == ("jan.novak@firma.cz",)
    msg = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "jan.novak@firma.cz"
