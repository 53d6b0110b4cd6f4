"""A 10,000-recipient campaign survives kills of the daemon (issue 7, reliability.md O1).

The campaign is queued with `mailbot news send` (one outbox row per recipient), then
`mailbot run` (a subprocess) sends it to the aiosmtpd sink, which answers 451 to the first
RCPT of 5 % of the addresses (chosen by a hash, so the same ones whatever the timing). The
daemon is stopped twice, at 30 % and 70 % of the mail at the sink, and started again:

* SIGKILL: every eligible recipient has the mail; a second copy exists only for messages in
  flight at a kill — at most the sender's concurrency per kill, with the same Message-ID;
* SIGTERM: no second copies at all.

Unsubscribed and ineligible contacts get nothing. Counts are printed (`pytest -s`).
`bench/news_throughput.py` reuses `prepare_campaign`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailbot.contacts import read_contacts_csv
from mailbot.registry import read_license_csv
from mailbot.store import Store
from tests.e2e.processes import DaemonProcess, daemon_config, db_rows, wait_until
from tests.fixtures.servers import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
N_ELIGIBLE = 10_000
CONCURRENCY = 4
KILL_AT = (0.3, 0.7)
FAIL_SHARE = 0.05
BUDGET_SECONDS = 240  # for the sending, per variant


@dataclass
class People:
    """The campaign's contacts by what they must get."""

    eligible: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)
    ineligible: list[str] = field(default_factory=list)


def write_config(tmp: Path, sink_port: int, *, concurrency: int = CONCURRENCY,
                 store_url: str | None = None, name: str = "mailbot.toml") -> Path:
    """A daemon that only sends: no listener, no scheduler, SMTP to the sink, 1 s retries;
    its store is SQLite in `tmp` unless `store_url` names another."""
    store_url = store_url or f"sqlite:///{tmp / 'mailbot.db'}"
    return daemon_config(tmp / name, f"""
[store]
url = "{store_url}"
attachments_dir = "{tmp / 'attachments'}"
[listener]
enabled = false
[schedule]
enabled = false
[outbound]
mode = "smtp"
host = "127.0.0.1"
port = {sink_port}
security = "none"
retry_base_seconds = 1
batch = 100
concurrency = {concurrency}
per_domain_concurrency = 2
[worker]
poll_seconds = 0.5
""")


def mailbot(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbot", *args, "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
        env=dict(os.environ, MAILBOT_LOG_LEVEL="WARNING"),
    )


def prepare_campaign(tmp: Path, sink_port: int, *, n_eligible: int, n_unsubscribed: int,
                     n_ineligible: int, concurrency: int = CONCURRENCY,
                     store_url: str | None = None) -> tuple[Path, People, float]:
    """Config, registry (100 HOTLINE licenses, 1 NONE), contacts over 50 domains, the
    unsubscriptions, then `news send example`. Returns (config, people, queueing seconds)."""
    store_url = store_url or f"sqlite:///{tmp / 'mailbot.db'}"
    config = write_config(tmp, sink_port, concurrency=concurrency, store_url=store_url)
    licenses = ["license,customer,email_domain,activated_on,support_tier,max_version_date"]
    licenses += [f"{50_000_000 + k},Zákazník {k} s.r.o.,z{k}.example,2025-01-01,HOTLINE,2099-12-31"
                 for k in range(100)]
    licenses.append("59999999,Bez podpory a.s.,none.example,2025-01-01,NONE,")
    people = People()
    rows = ["email,license,name,language"]
    for i in range(n_eligible):
        address = f"c{i}@d{i % 50}.example"
        people.eligible.append(address)
        rows.append(f"{address},{50_000_000 + i % 100},Jan Novák {i},{'en' if i % 10 == 0 else 'cs'}")
    for i in range(n_unsubscribed):
        address = f"u{i}@d{i % 50}.example"
        people.unsubscribed.append(address)
        rows.append(f"{address},{50_000_000 + i % 100},Odhlášený {i},cs")
    for i in range(n_ineligible):
        address = f"x{i}@none.example"
        people.ineligible.append(address)
        rows.append(f"{address},59999999,Bez podpory {i},cs")
    records, errors = read_license_csv("\n".join(licenses))
    contacts, contact_errors = read_contacts_csv("\n".join(rows))
    assert not errors and not contact_errors
    mailbot("db", "upgrade", config=config)
    store = Store.from_url(store_url)
    try:
        store.upsert_licenses(records)
        store.upsert_contacts(contacts)
        with store.transaction() as tx:
            for address in people.unsubscribed:
                tx.unsubscribe(address, None)
    finally:
        store.close()
    started = time.monotonic()
    mailbot("news", "send", "example", config=config)
    return config, people, time.monotonic() - started


