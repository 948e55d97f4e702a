"""SEM engine speed: whole `topograph sem` process on the quartz series (sparse only and full), and on a
rendered 3 × 2000² series (memory must follow one image pair, not the series).

    python benchmarks/bench_sem.py [--repeats 3] [--skip-large] [--config settings.yaml]

Each run also prints the dense stage's step timings (summary.json ``dense.timings_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _measure  # noqa: E402
from _measure import median_of  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUARTZ = Path(os.environ.get("TOPOGRAPH_SHARED_DATA", REPO.parent / "shared" / "data")) / "sem" / "quartz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--config", help="YAML configuration passed to every run (topograph sem --config)")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "topograph", "--quiet", "sem", "--no-cache"]  # every run recomputes
    if args.config:
        exe += ["--config", args.config]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if QUARTZ.is_dir():
            for label, extra in (("sparse", ["--sparse-only"]), ("full", [])):
                out = tmp / f"quartz_{label}"
                wall, peak, walls = median_of([*exe, str(QUARTZ), "-o", str(out), *extra], args.repeats)
                summary = json.loads((out / "summary.json").read_text())
                dense = summary.get("dense", {})
                print(
                    f"quartz {label}: median {wall:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls)}; "
                    f"CPU {_measure.CPU_MEDIAN_S:.1f} s), "
                    f"peak RSS {peak:.0f} MB, tracks in all views {summary['n_tracks_all_views']}, "
                    f"tilts {[round(t, 3) for t in summary['relative_tilts_deg']]}, "
                    f"RMS after BA {[round(r, 3) for r in summary['reprojection_rms_px_after']]} px, "
                    f"dense points {dense.get('n_points', '—')}",
                    flush=True,
                )
                if dense:
                    steps = {**summary["timings_s"], **dense.get("timings_s", {})}
                    print("  stage seconds (last run): " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
        if not args.skip_large:
            from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

            ds = render_sem_series(GrainSpec(seed=5), tilts_deg=(0, 5, 10), image_size=(2000, 2000), seed=5)
            data = save_sem_dataset(ds, tmp / "large")
            del ds
            out = tmp / "large_out"
            wall, peak, walls = median_of([*exe, str(data), "-o", str(out)], 1)
            summary = json.loads((out / "summary.json").read_text())
            print(
                f"rendered 3 × 2000²: {wall:.1f} s (CPU {_measure.CPU_MEDIAN_S:.1f} s), peak RSS {peak:.0f} MB, "
                f"dense points {summary['dense']['n_points']}"
            )
            steps = {**summary["timings_s"], **summary["dense"].get("timings_s", {})}
            print("  stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))


if __name__ == "__main__":
    main()
