"""Small PNG previews of the input images (``thumbnails/*.png`` of a run folder).

The report shows them in its "Inputs" section. File names are ``NNN_<name>.png`` where ``NNN`` is the
image's index in the series, so the report can pair each preview with its row of ``series.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from topograph.io.atomic import atomic_path

log = logging.getLogger("topograph")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def thumbnail_name(index: int, name: str) -> str:
    """File name of the preview of image ``index`` called ``name``: ``"003_Quarz_04.png"``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` so the name is safe on
    every file system; the index prefix keeps names unique.
    """
    stem = _UNSAFE.sub("_", Path(name).stem).strip("._") or "image"
    return f"{index:03d}_{stem[:60]}.png"


def thumbnail_pixels(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Downscale one image to at most ``max_side`` pixels on its longer side, as 8-bit.

    Area averaging (``cv2.INTER_AREA``) is used, so a thumbnail's pixel is the mean of the input
    pixels it covers; images already small enough are not enlarged.

    Args:
        image: (H, W) grey or (H, W, 3) RGB, float in [0, 1] (values outside are clipped, NaN → 0)
            or uint8.
        max_side: longest side of the result, pixels.

    Returns:
        (h, w) or (h, w, 3) uint8 with ``max(h, w) <= max_side`` and the input's aspect ratio.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ValueError(f"thumbnail input must be (H, W) grey or (H, W, 3) RGB, got shape {a.shape}")
    if a.ndim == 3:
        a = a[:, :, :3]
    if a.dtype == np.uint8:
        img = a.astype(np.float32) / 255.0
    else:
        img = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_thumbnails(
    images: Sequence[np.ndarray], names: Sequence[str], out_dir: str | Path, max_side: int = 256
) -> list[Path]:
    """Write one PNG preview per image into ``out_dir`` (atomically, one file at a time).

    Args:
        images: per image, (H, W) grey or (H, W, 3) RGB float in [0, 1] (or uint8).
        names: image names (same length as ``images``); used in the file names via :func:`thumbnail_name`.
        out_dir: folder to write into, normally ``RUN_DIR / "thumbnails"`` (created if needed).
        max_side: longest side of each preview, pixels.

    Returns:
        The written paths, in input order.
    """
    if len(images) != len(names):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (image, name) in enumerate(zip(images, names, strict=True)):
        pix = thumbnail_pixels(image, max_side)
        if pix.ndim == 3:
            pix = cv2.cvtColor(pix, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png", pix)
        if not ok:
            raise RuntimeError(f"PNG encoding of the thumbnail of {name} failed")
        path = out / thumbnail_name(k, name)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        paths.append(path)
    log.debug("wrote %d thumbnails to %s", len(paths), out)
    return paths
