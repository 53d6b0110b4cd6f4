"""Health, metrics and alerts of a running daemon, against real servers: /readyz turns
not-ready when PostgreSQL, IMAP (Dovecot) or the relay goes away and ready again when it is
back; /metrics parsed by prometheus-client's own parser matches what was done; alert mails
to the lead come once per occurrence with one recovery, and a restart repeats none."""

from __future__ import annotations

import asyncio
import email.policy
import http.client
import json
import socket
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.engine import make_url

from mailbot.app import Daemon
from mailbot.migrations import open_store
from mailbot.config import Config, ImapMailboxConfig
from mailbot.store import InboundMessage, OutgoingMail, utcnow
from tests.e2e.helpers import daemon_config, eventually, import_licenses, request_mail, \
    running, smtp_send, unique_sender
from tests.e2e.processes import DaemonProcess, wait_until
from tests.e2e.processes import daemon_config as process_config
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.servers import free_port, running_dovecot
from tests.fixtures.http import http_get

LEAD = "vedouci@estelar.example"
PW_ENV = "MB_HEALTH_IMAP_PW"
_PARSE = BytesParser(policy=email.policy.default)


class PortProxy(TcpProxy):
    """A TcpProxy on a chosen port, so a server can "come back" where the daemon expects it
    (close() makes the port refuse connections, like a stopped server)."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        super().__init__(target_host, target_port)
        self._wanted = port

    def start(self) -> PortProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._wanted))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener, self.port = listener, int(listener.getsockname()[1])
        self._spawn(self._accept_loop, "proxy-accept")
        return self



def get(port: int, path: str) -> tuple[int, bytes]:
    return http_get(port, path, timeout=10)


async def readyz(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    assert daemon.http_port is not None
    status, body = await asyncio.to_thread(get, daemon.http_port, "/readyz")
    return status, json.loads(body)


async def until_ready(daemon: Daemon, want: bool, timeout: float = 30.0) -> dict[str, Any]:
    """Poll /readyz (bounded) until it says `want`; returns that answer."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        status, body = await readyz(daemon)
        if (status == 200) == want:
            assert body["status"] == ("ready" if want else "not ready")
            return body
        if loop.time() > end:
            raise AssertionError(f"/readyz not {'ready' if want else 'not ready'}: {body}")
        await asyncio.sleep(0.1)


async def checks_pass(daemon: Daemon, n: int, timeout: float = 30.0) -> None:
    """Wait (bounded) until the monitor has completed `n` more checks."""
    monitor = daemon.monitor
    assert monitor is not None
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last, seen = monitor.last, 0
    while seen < n:
        if loop.time() > end:
            raise AssertionError(f"only {seen} of {n} monitor checks in time")
        if monitor.last is not last:
            last, seen = monitor.last, seen + 1
        await asyncio.sleep(0.02)


def monitored(cfg: Config, *, alerts: dict[str, Any] | None = None,
              **monitoring: Any) -> Config:
    update: dict[str, Any] = {
        "news": cfg.news.model_copy(update={"http_port": 0}),
        "monitoring": cfg.monitoring.model_copy(update={
            "enabled": True, "check_seconds": 0.2, **monitoring}),
    }
    if alerts is not None:
        update["alerts"] = cfg.alerts.model_copy(update={"enabled": True, **alerts})
        update["schedule"] = cfg.schedule.model_copy(update={"lead_address": LEAD,
                                                             "digest": False})
    return cfg.model_copy(update=update)


def alert_mails(sink: Any) -> list[EmailMessage]:
    return [m for m in (_PARSE.parsebytes(c.data) for c in sink.messages)
            if str(m["To"]) == LEAD and str(m["Subject"]).startswith("mailbot ")]


def purposes(cfg: Config, prefix: str) -> list[str]:
    store = open_store(cfg, migrate=False)
    try:
        return sorted(store.purposes_with_prefix(prefix))
    finally:
        store.close()


# ---------------------------------------------------------------------------------------
# /readyz
# ---------------------------------------------------------------------------------------

