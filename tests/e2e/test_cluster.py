"""Several daemons on one PostgreSQL database (issue 8): no double work, no lost work.

Three `mailbot run` processes share one schema of the test PostgreSQL (127.0.0.1:5432,
database `test`; the tests skip with the reason where it does not answer) and, for intake,
one Dovecot mailbox:

* 2,000 mails appended to the mailbox, the daemon polling it SIGKILLed in the middle:
  exactly one stored message, decision and reply per mail, ticket numbers unique, a second
  copy at the sink only for replies in flight at the kill (same Message-ID);
* a 10,000-recipient campaign sent by three daemons: each recipient once; the time against
  one daemon is printed;
* PostgreSQL restarted (pg_ctlcluster) while mail comes in over SMTP: nothing accepted is
  lost, the daemons recover by themselves.

Counts and figures are printed (`pytest -s`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mailbot.registry import read_license_csv
from mailbot.store import Store
from tests.e2e.helpers import LICENSES, feed, request_mail, unique_sender
from tests.e2e.test_news_crash import (
    DaemonProcess,
    prepare_campaign,
    wait_until,
    write_config as campaign_config,
)
from tests.fixtures.servers import SmtpSink, free_port

ROOT = Path(__file__).resolve().parents[2]
DAEMONS = 3
CONCURRENCY = 4
LEASE_SECONDS = 6  # the IMAP poller's lease (default 30), short to keep the test short
PW_ENV = "MB_CLUSTER_IMAP_PW"

pytestmark = pytest.mark.slow


def write_config(tmp: Path, name: str, *, store_url: str, sink_port: int,
                 imap: tuple[int, str] | None = None, listen_port: int | None = None) -> Path:
    """One daemon of the cluster: the shared store, intake from the shared mailbox and/or
    its own SMTP listener, replies to the sink; claims expire after 10 s."""
    text_ = f"""
root = "{ROOT}"
[store]
url = "{store_url}"
attachments_dir = "{tmp / 'attachments'}"
pool_size = 4
[listener]
enabled = {'true' if listen_port else 'false'}
port = {listen_port or 0}
[schedule]
enabled = false
[mailbox]
staff_notify = []
[outbound]
mode = "smtp"
host = "127.0.0.1"
port = {sink_port}
security = "none"
retry_base_seconds = 1
lease_seconds = 10
concurrency = {CONCURRENCY}
[worker]
poll_seconds = 0.5
lease_seconds = 10
processes = 1
"""
    if imap is not None:
        port, user = imap
        text_ += f"""
