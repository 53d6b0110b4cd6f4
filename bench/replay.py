#!/usr/bin/env python3
"""Benchmark: `mailbot replay` (live, SQLite) over a generated corpus vs a bare stdlib parse.

    .venv/bin/python bench/replay.py [--n 5000] [--seed 42]

Generates the corpus with ../shared/tools/gen_corpus.py (deterministic, so figures compare
between runs), builds a license registry from its manifest (customers with START and paid
tiers), then in one run measures:
  * bare: email.message_from_bytes(raw, policy=email.policy.default) for every mail;
  * replay: `mailbot replay DIR` exactly as the CLI runs it (store, decide, act, outbox),
    in a subprocess so its peak RSS is its own.
Prints mails/s for both, the ratio (target ≥ 25 %), decisions, and peak RSS.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import generate, registry_from  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-") as tmp:
        t = Path(tmp)
        corpus = t / "corpus"
        manifest = generate(args.n, args.seed, corpus)
        licenses = registry_from(manifest, t / "licenses.csv")
        files = sorted(corpus.glob("*.eml"))
        raws = [f.read_bytes() for f in files]
        size = sum(map(len, raws))

        start = time.perf_counter()
        for raw in raws:
            email.message_from_bytes(raw, policy=email.policy.default)
        bare = len(raws) / (time.perf_counter() - start)

        config = t / "mailbot.toml"
        text = (ROOT / "config" / "mailbot.toml").read_text(encoding="utf-8")
        text = text.replace('attachments_dir = "var/attachments"', f'attachments_dir = "{t}/attachments"')
        text = text.replace('url = "sqlite:///var/mailbot.db"', f'url = "sqlite:///{t}/bench.db"')
        # Every generated request is answered, as before the total cap on automatic replies.
        text = text.replace("auto_replies_total_per_hour = 200", "auto_replies_total_per_hour = 1000000")
        config.write_text(f'root = "{ROOT}"\n' + text, encoding="utf-8")
        mailbot = [sys.executable, "-m", "mailbot", "--log-level", "WARNING"]
        subprocess.run([*mailbot, "licenses", "import", str(t / "licenses.csv"),
                        "--config", str(config)], check=True, stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        proc = subprocess.run([*mailbot, "replay", str(corpus), "--now",
                               "2026-11-25T10:00:00+01:00", "--config", str(config)],
                              check=True, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        replay = len(raws) / elapsed
        summary = proc.stdout.strip().splitlines()[-1]
        print(f"corpus: {len(raws)} generated mails, {size / 1e6:.1f} MB, seed {args.seed}, "
              f"{licenses} licenses")
        print(f"bare email.message_from_bytes(policy=default): {bare:8.0f} mails/s")
        print(f"mailbot replay (live, SQLite WAL FULL):        {replay:8.0f} mails/s "
              f"({elapsed:.1f} s incl. start-up)")
        print(f"ratio: {replay / bare:.1%} of a bare parse (target >= 25 %)")
        print(f"peak RSS of the replay process: {usage.ru_maxrss / 1024:.0f} MB")
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
