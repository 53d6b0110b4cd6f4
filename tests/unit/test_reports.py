"""original_message_ids(msg) and Mail.original_ids: which messages a bounce or report is about."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from mailbot.ingest.parse import parse
from mailbot.ingest.reports import MAX_IDS, MAX_TEXT, original_message_ids
from tests.shared_data import require_shared

OURS = "<T-2026-000001.4f2a@support.estelar.example>"


def read(raw: bytes) -> Message:
    """A raw message parsed the way parse() parses it (compat32)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def original(message_id: str = OURS, body: str = "Dobrý den,\npotvrzujeme přijetí.\n"
             ) -> EmailMessage:
    """One of our outgoing messages, as a bounce would return it."""
    msg = EmailMessage()
    msg["From"] = "hotline@estelar.example"
    msg["To"] = "zakaznik@example.cz"
    msg["Subject"] = "[#T-2026-000001] Potvrzení požadavku"
    msg["Message-ID"] = message_id
    msg.set_content(body)
    return msg


def dsn(*, returned: Message | None = None, headers_only: bool = False,
        status_fields: str = "") -> MIMEMultipart:
    """An RFC 3464 delivery-status report built with the email package."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.cz"
    report["Message-ID"] = "<dsn-1@mx.example.cz>"
    report.attach(MIMEText("Your message could not be delivered.\n"))
    status = MIMEBase("message", "delivery-status")
    status.set_payload([  # per-message fields, then one block per recipient
        email.message_from_string(f"Reporting-MTA: dns; mx.example.cz\n{status_fields}\n"),
        email.message_from_string("Final-Recipient: rfc822; zakaznik@example.cz\n"
                                  "Action: failed\nStatus: 5.1.1\n\n"),
    ])
    report.attach(status)
    if returned is not None and headers_only:
        head = MIMEBase("text", "rfc822-headers")
        head.set_payload(returned.as_string().split("\n\n", 1)[0] + "\n")
        report.attach(head)
    elif returned is not None:
        report.attach(MIMEMessage(returned))
    return report


# ---------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("headers_only", [False, True], ids=["message-rfc822", "rfc822-headers"])
def test_rfc3464_report_gives_the_returned_message_id(headers_only: bool) -> None:
    """The returned message or its header block names our message; the DSN's own id does not."""
    report = dsn(returned=original(), headers_only=headers_only)
    assert original_message_ids(report) == (OURS,)  # as built in memory
    mail = parse(report.as_bytes())  # and as received
    assert mail.original_ids == (OURS,)
    assert mail.message_id == "<dsn-1@mx.example.cz>"


def test_original_message_id_in_delivery_status_comes_first() -> None:
    """Original-Message-ID per-message fields count; duplicates are dropped, order kept."""
    report = dsn(returned=original(), status_fields="Original-Message-ID: <first@mx.example>\n")
    assert parse(report.as_bytes()).original_ids == ("<first@mx.example>", OURS)


def test_disposition_notification_with_folded_original_message_id() -> None:
    """An RFC 8098 read receipt: Original-Message-ID, folded, comes out as one clean id."""
    raw = (
        b"From: zakaznik@example.cz\r\nMessage-ID: <mdn-7@example.cz>\r\n"
        b"Subject: Read: Potvrzeni\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nYour message was displayed.\r\n"
        b"--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Reporting-UA: pc.example.cz; Thunderbird\r\n"
        b"Original-Recipient: rfc822;zakaznik@example.cz\r\n"
        b"Final-Recipient: rfc822;zakaznik@example.cz\r\n"
        b"Original-Message-ID: <T-2026-000001.4f2a@\r\n support.estelar.example>\r\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--b--\r\n"
    )
    assert parse(raw).original_ids == (OURS,)


def test_qmail_style_inline_bounce() -> None:
    """A text/plain bounce quoting the returned headers: the quoted Message-ID line counts."""
    body = (
        "Hi. This is the qmail-send program at mx.example.cz.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
        "<zakaznik@example.cz>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "Return-Path: <hotline@estelar.example>\n"
        "Received: (qmail 5529 invoked from network); 29 Apr 2026 10:00:00 -0000\n"
        f"Message-ID: {OURS}\n"
        "Subject: [#T-2026-000001] Potvrzeni pozadavku\n\nDobry den\n"
    )
    raw = ("From: MAILER-DAEMON@mx.example.cz\nMessage-ID: <q-1@mx.example.cz>\n"
           "Subject: failure notice\n\n" + body).encode()
    assert parse(raw).original_ids == (OURS,)


