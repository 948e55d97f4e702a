"""The self-contained HTML report: content, escaping, embedded cloud, thumbnails, CLI and a headless browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from topograph.errors import TopographError
from topograph.report.html import (
    MAX_VIEWER_POINTS,
    build_report,
    figure_caption,
    figure_stage,
    load_viewer_data,
    read_ply_points,
    script_json,
    write_report,
)
from topograph.report.thumbnails import thumbnail_name, write_thumbnails

EVIL = "<script>alert(1)</script>"
EVIL_FILE = "<img src=x onerror=alert(2)>"  # a legal file name on POSIX
N_CLOUD = 3000


def _write_ply(path: Path, xyz: np.ndarray, intensity: np.ndarray | None = None, rgb: np.ndarray | None = None) -> None:
    from plyfile import PlyData, PlyElement

    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if intensity is not None:
        fields.append(("intensity", "<f4"))
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    v = np.empty(len(xyz), dtype=fields)
    for k, a in enumerate("xyz"):
        v[a] = xyz[:, k]
    if intensity is not None:
        v["intensity"] = intensity
    if rgb is not None:
        for k, a in enumerate(("red", "green", "blue")):
            v[a] = rgb[:, k]
    PlyData([PlyElement.describe(v, "vertex")], text=False, byte_order="<", comments=["unit um"]).write(str(path))


def _dome(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of a dome z = 20·(1 − r²) over the disc r ≤ 1 (scaled to 50 µm), and intensities."""
    rng = np.random.default_rng(seed)
    r = np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    xyz = np.stack([50 * r * np.cos(t), 50 * r * np.sin(t), 20 * (1 - r**2)], axis=1).astype(np.float32)
    return xyz, rng.uniform(0, 1, n).astype(np.float32)


def make_run(root: Path) -> Path:
    """A fake SEM run folder with injected markup in metadata, names, notes, config and a file name."""
    run = root / "run"
    (run / "figures").mkdir(parents=True)
    names = ["a.tif", EVIL + ".tif"]
    summary = {
        "engine": "sem",
        "command": f"topograph sem a.tif b.tif -o run --note '{EVIL}'",
        "topograph_version": "0.1.0",
        "images": names,
        "unit": "um",
        "notes": [f"note {EVIL}"],
        "warnings": ["tilt from the command line"],
        "timings_s": {"match": 1.5, "total": 3.25},
        "relative_tilts_deg": [0.0, 5.02],
        "reprojection_rms_px_before": [0.8, 0.9],
        "reprojection_rms_px_after": [0.21, 0.25],
        "n_tracks": 345,
        "match_counts": [[0, 345], [345, 0]],
        "camera_source": "metadata",
        "tilt_axis_deg": 90.0,
        "pixel_size_um": 0.05,
        "dense": {"n_points": N_CLOUD, "grain_metrics": {"height_um": 12.375, "label": EVIL}},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(f"matching:\n  matcher: sift\nnote: '{EVIL}'\n")
    series = [
        {"name": "a.tif", "size": [64, 48], "tilt_deg": 0.0, "vendor": "fei", "source": {"tilt_deg": "fei"}},
        {"name": EVIL + ".tif", "size": [64, 48], "tilt_deg": 5.0, "vendor": EVIL, "source": {}},
    ]
    (run / "series.json").write_text(json.dumps(series))
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))
    write_thumbnails([ramp, ramp[::-1]], names, run / "thumbnails")
    img = (np.random.default_rng(1).uniform(0, 255, (40, 60, 3))).astype(np.uint8)
    cv2.imwrite(str(run / "figures" / "matches_0_1.png"), img)
    cv2.imwrite(str(run / "figures" / f"{EVIL_FILE}.png"), img)
    cv2.imwrite(str(run / "height_map.png"), img[:, :, 0])
    xyz, inten = _dome(N_CLOUD)
    _write_ply(run / "dense.ply", xyz, inten)
    return run


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of every <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def _viewer_payload(text: str) -> dict:
    m = re.search(r'<script type="application/json">(.*?)</script>', text, re.S)
    assert m, "no viewer data block"
    return json.loads(m.group(1))


