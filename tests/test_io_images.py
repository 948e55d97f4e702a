"""Loading SEM series: ordering, data-bar cropping, histogram matching, input checks and warnings."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from topograph.errors import TopographError
from topograph.io.databar import CropBox, DataBarDetectorConfig, apply_crop, detect_data_bar
from topograph.io.images import (
    describe_series,
    grey_levels,
    list_image_files,
    load_sem_series,
    match_histogram,
    natural_key,
    series_warnings,
    to_unit_float,
)
from topograph.io.sidecar import MetadataOverrides
from topograph.types import ImageSet, SemImage, SemMetadata


def texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """SEM-like float image in [0, 1]: blurred random structure plus pixel noise."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 3.0)
    base = (base - base.min()) / (base.max() - base.min())
    img = 0.15 + 0.7 * base + rng.normal(0.0, 0.04, shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def add_data_bar(img: np.ndarray, rows: int, seed: int, background: float = 0.0, ink: float = 1.0) -> np.ndarray:
    """Overwrite the bottom ``rows`` with a data bar: a full-width edge line, flat background, text blocks."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    h, w = out.shape
    bar = np.full((rows, w), background, dtype=np.float32)
    bar[0, :] = ink  # separator line
    for _ in range(w // 12):  # glyph-like strokes on 2 text lines
        line = rng.integers(0, 2)
        y0 = 4 + line * (rows // 2)
        x0 = rng.integers(0, w - 4)
        bar[y0 : min(y0 + rng.integers(3, max(4, rows // 2 - 4)), rows), x0 : x0 + rng.integers(1, 4)] = ink
    out[h - rows :] = bar
    return out


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_fei_tiff(path: Path, pixels: np.ndarray, tilt_deg: float, res_y: int | None = None, **extra: float) -> Path:
    lines = ["[Stage]", f"StageT={math.radians(tilt_deg)!r}", "[Scan]", f"PixelWidth={extra.get('pixel_m', 1e-8)!r}"]
    lines += ["[EBeam]", f"WD={extra.get('wd_m', 0.005)!r}", "HV=10000"]
    if "stage_ta_deg" in extra:
        lines.append(f"StageTa={math.radians(extra['stage_ta_deg'])!r}")
    if res_y is not None:
        lines += ["[Image]", f"ResolutionY={res_y}"]
    tifffile.imwrite(path, pixels, extratags=[(34682, "s", 0, "\r\n".join(lines) + "\r\n", True)])
    return path


# ---------------------------------------------------------------------------------------- ordering


def test_orders_by_tilt_not_by_name(tmp_path: Path) -> None:
    tilts = {"tilt_-10.tif": -10.0, "tilt_-5.tif": -5.0, "tilt_0.tif": 0.0, "tilt_5.tif": 5.0}
    for i, (name, t) in enumerate(tilts.items()):
        write_fei_tiff(tmp_path / name, to_u8(texture((96, 128), i)), t)
    by_name = [p.name for p in list_image_files([tmp_path])]
    assert by_name == ["tilt_0.tif", "tilt_5.tif", "tilt_-5.tif", "tilt_-10.tif"]  # natural name order ≠ tilt order
    s = load_sem_series([tmp_path], auto_crop=False)
    assert s.names == ["tilt_-10.tif", "tilt_-5.tif", "tilt_0.tif", "tilt_5.tif"]
    assert s.tilts_deg == pytest.approx([-10.0, -5.0, 0.0, 5.0], abs=1e-9)
    assert all(im.metadata.source["tilt_deg"] == "fei" for im in s.images)


def test_natural_name_order_without_tilts(tmp_path: Path) -> None:
    for i, name in enumerate(["img10.png", "img2.png", "img1.png"]):
        cv2.imwrite(str(tmp_path / name), to_u8(texture((64, 80), i)))
    s = load_sem_series([tmp_path], auto_crop=False, histogram_match=False)
    assert s.names == ["img1.png", "img2.png", "img10.png"]
    assert s.tilts_deg == [None, None, None]
    assert natural_key("a2") < natural_key("a10")


def test_cli_tilts_follow_input_order_and_win(tmp_path: Path) -> None:
    a = write_fei_tiff(tmp_path / "a.tif", to_u8(texture((64, 80), 0)), 30.0)
    b = write_fei_tiff(tmp_path / "b.tif", to_u8(texture((64, 80), 1)), 40.0)
    s = load_sem_series([b, a], overrides=MetadataOverrides(tilts_deg=[8.0, 2.0]), auto_crop=False)
    assert s.names == ["a.tif", "b.tif"] and s.tilts_deg == [2.0, 8.0]
    assert s[0].metadata.source["tilt_deg"] == "cli" and s[0].metadata.source["pixel_size_um"] == "fei"


def test_sidecar_values_and_priority(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"v{i}.png"), to_u8(texture((64, 80), i)))
    side = tmp_path / "meta.yaml"
    side.write_text(
        "pixel_size_um: 0.12\ntilt_axis_deg: 90\ntilts_deg: [10, 0, 5]\nimages:\n  v1.png: {pixel_size_um: 0.2}\n"
    )
    s = load_sem_series([tmp_path], sidecar=side, overrides=MetadataOverrides(tilt_axis_deg=80.0), auto_crop=False)
    assert s.names == ["v1.png", "v2.png", "v0.png"] and s.tilts_deg == [0.0, 5.0, 10.0]
    m1 = s[0].metadata
    assert m1.pixel_size_um == 0.2 and m1.source["pixel_size_um"] == "sidecar"
    assert m1.tilt_axis_deg == 80.0 and m1.source["tilt_axis_deg"] == "cli"
    assert m1.vendor == "cli"


# ---------------------------------------------------------------------------------------- data bar


@pytest.mark.parametrize(("rows", "background", "ink"), [(24, 0.0, 1.0), (41, 1.0, 0.0), (63, 0.05, 0.9)])
def test_detects_synthetic_data_bar(rows: int, background: float, ink: float) -> None:
    for seed in range(3):
        img = add_data_bar(texture((400, 512), seed), rows, seed, background, ink)
        assert abs(detect_data_bar(img) - rows) <= 1


def test_no_data_bar_on_plain_texture() -> None:
    for seed in range(4):
        assert detect_data_bar(texture((300, 300), seed)) == 0
    flat_frame = np.zeros((300, 300), dtype=np.float32)  # a flat image cannot be told apart from a bar
    assert detect_data_bar(add_data_bar(flat_frame, 30, 0)) == 0


def test_real_zeiss_data_bars(shared_data: Path) -> None:
    d = shared_data / "sem" / "metadata-fixtures" / "zeiss"
    if not d.is_dir():
        pytest.skip("zeiss fixtures not present")
    img = to_unit_float(tifffile.imread(d / "test_tiff_Zeiss_SEM_1k.tif"))
    assert abs(detect_data_bar(img) - 77) <= 1  # black separator line at row 691 of 768
    img = to_unit_float(tifffile.imread(d / "test_tiff_Zeiss_SEM_512pix.tif"))
    assert abs(detect_data_bar(img) - 34) <= 1  # separator at row 350 of 384


def test_real_quartz_has_no_bar(quartz_dir: Path) -> None:
    s = load_sem_series([quartz_dir], histogram_match=False)
    assert len(s) == 3 and s[0].shape == (1200, 1200) and s[0].crop_rows == 0
    assert s.names == ["Quarz_01.png", "Quarz_02.png", "Quarz_03.png"]


def test_real_fei_crop_from_metadata(shared_data: Path) -> None:
    d = shared_data / "sem" / "metadata-fixtures" / "fei_helios"
    if not d.is_dir():
        pytest.skip("fei fixtures not present")
    files = [d / "FEI-Helios-Ebeam-8bits.tif", d / "FEI-Helios-Ebeam-16bits.tif"]
    with pytest.raises(TopographError, match="same stage tilt"):
        load_sem_series(files)
    s = load_sem_series(files, overrides=MetadataOverrides(tilts_deg=[0.0, 5.0]))
    assert s[0].shape == (442, 512) and s[0].crop_rows == 29
    assert s[0].metadata.pixel_size_um == pytest.approx(3.3724)


def test_load_crops_detected_bar_and_explicit_crop_wins(tmp_path: Path) -> None:
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"s{i}.png"), to_u8(add_data_bar(texture((300, 320), i), 37, i)))
    s = load_sem_series([tmp_path], histogram_match=False)
    assert abs(s[0].crop_rows - 37) <= 1 and s[0].shape[0] == 300 - s[0].crop_rows
    s2 = load_sem_series([tmp_path], crop_rows=10, histogram_match=False)
    assert s2[0].crop_rows == 10 and s2[0].shape == (290, 320)
    s3 = load_sem_series([tmp_path], auto_crop=False, histogram_match=False)
    assert s3[0].crop_rows == 0
    s4 = load_sem_series([tmp_path], crop_box=CropBox(10, 250, 20, 300), histogram_match=False)
    assert s4[0].shape == (240, 280)


def test_load_crops_bar_from_metadata(tmp_path: Path) -> None:
    for i, t in enumerate([0.0, 6.0]):  # flat bar-less content: only the metadata can say
        write_fei_tiff(tmp_path / f"m{i}.tif", np.full((120, 100), 40 + i, np.uint8), t, res_y=100)
    s = load_sem_series([tmp_path], histogram_match=False)
    assert s[0].crop_rows == 20 and s[0].shape == (100, 100) and s[0].metadata.data_bar_rows == 20


def test_apply_crop_errors() -> None:
    img = np.zeros((10, 10), np.float32)
    with pytest.raises(TopographError):
        apply_crop(img, rows=10)
    with pytest.raises(TopographError):
        apply_crop(img, box=CropBox(0, 11, 0, 5))
    assert detect_data_bar(img, DataBarDetectorConfig(above_rows=8)) == 0


# ---------------------------------------------------------------------------------------- pixels


def test_histogram_matching_equalises_distributions(tmp_path: Path) -> None:
    base = texture((128, 128), 0)
    cv2.imwrite(str(tmp_path / "a.png"), to_u8(base))
    cv2.imwrite(str(tmp_path / "b.png"), to_u8(0.4 * texture((128, 128), 1) ** 2 + 0.05))  # darker, other gamma
    q = np.linspace(0.05, 0.95, 19)
    raw = load_sem_series([tmp_path], auto_crop=False, histogram_match=False)
    matched = load_sem_series([tmp_path], auto_crop=False)
    before = np.abs(np.quantile(raw[1].pixels, q) - np.quantile(raw[0].pixels, q)).max()
    after = np.abs(np.quantile(matched[1].pixels, q) - np.quantile(matched[0].pixels, q)).max()
    assert before > 0.2 and after < 0.01
    assert np.array_equal(matched[0].pixels, raw[0].pixels)  # the reference is untouched
    assert matched[1].pixels.dtype == np.float32


@pytest.mark.parametrize("full_scale", [255.0, 4095.0, 65535.0])
def test_histogram_matching_by_level_counts_is_skimages_mapping(full_scale: float) -> None:
    """Images of integer codes / full scale take the counting path, other float images the sorting path; both
    give skimage's ``match_histograms`` value for value."""
    from skimage.exposure import match_histograms

    rng = np.random.default_rng(int(full_scale))
    codes = [np.rint(full_scale * texture((96, 128), k) ** g).astype(np.uint16) for k, g in ((0, 1.0), (1, 2.2))]
    ref, img = (to_unit_float(c, full_scale) for c in codes)
    expected = np.clip(match_histograms(img, ref), 0.0, 1.0).astype(np.float32)
    levels = grey_levels(ref, full_scale)
    assert levels.level_codes is not None  # the counting path
    assert np.array_equal(match_histogram(img, levels, full_scale), expected)
    assert np.array_equal(match_histogram(img, ref), expected)  # no full scale: the sorting path
    jittered = np.clip(img + rng.uniform(0, 1e-5, img.shape).astype(np.float32), 0, 1)  # not integer codes
    assert grey_levels(jittered, full_scale).level_codes is None
    assert np.array_equal(
        match_histogram(jittered, levels, full_scale),
        np.clip(match_histograms(jittered, ref), 0.0, 1.0).astype(np.float32),
    )


def test_bit_depths_and_colour(tmp_path: Path) -> None:
    g = texture((64, 80), 0)
    tifffile.imwrite(tmp_path / "a12.tif", np.rint(g * 4095).astype(np.uint16))  # 12-bit data in 16-bit
    tifffile.imwrite(tmp_path / "b12.tif", np.rint(g * 4095).astype(np.uint16))
    s = load_sem_series([tmp_path], auto_crop=False, histogram_match=False)
    assert abs(float(s[0].pixels.max()) - float(g.max())) < 1e-3
    rgb = np.stack([to_u8(g)] * 3, axis=-1)
    cv2.imwrite(str(tmp_path / "c.png"), rgb)  # grey stored as colour
    cv2.imwrite(str(tmp_path / "d.jpg"), rgb, [cv2.IMWRITE_JPEG_QUALITY, 100])
    s = load_sem_series([tmp_path / "c.png", tmp_path / "d.jpg"], auto_crop=False, histogram_match=False)
    assert s[0].pixels.ndim == 2 and np.abs(s[0].pixels - to_u8(g) / 255.0).max() < 1e-5
    assert np.abs(s[1].pixels - s[0].pixels).mean() < 0.01


# ---------------------------------------------------------------------------------------- bad input


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(TopographError, match="does not exist"):
        load_sem_series([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(TopographError, match="holds no images"):
        load_sem_series([empty])
    one = tmp_path / "one"
    one.mkdir()
    cv2.imwrite(str(one / "a.png"), to_u8(texture((32, 32), 0)))
    with pytest.raises(TopographError, match="at least 2"):
        load_sem_series([one])
    with pytest.raises(TopographError, match="folder"):
        load_sem_series([one, one / "a.png"])


def test_corrupt_file(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), to_u8(texture((32, 32), 0)))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 4)
    (tmp_path / "c.tif").write_bytes(b"II*\x00" + b"\x00" * 12)
    with pytest.raises(TopographError, match="cannot read image .*b.png"):
        load_sem_series([tmp_path / "a.png", tmp_path / "b.png"])
    with pytest.raises(TopographError, match="cannot read image .*c.tif"):
        load_sem_series([tmp_path / "a.png", tmp_path / "c.tif"])


def test_different_sizes_are_listed(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), to_u8(texture((32, 48), 0)))
    cv2.imwrite(str(tmp_path / "b.png"), to_u8(texture((40, 48), 1)))
    with pytest.raises(TopographError, match=r"a.png 48x32, b.png 48x40"):
        load_sem_series([tmp_path])


