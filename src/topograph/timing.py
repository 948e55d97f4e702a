"""Wall time of the stages of a run: one helper and one key convention.

Convention: a run's timings are a mapping named ``timings_s`` (seconds) whose keys are stage names without
a unit suffix (``load``, ``match``, ``round_shift``) and ``total`` for the whole run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType


class Timings:
    """Collects the seconds spent per stage (a stage timed twice adds up)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + time.perf_counter() - t0

    def add(self, stage: str, seconds: float) -> None:
        """Record time measured elsewhere (e.g. by a stage that times its own parts)."""
        self._seconds[stage] = self._seconds.get(stage, 0.0) + float(seconds)

    def frozen(self, total: bool = True) -> Mapping[str, float]:
        """A read-only copy; with ``total`` the seconds since this object was created are added as ``total``."""
        out = dict(self._seconds)
        if total:
            out["total"] = time.perf_counter() - self._start
        return MappingProxyType(out)