def test_exchange_style_bounce_attaching_the_message_outside_a_report() -> None:
    """multipart/mixed with the returned message attached (old Exchange, Domino, qmail)."""
    bounce = MIMEMultipart("mixed")
    bounce["Message-ID"] = "<ndr-1@exchange.example>"
    bounce.attach(MIMEText("Your message did not reach some or all of the intended recipients."))
    bounce.attach(MIMEMessage(original()))
    assert parse(bounce.as_bytes()).original_ids == (OURS,)


def test_base64_encoded_returned_message_is_read() -> None:
    """A base64 message/rfc822 (RFC 2046 forbids it, some MTAs do it) still gives the id."""
    encoded = base64.encodebytes(original().as_bytes()).decode("ascii")
    raw = (
        "Message-ID: <dsn-2@mx.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nfailed\n"
        "--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        f"{encoded}--b--\n"
    ).encode()
    assert parse(raw).original_ids == (OURS,)


def test_quoted_lines_inside_an_attached_message_are_not_scanned() -> None:
    """Only the attached message's own Message-ID counts, not lines quoted in its body."""
    returned = original(body="Message-ID: <quoted@elsewhere.example>\n")
    assert original_message_ids(dsn(returned=returned)) == (OURS,)


def test_ordinary_mail_has_no_original_ids() -> None:
    """A plain customer request gives nothing; neither does a bare id without an @."""
    raw = (b"From: zakaznik@example.cz\r\nMessage-ID: <req-1@example.cz>\r\n"
           b"In-Reply-To: <x@y>\r\nSubject: Licence 4012-7733\r\n\r\nDobry den, ...\r\n")
    assert parse(raw).original_ids == ()
    headers_only = dsn(returned=original(message_id="20140913142357"), headers_only=True)
    assert original_message_ids(headers_only) == ()


# ---------------------------------------------------------------------------- limits, malformed


def test_ids_are_capped_and_kept_in_order() -> None:
    """Many attached messages: the first MAX_IDS ids, in document order."""
    mixed = MIMEMultipart("mixed")
    for n in range(3 * MAX_IDS):
        mixed.attach(MIMEMessage(original(message_id=f"<m{n}@example.cz>")))
    assert original_message_ids(read(mixed.as_bytes())) == tuple(
        f"<m{n}@example.cz>" for n in range(MAX_IDS))


