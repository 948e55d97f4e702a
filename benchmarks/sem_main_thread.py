"""The SEM run's critical path on a busy machine: process CPU, the main thread's CPU and peak RSS of one
``run_sem`` with the sparse stages cached, plus the rendered grain's accuracy.

    python benchmarks/sem_main_thread.py DATASET OUT [--set dense.chain_pairs=false ...]

The main thread runs the fusion, the grain mesh and metrics, the files and the report; the flows run in
worker threads where the dense stage schedules them side by side (``sem/dense.py: flow_schedule``). On an
idle 2-core machine the wall time is at least max(main-thread CPU, process CPU / 2), and unlike the wall
time both stay comparable at any load (docs/benchmarks.md, issue 21, session 14). The first call fills
OUT/cache (the sparse stages) in a separate process run; later calls time the rest.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import bench_sem_speed  # noqa: E402

from topograph.config import apply_overrides  # noqa: E402
from topograph.sem import pipeline  # noqa: E402
from topograph.sem.config import SemConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = ap.parse_args()
    items = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = apply_overrides(SemConfig(), items) if items else SemConfig()
    if not (Path(args.out) / "cache").exists():
        subprocess.run([sys.executable, "-m", "topograph", "-q", "sem", args.dataset, "-o", args.out], check=True)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as f:
                peak[0] = max(peak[0], int(f.read().split()[1]) * 4096 / 1e6)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    c0, m0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    pipeline.run_sem([args.dataset], args.out, cfg, use_cache=True)
    cpu, main_cpu, wall = time.process_time() - c0, time.thread_time() - m0, time.perf_counter() - w0
    done.set()
    sampler.join()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    acc = bench_sem_speed.accuracy(Path(args.dataset), Path(args.out))
    print(
        f"CPU {cpu:.2f} s, main thread {main_cpu:.2f} s, wall {wall:.2f} s, peak {peak[0]:.0f} MB, load {load}; "
        f"points {acc['n_points']:,}, RMS {acc['rms_pct']:.4f} % D, median {acc['median_pct']:.4f} % D, "
        f"coverage {acc['coverage_pct']:.2f} %, volume {acc['volume_error_pct']:+.3f} %"
    )


if __name__ == "__main__":
    main()