@pytest.mark.postgres
async def test_readyz_not_ready_while_postgresql_is_unreachable(
        base_config: Config, smtp_sink: Any, pg_url: str) -> None:
    """The database goes away (its port refuses, as a stopped server's does; other tests
    share the real server, so a proxy in front of it stands in for it): not ready within a
    check, with the reason; ready again when it is back."""
    url = make_url(pg_url)
    proxy = PortProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    cfg = daemon_config(base_config, smtp_sink.port)
    cfg = monitored(cfg.model_copy(update={"store": cfg.store.model_copy(update={
        "url": proxied})}), store_timeout_seconds=3)
    try:
        async with running(cfg) as daemon:
            body = await until_ready(daemon, True)
            assert body["checks"]["store"] == {"ok": True, "detail": "answers"}
            proxy.close()
            body = await until_ready(daemon, False)
            assert body["checks"]["store"]["ok"] is False
            assert body["checks"]["outbox"]["ok"] is False  # cannot be known without it
            proxy = PortProxy(url.host or "127.0.0.1", url.port or 5432, proxy.port).start()
            body = await until_ready(daemon, True)
            assert all(c["ok"] for c in body["checks"].values())
    finally:
        proxy.close()


@pytest.mark.dovecot
async def test_readyz_and_intake_alert_when_imap_is_unreachable(
        base_config: Config, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot stops: /readyz is not ready (imap check), one intake_stopped alert goes to the
    lead; a restart of the daemon while it is still down sends no second one; Dovecot back:
    ready again and exactly one recovery mail."""
    with running_dovecot() as dovecot:
        monkeypatch.setenv(PW_ENV, dovecot.password)
        box = ImapMailboxConfig(name="support", host="127.0.0.1", port=dovecot.imap_port,
                                security="none", username=dovecot.new_user(),
                                password_env=PW_ENV, poll_seconds=0.5, timeout_seconds=5)
        cfg = monitored(daemon_config(base_config, smtp_sink.port, imap=(box,)),
                        imap_grace_seconds=0,
                        alerts={"intake_stopped_minutes": 0.01, "quarantine": False})
        async with running(cfg) as daemon:
            await until_ready(daemon, True)
            dovecot.stop()
            body = await until_ready(daemon, False)
            assert body["checks"]["imap:support"]["ok"] is False
            assert "not connected" in body["checks"]["imap:support"]["detail"]
            await eventually(lambda: len(alert_mails(smtp_sink)) == 1, 30)
        async with running(cfg) as daemon:  # still down: the occurrence is open already
            await until_ready(daemon, False)
            await eventually(lambda: daemon.monitor is not None and daemon.monitor.last is not None
                             and daemon.monitor.last.imap_silent["support"] is not None
                             and daemon.monitor.last.imap_silent["support"] > timedelta(seconds=1),
                             30)
            await checks_pass(daemon, 3)
            assert len(purposes(cfg, "alert:")) == 1
            assert purposes(cfg, "alert:") == purposes(cfg, "alert:intake_stopped:")
            dovecot.start()
            await until_ready(daemon, True, timeout=90)
            await eventually(lambda: len(alert_mails(smtp_sink)) == 2, 30)
        async with running(cfg) as daemon:  # cleared and told: nothing more after a restart
            await until_ready(daemon, True)
            await checks_pass(daemon, 3)
        first, recovery = alert_mails(smtp_sink)
        assert "Příjem pošty se zastavil" in str(first["Subject"])
        assert "VYŘEŠENO" in str(recovery["Subject"])
        alert, done = purposes(cfg, "alert:")
        assert done == f"{alert}:recovered"
        assert len(alert_mails(smtp_sink)) == 2


async def test_readyz_and_alert_when_the_outbox_is_stuck(
        base_config: Config, smtp_sink: Any) -> None:
    """The relay is down with a due mail older than the limit: not ready (outbox check) and
    an outbox_stuck alert queued; relay back: everything goes out, ready again, one alert and
    one recovery mail reach the lead."""
    relay = PortProxy("127.0.0.1", smtp_sink.port).start()
    port = relay.port
    relay.close()  # down from the start
    cfg = daemon_config(base_config, port)
    cfg = monitored(cfg.model_copy(update={"outbound": cfg.outbound.model_copy(update={
        "retry_base_seconds": 0.1})}), outbox_stuck_minutes=5,
        alerts={"outbox_stuck_minutes": 5, "quarantine": False})
    store = open_store(cfg)
    with store.transaction() as tx:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "podpora@estelar.example", "a@b.example", "old"
        msg["Message-ID"] = "<old-1@estelar.example>"
        msg.set_content("queued an hour ago\n")
        tx.enqueue(OutgoingMail("test:old", "<old-1@estelar.example>", "ack",
                                "podpora@estelar.example", ("a@b.example",), msg.as_bytes()),
                   ticket_id=None, inbound_id=None, now=utcnow() - timedelta(hours=1))
    store.close()
    try:
        async with running(cfg) as daemon:
            body = await until_ready(daemon, False)
            assert body["checks"]["outbox"]["ok"] is False
            assert "limit 5 min" in body["checks"]["outbox"]["detail"]
            await eventually(lambda: len(purposes(cfg, "alert:outbox_stuck:")) == 1, 30)
            relay = PortProxy("127.0.0.1", smtp_sink.port, port).start()
            await until_ready(daemon, True)
            await eventually(lambda: len(alert_mails(smtp_sink)) == 2, 30)
            await checks_pass(daemon, 3)
    finally:
        relay.close()
    first, recovery = alert_mails(smtp_sink)
    assert "Odchozí pošta vázne" in str(first["Subject"])
    assert "VYŘEŠENO" in str(recovery["Subject"])
    assert [c.message_id for c in smtp_sink.messages].count("<old-1@estelar.example>") == 1


async def test_quarantine_alert_once_per_occurrence_across_restarts(
        base_config: Config, smtp_sink: Any) -> None:
    """Mail quarantined: one alert; a restart while it is still there: none; cleared: one
    recovery; a restart after that: nothing more. (Alerts without the HTTP routes.)"""
    cfg = daemon_config(base_config, smtp_sink.port)
    cfg = monitored(cfg.model_copy(update={"limits": cfg.limits.model_copy(update={
        "header_fields": 10})}), alerts={"quarantine": True}, enabled=False)
    many = b"".join(b"X-Filler-%d: x\r\n" % i for i in range(20)) + request_mail(
        sender=unique_sender())
    async with running(cfg) as daemon:
        assert daemon.listen_port is not None and daemon.http_port is None
        await asyncio.to_thread(smtp_send, daemon.listen_port, many)
        await eventually(lambda: len(alert_mails(smtp_sink)) == 1, 30)
    async with running(cfg) as daemon:
        await checks_pass(daemon, 5)
        assert len(purposes(cfg, "alert:")) == 1
        store = open_store(cfg, migrate=False)
        try:
            [row] = store.list_inbound("quarantined")
            with store.session() as s:  # the operator dealt with it
                s.execute(update(InboundMessage).where(InboundMessage.id == row.id)
                          .values(state="decided"))
        finally:
            store.close()
        await eventually(lambda: len(alert_mails(smtp_sink)) == 2, 30)
    async with running(cfg) as daemon:
        await checks_pass(daemon, 5)
    first, recovery = alert_mails(smtp_sink)
    assert "Pošta v karanténě" in str(first["Subject"]) and "1 message" in first.get_content()
    assert "Karanténa je prázdná" in recovery.get_content()
    assert len(purposes(cfg, "alert:")) == 2 and len(alert_mails(smtp_sink)) == 2


# ---------------------------------------------------------------------------------------
# /metrics and /healthz through a real `mailbot run`
# ---------------------------------------------------------------------------------------

def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_what_the_daemon_did(tmp_path: Path, smtp_sink: Any) -> None:
    """Three mails in over SMTP, three replies out: the counters say 3, parsed with
    prometheus-client's own parser; /healthz answers."""
    listen, http_port = free_port(), free_port()
    config = process_config(tmp_path / "mailbot.toml", f"""
[store]
url = "sqlite:///{tmp_path / 'mailbot.db'}"
attachments_dir = "{tmp_path / 'attachments'}"
[listener]
host = "127.0.0.1"
port = {listen}
[outbound]
mode = "smtp"
host = "127.0.0.1"
port = {smtp_sink.port}
security = "none"
[worker]
poll_seconds = 0.2
[schedule]
digest = false
[news]
http_port = {http_port}
[monitoring]
enabled = true
""")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start(listen)
    try:
        import_licenses(f"sqlite:///{tmp_path / 'mailbot.db'}")
        for _ in range(3):
            smtp_send(listen, request_mail(sender=unique_sender()))
        smtp_sink.wait_for(3, timeout=60)
        status, body = get(http_port, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "alive"})

        def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return _samples(get(http_port, "/metrics")[1].decode())

        wait_until(lambda: scraped().get(("mailbot_outbox_attempts_total",
                                          (("outcome", "sent"),))) == 3,
                   30, "three sends counted", daemon)
        m = scraped()
    finally:
        daemon.stop()
    assert m[("mailbot_mail_received_total", (("via", "smtp"),))] == 3
    assert sum(v for (name, _), v in m.items() if name == "mailbot_mail_decided_total") == 3
    assert not any(name == "mailbot_mail_quarantined_total" and v for (name, _), v in m.items())
    assert m[("mailbot_inbound_messages", (("state", "decided"),))] == 3
    assert m[("mailbot_inbound_messages", (("state", "received"),))] == 0
    assert m[("mailbot_outbox_messages", (("state", "sent"),))] == 3
    assert m[("mailbot_outbox_oldest_due_age_seconds", ())] == 0
    assert m[("mailbot_stage_seconds_count", (("stage", "store"),))] == 3
    assert m[("mailbot_stage_seconds_count", (("stage", "send"),))] == 3
    assert m[("mailbot_stage_seconds_count", (("stage", "wait"),))] == 3
    assert m[("mailbot_event_loop_lag_seconds_count", ())] > 0
    assert m[("mailbot_store_up", ())] == 1


