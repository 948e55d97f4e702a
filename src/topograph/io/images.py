"""Loading an SEM tilt series: pixels, metadata, data-bar crop, ordering and intensity normalisation.

:func:`load_sem_series` is the one entry point of the SEM engine's load stage. It reads 8/16-bit
TIFF (first page), PNG and JPEG files to float32 grey images in [0, 1], reads the microscope metadata
(:mod:`topograph.io.sem_metadata`), applies the sidecar and command-line values
(:mod:`topograph.io.sidecar`; priority command line > sidecar > file tags), crops the data bar
(:mod:`topograph.io.databar`), orders the series by tilt when every tilt is known and matches every
image's histogram to the first one.

*Input order* is the order of the files given, or the natural file-name order for a folder
(``img2`` before ``img10``); tilt lists (command line or sidecar ``tilts_deg``) follow it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topograph.errors import TopographError
from topograph.io.databar import CropBox, apply_crop, choose_crop_rows
from topograph.io.image_quality import blur_warnings, relative_sharpness
from topograph.io.sem_metadata import MetadataReading, is_tiff, read_tiff_metadata
from topograph.io.sidecar import TILT_CONFLICT_DEG, MetadataOverrides, Sidecar, load_sidecar, merge_metadata
from topograph.types import ImageSet, SemImage, SemMetadata

logger = logging.getLogger("topograph")

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})
MIN_TILT_RANGE_DEG = 0.1
"""A series whose known tilts span less than this is treated as having no tilt at all."""
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights for R, G, B


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``img2`` < ``img10``; case-insensitive otherwise."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def list_image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand the inputs (image files, or exactly one folder) into image paths in input order.

    Args:
        inputs: image files (kept in the given order) or one folder (its images in natural name order;
            hidden files and other extensions are skipped).

    Returns:
        The image paths.

    Raises:
        TopographError: nothing given, a missing path, a folder mixed with files or several folders,
            a folder without images, a file with an unsupported extension, two files with one name.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths = [Path(p) for p in inputs]
    if not paths:
        raise TopographError("no input images given", "pass the image files or one folder holding them")
    for p in paths:
        if p.is_symlink() and not p.exists():
            raise TopographError(f"{p} is a link to a missing file", "restore the file it points to, or leave it out")
        if not p.exists():
            raise TopographError(f"input path does not exist: {p}", "check the spelling and the current directory")
    folders = [p for p in paths if p.is_dir()]
    if folders:
        if len(paths) > 1:
            raise TopographError(
                f"got a folder ({folders[0]}) together with other inputs",
                "pass either image files or exactly one folder",
            )
        folder = folders[0]
        dangling = sorted(
            f.name
            for f in folder.iterdir()
            if f.is_symlink() and not f.exists() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if dangling:
            raise TopographError(
                f"{folder / dangling[0]} is a link to a missing file",
                "restore the file it points to, or remove the link from the series",
            )
        files = sorted(
            (
                f
                for f in folder.iterdir()
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
            ),
            key=lambda f: natural_key(f.name),
        )
        if not files:
            raise TopographError(
                f"the folder {folder} holds no images",
                f"put the tilt series there as {', '.join(sorted(IMAGE_EXTENSIONS))} files",
            )
        return files
    for p in paths:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise TopographError(
                f"unsupported image type '{p.suffix}' for {p}",
                f"use {', '.join(sorted(IMAGE_EXTENSIONS))} files",
            )
    names = [p.name for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TopographError(f"several inputs share the file name {dupes[0]}", "give every image a distinct file name")
    return paths


def read_raw_image(path: Path) -> tuple[np.ndarray, MetadataReading]:
    """Pixels (as stored) and vendor metadata of one file.

    TIFFs are read with tifffile (first page; vendor tags parsed); other formats with OpenCV, falling
    back to Pillow.

    Raises:
        TopographError: the file cannot be decoded.
    """
    fix = "check that the file is a complete, uncorrupted TIFF/PNG/JPEG image (re-export it from the microscope)"
    check_declared_size(path)
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                reading = read_tiff_metadata(tif, where=path.name)
                array = tif.pages.first.asarray()
            return array, reading
        import cv2

        data = np.fromfile(path, dtype=np.uint8)
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if array is not None:
            if array.ndim == 3 and array.shape[2] in (3, 4):
                array = array[..., [2, 1, 0] + ([3] if array.shape[2] == 4 else [])]  # BGR(A) → RGB(A)
            return array, MetadataReading(SemMetadata())
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im), MetadataReading(SemMetadata())
    except TopographError:
        raise
    except PermissionError as exc:
        raise TopographError(f"cannot read image {path}: permission denied", readable_fix(path)) from exc
    except Exception as exc:  # any decoder failure is the same user problem
        raise TopographError(f"cannot read image {path}: {exc}", fix) from exc


def readable_fix(path: Path) -> str:
    """The fix for an image that exists but cannot be opened for reading."""
    return f"make it readable (chmod u+r {path}) or copy the series to a folder you own"


MAX_IMAGE_PIXELS = 1 << 30
"""Largest image read (pixels; OpenCV's own decoding limit): 32 768 × 32 768."""


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) a file declares in its header, read without decoding the pixels (None if unknown).

    TIFF: the first page's shape (tifffile); PNG: the IHDR chunk; other formats: Pillow's lazy open.
    """
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                return int(page.imagewidth), int(page.imagelength)
        with open(path, "rb") as fh:
            head = fh.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        from PIL import Image

        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # only the header is read here
        try:
            with Image.open(path) as im:
                return im.size
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    except PermissionError as exc:
        raise TopographError(f"cannot read image {path}: permission denied", readable_fix(path)) from exc
    except Exception:  # noqa: BLE001 - an unreadable header is reported by the decoder, with its own message
        return None


def check_declared_size(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` before anything decodes it.

    Raises:
        TopographError: the declared size is too large.
    """
    size = declared_size(Path(path))
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise TopographError(
            f"{Path(path).name} declares {w}×{h} px ({w * h / 1e6:.0f} Mpx), more than topograph reads "
            f"({max_pixels / 1e6:.0f} Mpx)",
            "check the file (a damaged header?) or crop / downscale the image",
        )


