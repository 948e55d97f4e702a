"""A mesoscopic run explains itself: summary.json, series.json, thumbnails and a self-contained report.html."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import _CHROME_FLAGS, CHROMIUM  # noqa: I001 - the shared headless-Chromium settings

from topograph.config import to_yaml
from topograph.meso.config import LevelConfig, MesoConfig, replace_settings
from topograph.meso.pipeline import run_meso
from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset

EVIL = "<img src=x onerror=alert(1)>"


def tiny_config() -> MesoConfig:
    cam = ("position", "scale", "tilt", "angle", "gain", "bias")
    cfg = MesoConfig(
        schedule=(
            LevelConfig("shift", 2, 15, ("position",), lr_scale=2.0),
            LevelConfig("height", 1, 15, (*cam, "height")),
        )
    )
    cfg = replace_settings(cfg, {"distortion.model": "none", "threads": 1})
    # 30 iterations without a camera round leave images ~1 px apart (registration NCC 0.2-0.4 at 160 px):
    # the gates would stop the run; here the files are under test, so the run writes them marked
    cfg = replace_settings(cfg, {"checks.gates": "mark"})
    return cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = render_meso_sequence(MesoSynthConfig(image_size=(160, 120), raster=(3, 2), seed=1))
    folder = write_meso_dataset(data, tmp_path_factory.mktemp("meso_report") / "data")
    images = sorted((folder / "images").glob("*.jpg"))
    # a file name that would run script if the report did not escape it
    shutil.copy(images[0], images[0].with_name(f"{EVIL}.jpg"))
    images[0].unlink()
    return folder / "images"


def test_meso_run_writes_summary_inputs_and_report(dataset: Path, tmp_path: Path) -> None:
    paths = sorted(dataset.glob("*.jpg"))
    out = tmp_path / "run"
    run = run_meso(paths, out, tiny_config(), command="topograph meso data -o run")
    rec, files = run.reconstruction, run.files
    assert run.summary["status"] == run.status and run.command == "topograph meso data -o run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "meso" and summary["command"] == "topograph meso data -o run"
    assert summary["images"] == [p.name for p in paths]
    assert summary["status"] in ("ok", "failed") and len(summary["quality_gates"]["registration"]) == len(paths)
    quality = summary["quality"]
    assert quality["iterations"] == 30 and quality["final_loss"] is not None and quality["final_loss"] > 0
    assert 0.3 < quality["height_coverage"] <= 1.0 and quality["mean_images_per_pixel"] >= 1.0
    series = json.loads((out / "series.json").read_text())
    assert [s["name"] for s in series] == [p.name for p in paths] and series[0]["focal_mm"] > 0
    assert len(list((out / "thumbnails").glob("*.png"))) == len(paths)
    assert files["report_html"] == out / "report.html" and all(p.is_file() for p in files.values())
    html = (out / "report.html").read_text()
    # everything the report names is present; the hostile file name appears only escaped
    for needle in ("Orthomosaic", "Height map", "topograph meso data -o run", "&lt;img src=x onerror=alert(1)&gt;"):
        assert needle in html, needle
    assert EVIL not in html
    assert to_yaml(rec.config).splitlines()[0] in html  # the configuration to reproduce the run
    # the same layout as SEM: the results card first, with the height map as a mesh, its profile and histogram
    assert re.findall(r'<section id="([\w-]+)"', html)[0] == "results"
    assert '"kind":"mesh"' in html and "data-topograph-profile" in html and "Sa of the height map" in html
    assert not list(tmp_path.glob(".run.staging-*"))  # staging folder cleaned up


def test_failed_meso_run_leaves_no_output(dataset: Path, tmp_path: Path) -> None:
    from topograph.errors import TopographError

    out = tmp_path / "run"
    cfg = tiny_config()
    # malformed: needs x1,y1,x2,y2
    cfg = replace_settings(cfg, {"scale.scale_points": (1.0, 2.0)})
    with pytest.raises(TopographError):
        run_meso(sorted(dataset.glob("*.jpg")), out, cfg)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium chromium-driver)")
def test_meso_report_renders_its_height_field_in_headless_chromium(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_meso(sorted(dataset.glob("*.jpg")), out, tiny_config())
    report = out / "report.html"
    flags = [*_CHROME_FLAGS, "--enable-unsafe-swiftshader", f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c or "Content Security Policy" in c or "Refused" in c], console
    dom = proc.stdout
    assert "data-js-errors" not in re.search(r"<html[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<canvas[^>]*>", dom).group(0)))
    n_points = int(attrs["data-points"])
    assert n_points > 1000  # the height field's vertices
    assert int(attrs["data-drawn-pixels"]) > n_points  # drawn, not blank or collapsed onto a spot
