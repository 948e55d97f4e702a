"""Matching layer: SIFT, dense flow, the optional RoMa backend, the registry and the match figures.

Synthetic pairs have exact ground truth: a band-limited random texture and a copy rendered through a known
map (an affine map, or a smooth height bump seen as a y-disparity like a tilt about the x axis).
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from topograph.errors import OptionalDependencyError, TopographError
from topograph.matching import DenseConfig, Matcher, create_matcher, dense_flow, matchers
from topograph.matching.dense import flow_to_matches
from topograph.matching.roma import load_state_dict, normalized_to_pixels
from topograph.matching.sift import SiftConfig, SiftMatcher, nearest_neighbours, root_sift
from topograph.report.match_figures import draw_match_count_matrix, draw_matches, select_lines
from topograph.types import Matches

SIZE = 360
AFFINE = np.array([[1.02, 0.03, 5.3], [-0.02, 0.98, -3.7]])
BUMP_AMP_PX = 8.0
BUMP_SHIFT = (2.0, -1.5)


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Band-limited random texture in [0, 1] (sum of blurred noise at three scales)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    for sigma, amp in ((1.2, 1.0), (3.0, 0.8), (8.0, 0.6)):
        n = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
        img += amp * n / n.std()
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def render(src: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """``out(x) = src(map(x))`` by bicubic interpolation."""
    return cv2.remap(src, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_CUBIC, cv2.BORDER_REFLECT)


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))


def affine_truth(xy: np.ndarray, a: np.ndarray = AFFINE) -> np.ndarray:
    return xy @ a[:, :2].T + a[:, 2]


def bump(x: np.ndarray, y: np.ndarray, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """y-disparity of a Gaussian height bump, px."""
    s = min(h, w) / 6
    return BUMP_AMP_PX * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (2 * s * s))


def bump_truth(xy: np.ndarray) -> np.ndarray:
    """x_j = x_i + shift_x, y_j = y_i + shift_y + d(x_i, y_i)."""
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([x + BUMP_SHIFT[0], y + BUMP_SHIFT[1] + bump(x, y)], axis=-1)


@pytest.fixture(scope="module")
def affine_pair() -> tuple[np.ndarray, np.ndarray]:
    src = texture(SIZE, SIZE, seed=0)
    gx, gy = grid(SIZE, SIZE)
    inv = cv2.invertAffineTransform(AFFINE)
    return src, render(src, inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2], inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2])


@pytest.fixture(scope="module")
def bump_pair() -> tuple[np.ndarray, np.ndarray]:
    """View j of a height bump: solve x_i = T⁻¹(x_j) by fixed-point iteration (|∇d| < 1)."""
    src = texture(SIZE, SIZE, seed=1)
    gx, gy = grid(SIZE, SIZE)
    xi = gx - BUMP_SHIFT[0]
    yi = gy - BUMP_SHIFT[1]
    for _ in range(40):
        yi = gy - BUMP_SHIFT[1] - bump(xi, yi)
    return src, render(src, xi, yi)


# --------------------------------------------------------------------------------------------- SIFT


def test_sift_recovers_affine_map(affine_pair):
    a, b = affine_pair
    m = create_matcher("sift").match(a, b, 3, 5)
    err = np.linalg.norm(affine_truth(m.xy_i) - m.xy_j, axis=1)
    assert (m.i, m.j) == (3, 5)
    assert len(m) > 500
    assert np.median(err) < 0.5
    assert np.mean(err < 1.0) >= 0.95
    assert m.scores is not None and np.all((m.scores >= 0) & (m.scores <= 1))
    # no correspondence listed twice (one keypoint per orientation is collapsed)
    assert np.unique(np.round(np.hstack([m.xy_i, m.xy_j]), 2), axis=0).shape[0] == len(m)


def test_sift_recovers_height_bump(bump_pair):
    a, b = bump_pair
    m = create_matcher("sift").match(a, b, 0, 1)
    err = np.linalg.norm(bump_truth(m.xy_i) - m.xy_j, axis=1)
    assert len(m) > 500
    assert np.median(err) < 0.5
    assert np.mean(err < 1.0) >= 0.95


def test_sift_options_change_counts_sensibly(affine_pair):
    a, b = affine_pair
    base = SiftMatcher()
    fi, fj = base.detect(a), base.detect(b)

    def run(**opts):
        m = SiftMatcher(SiftConfig(**opts)).match_features(fi, fj, 0, 1)
        return len(m), float(np.mean(np.linalg.norm(affine_truth(m.xy_i) - m.xy_j, axis=1) < 1.0))

    n_def, in_def = run()
    n_strict, in_strict = run(ratio=0.6)
    n_no_mutual, _ = run(mutual=False)
    n_none, in_none = run(ratio=1.0, mutual=False)
    assert n_strict < n_def <= n_no_mutual < n_none
    assert in_strict >= in_def
    # without ratio test and mutual check every keypoint is "matched" (up to the collapsed keypoints that
    # OpenCV repeats per orientation at one spot): many wrong ones
    assert n_none > 0.8 * len(fi)
    assert in_none < 0.9 * in_def


def test_sift_detect_once_equals_match(affine_pair):
    a, b = affine_pair
    sift = create_matcher("sift")
    direct = sift.match(a, b, 0, 1)
    split = sift.match_features(sift.detect(a), sift.detect(b), 0, 1)
    np.testing.assert_array_equal(direct.xy_i, split.xy_i)
    np.testing.assert_array_equal(direct.xy_j, split.xy_j)


def test_sift_downscaled_detection_maps_back_to_full_resolution(affine_pair):
    a, b = affine_pair
    m = create_matcher("sift", max_image_side=SIZE // 2).match(a, b, 0, 1)
    d = m.xy_j - affine_truth(m.xy_i)
    assert len(m) > 200
    # a pixel-corner/centre slip in the rescaling would bias these by ~0.5 px
    assert np.all(np.abs(np.median(d, axis=0)) < 0.1)
    assert np.median(np.linalg.norm(d, axis=1)) < 0.5


@pytest.mark.parametrize("unit", [False, True], ids=["generic", "rootsift-unit-norm"])
def test_nearest_neighbours_match_brute_force(unit: bool):
    rng = np.random.default_rng(3)
    da = rng.random((300, 16), dtype=np.float32)
    db = rng.random((250, 16), dtype=np.float32)
    if unit:  # RootSIFT descriptors have unit L2 norm: the dot-product fast path
        da, db = root_sift(da), root_sift(db)
    nn_ij, d1, d2, nn_ji = nearest_neighbours(da, db, chunk_size=64)
    full = np.linalg.norm(da[:, None, :] - db[None, :, :], axis=2)
    srt = np.sort(full, axis=1)
    np.testing.assert_array_equal(nn_ij, full.argmin(axis=1))
    np.testing.assert_array_equal(nn_ji, full.argmin(axis=0))
    np.testing.assert_allclose(d1, srt[:, 0], atol=1e-4)
    np.testing.assert_allclose(d2, srt[:, 1], atol=1e-4)


def test_sift_on_blank_image_returns_no_matches():
    blank = np.full((100, 120), 0.5, np.float32)
    m = create_matcher("sift").match(blank, blank, 0, 1)
    assert len(m) == 0 and m.xy_i.shape == (0, 2)


# -------------------------------------------------------------------------------------------- dense


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_dense_flow_recovers_disparity_field(bump_pair, method):
    a, b = bump_pair
    flow = dense_flow(a, b, DenseConfig(method=method))
    gx, gy = grid(SIZE, SIZE)
    xy = np.stack([gx, gy], axis=-1)
    err = np.linalg.norm(xy + flow.flow - bump_truth(xy), axis=2)
    assert flow.flow.shape == (SIZE, SIZE, 2) and flow.flow.dtype == np.float32
    assert flow.valid.mean() > 0.9
    assert np.median(err[flow.valid]) < 0.2
    assert np.percentile(err[flow.valid], 95) < 0.5
    # on the bump (disparity > 4 px) too, not only on the flat part
    on_bump = flow.valid & (bump(gx, gy) > BUMP_AMP_PX / 2)
    assert on_bump.sum() > 1000 and np.median(err[on_bump]) < 0.2


def test_tile_slices_cover_the_range_once_with_margins():
    from topograph.matching.dense import tile_slices

    for size, tile, margin in ((1000, 300, 32), (257, 256, 16), (100, 500, 8), (1536, 1024, 32)):
        covered = np.zeros(size, int)
        for outer, inner in tile_slices(size, tile, margin):
            piece = np.arange(size)[outer][inner]
            assert outer.stop - outer.start <= piece.size + 2 * margin
            assert 0.66 * tile <= piece.size <= 1.5 * tile or piece.size == size
            covered[piece] += 1
        assert (covered == 1).all()


def test_tile_grid_gives_two_cores_a_tile_each():
    from topograph.matching.dense import tile_grid

    assert tile_grid(1200, 1200, 832) == (2, 1)  # quartz: one tile, two strips
    assert tile_grid(866, 1154, 832) == (1, 2)  # strips across the longer side
    assert tile_grid(1500, 2000, 832) == (2, 2)  # already several tiles: unchanged
    assert tile_grid(1200, 1200, 0) == (1, 1)  # no tiling asked


def test_flow_threads_give_the_same_flow(bump_pair):
    """Forward and backward solved side by side (one OpenCV thread each) or in turn: the same flow."""
    a, b = bump_pair
    cfg = DenseConfig(passes=2, tile_px=128)
    one = dense_flow(a, b, replace(cfg, threads=1))
    two = dense_flow(a, b, replace(cfg, threads=2))
    assert np.array_equal(one.flow, two.flow) and np.array_equal(one.valid, two.valid)


def test_flows_side_by_side_share_the_cores_and_give_the_same_flows(bump_pair, monkeypatch):
    """dense_flows with 2 threads: three flows run at once (two solves at a time, never more) and yield,
    in order, the flows each gives alone."""
    import threading

    import topograph.matching.dense as dense_module
    from topograph.matching.dense import dense_flows

    a, b = bump_pair
    cfg = DenseConfig(passes=2, tile_px=128, refine_backward=False, prealign=False)
    jobs = [(a, b, cfg, None), (b, a, cfg, None), (a, np.ascontiguousarray(b[:, ::-1]), cfg, None)]
    alone = [dense_flow(*job[:2], replace(cfg, threads=1)) for job in jobs]
    running, peak, lock = [0], [0], threading.Lock()
    create = cv2.DISOpticalFlow_create

    class CountedSolver:
        def __init__(self, preset: int) -> None:
            self.dis = create(preset)

        def __getattr__(self, name: str):
            return getattr(self.dis, name)

        def calc(self, *args):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                return self.dis.calc(*args)
            finally:
                with lock:
                    running[0] -= 1

    monkeypatch.setattr(dense_module.cv2, "DISOpticalFlow_create", CountedSolver)
    together = list(dense_flows(jobs, threads=2))
    assert peak[0] == 2  # side by side, and never more solves (and solver memory) than threads
    assert not dense_module._SOLVE_SLOTS  # the shared slots are gone afterwards
    for one, two in zip(alone, together, strict=True):
        assert np.array_equal(one.flow, two.flow) and np.array_equal(one.valid, two.valid)


def test_flows_one_at_a_time_solve_side_by_side_and_give_the_same_flows(bump_pair, monkeypatch):
    """dense_flows with flows_at_once 1: one flow in a worker thread at a time (the next submitted only when
    the last is taken), its own solves still two at a time, and the flows each gives alone."""
    import threading

    import topograph.matching.dense as dense_module
    from topograph.matching.dense import dense_flows

    a, b = bump_pair
    cfg = DenseConfig(passes=2, tile_px=128, refine_backward=False, prealign=False)
    jobs = [(a, b, cfg, None), (b, a, cfg, None), (a, np.ascontiguousarray(b[:, ::-1]), cfg, None)]
    alone = [dense_flow(*job[:2], replace(cfg, threads=1)) for job in jobs]
    flows, solves, lock = [0, 0], [0, 0], threading.Lock()
    real_flow, create = dense_module.dense_flow, cv2.DISOpticalFlow_create

    def counted(counter, fn):
        def run(*args, **kwargs):
            with lock:
                counter[0] += 1
                counter[1] = max(counter[1], counter[0])
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    counter[0] -= 1

        return run

    class CountedSolver:
        def __init__(self, preset: int) -> None:
            self.dis = create(preset)
            self.calc = counted(solves, self.dis.calc)

        def __getattr__(self, name: str):
            return getattr(self.dis, name)

    monkeypatch.setattr(dense_module, "dense_flow", counted(flows, real_flow))
    monkeypatch.setattr(dense_module.cv2, "DISOpticalFlow_create", CountedSolver)
    main = threading.get_ident()
    together = []
    for result in dense_flows(jobs, threads=2, flows_at_once=1):
        together.append(result)
        assert threading.get_ident() == main
    assert flows[1] == 1  # one flow at a time ...
    assert solves[1] == 2  # ... whose solves run side by side
    assert not dense_module._SOLVE_SLOTS
    for one, two in zip(alone, together, strict=True):
        assert np.array_equal(one.flow, two.flow) and np.array_equal(one.valid, two.valid)


def test_tiled_residual_flow_equals_the_whole_image_flow(bump_pair):
    """A small flow solved in tiles (two at a time) matches the one-piece solve and the truth, and the
    tiles give the same flow whether solved side by side or in turn."""
    from topograph.matching.base import to_uint8
    from topograph.matching.dense import _flow_field, _flow_field_tiled

    a, b = (to_uint8(x) for x in bump_pair)
    cfg = DenseConfig(tile_px=128, tile_margin_px=32, threads=2)
    whole = _flow_field(a, b, cfg)
    tiled = _flow_field_tiled(a, b, cfg)
    inner = (slice(16, -16), slice(16, -16))
    assert np.median(np.abs(tiled - whole)[inner]) < 0.02
    assert np.array_equal(tiled, _flow_field_tiled(a, b, DenseConfig(tile_px=128, tile_margin_px=32, threads=1)))
    gx, gy = grid(SIZE, SIZE)
    xy = np.stack([gx, gy], axis=-1)
    err = np.linalg.norm(xy + tiled - bump_truth(xy), axis=2)[inner]
    assert np.median(err) < 0.2


def test_coarse_first_pass_keeps_the_flow_accurate(bump_pair):
    """First pass at half resolution + full-resolution residual pass: same accuracy on the bump."""
    a, b = bump_pair
    flow = dense_flow(a, b, DenseConfig(passes=2, first_pass_downscale=2, refine_backward=False, tile_px=200))
    gx, gy = grid(SIZE, SIZE)
    xy = np.stack([gx, gy], axis=-1)
    err = np.linalg.norm(xy + flow.flow - bump_truth(xy), axis=2)
    assert flow.valid.mean() > 0.85
    assert np.median(err[flow.valid]) < 0.15
    on_bump = flow.valid & (bump(gx, gy) > BUMP_AMP_PX / 2)
    assert on_bump.sum() > 1000 and np.median(err[on_bump]) < 0.15


def _flow_with_garbage_region(bump_pair, cfg: DenseConfig | None = None):
    """Flow of the bump pair after view j's block [60:160, 200:300] is replaced by other texture (content of
    view i that view j does not show): flow, error to the truth (px), the garbage core, the area away from it."""
    a, b = bump_pair
    b = b.copy()
    b[60:160, 200:300] = texture(100, 100, seed=7)
    flow = dense_flow(a, b) if cfg is None else dense_flow(a, b, cfg)
    gx, gy = grid(SIZE, SIZE)
    xy = np.stack([gx, gy], axis=-1)
    t = bump_truth(xy)
    core = (t[..., 0] >= 205) & (t[..., 0] < 295) & (t[..., 1] >= 65) & (t[..., 1] < 155)
    away = ~((t[..., 0] >= 185) & (t[..., 0] < 315) & (t[..., 1] >= 45) & (t[..., 1] < 175))
    return flow, np.linalg.norm(xy + flow.flow - t, axis=2), core, away


def test_dense_forward_backward_check_rejects_garbage_region(bump_pair):
    flow, err, core, away = _flow_with_garbage_region(bump_pair)
    assert flow.valid[core].mean() < 0.15
    assert flow.valid[away].mean() > 0.95
    assert np.median(err[flow.valid & away]) < 0.2


def test_half_resolution_check_keeps_the_flow_and_rejects_garbage(bump_pair):
    """Backward flow of the first pass at half resolution (check only): the forward flow keeps its accuracy
    on the bump and the check still rejects content that view j does not show."""
    cfg = DenseConfig(passes=2, check_downscale=2, refine_backward=False, tile_px=200)
    flow, err, core, away = _flow_with_garbage_region(bump_pair, cfg)
    gx, gy = grid(SIZE, SIZE)
    assert flow.valid[core].mean() < 0.15
    assert flow.valid[away].mean() > 0.9
    assert np.median(err[flow.valid & away]) < 0.15
    on_bump = flow.valid & away & (bump(gx, gy) > BUMP_AMP_PX / 2)
    assert on_bump.sum() > 1000 and np.median(err[on_bump]) < 0.15


def test_dense_prealignment_handles_rotation_and_shift():
    ang = np.deg2rad(8.0)
    a_true = np.array([[np.cos(ang), -np.sin(ang), 30.0], [np.sin(ang), np.cos(ang), -25.0]])
    src = texture(SIZE, SIZE, seed=4)
    gx, gy = grid(SIZE, SIZE)
    inv = cv2.invertAffineTransform(a_true)
    dst = render(src, inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2], inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2])
    flow = dense_flow(src, dst)
    xy = np.stack([gx, gy], axis=-1)
    err = np.linalg.norm(xy + flow.flow - affine_truth(xy, a_true), axis=2)
    assert flow.valid.mean() > 0.8  # the rest maps outside view j or onto its reflected border
    assert np.median(err[flow.valid]) < 0.1
    # a caller-supplied pre-alignment is used as given
    given = dense_flow(src, dst, DenseConfig(), prealignment=a_true)
    assert np.median(np.linalg.norm(xy + given.flow - affine_truth(xy, a_true), axis=2)[given.valid]) < 0.1


def test_dense_matcher_samples_the_consistent_grid(bump_pair):
    a, b = bump_pair
    cfg = DenseConfig(stride=4)
    flow = dense_flow(a, b, cfg)
    m = flow_to_matches(flow, 2, 7, stride=4, sigma_px=cfg.fb_sigma_px)
    assert (m.i, m.j) == (2, 7)
    assert len(m) == int(flow.valid[::4, ::4].sum())
    assert np.all(m.xy_i % 4 == 0)
    ix = m.xy_i.astype(int)
    np.testing.assert_allclose(m.xy_j - m.xy_i, flow.flow[ix[:, 1], ix[:, 0]], atol=1e-5)
    e = flow.fb_error[ix[:, 1], ix[:, 0]]
    np.testing.assert_allclose(m.scores, np.exp(-(e.astype(float) ** 2) / cfg.fb_sigma_px**2), rtol=1e-6)
    assert m.scores.min() >= np.exp(-((cfg.fb_threshold_px / cfg.fb_sigma_px) ** 2)) - 1e-9
    via_registry = create_matcher("dense", stride=4).match(a, b, 2, 7)
    assert abs(len(via_registry) - len(m)) <= 0.01 * len(m)


# ----------------------------------------------------------------------------------------- registry


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"sift", "dense", "roma"} <= set(matchers.names())
    assert isinstance(create_matcher("sift"), Matcher) and isinstance(create_matcher("dense"), Matcher)
    with pytest.raises(TopographError) as exc:
        create_matcher("surf")
    assert "surf" in str(exc.value) and all(n in exc.value.fix for n in ("sift", "dense", "roma"))


def test_unknown_and_invalid_options_are_user_errors():
    with pytest.raises(TopographError) as exc:
        create_matcher("sift", ratioo=0.7)
    assert "ratioo" in str(exc.value) and "ratio" in exc.value.fix
    with pytest.raises(TopographError):
        create_matcher("dense", method="lucas-kanade")
    assert create_matcher("sift", ratio="0.7", mutual="false").config.ratio == 0.7  # YAML/CLI strings coerce
    assert create_matcher("sift", ratio=None).config.ratio == SiftConfig().ratio  # None keeps the default


def test_third_party_matcher_is_loaded_from_entry_points(monkeypatch):
    class EchoMatcher:
        name = "echo"

        def __init__(self, offset: float = 0.0) -> None:
            self.offset = offset

        def match(self, image_i, image_j, i, j):
            xy = np.array([[1.0, 2.0]])
            return Matches(i, j, xy, xy + self.offset)

    class FakeEntryPoint:
        name = "echo"

        def load(self):
            return EchoMatcher

    seen: list[str] = []

    def fake_entry_points(group: str):
        seen.append(group)
        return [FakeEntryPoint()] if group == "topograph.matchers" else []

    import topograph.registry

    monkeypatch.setattr(topograph.registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(matchers, "_factories", dict(matchers._factories))
    monkeypatch.setattr(matchers, "_loaded_entry_points", False)
    assert "echo" in matchers.names()
    m = create_matcher("echo", offset=2.5)
    assert seen == ["topograph.matchers"]
    assert m.match(np.zeros((4, 4)), np.zeros((4, 4)), 0, 1).xy_j.tolist() == [[3.5, 4.5]]


# --------------------------------------------------------------------------------------------- RoMa


def _save_state(path: Path, **tensors) -> Path:
    import torch

    torch.save({k: torch.as_tensor(v) for k, v in tensors.items()}, path)
    return path


@pytest.fixture()
def weight_files(tmp_path):
    return (
        str(_save_state(tmp_path / "roma.pth", w=np.arange(6.0).reshape(2, 3))),
        str(_save_state(tmp_path / "dinov2.pth", v=np.ones(4))),
    )


def test_roma_without_weights_says_how_to_get_them(tmp_path):
    for weights in (None, str(tmp_path / "missing.pth"), str(tmp_path)):
        with pytest.raises(TopographError) as exc:
            create_matcher("roma", weights=weights, dinov2_weights=weights)
        assert not isinstance(exc.value, OptionalDependencyError)
        assert "--roma-weights" in exc.value.fix and "download" in exc.value.fix


def test_roma_without_package_names_the_extra(monkeypatch, weight_files):
    monkeypatch.setitem(sys.modules, "romatch", None)  # makes `import romatch` fail even if installed
    with pytest.raises(OptionalDependencyError) as exc:
        create_matcher("roma", weights=weight_files[0], dinov2_weights=weight_files[1])
    assert "romatch" in str(exc.value) and "topograph[roma]" in str(exc.value)


class _TouchOnLoad:
    """Unpickling this runs ``Path.touch(marker)``: code execution that ``weights_only`` must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_state_dict_reads_tensors_and_refuses_code(tmp_path):
    import torch

    good = _save_state(tmp_path / "good.pth", a=np.eye(2), b=np.zeros(3))
    state = load_state_dict(good)
    assert set(state) == {"a", "b"} and torch.equal(state["a"], torch.eye(2, dtype=torch.float64))

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"a": torch.zeros(1), "payload": _TouchOnLoad(marker)}, evil)
    with pytest.raises(TopographError) as exc:
        load_state_dict(evil, "RoMa")
    assert "plain tensors" in str(exc.value)
    assert not marker.exists()

    not_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_dict)
    with pytest.raises(TopographError):
        load_state_dict(not_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(TopographError):
        load_state_dict(garbage)


def _fake_romatch(shift_px: tuple[float, float], res: int, calls: dict) -> types.ModuleType:
    """A stand-in for the romatch package whose model returns the warp of a known translation."""
    import torch

    class FakeRoma:
        symmetric = True

        def match(self, path_a, path_b, device=None):
            h, w = cv2.imread(path_a, cv2.IMREAD_GRAYSCALE).shape
            calls["paths"] = (path_a, path_b)
            lin = torch.linspace(-1 + 1 / res, 1 - 1 / res, res)
            yy, xx = torch.meshgrid(lin, lin, indexing="ij")
            a = torch.stack([xx, yy], dim=-1)
            d = torch.tensor([2 * shift_px[0] / w, 2 * shift_px[1] / h])
            q_warp = torch.cat([a, a + d], dim=-1)
            s_warp = torch.cat([a - d, a], dim=-1)
            certainty = torch.ones(res, 2 * res)
            certainty[:, res - 1] = 0.0  # one column of A→B below any threshold
            return torch.cat([q_warp, s_warp], dim=1), certainty

        def sample(self, warp, certainty, num=10000):
            idx = torch.randperm(warp.shape[0] * warp.shape[1])[:num]
            return warp.reshape(-1, 4)[idx], certainty.reshape(-1)[idx]

    def roma_outdoor(device, weights=None, dinov2_weights=None, coarse_res=560, upsample_res=864, amp_dtype=None):
        calls.update(device=device, weights=weights, dinov2=dinov2_weights, amp_dtype=amp_dtype, res=coarse_res)
        return FakeRoma()

    module = types.ModuleType("romatch")
    module.roma_outdoor = roma_outdoor
    return module


def test_roma_matcher_converts_the_warp_to_pixels(monkeypatch, weight_files, tmp_path):
    import torch

    calls: dict = {}
    res = 32
    monkeypatch.setitem(sys.modules, "romatch", _fake_romatch((3.0, -2.0), res, calls))
    img = texture(res, res, seed=5)
    roma = create_matcher("roma", weights=weight_files[0], dinov2_weights=weight_files[1], device="cpu")
    assert torch.equal(calls["weights"]["w"], torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    assert torch.equal(calls["dinov2"]["v"], torch.ones(4, dtype=torch.float64))
    assert calls["device"] == "cpu" and calls["amp_dtype"] == torch.float32

    m = roma.match(img, img, 0, 1)
    assert len(m) == 2 * res * res  # sample mode, fewer correspondences than the default num
    np.testing.assert_allclose(m.xy_j - m.xy_i, np.tile([3.0, -2.0], (len(m), 1)), atol=1e-4)
    assert not Path(calls["paths"][0]).exists()  # temporary images are cleaned up

    dense = create_matcher(
        "roma", weights=weight_files[0], dinov2_weights=weight_files[1], device="cpu", mode="dense", stride=2
    ).match(img, img, 0, 1)
    # view i's half only, every 2nd pixel, without the zero-certainty column; pixel centres at integers
    assert len(dense) == (res // 2) * (res // 2)
    np.testing.assert_allclose(np.unique(dense.xy_i[:, 0]), np.arange(0, res, 2), atol=1e-4)
    np.testing.assert_allclose(normalized_to_pixels(np.array([[-1.0, 1.0]]), 10, 4), [[-0.5, 3.5]])

    evil = tmp_path / "evil.pth"
    torch.save({"payload": _TouchOnLoad(tmp_path / "pwned")}, evil)
    with pytest.raises(TopographError):
        create_matcher("roma", weights=str(evil), dinov2_weights=weight_files[1], device="cpu")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------ figures


def test_draw_matches_colours_inliers_and_outliers(tmp_path):
    a = np.zeros((60, 80), np.float32)
    b = np.zeros((50, 90), np.uint8)
    m = Matches(0, 1, np.array([[10.0, 50.0], [20.0, 10.0]]), np.array([[30.0, 50.0], [40.0, 10.0]]))
    out = draw_matches(a, b, m, tmp_path / "fig" / "matches_0_1.png", inlier_mask=np.array([True, False]))
    img = cv2.imread(str(out))
    top = img.shape[0] - 60  # caption band above the side-by-side views
    assert img.shape[1:] == (170, 3) and 10 < top < 40
    mid_in = img[top + 50, 60].astype(int)  # on the inlier line from (10, 50) to (110, 50)
    mid_out = img[top + 10, 70].astype(int)  # on the outlier line from (20, 10) to (120, 10)
    assert mid_in[1] > 150 and mid_in[1] > mid_in[2] + 80
    assert mid_out[2] > 150 and mid_out[2] > mid_out[1] + 80
    assert sorted(p.name for p in out.parent.iterdir()) == ["matches_0_1.png"]  # no temp file left
    with pytest.raises(ValueError):
        draw_matches(a, b, m, tmp_path / "bad.png", inlier_mask=np.array([True]))


def test_select_lines_keeps_outlier_proportion():
    mask = np.arange(1000) % 10 != 0  # 10 % outliers
    idx = select_lines(1000, 300, mask)
    assert idx.size == 300 and np.unique(idx).size == 300
    assert abs(np.mean(~mask[idx]) - 0.1) < 0.01
    assert select_lines(50, 300, None).tolist() == list(range(50))


def test_draw_match_count_matrix(tmp_path):
    counts = np.array([[0, 120, 30], [120, 0, 75], [30, 75, 0]])
    out = draw_match_count_matrix(counts, ["a", "b", "c"], tmp_path / "match_counts.png")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 100 and img.std() > 10
    with pytest.raises(ValueError):
        draw_match_count_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        draw_match_count_matrix(counts, ["a"], tmp_path / "x.png")


# ------------------------------------------------------------------------------------ real SEM data


def _read(path: Path) -> np.ndarray:
    return cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


@pytest.mark.slow
def test_quartz_sift_and_dense_agree(quartz_dir):
    a, b = _read(quartz_dir / "Quarz_01.png"), _read(quartz_dir / "Quarz_02.png")
    m = create_matcher("sift").match(a, b, 0, 1)
    assert len(m) >= 1000
    flow = dense_flow(a, b)
    grain = a > 0.2  # the grain is brighter than the substrate
    assert flow.valid[grain].mean() > 0.6
    # two independent methods: the dense flow at each SIFT keypoint lands on its SIFT partner
    xy = m.xy_i.astype(np.float32)
    fx = cv2.remap(flow.flow[..., 0], xy[:, 0:1], xy[:, 1:2], cv2.INTER_LINEAR).ravel()
    fy = cv2.remap(flow.flow[..., 1], xy[:, 0:1], xy[:, 1:2], cv2.INTER_LINEAR).ravel()
    ix = np.round(m.xy_i).astype(int)
    ok = flow.valid[ix[:, 1], ix[:, 0]]
    err = np.linalg.norm(m.xy_i + np.stack([fx, fy], axis=1) - m.xy_j, axis=1)[ok]
    assert ok.mean() > 0.9
    assert np.median(err) < 0.75 and np.mean(err < 1.0) > 0.75
