"""The SEM run's critical path on a busy machine: process CPU, the main thread's CPU and peak RSS of one
``run_sem`` with the sparse stages cached, plus the rendered grain's accuracy.

    python benchmarks/sem_main_thread.py DATASET OUT [--set dense.chain_pairs=false ...]
        [--side-by-side-max-px 30e6]

The main thread runs the fusion, the grain mesh and metrics, the files and the report; the flows run in
worker threads where the dense stage schedules them side by side (``sem/dense.py: flow_schedule``). On an
idle 2-core machine the wall time is at least max(main-thread CPU, process CPU / 2), and unlike the wall
time both stay comparable at any load (docs/benchmarks.md, issue 21, session 14). The first call fills
OUT/cache (the sparse stages) in a separate process run; later calls time the rest. It also prints the
topograph frames of every thread at the peak RSS (where the memory goes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import bench_sem_speed  # noqa: E402

from topograph.config import apply_overrides  # noqa: E402
from topograph.sem import dense, pipeline  # noqa: E402
from topograph.sem.config import SemConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument(
        "--side-by-side-max-px",
        type=float,
        default=None,
        help="override sem.dense.SIDE_BY_SIDE_MAX_OBSERVATION_PX (pixels x observation slots) for this run",
    )
    ap.add_argument("--timeline", action="store_true", help="print the peak RSS under each main-thread function")
    args = ap.parse_args()
    if args.side_by_side_max_px is not None:
        dense.SIDE_BY_SIDE_MAX_OBSERVATION_PX = int(args.side_by_side_max_px)
    items = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = apply_overrides(SemConfig(), items) if items else SemConfig()
    if not (Path(args.out) / "cache").exists():
        subprocess.run([sys.executable, "-m", "topograph", "-q", "sem", args.dataset, "-o", args.out], check=True)
    peak, done = [0.0], threading.Event()
    where: list[str] = []
    timeline: dict[str, float] = {}  # main thread's innermost topograph function → peak RSS under it
    main_id = threading.main_thread().ident

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * 4096 / 1e6
            if args.timeline:
                inner = stack_of(sys._current_frames().get(main_id), True).split(" > ")[-1].split(":")[0]
                timeline[inner] = max(timeline.get(inner, 0.0), rss)
            if rss > peak[0]:
                peak[0] = rss
                where[:] = [stack_of(frame, ident == main_id) for ident, frame in sys._current_frames().items()]
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
    print("at the peak:\n" + "\n".join(w for w in where if w))
    if args.timeline:
        print("peak RSS (MB) while the main thread is in:")
        for name, rss in timeline.items():
            print(f"  {rss:6.0f}  {name}")


def stack_of(frame: FrameType | None, main: bool) -> str:
    """The topograph frames of one thread's stack, innermost last (empty for threads outside topograph)."""
    names = []
    while frame is not None:
        code = frame.f_code
        if "topograph" in code.co_filename:
            names.append(f"{Path(code.co_filename).stem}.{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return f"  {'main' if main else 'worker'}: " + " > ".join(reversed(names)) if names else ""


if __name__ == "__main__":
    main()
