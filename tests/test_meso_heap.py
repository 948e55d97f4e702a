"""The rounds' heap reuse: large blocks freed inside ``reused_heap`` are served again without page faults."""

from __future__ import annotations

import ctypes
import resource

import pytest

from topograph.meso.optimise.heap import _libc, reused_heap


def _faults_of_allocations(n: int = 5, mb: int = 96) -> int:
    """Minor page faults of ``n`` malloc / touch / free cycles of an ``mb`` MB block (glibc's malloc, as torch's
    CPU allocator uses it)."""
    libc = _libc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        p = libc.malloc(mb << 20)
        libc.memset(p, 1, mb << 20)  # touch every page
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_libc() is None, reason="glibc only")
def test_reused_heap_avoids_page_faults_and_restores() -> None:
    outside = _faults_of_allocations()
    with reused_heap() as changed:
        inside = _faults_of_allocations()
    after = _faults_of_allocations()
    assert changed
    # outside, each 96 MB block is a fresh mmap (24 k page faults each); inside, at most the first one faults
    assert inside < 0.4 * outside, (inside, outside)
    assert after > 0.6 * outside, (after, outside)  # the thresholds are small again afterwards
