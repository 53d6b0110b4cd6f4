#!/usr/bin/env python3
"""End-to-end latency of `mailbot run`: request in → acknowledgement accepted by the relay.

    .venv/bin/python bench/daemon_latency.py [--n 200] [--only imap|lmtp]

Runs as root (it starts a private Dovecot, whose mail uid is `nobody`). Everything is on
127.0.0.1: Dovecot (IMAP), an aiosmtpd sink as the outbound relay (tests.fixtures.servers),
and the daemon itself as a subprocess, `mailbot run --config TMP.toml` (the installed script,
as systemd/mailbot.service runs it; `python -m mailbot` where there is none), with a
temporary SQLite store (WAL, as the daemon syncs it), the license registry imported first with
`mailbot licenses import`, an LMTP listener on a free port and an [[imap]] mailbox
(security = "none", IDLE).

Two series, one mail at a time (the next only after the previous ack reached the sink):
  * IMAP: APPEND over one logged-in IMAP connection → ack at the sink (IDLE wakes the
    poller). Target: median < 1 s, p99 < 3 s.
  * LMTP: smtplib.LMTP over one connection, from MAIL FROM → ack at the sink; the time to
    the LMTP 250 (= committed) is printed too. Target: median <= 25 ms.
Every request is unique (own Message-ID and body line), so dedup keeps them all; each ack
is checked to answer its own request (In-Reply-To).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.corpus import measure_this_tree  # noqa: E402

measure_this_tree()

from tests.e2e.helpers import LICENSES, request_mail
from tests.fixtures.servers import Dovecot, SmtpSink, free_port

PASSWORD_ENV = "MAILBOT_BENCH_IMAP_PASSWORD"
# The daemon as systemd/mailbot.service starts it: the installed `mailbot` script (its
# decision processes re-run that script's imports), else `python -m mailbot`.
_SCRIPT = Path(sys.executable).with_name("mailbot")
MAILBOT = [*([str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mailbot"]),
           "--log-level", os.environ.get("BENCH_DAEMON_LOG_LEVEL", "WARNING")]
ACK_TIMEOUT = 90.0  # > the poller's IDLE re-issue period (timeout_seconds / 2 = 30 s)
SLOW = 3.0  # an ack slower than this is listed


# --- shared with bench/imap_catchup.py --------------------------------------------------


def _drop_table(text: str, name: str) -> str:
    """Remove the top-level table `[name]` (header and its keys) from TOML text."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped == f"[{name}]"
        if not skipping:
            out.append(line)
    return "".join(out)


def write_config(tmp: Path, *, sink_port: int, lmtp_port: int | None,
                 imap_port: int | None, imap_user: str | None,
                 worker_poll: float | None = None) -> Path:
    """config/mailbot.toml with root = the repo, a temp SQLite store, outbound SMTP to the
    sink, an LMTP listener (or none) and one plain [[imap]] mailbox (or none)."""
    text = (ROOT / "config" / "mailbot.toml").read_text(encoding="utf-8")
    text = text.replace('attachments_dir = "var/attachments"', f'attachments_dir = "{tmp}/attachments"')
    text = text.replace('url = "sqlite:///var/mailbot.db"', f'url = "sqlite:///{tmp}/mailbot.db"')
    assert f"{tmp}/mailbot.db" in text, "config/mailbot.toml: [store] url not found"
    for table in ("listener", "outbound"):
        text = _drop_table(text, table)
    # Only the acknowledgements go to the sink (each ack is waited for in turn).
    text, notices = re.subn(r"(?m)^staff_notify = .*$", "staff_notify = []", text)
    assert notices == 1, "config/mailbot.toml: [mailbox] staff_notify not found"
    # A load test: thousands of distinct senders within the hour, every one answered.
    text, capped = re.subn(r"(?m)^auto_replies_total_per_hour = .*$",
                           "auto_replies_total_per_hour = 1000000", text)
    assert capped == 1, "config/mailbot.toml: [conversation] auto_replies_total_per_hour not found"
    extra = [
        "\n[outbound]",
        'mode = "smtp"', 'host = "127.0.0.1"', f"port = {sink_port}", 'security = "none"',
        "\n[listener]",
        f"enabled = {'true' if lmtp_port else 'false'}", 'protocol = "lmtp"',
        'host = "127.0.0.1"', f"port = {lmtp_port or 2525}",
    ]
    if worker_poll is not None:
        extra += ["\n[worker]", f"poll_seconds = {worker_poll}"]
    if imap_port:
        extra += [
            "\n[[imap]]", 'name = "support"', 'host = "127.0.0.1"', f"port = {imap_port}",
            'security = "none"', f'username = "{imap_user}"', f'password_env = "{PASSWORD_ENV}"',
            'folder = "INBOX"', 'after_store = "flag"',
        ]
    # Experiments: TOML appended as is (e.g. "[worker]\nprocesses = 1").
    extra.append(os.environ.get("BENCH_CONFIG_APPEND", "").replace("\\n", "\n"))
    path = tmp / "mailbot.toml"
    path.write_text(f'root = "{ROOT}"\n' + text + "\n".join(extra) + "\n", encoding="utf-8")
    return path