def to_gray(array: np.ndarray, name: str = "") -> np.ndarray:
    """Collapse colour to grey: RGB(A) → BT.601 luma ``0.299 R + 0.587 G + 0.114 B``; grey+alpha → grey.

    Args:
        array: (H, W), (H, W, C) or channel-first (C, H, W) with C in 1..4.

    Returns:
        (H, W) array of the input dtype (integer luma is rounded, so the full-scale code is unchanged).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3:
        c = a.shape[2]
        if c in (1, 2):
            a = a[..., 0]
        elif c in (3, 4):
            luma = a[..., :3].astype(np.float64) @ _LUMA
            a = np.rint(luma).astype(a.dtype) if np.issubdtype(a.dtype, np.integer) else luma
        else:
            raise TopographError(f"image {name} has {c} channels", "save it as a grey or RGB image")
    if a.ndim != 2:
        raise TopographError(f"image {name} has shape {array.shape}, not a 2-D image", "save it as a single grey image")
    return a


def integer_full_scale(array: np.ndarray) -> float:
    """Full-scale code of an integer image: 255 for 8-bit, ``2**b − 1`` for the bits ``b`` the data uses (≥ 8).

    12- or 14-bit detectors store in 16-bit containers; scaling by 65535 would make them nearly black.
    """
    if array.dtype == np.uint8 or array.dtype == np.int8:
        return 255.0
    top = float(np.max(array)) if array.size else 0.0
    bits = max(8, math.ceil(math.log2(top + 1.0))) if top > 0 else 8
    return float(2**bits - 1)


def to_unit_float(array: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    """Grey image → float32 in [0, 1].

    Unsigned integers are divided by ``full_scale`` (default :func:`integer_full_scale`); floats already in
    [0, 1] are kept; anything else is min–max scaled.
    """
    a = np.asarray(array)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.unsignedinteger) and full_scale is not None:
        return np.clip(a.astype(np.float32) / np.float32(full_scale), 0.0, 1.0)
    if np.issubdtype(a.dtype, np.unsignedinteger):
        return np.clip(a.astype(np.float32) / np.float32(integer_full_scale(a)), 0.0, 1.0)
    f = a.astype(np.float64)
    finite = f[np.isfinite(f)]
    if finite.size == 0:
        return np.zeros(a.shape, dtype=np.float32)
    lo, hi = float(finite.min()), float(finite.max())
    if np.issubdtype(a.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return np.nan_to_num(f, nan=0.0).astype(np.float32)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return np.clip((np.nan_to_num(f, nan=lo) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


MAX_LEVEL_COUNT_SCALE = 65535
"""Integer full scales up to this (16 bits) count grey levels with ``np.bincount`` in :func:`grey_levels`."""


@dataclass(frozen=True)
class GreyLevels:
    """The distinct grey values of an image, their cumulative distribution and every pixel's level."""

    values: np.ndarray
    """(L,) float32 distinct values, ascending."""
    quantiles: np.ndarray
    """(L,) float64 fraction of pixels at or below each value."""
    pixel_level: np.ndarray
    """(H, W) integer index of every pixel's level: into ``values``, or with ``level_codes`` into a table
    indexed by the integer code."""
    level_codes: np.ndarray | None = None
    """(L,) integer code of each value (``value = code / full_scale``), None when ``pixel_level`` indexes
    ``values`` directly."""


