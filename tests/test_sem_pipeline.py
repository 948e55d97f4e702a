"""End-to-end tests of the SEM engine on rendered grains (exact truth) and the real quartz series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from topograph.analysis.evaluate_sem import evaluate_cloud
from topograph.config import apply_overrides
from topograph.io.sidecar import MetadataOverrides
from topograph.sem.config import SemConfig
from topograph.sem.pipeline import run_sem
from topograph.synth.sem import GrainSpec, load_sem_truth, render_sem_series, save_sem_dataset

SPARSE_ONLY = apply_overrides(SemConfig(), {"dense.enabled": False})


def _render(tmp: Path, tilts: tuple[float, ...], size: int, seed: int, with_metadata: bool = True) -> Path:
    ds = render_sem_series(GrainSpec(seed=seed), tilts_deg=tilts, image_size=(size, size), seed=seed)
    kind = "tif" if with_metadata else "png"
    return save_sem_dataset(ds, tmp / f"grain_{seed}_{len(tilts)}_{kind}", with_metadata=with_metadata)


def _grain_selector(truth):
    return lambda p: truth.height_at(p[:, 0], p[:, 1]) > 0.02 * truth.grain_height_um


@pytest.fixture(scope="module")
def grain_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0/5/10° series written as plain PNGs (no metadata: cameras by factorization)."""
    return _render(tmp_path_factory.mktemp("sem"), (0.0, 5.0, 10.0), 500, seed=11, with_metadata=False)


@pytest.mark.parametrize(
    ("size", "seed", "whole_bound", "grain_bound", "tilt_tol"),
    [
        pytest.param(800, 11, 0.2, 0.2, 0.1, marks=pytest.mark.slow, id="800 px (the renderer's default)"),
        pytest.param(500, 11, 0.3, 0.2, 0.15, marks=pytest.mark.slow, id="500 px"),
    ],
)
def test_factorization_on_rendered_grain_recovers_tilts_and_shape(
    tmp_path: Path, size: int, seed: int, whole_bound: float, grain_bound: float, tilt_tol: float
) -> None:
    path = _render(tmp_path, (0.0, 5.0, 10.0), size, seed=seed, with_metadata=False)
    # Affine track refinement (matching.track_refinement); the default LK gives ~0.3-0.5 % here.
    run = run_sem([path], None, apply_overrides(SPARSE_ONLY, {"matching.track_refinement": "affine"}))
    truth = load_sem_truth(path)
    recon = run.reconstruction
    assert recon.camera_source == "factorization"
    assert run.unit == "px"
    # Relative tilts within 0.1° at 800 px (0.15° at 500 px: 10.147° in the right-handed frame of issue 16,
    # whose images are the vertical mirror of the earlier renders); the sign is right-handed about the axis
    # and the relief protrudes (docs/conventions.md).
    np.testing.assert_allclose(recon.tilts_deg, [0.0, 5.0, 10.0], atol=tilt_tol)
    # Factorization + triangulation is already near the optimum here; bundle adjustment (robust loss) keeps
    # every view at the matching noise level (BA from perturbed cameras: tests/test_triangulation_bundle.py).
    assert np.all(recon.rms_px_after < 0.5)
    res = evaluate_cloud(
        recon.points.xyz,
        truth.surface_points(),
        truth.distance_to_surface,
        specimen_size=truth.grain_diameter_um,
        mode="similarity",
        allow_mirror=True,
        point_groups={"grain": _grain_selector(truth)},
    )
    # Issue target: < 0.2 % of the diameter. At 800 px the whole cloud has 0.122 % (grain points 0.081 %);
    # at 500 px 0.224 % (grain 0.160 %): half of its points lie on the substrate, whose texture is barely
    # above the noise (contrast 0.022 vs noise 0.013 per pixel), and D spans fewer pixels. Other grains:
    # benchmarks/bench_sem_sparse.py (docs/benchmarks.md).
    assert res["groups"]["grain"]["median_distance_pct"] < grain_bound, res["groups"]["grain"]
    assert res["median_distance_pct"] < whole_bound, res
    assert not res["mirrored"] and not res["upside_down"], res["mirror_fit"]


def test_metadata_cameras_and_flip_relief(tmp_path: Path) -> None:
    path = _render(tmp_path, (0.0, 5.0, 10.0), 400, seed=12)
    run = run_sem([path], None, SPARSE_ONLY)
    assert run.reconstruction.camera_source == "metadata"
    assert run.unit == "um"
    np.testing.assert_allclose(run.reconstruction.tilts_deg, [0.0, 5.0, 10.0], atol=1e-6)
    # Heights come out positive (the grain stands up from the substrate) ...
    z = run.reconstruction.points.xyz[:, 2]
    assert np.ptp(z) > 5.0
    # ... and without metadata, --flip-relief inverts the relief of the factorization.
    png = _render(tmp_path, (0.0, 5.0, 10.0), 400, seed=12, with_metadata=False)
    a = run_sem([png], None, SPARSE_ONLY).reconstruction
    b = run_sem([png], None, apply_overrides(SPARSE_ONLY, {"cameras.flip_relief": True})).reconstruction
    np.testing.assert_allclose(a.tilts_deg, -b.tilts_deg, atol=0.01)
    assert np.corrcoef(a.points.xyz[:, 2], b.points.xyz[:, 2])[0, 1] < -0.99


