"""original_message_ids(msg) and Mail.original_ids: which messages a bounce or report is about;
delivery_outcome(msg) and Mail.delivery_outcome: whether it is a hard, soft or no bounce."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from mailbot.ingest.parse import parse
from mailbot.ingest.reports import (
    MAX_IDS,
    MAX_PARTS,
    MAX_TEXT,
    delivery_outcome,
    original_message_ids,
)
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


# ---------------------------------------------------------------------------- delivery outcome


def postfix_dsn(*recipients: tuple[str, str | None], subtype: str = "delivery-status",
                cte: str = "") -> bytes:
    """A Postfix-style RFC 3464 report as received: one (Action, Status or None) per recipient."""
    blocks = []
    for n, (action, status) in enumerate(recipients):
        block = (f"Final-Recipient: rfc822; user{n}@example.cz\r\n"
                 f"Original-Recipient: rfc822;user{n}@example.cz\r\nAction: {action}\r\n")
        if status is not None:
            block += f"Status: {status}\r\nRemote-MTA: dns; mx.example.cz\r\n"
        blocks.append(block + "Diagnostic-Code: smtp; 550 5.1.1 <x@example.cz>: Recipient\r\n"
                      "    address rejected: User unknown in local recipient table\r\n")
    fields = ("Reporting-MTA: dns; mail.estelar.example\r\nX-Postfix-Queue-ID: 4Z1xQ2\r\n"
              "Arrival-Date: Wed, 25 Nov 2026 10:00:00 +0100 (CET)\r\n\r\n" + "\r\n".join(blocks))
    body = fields.encode()
    if cte == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    head = f"Content-Transfer-Encoding: {cte}\r\n" if cte else ""
    return (
        b"From: MAILER-DAEMON@mail.estelar.example (Mail Delivery System)\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-Id: <dsn-9@mail.estelar.example>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n'
        b'\tboundary="4Z1xQ2.1764064800/mail.estelar.example"\r\n\r\n'
        b"This is a MIME-encapsulated message.\r\n\r\n"
        b"--4Z1xQ2.1764064800/mail.estelar.example\r\nContent-Description: Notification\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThis is the mail system.\r\n\r\n"
        b"--4Z1xQ2.1764064800/mail.estelar.example\r\nContent-Description: Delivery report\r\n"
        + f"Content-Type: message/{subtype}\r\n{head}\r\n".encode() + body
        + b"\r\n--4Z1xQ2.1764064800/mail.estelar.example\r\n"
        b"Content-Description: Undelivered Message Headers\r\n"
        b"Content-Type: text/rfc822-headers\r\n\r\n"
        + f"Message-ID: {OURS}\r\nSubject: Novinky\r\n".encode()
        + b"\r\n--4Z1xQ2.1764064800/mail.estelar.example--\r\n"
    )


@pytest.mark.parametrize(("recipients", "expected"), [
    ([("failed", "5.1.1")], "hard"),
    ([("failed", "5.0.0 (permanent failure)")], "hard"),
    ([("failed", None)], "hard"),
    ([("Failed (bad address)", "5.1.1")], "hard"),
    ([("failed", "4.2.2")], "soft"),
    ([("failed", "4.4.7 (delivery time expired)")], "soft"),
    ([("delayed", "4.4.1")], "delayed"),
    ([("delivered", "2.0.0")], "delayed"),
    ([("relayed", "2.0.0")], "delayed"),
    ([("expanded", "2.0.0")], "delayed"),
    ([("delayed", "4.4.1"), ("failed", "5.1.1")], "hard"),
    ([("failed", "4.2.2"), ("failed", "5.1.1")], "hard"),
    ([("failed", "4.2.2"), ("delayed", "4.4.1")], "soft"),
    ([("delayed", "4.4.1"), ("delivered", "2.0.0")], "delayed"),
    ([("unheard-of", "5.1.1")], "unknown"),
], ids=["5.1.1", "5.0.0-comment", "no-status", "comment", "4.2.2", "4.4.7", "delayed",
        "delivered", "relayed", "expanded", "mixed-delayed-failed", "mixed-soft-hard",
        "mixed-soft-delayed", "mixed-delayed-delivered", "unknown-action"])
def test_delivery_outcome_of_postfix_reports(recipients: list[tuple[str, str | None]],
                                             expected: str) -> None:
    """Per-recipient Action and Status decide: any hard failure wins, then soft, then delay."""
    raw = postfix_dsn(*recipients)
    assert delivery_outcome(read(raw)) == expected
    assert parse(raw).delivery_outcome == expected


def test_delivery_outcome_of_global_and_encoded_reports() -> None:
    """message/global-delivery-status (RFC 6533) and a base64 status part are read too."""
    assert delivery_outcome(read(postfix_dsn(("delayed", "4.4.1"),
                                             subtype="global-delivery-status"))) == "delayed"
    assert delivery_outcome(read(postfix_dsn(("failed", "4.2.2"), cte="base64"))) == "soft"
    assert delivery_outcome(read(postfix_dsn(("delayed", "4.4.1"), cte="base64"))) == "delayed"


def test_delivery_outcome_built_with_the_email_package() -> None:
    """The report dsn() builds in memory (failed 5.1.1) and as received."""
    report = dsn(returned=original())
    assert delivery_outcome(report) == "hard"
    assert parse(report.as_bytes()).delivery_outcome == "hard"


def test_bounces_without_a_delivery_status_part_are_unknown() -> None:
    """qmail text bounces, Exchange-style attachments and ordinary mail have no outcome."""
    qmail = (b"From: MAILER-DAEMON@mx.example.cz\r\nSubject: failure notice\r\n\r\n"
             b"Hi. This is the qmail-send program at mx.example.cz.\r\n"
             b"<zakaznik@example.cz>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n"
             b"Action: delayed\r\n")  # a field-like line in a text bounce is not a report
    exchange = MIMEMultipart("mixed")
    exchange.attach(MIMEText("Your message did not reach some or all of the intended recipients."))
    exchange.attach(MIMEMessage(original()))
    for raw in (qmail, exchange.as_bytes(), b"Subject: hi\r\n\r\nAction: failed\r\n"):
        assert delivery_outcome(read(raw)) == "unknown"
        assert parse(raw).delivery_outcome == "unknown"


def test_broken_reports_are_still_read() -> None:
    """A status part left inside the text by a lost boundary, and field lines whose folding
    was lost (the stdlib ends the block's fields there), still give the outcome."""
    raw = postfix_dsn(("delayed", "4.4.1"))
    lost = raw.replace(b'boundary="4Z1xQ2', b'boundary="other', 1)  # no boundary matches
    assert read(lost).get_payload() and isinstance(read(lost).get_payload(), str)
    assert delivery_outcome(read(lost)) == "delayed"
    unfolded = postfix_dsn(("failed", "5.0.0")).replace(
        b"Original-Recipient: rfc822;user0@example.cz\r\n",
        b"Diagnostic-Code: smtp; 550-Please turn on SMTP Authentication\r\n"
        b"550-mx.example.cz [198.51.100.21]:25 is not permitted to relay\r\n", 1)
    assert delivery_outcome(read(unfolded)) == "hard"


@pytest.mark.parametrize("raw", [
    b"\x00\xff\xfe garbage \r\n\r\n\x80\x81",
    b"Content-Type: message/delivery-status\r\n\r\n",
    b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!===\r\n",
    b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nAction: fai=\r\nled\r\nStatus: 5.=\r\n1.1\r\n",
    b"Content-Type: message/delivery-status\r\n\r\nAction: \xff\xfe\r\nStatus: \x80\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
    + b"--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: \r\n" * 500,
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 150,
    b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary\r\n"
    b"Content-Type: message/delivery-status\r\n",
], ids=["garbage", "empty-status", "bad-base64", "qp-status", "8bit-fields", "many-parts",
        "deep", "no-boundary"])
def test_delivery_outcome_of_malformed_input_never_raises(raw: bytes) -> None:
    """Hostile structure gives one of the four outcomes, directly and through parse()."""
    for outcome in (delivery_outcome(read(raw)), parse(raw).delivery_outcome):
        assert outcome in ("hard", "soft", "delayed", "unknown")


def test_delivery_outcome_failing_part_does_not_hide_the_others() -> None:
    """An exception inside one part is contained; the status part is still read."""

    class Broken(Message):
        def get_content_type(self) -> str:
            raise ValueError("broken part")

    report = read(postfix_dsn(("delayed", "4.4.1")))
    payload = report.get_payload()
    assert isinstance(payload, list)
    payload.insert(0, Broken())
    assert delivery_outcome(report) == "delayed"


def test_delivery_outcome_walk_is_bounded() -> None:
    """A status part past the first MAX_PARTS parts is not looked at."""
    filler = b"--z\r\nContent-Type: text/plain\r\n\r\nx\r\n" * (MAX_PARTS + 10)
    status = (b"--z\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
              b"Action: delayed\r\nStatus: 4.4.1\r\n")
    head = b"Content-Type: multipart/report; report-type=delivery-status; boundary=z\r\n\r\n"
    assert delivery_outcome(read(head + filler + status + b"--z--\r\n")) == "unknown"
    assert delivery_outcome(read(head + status + filler + b"--z--\r\n")) == "delayed"


_DSN_TYPE = re.compile(rb"^Content-Type:[ \t]*multipart/report;[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*"
                       rb"report-type=\"?delivery-status", re.I | re.M)
_ACTION_LINE = re.compile(rb"^Action[ \t]*:[ \t]*(\w+)", re.I | re.M)


def test_corpus_delivery_reports_give_an_outcome() -> None:
    """Every corpus delivery-status report gives an outcome without raising; those whose
    Action lines (read from the file text, not by delivery_outcome) all say `delayed` are
    delayed, and none of those whose Action lines all say `failed` is."""
    corpus = require_shared("corpus")
    checked = delayed = 0
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if path.suffix in (".md", ".jsonl") or not _DSN_TYPE.search(raw[:64 * 1024]):
            continue
        checked += 1
        outcome = delivery_outcome(read(raw))
        assert outcome in ("hard", "soft", "delayed", "unknown"), path
        actions = {a.lower() for a in _ACTION_LINE.findall(raw)}
        if actions == {b"delayed"}:
            delayed += 1
            assert outcome == "delayed", path
        elif actions == {b"failed"}:
            assert outcome != "delayed", path
    print(f"\ncorpus delivery-status reports: {checked}, all delayed: {delayed}")
    assert checked > 100 and delayed >= 5