def grey_levels(image: np.ndarray, full_scale: float | None = None) -> GreyLevels:
    """The grey levels of an (H, W) float32 image in [0, 1] (what :func:`match_histogram` maps).

    When every pixel is an integer code divided by ``full_scale`` (≤ :data:`MAX_LEVEL_COUNT_SCALE`) exactly as
    :func:`to_unit_float` divides it, the levels are counted per code (``np.bincount``, linear in pixels);
    otherwise the values are sorted (``np.unique``). Both give the same values and counts."""
    flat = image.reshape(-1)
    if full_scale is not None and 0 < full_scale <= MAX_LEVEL_COUNT_SCALE and float(full_scale).is_integer():
        codes = np.rint(flat * np.float32(full_scale)).astype(np.int32)
        np.clip(codes, 0, int(full_scale), out=codes)
        if np.array_equal(codes.astype(np.float32) / np.float32(full_scale), flat):
            counts = np.bincount(codes, minlength=int(full_scale) + 1)
            present = np.flatnonzero(counts)
            values = present.astype(np.float32) / np.float32(full_scale)
            quantiles = np.cumsum(counts[present]) / flat.size
            return GreyLevels(values, quantiles, codes.reshape(image.shape), present)
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return GreyLevels(values, np.cumsum(counts) / flat.size, inverse.reshape(image.shape))


def match_histogram(
    image: np.ndarray, reference: np.ndarray | GreyLevels, full_scale: float | None = None
) -> np.ndarray:
    """CDF (histogram) matching of ``image`` to ``reference``: ``I' = F_ref⁻¹(F_img(I))``, the mapping of
    ``skimage.exposure.match_histograms`` (each of the image's grey levels goes to the reference value at
    its quantile, linearly interpolated), the levels counted by :func:`grey_levels`.

    Args:
        image: (H, W) float32 in [0, 1].
        reference: (H', W') float32 in [0, 1], or its :func:`grey_levels` (computed once for a series).
        full_scale: the integer full scale the images were divided by (:func:`to_unit_float`), if any.

    Returns:
        (H, W) float32 in [0, 1] whose grey-level distribution follows the reference's.
    """
    ref = reference if isinstance(reference, GreyLevels) else grey_levels(reference, full_scale)
    src = grey_levels(image, full_scale)
    mapped = np.interp(src.quantiles, ref.quantiles, ref.values)
    if src.level_codes is not None:
        table = np.zeros(int(src.level_codes[-1]) + 1)
        table[src.level_codes] = mapped
        mapped = table
    return np.clip(mapped[src.pixel_level], 0.0, 1.0).astype(np.float32)


def _tilt_spread(items: Sequence[tuple[str, float]]) -> tuple[tuple[str, float], tuple[str, float]] | None:
    if len(items) < 2:
        return None
    lo = min(items, key=lambda t: t[1])
    hi = max(items, key=lambda t: t[1])
    return (lo, hi) if hi[1] - lo[1] > TILT_CONFLICT_DEG else None


def _resolve_metadata(
    names: list[str],
    readings: list[MetadataReading],
    sidecar: Sidecar | None,
    overrides: MetadataOverrides | None,
) -> list[SemMetadata]:
    """Merge file, sidecar and command-line metadata per image and reject contradictions."""
    n = len(names)
    out = []
    for i, (name, reading) in enumerate(zip(names, readings, strict=True)):
        cli = overrides.values_for(i, n) if overrides is not None else {}
        side, side_tilts = sidecar.values_for(name, i, n) if sidecar is not None else ({}, [])
        if "tilt_deg" not in cli:
            clash = _tilt_spread(side_tilts)
            if clash is None and "tilt_deg" not in side:
                clash = _tilt_spread(reading.candidates.get("tilt_deg", ()))
            if clash is not None:
                (la, va), (lb, vb) = clash
                raise TopographError(
                    f"contradictory tilt for {name}: {la} = {va:.2f}° but {lb} = {vb:.2f}°",
                    "give the tilts explicitly (command-line tilt list) or correct the sidecar/metadata",
                )
        out.append(merge_metadata(reading.metadata, side, cli, name=name))
    return out


