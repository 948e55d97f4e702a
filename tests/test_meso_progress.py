"""Every long step of a mesoscopic run reports its progress: counted work (a bar with ETA in the CLI) for
loading, the rounds, the flow matches and the mosaic, a stage line for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_meso_report import tiny_config  # noqa: I001 - the tiny schedule of the report tests

from topograph.meso.pipeline import run_meso
from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset


class Recorder:
    """A :class:`topograph.progress.StepReporter` that records what it is told."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.counted: dict[str, list[int]] = {}  # description -> [total, steps done]
        self._open: str | None = None

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def begin(self, description: str, total: int) -> None:
        self._open = description
        self.counted[description] = [total, 0]

    def step(self, loss: float | None = None) -> None:
        assert self._open is not None, "a step outside counted work"
        self.counted[self._open][1] += 1

    def end(self) -> None:
        self._open = None


@pytest.mark.slow  # ~20 s on a quiet machine, 110 s beside other jobs
def test_meso_run_reports_every_long_step(tmp_path: Path) -> None:
    data = render_meso_sequence(MesoSynthConfig(image_size=(160, 120), raster=(3, 2), seed=1))
    paths = sorted((write_meso_dataset(data, tmp_path / "data") / "images").glob("*.jpg"))
    n = len(paths)
    rec = Recorder()
    run_meso(paths, tmp_path / "run", tiny_config(), progress=rec)
    for name in ("input checks", "initial positions", "registration check", "write outputs", "write report"):
        assert name in rec.stages, (name, rec.stages)
    # counted work: known totals, every step reported (the rounds: one step per iteration)
    assert rec.counted["load images"] == [n, n]
    assert rec.counted["orthomosaic (images)"] == [n, n]
    assert rec.counted["flow matches (images)"] == [n, n]
    rounds = {k: v for k, v in rec.counted.items() if k.startswith(("shift", "height"))}
    assert sorted(v[0] for v in rounds.values()) == [15, 15] and all(v[1] >= v[0] for v in rounds.values())
    total, done = rec.counted["camera refinement on the flow matches"]  # one step per accepted LM iteration
    assert 1 <= done <= total, (done, total)
