"""CPU seconds (process-wide, every thread) and wall seconds per stage of one SEM run.

    python benchmarks/profile_sem_stages.py DATASET OUT

The stage functions of the pipeline are wrapped and ``time.process_time()`` is read around each, so the
OpenCV and numpy worker threads count too. Prints a Markdown table (docs/benchmarks.md, issue 21). For the
split inside a stage use py-spy: ``py-spy record -r 100 --format raw -o run.raw -- python -m topograph -q
sem DATASET -o OUT --no-cache``.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

CPU0, WALL0 = time.process_time(), time.perf_counter()
import topograph.matching.dense as flow_module  # noqa: E402
import topograph.report.html as report_module  # noqa: E402
import topograph.sem.dense as dense_module  # noqa: E402
import topograph.sem.pipeline as pipeline  # noqa: E402
from topograph.sem.config import SemConfig  # noqa: E402

IMPORT_S = (time.process_time() - CPU0, time.perf_counter() - WALL0)
SPENT: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])


def wrap(owner: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            row = SPENT[label]
            row[0] += time.process_time() - c0
            row[1] += time.perf_counter() - w0
            row[2] += 1

    setattr(owner, name, timed)


STAGES = [
    (pipeline, "load_sem_series", "load"),
    (pipeline, "match_series", "match"),
    (pipeline, "series_tracks", "tracks"),
    (pipeline, "refine_tracks", "track refinement"),
    (pipeline, "estimate_cameras", "cameras"),
    (pipeline, "refine", "bundle"),
    (pipeline, "factorization_tilt_uncertainty", "tilt uncertainty"),
    (flow_module, "dense_flow", "dense: flows (dense_flow; flows side by side count each other's CPU)"),
    (flow_module, "refine_flow", "  of which residual pass"),
    (dense_module, "fuse_dense", "dense: fuse_dense (flows included)"),
    (pipeline, "write_outputs", "write_outputs (dense files included)"),
    (dense_module.DenseResult, "write", "  dense files"),
    (report_module, "write_report", "report"),
]


def main() -> None:
    for owner, name, label in STAGES:
        wrap(owner, name, label)
    c0, w0 = time.process_time(), time.perf_counter()
    run = pipeline.run_sem(sys.argv[1], sys.argv[2], SemConfig(), use_cache=False)
    total = (time.process_time() - c0, time.perf_counter() - w0)
    print("| stage | CPU s | wall s | calls |\n|---|---:|---:|---:|")
    print(f"| imports | {IMPORT_S[0]:.2f} | {IMPORT_S[1]:.2f} | |")
    for label, (cpu, wall, calls) in SPENT.items():
        print(f"| {label} | {cpu:.2f} | {wall:.2f} | {calls} |")
    if run.dense is not None:
        print(f"| dense steps (wall) | { ({k: round(v, 2) for k, v in run.dense.timings_s.items()}) } | | |")
    print(f"| run_sem total | {total[0]:.2f} | {total[1]:.2f} | |")


if __name__ == "__main__":
    main()
