"""Loading phone images, reading their EXIF, resolving intrinsics and checking the input set."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from topograph.errors import TopographError
from topograph.meso.config import CheckConfig, ScaleConfig
from topograph.meso.types import ExifInfo, InputChecks, Intrinsics, MesoImages
from topograph.progress import steps

log = logging.getLogger("topograph")

_EXIF_IFD = 0x8769
_TAG_FOCAL = 0x920A
_TAG_FOCAL_35 = 0xA405
_TAG_FP_XRES = 0xA20E
_TAG_FP_UNIT = 0xA210
_TAG_SUBJECT_DISTANCE = 0x9206
_TAG_PIXEL_X = 0xA002
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}
_DIAG_35MM = math.hypot(36.0, 24.0)


def _positive(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def read_exif(path: Path, width: int, height: int) -> ExifInfo:
    """Read focal length, 35 mm equivalent, pixel pitch and focus distance from an image's EXIF.

    The pixel pitch comes from FocalPlaneXResolution (rescaled when the stored width differs from
    PixelXDimension) or else from the 35 mm-equivalent focal length (diagonal crop factor).

    Args:
        path: image file.
        width, height: size of the decoded image in pixels.

    Returns:
        The facts found (missing ones are None).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            ifd = dict(exif.get_ifd(_EXIF_IFD))
            camera = " ".join(str(exif.get(t, "")).strip() for t in (0x010F, 0x0110)).strip() or None
    except Exception:  # noqa: BLE001 - EXIF is optional; unreadable EXIF means "no EXIF"
        return ExifInfo()
    focal = _positive(ifd.get(_TAG_FOCAL))
    f35 = _positive(ifd.get(_TAG_FOCAL_35))
    pitch_um = None
    xres = _positive(ifd.get(_TAG_FP_XRES))
    unit = ifd.get(_TAG_FP_UNIT, 2)
    if xres is not None and unit in _UNIT_MM:
        pitch_um = _UNIT_MM[unit] / xres * 1000.0
        stored_w = _positive(ifd.get(_TAG_PIXEL_X))
        if stored_w is not None and abs(stored_w - width) > 0.5:
            pitch_um *= stored_w / width
    elif focal is not None and f35 is not None:
        sensor_diag_mm = _DIAG_35MM * focal / f35
        pitch_um = sensor_diag_mm / math.hypot(width, height) * 1000.0
    dist = _positive(ifd.get(_TAG_SUBJECT_DISTANCE))
    return ExifInfo(focal_mm=focal, focal_35mm=f35, pixel_pitch_um=pitch_um, focus_distance_m=dist, camera=camera)


