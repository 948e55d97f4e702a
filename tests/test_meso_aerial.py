"""The real aerial series (../shared/data/meso/aerial-seneca: a drone without gimbal over crop rows) registers
from its EXIF alone, run from the command line as a user runs it (issue 18, point 3).

The 19 photos of one size, downscaled to 600x450 with their EXIF: the engine must link every photo that really
overlaps (18; IMG_0455 overlaps by 10 % and is left out with a warning), exit 0 with every gate passed, and
keep each photo on its SIFT matches (the photometric rounds alone walked photos at the ends of the flight
lines 13-15 px off at 900 px and failed the gate at 3600 px; docs/benchmarks.md, issue 18 sessions 11-12).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SIZE = (600, 450)
# measured at this size (code of session 12, one run, 315 s CPU): 18 photos, NCC 0.684-0.916 (median 0.82),
# feature residuals 0.61 px median, 1.07 px worst (IMG_0469); about twice that is allowed. At 450x338 the
# SIFT chain between the two flight lines breaks (8 of 19 photos linked): 600 px is the smallest size tested.
RESIDUAL_MEDIAN_PX, RESIDUAL_MAX_PX = 1.2, 2.2


@pytest.fixture(scope="module")
def aerial_small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    src = shared_data / "meso" / "aerial-seneca"
    photos = sorted(src.glob("IMG_*.jpg"))
    if len(photos) < 20:
        pytest.skip("aerial series not present")
    out = tmp_path_factory.mktemp("aerial") / "photos"
    out.mkdir()
    for p in photos:
        with Image.open(p) as im:
            if im.size == (3600, 2700):  # IMG_0446 has another size (a clear error of its own)
                im.resize(SIZE, Image.LANCZOS).save(out / p.name, quality=93, exif=im.info.get("exif"))
    return out


@pytest.mark.slow
def test_aerial_series_registers_from_exif(aerial_small: Path) -> None:
    out = aerial_small.parent / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, "-m", "topograph", "meso", str(aerial_small), "-o", str(out), "--no-progress",
         "--set", "threads=1"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "ok" and summary["init_method"] == "features"
    assert len(summary["images"]) >= 15 and "IMG_0455.jpg" not in summary["images"]
    assert "IMG_0455.jpg" in " ".join(summary["warnings"])
    rows = list(csv.DictReader((out / "registration.csv").open(encoding="utf-8")))
    assert len(rows) == len(summary["images"]) and all(r["passed"] == "yes" for r in rows)
    ncc = np.array([float(r["ncc_with_mosaic"]) for r in rows])
    residual = np.array([float(r["residual_px"]) for r in rows])
    assert ncc.min() > 0.5 and np.median(ncc) > 0.7, ncc
    assert np.median(residual) < RESIDUAL_MEDIAN_PX and residual.max() < RESIDUAL_MAX_PX, residual
    assert (out / "registration_seams.png").is_file()
