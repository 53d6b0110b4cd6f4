"""Passwords never leak: a daemon logs in to IMAP and to an authenticating SMTP relay with
passwords from environment variables, takes a mail in, answers it, and logs at DEBUG
(including imapclient's protocol log); neither password appears in the captured logs, the
process's stderr, the store's files or the mail that went out."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbot.config import Config, ImapMailboxConfig
from tests.e2e.helpers import daemon_config, import_licenses, request_mail, running, unique_sender
from tests.fixtures.servers import Dovecot, SmtpSink, running_dovecot

IMAP_PASSWORD = "imap-Pw-5b1e7c0d9a"
SMTP_PASSWORD = "smtp-Pw-8d2f4a6c3e"


@pytest.fixture
def secret_dovecot() -> Iterator[Dovecot]:
    with running_dovecot(password=IMAP_PASSWORD) as server:
        yield server


def leaks(data: bytes) -> list[str]:
    found = []
    for secret in (IMAP_PASSWORD, SMTP_PASSWORD):
        for form in (secret.encode(), secret.encode("utf-16-le")):
            if form in data:
                found.append(secret)
    return found


async def test_passwords_appear_nowhere(base_config: Config, secret_dovecot: Dovecot,
                                        tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    sink = SmtpSink(users={"mailbot": SMTP_PASSWORD}).start()
    user = secret_dovecot.new_user()
    os.environ["MB_SECRET_IMAP_PW"] = IMAP_PASSWORD
    os.environ["MB_SECRET_SMTP_PW"] = SMTP_PASSWORD
    try:
        box = ImapMailboxConfig(name="support", host="127.0.0.1", port=secret_dovecot.imap_port,
                                security="none", username=user, password_env="MB_SECRET_IMAP_PW",
                                poll_seconds=0.5, timeout_seconds=10)
        cfg = daemon_config(base_config, sink.port, imap=(box,))
        cfg = cfg.model_copy(update={"outbound": cfg.outbound.model_copy(update={
            "username": "mailbot", "password_env": "MB_SECRET_SMTP_PW"})})
        import_licenses(cfg)
        await asyncio.to_thread(secret_dovecot.append, user, request_mail(sender=unique_sender()))
        async with running(cfg):
            [ack] = await asyncio.to_thread(sink.wait_for, 1, 20)
        assert sink.logins == ["mailbot"]  # the relay really checked the password
    finally:
        sink.stop()
        del os.environ["MB_SECRET_IMAP_PW"], os.environ["MB_SECRET_SMTP_PW"]
    out, err = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert any(r.name.startswith("imapclient") for r in caplog.records)  # protocol log was on
    store_files = [p for p in tmp_path.iterdir() if p.name.startswith("mailbot.db")]
    assert store_files
    checked = {
        "log records": records.encode(),
        "stdout+stderr": (out + err).encode(),
        "sent mail": ack.data,
        **{p.name: p.read_bytes() for p in store_files},
    }
    print(f"\nsecrets: searched {len(caplog.records)} log records, "
          f"{sum(len(v) for v in checked.values())} bytes in {sorted(checked)}")
    assert {name: leaks(data) for name, data in checked.items() if leaks(data)} == {}