[[imap]]
name = "support"
host = "127.0.0.1"
port = {port}
security = "none"
username = "{user}"
password_env = "{PW_ENV}"
poll_seconds = 0.5
timeout_seconds = 10
lease_seconds = {LEASE_SECONDS}
batch = 50
"""
    default = (ROOT / "config" / "mailbot.toml").read_text(encoding="utf-8")
    path = tmp / f"{name}.toml"
    path.write_text(text_ + default[default.index("\n[classify]"):], encoding="utf-8")
    return path


def count(store_url: str, query: str) -> int:
    engine = create_engine(store_url)
    try:
        with engine.connect() as c:
            return int(c.execute(text(query)).scalar() or 0)
    finally:
        engine.dispose()


def rows(store_url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(store_url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(text(query))]
    finally:
        engine.dispose()


def migrate_at_once(configs: list[Path]) -> None:
    """`mailbot db upgrade` by every daemon at the same moment: one migrates (advisory lock),
    the others wait and find nothing to do."""
    procs = [subprocess.Popen([sys.executable, "-m", "mailbot", "db", "upgrade", "--config",
                               str(c)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for c in configs]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode(errors="replace")


def import_licenses(store_url: str) -> None:
    store = Store.from_url(store_url)
    records, errors = read_license_csv(LICENSES.decode())
    assert not errors
    store.upsert_licenses(records)
    store.close()


def poller_pid(store_url: str) -> int | None:
    """The pid of the daemon holding the mailbox lease (holders are host:pid:random)."""
    held = rows(store_url, "select holder from leases where name = 'imap:support:INBOX' "
                           "and expires_at > now() at time zone 'utc'")
    return int(str(held[0][0]).split(":")[1]) if held else None


def stop_all(daemons: list[DaemonProcess]) -> list[int]:
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
    return [d.proc.wait(timeout=60) if d.proc is not None else 0 for d in daemons]


def test_three_daemons_share_a_mailbox_one_killed(
    pg_url: str, dovecot, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 2000
    user = dovecot.new_user()
    monkeypatch.setenv(PW_ENV, dovecot.password)
    configs = [write_config(tmp_path, f"d{i}", store_url=pg_url, sink_port=smtp_sink.port,
                            imap=(dovecot.imap_port, user)) for i in range(DAEMONS)]
    migrate_at_once(configs)
    import_licenses(pg_url)
    mails = [request_mail(subject=f"Dotaz {i}", sender=unique_sender()) for i in range(n)]
    client = dovecot.imap(user)
    try:
        for raw in mails[: n // 2]:
            client.append("INBOX", raw)
    finally:
        client.logout()

    daemons = [DaemonProcess(c, tmp_path / f"d{i}.log") for i, c in enumerate(configs)]
    killed: int | None = None
    started = time.monotonic()
    try:
        for d in daemons:
            d.start()
        wait_until(lambda: count(pg_url, "select count(*) from decisions") >= n // 5, 240,
                   "a fifth of the mail was decided", daemons[0])
        killed = poller_pid(pg_url)
        assert killed in [d.proc.pid for d in daemons if d.proc is not None]
        os.kill(killed, signal.SIGKILL)
        victim = next(d for d in daemons if d.proc is not None and d.proc.pid == killed)
        victim.proc.wait(timeout=30)
        # The second half arrives after the kill: only a poller that took over takes it in.
        client = dovecot.imap(user)
        try:
            for raw in mails[n // 2:]:
                client.append("INBOX", raw)
        finally:
            client.logout()
        survivor = next(d for d in daemons if d is not victim)

        def done() -> bool:
            return (count(pg_url, "select count(*) from decisions") >= n
                    and count(pg_url, "select count(*) from outbox where state <> 'sent'") == 0
                    and count(pg_url, "select count(*) from outbox") >= n)

        wait_until(done, 300, "every mail was decided and answered", survivor)
        elapsed = time.monotonic() - started
        new_poller = poller_pid(pg_url)
        assert stop_all([d for d in daemons if d is not victim]) == [0] * (DAEMONS - 1)
    finally:
        for d in daemons:
            d.kill_if_running()

    inbound = count(pg_url, "select count(*) from inbound_messages")
    distinct = count(pg_url, "select count(distinct message_id) from inbound_messages")
    decisions = count(pg_url, "select count(*) from decisions")
    decided_once = count(pg_url, "select count(distinct inbound_id) from decisions")
    tickets = count(pg_url, "select count(*) from tickets")
    numbers = count(pg_url, "select count(distinct number) from tickets")
    per_inbound = count(pg_url, "select count(*) from (select inbound_id from tickets "
                                "group by inbound_id having count(*) > 1) x")
    replies = rows(pg_url, "select message_id from outbox where inbound_id is not null")
    copies = Counter(m.message_id for m in smtp_sink.messages)
    second = sum(c - 1 for c in copies.values())
    print(f"\n{DAEMONS} daemons, {n} mails appended (half after the kill), poller pid "
          f"{killed} SIGKILLed with a fifth decided, "
          f"pid {new_poller} polled afterwards; {elapsed:.1f} s in all: {inbound} stored "
          f"({distinct} distinct Message-IDs), {decisions} decisions ({decided_once} mails), "
          f"{tickets} tickets ({numbers} distinct numbers), {len(replies)} replies queued, "
          f"{len(smtp_sink.messages)} mails at the sink, {second} second copies")
    assert inbound == distinct == n
    assert decisions == decided_once == n
    assert numbers == tickets and per_inbound == 0 and tickets > 0.9 * n
    assert new_poller is not None and new_poller != killed
    assert set(copies) == {str(mid) for (mid,) in replies}  # every reply reached the relay
    assert len(replies) == n  # one acknowledgement (or rejection) per mail
    assert second <= CONCURRENCY  # only what the killed daemon had in flight


def test_campaign_by_three_daemons_each_recipient_once(
    pg_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    n = 10_000
    config, people, queue_s = prepare_campaign(
        tmp_path, smtp_sink.port, n_eligible=n, n_unsubscribed=100, n_ineligible=50,
        store_url=pg_url)
    figures = {}
    for daemons_n in (1, DAEMONS):
        smtp_sink.clear()
        engine = create_engine(pg_url)
        with engine.begin() as c:
            c.execute(text("update outbox set state = 'queued', sent_at = null, attempts = 0, "
                           "lease_until = null, next_attempt_at = now() at time zone 'utc'"))
        engine.dispose()
        configs = [campaign_config(tmp_path, smtp_sink.port, store_url=pg_url,
                                   name=f"c{daemons_n}-{i}.toml") for i in range(daemons_n)]
        daemons = [DaemonProcess(c, tmp_path / f"c{daemons_n}-{i}.log")
                   for i, c in enumerate(configs)]
        try:
            started = time.monotonic()
            for d in daemons:
                d.start()
            wait_until(lambda: len(smtp_sink.messages) >= n, 300, f"{n} mails arrived",
                       daemons[0])
            first = smtp_sink.messages[0].received_at
            last = smtp_sink.messages[-1].received_at
            time.sleep(1.0)  # room for a wrong second copy to arrive
            assert stop_all(daemons) == [0] * daemons_n
        finally:
            for d in daemons:
                d.kill_if_running()
        messages = smtp_sink.messages
        recipients = Counter(m.rcpt_tos[0] for m in messages)
        sessions = len({m.session for m in messages})
        figures[daemons_n] = n / max(last - first, 1e-9)
        print(f"\n{daemons_n} daemon(s): {len(messages)} mails to {len(recipients)} recipients "
              f"in {last - first:.1f} s = {figures[daemons_n]:.0f} mails/s over {sessions} "
              f"SMTP connections (from start {last - started:.1f} s; queued in {queue_s:.1f} s)")
        assert set(recipients) == set(people.eligible)
        assert max(recipients.values()) == 1 and len(messages) == n
        assert count(pg_url, "select count(*) from outbox where state = 'sent'") == n
    print(f"three daemons against one: {figures[DAEMONS] / figures[1]:.2f}x")


def test_postgresql_restart_during_intake(
    pg_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    ctl = shutil.which("pg_ctlcluster")
    if ctl is None or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    local = [line.split() for line in clusters.splitlines()
             if len(line.split()) >= 4 and line.split()[2] == "5432"]
    if not local:
        pytest.skip("no local PostgreSQL cluster on port 5432 to restart")
    version, name = local[0][0], local[0][1]
    ports = [free_port() for _ in range(DAEMONS)]
    configs = [write_config(tmp_path, f"r{i}", store_url=pg_url, sink_port=smtp_sink.port,
                            listen_port=ports[i]) for i in range(DAEMONS)]
    migrate_at_once(configs)
    import_licenses(pg_url)
    per_daemon = 100
    daemons = [DaemonProcess(c, tmp_path / f"r{i}.log") for i, c in enumerate(configs)]
    accepted: list[str] = []
    refused: Counter[str] = Counter()
    stop = threading.Event()
    try:
        for d in daemons:
            d.start()
        for port in ports:
            wait_until(lambda: _listening(port), 30, f"port {port} listens", daemons[0])
        mails = [[request_mail(subject=f"Dotaz {p}-{i}", sender=unique_sender())
                  for i in range(per_daemon)] for p in range(DAEMONS)]
        feeders = [threading.Thread(target=feed, args=(port, m, accepted, stop),
                                    kwargs={"refused": refused})
                   for port, m in zip(ports, mails)]
        for f in feeders:
            f.start()
        wait_until(lambda: len(accepted) >= DAEMONS * per_daemon // 3, 120,
                   "a third of the mail was accepted", daemons[0])
        restart = time.monotonic()
        subprocess.run([ctl, "--skip-systemctl-redirect", version, name, "restart"],
                       check=True, timeout=120, capture_output=True)
        restart_s = time.monotonic() - restart
        for f in feeders:
            f.join(timeout=300)
        assert not any(f.is_alive() for f in feeders)
        total = DAEMONS * per_daemon

        def done() -> bool:
            try:
                parked = rows(pg_url, "select error from inbound_messages "
                                      "where state = 'quarantined' limit 1")
                decided = count(pg_url, "select count(*) from decisions")
                unsent = count(pg_url, "select count(*) from outbox where state <> 'sent'")
            except Exception:  # noqa: BLE001 - the database may still be starting
                return False
            assert not parked, f"quarantined for the database's fault: {parked[0][0]}"
            return decided >= total and unsent == 0

        wait_until(done, 180, "every accepted mail was decided and answered", daemons[0])
        codes = stop_all(daemons)
    finally:
        stop.set()
        for d in daemons:
            d.kill_if_running()
    stored = {str(mid) for (mid,) in rows(pg_url, "select message_id from inbound_messages")}
    print(f"\nPostgreSQL {version}/{name} restarted in {restart_s:.1f} s during intake: "
          f"{len(accepted)} mails accepted, refusals meanwhile {dict(refused)}, "
          f"{len(stored)} stored, {count(pg_url, 'select count(*) from decisions')} decided, "
          f"{len(smtp_sink.messages)} replies at the sink; exit codes {codes}")
    assert len(accepted) == total == len(set(accepted))
    assert stored == set(accepted)  # nothing accepted was lost, nothing stored twice
    assert count(pg_url, "select count(*) from inbound_messages") == total
    assert count(pg_url, "select count(distinct inbound_id) from decisions") == total
    assert codes == [0] * DAEMONS


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


async def test_one_scheduler_among_daemons(pg_url: str, base_config, smtp_sink: SmtpSink) -> None:
    """Two daemons on one database: one runs the scheduler (holds its lease, tick after
    tick); when it stops, the other takes over at its next tick."""
    import asyncio

    from mailbot.app import SCHEDULER_LEASE
    from tests.e2e.helpers import daemon_config, eventually, running

    cfg = daemon_config(base_config, smtp_sink.port)
    cfg = cfg.model_copy(update={
        "store": cfg.store.model_copy(update={"url": pg_url}),
        "schedule": cfg.schedule.model_copy(update={"tick_seconds": 0.3}),
    })
    contexts = [running(cfg), running(cfg)]
    daemons = [await c.__aenter__() for c in contexts]
    open_ = [True, True]
    try:
        store = daemons[0].store
        holders = [d.holder for d in daemons]
        await eventually(lambda: store.lease_holder(SCHEDULER_LEASE) in holders, 5)
        first = holders.index(str(store.lease_holder(SCHEDULER_LEASE)))
        for _ in range(5):  # kept over ticks, not passed back and forth
            await asyncio.sleep(0.3)
            assert store.lease_holder(SCHEDULER_LEASE) == holders[first]
        other = 1 - first
        await contexts[first].__aexit__(None, None, None)  # a clean stop releases it
        open_[first] = False
        other_store = daemons[other].store
        await eventually(lambda: other_store.lease_holder(SCHEDULER_LEASE) == holders[other], 5)
    finally:
        for c, is_open in zip(contexts, open_):
            if is_open:
                await c.__aexit__(None, None, None)
