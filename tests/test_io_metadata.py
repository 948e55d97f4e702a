"""Microscope metadata readers (FEI/Thermo, Zeiss), sidecar files and command-line overrides."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from topograph.errors import TopographError
from topograph.io.sem_metadata import (
    LENGTH_TO_UM,
    MetadataValueError,
    parse_zeiss_magnification,
    read_sem_metadata,
    zeiss_quantity,
)
from topograph.io.sidecar import MetadataOverrides, load_sidecar, merge_metadata, parse_sidecar
from topograph.types import SemMetadata


def fei_ini(
    tilt_deg: float | None = 0.0,
    pixel_m: float = 1.5e-8,
    wd_m: float = 0.005,
    hv_v: float = 10000,
    res_y: int | None = None,
    stage_ta_deg: float | None = None,
    rotation_rad: float = 0.5,
) -> str:
    """FEI/Thermo INI metadata text (tag 34682) in SI units."""
    lines = ["[User]", "Date=01/01/2024", "[Beam]", "Beam=EBeam", "[Stage]", f"StageR={rotation_rad}"]
    if tilt_deg is not None:
        lines.append(f"StageT={math.radians(tilt_deg)!r}")
    lines += ["[Scan]", f"PixelWidth={pixel_m!r}", "[EBeam]", f"WD={wd_m!r}", f"HV={hv_v}", "HFW=1.536e-05"]
    if stage_ta_deg is not None:
        lines.append(f"StageTa={math.radians(stage_ta_deg)!r}")
    lines += ["[Image]", "MagCanvasRealWidth=0.2"]
    if res_y is not None:
        lines.append(f"ResolutionY={res_y}")
    return "\r\n".join(lines) + "\r\n"


def zeiss_text(entries: dict[str, str]) -> bytes:
    """Zeiss SmartSEM tag 34118 text: a few unnamed numbers, then KEY / 'Label = value unit' pairs."""
    lines = ["0", "0", "0"]
    for key, line in entries.items():
        lines += [key.upper(), line]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def write_fei_tiff(path: Path, pixels: np.ndarray, **ini_kwargs) -> Path:
    tifffile.imwrite(path, pixels, extratags=[(34682, "s", 0, fei_ini(**ini_kwargs), True)])
    return path


def write_zeiss_tiff(path: Path, pixels: np.ndarray, entries: dict[str, str]) -> Path:
    tifffile.imwrite(path, pixels, extratags=[(34118, "s", 0, zeiss_text(entries), True)])
    return path


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(230, 256), dtype=np.uint8)


@pytest.fixture
def fixtures(shared_data: Path) -> Path:
    d = shared_data / "sem" / "metadata-fixtures"
    if not (d / "SOURCE.md").is_file():
        pytest.skip("metadata fixtures not present")
    return d


# ---------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", ["FEI-Helios-Ebeam-8bits.tif", "FEI-Helios-Ebeam-16bits.tif"])
def test_fei_helios_golden_values(fixtures: Path, name: str) -> None:
    md = read_sem_metadata(fixtures / "fei_helios" / name)
    assert md.vendor == "fei"
    assert md.pixel_size_um == pytest.approx(3.3724, rel=1e-9)
    assert md.working_distance_mm == pytest.approx(4.03466, rel=1e-9)
    assert md.data_bar_rows == 29  # 471 rows − ResolutionY 442
    assert md.beam_energy_kv == pytest.approx(5.0)
    assert md.tilt_deg == pytest.approx(math.degrees(6.54498e-06), rel=1e-9)
    assert md.stage_rotation_deg == pytest.approx(math.degrees(-2.3611), rel=1e-9)
    assert md.magnification == pytest.approx(120.0, rel=1e-3)  # MagCanvasRealWidth 0.2072 / HFW 1.72667 mm
    assert md.source["pixel_size_um"] == "fei"
    assert md.original["fei"]["Scan"]["PixelWidth"] == pytest.approx(3.3724e-06)


def test_fei_bad_floats_are_skipped_with_a_warning(fixtures: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="topograph"):
        md = read_sem_metadata(fixtures / "fei_helios" / "FEI-Helios-navcam-with-no-IRBeam-bad-floats.tif")
    assert md.vendor == "fei"
    assert md.working_distance_mm is None and md.beam_energy_kv is None
    assert md.tilt_deg == pytest.approx(math.degrees(6.54498e-06))
    assert md.data_bar_rows == 39
    text = caplog.text
    assert "notafloat" in text and "WorkingDistance" in text and "HV" in text


def test_zeiss_1k_golden_values(fixtures: Path) -> None:
    md = read_sem_metadata(fixtures / "zeiss" / "test_tiff_Zeiss_SEM_1k.tif")
    assert md.vendor == "zeiss"
    assert md.pixel_size_um == pytest.approx(2.615)
    assert md.tilt_deg == 0.0  # ap_stage_at_t = -0.0; ap_tilt_angle (70°) must not be used
    assert md.stage_rotation_deg == pytest.approx(10.2)
    assert md.magnification == pytest.approx(105.0)
    assert md.beam_energy_kv == pytest.approx(25.0)
    assert md.working_distance_mm == pytest.approx(14.808)
    assert md.original["zeiss"]["ap_tilt_angle"][1] == 70.0


def test_zeiss_multipage_golden_values(fixtures: Path) -> None:
    md = read_sem_metadata(fixtures / "zeiss" / "ZEISS_SEM_multipage.tif")
    assert md.pixel_size_um == pytest.approx(0.01233)  # 12.33 nm, not ap_pixel_size 24.65 nm
    assert md.tilt_deg == pytest.approx(52.6)  # not ap_tilt_angle −37°
    assert md.stage_rotation_deg == pytest.approx(113.6)
    assert md.magnification == pytest.approx(4530.0)  # '4.53 K X'
    assert md.beam_energy_kv == pytest.approx(1.8)
    assert md.working_distance_mm == pytest.approx(4.5)


def test_zeiss_512_pixel_size_from_field_width(fixtures: Path) -> None:
    # no ap_image_pixel_size: field width 5.965 µm / 512 columns (the image's 200 nm bar spans 17 px)
    md = read_sem_metadata(fixtures / "zeiss" / "test_tiff_Zeiss_SEM_512pix.tif")
    assert md.pixel_size_um == pytest.approx(5.965 / 512)
    assert abs(md.pixel_size_um * 17 - 0.2) / 0.2 < 0.02
    assert md.magnification == pytest.approx(50000.0)
    assert md.tilt_deg == 0.0


def test_plain_png_has_no_metadata(tmp_path: Path, pixels: np.ndarray) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "plain.png"), pixels)
    tifffile.imwrite(tmp_path / "plain.tif", pixels)
    for name in ("plain.png", "plain.tif"):
        md = read_sem_metadata(tmp_path / name)
        assert md.vendor is None and md.source == {}
        assert all(
            getattr(md, f) is None for f in ("tilt_deg", "pixel_size_um", "working_distance_mm", "data_bar_rows")
        )


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(TopographError, match="not found"):
        read_sem_metadata(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\xff" * 20)
    with pytest.raises(TopographError, match="cannot read the TIFF"):
        read_sem_metadata(bad)


# ---------------------------------------------------------------------------------------- self-written files


@pytest.mark.parametrize("tilt", [-12.5, 0.0, 7.25, 45.0])
def test_self_written_fei_tiff(tmp_path: Path, pixels: np.ndarray, tilt: float) -> None:
    path = write_fei_tiff(tmp_path / "fei.tif", pixels, tilt_deg=tilt, res_y=200)
    md = read_sem_metadata(path)
    assert md.vendor == "fei"
    assert md.tilt_deg == pytest.approx(tilt, abs=1e-9)
    assert md.stage_rotation_deg == pytest.approx(math.degrees(0.5))
    assert md.pixel_size_um == pytest.approx(0.015)
    assert md.working_distance_mm == pytest.approx(5.0)
    assert md.beam_energy_kv == pytest.approx(10.0)
    assert md.data_bar_rows == 30
    assert md.magnification == pytest.approx(0.2 / 1.536e-05)


@pytest.mark.parametrize(
    ("value", "expected_um"),
    [("250 pm", 2.5e-4), ("12.33 nm", 0.01233), ("2.615 µm", 2.615), ("2.615 um", 2.615), ("0.5 mm", 500.0)],
)
def test_self_written_zeiss_pixel_units(tmp_path: Path, pixels: np.ndarray, value: str, expected_um: float) -> None:
    path = write_zeiss_tiff(
        tmp_path / "z.tif",
        pixels,
        {
            "ap_stage_at_t": "Stage at T = 23.4 \xb0",
            "ap_tilt_angle": "Tilt Angle = 70.0 \xb0",
            "ap_stage_at_r": "Stage at R = -15.0 \xb0",
            "ap_pixel_size": "Pixel Size = 99.0 nm",
            "ap_image_pixel_size": f"Image Pixel Size = {value}",
            "ap_wd": "WD = 8.5 mm",
            "ap_mag": "Mag = 1.00 K X",
            "ap_actualkv": "EHT = 15.00 kV",
        },
    )
    md = read_sem_metadata(path)
    assert md.vendor == "zeiss"
    assert md.pixel_size_um == pytest.approx(expected_um)
    assert md.tilt_deg == pytest.approx(23.4)
    assert md.stage_rotation_deg == pytest.approx(-15.0)
    assert md.working_distance_mm == pytest.approx(8.5)
    assert md.magnification == pytest.approx(1000.0)
    assert md.beam_energy_kv == pytest.approx(15.0)
    assert md.data_bar_rows is None


def test_zeiss_bad_unit_skipped(tmp_path: Path, pixels: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    path = write_zeiss_tiff(
        tmp_path / "z.tif",
        pixels,
        {"ap_stage_at_t": "Stage at T = 5.0 \xb0", "ap_image_pixel_size": "Image Pixel Size = 3.0 furlong"},
    )
    with caplog.at_level(logging.WARNING, logger="topograph"):
        md = read_sem_metadata(path)
    assert md.tilt_deg == pytest.approx(5.0)
    assert md.pixel_size_um is None
    assert "furlong" in caplog.text


def test_converters() -> None:
    assert parse_zeiss_magnification(("Mag", 105, "X")) == 105.0
    assert parse_zeiss_magnification(("Mag", "4.53 K X")) == pytest.approx(4530.0)
    assert parse_zeiss_magnification(("Mag", "1.20 M X")) == pytest.approx(1.2e6)
    with pytest.raises(MetadataValueError):
        parse_zeiss_magnification(("Mag", "lots"))
    to_um = zeiss_quantity(LENGTH_TO_UM)
    assert to_um(("Pixel Size", 250, "pm")) == pytest.approx(2.5e-4)
    with pytest.raises(MetadataValueError):
        to_um(("Pixel Size", 2.0))  # no unit


# ---------------------------------------------------------------------------------------- sidecar & overrides


def test_sidecar_unknown_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(TopographError, match="'pixel_size'"):
        parse_sidecar({"pixel_size": 0.1})
    with pytest.raises(TopographError, match="images.a.tif.tilt"):
        parse_sidecar({"images": {"a.tif": {"tilt": 5}}})
    with pytest.raises(TopographError, match="finite number"):
        parse_sidecar({"tilt_axis_deg": "ten"})
    with pytest.raises(TopographError, match="positive"):
        parse_sidecar({"pixel_size_um": -1})
    p = tmp_path / "bad.yaml"
    p.write_text("pixel_size_um: [unclosed\n")
    with pytest.raises(TopographError, match="cannot parse"):
        load_sidecar(p)
    with pytest.raises(TopographError, match="not found"):
        load_sidecar(tmp_path / "missing.yaml")


def test_sidecar_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "meta.yaml"
    y.write_text(
        "pixel_size_um: 0.12\ntilt_axis_deg: 0\n"
        "images:\n  a.tif: {tilt_deg: 5}\n  b: {tilt_deg: -5, pixel_size_um: 0.2}\n"
    )
    j = tmp_path / "meta.json"
    j.write_text(json.dumps({"tilts_deg": [0, 5, 10], "working_distance_mm": 7}))
    sy, sj = load_sidecar(y), load_sidecar(j)
    va, _ = sy.values_for("a.tif", 0, 2)
    vb, _ = sy.values_for("b.tif", 1, 2)  # matched by stem
    assert va == {"pixel_size_um": 0.12, "tilt_axis_deg": 0.0, "tilt_deg": 5.0}
    assert vb["pixel_size_um"] == 0.2 and vb["tilt_deg"] == -5.0
    v2, tilts = sj.values_for("x.png", 2, 3)
    assert v2 == {"working_distance_mm": 7.0, "tilt_deg": 10.0} and len(tilts) == 1
    with pytest.raises(TopographError, match="3 tilts but the series has 4"):
        sj.values_for("x.png", 0, 4)
    with pytest.raises(TopographError, match="'zz.tif'"):
        parse_sidecar({"images": {"zz.tif": {"tilt_deg": 1}}}).check_names(["a.tif", "b.tif"])


def test_priority_cli_over_sidecar_over_file_with_provenance() -> None:
    file_md = SemMetadata(
        tilt_deg=10.0,
        pixel_size_um=0.5,
        working_distance_mm=5.0,
        vendor="fei",
        source={k: "fei" for k in ("tilt_deg", "pixel_size_um", "working_distance_mm")},
    )
    merged = merge_metadata(
        file_md, {"tilt_deg": 11.0, "pixel_size_um": 0.4}, {"tilt_deg": 12.0, "tilt_axis_deg": 90.0}
    )
    assert merged.tilt_deg == 12.0 and merged.source["tilt_deg"] == "cli"
    assert merged.pixel_size_um == 0.4 and merged.source["pixel_size_um"] == "sidecar"
    assert merged.working_distance_mm == 5.0 and merged.source["working_distance_mm"] == "fei"
    assert merged.tilt_axis_deg == 90.0 and merged.source["tilt_axis_deg"] == "cli"
    assert merged.vendor == "fei"
    assert merge_metadata(SemMetadata(), {"tilt_deg": 1.0}).vendor == "sidecar"
    assert merge_metadata(SemMetadata(), {}, {"tilt_deg": 1.0}).vendor == "cli"


def test_overrides_validation() -> None:
    o = MetadataOverrides(tilts_deg=[0, 5, 10], pixel_size_um=0.1)
    assert o.tilts_deg == (0.0, 5.0, 10.0)
    assert o.values_for(1, 3) == {"tilt_deg": 5.0, "pixel_size_um": 0.1}
    with pytest.raises(TopographError, match="3 tilts but the series has 2"):
        o.values_for(0, 2)
    with pytest.raises(TopographError, match="positive"):
        MetadataOverrides(pixel_size_um=0.0)
    with pytest.raises(TopographError, match="finite"):
        MetadataOverrides(tilt_axis_deg=float("nan"))
