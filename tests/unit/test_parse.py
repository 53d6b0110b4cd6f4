"""parse(raw) -> Mail on small hand-written messages: decoding, traps and degradation."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone

import pytest

from mailbot.errors import ParseError
from mailbot.ingest.parse import html_to_text, parse

CONTROL = re.compile("[\r\n\x00]")


def mail(*headers: str, body: bytes = b"Hello\r\n") -> bytes:
    """A raw message from ASCII header lines and a body."""
    return "\r\n".join(headers).encode("ascii") + b"\r\n\r\n" + body


def test_encoded_words_in_subject_and_display_name_decode() -> None:
    """B and Q words decode, a UTF-8 character split over two words is rejoined."""
    raw = mail(
        "From: =?utf-8?Q?Ji=C5=99=C3=AD_Dvo=C5=99=C3=A1k?= <Jiri.Dvorak@Example.CZ>",
        # "Licenční" with "č" (C4 8D) split across the two B words
        "Subject: =?UTF-8?B?TGljZW7E?= =?UTF-8?B?jW7DrQ==?= =?iso-8859-2?Q?=E8=EDslo?=",
    )
    parsed = parse(raw)
    assert parsed.from_addr == "jiri.dvorak@example.cz"
    assert parsed.from_name == "Jiří Dvořák"
    assert parsed.subject == "Licenčníčíslo"


def test_malformed_encoded_words_still_decode() -> None:
    """Encoded words inside quotes, glued to text or with bad base64 padding decode anyway."""
    raw = mail(
        'From: "=?utf-8?B?UGV0cg==?= =?utf-8?Q?Nov=C3=A1k?=" <petr@example.cz>',
        "Subject: Re:=?utf-8?B?w5rEjWV0?=2026 =?utf-8?B?xb5hZG9zdA?=",
    )
    parsed = parse(raw)
    assert parsed.from_name == "PetrNovák"
    assert parsed.subject == "Re:Účet2026 žadost"


def test_raw_8bit_header_in_windows_1250_is_detected() -> None:
    """An undeclared Windows-1250 subject decodes to Czech instead of mojibake."""
    subject = "Žádost o prodloužení licence, š ť ž".encode("cp1250")
    raw = b"From: a@example.cz\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    parsed = parse(raw)
    assert parsed.subject == "Žádost o prodloužení licence, š ť ž"
    assert "UndecodableBytesDefect" in parsed.defects


def test_raw_8bit_header_follows_the_charset_declared_for_the_body() -> None:
    """Raw GB2312 header bytes decode with the GB2312 charset the body declares."""
    raw = (
        b"From: x@example.cn\r\nSubject: " + "转发：整体提升".encode("gb2312")
        + b"\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n" + "你好".encode("gb2312")
    )
    parsed = parse(raw)
    assert parsed.subject == "转发：整体提升"
    assert parsed.text == "你好"


@pytest.mark.parametrize(
    ("declared", "payload", "expected"),
    [
        ("iso-8859-1", "Dobrý den, číslo".encode("utf-8"), "Dobrý den, číslo"),
        ("iso-8859-2", "šťastný žluťoučký".encode("cp1250"), "šťastný žluťoučký"),
        ("x-unknown-charset", "Příliš žluťoučký kůň".encode("cp1250"), "Příliš žluťoučký kůň"),
        ("us-ascii", "Grüße".encode("utf-8"), "Grüße"),
        ("gb2312", "朱镕基".encode("gbk"), "朱镕基"),  # 镕 is GBK, not GB2312
    ],
)
def test_mislabelled_body_charsets_decode(declared: str, payload: bytes, expected: str) -> None:
    """Mislabelled UTF-8, Windows-1250 sent as ISO-8859-2 and unknown labels still decode."""
    raw = mail(
        "From: a@example.cz",
        f"Content-Type: text/plain; charset={declared}",
        "Content-Transfer-Encoding: 8bit",
        body=payload,
    )
    assert parse(raw).text == expected


def test_iso_2022_jp_with_cp932_extensions_decodes() -> None:
    """ISO-2022-JP holding a CP932 circled digit (rejected by Python's codec) decodes."""
    body = b"\x1b$B-!\x1b(B 1\x1b$BET\x1b(B"  # "① 1都"
    raw = mail("From: a@example.jp", "Content-Type: text/plain; charset=ISO-2022-JP", body=body)
    assert parse(raw).text == "① 1都"


def test_quoted_printable_soft_break_inside_license_number_is_joined() -> None:
    """A soft line break splitting 1550-7783 is removed, so the number is whole again."""
    raw = mail(
        "From: a@example.cz",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: Quoted-Printable ",  # odd case and a trailing space
        body=b"Licen=C4=8Dn=C3=AD =C4=8D=C3=ADslo: 1550-=\r\n7783, d=C4=9Bkuji\r\n",
    )
    assert "Licenční číslo: 1550-7783, děkuji" in parse(raw).text


def test_html_only_body_becomes_readable_text() -> None:
    """Block tags and <br> become newlines, &nbsp; a space, entities decode, scripts vanish."""
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<p>Dobr&yacute;&nbsp;den,</p><div>licence&nbsp;1234-5678<br>d&#283;kuji</div>"
        "<script>alert('x')</script><p>Tom &amp; Jerry</p></body></html>"
    )
    raw = mail(
        "From: a@example.cz",
        "Content-Type: text/html; charset=utf-8",
        body=html.encode(),
    )
    parsed = parse(raw)
    assert parsed.text.splitlines() == ["Dobrý den,", "", "licence 1234-5678", "děkuji", "",
                                        "Tom & Jerry"]
    assert parsed.html == html
    assert "alert" not in parsed.text and "color" not in parsed.text


