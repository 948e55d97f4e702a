"""Whole-process wall time and peak memory (RSS, including child processes) of a command."""

from __future__ import annotations

import resource
import statistics
import subprocess
import time

import psutil


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB summed over the process tree, exit code).

    The CPU seconds (user + system) of the run are kept in ``LAST_CPU_S``: on a loaded machine they are
    the steadier figure."""
    global LAST_CPU_S
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU_S = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return wall, peak / 2**20, proc.returncode


LAST_CPU_S = 0.0


def median_of(cmd: list[str], repeats: int, env: dict | None = None) -> tuple[float, float, list[float]]:
    """Median wall time, max peak RSS (MB) and all wall times over ``repeats`` runs; raises on failure.
    The median CPU seconds are left in ``CPU_MEDIAN_S``."""
    global CPU_MEDIAN_S
    walls, peaks, cpus = [], [], []
    for _ in range(repeats):
        wall, peak, code = run_measured(cmd, env)
        if code != 0:
            raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")
        walls.append(wall)
        peaks.append(peak)
        cpus.append(LAST_CPU_S)
    CPU_MEDIAN_S = statistics.median(cpus)
    return statistics.median(walls), max(peaks), walls


CPU_MEDIAN_S = 0.0
