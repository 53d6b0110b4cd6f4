"""OAuth2 for IMAP and SMTP (issue 17) against real peers on loopback: the token providers
(msal and google-auth pointed at the test's `TokenAuthority`, a token command), Dovecot with
its oauth2 passdb asking that authority, and aiosmtpd checking AUTH XOAUTH2/OAUTHBEARER.

Every wait is bounded (`wait_until`); nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailbot.migrations import open_store
from mailbot.config import Config, ImapMailboxConfig, OAuth2Config, OutboundConfig
from mailbot.errors import TransientDeliveryError
from mailbot.ingest.imap import ImapPoller
from mailbot.ingest.intake import Intake
from mailbot.oauth import (
    AccessToken,
    TokenError,
    TokenSource,
    build_token_source,
)
from mailbot.replies.smtp import SmtpSender
from mailbot.store import Store
from tests.e2e.helpers import request_mail, unique_sender
from tests.fixtures.servers import OAuthDovecot, SmtpSink, TlsCert, TokenAuthority

CLIENT_ID = "8c1f0d9e-0000-4000-8000-00000000c0de"
CLIENT_SECRET = "client-Secret-3f9a7b1e55"
SECRET_ENV = "MB_TEST_OAUTH_CLIENT_SECRET"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def microsoft(authority: TokenAuthority, tls: TlsCert, **extra: object) -> OAuth2Config:
    return OAuth2Config(provider="microsoft", tenant_id="contoso", client_id=CLIENT_ID,
                        client_secret_env=SECRET_ENV, ca_file=str(tls.cert),
                        authority=f"{authority.https_url}/contoso", **extra)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)


# ---------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------


class CountingProvider:
    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        self.lifetime, self.clock = lifetime, clock
        self.calls: list[bool] = []

    def fetch(self, *, fresh: bool) -> AccessToken:
        self.calls.append(fresh)
        now = self.clock()
        return AccessToken(f"tok{len(self.calls)}", now + self.lifetime, now)


def test_cached_token_is_reused_until_the_refresh_margin_then_renewed() -> None:
    now = [1000.0]
    provider = CountingProvider(3600, lambda: now[0])
    source = TokenSource(provider, "t", clock=lambda: now[0])
    first = source.token()
    now[0] += 3600 - 301  # five minutes and a second before expiry: still used
    assert source.token() is first
    now[0] += 2  # inside the margin: a new one, before the old one expires
    assert source.token().value == "tok2"
    assert provider.calls == [False, False]


def test_short_lived_token_is_renewed_at_half_its_lifetime() -> None:
    now = [0.0]
    provider = CountingProvider(60, lambda: now[0])
    source = TokenSource(provider, "t", clock=lambda: now[0])
    first = source.token()
    now[0] = 29.0
    assert source.token() is first and not source.due(first)
    now[0] = 30.0
    assert source.due(first) and source.token().value == "tok2"


def test_refused_token_is_replaced_once_for_all_threads() -> None:
    """After a refusal each thread asks for a fresh token; only the first one fetches."""
    provider = CountingProvider(3600, time.time)
    source = TokenSource(provider, "t")
    refused = source.token()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        source.refresh_after_refusal(refused).value)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["tok2"] * 8
    assert provider.calls == [False, True]  # the fresh fetch bypasses library caches


def test_token_value_is_not_in_repr() -> None:
    token = AccessToken("at-very-secret", 2.0, 1.0)
    assert "at-very-secret" not in repr(token) and "at-very-secret" not in str(token)


# ---------------------------------------------------------------------------------------
# Providers against the loopback token endpoint
# ---------------------------------------------------------------------------------------


def test_microsoft_client_credentials_via_msal(token_authority: TokenAuthority,
                                               tls_cert: TlsCert,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenant discovery and the token at the configured authority, its certificate checked
    against ca_file even where $REQUESTS_CA_BUNDLE names another bundle (which wins over a
    session-wide verify in requests)."""
    import requests.certs

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, "podpora@contoso.example")
    source = build_token_source(microsoft(token_authority, tls_cert), "podpora@contoso.example",
                                "t")
    token = source.token()
    assert token_authority.check(token.value) == "podpora@contoso.example"
    assert 3000 < token.expires_at - time.time() <= 3600
    fresh = source.refresh_after_refusal(token)  # not msal's cached copy of the same token
    assert fresh.value != token.value
    assert [t.grant for t in token_authority.tokens] == ["client_credentials"] * 2


