"""Stage caching: a re-run that changes only a late-stage option reuses the early stages."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

import topograph.sem.pipeline as sem_pipeline
from topograph.io.stage_cache import StageCache
from topograph.sem.config import SemConfig
from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset
from topograph.types import AffineCamera, PointCloud


def test_codec_round_trips_dataclass_trees(tmp_path: Path) -> None:
    cam = AffineCamera(rotation=np.eye(3), scale=1.25, skew=0.01, translation=np.array([3.0, -2.0]))
    cloud = PointCloud(np.arange(12, dtype=np.float32).reshape(4, 3), unit="um", intensity=None)
    value = (cam, [cloud, {"note": "a", "n": 3}], "text", None, np.float64(2.5))
    store = StageCache(tmp_path)
    store.save("stage", "fp1", value)
    store.write(tmp_path)
    back = StageCache(tmp_path).load("stage", "fp1")
    assert back is not None
    cam2, (cloud2, extra), text, none, number = back
    assert isinstance(cam2, AffineCamera) and cam2.scale == 1.25 and np.array_equal(cam2.translation, cam.translation)
    assert cloud2.unit == "um" and cloud2.xyz.dtype == np.float32 and np.array_equal(cloud2.xyz, cloud.xyz)
    assert extra == {"note": "a", "n": 3} and text == "text" and none is None and number == 2.5
    # another fingerprint, a damaged file and a foreign class are all misses, never errors
    assert StageCache(tmp_path).load("stage", "fp2") is None
    (tmp_path / "cache" / "stage.npz").write_bytes(b"not a zip")
    assert StageCache(tmp_path).load("stage", "fp1") is None
    # only topograph dataclasses, arrays and plain data are stored
    for foreign in (Path, np.array([object()]), Foreign(1)):
        store = StageCache(tmp_path)
        store.save("x", "fp", foreign)
        with pytest.raises(TypeError):
            store.write(tmp_path)


@dataclass(frozen=True)
class Foreign:
    value: int


def test_fingerprint_follows_settings() -> None:
    cfg = SemConfig()
    key = StageCache.key
    assert key("s", cfg.matching) == key("s", SemConfig().matching)
    assert key("s", cfg.matching) != key("s", replace(cfg.matching, sift=replace(cfg.matching.sift, ratio=0.7)))
    assert key("s", cfg.matching) != key("t", cfg.matching)
    # arrays enter by content: equal values agree, one changed pixel or dtype does not
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert key("s", a) == key("s", a.copy())
    assert key("s", a) != key("s", a.astype(np.float64)) and key("s", a) != key("s", a + np.eye(3, 4, dtype=np.float32))
    assert key("s", "1") != key("s", 1)


@pytest.fixture(scope="module")
def small_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = render_sem_series(GrainSpec(seed=4), tilts_deg=(0, 5, 10), image_size=(240, 240), seed=4)
    return save_sem_dataset(ds, tmp_path_factory.mktemp("cache") / "grain")


def test_late_stage_option_change_skips_the_sparse_stages(
    small_series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cfg = SemConfig()
    first = sem_pipeline.run_sem([small_series], out, cfg)
    assert first.cached_stages == () and (out / "cache" / "sparse.npz").is_file()
    assert {"match", "cameras", "bundle"} <= set(first.timings_s)

    calls: list[str] = []
    real_match = sem_pipeline.match_series

    def counting_match(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append("match")
        return real_match(*args, **kwargs)

    monkeypatch.setattr(sem_pipeline, "match_series", counting_match)
    # a dense-stage option changes: matching, cameras and bundle adjustment are not recomputed
    late = replace(cfg, dense=replace(cfg.dense, outlier_std_ratio=2.5))
    second = sem_pipeline.run_sem([small_series], out, late)
    assert calls == [] and second.cached_stages == ("sparse",)
    assert "match" not in second.timings_s and second.summary["cached_stages"] == ["sparse"]
    np.testing.assert_allclose(second.reconstruction.tilts_deg, first.reconstruction.tilts_deg, atol=0)
    np.testing.assert_array_equal(second.reconstruction.points.xyz, first.reconstruction.points.xyz)
    assert second.dense is not None and len(second.dense.cloud) > 1000

    # an early-stage option changes: everything is recomputed (and the cache replaced)
    # (the dense stage is switched off from here: the cache decision is made before it, and it halves the test)
    early = replace(
        late,
        matching=replace(cfg.matching, sift=replace(cfg.matching.sift, ratio=0.75)),
        dense=replace(late.dense, enabled=False),
    )
    third = sem_pipeline.run_sem([small_series], out, early)
    assert calls == ["match"] and third.cached_stages == ()
    # --no-cache recomputes even when nothing changed
    fourth = sem_pipeline.run_sem([small_series], out, early, use_cache=False)
    assert calls == ["match", "match"] and fourth.cached_stages == ()