def test_html_to_text_keeps_preformatted_whitespace() -> None:
    """Whitespace inside <pre> survives while ordinary HTML whitespace collapses."""
    assert html_to_text("<p>a   b\n c</p><pre>x  y\nz</pre>") == "a b c\n\nx  y\nz"


def test_multipart_report_type_and_bodies() -> None:
    """A DSN gives content_type multipart/report, report_type delivery-status, its text part."""
    raw = mail(
        "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)",
        'Content-Type: multipart/report; report-type="Delivery-Status"; boundary="B"',
        body=(
            b"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry, your mail bounced.\r\n"
            b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mx.example.com\r\n\r\nStatus: 5.1.1\r\n"
            b"--B--\r\n"
        ),
    )
    parsed = parse(raw)
    assert parsed.content_type == "multipart/report"
    assert parsed.report_type == "delivery-status"
    assert parsed.text.strip() == "I'm sorry, your mail bounced."
    assert parsed.from_addr == "mailer-daemon@mx.example.com"
    assert parsed.from_name == "Mail Delivery System"


def test_report_type_is_empty_for_other_mail() -> None:
    """Only a multipart/report carries a report_type."""
    assert parse(mail("From: a@example.cz")).report_type == ""


def test_null_return_path_is_empty_string_and_absent_is_none() -> None:
    """`Return-Path: <>` gives "", a real one its lower-case address, none gives None."""
    assert parse(mail("Return-Path: <>", "From: a@b.cz")).return_path == ""
    assert parse(mail("Return-Path: <Bounce+X@Example.com>")).return_path == "bounce+x@example.com"
    assert parse(mail("From: a@b.cz")).return_path is None


def test_missing_from_message_id_and_date_give_none() -> None:
    """A message without From, Message-ID, Date or Subject parses to empty values."""
    parsed = parse(mail("X-Note: nothing else"))
    assert parsed.from_addr is None and parsed.from_name == ""
    assert parsed.message_id is None and parsed.date is None
    assert parsed.subject == "" and parsed.to == () and parsed.in_reply_to == ()
    assert parsed.text == "Hello"


def test_from_without_usable_address_falls_back() -> None:
    """A garbage or empty From falls back to a later From, then Sender, then Reply-To."""
    assert parse(mail("From: [??????]", "From: Real <Real@Example.com>")).from_addr == (
        "real@example.com"
    )
    parsed = parse(mail('From: "Nobody" <>', "Reply-To: <Reply@Example.com>"))
    assert parsed.from_addr == "reply@example.com"
    assert parse(mail('From: "A" <>, "B" <b@example.com>')).from_addr == "b@example.com"


