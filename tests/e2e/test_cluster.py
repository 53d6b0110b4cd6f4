"""Several daemons on one PostgreSQL database (issue 8): no double work, no lost work.

Three `mailbot run` processes share one schema of the test PostgreSQL (127.0.0.1:5432,
database `test`; the tests skip with the reason where it does not answer; the restart test
has a private server of its own) and, for intake, one Dovecot mailbox:

* 2,000 mails appended to the mailbox, the daemon polling it SIGKILLed in the middle:
  exactly one stored message, decision and reply per mail, ticket numbers unique, a second
  copy at the sink only for replies in flight at the kill (same Message-ID);
* a 10,000-recipient campaign sent by three daemons: each recipient once; the time against
  one daemon is printed;
* PostgreSQL restarted (a private server, `pg_ctl restart`) while mail comes in over SMTP:
  nothing accepted is lost, the daemons recover by themselves;
* with the default (short, renewed) claim leases, a daemon SIGKILLed while it holds a batch
  of replies in a slow relay's DATA: another daemon sends that batch within 60 s, each reply
  once (issue 14, item 7).

Counts and figures are printed (`pytest -s`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.e2e.helpers import feed, import_licenses, request_mail, unique_sender
from tests.e2e.processes import (
    DaemonProcess,
    daemon_config,
    db_count,
    db_rows,
    listening,
    wait_until,
)
from tests.e2e.test_news_crash import prepare_campaign
from tests.e2e.test_news_crash import write_config as campaign_config
from tests.fixtures.postgres import PrivatePostgres, private_postgres
from tests.fixtures.servers import SmtpSink, free_port

ROOT = Path(__file__).resolve().parents[2]
DAEMONS = 3
CONCURRENCY = 4
LEASE_SECONDS = 6  # the IMAP poller's lease (default 30), short to keep the test short
PW_ENV = "MB_CLUSTER_IMAP_PW"

pytestmark = pytest.mark.slow


def write_config(tmp: Path, name: str, *, store_url: str, sink_port: int,
                 imap: tuple[int, str] | None = None, listen_port: int | None = None,
                 default_leases: bool = False) -> Path:
    """One daemon of the cluster: the shared store, intake from the shared mailbox and/or
    its own SMTP listener, replies to the sink; claims expire after 10 s (or after the
    default lease with `default_leases`)."""
    head = f"""
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
[conversation]
auto_replies_total_per_hour = 1000000
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
        head += f"""
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
    if default_leases:
        head = head.replace("lease_seconds = 10\n", "")
    return daemon_config(tmp / f"{name}.toml", head)


def migrate_at_once(configs: list[Path]) -> None:
    """`mailbot db upgrade` by every daemon at the same moment: one migrates (advisory lock),
    the others wait and find nothing to do."""
    procs = [subprocess.Popen([sys.executable, "-m", "mailbot", "db", "upgrade", "--config",
                               str(c)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for c in configs]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode(errors="replace")


def poller_pid(store_url: str) -> int | None:
    """The pid of the daemon holding the mailbox lease (holders are host:pid:random)."""
    held = db_rows(store_url, "select holder from leases where name = 'imap:support:INBOX' "
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
        wait_until(lambda: db_count(pg_url, "select count(*) from decisions") >= n // 5, 240,
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
            return (db_count(pg_url, "select count(*) from decisions") >= n
                    and db_count(pg_url, "select count(*) from outbox where state <> 'sent'") == 0
                    and db_count(pg_url, "select count(*) from outbox") >= n)

        wait_until(done, 300, "every mail was decided and answered", survivor)
        elapsed = time.monotonic() - started
        new_poller = poller_pid(pg_url)
        assert stop_all([d for d in daemons if d is not victim]) == [0] * (DAEMONS - 1)
    finally:
        for d in daemons:
            d.kill_if_running()

    inbound = db_count(pg_url, "select count(*) from inbound_messages")
    distinct = db_count(pg_url, "select count(distinct message_id) from inbound_messages")
    decisions = db_count(pg_url, "select count(*) from decisions")
    decided_once = db_count(pg_url, "select count(distinct inbound_id) from decisions")
    tickets = db_count(pg_url, "select count(*) from tickets")
    numbers = db_count(pg_url, "select count(distinct number) from tickets")
    per_inbound = db_count(pg_url, "select count(*) from (select inbound_id from tickets "
                                "group by inbound_id having count(*) > 1) x")
    replies = db_rows(pg_url, "select message_id from outbox where inbound_id is not null")
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
    assert numbers == tickets == n and per_inbound == 0  # every mail a licensed request
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
            # No sleep for a wrong second copy: once every daemon has exited, nothing more can
            # be sent, and the sink records a mail before it answers DATA, so every copy any
            # daemon sent is counted below.
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
        assert db_count(pg_url, "select count(*) from outbox where state = 'sent'") == n
    print(f"three daemons against one: {figures[DAEMONS] / figures[1]:.2f}x")


def test_postgresql_restart_during_intake(smtp_sink: SmtpSink, tmp_path: Path) -> None:
    """The database restarted under three daemons taking mail over SMTP. The server is a
    private one (tests/fixtures/postgres.py): restarting the machine's own would cut off the
    PostgreSQL tests another pytest-xdist worker runs meanwhile."""
    with private_postgres() as server:
        _restart_during_intake(server, smtp_sink, tmp_path)


def _restart_during_intake(server: PrivatePostgres, smtp_sink: SmtpSink, tmp_path: Path
                           ) -> None:
    pg_url = server.url
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
            wait_until(lambda: listening(port), 30, f"port {port} listens", daemons[0])
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
        server.restart()
        restart_s = time.monotonic() - restart
        for f in feeders:
            f.join(timeout=300)
        assert not any(f.is_alive() for f in feeders)
        total = DAEMONS * per_daemon

        def done() -> bool:
            try:
                parked = db_rows(pg_url, "select error from inbound_messages "
                                      "where state = 'quarantined' limit 1")
                decided = db_count(pg_url, "select count(*) from decisions")
                unsent = db_count(pg_url, "select count(*) from outbox where state <> 'sent'")
            except OperationalError:  # the database may still be starting
                return False
            assert not parked, f"quarantined for the database's fault: {parked[0][0]}"
            return decided >= total and unsent == 0

        wait_until(done, 180, "every accepted mail was decided and answered", daemons[0])
        codes = stop_all(daemons)
    finally:
        stop.set()
        for d in daemons:
            d.kill_if_running()
    stored = {str(mid) for (mid,) in db_rows(pg_url, "select message_id from inbound_messages")}
    print(f"\nPostgreSQL restarted in {restart_s:.1f} s during intake: "
          f"{len(accepted)} mails accepted, refusals meanwhile {dict(refused)}, "
          f"{len(stored)} stored, {db_count(pg_url, 'select count(*) from decisions')} decided, "
          f"{len(smtp_sink.messages)} replies at the sink; exit codes {codes}")
    assert len(accepted) == total == len(set(accepted))
    assert stored == set(accepted)  # nothing accepted was lost, nothing stored twice
    assert db_count(pg_url, "select count(*) from inbound_messages") == total
    assert db_count(pg_url, "select count(distinct inbound_id) from decisions") == total
    assert codes == [0] * DAEMONS


def claimed_by(store_url: str, table: str, state: str, pid: int) -> set[int]:
    """Ids of `table` rows in `state` whose claim token names process `pid` (host:pid:…)."""
    rows = db_rows(store_url, f"select id, claim_token from {table} where state = '{state}'")
    return {int(i) for i, token in rows  # type: ignore[call-overload]
            if token is not None and str(token).split(":")[1] == str(pid)}


def test_killed_daemons_claims_taken_over_within_a_minute(
    pg_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """Default leases (20 s, renewed): a daemon SIGKILLed while its sending threads are stuck
    in a slow relay's DATA and the rest of its batch waits behind them. The other daemons
    (running all along) send that batch within 60 s of the kill, each reply exactly once
    (the killed daemon's transactions never completed), while its own stays claimed."""
    n = 120
    configs = [write_config(tmp_path, f"k{i}", store_url=pg_url, sink_port=smtp_sink.port,
                            default_leases=True) for i in range(DAEMONS)]
    assert "lease_seconds" not in configs[0].read_text(encoding="utf-8").split("[classify]")[0]
    migrate_at_once(configs)
    import_licenses(pg_url)
    from mailbot.ingest.intake import save_raw_many
    from mailbot.store import Store

    store = Store.from_url(pg_url)
    try:
        save_raw_many(store, [(request_mail(subject=f"Dotaz {i}", sender=unique_sender()),
                               "test") for i in range(n)])
    finally:
        store.close()
    # The first daemon's sending threads hang in DATA (until the kill drops the connection):
    # two of them, as all replies go to one domain (outbound.per_domain_concurrency = 2).
    in_data = 2
    smtp_sink.stall_next("DATA", 600.0, times=in_data)
    daemons = [DaemonProcess(c, tmp_path / f"k{i}.log") for i, c in enumerate(configs)]
    victim = daemons[0]
    try:
        victim.start()
        wait_until(lambda: smtp_sink.peak_in_data_total >= in_data, 120,
                   "the first daemon's sending threads are in DATA", victim)
        for d in daemons[1:]:
            d.start()
        assert victim.proc is not None
        pid = victim.proc.pid

        def only_victims_claims_left() -> bool:
            queued = db_count(pg_url, "select count(*) from outbox where state <> 'sent'")
            return (db_count(pg_url, "select count(*) from decisions") >= n
                    and db_count(pg_url, "select count(*) from outbox") >= n
                    and queued == len(claimed_by(pg_url, "outbox", "queued", pid)))

        wait_until(only_victims_claims_left, 180,
                   "the other daemons sent everything but the first one's claims", daemons[1])
        held = claimed_by(pg_url, "outbox", "queued", pid)
        held_inbound = claimed_by(pg_url, "inbound_messages", "received", pid)
        assert len(held) >= in_data
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(timeout=30)
        ids = ",".join(str(i) for i in sorted(held))

        def taken_over() -> bool:
            return (db_count(pg_url, f"select count(*) from outbox where id in ({ids}) "
                                     "and state = 'sent'") == len(held)
                    and db_count(pg_url, "select count(*) from outbox where state <> 'sent'")
                    == 0)

        wait_until(taken_over, 60, "the killed daemon's claimed replies were sent by another",
                   daemons[1])
        took = time.monotonic() - killed_at
        # Every copy sent is at the sink once the survivors have exited (see above).
        assert stop_all(daemons[1:]) == [0] * (DAEMONS - 1)
    finally:
        for d in daemons:
            d.kill_if_running()
    copies = Counter(m.message_id for m in smtp_sink.messages)
    replies = {str(mid) for (mid,) in db_rows(pg_url, "select message_id from outbox")}
    second = sum(c - 1 for c in copies.values())
    print(f"\n{DAEMONS} daemons, default leases: pid {pid} SIGKILLed holding {len(held)} "
          f"replies ({in_data} in DATA) and {len(held_inbound)} stored mails; taken over "
          f"and sent in {took:.1f} s; {len(smtp_sink.messages)} mails at the sink for "
          f"{len(replies)} replies, {second} second copies, "
          f"{len(smtp_sink.unacknowledged)} unacknowledged")
    assert len(replies) == n and set(copies) == replies
    assert second == 0
