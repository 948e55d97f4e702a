"""Shared test fixtures: paths to the real data in ../shared/data (tests skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TOPOGRAPH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def quartz_dir(shared_data: Path) -> Path:
    d = shared_data / "sem" / "quartz"
    if not (d / "Quarz_01.png").is_file():
        pytest.skip("quartz series not present")
    return d


@pytest.fixture(autouse=True)
def _reset_topograph_logger():
    """The CLI configures the package logger (rich handler, no propagation); undo it after in-process CLI
    tests so that later tests can capture log records with caplog."""
    import logging

    yield
    logger = logging.getLogger("topograph")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With TOPOGRAPH_TEST_TIMES=FILE, append each test's wall and CPU seconds (this process and its
    subprocesses, setup to teardown) to FILE. CPU time hardly depends on what else runs on the machine, so it
    measures a test tier on a shared machine better than wall time (docs/benchmarks.md, issue 20)."""
    path = os.environ.get("TOPOGRAPH_TEST_TIMES")
    if not path:
        yield
        return
    import resource
    import time

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    yield
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{item.nodeid}\t{time.perf_counter() - t0:.2f}\t{cpu() - c0:.2f}\n")