def test_address_looking_display_name_never_becomes_from_addr() -> None:
    """An unquoted or encoded name holding an address yields the angle address, not the name."""
    for value in ("ceo@bank.example <attacker@evil.example>",
                  "=?utf-8?Q?ceo@bank.example?= <attacker@evil.example>"):
        assert parse(mail(f"From: {value}")).from_addr == "attacker@evil.example"


def test_message_id_trap_does_not_crash() -> None:
    """`<[x@microsoft.com]>` (an IndexError in the stdlib header parser) is kept verbatim."""
    parsed = parse(mail("Message-ID: <[x@microsoft.com]>", "From: a@b.cz"))
    assert parsed.message_id == "<[x@microsoft.com]>"
    assert parse(mail("Message-ID:   <abc@host>  (comment)")).message_id == "<abc@host>"


def test_threading_headers_become_id_tuples() -> None:
    """In-Reply-To and folded References become tuples of <...> ids, in order."""
    parsed = parse(mail(
        "In-Reply-To: <ticket-T-2026-000145.1@estelar.example> (sent by mailbot)",
        "References: <a@x>\r\n <b@x>\t<ticket-T-2026-000145.1@estelar.example>",
    ))
    assert parsed.in_reply_to == ("<ticket-T-2026-000145.1@estelar.example>",)
    assert parsed.references == ("<a@x>", "<b@x>", "<ticket-T-2026-000145.1@estelar.example>")


def test_header_values_never_contain_cr_lf_or_nul() -> None:
    """Encoded CR, LF and NUL in Subject, names and any header are turned into spaces."""
    raw = mail(
        'From: "=?utf-8?Q?Eve=0ABcc=3A_victim@example.com?=" <eve@example.com>',
        "To: =?utf-8?Q?Bob=0D=0A?= <bob@example.com>, carol@example.com",
        "Subject: =?utf-8?Q?Hi=0D=0ABcc:_x@y=00?=\r\n\tcontinued",
        "X-Custom: =?utf-8?B?YQpiDWMAZA==?=",
    )
    parsed = parse(raw)
    assert parsed.subject == "Hi Bcc: x@y continued"
    assert parsed.from_name == "Eve Bcc: victim@example.com"
    assert parsed.from_addr == "eve@example.com"
    assert parsed.to == ("bob@example.com", "carol@example.com")
    for values in parsed.headers.values():
        for value in values:
            assert not CONTROL.search(value)
    assert parsed.header("x-custom") == "a b c d"


def test_headers_map_lower_case_names_to_all_values() -> None:
    """Every occurrence of a header is kept, in order, under its lower-case name."""
    parsed = parse(mail("Received: from a", "Received: from b", "X-Loop: 1"))
    assert parsed.headers["received"] == ("from a", "from b")
    assert parsed.header("X-LOOP") == "1"


def test_attachments_are_listed_with_decoded_names_and_sizes() -> None:
    """Attachments get decoded (RFC 2231, RFC 2047) names, types and decoded sizes."""
    pdf = bytes(range(256)) * 40
    raw = mail(
        "From: a@example.cz",
        'Content-Type: multipart/mixed; boundary="X"',
        body=(
            b"--X\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
            b"--X\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename*=utf-8''faktura%20%C4%8D.1.pdf\r\n\r\n"
            + base64.encodebytes(pdf)
            + b"--X\r\nContent-Type: image/png; name=\"=?utf-8?Q?sn=C3=ADmek.png?=\"\r\n"
            b"Content-Disposition: inline\r\n\r\nPNGDATA\r\n"
            b"--X\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nlog\r\n"
            b"--X--\r\n"
        ),
    )
    parsed = parse(raw)
    assert parsed.text.strip() == "See attached."
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        ("faktura č.1.pdf", "application/pdf", len(pdf)),
        ("snímek.png", "image/png", len(b"PNGDATA\r\n") - 2),
        ("", "text/plain", 3),
    ]


