"""Shared by the bench scripts: the deterministic generated corpus and a license registry
made from its manifest, so figures compare between runs and scripts."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAILBOT_SHARED", ROOT.parent / "shared"))
TIERS = ["START", "HOTLINE", "HOTLINE_PLUS", "SPECIAL", "START", "NONE"]


def measure_this_tree() -> None:
    """Make every mailbot subprocess of this bench import the mailbot of the tree the bench
    script is in: the venv's `mailbot` script and `python -m mailbot` run elsewhere would
    import the tree its editable install names, so a bench run from a second worktree (the
    tree before a change) would measure the other tree without a word."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def generate(n: int, seed: int, out: Path, *, to: str | None = None) -> Path:
    """Write `n` mails into `out` with ../shared/tools/gen_corpus.py; returns the manifest."""
    manifest = out.parent / f"{out.name}.manifest.jsonl"
    cmd = [sys.executable, str(SHARED / "tools" / "gen_corpus.py"), "--n", str(n),
           "--seed", str(seed), "--out", str(out), "--manifest", str(manifest)]
    if to:
        cmd += ["--to", to]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=300)
    return manifest


def registry_from(manifest: Path, path: Path) -> int:
    """A registry CSV of the corpus' licenses with a tier mix (START, paid tiers, NONE)."""
    seen: dict[str, str] = {}
    for line in manifest.read_text().splitlines():
        m = json.loads(line)
        if m.get("license") and m["license"] not in seen:
            seen[m["license"]] = m["from"].split("@")[-1]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["license", "customer", "email_domain", "activated_on", "support_tier",
                    "max_version_date"])
        for i, (lic, domain) in enumerate(sorted(seen.items())):
            w.writerow([lic, f"Customer {i}", domain, "2026-09-01", TIERS[i % len(TIERS)],
                        "2027-03-01"])
    return len(seen)