def call(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=b"" if method == "POST" else None)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


async def test_monitoring_endpoint_runs_without_news_unsubscribe(
        base_config: Config, smtp_sink: Any) -> None:
    """monitoring.enabled alone starts the endpoint: the three routes answer GET only, the
    unsubscribe routes are not there (news.http_enabled is off), and the limits still hold."""
    cfg = monitored(daemon_config(base_config, smtp_sink.port))
    assert not cfg.news.http_enabled
    async with running(cfg) as daemon:
        assert daemon.http_port is not None
        port = daemon.http_port
        status, headers, body = await asyncio.to_thread(call, port, "GET", "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "alive"})
        assert headers["content-type"] == "application/json"
        body_ready = await until_ready(daemon, True)
        assert set(body_ready["checks"]) == {"store", "listener", "worker", "outbox"}
        status, headers, body = await asyncio.to_thread(call, port, "GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert any(f.name == "mailbot_ready" for f in text_string_to_metric_families(
            body.decode()))
        for path in ("/healthz", "/readyz", "/metrics"):
            status, headers, _ = await asyncio.to_thread(call, port, "POST", path)
            assert (status, headers["allow"]) == (405, "GET")
        status, _, _ = await asyncio.to_thread(call, port, "GET",
                                               "/unsubscribe/0123456789abcdef0123")
        assert status == 404
        status, _, _ = await asyncio.to_thread(call, port, "GET", "/readyz/" + "x" * 9000)
        assert status == 431  # the unsubscribe endpoint's head limit applies here too


async def test_listener_refusing_connections_is_not_ready_and_intake_stopped(
        base_config: Config) -> None:
    """A listener whose port refuses connections (bound, then gone) fails readiness and is
    judged "intake stopped" for the alerts; one that accepts is neither."""
    from mailbot.alerts import Alerts
    from mailbot.health import HealthState, Readiness

    cfg = monitored(base_config, alerts={})
    store = open_store(cfg)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        readiness = Readiness(cfg, store, HealthState(), listener=lambda: ("127.0.0.1", port))
        alerts = Alerts(cfg, store)
        report = await readiness.check()
        [listener] = [c for c in report.checks if c.name == "listener"]
        assert listener.ok and report.listener_refused is False
        assert alerts.conditions(report)[0].active is False
        server.close()
        await server.wait_closed()
        report = await readiness.check()
        [listener] = [c for c in report.checks if c.name == "listener"]
        assert (listener.ok, listener.detail) == (False, "refuses connections")
        [intake] = [c for c in alerts.conditions(report) if c.name == "intake_stopped"]
        assert intake.active is True and "listener refuses" in intake.detail
    finally:
        server.close()
        store.close()