def test_tilt_contradictions(tmp_path: Path) -> None:
    img = to_u8(texture((48, 48), 0))
    write_fei_tiff(tmp_path / "a.tif", img, 0.0)
    write_fei_tiff(tmp_path / "b.tif", img, 5.0, stage_ta_deg=9.0)  # StageT 5° vs StageTa 9°
    with pytest.raises(TopographError, match="contradictory tilt for b.tif"):
        load_sem_series([tmp_path], auto_crop=False)
    s = load_sem_series([tmp_path], overrides=MetadataOverrides(tilts_deg=[0, 5]), auto_crop=False)  # explicit wins
    assert s.tilts_deg == [0.0, 5.0]
    side = tmp_path / "s.yaml"
    side.write_text("tilts_deg: [0, 5]\nimages:\n  b.tif: {tilt_deg: 7}\n")
    with pytest.raises(TopographError, match="contradictory tilt for b.tif: sidecar"):
        load_sem_series([tmp_path], sidecar=side, auto_crop=False)
    with pytest.raises(TopographError, match="3 tilts but the series has 2"):
        load_sem_series([tmp_path], overrides=MetadataOverrides(tilts_deg=[0, 5, 10]), auto_crop=False)


def test_zero_tilt_range(tmp_path: Path) -> None:
    for i in range(3):
        write_fei_tiff(tmp_path / f"z{i}.tif", to_u8(texture((48, 48), i)), 12.0)
    with pytest.raises(TopographError, match="same stage tilt"):
        load_sem_series([tmp_path], auto_crop=False)