def test_text_split_around_an_inline_image_is_joined() -> None:
    """Apple Mail's text/plain parts around an inline image form one text."""
    raw = mail(
        "From: a@example.cz",
        "Content-Type: multipart/mixed; boundary=A",
        body=(
            b"--A\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
            b"--A\r\nContent-Type: image/jpeg; name=p.jpg\r\nContent-Disposition: inline\r\n\r\nJ\r\n"
            b"--A\r\nContent-Type: text/plain\r\n\r\nLicence 1234-5678\r\n--A--\r\n"
        ),
    )
    parsed = parse(raw)
    assert parsed.text == "Hello\nLicence 1234-5678"
    assert [a.filename for a in parsed.attachments] == ["p.jpg"]


def test_date_is_aware_and_obsolete_zones_are_read() -> None:
    """Dates are aware; `(EDT) -0400` and `-0000` are placed, an impossible date is None."""
    assert parse(mail("Date: Mon, 5 Jan 2026 08:30:00 +0100")).date == datetime(
        2026, 1, 5, 7, 30, tzinfo=timezone.utc
    )
    assert parse(mail("Date: Wed, 20 Sep 1995 00:19:00 (EDT) -0400")).date == datetime(
        1995, 9, 20, 4, 19, tzinfo=timezone.utc
    )
    assert parse(mail("Date: 12 Jun 2013 02:21:53 -0000")).date == datetime(
        2013, 6, 12, 2, 21, 53, tzinfo=timezone.utc
    )
    broken = parse(mail("Date: Wed, 05 Sep 2018 29:24:05 +0700"))
    assert broken.date is None and "InvalidDateDefect" in broken.defects


def test_deep_nesting_degrades_instead_of_raising() -> None:
    """2,000 nested multiparts (a RecursionError in the stdlib) give the headers and a defect."""
    depth = 2000
    body = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    ) + b"Content-Type: text/plain\r\n\r\nhello\r\n"
    raw = b"From: a@example.cz\r\nSubject: deep\r\n" + body
    parsed = parse(raw)
    assert parsed.subject == "deep" and parsed.from_addr == "a@example.cz"
    assert "NestingTooDeepDefect" in parsed.defects


def test_boundary_defects_are_reported_by_class_name() -> None:
    """A multipart whose closing boundary is missing reports CloseBoundaryNotFoundDefect."""
    raw = mail(
        "From: a@example.cz",
        "Content-Type: multipart/mixed; boundary=Z",
        body=b"--Z\r\nContent-Type: text/plain\r\n\r\ncut short\r\n",
    )
    parsed = parse(raw)
    assert parsed.defects == ("CloseBoundaryNotFoundDefect",)
    assert parsed.text.strip() == "cut short"


def test_headerless_text_still_parses() -> None:
    """A bare body without headers gives a Mail with that text, not an exception."""
    parsed = parse("Ahoj,\r\ntohle je jen text bez hlaviček.\r\n".encode())
    assert "tohle je jen text bez hlaviček." in parsed.text
    assert parsed.from_addr is None


@pytest.mark.parametrize("raw", [b"", b"  \r\n\r\n"])
def test_empty_input_raises_parse_error(raw: bytes) -> None:
    """Input with no message at all is a ParseError (the worker quarantines it)."""
    with pytest.raises(ParseError, match="empty"):
        parse(raw)