@pytest.fixture(scope="module")
def queued_campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, People, float]:
    """The campaign queued once; each test sends from its own copy of the store."""
    tmp = tmp_path_factory.mktemp("news-campaign")
    config, people, queue_s = prepare_campaign(
        tmp, sink_port=1, n_eligible=N_ELIGIBLE, n_unsubscribed=200, n_ineligible=100)
    return tmp / "mailbot.db", people, queue_s


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_campaign_survives_two_stops(sig: int, queued_campaign, smtp_sink: SmtpSink,
                                     tmp_path: Path) -> None:
    db, people, queue_s = queued_campaign
    shutil.copy(db, tmp_path / "mailbot.db")
    config = write_config(tmp_path, smtp_sink.port)
    n = len(people.eligible)
    smtp_sink.fail_first_rcpt(FAIL_SHARE, seed="news-crash")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    started = time.monotonic()
    try:
        for share in KILL_AT:
            daemon.start()
            wait_until(lambda: len(smtp_sink.messages) >= share * n, BUDGET_SECONDS,
                       f"{share:.0%} of the mail reached the sink", daemon)
            daemon.stop(sig)
        daemon.start()

        def delivered() -> set[str]:
            return {m.rcpt_tos[0] for m in smtp_sink.messages}

        def settled() -> bool:
            if len(smtp_sink.messages) < n or len(delivered()) < n:
                return False
            return not db_rows(tmp_path / "mailbot.db",
                               "select 1 from outbox where state = 'queued' limit 1")

        wait_until(settled, BUDGET_SECONDS, "every recipient had the mail", daemon)
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.kill_if_running()
    elapsed = time.monotonic() - started

    messages = smtp_sink.messages
    copies = Counter(m.message_id for m in messages)
    ids_per_recipient: dict[str, set[str | None]] = defaultdict(set)
    for m in messages:
        assert len(m.rcpt_tos) == 1
        ids_per_recipient[m.rcpt_tos[0]].add(m.message_id)
    duplicates = sum(c - 1 for c in copies.values())
    failed_first = smtp_sink.first_rcpt_failed
    states = dict(db_rows(tmp_path / "mailbot.db",
                          "select state, count(*) from outbox group by state"))
    print(f"\n{signal.Signals(sig).name} at {', '.join(f'{s:.0%}' for s in KILL_AT)}: "
          f"{len(messages)} mails at the sink for {n} eligible recipients in {elapsed:.1f} s "
          f"(queued in {queue_s:.1f} s), {len(ids_per_recipient)} distinct recipients, "
          f"{duplicates} second copies, {len(failed_first)} first RCPTs answered 451 "
          f"({sink_share(failed_first, people):.1%} of the recipients), outbox {states}")

    assert set(ids_per_recipient) == set(people.eligible)  # everyone, and nobody else
    assert not set(ids_per_recipient) & set(people.unsubscribed + people.ineligible)
    # One Message-ID per recipient: a second copy is the same message sent again.
    assert all(len(ids) == 1 for ids in ids_per_recipient.values())
    assert len(failed_first) > 0.03 * n  # the 4xx really happened, and were retried
    assert failed_first <= set(ids_per_recipient)
    assert states == {"sent": n}
    if sig == signal.SIGTERM:
        assert duplicates == 0
    else:
        assert duplicates <= CONCURRENCY * len(KILL_AT)


def sink_share(addresses: set[str], people: People) -> float:
    return len(addresses & set(people.eligible)) / max(1, len(people.eligible))
