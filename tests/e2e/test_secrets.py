"""Passwords never leak: a daemon logs in to IMAP and to an authenticating SMTP relay with
passwords from environment variables, takes a mail in, answers it, and logs at DEBUG
(including imapclient's protocol log); neither password appears in the captured logs, the
process's stderr, the store's files or the mail that went out. The same holds for OAuth2
access tokens, refresh tokens and client secrets (also base64 and in their SASL strings)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbot.config import Config, ImapMailboxConfig, OAuth2Config
from mailbot.oauth import sasl_payload
from tests.e2e.helpers import daemon_config, import_licenses, request_mail, running, unique_sender
from tests.fixtures.servers import (
    Dovecot,
    SmtpSink,
    TlsCert,
    TokenAuthority,
    running_dovecot,
    running_oauth_dovecot,
)

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


CLIENT_SECRET = "client-Secret-77e1c9a4b2"
SMTP_USER = "mailbot@estelar.example"


def oauth_forms(secrets: list[str], payloads: list[str]) -> dict[str, bytes]:
    """Every secret as such and base64-encoded, and each SASL payload as sent (base64)."""
    forms: dict[str, bytes] = {}
    for secret in secrets:
        forms[secret] = secret.encode()
        forms[f"base64({secret[:8]}…)"] = base64.b64encode(secret.encode())
    for payload in payloads:
        forms[f"sasl({payload[:12]!r}…)"] = base64.b64encode(payload.encode())
    return forms


async def test_oauth2_tokens_appear_nowhere(base_config: Config, tmp_path: Path,
                                            token_authority: TokenAuthority, tls_cert: TlsCert,
                                            caplog: pytest.LogCaptureFixture,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    """A daemon reads Dovecot with XOAUTH2 (msal at the loopback authority) and sends through
    a relay with XOAUTH2 (a Google refresh token), every logger at DEBUG: no access token,
    refresh token or client secret appears in a log record, the output, the store or the
    mail, neither raw nor base64 nor as the SASL string that carried it."""
    caplog.set_level(logging.DEBUG)
    refresh_token = token_authority.add_refresh_token(SMTP_USER)
    os.environ["MB_SECRET_CLIENT"] = CLIENT_SECRET
    os.environ["MB_SECRET_RT"] = refresh_token
    sink = SmtpSink(oauth=token_authority).start()
    try:
        with running_oauth_dovecot(token_authority) as dovecot:
            user = dovecot.new_user()
            token_authority.add_client("app-1", CLIENT_SECRET, user)
            box = ImapMailboxConfig(
                name="support", host="127.0.0.1", port=dovecot.imap_port, security="none",
                username=user, poll_seconds=0.5, timeout_seconds=10, auth="oauth2",
                oauth2=OAuth2Config(provider="microsoft", tenant_id="contoso",
                                    client_id="app-1", client_secret_env="MB_SECRET_CLIENT",
                                    authority=f"{token_authority.https_url}/contoso",
                                    ca_file=str(tls_cert.cert)))
            cfg = daemon_config(base_config, sink.port, imap=(box,))
            cfg = cfg.model_copy(update={"outbound": cfg.outbound.model_copy(update={
                "username": SMTP_USER, "auth": "oauth2", "oauth2": OAuth2Config(
                    provider="google", refresh_token_env="MB_SECRET_RT", client_id="gid",
                    client_secret_env="MB_SECRET_CLIENT",
                    token_url=f"{token_authority.url}/token")})})
            import_licenses(cfg)
            await asyncio.to_thread(dovecot.append, user, request_mail(sender=unique_sender()))
            async with running(cfg):
                [ack] = await asyncio.to_thread(sink.wait_for, 1, 30)
            assert "method=XOAUTH2" in dovecot.log.read_text()
            imap_port = dovecot.imap_port
    finally:
        sink.stop()
        del os.environ["MB_SECRET_CLIENT"], os.environ["MB_SECRET_RT"]
    assert sink.logins == [SMTP_USER]  # the relay really checked a token
    tokens = {t.user: t.value for t in token_authority.tokens}
    assert set(tokens) == {user, SMTP_USER}
    payloads = [sasl_payload("xoauth2", user, tokens[user], "127.0.0.1", imap_port),
                sasl_payload("xoauth2", SMTP_USER, tokens[SMTP_USER], "127.0.0.1", sink.port)]
    forms = oauth_forms([*tokens.values(), refresh_token, CLIENT_SECRET], payloads)

    out, err = capfd.readouterr()
    assert any(r.name.startswith("imapclient") for r in caplog.records)  # protocol log was on
    assert any(r.name.startswith("msal") for r in caplog.records)  # and the token library's
    records = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}"
                        for r in caplog.records)
    store_files = [p for p in tmp_path.iterdir() if p.name.startswith("mailbot.db")]
    checked = {
        "log records": records.encode(),
        "stdout+stderr": (out + err).encode(),
        "sent mail": ack.data,
        **{p.name: p.read_bytes() for p in store_files},
    }
    print(f"\noauth2 secrets: {len(forms)} forms searched in {len(caplog.records)} log records, "
          f"{sum(len(v) for v in checked.values())} bytes in {sorted(checked)}")
    found = {name: [f for f, form in forms.items() if form in data]
             for name, data in checked.items()}
    assert {name: hits for name, hits in found.items() if hits} == {}
