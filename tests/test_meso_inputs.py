"""Input loading, checks and bad-input errors of the mesoscopic engine."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from topograph.errors import TopographError
from topograph.meso.config import CheckConfig, InitConfig, ScaleConfig
from topograph.meso.data import check_inputs, load_images, read_exif, resolve_intrinsics
from topograph.meso.init_positions import estimate_initial_positions
from topograph.meso.types import ExifInfo, MesoImages


def texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s in (1.0, 3.0, 9.0):
        img += cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), s) * s**0.5
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def crops(scene: np.ndarray, offsets: list[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.stack([scene[y : y + h, x : x + w] for x, y in offsets])


def write_jpeg(path, rgb, focal_mm=None, f35=None, subject_distance=None):
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    if focal_mm is not None:
        ifd[0x920A] = float(focal_mm)
    if f35 is not None:
        ifd[0xA405] = int(f35)
    if subject_distance is not None:
        ifd[0x9206] = float(subject_distance)
    Image.fromarray(rgb).save(path, quality=92, exif=exif.tobytes())
    return path


def meso_images(pixels: np.ndarray, exif: ExifInfo | None = None) -> MesoImages:
    n = len(pixels)
    return MesoImages(tuple(f"im{i}.jpg" for i in range(n)), pixels, (exif or ExifInfo(),) * n)


def test_load_images_reads_pixels_and_exif(tmp_path):
    scene = texture(200, 300, 0)
    p1 = write_jpeg(tmp_path / "a.jpg", scene[:120, :160], focal_mm=4.3, f35=26)
    p2 = write_jpeg(tmp_path / "b.jpg", scene[20:140, 40:200], focal_mm=4.3, f35=26)
    imgs = load_images([p1, p2])
    assert imgs.pixels.shape == (2, 120, 160, 3) and imgs.pixels.dtype == np.uint8
    e = imgs.exif[0]
    assert e.focal_mm == pytest.approx(4.3)
    # pitch from the 35 mm equivalent: sensor diagonal = 43.27 mm * 4.3 / 26 over a 200-pixel diagonal
    assert e.pixel_pitch_um == pytest.approx(43.2666 * 4.3 / 26 / 200.0 * 1000.0, rel=1e-3)


def test_fewer_than_two_images_is_an_error(tmp_path):
    p = write_jpeg(tmp_path / "a.jpg", texture(50, 60, 1))
    with pytest.raises(TopographError, match="at least 2"):
        load_images([p])


def test_unreadable_and_missing_files_are_errors(tmp_path):
    good = write_jpeg(tmp_path / "a.jpg", texture(50, 60, 1))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(TopographError, match="cannot read image"):
        load_images([good, bad])
    with pytest.raises(TopographError, match="not found"):
        load_images([good, tmp_path / "missing.jpg"])


def test_mixed_sizes_are_an_error(tmp_path):
    a = write_jpeg(tmp_path / "a.jpg", texture(50, 60, 1))
    b = write_jpeg(tmp_path / "b.jpg", texture(50, 60, 2))
    c = write_jpeg(tmp_path / "c.jpg", texture(40, 60, 3))
    with pytest.raises(TopographError, match="differ in size.*c.jpg"):
        load_images([a, b, c])


def test_missing_focal_length_needs_focal_mm():
    imgs = meso_images(np.zeros((2, 30, 40, 3), np.uint8))
    with pytest.raises(TopographError, match="no EXIF focal length.*--focal-mm"):
        resolve_intrinsics(imgs, ScaleConfig())
    intr = resolve_intrinsics(imgs, ScaleConfig(focal_mm=4.3, pixel_pitch_um=1.4, magnification=0.07))
    assert intr.focal_px == pytest.approx(4.3 * 1.07 / 1.4e-3)  # f_ph = f_eff (1 + M), in pixels
    assert intr.source == {"focal_mm": "cli", "pixel_pitch": "cli"}


def test_exif_pitch_follows_focal_plane_resolution(tmp_path):
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x920A] = 4.3
    ifd[0xA20E] = 10.0 / 0.0056  # pixels per cm
    ifd[0xA210] = 3
    ifd[0xA002] = 200  # stored at 200 px wide, the file is 100 px wide: pitch doubles
    buf = io.BytesIO()
    Image.fromarray(texture(50, 100, 4)).save(buf, format="JPEG", exif=exif.tobytes())
    p = tmp_path / "x.jpg"
    p.write_bytes(buf.getvalue())
    assert read_exif(p, 100, 50).pixel_pitch_um == pytest.approx(11.2)


def test_image_without_overlap_is_named():
    scene = texture(260, 420, 5)
    pix = crops(scene, [(0, 0), (60, 10), (120, 20)], (200, 150))
    stranger = texture(150, 200, 99)[None]
    names = ("im0.jpg", "im1.jpg", "im2.jpg", "im3.jpg")
    with pytest.raises(TopographError, match="im3.jpg overlap no other image"):
        estimate_initial_positions(np.concatenate([pix, stranger]), names, InitConfig(method="xcorr"))
    # auto: falls back to features, which link the three crops and leave the stranger out (reconstruct
    # names it in a warning, tests/test_meso_quality.py)
    res = estimate_initial_positions(np.concatenate([pix, stranger]), names, InitConfig(feature_size=400))
    assert res.method == "features" and res.linked.tolist() == [True, True, True, False]


def test_initial_positions_and_overlap_matrix():
    scene = texture(300, 600, 6)
    offsets = [(0, 0), (90, 5), (180, 15), (270, 10), (360, 0)]
    res = estimate_initial_positions(crops(scene, offsets, (220, 160)), tuple(f"im{i}" for i in range(5)), InitConfig())
    assert res.method == "xcorr"  # the path is wider than the zero start tolerates
    true = np.array(offsets, float)
    est = res.positions - res.positions[0] + true[0]
    assert np.abs(est - true).max() < 1.5
    assert res.overlap[0, 1] > 0.5 and res.overlap[0, 4] == 0.0  # the ends of the path do not overlap
    np.testing.assert_allclose(res.overlap, res.overlap.T)


def test_blurry_images_are_listed_not_dropped():
    scene = texture(200, 300, 7)
    pix = crops(scene, [(0, 0), (20, 10), (40, 5), (60, 15)], (200, 150))
    pix[2] = cv2.GaussianBlur(pix[2], (0, 0), 3.0)
    checks = check_inputs(meso_images(pix), CheckConfig())
    assert checks.blurry == ("im2.jpg",)
    assert checks.sharpness[2] < 0.5 and len(checks.sharpness) == 4
    assert any("im2.jpg" in w for w in checks.warnings)


def test_autofocus_drift_is_reported():
    pix = np.repeat(texture(60, 80, 8)[None], 3, axis=0)
    n = 3
    imgs = MesoImages(
        tuple(f"im{i}.jpg" for i in range(n)),
        pix,
        (
            ExifInfo(focal_mm=4.3, focus_distance_m=0.07),
            ExifInfo(focal_mm=4.3, focus_distance_m=0.08),
            ExifInfo(focal_mm=4.3),
        ),
    )
    checks = check_inputs(imgs, CheckConfig())
    assert any("focus distance varies" in w for w in checks.warnings)
    assert not any("focal length varies" in w for w in checks.warnings)


def test_run_meso_takes_one_folder_as_its_images(tmp_path) -> None:
    """`run_meso("photos/", out)`: the folder is expanded to its images (not read as a sequence of characters),
    so a folder with one photo stops on the image count before any compute or output."""
    import cv2
    import numpy as np

    from topograph.errors import TopographError
    from topograph.meso.pipeline import run_meso

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(TopographError, match="at least 2 overlapping images, got 1"):
        run_meso(str(photos), tmp_path / "out")
    assert not (tmp_path / "out").exists()
