"""Quality gates: a registered run passes them; a misregistered image, an unregistrable sequence, or a
flow step that found nothing stops the run with one line (or marks it failed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from meso_toy import make_model, toy_scene
from PIL import Image

from topograph.errors import TopographError
from topograph.meso.config import CheckConfig, replace_settings
from topograph.meso.quality import (
    QualityReport,
    enforce,
    height_gate,
    match_gate,
    refinement_gate,
    registration_gate,
    registration_scores,
)


@pytest.fixture(scope="module")
def scene():
    return toy_scene(3, 2, size=(96, 72), step=20.0)


def test_true_cameras_correlate_with_the_mosaic(scene):
    model = make_model(len(scene.pixels), scene.size, scene.focal_px, scene.positions)
    ncc, overlap = registration_scores(model, scene.pixels)
    assert np.all(overlap > 0.3)
    assert np.all(ncc > 0.9), ncc
    names = tuple(f"im{k}" for k in range(len(ncc)))
    assert registration_gate(names, ncc, overlap, CheckConfig()).passed


def test_a_misplaced_image_is_named(scene):
    pos = scene.positions.copy()
    pos[4] += (7.0, -5.0)  # 7 px off: its content lands on the wrong part of the mosaic
    model = make_model(len(scene.pixels), scene.size, scene.focal_px, pos)
    ncc, overlap = registration_scores(model, scene.pixels)
    assert ncc[4] < 0.4, ncc
    good = np.delete(ncc, [1, 4])  # image 1 overlaps 4 most and is hurt by it; the others are clean
    assert np.all(good > 0.6), ncc
    names = tuple(f"im{k}" for k in range(len(ncc)))
    gate = registration_gate(names, ncc, overlap, CheckConfig())
    assert not gate.passed and "im4" in gate.detail
    with pytest.raises(TopographError, match="registration failed"):
        enforce(gate, CheckConfig())
    report = QualityReport((enforce(gate, CheckConfig(gates="mark")),))  # recorded, not raised
    assert report.status == "failed" and "im4" in report.to_dict(names)["failed"][0]


def test_flow_and_height_gates():
    cfg = CheckConfig()
    assert not match_gate(0.01, 2000, cfg).passed
    assert match_gate(0.8, 10**6, cfg).passed
    assert not refinement_gate("nan").passed and not refinement_gate("nan").blocking
    report = QualityReport((enforce(refinement_gate("nan"), cfg),))  # warned and recorded; registration decides
    assert report.status == "ok" and report.to_dict(())["gates"][0]["passed"] is False
    assert refinement_gate("degenerate").passed and refinement_gate("ok").passed
    assert not height_gate(0.05, cfg).passed and height_gate(0.9, cfg).passed


def test_gates_off_only_records():
    report = QualityReport((enforce(match_gate(0.0, 0, CheckConfig(gates="off")), CheckConfig(gates="off")),))
    assert report.status == "failed"


def _write_jpegs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x920A] = 4.3  # focal length, mm
    ifd[0xA405] = 26  # 35 mm equivalent
    for k, img in enumerate(images):
        Image.fromarray(img).save(folder / f"IMG_{k:03d}.jpg", quality=95, exif=exif)


def _run_cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "topograph", *args], capture_output=True, text=True, env=env, timeout=300, cwd=tmp
    )


def test_unregistrable_sequence_exits_non_zero(tmp_path):
    """Photos of pure noise (nothing in common): one line naming the failing step, non-zero exit, no output."""
    rng = np.random.default_rng(3)
    _write_jpegs(tmp_path / "noise", rng.integers(0, 256, (5, 120, 160, 3), dtype=np.uint8))
    out = tmp_path / "out"
    res = _run_cli(["-q", "meso", str(tmp_path / "noise"), "-o", str(out), "--no-progress"], tmp_path)
    assert res.returncode in (3, 4)  # nothing links the photos (input error) or a gate fails (quality)
    assert "error:" in res.stderr and "Traceback" not in res.stderr
    assert "overlap" in res.stderr
    assert not (out / "summary.json").exists()


def test_report_first_line_says_failed(tmp_path):
    from topograph.report.html import header_html, read_run

    summary = {"engine": "meso", "status": "failed", "quality_gates": {"failed": ["registration failed: im4"]}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    html = header_html(read_run(tmp_path), "now")
    assert html.index("FAILED") < html.index("topograph meso run")
    assert "registration failed: im4" in html
    summary["status"] = "ok"
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "FAILED" not in header_html(read_run(tmp_path), "now")


def test_feature_init_recovers_rotated_photos():
    """A second sweep shot the other way round (photos rotated 180 degrees): phase correlation links
    nothing across the sweeps; SIFT similarities recover positions and angles, and the images register."""
    from topograph.meso.init_features import feature_initialisation

    s = toy_scene(3, 2, size=(200, 150), step=40.0)
    pix = s.pixels.copy()
    for k in (3, 4, 5):
        pix[k] = pix[k][::-1, ::-1]
    free = feature_initialisation(pix, tuple(map(str, range(6))), size=400)  # root: the best-linked image
    relative = np.degrees(free.angles - free.angles[0])
    assert np.all(np.abs((relative - np.array([0, 0, 0, 180, 180, 180]) + 180.0) % 360.0 - 180.0) < 1.0)
    fi = feature_initialisation(pix, tuple(map(str, range(6))), size=400, root=0)
    assert fi.linked.all()
    wrapped = (np.degrees(fi.angles) - np.array([0, 0, 0, 180, 180, 180]) + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(wrapped) < 1.0), np.degrees(fi.angles)
    assert np.abs(fi.positions - (s.positions - s.positions.mean(0))).max() < 1.5
    model = make_model(6, s.size, s.focal_px, fi.positions)
    with torch.no_grad():
        model.pose.angle.copy_(torch.tensor(fi.angles, dtype=torch.float32))
    ncc, _ = registration_scores(model, pix)
    assert np.all(ncc > 0.9), ncc


def test_feature_init_refuses_unrelated_photos():
    from topograph.meso.init_features import feature_initialisation

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 150, 200, 3), dtype=np.uint8)
    with pytest.raises(TopographError, match="links only"):
        feature_initialisation(noise, ("a", "b", "c", "d"), size=400)


def test_unrelated_photo_is_left_out_and_named(caplog):
    """A photo of another scene in the set: initialisation falls back to features, leaves it out with a
    warning naming it, and the rest registers (the gates pass)."""
    from topograph.meso.config import LevelConfig, MesoConfig
    from topograph.meso.reconstruct import reconstruct
    from topograph.meso.types import MesoImages

    s = toy_scene(3, 2, size=(200, 150), step=40.0)
    base = s.images()
    noise = np.random.default_rng(1).integers(0, 256, (1, 150, 200, 3), dtype=np.uint8)
    images = MesoImages((*base.names, "stray.png"), np.concatenate((base.pixels, noise)), (base.exif[0],) * 7)
    cam = ("position", "scale", "tilt", "angle", "gain", "bias")
    cfg = MesoConfig(
        schedule=(LevelConfig("shift", 2, 20, ("position",)), LevelConfig("camera", 1, 20, cam, lr_scale=0.3))
    )
    cfg = replace_settings(
        cfg,
        {
            "distortion.model": "none",
            "heights.model": "tv",
            "threads": 1,
            "min_level_size": 16,
            "init.feature_size": 400,
        },
    )
    with caplog.at_level("WARNING", logger="topograph"):
        rec = reconstruct(images, cfg)
    assert rec.names == base.names
    assert "stray.png" in caplog.text and "left out" in caplog.text
    assert rec.quality.status == "ok", rec.quality.to_dict(rec.names)
    assert np.all(rec.quality.registration_ncc > 0.9)
