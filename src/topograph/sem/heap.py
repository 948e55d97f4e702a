"""Fewer page faults in an SEM run: one malloc arena and block reuse (glibc only; elsewhere a no-op).

An SEM run allocates and frees image-sized buffers (1–12 MP of float32: 4–48 MB each) thousands of times:
OpenCV's DIS solvers, the warps and checks of every flow, the patch alignment's work arrays. glibc gives
each worker thread an arena of its own, grown and shrunk in 64 MB heaps, and serves large blocks with fresh
``mmap`` calls that it returns on ``free``, so the same memory is faulted in and zeroed by the kernel again
and again: on quartz (3 × 1200², two threads) ~0.7 M page faults and 2–6 of 22–27 CPU-seconds in the
kernel (docs/benchmarks.md, issue 21, session 12). While :func:`reused_heap` is held, the threads share the main
arena (``M_ARENA_MAX`` 1: freed blocks of one thread serve the next allocation of the other; a process-wide
setting that glibc fixes for good once the arena limit has been computed) and blocks below 32 MB come from
the heap and stay there up to 128 MB of free space (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``); afterwards
the thresholds return to glibc's defaults and the free memory to the system (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""glibc ``mallopt`` parameters (malloc.h)."""

MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks below this come from the heap during a run (glibc's own adaptive threshold reaches it too, but
only per arena and after a first free)."""
TRIM_THRESHOLD_BYTES = 128 << 20
"""Free heap space kept for reuse during a run (a few image buffers: peak memory stays within ~50 MB)."""
DEFAULT_THRESHOLD_BYTES = 128 * 1024
"""glibc's initial mmap and trim thresholds, set again after the run."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


@contextmanager
def reused_heap() -> Iterator[bool]:
    """One arena and heap reuse while the block runs (module docstring).

    Yields:
        True when the allocator was tuned (glibc), False otherwise.
    """
    libc = _glibc()
    tuned = bool(
        libc
        and libc.mallopt(M_ARENA_MAX, 1)
        and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    try:
        yield tuned
    finally:
        if tuned:
            libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD_BYTES)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD_BYTES)
            libc.malloc_trim(0)