# ---------------------------------------------------------------------------------------- warnings & table


def _set(mds: list[SemMetadata], shape: tuple[int, int] = (100, 1000)) -> ImageSet:
    return ImageSet(tuple(SemImage(f"i{k}.tif", np.zeros(shape, np.float32), md) for k, md in enumerate(mds)))


def test_series_warnings() -> None:
    good = _set([SemMetadata(tilt_deg=t, pixel_size_um=0.01, working_distance_mm=10.0) for t in (0, 5, 10)])
    assert series_warnings(good) == []
    bad = _set(
        [
            SemMetadata(tilt_deg=0.0, pixel_size_um=0.2, working_distance_mm=10.0),
            SemMetadata(tilt_deg=1.0, pixel_size_um=0.2, working_distance_mm=10.5),
            SemMetadata(tilt_deg=21.0, pixel_size_um=0.21, working_distance_mm=10.0),
        ]
    )
    text = "\n".join(series_warnings(bad))
    assert "working distance differs" in text and "pixel size differs" in text
    assert "only 1.00°" in text and "20.00°" in text
    assert "perspective" not in text  # field 0.21 mm / WD 10 mm = 0.021
    wide = _set([SemMetadata(tilt_deg=t, pixel_size_um=2.0, working_distance_mm=10.0) for t in (0, 5)])
    assert any("perspective" in w for w in series_warnings(wide))


def test_describe_series(tmp_path: Path) -> None:
    for i, t in enumerate([3.0, -3.0]):
        write_fei_tiff(tmp_path / f"d{i}.tif", to_u8(texture((60, 70), i)), t, res_y=50)
    rows = describe_series(load_sem_series([tmp_path]))
    assert [r["name"] for r in rows] == ["d1.tif", "d0.tif"]
    assert rows[0]["size"] == "70x50" and rows[0]["crop_rows"] == 10
    assert rows[0]["tilt_deg"] == pytest.approx(-3.0) and rows[0]["vendor"] == "fei"
    assert rows[0]["pixel_size_um"] == pytest.approx(0.01) and "tilt_deg=fei" in rows[0]["source"]
