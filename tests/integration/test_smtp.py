"""Outbound SMTP (mailbot.replies.smtp) and the directory sink, against a real aiosmtpd sink."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from mailbot.config import OutboundConfig
from mailbot.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from mailbot.replies.sink import DirectorySink, file_stem
from mailbot.replies.smtp import SmtpSender, Transport, to_crlf
from tests.fixtures.servers import SmtpSink, TlsCert, free_port

FROM = "bounces@estelar.example"
TO = "customer@example.org"


def message(n: int = 1, body: str = "Hello.\r\n", size: int = 0) -> bytes:
    padding = ("x" * 76 + "\r\n") * (size // 78)
    return (
        f"From: ESTELAR podpora <podpora@estelar.example>\r\n"
        f"To: {TO}\r\n"
        f"Subject: Reply {n}\r\n"
        f"Message-ID: <reply-{n}@estelar.example>\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"\r\n{body}{padding}"
    ).encode()


def outbound(sink: SmtpSink, **overrides: object) -> OutboundConfig:
    values: dict[str, object] = {
        "mode": "smtp", "host": sink.host, "port": sink.port, "security": "none",
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return OutboundConfig.model_validate(values)


@pytest.fixture
def sender(smtp_sink: SmtpSink):
    with SmtpSender(outbound(smtp_sink), local_hostname="mailbot.test") as s:
        yield s


def test_send_returns_the_final_reply_and_the_sink_captures_the_message(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """A delivered message returns the server's 250 text; the sink holds envelope and bytes."""
    reply = sender.send(message(1), FROM, [TO])
    assert reply.startswith("250 2.0.0 Ok: queued as Q")
    (got,) = smtp_sink.wait_for(1)
    assert got.mail_from == FROM and got.rcpt_tos == (TO,)
    assert got.message_id == "<reply-1@estelar.example>"
    assert got.message["Subject"] == "Reply 1"


def test_both_transports_satisfy_the_protocol(sender: SmtpSender, tmp_path: Path) -> None:
    """SmtpSender and DirectorySink are interchangeable Transports."""
    assert isinstance(sender, Transport)
    assert isinstance(DirectorySink(tmp_path), Transport)


