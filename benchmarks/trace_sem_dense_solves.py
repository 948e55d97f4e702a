"""How busy the cores are during the SEM dense stage: a timeline of its DIS solves.

    python benchmarks/trace_sem_dense_solves.py DATASET OUT [--threads 2]

Runs ``run_sem`` (reusing OUT/cache, so a second run times the dense stage alone) with every DIS solve
wrapped, and prints the wall and process CPU seconds of ``fuse_dense`` (all flows and their fusion), the
number of solves, and the share of the stage's wall time with 0, 1 and ≥ 2 solves running. The share with
no solve running is the single-threaded work (warps, checks, fusion) that keeps a core idle; unlike the
wall time it stays comparable between runs on a loaded machine (docs/benchmarks.md, issue 21, session 13).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import cv2
import numpy as np

import topograph.matching.dense as flow_module
import topograph.sem.dense as dense_module
from topograph.sem import pipeline
from topograph.sem.config import SemConfig

SOLVES: list[tuple[float, float]] = []
LOCK = threading.Lock()
CREATE = cv2.DISOpticalFlow_create


class TimedSolver:
    """A DIS solver whose ``calc`` records its (start, end) wall time."""

    def __init__(self, preset: int) -> None:
        self.dis = CREATE(preset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dis, name)

    def calc(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.dis.calc(*args)
        with LOCK:
            SOLVES.append((t0, time.perf_counter()))
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    flow_module.cv2.DISOpticalFlow_create = TimedSolver
    spans: list[tuple[float, float, float]] = []
    fuse = dense_module.fuse_dense

    def timed_fuse(*a: Any, **k: Any) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        result = fuse(*a, **k)
        spans.append((t0, time.perf_counter(), time.process_time() - c0))
        return result

    dense_module.fuse_dense = timed_fuse
    pipeline.run_sem([args.dataset], args.out, SemConfig(threads=args.threads), use_cache=True)
    t0, t1, cpu = spans[0]
    clock = np.linspace(t0, t1, 20_001)
    running = np.zeros_like(clock)
    for a, b in SOLVES:
        running += (clock >= a) & (clock < b)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(
        f"fuse_dense wall {t1 - t0:.2f} s, CPU {cpu:.2f} s, {len(SOLVES)} solves; share of the stage with "
        f"0 / 1 / >=2 solves running: {np.mean(running == 0):.2f} / {np.mean(running == 1):.2f} / "
        f"{np.mean(running >= 2):.2f}; load {load}"  # noqa: PLR2004
    )


if __name__ == "__main__":
    main()
