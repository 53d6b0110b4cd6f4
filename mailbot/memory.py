"""The C allocator of a long-running process (glibc's malloc; elsewhere nothing is done).

A daemon's Python objects after a catch-up of thousands of mails are few, but glibc keeps the
memory they took: each thread that allocates may get an arena of its own (up to eight per
core), and once a large block (a raw mail, a pickled batch) has been freed, blocks up to its
size are no longer mapped apart but carved from those arenas, where freed holes stay
resident. So the daemon and its decision processes (`tune`) keep two arenas and map every
block of 128 KiB and more apart (returned to the system when freed), and the daemon gives
the free pages inside the arenas back after a burst of work (`trim`).

A MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ in the environment is left as the operator set
it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

ARENAS = 2
MMAP_THRESHOLD = 128 * 1024
# mallopt's parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

applied = False
"""Whether `tune` has run in this process and glibc took what it set."""


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
    """Set the arenas and the mapping threshold (see the module head) unless the environment
    sets them; early, before the process starts its threads. Returns whether it applied."""
    global applied
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok &= bool(libc.mallopt(_M_ARENA_MAX, ARENAS))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok &= bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    applied = ok
    return ok


def trim() -> bool:
    """Give the free memory inside the allocator's arenas back to the system (after a burst
    of work; a few milliseconds). Returns whether any was given back."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