def load_images(paths: Sequence[str | Path]) -> MesoImages:
    """Read an ordered list of RGB images (JPEG, PNG, TIFF) with their EXIF.

    Raises:
        TopographError: fewer than 2 images, a missing or unreadable file, or images of different sizes.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise TopographError(
            f"the mesoscopic engine needs at least 2 overlapping images, got {len(paths)}",
            "pass all images of the sequence, e.g. photos/*.jpg",
        )
    pixels: np.ndarray | None = None
    sizes: list[tuple[int, int]] = []
    exifs: list[ExifInfo] = []
    for k, p in enumerate(steps(paths, "load images")):
        if not p.is_file():
            raise TopographError(f"image not found: {p}", "check the path")
        data = np.fromfile(str(p), dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
        del data
        if img is None:
            raise TopographError(f"cannot read image {p}", "give JPEG, PNG or TIFF files that open in an image viewer")
        sizes.append((img.shape[1], img.shape[0]))
        exifs.append(read_exif(p, img.shape[1], img.shape[0]))
        if pixels is None:  # one uint8 array for the set, filled in place: no list of copies to stack
            pixels = np.empty((len(paths), *img.shape[:2], 3), dtype=np.uint8)
        if sizes[-1] == sizes[0]:
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=pixels[k])
    if len(set(sizes)) > 1:
        counts = {s: sizes.count(s) for s in set(sizes)}
        common = max(counts, key=counts.get)
        odd = [p.name for p, s in zip(paths, sizes, strict=True) if s != common]
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(counts))
        raise TopographError(
            f"images differ in size ({listed}; odd ones: {', '.join(odd[:5])})",
            "use images from one camera at one resolution",
        )
    return MesoImages(names=tuple(p.name for p in paths), pixels=pixels, exif=tuple(exifs), paths=tuple(paths))


def resolve_intrinsics(images: MesoImages, scale: ScaleConfig) -> Intrinsics:
    """Effective focal length, pixel pitch and initial focal length in pixels.

    Priority: command line / config, then EXIF of the reference image (then of any image). The
    pinhole focal length is ``f_ph = f_eff (1 + M)`` (Eq. 1 with Eq. 7) when the magnification is
    given, else ``f_eff``; in pixels it is ``f_ph / pitch``.

    Raises:
        TopographError: no focal length anywhere, or no way to know the pixel pitch.
    """
    ref = scale.reference_image
    if not 0 <= ref < len(images):
        raise TopographError(f"reference image index {ref} is out of range", f"use 0..{len(images) - 1}")
    source: dict[str, str] = {}
    order = [images.exif[ref], *images.exif]
    focal = scale.focal_mm
    if focal is not None:
        source["focal_mm"] = "cli"
    else:
        focal = next((e.focal_mm for e in order if e.focal_mm), None)
        if focal is None:
            raise TopographError(
                "the images have no EXIF focal length", "give the effective focal length with --focal-mm (e.g. 4.3)"
            )
        source["focal_mm"] = "exif"
    pitch_um = scale.pixel_pitch_um
    if pitch_um is not None:
        source["pixel_pitch"] = "cli"
    else:
        pitch_um = next((e.pixel_pitch_um for e in order if e.pixel_pitch_um), None)
        if pitch_um is None:
            raise TopographError(
                "the sensor pixel pitch is unknown (no EXIF focal-plane resolution or 35 mm-equivalent focal length)",
                "give it with --pixel-pitch-um (e.g. 1.4 for a phone at full resolution)",
            )
        source["pixel_pitch"] = "exif"
    mag = scale.magnification
    f_ph = focal * (1.0 + mag) if mag else focal
    pitch_mm = pitch_um * 1e-3
    return Intrinsics(
        focal_mm=float(focal),
        pixel_pitch_mm=float(pitch_mm),
        focal_px=float(f_ph / pitch_mm),
        magnification=mag,
        source=source,
    )


def sharpness_scores(pixels: np.ndarray, max_side: int = 512) -> np.ndarray:
    """Variance of the Laplacian of each image over its grey-level variance (downsampled to ``max_side``),
    relative to the median.

    Args:
        pixels: (N, H, W, 3) uint8 images.
        max_side: long side used for the measurement.

    Returns:
        (N,) scores; 1 = the set's median sharpness.
    """
    scores = []
    h, w = pixels.shape[1:3]
    f = min(1.0, max_side / max(h, w))
    for img in pixels:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            g = cv2.resize(g, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        g = g.astype(np.float32)
        # divided by the grey-level variance: exposure and white balance changes leave the score alone
        scores.append(float(cv2.Laplacian(g, cv2.CV_32F).var()) / max(float(g.var()), 1e-6))
    s = np.asarray(scores)
    med = float(np.median(s))
    return s / med if med > 0 else np.ones_like(s)


def check_inputs(images: MesoImages, cfg: CheckConfig) -> InputChecks:
    """Sharpness relative to the median and EXIF focal length / focus distance drift (warnings only).

    Blurry images are listed, never dropped.
    """
    warnings: list[str] = []
    sharp = sharpness_scores(images.pixels)
    blurry = tuple(n for n, s in zip(images.names, sharp, strict=True) if s < cfg.sharpness_ratio)
    if blurry:
        warnings.append(
            f"{len(blurry)} image(s) are much less sharp than the set's median: {', '.join(blurry)} "
            "(motion blur or focus; kept with a low weight in the mosaic; consider retaking them)"
        )
    focals = tuple(e.focal_mm for e in images.exif)
    dists = tuple(e.focus_distance_m for e in images.exif)
    for label, values in (("focal length", focals), ("focus distance", dists)):
        known = np.array([v for v in values if v is not None], dtype=float)
        if known.size >= 2 and (known.max() - known.min()) > cfg.focus_tolerance * float(np.median(known)):
            warnings.append(
                f"EXIF {label} varies across images ({known.min():.4g} to {known.max():.4g}): autofocus drift "
                "changes the magnification; lock focus when shooting"
            )
    for w in warnings:
        log.warning(w)
    return InputChecks(
        sharpness=sharp, blurry=blurry, focal_mm=focals, focus_distance_m=dists, warnings=tuple(warnings)
    )
