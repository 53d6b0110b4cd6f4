"""The test peers themselves: a private Dovecot (IMAP + LMTP) and the aiosmtpd sink's faults."""

from __future__ import annotations

import smtplib
import threading

import pytest
from imapclient import IMAPClient

from tests.fixtures.servers import Dovecot, SmtpSink

RAW = (
    b"From: customer@example.org\r\n"
    b"To: podpora@estelar.example\r\n"
    b"Subject: license question\r\n"
    b"Message-ID: <%s@example.org>\r\n"
    b"\r\n"
    b"body\r\n"
)


def raw(tag: str) -> bytes:
    return RAW % tag.encode()



@pytest.mark.dovecot
def test_fresh_user_logs_in_to_an_empty_inbox_and_append_returns_the_uid(dovecot: Dovecot) -> None:
    """Any new user logs in with 'secret', starts empty, and APPEND yields UIDs 1, 2."""
    user = dovecot.new_user()
    client = dovecot.imap(user)
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()
    assert dovecot.append(user, raw("a1")) == 1
    assert dovecot.append(user, raw("a2"), folder="Archive") == 1
    assert dovecot.append(user, raw("a3")) == 2
    assert dovecot.status(user)["messages"] == 2


@pytest.mark.dovecot
def test_wrong_password_is_refused(dovecot: Dovecot) -> None:
    """The static passdb accepts only the shared test password."""
    client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=5)
    try:
        with pytest.raises(Exception, match="(?i)auth"):
            client.login(dovecot.new_user(), "wrong")
    finally:
        client.shutdown()


@pytest.mark.dovecot
def test_idle_sees_exists_after_another_connections_append(dovecot: Dovecot) -> None:
    """imapclient in IDLE gets EXISTS when another connection APPENDs."""
    user = dovecot.new_user()
    client = dovecot.imap(user)
    try:
        client.select_folder("INBOX")
        client.idle()
        threading.Timer(0.2, dovecot.append, (user, raw("idle"))).start()
        responses = client.idle_check(timeout=5)
        client.idle_done()
        assert (1, b"EXISTS") in responses
    finally:
        client.logout()


@pytest.mark.dovecot
def test_lmtp_delivery_lands_in_the_inbox(dovecot: Dovecot) -> None:
    """A message delivered over LMTP can be fetched (BODY.PEEK keeps it unseen)."""
    user = dovecot.new_user()
    dovecot.deliver(user, raw("lmtp1"))
    with smtplib.LMTP(dovecot.host, dovecot.lmtp_port) as lmtp:
        refused = lmtp.sendmail("b@example.org", [user], raw("lmtp2"))
    assert refused == {}
    client = dovecot.imap(user)
    try:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS"])
    finally:
        client.logout()
    bodies = [data[b"BODY[]"] for _, data in sorted(fetched.items())]
    assert [b"<lmtp1@example.org>" in bodies[0], b"<lmtp2@example.org>" in bodies[1]] == [True, True]
    assert all(b"\\Seen" not in data[b"FLAGS"] for data in fetched.values())


@pytest.mark.dovecot
def test_doveadm_changes_uidvalidity(dovecot: Dovecot) -> None:
    """doveadm runs against this instance (used by the UIDVALIDITY tests, R4)."""
    user = dovecot.new_user()
    dovecot.append(user, raw("uv"))
    before = dovecot.status(user)["uidvalidity"]
    dovecot.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(before + 1), "INBOX")
    assert dovecot.status(user)["uidvalidity"] == before + 1


@pytest.mark.dovecot
def test_restart_keeps_ports_and_mail_and_drops_clients(dovecot: Dovecot) -> None:
    """After restart() the same ports answer again, with a new master, and the mail is kept.

    An imap child that was serving a client may outlive the old master for a while (its BYE
    can come ~10 s later, reliability.md), so nothing is asserted about old connections.
    """
    user = dovecot.new_user()
    dovecot.append(user, raw("r1"))
    ports = (dovecot.imap_port, dovecot.lmtp_port)
    dovecot.restart()
    assert dovecot.running
    assert (dovecot.imap_port, dovecot.lmtp_port) == ports
    dovecot.deliver(user, raw("r2"))
    client = dovecot.imap(user)
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 2
    finally:
        client.logout()


# -- the SMTP sink ----------------------------------------------------------------------


def test_sink_fail_next_applies_to_the_named_command_only(smtp_sink: SmtpSink) -> None:
    """fail_next('RCPT', 451, times=2) refuses two RCPTs, then accepts again."""
    smtp_sink.fail_next("RCPT", 451, times=2)
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port) as client:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
                client.sendmail("a@example.org", ["b@example.org"], raw("x"))
            assert info.value.recipients["b@example.org"][0] == 451
            client.rset()
        client.sendmail("a@example.org", ["b@example.org"], raw("ok"))
    (got,) = smtp_sink.wait_for(1)
    assert got.message_id == "<ok@example.org>" and got.rcpt_tos == ("b@example.org",)


def test_sink_disconnect_after_data_drops_without_reply(smtp_sink: SmtpSink) -> None:
    """The message is received but the client gets no reply, only a closed connection."""
    smtp_sink.disconnect_after_data()
    client = smtplib.SMTP(smtp_sink.host, smtp_sink.port)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@example.org", ["b@example.org"], raw("lost"))
    assert smtp_sink.messages == []
    assert [m.message_id for m in smtp_sink.unacknowledged] == ["<lost@example.org>"]


async def test_sink_works_from_async_tests(smtp_sink: SmtpSink) -> None:
    """The sink runs in its own thread, so an async test can await deliveries without blocking."""
    import asyncio

    def deliver() -> None:
        with smtplib.SMTP(smtp_sink.host, smtp_sink.port) as client:
            client.sendmail("a@example.org", ["b@example.org"], raw("async"))

    waiter = asyncio.create_task(smtp_sink.wait_for_async(1, timeout=5))
    await asyncio.to_thread(deliver)
    (got,) = await waiter
    assert got.message_id == "<async@example.org>"


def test_peak_rss_sums_pss_with_shared_pages_counted_once() -> None:
    """PeakRss(pss=True) samples each process's PSS and the highest sum of them: a forked
    pair shares its pages, so the sum of PSS stays below the sum of the RSS peaks."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.fixtures.bombs import PeakRss

    code = ("import os, time\nblock = bytearray(40 * 1024 * 1024)\n"
            "for i in range(0, len(block), 4096): block[i] = 1\n"
            "if os.fork():\n    print('ready', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(0.2)
        rss = PeakRss(proc.pid, pss=True)
        rss.sample()
        assert len(rss.pss_peaks) == 2, rss.pss_peaks
        assert all(rss.pss_peaks[p] <= rss.peaks[p] for p in rss.pss_peaks)
        assert 40 < rss.pss_sum_peak < sum(rss.peaks.values()) - 30
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked one too
        proc.wait()
