"""Peak memory of the meso output writers on a mosaic of a 12 MP run's size (41.7 M cells by default).

Each writer runs in a fresh process; the figure is its peak RSS above the inputs (a float32 height map with
10 % NaN, and for the orthomosaic a float32 RGB mosaic), an upper bound (the inputs' float64 temporaries
count too).

    python benchmarks/bench_meso_outputs.py                 # gwy, figure, orthomosaic, report readers at 7070x5900
    python benchmarks/bench_meso_outputs.py --size 3000x2000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _case(case: str, w: int, h: int, out: Path) -> None:
    import numpy as np
    import psutil

    rng = np.random.default_rng(0)
    height = rng.normal(size=(h, w)).astype(np.float32)
    height[:, : w // 10] = np.nan
    rgb = rng.random((h, w, 3), dtype=np.float32) if case == "orthomosaic" else None
    valid = np.isfinite(height)
    base = psutil.Process().memory_info().rss
    t0 = time.process_time()
    if case == "gwy":
        from topograph.io.exports import write_gwy

        write_gwy(out / "height_map.gwy", height, 10.0, "um", "height (um)")
    elif case == "figure":
        from topograph.meso.outputs import FIGURE_MAX_SIDE
        from topograph.report.meso_figures import height_figure

        k = max(1, -(-max(h, w) // FIGURE_MAX_SIDE))
        height_figure(height[::k, ::k], 0.01 * k, "mm", "um", out / "height_map.png", "height map")
    elif case == "orthomosaic":
        from topograph.meso.outputs import write_orthomosaic

        write_orthomosaic(out, rgb, valid, 10.0)
    else:  # the report's readers of a written run: the height grid (with Sa, Sq) and the 3D viewer's points
        import cv2

        from topograph.io.exports import write_float_tiff
        from topograph.report.html import load_viewer_data
        from topograph.report.results import load_height_grid

        write_float_tiff(out / "height_map.tif", height, 10.0, "um")
        cv2.imwrite(str(out / "orthomosaic.png"), np.zeros((h, w, 3), np.uint8))
        base = psutil.Process().memory_info().rss
        t0 = time.process_time()
        grid = load_height_grid(out, "um")
        load_viewer_data(out, unit="um")
        print(f"report: Sa {grid.sa:.4f}, Sq {grid.sq:.4f} ({grid.step}-step grid {grid.z.shape})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{case}: peak {(peak - base) / 2**20:.0f} MB above the inputs, {time.process_time() - t0:.1f} CPU-s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="7070x5900")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_meso_outputs_") as tmp:
        if a.case:
            _case(a.case, w, h, Path(tmp))
            return 0
        for case in ("gwy", "figure", "orthomosaic", "report"):
            subprocess.run([sys.executable, __file__, "--size", a.size, "--case", case], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
