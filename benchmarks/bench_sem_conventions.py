"""Convention matrix at full size (issue 16): the right shape from any microscope.

    python benchmarks/bench_sem_conventions.py [--size 800] [--cases all|matrix|mask] [--set key=value ...] \
        [--only PART ...] [--noise SIGMA]

Every case renders a series from the physical description (tilt axis at any angle, both tilt senses, images
rotated after capture, drift, 3/5/7 views, chiral objects, two grains, grains touching the border, dark /
bright substrates, low contrast), runs ``topograph sem`` (dense, default settings) with metadata in the
documented convention, in the opposite one, or without metadata, and scores the dense cloud with a *proper*
similarity (a mirror image is a failure). Targets: not mirrored, right way up, grain RMS ≤ 0.2 % of D,
coverage ≥ 95 %, tilt axis within 0.5°, relative tilts within 0.1°; grain mask IoU ≥ 0.9.
Prints one markdown row per case (the table of docs/benchmarks.md), with the relief's extent in reference
pixels that the chained flows' settings follow (:func:`topograph.sem.relief_extent.reference_relief_extent_px`)
and the reference image's noise in grey levels after the flow's stretch that its smoothness follows
(:func:`topograph.sem.image_noise.stretched_noise_grey`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_sem_conventions import Case, metadata_overrides  # noqa: E402

from topograph.analysis.evaluate_sem import Alignment, evaluate_cloud, evaluate_sem_truth  # noqa: E402
from topograph.config import apply_overrides  # noqa: E402
from topograph.sem.config import SemConfig  # noqa: E402
from topograph.sem.image_noise import stretched_noise_grey  # noqa: E402
from topograph.sem.pipeline import run_sem  # noqa: E402
from topograph.sem.relief_extent import reference_relief_extent_px  # noqa: E402
from topograph.synth.sem import GrainSpec, SemDataset, load_sem_truth, render_sem_series, save_sem_dataset  # noqa: E402

MATRIX = {
    "axis 0°, 0/5/10, documented": Case(0.0, (0.0, 5.0, 10.0), "documented"),
    "axis 0°, 0/5/10, opposite": Case(0.0, (0.0, 5.0, 10.0), "opposite"),
    "axis 0°, 0/5/10, none": Case(0.0, (0.0, 5.0, 10.0), "none"),
    "axis 30°, −7/0/7, drift, documented": Case(30.0, (-7.0, 0.0, 7.0), "documented", drift=True),
    "axis 30°, −7/0/7, drift, opposite": Case(30.0, (-7.0, 0.0, 7.0), "opposite", drift=True),
    "axis 90°, 0/5/10, none": Case(90.0, (0.0, 5.0, 10.0), "none"),
    "axis 135°, 0/−5/−10, none": Case(135.0, (0.0, -5.0, -10.0), "none"),
    "axis 0°, rotated 90°, documented": Case(0.0, (0.0, 5.0, 10.0), "documented", 90.0),
    "axis 30°, rotated 180°, documented": Case(30.0, (0.0, 5.0, 10.0), "documented", 180.0),
    "axis 0°, rotated 270°, 5 views, none": Case(0.0, (-10.0, -5.0, 0.0, 5.0, 10.0), "none", 270.0),
    "L-block, axis 30°, 7 views, opposite": Case(
        30.0, (-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0), "opposite", specimen="l_block"
    ),
}
MAX_SCORED_POINTS = 300_000
MASK = {  # (render keyword arguments, label)
    "grain 10 % of the field": {"fill_fraction": 0.36},
    "grain ~70 % of the field": {"fill_fraction": 0.95},
    "off-centre, touching the border": {"fill_fraction": 0.6, "centre_offset_px": (-0.4, 0.1), "allow_clipping": True},
    "two grains": {"specimen": "two_grains", "fill_fraction": 0.8},
    "dark substrate": {"substrate_albedo": 0.08},
    "bright substrate": {"substrate_albedo": 0.6},
    "low contrast": {"contrast": 0.35},
}


def render_case(case: Case, render_kw: dict, size: int, **extra: object) -> SemDataset:
    """Render one row of the matrix at ``size`` x ``size`` px (``render_kw``: its :data:`MASK` keywords,
    ``centre_offset_px`` as fractions of the size; ``extra``: more ``render_sem_series`` keywords)."""
    n = len(case.tilts_deg)
    drift = [(3.0 * f, -2.0 * f) for f in range(n)] if case.drift else None
    kw = dict(render_kw)
    if "centre_offset_px" in kw:
        kw["centre_offset_px"] = tuple(size * v for v in kw["centre_offset_px"])
    return render_sem_series(
        GrainSpec(seed=5),
        tilts_deg=case.tilts_deg,
        tilt_axis_deg=case.axis_deg,
        image_size=(size, size),
        seed=1,
        specimen=kw.pop("specimen", case.specimen),
        image_rotation_deg=case.image_rotation_deg,
        drift_px=drift,
        **kw,
        **extra,
    )


def named_case(part: str) -> tuple[str, Case, dict]:
    """The first matrix or mask row whose name contains ``part``: its name, case and render keywords."""
    cases = [(n, c, {}) for n, c in MATRIX.items()]
    cases += [(n, Case(0.0, (0.0, 5.0, 10.0), "documented"), kw) for n, kw in MASK.items()]
    return next(c for c in cases if part in c[0])


def run_case(
    name: str, case: Case, render_kw: dict, size: int, cfg: SemConfig, tmp: Path, noise: float | None = None
) -> dict:
    ds = render_case(case, render_kw, size, **({} if noise is None else {"noise": noise}))
    path = save_sem_dataset(ds, tmp / name.replace(" ", "_").replace("/", "-"), with_metadata=False)
    truth = load_sem_truth(path)
    t0 = time.perf_counter()
    run = run_sem([path], None, cfg, overrides=metadata_overrides(case, truth.pixel_size_um))
    wall = time.perf_counter() - t0
    dense = run.dense
    ref = dense.reference_view
    order = [int(im.name.split("_")[-1].split(".")[0]) for im in run.images.images]
    cloud = dense.cloud.xyz  # scored on a random 300 000 points (the statistics do not need all ~650 000)
    if len(cloud) > MAX_SCORED_POINTS:
        cloud = cloud[np.random.default_rng(0).choice(len(cloud), MAX_SCORED_POINTS, replace=False)]
    res = evaluate_sem_truth(cloud, truth, max_truth_points=20000)
    grain = res["groups"]["grain"]
    axis = run.cameras.tilt_axis_deg
    axis_err = (axis - truth.tilt_axis_deg + 90.0) % 180.0 - 90.0
    sign = 1.0 if np.cos(np.deg2rad(axis - truth.tilt_axis_deg)) >= 0 else -1.0
    true_rel = sign * (np.array(truth.tilts_deg)[order] - truth.tilts_deg[order[0]])
    tilt_err = float(np.abs(run.reconstruction.tilts_deg - true_rel).max())
    true_mask = truth.view_masks[order[ref]]
    iou = float((dense.grain_mask & true_mask).sum() / max((dense.grain_mask | true_mask).sum(), 1))
    al = res["alignment"]
    cov = evaluate_cloud(  # completeness of what the reference view sees, with the same (proper) alignment
        cloud,
        truth.surface_points(),
        truth.distance_to_surface,
        truth.grain_diameter_um,
        visible_truth_points=truth.visible_surface_points(order[ref], stride=2, grain_only=True),
        allow_mirror=False,
        alignment=Alignment(np.array(al["rotation"]), al["scale"], np.array(al["translation"]), False),
    )["completeness"]
    warned = sorted(
        {
            "tilt sense" if w.startswith("tilt sense") else w.split(" ")[0]
            for w in run.warnings
            if w.startswith(("tilt_axis_deg", "tilt_deg", "tilt sense", "depth branch"))
        }
    )
    return {
        "mirrored": res["mirrored"],
        "upside_down": res["upside_down"],
        "rms_pct": grain["rms_distance_pct"],
        "median_pct": grain["median_distance_pct"],
        "coverage_pct": 100 * cov,
        "axis_err": axis_err,
        "tilt_err": tilt_err,
        "iou": iou,
        "status": run.status,
        "branch": run.cameras.branch.confidence if run.cameras.branch is not None else "—",
        "source": run.reconstruction.camera_source,
        "warned": ", ".join(warned) or "—",
        "wall_s": wall,
        "relief_px": reference_relief_extent_px(run.reconstruction, ref, dense.grain_mask.shape),
        "noise_grey": stretched_noise_grey(run.images.images[ref].pixels),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--cases", choices=("all", "matrix", "mask"), default="all")
    ap.add_argument("--only", nargs="*", default=None, help="run only the cases whose name contains one of these")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--noise", type=float, default=None, help="render noise σ at mid-grey (default: the renderer's)")
    args = ap.parse_args()
    cfg = apply_overrides(SemConfig(), {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    cases: list[tuple[str, Case, dict]] = []
    if args.cases in ("all", "matrix"):
        cases += [(n, c, {}) for n, c in MATRIX.items()]
    if args.cases in ("all", "mask"):
        cases += [(n, Case(0.0, (0.0, 5.0, 10.0), "documented"), kw) for n, kw in MASK.items()]
    if args.only:  # in the order given
        cases = [c for key in args.only for c in cases if key in c[0]]
    print(
        "| case | camera source | warned | mirrored | upside down | grain RMS % D | grain median % D | coverage % "
        "| axis error ° | max tilt error ° | mask IoU | depth branch | status | relief px | noise grey | wall s |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, case, kw in cases:
            r = run_case(name, case, kw, args.size, cfg, Path(tmp), args.noise)
            relief = "—" if r["relief_px"] is None else f"{r['relief_px']:.0f}"
            print(
                f"| {name} | {r['source']} | {r['warned']} | {'**yes**' if r['mirrored'] else 'no'} | "
                f"{'**yes**' if r['upside_down'] else 'no'} | {r['rms_pct']:.3f} | {r['median_pct']:.3f} | "
                f"{r['coverage_pct']:.1f} | {r['axis_err']:+.2f} | {r['tilt_err']:.3f} | {r['iou']:.3f} | "
                f"{r['branch']} | {r['status']} | {relief} | {r['noise_grey']:.1f} | {r['wall_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
