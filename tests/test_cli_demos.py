"""Smoke tests: both demos run from the command line as a user runs them, and print their accuracy table.

Each renders a small dataset with exact truth, reconstructs it and evaluates it; the thresholds are loose
(small images, short schedules) but a broken pipeline (pixel heights, a mirrored grain, nothing found)
misses them by orders of magnitude.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_demo(args: list[str], tmp: Path) -> str:
    env = {**os.environ, "COLUMNS": "200"}  # no wrapped table rows
    res = subprocess.run(
        [sys.executable, "-m", "topograph", "demo", *args, "-o", str(tmp / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tmp,
    )
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-2000:]
    assert "Traceback" not in text
    return text


def number_after(label: str, text: str) -> float:
    m = re.search(re.escape(label) + r"\D*?([-+]?\d+(?:\.\d+)?)", text)
    assert m, f"'{label}' missing from the demo output:\n{text[-2000:]}"
    return float(m.group(1))


def test_demo_sem_from_the_command_line(tmp_path):
    text = run_demo(["sem", "--size", "240"], tmp_path)
    assert "topograph demo sem" in text
    pct = float(re.search(r"RMS distance to the true surface.*?\(([\d.]+) % of D\)", text).group(1))
    assert pct < 3.0, text[-1500:]
    assert number_after("coverage of the visible grain", text) > 40.0
    assert (tmp_path / "demo" / "sem" / "result" / "report.html").is_file()


@pytest.mark.slow  # ~30 s quiet; CI runs the slow tier too
def test_demo_meso_from_the_command_line(tmp_path):
    text = run_demo(["meso", "--size", "240", "--quick"], tmp_path)
    assert "topograph demo meso" in text
    gsd = float(re.search(r"mean accuracy \(Table-1 protocol\).*?\(([\d.]+) GSD\)", text).group(1))
    assert gsd < 1.0, text[-1500:]
    rescale = number_after("optimal rescale factor (1 is ideal)", text)
    assert 0.5 < rescale < 2.0, text[-1500:]
    assert number_after("registration NCC with the mosaic (worst image)", text) > 0.8
    assert (tmp_path / "demo" / "meso" / "result" / "report.html").is_file()