def test_report_is_self_contained_and_inert(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    # Self-contained: no network reference at all, every image is a data: URI.
    assert "http://" not in text and "https://" not in text
    parser = _Tags()
    parser.feed(text)
    for tag, attrs in parser.tags:
        for name in ("src", "href"):
            if attrs.get(name) is not None:
                assert attrs[name].startswith("data:") or attrs[name].startswith("#"), (tag, attrs[name][:60])
    # Injected markup appears only escaped: no raw copy, no extra element, no event handler attribute.
    assert EVIL not in text and EVIL_FILE not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6  # command, config, notes, names, vendor, metric
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert not any(k.startswith("on") for _, attrs in parser.tags for k in attrs)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert len(scripts) == 3  # error hook, viewer data block, viewer code
    nonce = re.search(r"script-src 'nonce-([^']+)'", text).group(1)
    assert all(a.get("nonce") == nonce or a.get("type") == "application/json" for a in scripts)
    assert all("alert(" not in s for s in parser.scripts)
    # Content: captions, per-view table, generated residual chart, match matrix, generic nested metrics.
    assert "Matches, view 0 ↔ 1" in text
    assert (
        'alt="Reprojection RMS per view, before and after bundle adjustment"' in text
        and 'alt="Recovered tilts"' in text
    )
    assert "rel. tilt (°)" in text and "5.02" in text
    assert "Matches per image pair" in text and ">345<" in text
    assert "grain_metrics.height_um" in text and "12.38" in text
    assert text.count('class="thumbs"') == 1 and text.count("000_a.png") == 1


def test_embedded_cloud_decodes_to_the_ply_points(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    payload = _viewer_payload(build_report(run))
    xyz, inten = _dome(N_CLOUD)
    assert payload["n"] == N_CLOUD and payload["source"] == "dense.ply" and payload["unit"] == "µm"
    got = np.frombuffer(base64.b64decode(payload["xyz"]), dtype="<f4").reshape(-1, 3)
    np.testing.assert_array_equal(got, xyz)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(payload["intensity"]), dtype="<f4"), inten)
    assert payload["rgb"] is None
    np.testing.assert_allclose(payload["lo"], np.percentile(xyz, 0.5, axis=0), rtol=1e-5)
    np.testing.assert_allclose(payload["hi"], np.percentile(xyz, 99.5, axis=0), rtol=1e-5)
    assert -50 < payload["lo"][0] < -45 and 45 < payload["hi"][0] < 50  # the dome's disc, radius 50 µm
    # z colour range: 1st..99th percentile of the dome's heights (0..20 µm).
    assert 0.0 <= payload["z_range"][0] < 0.5 and 19.5 < payload["z_range"][1] <= 20.0


def test_large_cloud_is_subsampled_to_original_points(tmp_path: Path) -> None:
    xyz, _ = _dome(MAX_VIEWER_POINTS + 15_000, seed=3)
    xyz[:100] = np.nan  # dropped, not counted
    rgb = np.random.default_rng(2).integers(0, 256, (len(xyz), 3), dtype=np.uint8)
    _write_ply(tmp_path / "surface.ply", xyz, rgb=rgb)
    data = read_ply_points(tmp_path / "surface.ply")
    assert len(data.xyz) == MAX_VIEWER_POINTS and data.n_total == len(xyz) - 100
    assert np.isfinite(data.xyz).all() and len(np.unique(data.xyz, axis=0)) == MAX_VIEWER_POINTS
    # Each kept point is an original row, with its own colour.
    lookup = {tuple(p): k for k, p in enumerate(xyz[100:].tolist())}
    rows = np.array([lookup[tuple(p)] for p in data.xyz.tolist()]) + 100
    np.testing.assert_array_equal(data.rgb, rgb[rows])
    assert data.intensity is None


def test_height_map_tiff_becomes_a_point_grid(tmp_path: Path) -> None:
    from topograph.io.exports import write_float_tiff

    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    height = 0.01 * xx + 0.02 * yy
    height[:50, :50] = np.nan
    write_float_tiff(tmp_path / "height_map.tif", height, pixel_size_um=0.5)
    (tmp_path / "summary.json").write_text(json.dumps({"engine": "meso", "unit": "um"}))
    data = load_viewer_data(tmp_path, max_points=5000, unit="um")
    assert data is not None and data.kind == "grid" and data.source == "height_map.tif"
    assert len(data.xyz) <= 5000 and data.n_total == 300 * 400 - 2500 and data.note is None
    col, row = data.xyz[:, 0] / 0.5, -data.xyz[:, 1] / 0.5
    np.testing.assert_allclose(col, np.round(col), atol=1e-4)
    np.testing.assert_allclose(data.xyz[:, 2], height[np.round(row).astype(int), np.round(col).astype(int)], rtol=1e-6)
    assert not ((row < 50) & (col < 50)).any()
    assert "data-topograph-viewer" in build_report(tmp_path)