def test_tilts_given_on_the_command_line_override_missing_metadata(grain_png: Path) -> None:
    truth = load_sem_truth(grain_png)
    ov = MetadataOverrides(tilts_deg=(0.0, 5.0, 10.0), tilt_axis_deg=0.0, pixel_size_um=truth.pixel_size_um)
    run = run_sem([grain_png], None, SPARSE_ONLY, overrides=ov)
    assert run.reconstruction.camera_source == "metadata"
    assert run.unit == "um"
    res = evaluate_cloud(
        run.reconstruction.points.xyz,
        truth.surface_points(),
        truth.distance_to_surface,
        specimen_size=truth.grain_diameter_um,
        mode="rigid",
        allow_mirror=False,
    )
    assert res["median_distance_pct"] < 0.75, res  # sparse: keypoint-precision limited (see above)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tilts", "seed", "median_bound"),
    [((-10.0, 0.0, 10.0), 21, 0.12), ((-10.0, -5.0, 0.0, 5.0, 10.0), 22, 0.12), ((0.0, 5.0, 10.0), 23, 0.13)],
    ids=["3 views -10/0/10", "5 views", "3 views 0/5/10"],
)
def test_dense_reconstruction_of_rendered_grain(
    tmp_path: Path, tilts: tuple[float, ...], seed: int, median_bound: float
) -> None:
    path = _render(tmp_path, tilts, 800, seed=seed)  # the renderer's default image size
    truth = load_sem_truth(path)
    out = tmp_path / "out"
    run = run_sem([path], out, SemConfig())
    dense = run.dense
    res = evaluate_cloud(
        dense.cloud.xyz,
        truth.surface_points(),
        truth.distance_to_surface,
        specimen_size=truth.grain_diameter_um,
        mode="rigid",  # the pixel size is known: the cloud is in µm
        allow_mirror=False,
        visible_truth_points=truth.visible_surface_points(dense.reference_view, stride=2, grain_only=True),
        point_groups={"grain": _grain_selector(truth)},
    )
    grain = res["groups"]["grain"]
    assert grain["n"] >= 50_000, grain
    assert grain["rms_distance_pct"] < 0.3, grain
    # Issue target 0.12 %. Measured (benchmarks/bench_sem_dense.py --size 800): 0.081-0.088 % with 3 views
    # at -10/0/10°, 0.082-0.092 % with 5 views, 0.107-0.121 % with 3 views at 0/5/10° (half the tilt range;
    # guarded at 0.13 %). The two-view SGBM baseline on the same grains: 0.24-0.40 %.
    assert grain["median_distance_pct"] < median_bound, grain
    assert res["completeness"] >= 0.90, res["completeness"]
    # Closed mesh (flat base on the substrate): volume within 5 % of the truth.
    assert abs(dense.metrics.volume / truth.true_volume_um3 - 1.0) < 0.05
    for name in ("dense.ply", "height_map.tif", "height_map.png", "grain_mesh.stl", "grain_mesh.ply", "report.html"):
        assert (out / name).is_file(), name
    # Reprojection residual histograms: one curve per view, embedded in the report.
    svg = (out / "figures" / "reprojection_residuals.svg").read_text()
    assert svg.count("<polyline") == len(tilts)
    assert "Reprojection residuals after bundle adjustment" in (out / "report.html").read_text()


@pytest.mark.slow
def test_quartz_sparse(quartz_dir: Path) -> None:
    run = run_sem([quartz_dir], None, SPARSE_ONLY)
    recon = run.reconstruction
    assert recon.camera_source == "factorization"
    assert int(recon.tracks.visible.all(axis=0).sum()) >= 500
    assert np.all(recon.rms_px_after < 1.0)
    # The published research code finds 4.73° and 9.34° on this series (from 181 tracks, mostly in the upper
    # half of the image). The views deform slightly beyond the affine model, so the tilt depends on the image
    # region by ~±0.7°/±1.3°: the run says so, and 3D-SEM's values lie within the uncertainty it reports.
    tilts = np.sort(np.abs(recon.tilts_deg))
    assert 3.5 < tilts[1] < 6.0 and 8.0 < tilts[2] < 11.0, tilts
    unc = run.summary["relative_tilts_uncertainty_deg"]
    assert unc is not None and not unc["consistent_across_image"]
    assert np.all(np.asarray(unc["statistical"])[1:] < 0.15)
    total = np.asarray(unc["total"])[np.argsort(np.abs(recon.tilts_deg))]
    assert np.all(np.abs(tilts[1:] - [4.73, 9.34]) < total[1:]), (tilts, total)
    assert any("depend on the image region" in w for w in run.warnings)
    # A grain hundreds of px high: ~75 px of parallax between the outer views, far from the low-relief warning.
    relief = run.summary["height_resolution"]
    assert relief["height_resolution_px"] == pytest.approx(0.1 / np.sin(np.deg2rad(tilts[2])), rel=1e-6)
    assert 40.0 < relief["relief_parallax_px"] < 120.0, relief
    assert not any("little parallax" in w for w in run.warnings)


def test_threads_change_neither_the_results_nor_the_files(tmp_path: Path) -> None:
    """``threads`` 1 (all in turn) and 2 (flows, tiles and patch chunks side by side, the series' figures
    written beside the dense stage): byte-identical cloud and meshes, the same files."""
    path = _render(tmp_path, (0.0, 5.0, 10.0), 320, seed=12, with_metadata=False)  # affine track refinement
    outs = {}
    for threads in (1, 2):
        outs[threads] = tmp_path / f"out{threads}"
        run = run_sem([path], outs[threads], apply_overrides(SemConfig(), {"threads": threads}))
        assert run.dense is not None and len(run.dense.cloud) > 30_000
    files = {t: sorted(p.relative_to(o).as_posix() for p in o.rglob("*") if p.is_file()) for t, o in outs.items()}
    assert files[1] == files[2] and "figures/matches_0_1.jpg" in files[1]
    for name in ("dense.ply", "sparse.ply", "grain_mesh.stl", "surface_mesh.ply", "height_map.tif"):
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