def test_microsoft_wrong_client_secret_is_a_token_error_without_the_secret(
    token_authority: TokenAuthority, tls_cert: TlsCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, "podpora@contoso.example")
    monkeypatch.setenv(SECRET_ENV, "wrong-Secret-0000")
    source = build_token_source(microsoft(token_authority, tls_cert), "p@contoso.example", "t")
    with pytest.raises(TokenError, match="invalid_grant") as info:
        source.token()
    assert "wrong-Secret-0000" not in str(info.value)


def test_google_service_account_with_domain_wide_delegation(
    token_authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signed JWT names the mailbox as subject and the mail scope; the authority checks
    the signature with the account's public key."""
    monkeypatch.setenv("MB_TEST_SA_KEY", json.dumps(token_authority.service_account_key()))
    cfg = OAuth2Config(provider="google", service_account_key_env="MB_TEST_SA_KEY")
    token = build_token_source(cfg, "podpora@vendor.example", "t").token()
    assert token_authority.check(token.value) == "podpora@vendor.example"
    assert token_authority.tokens[-1].grant.endswith("jwt-bearer")


def test_google_stored_refresh_token(token_authority: TokenAuthority,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_TEST_RT", token_authority.add_refresh_token("podpora@vendor.example"))
    cfg = OAuth2Config(provider="google", refresh_token_env="MB_TEST_RT", client_id="gid",
                       client_secret_env=SECRET_ENV, token_url=f"{token_authority.url}/token")
    token = build_token_source(cfg, "podpora@vendor.example", "t").token()
    assert token_authority.check(token.value) == "podpora@vendor.example"


def test_google_unknown_refresh_token_is_a_token_error(token_authority: TokenAuthority,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_TEST_RT", "rt-revoked")
    cfg = OAuth2Config(provider="google", refresh_token_env="MB_TEST_RT", client_id="gid",
                       client_secret_env=SECRET_ENV, token_url=f"{token_authority.url}/token")
    with pytest.raises(TokenError, match="invalid_grant"):
        build_token_source(cfg, "p@vendor.example", "t").token()


# ---------------------------------------------------------------------------------------
# The token command: bounded in time and output
# ---------------------------------------------------------------------------------------


def command(script: str, **extra: object) -> OAuth2Config:
    return OAuth2Config(provider="command", command=(sys.executable, "-c", script),
                        **extra)  # type: ignore[arg-type]


def test_command_prints_a_bare_token_or_json() -> None:
    bare = build_token_source(command("print('at-from-command')"), "u", "t").token()
    assert bare.value == "at-from-command"
    assert bare.expires_at - bare.issued_at == 300  # command_token_seconds
    js = build_token_source(command(
        "import json; print(json.dumps({'access_token': 'at-json', 'expires_in': 1234}))"),
        "u", "t").token()
    assert (js.value, js.expires_at - js.issued_at) == ("at-json", 1234)


def test_command_that_hangs_is_killed_at_its_timeout() -> None:
    source = build_token_source(
        command("import time; time.sleep(60)", command_timeout_seconds=0.5), "u", "t")
    with pytest.raises(TokenError, match="no answer within 0.5 s"):
        source.token()


def test_command_that_floods_stdout_is_cut_off() -> None:
    source = build_token_source(command(
        "import sys\nwhile True: sys.stdout.write('x' * 65536)", command_timeout_seconds=20),
        "u", "t")
    with pytest.raises(TokenError, match="printed more than 65536 bytes"):
        source.token()


def test_command_failure_and_garbage_are_token_errors() -> None:
    with pytest.raises(TokenError, match="exited with 3: no session"):
        build_token_source(command("import sys; sys.stderr.write('no session'); sys.exit(3)"),
                           "u", "t").token()
    with pytest.raises(TokenError, match="printed no token"):
        build_token_source(command("print('two words')"), "u", "t").token()
    missing = OAuth2Config(provider="command", command=("/nonexistent/print-token",))
    with pytest.raises(TokenError, match="cannot start"):
        build_token_source(missing, "u", "t").token()


# ---------------------------------------------------------------------------------------
# IMAP against Dovecot's oauth2 passdb
# ---------------------------------------------------------------------------------------


class Poller:
    """An ImapPoller thread on its own store; stopped and joined on exit."""

    def __init__(self, cfg: Config, box: ImapMailboxConfig) -> None:
        self.store: Store = open_store(cfg)
        self.stop = threading.Event()
        self.poller = ImapPoller(box, Intake(self.store), self.store, self.stop, password=None)
        self.thread = threading.Thread(target=self.poller.run, daemon=True)

    def stored(self) -> int:
        return sum(self.store.count_inbound().values())

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()
        self.store.close()


def oauth_box(dovecot: OAuthDovecot, user: str, oauth2: OAuth2Config,
              **extra: object) -> ImapMailboxConfig:
    return ImapMailboxConfig(name="m365", host="127.0.0.1", port=dovecot.imap_port,
                             security="none", username=user, auth="oauth2", oauth2=oauth2,
                             poll_seconds=0.5, timeout_seconds=10, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_imap_logs_in_with_a_token_from_msal(
    base_config: Config, token_authority: TokenAuthority, oauth_dovecot: OAuthDovecot,
    tls_cert: TlsCert, mechanism: str
) -> None:
    user = oauth_dovecot.new_user()
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, user)
    oauth_dovecot.append(user, request_mail(sender=unique_sender()))
    box = oauth_box(oauth_dovecot, user, microsoft(token_authority, tls_cert,
                                                   mechanism=mechanism))
    with Poller(base_config, box) as p:
        wait_until(lambda: p.stored() == 1, 20, "the message taken in")
    assert [active for _, active in token_authority.introspections] == [True]
    assert f"method={mechanism.upper()}" in oauth_dovecot.log.read_text()


def test_token_expiring_mid_idle_logs_in_again_and_mail_keeps_coming(
    base_config: Config, token_authority: TokenAuthority, oauth_dovecot: OAuthDovecot,
    tls_cert: TlsCert, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens live 6 s; the introspection endpoint refuses one after that. The poller, in
    IDLE, ends the session before its token expires and logs in with a new one; mail
    delivered after the first token died is still taken in."""
    caplog.set_level(logging.INFO, logger="mailbot")
    token_authority.lifetime = 6
    user = oauth_dovecot.new_user()
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, user)
    box = oauth_box(oauth_dovecot, user, microsoft(token_authority, tls_cert))
    with Poller(base_config, box) as p:
        oauth_dovecot.deliver(user, request_mail(sender=unique_sender()))
        wait_until(lambda: p.stored() == 1, 20, "first message")
        first = token_authority.tokens[0]
        wait_until(lambda: time.time() > first.expires_at + 0.5, 10, "first token expired")
        assert token_authority.check(first.value) is None  # the server would refuse it now
        oauth_dovecot.deliver(user, request_mail(sender=unique_sender()))
        wait_until(lambda: p.stored() == 2, 20, "message after the first token expired")
    assert len(token_authority.tokens) >= 2
    assert "access token about to expire; logging in again" in caplog.text
    logins = [ok for tok, ok in token_authority.introspections if tok != first.value or ok]
    assert logins and all(logins)  # every login used a live token: none was refused


def test_session_dropped_and_cached_token_refused_gets_one_fresh_token(
    base_config: Config, token_authority: TokenAuthority, oauth_dovecot: OAuthDovecot,
    tls_cert: TlsCert, caplog: pytest.LogCaptureFixture
) -> None:
    """The server revokes the token and drops the session (as Exchange does at expiry): the
    poller reconnects, its cached token is refused, it fetches one fresh token and goes on."""
    caplog.set_level(logging.INFO, logger="mailbot")
    user = oauth_dovecot.new_user()
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, user)
    box = oauth_box(oauth_dovecot, user, microsoft(token_authority, tls_cert))
    with Poller(base_config, box) as p:
        oauth_dovecot.deliver(user, request_mail(sender=unique_sender()))
        wait_until(lambda: p.stored() == 1, 20, "first message")
        wait_until(lambda: "IDLE yes" in caplog.text, 10, "in IDLE")
        token_authority.revoke_all()
        oauth_dovecot.doveadm("kick", user)
        wait_until(lambda: len(token_authority.tokens) == 2 and any(
            not ok for _, ok in token_authority.introspections), 20, "refused, then fresh")
        oauth_dovecot.deliver(user, request_mail(sender=unique_sender()))
        wait_until(lambda: p.stored() == 2, 20, "message after the new login")
    first, second = token_authority.tokens
    assert token_authority.introspections == [(first.value, True), (first.value, False),
                                              (second.value, True)]
    assert "access token refused; fetching a fresh one" in caplog.text
    assert "login refused" not in caplog.text  # no 5-minute pause


def test_token_endpoint_down_is_retried_with_backoff(
    base_config: Config, token_authority: TokenAuthority, oauth_dovecot: OAuthDovecot,
    tls_cert: TlsCert, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused client secret is logged as such (without the secret) and retried; once the
    authority accepts the app, mail comes in."""
    caplog.set_level(logging.WARNING, logger="mailbot")
    user = oauth_dovecot.new_user()
    oauth_dovecot.deliver(user, request_mail(sender=unique_sender()))
    box = oauth_box(oauth_dovecot, user, microsoft(token_authority, tls_cert))
    with Poller(base_config, box) as p:
        wait_until(lambda: "invalid_grant" in caplog.text, 10, "refusal logged")
        token_authority.add_client(CLIENT_ID, CLIENT_SECRET, user)
        wait_until(lambda: p.stored() == 1, 30, "message after the app was registered")
    assert CLIENT_SECRET not in caplog.text


# ---------------------------------------------------------------------------------------
# SMTP submission with XOAUTH2 / OAUTHBEARER
# ---------------------------------------------------------------------------------------


@pytest.fixture
def oauth_sink(token_authority: TokenAuthority) -> Iterator[SmtpSink]:
    sink = SmtpSink(oauth=token_authority).start()
    try:
        yield sink
    finally:
        sink.stop()


def outbound(sink: SmtpSink, oauth2: OAuth2Config, user: str = "podpora@contoso.example"
             ) -> OutboundConfig:
    return OutboundConfig(mode="smtp", host="127.0.0.1", port=sink.port, security="none",
                          username=user, auth="oauth2", oauth2=oauth2, timeout_seconds=10)


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_smtp_authenticates_with_a_token(token_authority: TokenAuthority, oauth_sink: SmtpSink,
                                         tls_cert: TlsCert, mechanism: str) -> None:
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, "podpora@contoso.example")
    cfg = outbound(oauth_sink, microsoft(token_authority, tls_cert, mechanism=mechanism))
    with SmtpSender(cfg, local_hostname="mailbot.test") as sender:
        reply = sender.send(request_mail(), "podpora@contoso.example", ["a@example.org"])
    assert reply.startswith("250")
    assert oauth_sink.logins == ["podpora@contoso.example"]


def test_smtp_refused_token_is_replaced_once(token_authority: TokenAuthority,
                                             oauth_sink: SmtpSink, tls_cert: TlsCert) -> None:
    """A revoked cached token: the relay's error challenge is answered, the AUTH retried with
    one fresh token on the same connection, and the message goes out."""
    token_authority.add_client(CLIENT_ID, CLIENT_SECRET, "podpora@contoso.example")
    cfg = outbound(oauth_sink, microsoft(token_authority, tls_cert))
    with SmtpSender(cfg, local_hostname="mailbot.test") as sender:
        sender.send(request_mail(), "podpora@contoso.example", ["a@example.org"])
        sender.close()
        token_authority.revoke_all()
        sender.send(request_mail(), "podpora@contoso.example", ["b@example.org"])
        assert sender.connections_opened == 2
    assert len(oauth_sink.messages) == 2
    assert [ok for _, ok in token_authority.introspections] == [True, False, True]


def test_smtp_token_refused_twice_is_transient(token_authority: TokenAuthority,
                                               oauth_sink: SmtpSink) -> None:
    """Tokens the relay never accepts: a transient error naming the mailbox (retried by the
    outbox), not a dead message."""
    cfg = outbound(oauth_sink, command("print('at-not-issued-by-the-authority')"))
    with SmtpSender(cfg, local_hostname="mailbot.test") as sender:
        with pytest.raises(TransientDeliveryError, match="AUTH XOAUTH2 as 'podpora@contoso"):
            sender.send(request_mail(), "podpora@contoso.example", ["a@example.org"])
    assert oauth_sink.messages == []
    assert len(token_authority.introspections) == 2  # the cached token, then one fresh one
