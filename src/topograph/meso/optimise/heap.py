"""Heap reuse for the optimisation rounds (glibc only; elsewhere a no-op).

Every iteration of a round allocates and frees the same tens of tensors of 15-125 MB (a 21-photo step at
500x375 has 3.9 M samples). glibc serves blocks above its mmap threshold (at most 32 MB) with fresh
``mmap`` calls and returns them on ``free``, so each iteration page-faults its whole working set again:
measured 1.1 s of system CPU per 2.9 s iteration of a 21 x 1 MP height round (docs/benchmarks.md, issue
18). While the rounds run, :func:`reused_heap` raises the mmap and trim thresholds so that freed blocks stay
in the heap for the next iteration (system CPU 0.0 s per iteration), and afterwards restores small
thresholds and returns the freed memory to the system (``malloc_trim``), so the later full-resolution
stages start from the same footprint as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("topograph")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc ``mallopt`` parameters (malloc.h)."""

RESTORED_THRESHOLD = 128 * 1024
"""glibc's initial mmap and trim thresholds (bytes), set again after the rounds."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
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
def reused_heap(threshold_bytes: int = 1 << 30) -> Iterator[bool]:
    """Keep freed blocks below ``threshold_bytes`` in the heap while the block runs (module docstring).

    Yields:
        True when the thresholds were changed (glibc), False otherwise.
    """
    libc = _libc()
    changed = bool(
        libc and libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes) and libc.mallopt(M_TRIM_THRESHOLD, threshold_bytes)
    )
    try:
        yield changed
    finally:
        if changed:
            libc.mallopt(M_MMAP_THRESHOLD, RESTORED_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, RESTORED_THRESHOLD)
            libc.malloc_trim(0)