def test_stdlib_failure_falls_back_to_mail_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the stdlib path raises, mail-parser rescues the message and the defect names why."""
    import mailbot.ingest.parse as module

    def broken(data: bytes) -> None:
        raise ValueError("simulated stdlib bug")

    monkeypatch.setattr(module, "_parse", broken)
    parsed = parse(mail("From: Jan <Jan@Example.cz>", "Subject: =?utf-8?Q?=C3=9A=C4=8Det?="))
    assert (parsed.from_addr, parsed.subject) == ("jan@example.cz", "Účet")
    assert parsed.defects == ("ValueError",)
    monkeypatch.setattr("mailparser.parse_from_bytes", broken)
    with pytest.raises(ParseError, match="simulated stdlib bug"):
        parse(mail("From: a@b.cz"))


# ------------------------------------------------------------- the split without base64 lines

B64 = base64.encodebytes(bytes(range(256)) * 8)  # 28 lines of 76 characters
B64_CRLF = B64.replace(b"\n", b"\r\n")

SPLIT_CASES = {
    "attachment": (b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
                   b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + B64_CRLF + b"--X--\r\n"),
    "no line end before boundary": (b"Content-Type: multipart/mixed; boundary=X\n\n--X\n\n"
                                    + B64.rstrip(b"\n") + b"--X--\n"),
    "preamble and epilogue": (b"Content-Type: multipart/mixed; boundary=X\n\n" + B64
                              + b"--X\n\nbody\n--X--\n" + B64),
    "no boundary": b"Content-Type: multipart/mixed; boundary=X\n\n" + B64,
    "headers then base64": b"Subject: s\n" + B64 + b"X-Not: a header\n",
    "followed by a field-like line": b"Subject: s\n\n" + B64 + b"abc:def\n",
    "followed by text": b"Subject: s\n\n" + B64.rstrip(b"\n") + b" tail\n",
    "lone CR": b"Subject: s\n\n" + B64.replace(b"\n", b"\r", 3) + B64.replace(b"\n", b"\r\r\n", 1),
    "at the end without line end": b"Subject: s\n\n" + B64.rstrip(b"\n"),
    "attached message": (b"Content-Type: message/rfc822\n\nSubject: inner\n"
                         b"Content-Transfer-Encoding: base64\n\n" + B64),
    "delivery status": b"Content-Type: message/delivery-status\n\nAction: failed\n" + B64 + b"\nX: y\n",
    "digest": (b"Content-Type: multipart/digest; boundary=D\n\n--D\n\n" + B64 + b"--D\n"
               b"Content-Type: text/plain\n\n" + B64 + b"--D--\n"),
    "8-bit and NUL around": b"Subject: \xff\n\n\x00\xfe\n" + B64 + b"\xff\n",
}


def _tree(msg: object) -> list[object]:
    """Everything the parser stored, part by part."""
    out: list[object] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        payload = part._payload  # type: ignore[attr-defined]
        out.append((part._unixfrom, part._default_type, list(part._headers),  # type: ignore[attr-defined]
                    part.preamble, part.epilogue,  # type: ignore[attr-defined]
                    [(type(d).__name__, str(d)) for d in part.defects],  # type: ignore[attr-defined]
                    payload if not isinstance(payload, list) else len(payload)))
        if isinstance(payload, list):
            stack.extend(reversed(payload))
    return out


@pytest.mark.parametrize("raw", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_split_builds_the_tree_the_stdlib_builds(raw: bytes) -> None:
    """Runs of base64 lines skipped by the feedparser and put back leave every header,
    payload, preamble, epilogue and defect as the plain stdlib parse has them."""
    import email.parser
    import email.policy

    from mailbot.ingest.parse import _BASE64_RUN, _split

    assert _BASE64_RUN.search(raw.decode("ascii", "surrogateescape"))  # the shortcut is taken
    expected = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    assert _tree(_split(raw)[0]) == _tree(expected)


@pytest.mark.parametrize("encoded", [
    base64.encodebytes(b"x" * 999),  # no padding
    base64.encodebytes(b"x" * 1000),  # "=="
    base64.encodebytes(b"x" * 1001),  # "="
    base64.encodebytes(b"x" * 1000).replace(b"==", b""),  # padding missing
    base64.encodebytes(b"x" * 999).replace(b"eHh4\n", b"eH=h4\n", 1),  # padding inside
    base64.encodebytes(b"x" * 999)[:-3] + b"\n",  # a character short
])
def test_attachment_size_is_the_decoded_size(encoded: bytes) -> None:
    """Sizes of base64 attachments, read from the length or decoded, are the stdlib's
    decoded sizes, and its defects are reported alike."""
    from email.message import Message

    raw = mail("From: a@example.cz", "Content-Type: multipart/mixed; boundary=X", body=(
        b"--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n--X\r\nContent-Type: application/pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment\r\n\r\n"
        + encoded.replace(b"\n", b"\r\n") + b"--X--\r\n"))
    part = Message()
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(encoded.decode("ascii").rstrip("\n"))
    decoded = part.get_payload(decode=True)
    parsed = parse(raw)
    assert [a.size for a in parsed.attachments] == [len(decoded)]
    assert {type(d).__name__ for d in part.defects} <= set(parsed.defects)