def load_sem_series(
    inputs: Sequence[str | Path],
    overrides: MetadataOverrides | None = None,
    sidecar: Path | None = None,
    crop_rows: int | None = None,
    auto_crop: bool = True,
    histogram_match: bool = True,
    min_images: int = 2,
    *,
    crop_box: CropBox | None = None,
) -> ImageSet:
    """Load an SEM tilt series as an ordered, cropped, intensity-normalised :class:`ImageSet`.

    Args:
        inputs: image files (input order as given) or exactly one folder (natural file-name order).
        overrides: command-line metadata (beats the sidecar and the file tags).
        sidecar: a YAML/JSON sidecar with global and per-image metadata (beats the file tags).
        crop_rows: rows to remove from the bottom of every image (overrides metadata and detection).
        auto_crop: detect the data bar from the pixels when the metadata does not state its height.
        histogram_match: match every image's grey-level histogram to the first (reference) image.
        min_images: fewest images accepted.
        crop_box: keep only this region of every image (overrides ``crop_rows`` and detection).

    Returns:
        The series, ordered by tilt (ascending) when every tilt is known, else by natural file name.
        Pixels are float32 (H, W) in [0, 1]; each image's metadata records the source of every field.

    Raises:
        TopographError: missing path, folder without images, unreadable file, fewer than ``min_images``,
            images of different sizes, tilt list of the wrong length, contradictory tilts, or all known
            tilts equal.
    """
    paths = list_image_files(inputs)
    if len(paths) < min_images:
        raise TopographError(
            f"found {len(paths)} image(s) but at least {min_images} are needed for a tilt series",
            "add more images of the same specimen taken at different stage tilts",
        )
    names = [p.name for p in paths]
    side = load_sidecar(sidecar) if sidecar is not None else None
    if side is not None:
        side.check_names(names)

    raws, readings = [], []
    for p in paths:
        arr, reading = read_raw_image(p)
        raws.append(to_gray(arr, p.name))
        readings.append(reading)
    shapes = [r.shape for r in raws]
    if len(set(shapes)) > 1:
        listing = ", ".join(f"{n} {s[1]}x{s[0]}" for n, s in zip(names, shapes, strict=True))
        raise TopographError(
            f"the images differ in size ({listing})",
            "use images of one acquisition size (same store resolution), or resample them to one size first",
        )
    uint_scales = [integer_full_scale(r) for r in raws if np.issubdtype(r.dtype, np.unsignedinteger)]
    full_scale = max(uint_scales) if uint_scales else None
    floats = [to_unit_float(r, full_scale) for r in raws]
    del raws

    metadata = _resolve_metadata(names, readings, side, overrides)

    if crop_box is not None:
        removed = shapes[0][0] - crop_box.bottom
        logger.info(
            "keeping rows %d:%d and columns %d:%d of every image (explicit crop box)",
            crop_box.top,
            crop_box.bottom,
            crop_box.left,
            crop_box.right,
        )
        cropped = [apply_crop(f, box=crop_box) for f in floats]
    else:
        removed, how = choose_crop_rows(floats, names, [m.data_bar_rows for m in metadata], crop_rows, auto_crop)
        logger.debug("data-bar crop: %d rows (%s)", removed, how)
        cropped = [apply_crop(f, rows=removed) for f in floats]
    del floats

    order = list(range(len(paths)))
    tilts = [m.tilt_deg for m in metadata]
    if all(t is not None for t in tilts):
        span = max(tilts) - min(tilts)  # type: ignore[type-var]
        if span < MIN_TILT_RANGE_DEG:
            raise TopographError(
                f"all {len(tilts)} images have the same stage tilt ({tilts[0]:.3g}°), so there is no stereo baseline",
                "take the images at different stage tilts, or give the true tilts (tilt list or sidecar tilts_deg)",
            )
        order.sort(key=lambda i: (tilts[i], i))
        logger.info("series ordered by tilt: %s", ", ".join(f"{names[i]} ({tilts[i]:.2f}°)" for i in order))
    else:
        known = sum(t is not None for t in tilts)
        if known:
            logger.warning("tilt known for %d of %d images only; ordering by file name", known, len(tilts))
        order.sort(key=lambda i: natural_key(names[i]))
        logger.info("series ordered by file name: %s", ", ".join(names[i] for i in order))

    reference = grey_levels(cropped[order[0]], full_scale) if histogram_match else None
    images = []
    for i in order:
        pix = cropped[i]
        if reference is not None and i != order[0]:
            pix = match_histogram(pix, reference, full_scale)
        images.append(
            SemImage(
                name=names[i],
                pixels=np.ascontiguousarray(pix, dtype=np.float32),
                metadata=metadata[i],
                path=paths[i],
                crop_rows=int(removed),
            )
        )
    if histogram_match:
        logger.info("histograms matched to the reference image %s", names[order[0]])
    return ImageSet(tuple(images))


