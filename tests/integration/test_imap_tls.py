"""IMAP over TLS against a real Dovecot: certificates are verified by default (a self-signed
server is refused, no login is attempted), and accepted when its CA is configured."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from mailbot.migrations import open_store
from mailbot.config import Config, ImapMailboxConfig
from mailbot.ingest.imap import ImapPoller
from mailbot.ingest.intake import Intake
from tests.e2e.helpers import request_mail


def run_poller(cfg: Config, box: ImapMailboxConfig, password: str, seconds: float) -> int:
    """Run one poller thread for a while; returns how many messages the store then holds."""
    store = open_store(cfg)
    stop = threading.Event()
    poller = ImapPoller(box, Intake(store), store, stop, password=password)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end and not store.count_inbound():
        time.sleep(0.1)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    n = sum(store.count_inbound().values())
    store.close()
    return n


def box_for(dovecot_tls, user: str, **extra: object) -> ImapMailboxConfig:
    return ImapMailboxConfig(name="tls", host="127.0.0.1", port=dovecot_tls.imaps_port,
                             security="tls", username=user, timeout_seconds=10, **extra)


def test_self_signed_server_refused_by_default(
    base_config: Config, dovecot_tls, caplog: pytest.LogCaptureFixture
) -> None:
    """Default settings verify the certificate: nothing is taken in, the failure is logged
    as a certificate problem, and the password never appears in the log."""
    user = dovecot_tls.new_user()
    dovecot_tls.append(user, request_mail())
    caplog.set_level(logging.INFO)
    assert run_poller(base_config, box_for(dovecot_tls, user), dovecot_tls.password, 3) == 0
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert dovecot_tls.password not in caplog.text


def test_configured_ca_is_trusted(base_config: Config, dovecot_tls, tls_cert) -> None:
    """With the server's CA in `ca_file`, the mailbox is read over TLS."""
    user = dovecot_tls.new_user()
    dovecot_tls.append(user, request_mail())
    box = box_for(dovecot_tls, user, ca_file=str(Path(tls_cert.cert)))
    assert run_poller(base_config, box, dovecot_tls.password, 15) == 1
