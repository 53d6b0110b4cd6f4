"""The README's quick start, run as written on a fresh copy of the repository.

The copy holds the files a clone would (tracked and new, not ignored: no `var/`, no
`../shared` beside it); its `.venv` is a link to the virtualenv running the tests (installing
one would need the network), and `PYTHONPATH` makes that interpreter import the copy's code.
`make run` is run as it is, told only not to reinstall (`-o .venv/.installed`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.processes import ROOT, listening

QUICK_PORT = 2525  # the embedded default's listener, as the quick start uses it
TAG = re.compile(r"\[#T-\d{4}-000001\]")


def quick_start_blocks(readme: str) -> tuple[list[str], list[str]]:
    """The commands of the quick start's first block (set-up) and second block (first mail)."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the quick start should have its set-up and first-mail blocks"

    def commands(block: str) -> list[str]:
        return [line.split("  #", 1)[0].strip() for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]

    return commands(blocks[0]), commands(blocks[1])


def fresh_copy(dest: Path) -> Path:
    """The files of a clone of this repository (tracked plus new, not ignored) under `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, timeout=60).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def test_readme_quick_start_on_a_fresh_clone(tmp_path: Path) -> None:
    """`make run`, then the first-mail block: the registry from `examples/`, the sample
    request, and the acknowledgement with its ticket tag in `var/sent/`."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("git and make are needed to run the quick start")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no clone to copy")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "mailbot").exists():
        pytest.skip(f"the tests do not run in a virtualenv with mailbot installed ({venv})")
    assert not listening(QUICK_PORT), f"port {QUICK_PORT} is taken: the quick start needs it"

    setup, first_mail = quick_start_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert setup[0] == "make run", setup
    clone = fresh_copy(tmp_path / "mailbot")
    assert not (clone / "var").exists() and not (clone.parent / "shared").exists()
    (clone / ".venv").symlink_to(venv, target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(clone), MAILBOT_LOG_LEVEL="INFO")
    env.pop("MAILBOT_CONFIG", None)

    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(["make", "-o", ".venv/.installed", "run"], cwd=clone, env=env,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not listening(QUICK_PORT):
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "make run: no listener within 60 s"
            time.sleep(0.1)

        outputs: list[str] = []
        for command in first_mail:
            for _ in range(100):  # the reply is written a moment after the mail is taken in
                done = subprocess.run(["bash", "-c", command], cwd=clone, env=env,
                                      capture_output=True, text=True, timeout=60)
                if not command.startswith("ls var/sent") or TAG.search(done.stdout):
                    break
                time.sleep(0.1)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs.append(done.stdout)
        sent = next(o for c, o in zip(first_mail, outputs) if c.startswith("ls var/sent"))
        assert TAG.search(sent), sent
        assert "Auto-Submitted: auto-replied" in sent
        assert "dvorak@strojirny-hranice.cz" in sent
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
        log.close()
    # make itself dies of the SIGTERM sent to the group; the daemon says it stopped cleanly.
    assert "stopped (event-loop lag" in (tmp_path / "daemon.log").read_text()
