"""Speed-up of ``topograph batch`` with 2 workers over 1 worker on this machine.

Generates N synthetic SEM grains (``topograph.synth.sem``), starts two LocalClusters (1 and 2 single-threaded
worker processes) and runs the same batch on each, alternating, ``--repeats`` times with ``mode="force"`` (every
dataset recomputed). The time measured is the batch's processing wall time: from submitting the tasks to the
last result (cluster start-up excluded, reported apart). Speed-up = median(1 worker) / median(2 workers), and
the same ratio of the fastest runs (the least disturbed by other processes).
The first run on each cluster pays the workers' imports; it is reported but left out of the median.
Also reported: the mean concurrency Σ(task wall time) / batch wall time — how many tasks were in flight on
average (≈ the worker count when the scheduling keeps every worker busy, whatever the CPU contention).
Other processes on the machine slow both configurations down; the load average is printed with the result.

Usage::

    python benchmarks/bench_batch.py --datasets 6 --size 260 --repeats 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def make_datasets(root: Path, n: int, size: int) -> list[Path]:
    """``n`` grains of 24 … 24 + 4 (n − 1) µm, three tilts (0, 5, 10°), ``size`` × ``size`` px."""
    from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

    folders = []
    for i in range(n):
        ds = render_sem_series(
            GrainSpec(seed=100 + i, diameter_um=24.0 + 4.0 * i), tilts_deg=(0, 5, 10), image_size=(size, size), seed=i
        )
        folders.append(save_sem_dataset(ds, root / f"grain{i:02d}"))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=6, help="number of generated datasets")
    parser.add_argument("--size", type=int, default=260, help="image side, px")
    parser.add_argument("--repeats", type=int, default=4, help="runs per worker count (the first is a warm-up)")
    parser.add_argument("--sparse-only", action="store_true", help="skip the dense stage")
    parser.add_argument("--memory-limit", default="4GB", help="memory limit per worker")
    args = parser.parse_args()

    from topograph.batch import ClusterOptions, datasets_from_glob, run_batch
    from topograph.batch.runner import open_client

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_datasets(root / "data", args.datasets, args.size)
        print(f"generated {args.datasets} datasets of {args.size}² px in {time.perf_counter() - t0:.1f} s")
        defaults = {"set": {"dense.enabled": False}} if args.sparse_only else {}
        specs = datasets_from_glob("data/*/", "sem", defaults, root)
        times: dict[int, list[float]] = {1: [], 2: []}
        concurrency: dict[int, list[float]] = {1: [], 2: []}
        startup: dict[int, float] = {}
        engine_s: list[float] = []
        load_before = os.getloadavg()
        with (
            open_client(ClusterOptions(workers=1, memory_limit=args.memory_limit)) as c1,
            open_client(ClusterOptions(workers=2, memory_limit=args.memory_limit)) as c2,
        ):
            for rep in range(args.repeats):
                for workers, client in ((1, c1), (2, c2)):
                    out = root / f"out_{workers}"
                    result = run_batch(specs, out, client=client, mode="force")
                    if result.counts["failed"]:
                        raise SystemExit(f"benchmark datasets failed: {[r.error for r in result.results if r.error]}")
                    times[workers].append(result.wall_s)
                    busy = sum(r.wall_s for r in result.results if r.wall_s is not None)
                    concurrency[workers].append(busy / result.wall_s)
                    if workers == 1:
                        engine_s += [r.wall_s for r in result.results if r.wall_s is not None]
                    print(
                        f"run {rep}: {workers} worker(s): {result.wall_s:.2f} s, "
                        f"concurrency {concurrency[workers][-1]:.2f}"
                    )
        for workers in (1, 2):
            t0 = time.perf_counter()
            with open_client(ClusterOptions(workers=workers, memory_limit=args.memory_limit)):
                startup[workers] = time.perf_counter() - t0
        load_after = os.getloadavg()

    warm = {w: v[1:] if len(v) > 1 else v for w, v in times.items()}
    med = {w: statistics.median(v) for w, v in warm.items()}
    best = {w: min(v) for w, v in warm.items()}
    speedup = med[1] / med[2]
    per_dataset = statistics.median(engine_s)
    print()
    print(f"datasets: {args.datasets} × 3 views of {args.size}² px, dense {'off' if args.sparse_only else 'on'}")
    print(f"median per-dataset task time (1 worker): {per_dataset:.2f} s")
    for w in (1, 2):
        runs = ", ".join(f"{t:.2f}" for t in times[w])
        conc = statistics.median(concurrency[w][1:] or concurrency[w])
        print(
            f"{w} worker(s): median {med[w]:.2f} s (runs: {runs}; cluster start {startup[w]:.1f} s); "
            f"median concurrency {conc:.2f}"
        )
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}× on the medians, {best[1] / best[2]:.2f}× on the fastest runs")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
