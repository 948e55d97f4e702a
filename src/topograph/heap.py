"""Heap reuse for allocation-heavy stages (glibc only; elsewhere a no-op).

Both engines allocate and free the same image-sized buffers many times: the meso rounds' step tensors
(15-125 MB; a 21-photo step at 500x375 has 3.9 M samples), the SEM run's OpenCV DIS solvers, warps and patch
work arrays (1-12 MP of float32). glibc serves blocks above its mmap threshold with fresh ``mmap`` calls and
returns them on ``free``, and gives each worker thread an arena of its own, so the same memory is faulted in
and zeroed by the kernel again and again: measured 1.1 s of system CPU per 2.9 s iteration of a 21 x 1 MP
height round and ~0.7 M page faults on quartz (docs/benchmarks.md, issue 18 and issue 21). While
:func:`reused_heap` is held, freed blocks below the mmap threshold stay in the heap for the next allocation;
afterwards glibc's initial thresholds are set again and the free memory is returned (``malloc_trim``), so
later stages start from the same footprint.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""glibc ``mallopt`` parameters (malloc.h)."""

DEFAULT_THRESHOLD_BYTES = 128 * 1024
"""glibc's initial mmap and trim thresholds, set again when the block ends."""


@dataclass(frozen=True)
class HeapTuning:
    """How :func:`reused_heap` tunes glibc's allocator."""

    mmap_threshold_bytes: int
    """Blocks below this come from the heap while the block runs."""
    trim_threshold_bytes: int
    """Free heap space kept for reuse while the block runs."""
    single_arena: bool = False
    """Let every thread share the main arena (``M_ARENA_MAX`` 1: a block freed by one thread serves the next
    allocation of another). Process-wide and for good: glibc fixes the arena limit once it is computed."""


MESO_ROUNDS = HeapTuning(1 << 30, 1 << 30)
"""The meso rounds: every step tensor (up to ~125 MB at 21 x 1 MP) stays in the heap."""
SEM_RUN = HeapTuning(32 << 20, 128 << 20, single_arena=True)
"""An SEM run: image buffers up to 32 MB reused, at most 128 MB kept free (peak memory within ~50 MB);
OpenCV's worker threads share one arena."""


@functools.cache
def glibc() -> ctypes.CDLL | None:
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
def reused_heap(tuning: HeapTuning) -> Iterator[bool]:
    """Keep freed blocks in the heap while the block runs (module docstring).

    Yields:
        True when the allocator was tuned (glibc), False otherwise.
    """
    libc = glibc()
    tuned = bool(
        libc
        and (not tuning.single_arena or libc.mallopt(M_ARENA_MAX, 1))
        and libc.mallopt(M_MMAP_THRESHOLD, tuning.mmap_threshold_bytes)
        and libc.mallopt(M_TRIM_THRESHOLD, tuning.trim_threshold_bytes)
    )
    try:
        yield tuned
    finally:
        if tuned:
            libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD_BYTES)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD_BYTES)
            libc.malloc_trim(0)