def test_missing_and_damaged_items_do_not_fail(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    text = write_report(empty).read_text(encoding="utf-8")
    assert "summary.json is missing" in text and "no dense.ply" in text and "<script nonce" in text
    meso = tmp_path / "meso"
    meso.mkdir()
    summary = {
        "engine": "meso",
        "accuracy": {"mean_um": 41.5, "per_region": {"card_1": 12.0}},
        "rescale_factor": 0.97,
    }
    (meso / "summary.json").write_text(json.dumps(summary))
    (meso / "series.json").write_text("{not json")
    _write_ply(meso / "dense.ply", np.zeros((0, 3), np.float32))  # empty cloud: skipped, no view
    text = write_report(meso).read_text(encoding="utf-8")
    assert "series.json could not be read" in text and "no config.yaml" in text
    assert "per_region.card_1" in text and "0.97" in text
    assert "data-topograph-viewer" not in text


def test_figure_captions_and_stages() -> None:
    assert figure_caption("matches_0_1") == "Matches, view 0 ↔ 1"
    assert figure_caption("matches_2_10", ["a", "b", "c"]) == "Matches, view 2 ↔ 10"
    assert figure_caption("matches_0_2", ["a", "b", "c"]) == "Matches, view 0 ↔ 2 (a ↔ c)"
    assert figure_caption("loss_curve") == "Loss curve" and figure_caption("height_map") == "Height map"
    stages = {s: figure_stage(s) for s in ("matches_0_1", "match_counts", "height_map", "loss", "distortion_profile")}
    assert stages == {
        "matches_0_1": "Matching",
        "match_counts": "Matching",
        "height_map": "Surface",
        "loss": "Optimisation",
        "distortion_profile": "Lens distortion",
    }
    assert figure_stage("composite") == "Other figures"


def test_script_json_cannot_close_the_script_element() -> None:
    text = script_json({"a": "</script><b>&", "b": "\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><b>&", "b": "\u2028"}


def test_write_thumbnails_scales_and_keeps_content(tmp_path: Path) -> None:
    gray = np.tile(np.linspace(0, 1, 600, dtype=np.float32), (300, 1))
    red = np.zeros((100, 50, 3), np.float32)
    red[..., 0] = 1.0
    paths = write_thumbnails([gray, red], ["x/../a b<c>.tif", "red.png"], tmp_path / "thumbnails", max_side=256)
    assert [p.name for p in paths] == ["000_a_b_c.png", "001_red.png"] and thumbnail_name(7, "") == "007_image.png"
    g = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
    assert g.shape == (128, 256)
    assert abs(g.mean() / 255 - gray.mean()) < 2 / 255
    assert abs(int(g[:, 0].mean()) - 0) <= 2 and abs(int(g[:, -1].mean()) - 255) <= 2  # ramp runs left → right
    r = cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED)
    assert r.shape == (100, 50, 3) and (r[..., 2] == 255).all() and (r[..., :2] == 0).all()  # BGR on disk
    with pytest.raises(ValueError):
        write_thumbnails([gray], ["a", "b"], tmp_path)


def test_cli_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from topograph.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and isinstance(missing.exception, TopographError)
    assert "does not exist" in str(missing.exception)
    (tmp_path / "not_a_run").mkdir()
    bare = runner.invoke(app, ["report", str(tmp_path / "not_a_run")])
    assert isinstance(bare.exception, TopographError) and "no summary.json" in str(bare.exception)
    assert not (tmp_path / "not_a_run" / "report.html").exists()
    run = make_run(tmp_path)
    ok = runner.invoke(app, ["report", str(run)])
    assert ok.exit_code == 0, ok.output
    assert (run / "report.html").is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium chromium-driver)")
@pytest.mark.parametrize("mode", ["webgl", "no-webgl"])
def test_report_renders_in_headless_chromium(tmp_path: Path, mode: str) -> None:
    run = make_run(tmp_path)
    report = write_report(run)
    extra = ["--enable-unsafe-swiftshader"] if mode == "webgl" else ["--disable-3d-apis"]
    cmd = [CHROMIUM, *_CHROME_FLAGS, *extra, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom, log = proc.stdout, proc.stderr
    assert proc.returncode == 0, log[-2000:]
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c or "Content Security Policy" in c or "Refused" in c], console
    assert "data-js-errors" not in re.search(r"<html[^>]*>", dom).group(0)  # set by the page's error hook
    canvas = re.search(r"<canvas[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', canvas))
    assert attrs.get("data-points") == str(N_CLOUD)
    if mode == "no-webgl":
        assert attrs.get("data-renderer") == "2d"
    else:
        assert attrs.get("data-renderer") in ("webgl", "2d")
    # A blank canvas gives 0, points collapsed onto one spot a handful; the dome's 3000 points far more.
    assert int(attrs["data-drawn-pixels"]) > 2 * N_CLOUD, attrs  # 2×2-px points, most of them visible
    assert "3D view needs JavaScript" not in dom and f"{N_CLOUD} points" in dom
