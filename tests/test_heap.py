"""Heap reuse (topograph.heap): freed large blocks are served again without page faults, and glibc's
thresholds are small again afterwards."""

from __future__ import annotations

import ctypes
import resource

import numpy as np
import pytest

from topograph.heap import MESO_ROUNDS, SEM_RUN, glibc, reused_heap

pytestmark = pytest.mark.skipif(glibc() is None, reason="the heap tuning is glibc's")


def _faults_of_malloc_cycles(n: int = 5, mb: int = 96) -> int:
    """Minor page faults of ``n`` malloc / touch / free cycles of an ``mb`` MB block (glibc's malloc, as
    torch's CPU allocator uses it)."""
    libc = glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        p = libc.malloc(mb << 20)
        libc.memset(p, 1, mb << 20)  # touch every page
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _faults_of_numpy_churn(n: int = 20, size_bytes: int = 12 << 20) -> int:
    """Minor page faults of allocating, filling and freeing ``n`` image-sized float32 arrays in turn."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        buffer = np.empty(size_bytes // 4, np.float32)
        buffer.fill(1.0)  # touch every page
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_meso_rounds_tuning_avoids_page_faults_and_restores() -> None:
    outside = _faults_of_malloc_cycles()
    with reused_heap(MESO_ROUNDS) as tuned:
        inside = _faults_of_malloc_cycles()
    after = _faults_of_malloc_cycles()
    assert tuned
    # outside, each 96 MB block is a fresh mmap (24 k page faults each); inside, at most the first one faults
    assert inside < 0.4 * outside, (inside, outside)
    assert after > 0.6 * outside, (after, outside)  # the thresholds are small again afterwards


def test_sem_run_tuning_serves_freed_image_buffers_without_new_page_faults() -> None:
    with reused_heap(SEM_RUN):
        pass  # afterwards glibc's fixed initial thresholds hold (not its adaptive one): large blocks are mapped afresh
    outside = _faults_of_numpy_churn()
    with reused_heap(SEM_RUN) as tuned:
        assert tuned
        _faults_of_numpy_churn(2)  # the first buffer grows the heap once
        inside = _faults_of_numpy_churn()
    assert outside >= 20, outside  # at least one fault per fresh buffer
    assert inside * 10 <= outside, (inside, outside)
