"""Mesoscopic engine with the CNN: accuracy (CNN vs TV), whole-process time and memory, a profile.

Renders (once, cached in the work folder) a cut-cards phone sequence with exact ground truth (21 images of
1000x750 px by default, non-polynomial distortion, JPEG), then runs each variant in its own process:

* ``cnn``: the defaults of ``topograph meso`` (CNN height maps, batches with a running reconstruction);
* ``tv-lo`` / ``tv-hi``: directly optimised height maps with total variation at two weights;
* ``cnn-x2``: the CNN on the same scene with every image twice (42 images): peak memory must stay
  within 1.3x of ``cnn`` (memory bounded by the batch, not the number of images).

Each worker loads the JPEGs from disk like a user run, reconstructs, writes the standard outputs and
evaluates the Table-1 protocol
(:func:`topograph.analysis.evaluate_meso_synthetic.evaluate_synthetic`, heights in µm and in ground-sample
distances). The parent measures whole-process wall time, CPU time and peak RSS
(``benchmarks/_measure.py``) and the machine load, and prints a Markdown table. ``--profile`` runs the
``cnn`` variant under ``torch.profiler`` and prints the top operators.

    python benchmarks/bench_meso_cnn.py --work /tmp/bench-meso-cnn [--variants cnn,tv-lo,tv-hi,cnn-x2]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS: dict[str, dict[str, str]] = {
    "cnn": {},
    "tv-lo": {"heights.model": "tv", "loss.tv_weight": "2e-5"},
    "tv-hi": {"heights.model": "tv", "loss.tv_weight": "2e-4"},
    "cnn-x2": {},
}


def dataset(work: Path, size: tuple[int, int], raster: tuple[int, int], seed: int) -> Path:
    """Render the cut-cards sequence once into ``work`` (JPEGs + truth pickle)."""
    from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset

    out = work / f"cards_{size[0]}x{size[1]}_{raster[0]}x{raster[1]}_s{seed}"
    if (out / "synth.pkl").is_file():
        return out
    t = time.perf_counter()
    data = render_meso_sequence(MesoSynthConfig(image_size=size, raster=raster, seed=seed))
    write_meso_dataset(data, out)
    with open(out / "synth.pkl", "wb") as fh:
        pickle.dump(data, fh)
    print(f"rendered {len(data.names)} images in {time.perf_counter() - t:.0f} s -> {out}", flush=True)
    return out


def worker(variant: str, data_dir: Path, out: Path, overrides: dict[str, str], profile: bool) -> None:
    """One run in this process: load JPEGs, reconstruct, write outputs, evaluate, dump JSON."""
    import logging

    from topograph.analysis.evaluate_meso_synthetic import evaluate_synthetic
    from topograph.config import apply_overrides
    from topograph.meso.config import MesoConfig
    from topograph.meso.data import load_images
    from topograph.meso.outputs import write_outputs
    from topograph.meso.reconstruct import reconstruct
    from topograph.meso.types import MesoImages

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with open(data_dir / "synth.pkl", "rb") as fh:
        truth = pickle.load(fh).truth
    paths = sorted((data_dir / "images").glob("*.jpg"))
    images = load_images(paths)
    if variant == "cnn-x2":
        images = MesoImages(
            names=images.names + tuple(f"dup_{n}" for n in images.names),
            pixels=np.concatenate([images.pixels, images.pixels]),
            exif=images.exif + images.exif,
        )
    cfg = apply_overrides(MesoConfig(), {"scale.magnification": float(truth.magnifications[0]), **overrides})
    prof = None
    if profile:
        import torch.profiler as tp

        prof = tp.profile(activities=[tp.ProfilerActivity.CPU], record_shapes=False)
        prof.__enter__()
    t = time.perf_counter()
    rec = reconstruct(images, cfg)
    recon_s = time.perf_counter() - t
    if prof is not None:
        prof.__exit__(None, None, None)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        (out / "profile.txt").parent.mkdir(parents=True, exist_ok=True)
        (out / "profile.txt").write_text(table)
    write_outputs(rec, out)
    if variant == "cnn-x2":  # a memory run: the truth has one camera per distinct image, no Table 1 here
        summary = {"variant": variant, "n_images": len(images), "reconstruct_s": recon_s, "timings_s": rec.timings}
        (out / "bench.json").write_text(json.dumps(summary, indent=2))
        return
    ev = evaluate_synthetic(rec, truth)
    t1 = ev.table1
    cards = [r for r in t1.regions if r.label != 0]
    bg = [r for r in t1.regions if r.label == 0]
    iters = len(rec.history)
    rounds: dict[str, int] = {}
    for h in rec.history:
        rounds[h.level] = rounds.get(h.level, 0) + 1
    summary = {
        "variant": variant,
        "n_images": len(images),
        "gsd_um": ev.gsd_um,
        "accuracy_um": t1.mean_accuracy,
        "precision_um": t1.mean_precision,
        "accuracy_gsd": t1.mean_accuracy / ev.gsd_um,
        "precision_gsd": t1.mean_precision / ev.gsd_um,
        "rescale": t1.rescale,
        "background_std_um": bg[0].std if bg else None,
        "best_card_std_um": min(r.std for r in cards) if cards else None,
        "registration_max_px": float(ev.registration_px.max()),
        "distortion_max_px": ev.distortion_max_px,
        "reconstruct_s": recon_s,
        "timings_s": rec.timings,
        "iterations": iters,
        "iterations_per_round": rounds,
        "regions": [r.__dict__ for r in t1.regions],
    }
    (out / "bench.json").write_text(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bench-meso-cnn")
    ap.add_argument("--variants", default="cnn,tv-lo,tv-hi,cnn-x2")
    ap.add_argument("--size", default="1000x750")
    ap.add_argument("--raster", default="7x3", help="columns x rows of the path (7x3 = 21 images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also run 'cnn' under torch.profiler")
    ap.add_argument("--worker", nargs=3, metavar=("VARIANT", "DATA", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        name, data_dir, out = args.worker
        worker(name, Path(data_dir), Path(out), VARIANTS[name.split("+")[0]], args.worker_profile)
        return 0

    import _measure
    from _measure import run_measured

    size = tuple(int(v) for v in args.size.lower().split("x"))
    raster = tuple(int(v) for v in args.raster.lower().split("x"))
    data_dir = dataset(args.work, size, raster, args.seed)  # type: ignore[arg-type]
    rows = []
    todo = [v for v in args.variants.split(",") if v]
    if args.profile:
        todo.append("cnn+profile")
    for variant in todo:
        out = args.work / "runs" / variant
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, str(data_dir), str(out)]
        if variant.endswith("+profile"):
            cmd.append("--worker-profile")
        load0 = os.getloadavg()[0]
        wall, peak_mb, code = run_measured(cmd)
        load1 = os.getloadavg()[0]
        info = json.loads((out / "bench.json").read_text()) if code == 0 and (out / "bench.json").is_file() else {}
        row = {"variant": variant, "exit": code, "wall_s": wall, "cpu_s": _measure.LAST_CPU_S, "peak_mb": peak_mb,
               "load": (load0, load1), **info}  # fmt: skip
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "regions"}), flush=True)
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print("| variant | images | accuracy µm (GSD) | precision µm (GSD) | rescale | bg std / best card std | "
          "iterations | wall s | CPU s | peak RSS MB | load |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["exit"] == 0 and "accuracy_um" not in r:
            print(f"| {r['variant']} | {r.get('n_images', '')} | (memory run) | | | | | {r['wall_s']:.0f} | "
                  f"{r['cpu_s']:.0f} | {r['peak_mb']:.0f} | |")  # fmt: skip
            continue
        if r["exit"] != 0 or "accuracy_um" not in r:
            print(f"| {r['variant']} | failed (exit {r['exit']}) | | | | | | {r['wall_s']:.0f} | | | |")
            continue
        ratio = r["background_std_um"] / r["best_card_std_um"] if r.get("best_card_std_um") else float("nan")
        print(
            f"| {r['variant']} | {r['n_images']} | {r['accuracy_um']:.1f} ({r['accuracy_gsd']:.2f}) | "
            f"{r['precision_um']:.1f} ({r['precision_gsd']:.2f}) | {r['rescale']:.3f} | {ratio:.2f} | "
            f"{r['iterations']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_mb']:.0f} | "
            f"{r['load'][0]:.1f}–{r['load'][1]:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
