"""The memory of a long-running process: glibc's allocator and Python's cyclic collector.

A daemon's Python objects after a catch-up of thousands of mails are few, but glibc keeps the
memory they took: each thread that allocates may get an arena of its own (up to eight per
core), and once a large block (a raw mail, a pickled batch) has been freed, blocks up to its
size are no longer mapped apart but carved from those arenas, where freed holes stay
resident. So the daemon (`tune`) keeps two arenas and maps every block of 128 KiB and more
apart (returned to the system when freed), and gives the free pages inside the arenas back
after a burst of work (`trim`).

A decision process (`tune_decision_process`) has one thread and handles one task at a time,
whose large blocks (the task's raw mail, its decoded parts, the pickled results) are freed
when it ends and needed again, of the same sizes, by the next: there blocks up to 1 MiB come
from the heap, whose free top is given back beyond 4 MiB. Mapped apart, every such block was
fresh pages, zeroed by the kernel at each first touch: 130,000 page faults per decision
process in a 5,000-mail replay, 13,000 this way, and 3-7 % less CPU for the whole replay.

A MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment is
left as the operator set it.

Start-up (imports, the config, compiled rules, the learned models, the license registry)
builds 40,000 (a decision process) to 100,000 (the daemon) objects that live as long as the
process. Python's cyclic collector, at its usual thresholds, walked them over and over while
they were built and again at every full collection after (~5 % of a replay's CPU). So a
mailbot process (the command line, `mailbot/__main__.py`, and each decision process,
`mailbot.isolation`) collects only rarely while `starting`, and once `settled` (the daemon
built, replay's store open, a decision process given its registry) it freezes what it
built: later collections walk only what is newer.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys

ARENAS = 2
MMAP_THRESHOLD = 128 * 1024
DECISION_MMAP_THRESHOLD = 1024 * 1024
DECISION_TRIM_THRESHOLD = 4 * 1024 * 1024
# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# A collection of the youngest objects runs after this many new ones (Python's own: 700):
# while starting, and once settled (the objects of a batch of mail live as long as the
# batch, and a collection that finds them alive only walks them).
START_GC_THRESHOLD = 100_000
GC_THRESHOLD = 10_000
_starting = False

applied = False
"""Whether `tune` or `tune_decision_process` has run in this process and glibc took what it
set."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> bool:
    """Set the daemon's arenas and mapping threshold (see the module head) unless the
    environment sets them; early, before the process starts its threads. Returns whether it
    applied."""
    return _mallopt({"MALLOC_ARENA_MAX": (_M_ARENA_MAX, ARENAS),
                     "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD)})


def tune_decision_process() -> bool:
    """`tune` for a decision process (see the module head): blocks up to 1 MiB from its heap,
    whose free top is kept up to 4 MiB."""
    return _mallopt({"MALLOC_ARENA_MAX": (_M_ARENA_MAX, ARENAS),
                     "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, DECISION_MMAP_THRESHOLD),
                     "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, DECISION_TRIM_THRESHOLD)})


def _mallopt(settings: dict[str, tuple[int, int]]) -> bool:
    """glibc's `mallopt` of each (parameter, value) whose variable the environment does not
    set; whether glibc took them all (False without glibc)."""
    global applied
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    for variable, (param, value) in settings.items():
        if variable not in os.environ:
            ok &= bool(libc.mallopt(param, value))
    applied = ok
    return ok


def trim() -> bool:
    """Give the free memory inside the allocator's arenas back to the system (after a burst
    of work; a few milliseconds). Returns whether any was given back."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def starting() -> None:
    """This process is starting (see the module head): the collector runs only after every
    `START_GC_THRESHOLD` new objects until `settled`."""
    global _starting
    _starting = True
    gc.set_threshold(START_GC_THRESHOLD, *gc.get_threshold()[1:])


def settled() -> None:
    """Start-up is over: freeze what it built (no later collection walks it; a collection
    here found only a few unreachable objects, not worth its ~30 ms) and collect every
    `GC_THRESHOLD` new objects from now on. Only in a process that called `starting`: a
    program that merely runs the daemon's code (the tests) keeps its own collector."""
    global _starting
    if not _starting:
        return
    _starting = False
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
