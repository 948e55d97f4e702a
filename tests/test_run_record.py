"""One run shape for both engines: arguments, frozen record, progress protocol, timings, fingerprints."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from pathlib import Path

import numpy as np
import pytest

from topograph.fingerprint import FileContent, digest, file_digest
from topograph.progress import reporting, stage, steps
from topograph.run_record import RunRecord
from topograph.sem.config import SemConfig
from topograph.sem.pipeline import SemRun, run_sem
from topograph.timing import Timings


class Record:
    """A StepReporter that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage(self, name: str) -> None:
        self.events.append(("stage", name))

    def begin(self, description: str, total: int) -> None:
        self.events.append(("begin", description, total))

    def step(self, loss: float | None = None) -> None:
        self.events.append(("step", loss))

    def end(self) -> None:
        self.events.append(("end",))


def test_digest_follows_content_not_names_or_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "sub" / "b.bin"
    b.parent.mkdir()
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    assert digest(FileContent(a)) == digest(FileContent(b)) == file_digest(a)  # a moved file keeps its digest
    b.write_bytes(b"same bytez")
    assert digest(FileContent(a)) != digest(FileContent(b))
    assert digest({"x": 1, "y": [1, 2]}) == digest({"y": [1, 2], "x": 1})  # mappings by sorted key
    assert digest([1, 2]) != digest([2, 1]) and digest("1") != digest(1) and digest(1) != digest(1.5)
    assert digest(SemConfig()) == digest(SemConfig())
    assert digest(SemConfig()) != digest(
        dataclasses.replace(SemConfig(), bundle=dataclasses.replace(SemConfig().bundle, max_nfev=7))
    )
    img = np.zeros((4, 5), np.uint8)
    assert digest(img) != digest(img.reshape(5, 4)) and digest(img) != digest(img.astype(np.uint16))
    assert len(digest()) == 64


def test_timings_add_up_and_freeze() -> None:
    t = Timings()
    with t.timed("load"):
        time.sleep(0.01)
    with t.timed("load"):
        time.sleep(0.01)
    t.add("dense", 0.5)
    frozen = t.frozen()
    assert frozen["load"] >= 0.02 and frozen["dense"] == 0.5 and frozen["total"] >= frozen["load"]
    with pytest.raises(TypeError):
        frozen["load"] = 0.0  # type: ignore[index]


def test_the_meso_rounds_speak_the_one_progress_protocol() -> None:
    from meso_toy import make_model, toy_scene

    from topograph.meso.config import LearningRates, LevelConfig, LossConfig
    from topograph.meso.optimise.batching import make_batched_level
    from topograph.meso.optimise.solver import BatchingConfig, RobustConfig, solve_round

    scene = toy_scene()
    model = make_model(len(scene.positions), scene.size, scene.focal_px, scene.positions + 1.0)
    level = make_batched_level(scene.pixels, 1)
    round_cfg = LevelConfig("shift", 1, 4, ("position",), lr_scale=0.3)
    rec = Record()
    with reporting(rec):
        stage("init")
        result = solve_round(
            model, level, round_cfg, 0, LearningRates(), LossConfig(), BatchingConfig(), RobustConfig()
        )
        assert list(steps(["a"], "flow")) == ["a"]
    losses = [r.loss for r in result.records]
    assert len(losses) == 4 and all(np.isfinite(losses))
    # the round is counted work of one step per iteration, each with that iteration's loss
    assert rec.events == [
        ("stage", "init"),
        ("begin", "shift (1/1)", 4),
        *[("step", loss) for loss in losses],
        ("end",),
        ("begin", "flow", 1),
        ("step", None),
        ("end",),
    ]


def test_both_engines_take_the_same_kinds_of_arguments() -> None:
    from topograph.meso.pipeline import MesoRun, run_meso

    sem, meso = inspect.signature(run_sem), inspect.signature(run_meso)
    for sig in (sem, meso):
        names = list(sig.parameters)
        assert names[:3] == ["inputs", "out_dir", "cfg"]
        for name in ("command", "progress"):
            assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    common = {f for f in RunRecord.__dict__ if not f.startswith("_")}
    for cls in (SemRun, MesoRun):
        assert dataclasses.fields(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        have = {f.name for f in dataclasses.fields(cls)} | {n for n in dir(cls) if not n.startswith("_")}
        assert common <= have, (cls, common - have)


def test_sem_run_is_a_frozen_record_built_once(tmp_path: Path) -> None:
    from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

    ds = render_sem_series(GrainSpec(seed=5), tilts_deg=(0.0, 5.0, 10.0), image_size=(200, 200), seed=5)
    series = save_sem_dataset(ds, tmp_path / "grain")
    rec = Record()
    cfg = dataclasses.replace(SemConfig(), dense=dataclasses.replace(SemConfig().dense, enabled=False))
    run = run_sem([series], tmp_path / "out", cfg, command="test", progress=rec)
    stages = [e[1] for e in rec.events if e[0] == "stage"]
    assert stages == ["load", "match", "cameras", "bundle", "write"]
    assert any(e[0] == "begin" for e in rec.events)  # counted work reaches the same reporter
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.warnings = ()  # type: ignore[misc]
    assert isinstance(run.warnings, tuple) and isinstance(run.cached_stages, tuple)
    assert {"load", "match", "cameras", "bundle", "total"} <= set(run.timings_s)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["timings_s"] == pytest.approx(dict(run.timings_s)) and run.summary["status"] == run.status
    assert run.engine == "sem" and run.command == "test" and run.config == cfg and run.dense is None
