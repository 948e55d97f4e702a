"""End-to-end mesoscopic reconstruction of a rendered cut-cards sequence (reduced size and schedule).

The full-size acceptance run (15 images at 1000x750, default schedule) is benchmarks/bench_meso.py; here
15 images at 320x240 with a shortened schedule keep the test to tens of seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from topograph.analysis.evaluate_meso_synthetic import evaluate_synthetic
from topograph.meso.config import LevelConfig, MesoConfig, replace_settings
from topograph.meso.reconstruct import reconstruct
from topograph.meso.types import ExifInfo, MesoImages
from topograph.synth.meso import MesoSynthConfig, render_meso_sequence

CAMERA = ("position", "scale", "tilt", "angle", "gain", "bias", "distortion", "centre")


def short_schedule() -> tuple[LevelConfig, ...]:
    return (
        LevelConfig("shift", 4, 40, ("position",), lr_scale=2.0),
        LevelConfig("camera", 2, 80, CAMERA),
        LevelConfig("height", 2, 150, (*CAMERA, "height")),
        LevelConfig("final", 1, 30, (*CAMERA, "height"), lr_scale=0.5),
    )


@pytest.fixture(scope="module")
def sequence():
    return render_meso_sequence(MesoSynthConfig(image_size=(320, 240), seed=0))


def run(sequence, distortion: str):
    t = sequence.truth
    exif = ExifInfo(focal_mm=t.focal_mm, pixel_pitch_um=t.pixel_pitch_mm * 1000.0)
    images = MesoImages(sequence.names, sequence.images, (exif,) * len(sequence.names))
    cfg = MesoConfig(schedule=short_schedule())
    # part 1's acceptance (TV height maps); the CNN path: test_meso_rounds.py
    # same result as 2 threads; on a shared 2-core machine 1.5x faster (no spin-waiting)
    cfg = replace_settings(
        cfg,
        {
            "heights.model": "tv",
            "threads": 1,
            "scale.magnification": float(t.magnifications[0]),
            "distortion.model": distortion,
        },
    )
    rec = reconstruct(images, cfg)
    return rec, evaluate_synthetic(rec, t, erode_px=3)


@pytest.fixture(scope="module")
def piecewise(sequence):
    return run(sequence, "piecewise")


@pytest.mark.slow
def test_cut_cards_heights_follow_table1_protocol(piecewise):
    rec, ev = piecewise
    t1 = ev.table1
    assert rec.scale.height_unit == "um" and rec.pixel_size_mm == pytest.approx(ev.to_world.scale, rel=0.03)
    assert t1.mean_accuracy < ev.gsd_um, t1.to_dict()
    # Issue target: rescale within 10 % of 1 on the full-size sequence. On this reduced 320×240 sequence with
    # the short test schedule it measures 1.19 (the heights come out ~16 % low); guarded at 25 %.
    assert abs(t1.rescale - 1.0) < 0.25, t1.to_dict()
    by_name = {r.name: r for r in t1.regions}
    # right sign and order: every card above the background, taller cards higher
    means = [by_name[f"card{k}"].mean for k in range(1, 7)]
    assert all(m > by_name["background"].mean for m in means)
    assert np.all(np.diff(means) > 0)
    assert by_name["background"].std < 1.5 * ev.gsd_um


@pytest.mark.slow
def test_cut_cards_cameras_and_distortion(piecewise):
    rec, ev = piecewise
    assert np.median(ev.registration_px) < 0.6, ev.registration_px
    assert ev.distortion_rms_px < 0.3, (ev.distortion_rms_px, ev.distortion_max_px)
    assert rec.init.method == "xcorr"


@pytest.mark.slow
def test_distortion_model_matters(sequence, piecewise):
    _, ev_pw = piecewise
    _, ev_none = run(sequence, "none")
    assert ev_none.table1.mean_precision > 1.3 * ev_pw.table1.mean_precision
    assert np.median(ev_none.registration_px) > 1.5 * np.median(ev_pw.registration_px)