def import_registry(config: Path, csv_path: Path) -> None:
    subprocess.run([*MAILBOT, "licenses", "import", str(csv_path), "--config", str(config)],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)


def start_daemon(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONFAULTHANDLER="1", **{PASSWORD_ENV: Dovecot.password})
    log = log_path.open("wb")
    try:
        return subprocess.Popen([*MAILBOT, "run", "--config", str(config)], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


def release(proc: subprocess.Popen[bytes] | None, sink: SmtpSink, dovecot: Dovecot) -> None:
    """Kill a daemon still running after a failure and stop the test servers."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(5)
    sink.stop()
    dovecot.stop()


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> tuple[int | None, float]:
    """SIGTERM, wait up to `timeout`; returns (exit code or None if it hung, seconds)."""
    t = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        rc: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        rc = None
        # PYTHONFAULTHANDLER=1 (set in start_daemon): SIGABRT dumps every thread's stack
        # into the daemon log, showing where the shutdown hangs.
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return rc, time.monotonic() - t


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"daemon did not listen on {port} within {timeout} s")


def start_dovecot(tmp: Path) -> Dovecot:
    if os.geteuid() != 0:
        sys.exit("run as root: Dovecot is started as root (mail uid nobody)")
    if shutil.which("dovecot") is None:
        sys.exit("dovecot not installed: run .ci/system-deps.sh")
    root = tmp / "dovecot"
    root.mkdir()
    server = Dovecot(root)
    server.start()
    return server


def percentiles(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)

    def pct(p: float) -> float:  # nearest rank: p99 of 200 is the 198th value
        return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]

    return {"median": statistics.median(s), "p90": pct(90), "p99": pct(99), "max": s[-1],
            "min": s[0]}


def fmt(stats: dict[str, float]) -> str:
    return "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in stats.items() if k != "min")


# --- the two series -----------------------------------------------------------------------


def unique_request(series: str, i: int) -> tuple[bytes, str]:
    body = (
        "Dobrý den,\n\npo kliknutí na Uložit se v ACS-line zobrazí chyba „Neplatný interval“ "
        "a směnný kalendář pro třetí směnu se neuloží. Prosím o radu, jak postupovat.\n\n"
        f"Měření {series} číslo {i}, značka {time.time_ns()}.\n\n"
        "Licenční číslo: 4012-7733\n\nS pozdravem\nPavel Dvořák\n"
    )
    # One sender per mail: a single one meets the auto-reply rate limit (3 an hour).
    raw = request_mail(subject=f"Nejde ulozit smenny kalendar ({series} {i})", body=body,
                       sender=f"bench-{series.lower()}-{i}@strojirny-hranice.cz")
    mid = re.search(rb"^Message-ID: (<[^>]+>)", raw, re.MULTILINE | re.IGNORECASE)
    assert mid is not None
    return raw, mid.group(1).decode()


def wait_ack(sink: SmtpSink, count: int, message_id: str, timeout: float = ACK_TIMEOUT) -> float:
    """Wait for the `count`-th message at the sink; check it answers `message_id`."""
    msgs = sink.wait_for(count, timeout)
    ack = msgs[count - 1]
    if message_id not in ack.data.decode("utf-8", "replace"):
        raise RuntimeError(f"ack #{count} does not answer {message_id}")
    if len(msgs) != count:
        raise RuntimeError(f"sink has {len(msgs)} messages, expected {count}")
    return ack.received_at


def imap_series(sink: SmtpSink, dovecot: Dovecot, user: str, n: int, warmup: int) -> list[float]:
    client = dovecot.imap(user)
    latencies: list[float] = []
    try:
        for i in range(warmup + n):
            raw, mid = unique_request("imap", i)
            t0 = time.monotonic()
            client.append("INBOX", raw)
            got = wait_ack(sink, len(sink.messages) + 1, mid)
            if i >= warmup:
                latencies.append(got - t0)
            if got - t0 > SLOW:
                print(f"  slow: IMAP mail #{i} acked after {got - t0:.1f} s")
    finally:
        client.logout()
    return latencies


def idle_baseline(dovecot: Dovecot, n: int) -> list[float]:
    """Dovecot alone: APPEND on one connection -> EXISTS seen by another in IDLE (a user
    mailbot does not watch). The floor under the IMAP series."""
    user = dovecot.new_user()
    writer, watcher = dovecot.imap(user), dovecot.imap(user)
    out: list[float] = []
    try:
        watcher.select_folder("INBOX")
        for i in range(n):
            watcher.idle()
            raw, _ = unique_request("baseline", i)
            t0 = time.monotonic()
            writer.append("INBOX", raw)
            deadline = t0 + 10
            while time.monotonic() < deadline:
                responses = watcher.idle_check(timeout=1)
                if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                    out.append(time.monotonic() - t0)
                    break
            watcher.idle_done()
    finally:
        writer.logout()
        watcher.logout()
    return out


def lmtp_series(sink: SmtpSink, port: int, n: int, warmup: int) -> tuple[list[float], list[float]]:
    to_ack: list[float] = []
    to_250: list[float] = []
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        for i in range(warmup + n):
            raw, mid = unique_request("lmtp", i)
            t0 = time.monotonic()
            refused = lmtp.sendmail("dvorak@strojirny-hranice.cz", ["podpora@estelar.example"], raw)
            t250 = time.monotonic()
            if refused:
                raise RuntimeError(f"LMTP refused: {refused}")
            got = wait_ack(sink, len(sink.messages) + 1, mid)
            if i >= warmup:
                to_ack.append(got - t0)
                to_250.append(t250 - t0)
    return to_ack, to_250


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200, help="mails per series")
    p.add_argument("--warmup", type=int, default=3, help="mails per series not counted")
    p.add_argument("--only", choices=("imap", "lmtp"), default=None)
    p.add_argument("--save-log", type=Path, default=None,
                   help="copy the daemon's log here (BENCH_DAEMON_LOG_LEVEL=INFO for more)")
    args = p.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="mailbot-latency-bench-") as tmpname:
        tmp = Path(tmpname)
        os.chmod(tmp, 0o755)
        dovecot = start_dovecot(tmp)
        sink = SmtpSink().start()
        proc = None
        try:
            user = dovecot.new_user()
            lmtp_port = free_port()
            config = write_config(tmp, sink_port=sink.port, lmtp_port=lmtp_port,
                                  imap_port=dovecot.imap_port, imap_user=user)
            (tmp / "licenses.csv").write_bytes(LICENSES)
            import_registry(config, tmp / "licenses.csv")
            proc = start_daemon(config, tmp / "daemon.log")
            wait_port(lmtp_port, proc)
            print(f"daemon pid {proc.pid}: LMTP 127.0.0.1:{lmtp_port}, IMAP {user} on "
                  f"127.0.0.1:{dovecot.imap_port} (IDLE), relay sink 127.0.0.1:{sink.port}")
            started = time.monotonic()
            if args.only in (None, "imap"):
                lat = imap_series(sink, dovecot, user, args.n, args.warmup)
                st = percentiles(lat)
                good = st["median"] < 1.0 and st["p99"] < 3.0
                ok &= good
                print(f"IMAP APPEND -> ack at sink, {len(lat)} mails one by one:")
                print(f"  {fmt(st)}   (target median < 1 s, p99 < 3 s: "
                      f"{'OK' if good else 'MISSED'})")
                base = idle_baseline(dovecot, 20)
                print(f"  reference, Dovecot alone (APPEND -> EXISTS in IDLE, {len(base)} "
                      f"mails): {fmt(percentiles(base))}")
            if args.only in (None, "lmtp"):
                lat, lat250 = lmtp_series(sink, lmtp_port, args.n, args.warmup)
                st = percentiles(lat)
                good = st["median"] <= 0.025
                ok &= good
                print(f"LMTP MAIL FROM -> ack at sink, {len(lat)} mails one by one:")
                print(f"  {fmt(st)}   (target median <= 25 ms: {'OK' if good else 'MISSED'})")
                print(f"  LMTP 250 (committed) after: {fmt(percentiles(lat250))}")
            print(f"wall time of the series: {time.monotonic() - started:.1f} s")
            rss = peak_rss_mb(proc.pid)
            rc, took = stop_daemon(proc)
            print(f"daemon peak RSS {rss:.0f} MB; SIGTERM -> exit {rc} after {took:.2f} s")
            ok &= rc == 0
        except BaseException:
            ok = False
            raise
        finally:
            release(proc, sink, dovecot)
            log = tmp / "daemon.log"
            if args.save_log is not None and log.exists():
                shutil.copyfile(log, args.save_log)
            if not ok and log.exists():
                print("--- daemon log (tail) ---")
                print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