def _relative_spread(values: list[float]) -> float:
    return (max(values) - min(values)) / min(values)


def series_warnings(
    image_set: ImageSet,
    spread_tolerance: float = 0.01,
    tilt_step_range_deg: tuple[float, float] = (3.0, 15.0),
    max_field_to_wd: float = 0.1,
) -> list[str]:
    """Acquisition problems worth telling the user before a reconstruction.

    Args:
        image_set: the loaded series.
        spread_tolerance: relative spread of working distance / pixel size that is flagged (1 %).
        tilt_step_range_deg: tilt steps between neighbours outside this range are flagged.
        max_field_to_wd: field width / working distance above which the affine (parallel-projection)
            model is doubtful, since perspective then shifts points by a fraction ~ (field / WD) · height.

    Returns:
        Human-readable warnings (empty when nothing is suspicious).
    """
    warnings: list[str] = []
    mds = [im.metadata for im in image_set.images]
    for key, label, unit in (("working_distance_mm", "working distance", "mm"), ("pixel_size_um", "pixel size", "µm")):
        vals = [getattr(m, key) for m in mds if getattr(m, key) is not None]
        if len(vals) >= 2 and _relative_spread(vals) > spread_tolerance:
            warnings.append(
                f"{label} differs across the series ({min(vals):.4g}–{max(vals):.4g} {unit}, "
                f"{100 * _relative_spread(vals):.1f} %); keep it constant while tilting"
            )
    tilts = image_set.tilts_deg
    if len(tilts) >= 2 and all(t is not None for t in tilts):
        lo, hi = tilt_step_range_deg
        for a, b, ta, tb in zip(image_set.names, image_set.names[1:], tilts, tilts[1:], strict=False):
            step = abs(tb - ta)  # type: ignore[operator]
            if step < lo:
                warnings.append(f"tilt step {a} → {b} is only {step:.2f}° (< {lo:g}°): small parallax, noisy heights")
            elif step > hi:
                warnings.append(
                    f"tilt step {a} → {b} is {step:.2f}° (> {hi:g}°): views may look too different to match"
                )
    ratios = []
    for im in image_set.images:
        m = im.metadata
        if m.pixel_size_um is not None and m.working_distance_mm is not None:
            field_mm = m.pixel_size_um * im.shape[1] * 1e-3
            ratios.append((field_mm / m.working_distance_mm, field_mm, m.working_distance_mm))
    if ratios:
        ratio, field_mm, wd = max(ratios)
        if ratio > max_field_to_wd:
            warnings.append(
                f"field of view {field_mm:.3g} mm is {ratio:.2f} of the working distance {wd:.3g} mm "
                f"(> {max_field_to_wd:g}): perspective is not negligible, the affine camera model is doubtful"
            )
    if len(image_set) >= 2:  # noqa: PLR2004 - a focus comparison needs a second image
        warnings += blur_warnings(image_set.names, relative_sharpness(image_set.images))
    return warnings


def describe_series(image_set: ImageSet) -> list[dict[str, Any]]:
    """One row per image for a table shown before running.

    Returns:
        Dicts with ``name``, ``size`` ("WxH" px after cropping), ``crop_rows``, ``tilt_deg``,
        ``pixel_size_um``, ``working_distance_mm``, ``vendor``, ``source`` ("field=origin, …") and
        ``sharpness`` (focus measure relative to the series median, see :mod:`topograph.io.image_quality`).
    """
    rows = []
    focus = relative_sharpness(image_set.images)
    for im, rel_focus in zip(image_set.images, focus, strict=True):
        m = im.metadata
        rows.append(
            {
                "name": im.name,
                "size": f"{im.shape[1]}x{im.shape[0]}",
                "crop_rows": im.crop_rows,
                "tilt_deg": m.tilt_deg,
                "pixel_size_um": m.pixel_size_um,
                "working_distance_mm": m.working_distance_mm,
                "vendor": m.vendor,
                "source": ", ".join(f"{k}={v}" for k, v in sorted(m.source.items())),
                "sharpness": round(float(rel_focus), 3),
            }
        )
    return rows