def test_rcpt_451_is_transient_and_the_connection_stays_usable(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """A 451 on RCPT raises TransientDeliveryError(code=451); the next message still goes out."""
    smtp_sink.fail_next("RCPT", 451)
    with pytest.raises(TransientDeliveryError) as info:
        sender.send(message(1), FROM, [TO])
    assert info.value.code == 451
    assert "451" in str(info.value)
    sender.send(message(2), FROM, [TO])
    assert [m.message_id for m in smtp_sink.messages] == ["<reply-2@estelar.example>"]
    assert smtp_sink.connection_count == 1 and sender.connections_opened == 1


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_550_is_permanent(sender: SmtpSender, smtp_sink: SmtpSink, command: str) -> None:
    """A 5xx at any stage raises PermanentDeliveryError with that code and nothing is accepted."""
    smtp_sink.fail_next(command, 550)
    with pytest.raises(PermanentDeliveryError) as info:
        sender.send(message(1), FROM, [TO])
    assert info.value.code == 550
    assert smtp_sink.messages == []
    sender.send(message(2), FROM, [TO])
    assert len(smtp_sink.messages) == 1


@pytest.mark.parametrize("command", ["MAIL", "DATA"])
def test_4xx_at_mail_and_data_is_transient(
    sender: SmtpSender, smtp_sink: SmtpSink, command: str
) -> None:
    """A 452 on MAIL FROM or after DATA is transient with its code."""
    smtp_sink.fail_next(command, 452)
    with pytest.raises(TransientDeliveryError) as info:
        sender.send(message(1), FROM, [TO])
    assert info.value.code == 452


def test_one_refused_recipient_sends_to_nobody(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """All-or-nothing: if one RCPT gets 451, no copy goes to the others (a retry can't duplicate)."""
    smtp_sink.fail_next("RCPT", 451)
    with pytest.raises(TransientDeliveryError) as info:
        sender.send(message(1), FROM, ["a@example.org", "b@example.org"])
    assert info.value.code == 451
    sender.send(message(2), FROM, ["a@example.org", "b@example.org"])
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("a@example.org", "b@example.org")]


def test_disconnect_after_data_is_transient_451_and_the_sender_reconnects(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """A connection lost before the reply to DATA counts as 451; the next send reconnects."""
    smtp_sink.disconnect_after_data()
    with pytest.raises(TransientDeliveryError) as info:
        sender.send(message(1), FROM, [TO])
    assert info.value.code == 451
    assert len(smtp_sink.unacknowledged) == 1  # the server had it: a retry may duplicate
    sender.send(message(1), FROM, [TO])
    assert len(smtp_sink.messages) == 1
    assert sender.connections_opened == 2 and smtp_sink.connection_count == 2


def test_connection_refused_is_transient() -> None:
    """Nothing listening: TransientDeliveryError, no code."""
    config = OutboundConfig(mode="smtp", host="127.0.0.1", port=free_port(), security="none")
    with pytest.raises(TransientDeliveryError) as info:
        SmtpSender(config, local_hostname="mailbot.test").send(message(), FROM, [TO])
    assert info.value.code is None
    assert "cannot connect" in str(info.value)


def test_one_connection_carries_100_messages(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """The sender reuses its connection: 100 messages, one TCP connection at the sink."""
    for n in range(100):
        assert sender.send(message(n), FROM, [TO]).startswith("250")
    assert len(smtp_sink.wait_for(100)) == 100
    assert smtp_sink.connection_count == 1
    assert smtp_sink.connections_made == 1
    assert sender.connections_opened == 1


def test_idle_connection_closed_by_server_is_replaced_transparently() -> None:
    """When the relay times out an idle connection (421), the next send reconnects and succeeds."""
    with SmtpSink(idle_timeout=0.3) as sink:
        with SmtpSender(outbound(sink), local_hostname="mailbot.test") as sender:
            sender.send(message(1), FROM, [TO])
            time.sleep(0.8)
            sender.send(message(2), FROM, [TO])
            assert sender.connections_opened == 2
        assert len(sink.messages) == 2


def test_concurrent_threads_share_the_connection_safely(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """Calls from several threads (asyncio.to_thread) are serialised onto one connection."""

    async def main() -> None:
        await asyncio.gather(
            *(asyncio.to_thread(sender.send, message(n), FROM, [TO]) for n in range(40))
        )

    asyncio.run(main())
    assert len(smtp_sink.messages) == 40
    assert smtp_sink.connection_count == 1


def test_fail_rate_is_deterministic_and_every_fault_is_transient(smtp_sink: SmtpSink) -> None:
    """5 % of RCPTs get 451 from a seeded plan: each is raised as transient, the rest arrive."""
    smtp_sink.fail_rate("RCPT", 451, 0.05, seed=7)
    transient = 0
    with SmtpSender(outbound(smtp_sink), local_hostname="mailbot.test") as sender:
        for n in range(200):
            try:
                sender.send(message(n), FROM, [TO])
            except TransientDeliveryError as exc:
                assert exc.code == 451
                transient += 1
    assert transient == smtp_sink.faults_injected
    assert 3 <= transient <= 20
    assert len(smtp_sink.messages) == 200 - transient
    # Same seed, same plan.
    with SmtpSink() as again:
        again.fail_rate("RCPT", 451, 0.05, seed=7)
        with SmtpSender(outbound(again), local_hostname="mailbot.test") as sender:
            for n in range(200):
                try:
                    sender.send(message(n), FROM, [TO])
                except TransientDeliveryError:
                    pass
        assert again.faults_injected == transient


def test_bare_lf_and_leading_dots_survive_the_wire(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """Bare LFs become CRLF and a lone '.' line is dot-stuffed, so DATA cannot end early."""
    raw = b"Subject: dots\nMessage-ID: <d@x>\n\nline\n.\nMAIL FROM:<evil@x>\n..two\n"
    sender.send(raw, FROM, [TO])
    (got,) = smtp_sink.wait_for(1)
    assert got.data == raw.replace(b"\n", b"\r\n")


@pytest.mark.parametrize(("raw", "wire"), [
    (b"a\r\nb\r\n\r\nc\r\n", b"a\r\nb\r\n\r\nc\r\n"),  # CRLF throughout: unchanged
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n"),  # one bare LF among CRLFs
    (b"a\r\nb\rc\r\n", b"a\r\nb\r\nc\r\n"),  # a bare CR
    (b"a\r\n\n\r\r\n", b"a\r\n\r\n\r\n\r\n"),  # LF CR: two line ends, as many CRs as LFs
])
def test_every_line_end_goes_out_as_crlf(raw: bytes, wire: bytes) -> None:
    assert to_crlf(raw) == wire


def test_crlf_in_envelope_is_refused_before_connecting(smtp_sink: SmtpSink) -> None:
    """An address carrying CR/LF is a permanent error and never reaches the wire."""
    sender = SmtpSender(outbound(smtp_sink), local_hostname="mailbot.test")
    with pytest.raises(PermanentDeliveryError):
        sender.send(message(), FROM, ["a@example.org\r\nRCPT TO:<b@example.org>"])
    assert sender.connections_opened == 0


def test_auth_logs_in_and_never_logs_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """username + password_env: AUTH succeeds; the password appears in no log record or repr."""
    monkeypatch.setenv("MAILBOT_TEST_SMTP_PASSWORD", "s3cret-pw")
    caplog.set_level(logging.DEBUG)
    with SmtpSink(users={"bot": "s3cret-pw"}) as sink:
        config = outbound(sink, username="bot", password_env="MAILBOT_TEST_SMTP_PASSWORD")
        with SmtpSender(config, local_hostname="mailbot.test") as sender:
            sender.send(message(), FROM, [TO])
            assert "s3cret-pw" not in repr(sender)
        assert sink.logins == ["bot"]
        wrong = SmtpSender(config, password="wrong", local_hostname="mailbot.test")
        with pytest.raises(TransientDeliveryError) as info:
            wrong.send(message(), FROM, [TO])
        assert info.value.code == 535
        assert "wrong" not in str(info.value)
    assert "s3cret-pw" not in caplog.text


def test_username_without_password_is_a_config_error(smtp_sink: SmtpSink) -> None:
    """A username with no secret configured fails at construction, not at the first send."""
    with pytest.raises(ConfigError):
        SmtpSender(outbound(smtp_sink, username="bot"))


# -- TLS --------------------------------------------------------------------------------


def test_starttls_refuses_a_self_signed_server_by_default(tls_cert: TlsCert) -> None:
    """verify_tls defaults to true: an untrusted certificate is a transient error, no mail sent."""
    with SmtpSink(tls_context=tls_cert.server_context(), require_starttls=True) as sink:
        sender = SmtpSender(outbound(sink, security="starttls"), local_hostname="mailbot.test")
        with pytest.raises(TransientDeliveryError, match="not trusted"):
            sender.send(message(), FROM, [TO])
        assert sink.messages == []


def test_starttls_with_the_configured_ca_succeeds(tls_cert: TlsCert) -> None:
    """ca_file makes the self-signed relay trusted; the message travels encrypted."""
    with SmtpSink(tls_context=tls_cert.server_context(), require_starttls=True) as sink:
        config = outbound(sink, security="starttls", ca_file=str(tls_cert.cert))
        with SmtpSender(config, local_hostname="mailbot.test") as sender:
            assert sender.send(message(), FROM, [TO]).startswith("250")
        assert len(sink.messages) == 1


def test_implicit_tls_with_the_configured_ca_succeeds(tls_cert: TlsCert) -> None:
    """security = "tls" (SMTPS) connects with TLS from the first byte."""
    with SmtpSink(tls_context=tls_cert.server_context(), implicit_tls=True) as sink:
        config = outbound(sink, security="tls", ca_file=str(tls_cert.cert))
        with SmtpSender(config, local_hostname="mailbot.test") as sender:
            sender.send(message(), FROM, [TO])
        assert len(sink.messages) == 1


def test_verify_tls_false_connects_and_warns_once(
    tls_cert: TlsCert, caplog: pytest.LogCaptureFixture
) -> None:
    """verify_tls = false must be explicit; it works and logs one warning per relay."""
    caplog.set_level(logging.WARNING, logger="mailbot.replies.smtp")
    with SmtpSink(tls_context=tls_cert.server_context()) as sink:
        config = outbound(sink, security="starttls", verify_tls=False)
        for _ in range(2):
            with SmtpSender(config, local_hostname="mailbot.test") as sender:
                sender.send(message(), FROM, [TO])
        assert len(sink.messages) == 2
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 1


def test_starttls_never_falls_back_to_plaintext(smtp_sink: SmtpSink) -> None:
    """security = "starttls" against a server without STARTTLS: refused, nothing sent."""
    sender = SmtpSender(outbound(smtp_sink, security="starttls"), local_hostname="mailbot.test")
    with pytest.raises(TransientDeliveryError, match="STARTTLS"):
        sender.send(message(), FROM, [TO])
    assert smtp_sink.messages == []


# -- DirectorySink ----------------------------------------------------------------------


def test_directory_sink_writes_one_complete_eml_per_message(tmp_path: Path) -> None:
    """Each send leaves exactly one .eml (envelope headers + message), no temporary files."""
    sink = DirectorySink(tmp_path / "sent")
    replies = [sink.send(message(n), FROM, [TO, "cc@example.org"]) for n in range(3)]
    files = sorted((tmp_path / "sent").iterdir())
    assert [f.name for f in files] == [r.removeprefix("250 stored as ") for r in replies]
    assert all(f.suffix == ".eml" and "reply-" in f.name for f in files)
    first = files[0].read_bytes()
    assert first.startswith(
        b"X-Envelope-From: <bounces@estelar.example>\r\n"
        b"X-Envelope-To: <customer@example.org>, <cc@example.org>\r\n"
    )
    assert first.endswith(message(0))
    assert oct(files[0].stat().st_mode & 0o777) == "0o640"


def test_directory_sink_is_safe_from_many_threads(tmp_path: Path) -> None:
    """Concurrent sends of the same Message-ID never overwrite each other."""
    sink = DirectorySink(tmp_path)
    threads = [
        threading.Thread(target=lambda: [sink.send(message(1), FROM, [TO]) for _ in range(25)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = os.listdir(tmp_path)
    assert len(names) == 100 and all(n.endswith(".eml") for n in names)


def test_directory_sink_write_failure_is_transient(tmp_path: Path) -> None:
    """An unwritable directory raises TransientDeliveryError (the outbox retries)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransientDeliveryError):
        DirectorySink(blocker / "sent").send(message(), FROM, [TO])


@pytest.mark.parametrize(
    ("message_id", "stem"),
    [
        ("<abc.123@estelar.example>", "abc.123@estelar.example"),
        ("<../../etc/passwd@x>", "etc_passwd@x"),
        ("<a b/c\\d@x>", "a_b_c_d@x"),
        (None, ""),
    ],
)
def test_file_stem_is_safe(message_id: str | None, stem: str) -> None:
    """Message-IDs become file names without path separators or spaces."""
    assert file_stem(message_id) == stem


# -- throughput -------------------------------------------------------------------------


def test_many_mails_reuse_one_connection(smtp_sink: SmtpSink) -> None:
    """1,000 mails (4 KB each) go over one reused connection, each arriving once, in order.
    The rate is a figure for `bench/smtp_throughput.py`, not an assertion here."""
    count = 1000
    payloads = [message(n, size=4096) for n in range(count)]
    with SmtpSender(outbound(smtp_sink), local_hostname="mailbot.test") as sender:
        for raw in payloads:
            sender.send(raw, FROM, [TO])
    smtp_sink.wait_for(count)
    assert smtp_sink.connection_count == 1
    ids = [m.message_id for m in smtp_sink.messages]
    expected = [f"<reply-{n}@estelar.example>" for n in range(count)]
    assert ids == expected
