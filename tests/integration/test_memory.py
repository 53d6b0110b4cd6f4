"""mailbot.memory: glibc keeps freed holes between large blocks resident unless told; the
collector holds back while a process starts and then leaves what it built alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailbot import memory

glibc_only = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")

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


@glibc_only
def test_untuned_malloc_keeps_the_holes_resident() -> None:
    """The baseline the two others improve on: 25 MB live cost 50 MB."""
    [held] = resident()
    assert held >= 45


@glibc_only
def test_tune_maps_large_blocks_apart_so_freed_ones_leave() -> None:
    [held] = resident("tune")
    assert held <= 30


@glibc_only
def test_trim_gives_the_holes_back() -> None:
    held, trimmed = resident("trim")
    assert held >= 45 and trimmed <= 30


@glibc_only
def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's MALLOC_MMAP_THRESHOLD_ is kept: the holes stay as glibc was told."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(64 * 1024 * 1024))
    [held] = resident("tune")
    assert held >= 45


# 200 rounds of a 512 KiB block taken and freed again, as a decision process takes a task's
# raw mail and decoded parts; prints the page faults of the rounds.
ROUNDS = """
import resource, sys
from mailbot import memory

assert getattr(memory, sys.argv[1])()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    block = b"x" * (512 * 1024)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tuning: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, tuning], check=True,
                         capture_output=True, text=True).stdout
    return int(out)


@glibc_only
def test_a_decision_process_reuses_its_large_blocks_warm() -> None:
    """Mapped apart (the daemon's tuning), each 512 KiB block is 128 fresh pages, each
    faulted in and zeroed by the kernel; from a decision process's heap they are reused."""
    assert faults("tune") >= 200 * 100
    assert faults("tune_decision_process") < 2_000


# A process's life as mailbot.memory sees it: starting, building what it keeps, settled,
# then work that leaves cyclic garbage. Prints one line per stage.
LIFE = """
import gc, sys, weakref
from mailbot import memory

if "start" in sys.argv:
    memory.starting()
print("starting", gc.get_threshold()[0])
kept = [[i] for i in range(50_000)]  # what start-up builds (a config, compiled rules)
memory.settled()
print("settled", gc.get_threshold()[0], gc.get_freeze_count() >= 50_000)

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle: only the collector frees it
gone = weakref.ref(a)
del a, b
work = [[i] for i in range(2 * memory.GC_THRESHOLD)]  # new objects, no explicit collect
print("collected", gone() is None)
"""


def life(*args: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-c", LIFE, *args], check=True,
                         capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines()]


def test_a_starting_process_collects_rarely_then_freezes_its_start_up() -> None:
    assert life("start") == [
        ["starting", str(memory.START_GC_THRESHOLD)],
        ["settled", str(memory.GC_THRESHOLD), "True"],
        ["collected", "True"],  # the collector still runs on its own after settling
    ]


def test_settled_leaves_a_program_that_never_started_alone() -> None:
    """Code that merely runs mailbot's parts (the tests, an embedding program) keeps its
    collector as it was: nothing frozen, Python's own threshold."""
    default = str(__import__("gc").get_threshold()[0])
    assert life() == [["starting", default], ["settled", default, "False"],
                      ["collected", "True"]]


def test_every_mailbot_process_starts_with_the_collector_held_back() -> None:
    """`mailbot` and `python -m mailbot` run mailbot/__main__.py first."""
    out = subprocess.run([sys.executable, "-c", "import gc, mailbot.__main__; "
                          "print(gc.get_threshold()[0])"],
                         check=True, capture_output=True, text=True).stdout
    assert int(out) == memory.START_GC_THRESHOLD
