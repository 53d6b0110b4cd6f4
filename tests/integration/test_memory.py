"""mailbot.memory: glibc keeps freed holes between large blocks resident unless told."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailbot import memory

pytestmark = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")

# A freed 4 MB block lifts glibc's mapping threshold; then 200 blocks of 256 KiB, every
# other one freed again: 25 MB live. Prints the resident growth in MB, before and after
# an optional trim.
HOLES = """
import sys
from mailbot import memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

if "tune" in sys.argv:
    assert memory.tune()
warm = bytes(4 * 1024 * 1024)
del warm
before = rss()
blocks = [b"x" * (256 * 1024) for _ in range(200)]
del blocks[::2]
print(round(rss() - before))
if "trim" in sys.argv:
    assert memory.trim()
    print(round(rss() - before))
"""


def resident(*args: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", HOLES, *args], check=True,
                         capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def test_untuned_malloc_keeps_the_holes_resident() -> None:
    """The baseline the two others improve on: 25 MB live cost 50 MB."""
    [held] = resident()
    assert held >= 45


def test_tune_maps_large_blocks_apart_so_freed_ones_leave() -> None:
    [held] = resident("tune")
    assert held <= 30


def test_trim_gives_the_holes_back() -> None:
    held, trimmed = resident("trim")
    assert held >= 45 and trimmed <= 30


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's MALLOC_MMAP_THRESHOLD_ is kept: the holes stay as glibc was told."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(64 * 1024 * 1024))
    [held] = resident("tune")
    assert held >= 45
