"""ISO 25178-2 style areal parameters against closed-form values, form removal, and ``analyze`` on a TIFF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy.integrate import quad
from typer.testing import CliRunner

from topograph.analysis.surface import areal_parameters, remove_form
from topograph.errors import TopographError

A = 1.5  # amplitude, µm
LAM = 50.0  # wavelength, µm
PIX = 0.5  # pixel size, µm
N_PERIODS = 6


def sinusoid(rows: int = 48) -> np.ndarray:
    """z = A sin(2πx/λ + π/2) over whole periods, sampled symmetrically about a crest (so a plane fit is 0)."""
    n = int(N_PERIODS * LAM / PIX)
    x = (np.arange(n) - (n - 1) / 2) * PIX
    return np.tile(A * np.sin(2 * np.pi * x / LAM + np.pi / 2), (rows, 1))


def sdr_sinusoid_percent() -> float:
    """Sdr of z = A sin(kx): 100·(mean over a period of sqrt(1 + (Ak cos)²) − 1)."""
    k = 2 * np.pi * A / LAM
    mean = quad(lambda t: np.sqrt(1 + (k * np.cos(t)) ** 2), 0, 2 * np.pi)[0] / (2 * np.pi)
    return 100 * (mean - 1)


def test_sinusoid_matches_closed_forms() -> None:
    p = areal_parameters(sinusoid(), PIX, form="none")
    assert p.sa == pytest.approx(2 * A / np.pi, rel=2e-3)
    assert p.sq == pytest.approx(A / np.sqrt(2), rel=1e-6)
    assert abs(p.ssk) < 1e-6
    assert p.sku == pytest.approx(1.5, rel=1e-6)
    assert p.sp == pytest.approx(A, rel=2e-3) and p.sv == pytest.approx(A, rel=2e-3)
    assert p.sz == pytest.approx(p.sp + p.sv)
    assert p.sdr_percent == pytest.approx(sdr_sinusoid_percent(), rel=0.01)  # 0.88 %; measured −0.13 %
    assert p.n_pixels == sinusoid().size


def test_tilted_plane_is_removed_by_plane_form_removal() -> None:
    z = sinusoid()
    rows, cols = np.indices(z.shape)
    tilted = z + 0.02 * cols * PIX - 0.05 * rows * PIX + 7.0
    ref = areal_parameters(z, PIX, form="plane")
    p = areal_parameters(tilted, PIX, form="plane")
    for name in ("sa", "sq", "sp", "sv", "sz", "ssk", "sku", "sdr_percent"):
        assert getattr(p, name) == pytest.approx(getattr(ref, name), rel=1e-6, abs=1e-9), name
    assert p.sq == pytest.approx(A / np.sqrt(2), rel=1e-6)
    assert areal_parameters(tilted, PIX, form="none").sq > 1.5 * p.sq  # without removal the tilt dominates


def test_poly2_removes_a_bowl_and_poly3_a_cubic() -> None:
    z = sinusoid()
    rows, cols = np.indices(z.shape)
    x, y = cols * PIX, rows * PIX
    bowl = z + 1e-4 * (x - 40) ** 2 + 2e-4 * (y - 5) ** 2 - 1e-4 * x * y
    cubic = bowl + 3e-7 * x**3 - 1e-6 * x * y**2
    ref = areal_parameters(z, PIX, form="poly3")
    assert areal_parameters(bowl, PIX, form="poly2").sq == pytest.approx(areal_parameters(z, PIX, form="poly2").sq)
    assert areal_parameters(cubic, PIX, form="poly3").sq == pytest.approx(ref.sq, rel=1e-6)
    assert areal_parameters(cubic, PIX, form="plane").sq > 1.2 * ref.sq
    resid = remove_form(cubic, PIX, "poly3")
    assert abs(np.nanmean(resid)) < 1e-9


def test_gaussian_surface_kurtosis_and_nan_holes() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 0.3, (256, 256))
    z[100:120, 30:90] = np.nan
    p = areal_parameters(z, 1.0, form="plane")
    assert p.sq == pytest.approx(0.3, rel=0.02)
    assert abs(p.ssk) < 0.05 and p.sku == pytest.approx(3.0, abs=0.1)
    assert p.sa == pytest.approx(0.3 * np.sqrt(2 / np.pi), rel=0.02)
    assert p.n_pixels == 256 * 256 - 20 * 60


def test_mask_limits_the_evaluated_area() -> None:
    z = sinusoid()
    mask = np.zeros(z.shape, dtype=bool)
    mask[:, : z.shape[1] // 2] = True
    p = areal_parameters(np.where(mask, z, 1e6), PIX, mask=mask, form="none")
    assert p.n_pixels == mask.sum() and p.sq == pytest.approx(A / np.sqrt(2), rel=1e-6)


def test_surface_errors() -> None:
    with pytest.raises(TopographError, match="no valid pixels"):
        areal_parameters(np.full((8, 8), np.nan), 1.0)
    with pytest.raises(TopographError, match="unknown form"):
        remove_form(np.zeros((8, 8)), 1.0, "sphere")
    with pytest.raises(TopographError, match="pixel size"):
        areal_parameters(np.zeros((8, 8)), -1.0)
    with pytest.raises(TopographError, match="only 5 valid pixels"):
        areal_parameters(np.pad(np.ones((1, 5)), ((0, 0), (0, 0)), constant_values=np.nan), 1.0, form="poly3")


def test_parameters_to_dict_has_units() -> None:
    d = areal_parameters(sinusoid(8), PIX).to_dict()
    assert d["sa"]["unit"] == "um" and d["sdr_percent"]["unit"] == "%" and d["ssk"]["unit"] == "1"
    assert d["form_removed"] == "plane" and "Sp + Sv" in d["sz"]["definition"]


def test_cli_analyze_height_map_tiff(tmp_path) -> None:
    from topograph.cli import app

    tif = tmp_path / "h.tif"
    tifffile.imwrite(tif, sinusoid(16).astype(np.float32), description=json.dumps({"pixel_size_um": PIX}))
    out = tmp_path / "s.json"
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(tif), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())["surface"]
    assert data["pixel_size_um"] == PIX and data["pixel_size_from"] == "file description"
    assert data["sq"]["value"] == pytest.approx(A / np.sqrt(2), rel=1e-4)
    assert data["sdr_percent"]["value"] == pytest.approx(sdr_sinusoid_percent(), rel=0.01)

    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, sinusoid(16).astype(np.float32))
    result = runner.invoke(app, ["analyze", str(bare)])
    assert isinstance(result.exception, TopographError) and "--pixel-size-um" in str(result.exception)
    result = runner.invoke(app, ["analyze", "--height-map", str(bare), "--pixel-size-um", str(PIX)])
    assert result.exit_code == 0, result.output

    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((8, 8), np.nan, dtype=np.float32))
    result = runner.invoke(app, ["analyze", str(nan), "--pixel-size-um", "1"])
    assert isinstance(result.exception, TopographError) and "no valid pixels" in str(result.exception)
