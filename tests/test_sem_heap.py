"""The SEM run's heap tuning (topograph.sem.heap): freed image-sized buffers are reused, not faulted in again."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from topograph.sem import heap


def _page_faults_of_churn(n: int = 20, size_bytes: int = 12 << 20) -> int:
    """Minor page faults of allocating, filling and freeing ``n`` image-sized float32 buffers in turn."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        buffer = np.empty(size_bytes // 4, np.float32)
        buffer.fill(1.0)  # touch every page
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_reused_heap_serves_freed_buffers_without_new_page_faults() -> None:
    if heap._glibc() is None:
        pytest.skip("the heap tuning is glibc's")
    with heap.reused_heap():
        pass  # afterwards glibc's fixed default thresholds hold: large blocks are mapped afresh
    outside = _page_faults_of_churn()
    with heap.reused_heap() as tuned:
        assert tuned
        _page_faults_of_churn(2)  # the first buffer grows the heap once
        inside = _page_faults_of_churn()
    assert outside >= 20, outside  # at least one fault per fresh buffer
    assert inside * 10 <= outside, (inside, outside)