def test_text_scan_is_bounded() -> None:
    """A Message-ID line past the first MAX_TEXT bytes of text is not looked for."""
    filler = ("x" * 99 + "\n") * (MAX_TEXT // 100 + 10)
    raw = f"Subject: big\n\n{filler}Message-ID: <late@example.cz>\n".encode()
    assert original_message_ids(read(raw)) == ()
    raw = f"Subject: small\n\nMessage-ID: <early@example.cz>\n{filler}".encode()
    assert original_message_ids(read(raw)) == ("<early@example.cz>",)


@pytest.mark.parametrize("raw", [
    b"\x00\xff\xfe garbage \r\n\r\n\x80\x81",
    b"Content-Type: multipart/report; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/rfc822"
    b"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64===\r\n",
    b"Content-Type: multipart/report\r\n\r\nno boundary at all\r\nMessage-ID: <in-body@x>\r\n",
    b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nOriginal-Message-ID: <qp=\r\n@x>\r\n",
    b"Content-Type: text/rfc822-headers; charset=\"\r\n\r\nMessage-ID: <\xff\xfe@x>\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 150,
    b"Content-Type: multipart/mixed; boundary=z\r\n\r\n"
    + b"--z\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <<<>>>\r\n\r\n" * 500 + b"--z--",
], ids=["garbage", "bad-base64", "no-boundary", "qp-status", "8bit-headers", "empty-message",
        "deep", "many-parts"])
def test_malformed_input_never_raises(raw: bytes) -> None:
    """Hostile structure gives a (possibly empty) tuple of clean ids, both directly and in parse."""
    for ids in (original_message_ids(read(raw)), parse(raw).original_ids):
        assert len(ids) <= MAX_IDS
        assert all(i.startswith("<") and i.endswith(">") and not any(c.isspace() for c in i)
                   for i in ids)


def test_a_failing_part_does_not_lose_the_others() -> None:
    """An exception inside one part is contained; ids from the other parts survive."""

    class Broken(Message):
        def get_content_type(self) -> str:
            raise ValueError("broken part")

    report = dsn(returned=original())
    payload = report.get_payload()
    assert isinstance(payload, list)
    payload.insert(0, Broken())
    assert original_message_ids(report) == (OURS,)


# ---------------------------------------------------------------------------- real bounces


@pytest.mark.parametrize(("sample", "expected"), [
    # source-stated orig_message_id (t/orig-message.t)
    ("bounceparser/aol.unknown.msg", "<200606062115.k56LFe7d012436@somehost.example.com>"),
    ("bounceparser/postfix.msg", "<20060527213404.GN13012@mta.domain-1.com>"),
    # qmail: text/plain with the message copied below the notice
    ("sisimai/lhost-qmail-03.eml", "<00000000000000.5529.qmail@nijo.example.jp>"),
    # Exchange 2003: multipart/mixed with message/rfc822, no multipart/report
    ("sisimai/lhost-exchange2003-03.eml", "<00000000000.ffffffffffff.ff@example.net>"),
    # quoted-printable text/rfc822-headers
    ("sisimai/rfc3464-09.eml", "<00000000000000000000000000000000000000000@example.org>"),
    # returned headers pasted in as a body part without a Content-Type
    ("sisimai/lhost-x1-01.eml", "<000000000000000000000000000000000000@example.jp>"),
    # message/rfc822 with a blank line before the returned headers
    ("sisimai/lhost-x3-01.eml", "<fffffffffffffffffffffffffffffff@xample.org>"),
    # returned header lines that lost their folding whitespace
    ("sisimai/lhost-postfix-57.eml", "<44kWHZ2S3Qz1yxHC@rokujo.cr.nyaan.jp>"),
    # boundary mismatch: the returned headers end up inside message/delivery-status
    ("sisimai/rhost-google-01.eml", "<201305110000000000000.r4B003v000000@mail4.example.co.jp>"),
    # start boundary missing: the whole report is one text, scanned for quoted lines
    ("sisimai/lhost-messagingserver-03.eml", "<000000000000000000@example.org>"),
    # non-standard message/rfc822-headers (parsed by the stdlib as a headers-only message)
    ("mail-parser/mail_malformed_2", "<004801d1fc84$01c934ac$b247f0b7$@infospacemail.com>"),
    ("flanker/disposition-notification.eml", "<199509192301.23456@example.org>"),
    ("flanker/bounce/office365.eml", "<20171013111011.20866.254C2F3A4D7AA526@ninomail.com>"),
])
def test_real_bounces_name_the_returned_message(sample: str, expected: str) -> None:
    """Hand-checked samples: the id of the returned message is found, first."""
    path = require_shared(f"corpus/{sample}")
    assert parse(path.read_bytes()).original_ids[:1] == (expected,)


@pytest.mark.parametrize("sample", [
    "sisimai/lhost-opensmtpd-01.eml",  # a bounce that returns nothing of the message
    "sisimai/not/is-not-bounce-01.eml",
    "sisimai/rfc3834-01.eml",  # vacation auto-reply
    "bounceparser/aol-vacation.msg",
])
def test_real_mail_without_a_returned_message_gives_nothing(sample: str) -> None:
    path = require_shared(f"corpus/{sample}")
    assert parse(path.read_bytes()).original_ids == ()


def stated(corpus: Path) -> dict[Path, dict[str, object]]:
    """The facts of every corpus file that has an expected.jsonl line."""
    facts: dict[Path, dict[str, object]] = {}
    for listing in sorted(corpus.glob("*/expected.jsonl")):
        for line in listing.read_text(encoding="utf-8").splitlines():
            if line.strip():
                fact = json.loads(line)
                facts[listing.parent / fact["file"]] = fact
    return facts


def test_corpus_bounces_mostly_name_their_original() -> None:
    """Every corpus file parses to clean ids; most stated bounces name their original message.

    The rest return nothing of the message (only a text notice) or only a bare,
    @-less Message-ID.
    """
    corpus = require_shared("corpus")
    facts = stated(corpus)
    checked = found = 0
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        if path.suffix in (".md", ".jsonl"):
            continue
        ids = parse(path.read_bytes()).original_ids
        assert len(ids) <= MAX_IDS and all(i[0] == "<" and i[-1] == ">" for i in ids), path
        fact = facts.get(path, {})
        if fact.get("is_bounce") is True:
            checked += 1
            found += bool(ids)
        if "orig_message_id" in fact:
            assert fact["orig_message_id"] in ids, path
    print(f"\ncorpus bounces with an original id: {found} of {checked}")
    assert checked and found >= 0.8 * checked
