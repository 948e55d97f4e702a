"""SEM engine speed over series sizes: whole-process wall time, CPU time and peak memory of `topograph sem`,
with the accuracy of the rendered grain beside it (so a speed change that costs accuracy shows).

    python benchmarks/bench_sem_speed.py [--views 3 5 7] [--mp 1 4 12] [--repeats 3] [--seed 31]
        [--series 7x3 3x4] [--quartz ../shared/data/sem/quartz] [--work DIR] [--set dense.flow_tile_px=0]

Every series is a grain rendered by ``topograph.synth.sem.render_sem_series`` (tilts 0/5/10° for 3 views,
−10…10° for 5, −15…15° for 7, 5° apart; FEI metadata in the TIFFs; 4:3 images of the given megapixels);
``--series VxM`` adds single sizes (e.g. ``7x3`` = 7 views of 3 MP). Each run is a fresh
``python -m topograph sem DATASET -o OUT`` process (``benchmarks/_measure.py``: wall time, user + system
CPU seconds, peak RSS of the process tree; medians over ``--repeats``). The accuracy is that of the last
run's ``dense.ply``, evaluated as in ``bench_sem_dense.py`` (rigid alignment; the points over the grain;
completeness of the visible grain within 1 % of its diameter; at most 400,000 points, a fixed random subset).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _measure  # noqa: E402

TILTS_DEG = {3: (0.0, 5.0, 10.0), 5: (-10.0, -5.0, 0.0, 5.0, 10.0), 7: (-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0)}
MAX_EVAL_POINTS = 400_000
QUALITY_FAILURE_EXIT = 4
"""Exit status of a run that wrote every output but reports status "failed" (e.g. the camera-model check)."""


def image_size(megapixels: float) -> tuple[int, int]:
    """(H, W) of a 4:3 image of about ``megapixels`` MP, both even."""
    w = int(round(np.sqrt(megapixels * 1e6 * 4 / 3) / 2)) * 2
    return int(round(w * 3 / 4 / 2)) * 2, w


def render(work: Path, views: int, mp: float, seed: int) -> Path:
    from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

    path = work / f"grain_s{seed}_{views}x{mp:g}MP"
    if not (path / "truth").exists():
        tilts = TILTS_DEG.get(views) or tuple(5.0 * (k - views // 2) for k in range(views))
        ds = render_sem_series(GrainSpec(seed=seed), tilts_deg=tilts, image_size=image_size(mp), seed=seed)
        save_sem_dataset(ds, path)
    return path


def accuracy(dataset: Path, out: Path) -> dict:
    from plyfile import PlyData

    from topograph.analysis.evaluate_sem import evaluate_cloud
    from topograph.synth.sem import load_sem_truth

    truth = load_sem_truth(dataset)
    summary = json.loads((out / "summary.json").read_text())
    ref = int(summary["dense"]["reference_view"])
    v = PlyData.read(str(out / "dense.ply"))["vertex"]
    pts = np.column_stack([v["x"], v["y"], v["z"]]).astype(np.float64)
    if len(pts) > MAX_EVAL_POINTS:
        pts = pts[np.random.default_rng(0).choice(len(pts), MAX_EVAL_POINTS, replace=False)]
    h, w = truth.image_shape
    stride = max(2, int(round(np.sqrt(h * w / 250_000))))
    res = evaluate_cloud(
        pts,
        truth.surface_points(),
        truth.distance_to_surface,
        specimen_size=truth.grain_diameter_um,
        mode="rigid",
        allow_mirror=False,
        visible_truth_points=truth.visible_surface_points(ref, stride=stride, grain_only=True),
        point_groups={"grain": lambda p: truth.height_at(p[:, 0], p[:, 1]) > 0.02 * truth.grain_height_um},
    )
    g = res["groups"]["grain"]
    volume = json.loads((out / "grain_metrics.json").read_text())["volume"]
    volume = volume["value"] if isinstance(volume, dict) else volume
    return {
        "rms_pct": g["rms_distance_pct"],
        "median_pct": g["median_distance_pct"],
        "coverage_pct": 100 * res["completeness"],
        "volume_error_pct": 100 * (volume / truth.true_volume_um3 - 1),
        "n_points": int(summary["dense"]["n_points"]),
    }


def measure(dataset: Path, out: Path, repeats: int, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "topograph", "sem", str(dataset), "-o", str(out), "--no-cache"]
    if overrides:
        cfg = out.parent / f"{out.name}.yaml"
        import yaml

        from topograph.config import apply_overrides, to_yaml
        from topograph.sem.config import SemConfig

        items = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in overrides)}
        cfg.write_text(to_yaml(apply_overrides(SemConfig(), items)))
        cmd += ["--config", str(cfg)]
    walls, cpus, peaks = [], [], []
    for _ in range(repeats):
        wall, peak, code = _measure.run_measured(cmd, dict(os.environ))
        if code not in (0, QUALITY_FAILURE_EXIT):  # 4: complete outputs with status "failed", still measured
            raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")
        walls.append(wall)
        cpus.append(_measure.LAST_CPU_S)
        peaks.append(peak)
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["timings_s"]
    return {
        "status": summary.get("status", "ok"),
        "wall_s": statistics.median(walls),
        "walls": walls,
        "cpu_s": statistics.median(cpus),
        "peak_mb": max(peaks),
        "stages": {k: round(v, 1) for k, v in stages.items() if k in ("load", "match", "bundle", "dense")},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, nargs="*", default=[3, 5, 7])
    ap.add_argument("--mp", type=float, nargs="*", default=[1, 4, 12])
    ap.add_argument("--series", nargs="*", default=[], help="extra sizes VIEWSxMP, e.g. 7x3 3x4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--quartz", default=str(Path(__file__).resolve().parents[2] / "shared/data/sem/quartz"))
    ap.add_argument("--work", default=None, help="rendered series are kept here and reused")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-sem-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [(v, m) for m in args.mp for v in args.views]
    sizes += [(int(s.split("x")[0]), float(s.split("x")[1])) for s in args.series]
    rows = []
    quartz = Path(args.quartz) if args.quartz else None  # --quartz "" skips it
    if quartz is not None and quartz.is_dir():
        r = measure(quartz, work / "out_quartz", args.repeats, args.set)
        rows.append(("quartz (real)", 3, 1.44, r, None))
        print("quartz", r, flush=True)
    for views, mp in sizes:
        ds = render(work, views, mp, args.seed)
        out = work / f"out_{views}x{mp:g}"
        r = measure(ds, out, args.repeats, args.set)
        print(views, mp, r, flush=True)
        acc = accuracy(ds, out)
        h, w = image_size(mp)
        rows.append((f"grain s{args.seed} {w}×{h}", views, mp, r, acc))
        print(views, mp, acc, flush=True)
    print(f"\nrepeats: {args.repeats} (medians; peak = max); work dir {work}")
    print(
        "| series | views | MP | status | wall s | CPU s | peak MB | match / bundle / dense s | points | RMS % D "
        "| median % D | coverage % | volume error |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for name, views, mp, r, acc in rows:
        st = r["stages"]
        stages = f"{st.get('match', 0):.1f} / {st.get('bundle', 0):.1f} / {st.get('dense', 0):.1f}"
        a = (
            f"{acc['n_points']:,} | {acc['rms_pct']:.3f} | {acc['median_pct']:.3f} | {acc['coverage_pct']:.1f} | "
            f"{acc['volume_error_pct']:+.2f} %"
            if acc
            else "— | — | — | — | —"
        )
        speed = f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_mb']:,.0f}"
        print(f"| {name} | {views} | {mp:g} | {r['status']} | {speed} | {stages} | {a} |")


if __name__ == "__main__":
    main()
