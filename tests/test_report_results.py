"""The report leads with the result: a results card (numbers, warnings, mesh, height map, histogram, profile) first,
quality and inputs after, raw keys and timings collapsed at the end; match figures as JPEG."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_report import _CHROME_FLAGS, CHROMIUM, make_run  # noqa: I001 - shared fixtures and browser settings

from topograph.io.exports import write_float_tiff
from topograph.report.html import build_report, write_report
from topograph.report.results import has_areal_parameters, headline_measures, human_label, load_height_grid

PIXEL_UM = 0.25
DOME_UM = 12.0


def make_mesh_run(root: Path) -> Path:
    """The fake SEM run of test_report plus a dome height map (µm), grain metrics, and a large match figure."""
    run = make_run(root)
    r, c = np.mgrid[0:300, 0:400]
    rho2 = ((c - 200) / 150.0) ** 2 + ((r - 150) / 120.0) ** 2
    height = np.where(rho2 < 1, DOME_UM * (1 - rho2), np.nan).astype(np.float32)
    write_float_tiff(run / "height_map.tif", height, PIXEL_UM)
    summary = json.loads((run / "summary.json").read_text())
    summary["dense"] = {
        "n_points": 3000,
        "grain_metrics": {
            "volume": {"value": 1234.5, "unit": "um^3", "relies_on_underside": True},
            "length_l": {"value": 75.0, "unit": "um", "relies_on_underside": True},
            "length_i": {"value": 60.0, "unit": "um", "relies_on_underside": True},
            "length_s": {"value": 12.0, "unit": "um", "relies_on_underside": True},
            "relies_on_underside": ["volume"],
        },
        "areal_parameters_grain_top": {"sa": {"value": 2.5, "unit": "um"}, "sq": {"value": 3.1, "unit": "um"}},
        "timings_s": {"fuse": 4.0},
    }
    summary["warnings"] = ["tilt steps below 3°: weak parallax"]
    (run / "summary.json").write_text(json.dumps(summary))
    noise = np.random.default_rng(2).integers(0, 255, (900, 1600, 3), dtype=np.uint8)
    cv2.imwrite(str(run / "figures" / "matches_0_1.png"), noise)  # a PNG match figure of an older run
    return run


def test_human_labels() -> None:
    assert human_label("grain_metrics.volume.relies_on_underside") == (
        "Grain metrics › Volume › Relies on the unseen underside"
    )
    assert human_label("working_distance_mm") == "Working distance (mm)"
    assert human_label("reprojection_rms_px_after") == "Reprojection RMS after bundle adjustment (px)"


def test_headline_measures_read_the_run(tmp_path: Path) -> None:
    run = make_mesh_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    grid = load_height_grid(run, "um")
    assert grid is not None and grid.spacing == pytest.approx(PIXEL_UM)
    measures = {m.label: m for m in headline_measures(summary, run, grid)}
    assert measures["Volume"].text() == "1234 µm³" and measures["Volume"].footnote
    assert measures["Dimensions L × I × S"].text() == "75 × 60 × 12 µm"
    assert measures["Sa of the grain top"].text() == "2.5 µm"
    # the dome spans 0..12 µm: the 99th percentile is near the top, the extent is the map's
    lo, hi = (float(v) for v in measures["Height range (1st–99th percentile)"].value.split(" … "))
    assert 0 <= lo < 1.0 and DOME_UM * 0.95 < hi <= DOME_UM
    assert measures["Height map extent (width × height)"].value == "100 × 75"


def test_height_map_sa_is_computed_only_for_a_run_without_areal_parameters(tmp_path: Path) -> None:
    """A run that stored its areal parameters shows those; the map's own Sa / Sq (a plane fit over the whole
    map) are computed only when it did not, and then the card shows them."""
    run = make_mesh_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert has_areal_parameters(summary, run)
    assert load_height_grid(run, "um", with_areal=False).sa is None
    del summary["dense"]["areal_parameters_grain_top"]
    (run / "summary.json").write_text(json.dumps(summary))
    assert not has_areal_parameters(summary, run)
    grid = load_height_grid(run, "um")
    assert grid.sa is not None and 0 < grid.sa < DOME_UM
    measures = {m.label: m for m in headline_measures(summary, run, grid)}
    assert "Sa of the height map (mean plane removed)" in measures
    assert "Sa of the height map (mean plane removed)" in build_report(run)


def test_card_first_raw_keys_and_timings_collapsed(tmp_path: Path) -> None:
    run = make_mesh_run(tmp_path)
    text = build_report(run)
    sections = re.findall(r'<section id="([\w-]+)"', text)
    assert sections[0] == "results" and sections[-1] == "reproduce"
    assert sections.index("quality") < sections.index("inputs")
    card = text[text.index('<section id="results"') : text.index("</section>", text.index('<section id="results"'))]
    for needle in (
        "Volume",
        "1234 µm³",
        "Sa of the grain top",
        "tilt steps below 3°",
        "data-topograph-viewer",
        "data-topograph-profile",
        "height (µm)",
    ):
        assert needle in card, needle
    payload = json.loads(re.search(r'<script type="application/json">(.*?)</script>', card, re.S).group(1))
    assert payload["kind"] == "mesh" and payload["grid"]["rows"] * payload["grid"]["cols"] > 1000
    # outside the collapsed end, keys read as labels
    visible, collapsed = text.split('<section id="reproduce"')
    assert "relies_on_underside" not in visible and "1234 µm³ (includes the unseen underside)" in visible
    assert "reprojection_rms_px_after" not in visible and "RMS after bundle adjustment (px)" in visible
    assert "<details>" in collapsed and "timings" in collapsed.lower() and "reprojection_rms_px_after" in collapsed
    assert "Timings" not in visible
    # the match figure is embedded as JPEG, far smaller than its PNG
    uri = re.search(r'src="(data:image/[a-z]+;base64,[^"]+)"[^>]*alt="Matches, view 0', text)
    assert uri and uri.group(1).startswith("data:image/jpeg")
    jpeg_bytes = len(base64.b64decode(uri.group(1).split(",", 1)[1]))
    assert jpeg_bytes < 0.5 * (run / "figures" / "matches_0_1.png").stat().st_size


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium chromium-driver)")
def test_results_card_is_first_on_screen_and_mesh_renders(tmp_path: Path) -> None:
    run = make_mesh_run(tmp_path)
    report = write_report(run)
    flags = [*_CHROME_FLAGS, "--enable-unsafe-swiftshader", f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c or "Content Security Policy" in c or "Refused" in c], console
    dom = proc.stdout
    assert "data-js-errors" not in re.search(r"<html[^>]*>", dom).group(0)
    main = dom[dom.index("<main>") :]
    assert re.search(r"<section[^>]*>", main).group(0).startswith('<section id="results"')  # first thing shown
    canvas = re.search(r"<canvas[^>]*data-renderer[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', canvas))
    if attrs["data-renderer"] == "webgl":
        assert int(attrs["data-triangles"]) > 1000  # drawn as a mesh, not as points
    # the dome fills a good part of the 720×480 canvas (points or triangles, not a blank or a speck)
    assert int(attrs["data-drawn-pixels"]) > 20_000, attrs
    profile = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<div[^>]*data-topograph-profile[^>]*>", dom).group(0)))
    assert int(profile["data-profile-samples"]) > 50  # the default profile crosses the dome
    assert 'data-role="profile-svg"' in dom
