"""The tutorials in examples/: notebooks in sync with their scripts, saved without outputs, and executing
headless (nbclient) on small data with results a broken pipeline would not reach."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED_DATA = Path(os.environ.get("TOPOGRAPH_SHARED_DATA", REPO.parent / "shared" / "data"))
TUTORIALS = ("sem_tutorial", "meso_tutorial")


def _converter():
    """examples/make_notebooks.py as a module (examples/ is not a package)."""
    if "make_notebooks" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_notebooks"] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules["make_notebooks"]


def test_converter_splits_percent_cells() -> None:
    conv = _converter()
    script = "# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n\ny = 2\n# %%\n\n# %% [markdown]\n# end\n"
    cells = conv.parse_cells(script)
    assert [c.kind for c in cells] == ["markdown", "code", "markdown"]  # the empty code cell is dropped
    assert cells[0].source == "# Title\n\ntext"
    assert cells[1].source == "x = 1\n\n\ny = 2"
    nb = json.loads(conv.notebook_json(script, "demo_tutorial"))
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    assert [c["id"] for c in nb["cells"]] == ["demo-tutorial-00", "demo-tutorial-01", "demo-tutorial-02"]
    assert "".join(nb["cells"][1]["source"]) == "x = 1\n\n\ny = 2"
    assert nb["cells"][1]["outputs"] == [] and nb["cells"][1]["execution_count"] is None
    assert conv.notebook_json(script, "demo_tutorial") == conv.notebook_json(script, "demo_tutorial")
    with pytest.raises(ValueError, match="must start"):
        conv.parse_cells("import os\n# %%\nx = 1\n")
    with pytest.raises(ValueError, match="markdown"):
        conv.parse_cells("# %% [markdown]\nnot a comment\n")


def test_notebooks_in_sync_with_scripts() -> None:
    conv = _converter()
    assert sorted(p.stem for p in conv.scripts()) == sorted(TUTORIALS)
    stale = conv.out_of_sync()
    assert not stale, f"regenerate with `python examples/make_notebooks.py`: {[p.name for p in stale]}"
    assert conv.main(["--check"]) == 0


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_saved_without_outputs(name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 6
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.cells[0].cell_type == "markdown"


# Appended to the executed notebook: the tutorial's own results as one JSON line.
_SEM_PROBE = """
import json
_r = {
    "rms_pct": ev["rms_distance_pct"], "completeness": ev["completeness"], "scale": ev["alignment"]["scale"],
    "mirrored": ev["alignment"]["mirrored"], "volume": None if metrics is None else metrics.volume,
    "true_volume": truth.true_volume_um3, "ba_rms_px": float(recon.rms_px_after.max()),
    "factorization_tilt_error_deg": err["max_abs_error_deg"], "dome": dome_score(recon, images[0].shape),
    "have_quartz": HAVE_QUARTZ,
    "summary": (OUT / "grain_run" / "summary.json").is_file(), "report": (OUT / "grain_run" / "report.html").is_file(),
}
if HAVE_QUARTZ:
    _r.update(quartz_dome=dome_score(q_recon, q_images[0].shape), quartz_rms_px=float(q_recon.rms_px_after.max()),
              quartz_tilts=[float(t) for t in q_recon.tilts_deg], quartz_axis=float(q_matches.tilt_axis_deg))
print("RESULT " + json.dumps(_r))
"""

_MESO_PROBE = """
import json
_z = rec.cameras.heights_mm
print("RESULT " + json.dumps({
    "registration_max_px": float(ev.registration_px.max()), "distortion_rms_px": ev.distortion_rms_px,
    "height_rel_error": float(np.max(np.abs(_z - truth.heights_mm) / truth.heights_mm)),
    "precision_gsd": table.mean_precision / ev.gsd_um, "n_regions": len(table.regions),
    "height_finite": float(np.isfinite(rec.height).mean()), "unit": hmap.unit,
    "ortho_finite": bool(np.isfinite(rec.ortho).all()),
}))
"""


def _execute(name: str, probe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, str]:
    """Run a tutorial notebook in a fresh kernel (quick mode) and return its probe result and all text output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("TOPOGRAPH_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("TOPOGRAPH_TUTORIAL_OUT", str(tmp_path))
    monkeypatch.setenv("TOPOGRAPH_SHARED_DATA", str(SHARED_DATA))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures
    nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            text.append(out.get("text", ""))
            images += "image/png" in out.get("data", {})
    lines = [line for line in "".join(text).splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1
    assert images >= 5, "the figures are shown inline"
    return json.loads(lines[0][len("RESULT ") :]), "".join(text)


@pytest.mark.slow
def test_sem_tutorial_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r, text = _execute("sem_tutorial", _SEM_PROBE, tmp_path, monkeypatch)
    # generated grain, metadata cameras: the dense cloud matches the true surface in µm
    assert r["rms_pct"] < 3.0 and r["completeness"] > 0.4
    assert abs(r["scale"] - 1.0) < 0.03 and not r["mirrored"]
    assert r["volume"] is not None and abs(r["volume"] / r["true_volume"] - 1.0) < 0.15
    assert r["ba_rms_px"] < 1.0 and r["factorization_tilt_error_deg"] < 2.0
    assert r["dome"] > 0
    assert r["summary"] and r["report"]
    for fig in ("grain_views", "grain_matches", "grain_tracks", "grain_dense", "grain_cloud", "grain_vs_truth"):
        assert (tmp_path / "sem" / "figures" / f"{fig}.png").is_file()
    if r["have_quartz"]:
        # no metadata: factorization, then the relief check picks the dome; ~5° steps about a vertical axis
        assert r["quartz_dome"] > 0 and r["quartz_rms_px"] < 0.5
        assert 6.0 < abs(r["quartz_tilts"][-1]) < 14.0
        assert abs(abs(r["quartz_axis"]) - 90.0) < 5.0
    else:
        assert "Part 2 is skipped" in text


@pytest.mark.slow
def test_meso_tutorial_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r, _ = _execute("meso_tutorial", _MESO_PROBE, tmp_path, monkeypatch)
    # even the short quick schedule registers the photos to about a pixel and finds the camera heights
    assert r["registration_max_px"] < 3.0 and r["distortion_rms_px"] < 1.0
    assert r["height_rel_error"] < 0.03
    assert r["n_regions"] == 7 and r["precision_gsd"] < 2.0
    assert r["unit"] == "um" and r["height_finite"] > 0.3 and r["ortho_finite"]
    for fig in ("photos", "truth", "init", "loss", "mosaic", "distortion", "table1"):
        assert (tmp_path / "meso" / "figures" / f"{fig}.png").is_file()
    for name in ("orthomosaic.png", "height_map.tif", "height_map.gwy", "cameras.json", "summary.json"):
        assert (tmp_path / "meso" / "run" / name).is_file()
