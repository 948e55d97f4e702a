"""The output folder as one transaction: old run or new run, never a mix (signals sent to a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from topograph.errors import TopographError
from topograph.io.staging import check_output_dir, output_transaction
from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small rendered 0/5/10° series with metadata (a full run takes a few seconds)."""
    ds = render_sem_series(GrainSpec(seed=3), tilts_deg=(0.0, 5.0, 10.0), image_size=(300, 300), seed=3)
    return save_sem_dataset(ds, tmp_path_factory.mktemp("series") / "grain", with_metadata=True)


@pytest.fixture(scope="module")
def long_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-view 500² series: its run lasts several seconds after the staging folder appears (the 300² one can
    finish inside the test's wait on an idle machine), so the signal lands inside the compute."""
    ds = render_sem_series(GrainSpec(seed=3), tilts_deg=(0.0, 4.0, 8.0, 12.0), image_size=(500, 500), seed=3)
    return save_sem_dataset(ds, tmp_path_factory.mktemp("long") / "grain", with_metadata=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from topograph.cli import main; main()", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), capture_output=True, text=True, env=_env(), timeout=600)


def _old_run(out: Path) -> dict[str, bytes]:
    """A previous run folder with recognisable content; returns {relative path: bytes}."""
    files = {
        "summary.json": b'{"engine": "sem", "old": true}\n',
        "dense.ply": b"old cloud",
        "figures/old.png": b"old figure",
        "report.html": b"<html>old</html>",
    }
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return files


def _content(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and "lock" not in p.name)


def _wait_for_staging(out: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while not any(p.name.startswith(f".{out.name}.staging-") for p in out.parent.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout_s, "the run never started"
        time.sleep(0.05)


def _signals_as_in_a_terminal() -> None:
    """Default SIGINT/SIGTERM in the child, as in a terminal's foreground job.

    A non-interactive shell starts background jobs (`cmd &`, as CI does) with SIGINT ignored, the child
    inherits that and Python then (rightly) never raises KeyboardInterrupt; the test is about a user's Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_run_leaves_the_old_folder_intact(tmp_path: Path, long_series: Path, sig: int) -> None:
    out = tmp_path / "out"
    old = _old_run(out)
    proc = subprocess.Popen(
        _cli("sem", str(long_series), "-o", str(out)),
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_signals_as_in_a_terminal,
    )
    _wait_for_staging(out, proc)
    time.sleep(0.5)  # inside the compute
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert _content(out) == old
    assert _leftovers(out) == []


def test_concurrent_run_into_the_same_folder_is_refused(tmp_path: Path, series: Path) -> None:
    out = tmp_path / "out"
    with output_transaction(out, [series]) as stage:  # a run in progress (this process holds the lock)
        second = _run("sem", str(series), "-o", str(out), "--sparse-only")
        (stage / "summary.json").write_text("{}")
    assert second.returncode == 3  # an input error (errors.EXIT_INPUT)
    assert "another topograph run is writing" in second.stderr and "Traceback" not in second.stderr
    assert _content(out) == {"summary.json": b"{}"}  # the first run's result, not a mix
    after = _run("sem", str(series), "-o", str(out), "--sparse-only")  # the lock is released
    assert after.returncode == 0, after.stderr


def test_rerun_leaves_no_stale_files_but_keeps_the_cache(tmp_path: Path, series: Path) -> None:
    out = tmp_path / "out"
    full = _run("sem", str(series), "-o", str(out))
    assert full.returncode == 0, full.stderr
    assert (out / "dense.ply").is_file() and (out / "cache" / "sparse.npz").is_file()
    # a killed run left a staging folder behind; a swap killed between its renames left the old run aside
    (tmp_path / ".out.staging-killed" / "out").mkdir(parents=True)
    (tmp_path / ".out.staging-killed" / "out" / "big.bin").write_bytes(b"\0" * 1000)
    sparse = _run("sem", str(series), "-o", str(out), "--sparse-only")
    assert sparse.returncode == 0, sparse.stderr
    names = {p.name for p in out.iterdir()}
    for stale in ("dense.ply", "grain_mesh.stl", "grain_metrics.json", "height_map.tif", "surface_mesh.ply"):
        assert stale not in names
    assert {"sparse.ply", "summary.json", "report.html", "cache"} <= names
    assert "reused from" in sparse.stderr  # the fingerprinted cache survived the swap
    assert _leftovers(out) == []


def test_old_run_set_aside_by_a_killed_swap_is_restored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    aside = tmp_path / ".out.old-x1" / "run"
    aside.mkdir(parents=True)
    (aside / "summary.json").write_text("{}")
    with pytest.raises(RuntimeError), output_transaction(out):
        assert (out / "summary.json").is_file()  # restored before the run starts
        raise RuntimeError("the run fails")
    assert (out / "summary.json").is_file()
    assert _leftovers(out) == []


def test_failure_while_writing_leaves_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = _old_run(out)
    with pytest.raises(ValueError), output_transaction(out) as stage:
        (stage / "summary.json").write_text("new")
        raise ValueError("a writer failed half-way")
    assert _content(out) == old
    assert _leftovers(out) == []


def test_disk_full_is_one_line_and_leaves_the_old_folder(tmp_path: Path) -> None:
    import errno

    out = tmp_path / "out"
    old = _old_run(out)
    with pytest.raises(TopographError, match="disk is full") as info, output_transaction(out) as stage:
        raise OSError(errno.ENOSPC, "No space left on device", str(stage / "dense.ply"))
    assert "\n" not in str(info.value) and "previous results are unchanged" in str(info.value)
    assert _content(out) == old


def test_folder_of_unrelated_files_is_never_replaced(tmp_path: Path) -> None:
    desk = tmp_path / "Desktop"
    desk.mkdir()
    (desk / "thesis.docx").write_bytes(b"precious")
    with pytest.raises(TopographError, match="holds other files"):
        check_output_dir(desk)
    assert (desk / "thesis.docx").read_bytes() == b"precious"
