#!/usr/bin/env python3
"""IMAP catch-up: N mails already waiting in the folder when `mailbot run` starts.

    .venv/bin/python bench/imap_catchup.py [--n 5000] [--seed 42] [--limit 300]

Runs as root (private Dovecot). Generates N realistic mails with
../shared/tools/gen_corpus.py (deterministic), APPENDs them all over one IMAP connection,
imports a license registry built from the corpus manifest (the tier mix of bench/replay.py),
then starts the daemon as a subprocess (`mailbot run`, the installed script as in
bench/daemon_latency.py; temp SQLite, outbound SMTP to an aiosmtpd sink, one plain [[imap]]
mailbox) and polls the SQLite file read-only until
  1. intake:  the IMAP checkpoint reached the last UID (every mail stored or deduplicated),
  2. decided: no inbound row left in state `received`,
  3. drained: no outbox row left `queued` and the sink holds every `sent` row.
Prints mails/s for intake and for decided (from the daemon's start; target >= 600 mails/s),
the peak RSS (VmHWM, sampled every 0.1 s) of the daemon and each of its children and their
sum (target < 250 MB), beside it their peak PSS (shared pages counted once: the highest sum
at one sample), the CPU of the whole process tree per mail (and of the daemon alone), and
whether SIGTERM makes it exit 0 within 10 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAILBOT_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_latency import (
    import_registry,
    peak_rss_mb,
    start_daemon,
    start_dovecot,
    release,
    stop_daemon,
    write_config,
)

from bench.corpus import generate, registry_from
from bench.hostile import tree_cpu_seconds
from tests.fixtures.bombs import PeakRss
from tests.fixtures.servers import SmtpSink

RSS_TARGET_MB = 250.0


def own_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of `pid` alone, without its children."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(db: Path) -> dict[str, object]:
    """Counts from the daemon's SQLite file, read-only (WAL lets us read beside it)."""
    out: dict[str, object] = {"inbound": {}, "outbox": {}, "last_uid": 0, "error": None}
    if not db.exists():
        return out
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            out["inbound"] = dict(c.execute(
                "SELECT state, count(*) FROM inbound_messages GROUP BY state").fetchall())
            out["outbox"] = dict(c.execute(
                "SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
            row = c.execute("SELECT max(last_uid), max(last_error) FROM imap_checkpoints").fetchone()
            out["last_uid"] = int(row[0] or 0)
            out["error"] = row[1]
    except sqlite3.OperationalError as exc:  # schema not created yet, or busy
        out["error"] = f"poll: {exc}"
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--limit", type=float, default=300.0, help="give up after this many s")
    args = p.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="mailbot-catchup-bench-") as tmpname:
        tmp = Path(tmpname)
        os.chmod(tmp, 0o755)
        t = time.monotonic()
        corpus = tmp / "corpus"
        manifest = generate(args.n, args.seed, corpus, to="podpora@estelar.example")
        files = sorted(corpus.glob("*.eml"))
        size = sum(f.stat().st_size for f in files)
        print(f"corpus: {len(files)} mails, {size / 1e6:.1f} MB (seed {args.seed}), "
              f"generated in {time.monotonic() - t:.1f} s")
        dovecot = start_dovecot(tmp)
        sink = SmtpSink().start()
        proc = None
        try:
            user = dovecot.new_user()
            client = dovecot.imap(user)
            t = time.monotonic()
            try:
                for f in files:
                    client.append("INBOX", f.read_bytes())
                info = client.select_folder("INBOX", readonly=True)
                last_uid = int(info[b"UIDNEXT"]) - 1
                exists = int(info[b"EXISTS"])
            finally:
                client.logout()
            print(f"APPENDed {exists} mails over one IMAP connection in "
                  f"{time.monotonic() - t:.1f} s (last UID {last_uid})")
            config = write_config(tmp, sink_port=sink.port, lmtp_port=None,
                                  imap_port=dovecot.imap_port, imap_user=user)
            n_lic = registry_from(manifest, tmp / "licenses.csv")
            import_registry(config, tmp / "licenses.csv")
            db = tmp / "mailbot.db"
            print(f"registry: {n_lic} licenses; starting the daemon")

            t0 = time.monotonic()
            proc = start_daemon(config, tmp / "daemon.log")
            tree_rss = PeakRss(proc.pid, pss=True).start()
            marks: dict[str, float] = {}
            snap: dict[str, object] = {}
            polls = 0
            while time.monotonic() - t0 < args.limit and polls < args.limit * 10:
                polls += 1
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited early with {proc.returncode}")
                snap = snapshot(db)
                now = time.monotonic() - t0
                if os.environ.get("BENCH_TRACE_RSS") and polls % 5 == 0:
                    tree_rss.sample()
                    peaks = " ".join(f"{tree_rss.labels[p][:6]}:{mb:.0f}"
                                     for p, mb in sorted(tree_rss.peaks.items()))
                    print(f"  {now:5.1f} s: {snap['inbound']} peak RSS {peaks}, "
                          f"PSS sum {tree_rss.pss_sum_peak:.0f} MB")
                inbound: dict[str, int] = snap["inbound"]  # type: ignore[assignment]
                outbox: dict[str, int] = snap["outbox"]  # type: ignore[assignment]
                stored = sum(inbound.values())
                if stored and "first_stored" not in marks:
                    marks["first_stored"] = now
                if int(snap["last_uid"]) >= last_uid and "intake" not in marks:  # type: ignore[call-overload]
                    marks["intake"] = now
                if "intake" in marks and stored and not inbound.get("received"):
                    marks.setdefault("decided", now)
                if ("decided" in marks and not outbox.get("queued")
                        and len(sink.messages) >= outbox.get("sent", 0)):
                    marks["drained"] = now
                    break
                time.sleep(0.1)
            rss = peak_rss_mb(proc.pid)
            cpu = tree_cpu_seconds(proc.pid)
            own_cpu = own_cpu_seconds(proc.pid)
            tree_rss.stop()
            rc, took = stop_daemon(proc, 10.0)
            snap = snapshot(db)
            inbound = snap["inbound"]  # type: ignore[assignment]
            outbox = snap["outbox"]  # type: ignore[assignment]
            stored = sum(inbound.values())
            decided = stored - inbound.get("received", 0)

            print(f"stored {stored} of {exists} (dedup dropped {exists - stored}); "
                  f"inbound states {dict(sorted(inbound.items()))}")
            print(f"outbox {dict(sorted(outbox.items()))}; sink received "
                  f"{len(sink.messages)} over {sink.connection_count} connection(s)")
            if "first_stored" in marks:
                print(f"first mail stored {marks['first_stored']:.2f} s after the daemon's start")
            for key, what, count in (("intake", "intake (stored, checkpointed)", exists),
                                     ("decided", "decided", decided)):
                if key in marks:
                    target = " (target >= 600 mails/s)" if key == "decided" else ""
                    print(f"{what:30s} all {count} after {marks[key]:6.1f} s = "
                          f"{count / marks[key]:6.1f} mails/s{target}")
                else:
                    ok = False
                    print(f"{what:30s} NOT finished within {args.limit:.0f} s "
                          f"(last snapshot {snap})")
            if "drained" in marks:
                print(f"{'outbox drained to the sink':30s} after {marks['drained']:6.1f} s")
            else:
                ok = False
                print("outbox NOT drained in time")
            total = sum(tree_rss.peaks.values())
            rss_ok = rss is not None and total < RSS_TARGET_MB
            ok &= rss_ok
            parts = ", ".join(f"{tree_rss.labels.get(pid, '?')} {mb:.0f}"
                              for pid, mb in sorted(tree_rss.peaks.items()))
            print(f"peak RSS (VmHWM) of the daemon and its children together: {total:.0f} MB "
                  f"({parts}; target < {RSS_TARGET_MB:.0f} MB: {'OK' if rss_ok else 'MISSED'})")
            pss_parts = ", ".join(f"{tree_rss.labels.get(pid, '?')} {mb:.0f}"
                                  for pid, mb in sorted(tree_rss.pss_peaks.items()))
            print(f"peak PSS (shared pages counted once) of them together: "
                  f"{tree_rss.pss_sum_peak:.0f} MB ({pss_parts})")
            print(f"CPU of the daemon and its children: {cpu:.1f} s = "
                  f"{cpu / max(1, decided) * 1000:.2f} ms per mail (IMAP fetch, store, decide, "
                  f"send); the daemon itself {own_cpu:.1f} s = "
                  f"{own_cpu / max(1, decided) * 1000:.2f} ms per mail")
            stop_ok = rc == 0 and took <= 10.0
            ok &= stop_ok
            print(f"SIGTERM -> exit code {rc} after {took:.2f} s (want 0 within 10 s: "
                  f"{'OK' if stop_ok else 'FAILED'})")
            if snap.get("error"):
                print(f"IMAP checkpoint last_error: {snap['error']}")
        except BaseException:
            ok = False
            raise
        finally:
            release(proc, sink, dovecot)
            log = tmp / "daemon.log"
            if not ok and log.exists():
                print("--- daemon log (tail) ---")
                print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
