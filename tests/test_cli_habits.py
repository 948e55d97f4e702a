"""Command-line habits: --version, exit status by kind of failure, stdout/stderr, OUT/log.txt, no torch for SEM,
messages phrased for Python callers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from topograph import __version__

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI in a fresh interpreter where importing torch fails, as in an install without the meso extra.
_NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch'", name="torch")
            return None

    sys.meta_path.insert(0, NoTorch())
    from topograph.cli import run
    code = run(sys.argv[1:])
    assert "torch" not in sys.modules, "torch was imported"
    sys.exit(code)
    """
)


def _cli(
    args: list[str], cwd: Path, no_torch: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", _NO_TORCH, *args] if no_torch else [sys.executable, "-m", "topograph", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_version_and_completion(tmp_path: Path) -> None:
    proc = _cli(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"topograph {__version__}"
    # typer detects the user's shell from the parent processes; without a terminal (CI, nohup) that fails, so
    # name the shell explicitly the way typer's own tests do
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    completion = _cli(["--show-completion", "bash"], tmp_path, env=env)
    assert completion.returncode == 0 and "complete" in completion.stdout and "topograph" in completion.stdout


def test_usage_and_input_errors_have_distinct_exit_codes(tmp_path: Path) -> None:
    usage = _cli(["sem", str(tmp_path), "-o", str(tmp_path / "o"), "--no-such-option"], tmp_path)
    assert usage.returncode == 2, usage.stderr
    bad_value = _cli(["--log-level", "LOUD", "sem", str(tmp_path), "-o", str(tmp_path / "o")], tmp_path)
    assert bad_value.returncode == 2, bad_value.stderr
    missing = _cli(["sem", str(tmp_path / "nope"), "-o", str(tmp_path / "o")], tmp_path)
    assert missing.returncode == 3, missing.stderr
    lines = [ln for ln in missing.stderr.splitlines() if ln.strip()]
    assert "error:" in lines[0] and "Traceback" not in missing.stderr and missing.stdout == ""
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sem_run_without_torch_prints_result_path_and_keeps_log(tmp_path: Path) -> None:
    """The SEM engine runs with torch unimportable; stdout is one line (the report), the log goes to OUT/log.txt."""
    synth = _cli(["synth", "sem", "grain", "--size", "300", "--tilts", "0,5,10"], tmp_path, no_torch=True)
    assert synth.returncode == 0, synth.stderr
    proc = _cli(["sem", "grain", "-o", "out"], tmp_path, no_torch=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert proc.stdout.splitlines() == [str((out / "report.html").resolve())]
    assert "bundle adjustment" in proc.stderr  # the log went to stderr
    log = (out / "log.txt").read_text(encoding="utf-8")
    assert "topograph sem grain -o out" in log and "bundle adjustment" in log
    assert ".staging-" not in log and ".staging-" not in proc.stderr
    assert "reprojection RMS before → after" in log and "after bundle adjustment: tilt" in log
    # --strict: a run that warns (no pixel size in plain PNGs) keeps its files but exits 4.
    synth = _cli(["synth", "sem", "plain", "--size", "300", "--tilts", "0,5,10", "--no-metadata"], tmp_path)
    assert synth.returncode == 0, synth.stderr
    strict = _cli(["--strict", "sem", "plain", "-o", "plain_out", "--sparse-only"], tmp_path, no_torch=True)
    assert strict.returncode == 4, strict.stderr
    assert "no pixel size known" in (tmp_path / "plain_out" / "log.txt").read_text(encoding="utf-8")
    assert (tmp_path / "plain_out" / "summary.json").is_file()


def test_meso_without_torch_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    proc = _cli(["meso", "a.jpg", "a.jpg", "-o", "out"], tmp_path, no_torch=True)
    assert proc.returncode == 3, proc.stderr
    assert "topograph[meso]" in proc.stderr and "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) <= 2  # one message (rich may wrap it)
    code = (
        "import topograph\ntry:\n    topograph.run_meso\nexcept topograph.OptionalDependencyError as e:\n    print(e)"
    )
    blocker = _NO_TORCH.split("from topograph.cli")[0]
    api = subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True, timeout=120)
    assert "topograph[meso]" in api.stdout, api.stderr


def test_import_topograph_and_configs_do_not_import_torch() -> None:
    code = (
        "import sys, topograph\n"
        "from topograph import SemConfig, MesoConfig, run_sem\n"
        "import topograph.sem.pipeline, topograph.sem.dense, topograph.report.html, topograph.cli\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


def test_cli_start_up_and_the_configs_do_not_import_opencv() -> None:
    # --version / --help stay fast: the matcher settings the SEM config holds come without OpenCV
    code = (
        "import sys\n"
        "import topograph.cli, topograph.sem.config, topograph.meso.config, topograph.matching.config\n"
        "from topograph.matching import SiftConfig\n"
        "print(sorted(m for m in ('cv2', 'torch') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    for args in (["--version"], ["sem", "--help"], ["meso", "--help"]):
        run = "import sys\nfrom topograph.cli import run\ncode = run(sys.argv[1:])\nprint('cv2' in sys.modules)"
        proc = subprocess.run([sys.executable, "-c", run, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("False"), (args, proc.stdout, proc.stderr)
    # the matchers still register when asked for by name
    from topograph.matching import create_matcher

    assert type(create_matcher("sift")).__name__ == "SiftMatcher"


def test_messages_name_python_arguments_in_python_api_calls(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    import topograph
    from topograph.errors import TopographError
    from topograph.hints import cli_active, phrase, python_api

    text = "no pixel size known (give --pixel-size-um for µm), e.g. --tilts 0,5,10"
    assert phrase(text) == text  # neither the CLI nor the API: as written
    with python_api():
        python = phrase(text)
        assert "--" not in python
        assert "MetadataOverrides(pixel_size_um=...)" in python and "MetadataOverrides(tilts_deg=[0,5,10])" in python
        assert phrase("an --unknown-flag stays") == "an --unknown-flag stays"
        with cli_active():  # the CLI calling the API keeps its flags
            assert phrase(text) == text
            assert "--tilts" in str(TopographError("tilts missing", "give --tilts 0,5,10"))
    # the public entry point phrases its errors for Python
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"v{k}.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(TopographError) as err:
        topograph.run_sem(tmp_path, None, overrides=topograph.MetadataOverrides(tilts_deg=(0.0, 5.0)))
    assert "overrides.tilts_deg has 2 tilts" in str(err.value) and "command-line" not in str(err.value)


@pytest.mark.parametrize(
    ("path", "final"),
    [
        ("/tmp/run/.out.staging-ab12_x/figures/a.png", "/tmp/run/out/figures/a.png"),
        (".out.staging-zz9/a.png", "out/a.png"),
        # the layout of io.staging: OUT's name inside the hidden holder (it read out/out/... before)
        ("/tmp/run/.out.staging-ab12_x/out/figures/a.png", "/tmp/run/out/figures/a.png"),
        ("run/.out.staging-q1/out", "run/out"),
        ("/tmp/.out.staging-q1/outer/a.png", "/tmp/out/outer/a.png"),  # a subfolder that only starts with OUT
    ],
)
def test_log_lines_name_final_paths(path: str, final: str) -> None:
    from topograph.logs import final_path_text

    assert final_path_text(f"wrote {path}") == f"wrote {final}"


def test_torch_is_only_in_the_meso_extra() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("torch")]
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["meso"])


def test_steps_report_to_the_active_reporter_only() -> None:
    import io

    from rich.console import Console

    from topograph.progress import RichSteps, reporting, stage, steps

    class Record:
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def stage(self, name: str) -> None:
            self.events.append(("stage", name))

        def begin(self, description: str, total: int) -> None:
            self.events.append(("begin", description, total))

        def step(self) -> None:
            self.events.append(("step",))

        def end(self) -> None:
            self.events.append(("end",))

    assert list(steps(range(3), "nobody listens")) == [0, 1, 2]
    rec = Record()
    with reporting(rec):
        stage("match")
        assert list(steps(["a", "b"], "pairs")) == ["a", "b"]
    assert rec.events == [("stage", "match"), ("begin", "pairs", 2), ("step",), ("step",), ("end",)]
    # a pipe gets no redrawn display; a terminal gets the bar with done/total
    pipe = io.StringIO()
    quiet = RichSteps(Console(file=pipe, force_terminal=False))
    with reporting(quiet):
        list(steps(range(4), "dense"))
    quiet.stop()
    assert pipe.getvalue() == ""
    tty = io.StringIO()
    shown = RichSteps(Console(file=tty, force_terminal=True, width=120))
    with reporting(shown):
        list(steps(range(4), "dense"))
    shown.stop()
    assert "dense" in tty.getvalue() and "4/4" in tty.getvalue()
    # the meso rounds reach the same display as counted work with the loss of each iteration
    meso = io.StringIO()
    rounds = RichSteps(Console(file=meso, force_terminal=True, width=120))
    with reporting(rounds):
        stage("optimisation")
        rounds.begin("shift (1/4)", 3)
        for loss in (0.5, 0.25, 0.125):
            rounds.step(loss)
        rounds.end()
    rounds.stop()
    assert "shift (1/4)" in meso.getvalue() and "3/3" in meso.getvalue() and "loss 1.250e-01" in meso.getvalue()
