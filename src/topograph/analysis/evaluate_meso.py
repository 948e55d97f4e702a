"""Ground-truth evaluation of mesoscopic height maps from files: the paper's Table 1 in the result's frame.

A result (height map + orthomosaic, co-registered, in its own frame and pixel size) is compared with a
truth made of a region-label image, the true height of every region and — unless the labels were drawn on
the result itself — an image of the scene in the label frame ("truth ortho"):

1. :func:`register_ortho`: the similarity (then affine) ``x_result = A x_truth + b`` between truth ortho
   and result ortho: SIFT matches + RANSAC (``cv2.estimateAffinePartial2D``), refined by ECC
   (``cv2.findTransformECC``, Evangelidis & Psarakis 2008).
2. :func:`map_labels`: the truth labels resampled into the result frame (nearest neighbour).
3. Table 1 (:func:`evaluate_regions`, Zhou et al. 2021; the one implementation, also used by
   :mod:`topograph.analysis.evaluate_meso_synthetic`): regions eroded by
   ``erode_px`` result pixels; per-region mean / standard deviation; the global shift
   ``Δh = mean(h_true − h_est)``; accuracy ``|mean + Δh − h_true|``; precision = std; the optimal rescale
   ``cov(h_true, h_est) / var(h_est)``; and the same table after that rescale (the paper's "CM (scaled)").
4. Coverage: the fraction of labelled truth pixels whose place in the result has a finite height.

Truth formats (docs/ground-truth.md): a ``topograph synth meso`` dataset (its ``truth/`` folder) or a
hand-made folder with ``labels.png`` + ``regions.csv`` (+ ``ortho.png``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topograph.errors import TopographError

log = logging.getLogger("topograph")

IGNORE_LABEL = -1
"""Label of result pixels outside the truth raster (never a region)."""

_ORTHO_NAMES = ("ortho.png", "ortho.jpg", "ortho.tif", "ortho.tiff", "texture.png", "orthomosaic.png")
_LABEL_NAMES = ("labels.png", "labels.tif", "labels.tiff")


@dataclass(frozen=True)
class MesoTruth:
    """Ground truth of a mesoscopic scene in its own raster ("label frame").

    ``labels`` (H, W) int32 region labels (values absent from ``region_heights_um`` are ignored);
    ``region_heights_um`` true height of each region, µm; ``ortho`` (H, W, 3) float32 in [0, 1] image of
    the scene in the label frame, or None when the labels were drawn on the result's own orthomosaic;
    ``texel_mm`` the label raster's pixel size when known.
    """

    labels: np.ndarray
    region_heights_um: dict[int, float]
    region_names: dict[int, str] = field(default_factory=dict)
    ortho: np.ndarray | None = None
    texel_mm: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.labels.ndim != 2:
            raise ValueError(f"MesoTruth.labels must be 2-D, got {self.labels.shape}")
        if self.ortho is not None and self.ortho.shape[:2] != self.labels.shape:
            raise TopographError(
                f"truth ortho {self.ortho.shape[1]}×{self.ortho.shape[0]} px and labels "
                f"{self.labels.shape[1]}×{self.labels.shape[0]} px differ in size",
                "draw the labels on the truth ortho image itself (same pixel grid)",
            )


@dataclass(frozen=True)
class MesoResult:
    """A reconstruction to evaluate: ``height`` (H, W) float32 (NaN = no estimate) in ``height_unit`` and
    the co-registered ``ortho`` (H, W, 3) float32 in [0, 1] (None when not given)."""

    height: np.ndarray
    ortho: np.ndarray | None = None
    height_unit: str = "um"
    source: str = ""

    def __post_init__(self) -> None:
        if self.height.ndim != 2:
            raise ValueError(f"MesoResult.height must be 2-D, got {self.height.shape}")
        if self.ortho is not None and self.ortho.shape[:2] != self.height.shape:
            raise TopographError(
                f"orthomosaic {self.ortho.shape[1]}×{self.ortho.shape[0]} px and height map "
                f"{self.height.shape[1]}×{self.height.shape[0]} px differ in size",
                "give the orthomosaic and height map of the same run",
            )


@dataclass(frozen=True)
class OrthoRegistration:
    """``matrix`` (2, 3): truth pixel ``(x, y)`` → result pixel ``A (x, y) + b``.

    ``method``: "identity", "sift" or "sift+ecc"; ``n_matches`` / ``n_inliers`` of the feature stage;
    ``ncc``: normalised cross-correlation of the result ortho and the warped truth ortho over the overlap.
    """

    matrix: np.ndarray
    method: str
    n_matches: int = 0
    n_inliers: int = 0
    ncc: float = float("nan")

    @property
    def scale(self) -> float:
        """Result pixels per truth pixel (``√|det A|``)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def rotation_deg(self) -> float:
        a = self.matrix[:, :2]
        return float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "matrix_truth_to_result": self.matrix.tolist(),
            "scale_result_px_per_truth_px": self.scale,
            "rotation_deg": self.rotation_deg,
            "n_matches": self.n_matches,
            "n_inliers": self.n_inliers,
            "ncc": self.ncc,
        }


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------


def _read_image(path: Path) -> np.ndarray:
    """Any 8/16-bit or float image as float32 in [0, 1], (H, W) or (H, W, 3) RGB."""
    import cv2

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(path)
    else:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 3:
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    if img is None:
        raise TopographError(f"cannot read image {path}", "give a PNG, JPEG or TIFF file")
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] > 3:
        img = img[..., :3]
    if np.issubdtype(img.dtype, np.integer):
        return (img.astype(np.float32) / float(np.iinfo(img.dtype).max)).astype(np.float32)
    img = img.astype(np.float32)
    finite = img[np.isfinite(img)]
    if finite.size and finite.max() > 1.0:
        img = img / float(finite.max())
    return np.nan_to_num(img, nan=0.0)


def _read_labels(path: Path) -> np.ndarray:
    import cv2

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        lab = tifffile.imread(path)
    else:
        lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise TopographError(f"cannot read label image {path}", "give an 8- or 16-bit PNG of integer labels")
    lab = np.asarray(lab)
    if lab.ndim == 3:
        if not (np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])):
            raise TopographError(
                f"{path} is a colour image", "save the labels as a greyscale image whose values are the region labels"
            )
        lab = lab[..., 0]
    if not np.issubdtype(lab.dtype, np.integer):
        raise TopographError(f"{path} does not hold integer labels", "save the labels as an 8- or 16-bit PNG")
    return lab.astype(np.int32)


def read_regions_csv(path: Path) -> tuple[dict[int, float], dict[int, str]]:
    """Read ``regions.csv``: a header with ``label`` and ``height_um`` (optionally ``name``), one row per region.

    Returns:
        ``(heights_um, names)`` keyed by label.
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise TopographError(f"cannot read {path}: {exc}", "check the path") from exc
    if not rows or not {"label", "height_um"} <= {k.strip() for k in rows[0]}:
        raise TopographError(
            f"{path} needs a header row with the columns label,height_um (and optionally name)",
            "e.g. 'label,name,height_um' then '0,background,0' and '1,card 1,295'",
        )
    heights: dict[int, float] = {}
    names: dict[int, str] = {}
    for i, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        try:
            lab = int(row["label"])
            h = float(row["height_um"])
        except ValueError as exc:
            raise TopographError(
                f"{path} line {i}: label must be an integer and height_um a number", "fix that row"
            ) from exc
        if lab in heights:
            raise TopographError(f"{path} line {i}: label {lab} is listed twice", "give each region one row")
        heights[lab] = h
        names[lab] = row.get("name") or str(lab)
    if len(heights) < 2:
        raise TopographError(f"{path} lists {len(heights)} region(s)", "Table 1 needs at least two regions")
    return heights, names


def _truth_dir(path: Path) -> Path:
    path = Path(path)
    if path.is_file():
        path = path.parent
    for cand in (path / "truth", path):
        if (cand / "regions.csv").is_file():
            return cand
    raise TopographError(
        f"no regions.csv under {path}",
        "point --truth to a `topograph synth meso` dataset or a folder with labels.png + regions.csv",
    )


def load_meso_truth(path: str | Path) -> MesoTruth:
    """Read a mesoscopic ground truth (synthetic dataset or hand-made folder; docs/ground-truth.md).

    Args:
        path: the dataset folder, its ``truth/`` folder, or a hand-made folder holding ``labels.png``
            (integer region labels), ``regions.csv`` (``label,height_um[,name]``) and optionally
            ``ortho.png`` (the scene image the labels were drawn on) and ``truth.json`` (raster pixel size).

    Returns:
        The :class:`MesoTruth`.
    """
    tdir = _truth_dir(Path(path))
    label_path = next((tdir / n for n in _LABEL_NAMES if (tdir / n).is_file()), None)
    if label_path is None:
        raise TopographError(f"no labels.png in {tdir}", "add the region-label image (integer value per region)")
    labels = _read_labels(label_path)
    heights, names = read_regions_csv(tdir / "regions.csv")
    present = set(np.unique(labels).tolist())
    missing = sorted(set(heights) - present)
    if missing:
        log.warning("regions %s of regions.csv do not appear in %s", missing, label_path.name)
    ortho_path = next((tdir / n for n in _ORTHO_NAMES if (tdir / n).is_file()), None)
    ortho = _as_rgb(_read_image(ortho_path)) if ortho_path is not None else None
    texel = None
    if (tdir / "truth.json").is_file():
        try:
            doc = json.loads((tdir / "truth.json").read_text(encoding="utf-8"))
            texel = float(doc.get("raster", {}).get("pixel_size_mm")) if doc.get("raster") else None
        except (ValueError, TypeError):
            texel = None
    return MesoTruth(labels, heights, names, ortho, texel, str(tdir))


def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _height_unit_factor_um(unit: str | None) -> float | None:
    return {"um": 1.0, "µm": 1.0, "micrometre": 1.0, "mm": 1000.0, "nm": 1e-3, "m": 1e6}.get((unit or "").strip())


def _find_in_run(run_dir: Path, patterns: tuple[str, ...]) -> Path | None:
    for pat in patterns:
        found = sorted(p for p in run_dir.glob(pat) if not p.name.startswith("."))
        if found:
            return found[0]
    return None


def load_meso_result(
    height: str | Path | None = None, ortho: str | Path | None = None, run_dir: str | Path | None = None
) -> MesoResult:
    """Read a result height map (float TIFF) and its orthomosaic, given directly or found in a run folder.

    The height unit comes from the TIFF's ImageDescription JSON (``{"unit": "um"}`` as written by
    topograph); heights in mm/nm/m are converted to µm; an unknown unit is kept (accuracies then are in
    that unit and only the rescale factor is meaningful).
    """
    if run_dir is not None:
        rd = Path(run_dir)
        if not rd.is_dir():
            raise TopographError(f"run folder {rd} not found", "give the output folder of `topograph meso`")
        height = height or _find_in_run(rd, ("height_um.tif", "height_map.tif", "height*.tif", "*height*.tif"))
        ortho = ortho or _find_in_run(rd, ("ortho*.png", "ortho*.tif", "*ortho*.png", "*ortho*.jpg", "mosaic*.png"))
        if height is None:
            raise TopographError(f"no height map (height*.tif) in {rd}", "pass --height explicitly")
    if height is None:
        raise TopographError("no result height map given", "pass --height H.tif (and --ortho O.png) or a run folder")
    hp = Path(height)
    if not hp.is_file():
        raise TopographError(f"height map {hp} not found", "check the path")
    import tifffile

    from topograph.io.exports import read_raster_facts

    with tifffile.TiffFile(hp) as tf:
        h = tf.asarray().astype(np.float32)
    if h.ndim == 3:
        h = h[..., 0] if h.shape[2] <= 4 else h[0]
    meta = read_raster_facts(hp)  # topograph's JSON (ImageJ Info or the description)
    unit = str(meta.get("unit", meta.get("height_unit", "um")))
    factor = _height_unit_factor_um(unit)
    if factor is None:
        log.warning("height map %s is in '%s', not a length unit: only the rescale factor is meaningful", hp, unit)
    else:
        h = h * np.float32(factor)
        unit = "um"
    ort = None
    if ortho is not None:
        op = Path(ortho)
        if not op.is_file():
            raise TopographError(f"orthomosaic {op} not found", "check the path")
        ort = _as_rgb(_read_image(op))
    return MesoResult(h, ort, unit, str(hp))


# ----------------------------------------------------------------------------------------------------
# Registration and label mapping
# ----------------------------------------------------------------------------------------------------


def _gray_u8(img: np.ndarray) -> np.ndarray:
    g = img.mean(axis=2) if img.ndim == 3 else img
    g = np.nan_to_num(g.astype(np.float32), nan=0.0)
    lo, hi = np.percentile(g, [0.5, 99.5])
    return np.clip((g - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


def _downscale(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    f = min(1.0, max_side / max(img.shape[:2]))
    if f >= 1.0:
        return img, 1.0
    return cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA), f


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 100:
        return float("nan")
    x = a[mask].astype(float) - a[mask].mean()
    y = b[mask].astype(float) - b[mask].mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def register_ortho(
    result_ortho: np.ndarray,
    truth_ortho: np.ndarray,
    *,
    refine: bool = True,
    max_side: int = 1600,
    min_inliers: int = 12,
) -> OrthoRegistration:
    """Register the truth ortho to the result ortho: ``x_result = A x_truth + b``.

    SIFT keypoints on both (grey, contrast-stretched, at most ``max_side`` px per side), Lowe ratio 0.75,
    RANSAC similarity (``cv2.estimateAffinePartial2D``, threshold 1 % of the image side); then, with
    ``refine``, ECC maximisation over an affine warp started from it (``cv2.findTransformECC``), kept only
    if it raises the correlation.

    Args:
        result_ortho: (H, W[, 3]) result orthomosaic, float in [0, 1] (NaN/0 outside the mosaic).
        truth_ortho: (h, w[, 3]) truth image in the label frame.
        refine: run the ECC refinement.
        max_side: images are downscaled to at most this many pixels per side for matching.
        min_inliers: fewest RANSAC inliers accepted.

    Returns:
        The :class:`OrthoRegistration` (matrix in full-resolution pixels).

    Raises:
        TopographError: too few consistent matches (not the same scene, or too little texture).
    """
    import cv2

    res_g, fr = _downscale(_gray_u8(result_ortho), max_side)
    tru_g, ft = _downscale(_gray_u8(truth_ortho), max_side)
    sift = cv2.SIFT_create(nfeatures=6000)
    kr, dr = sift.detectAndCompute(res_g, None)
    kt, dt = sift.detectAndCompute(tru_g, None)
    if dr is None or dt is None or len(kr) < min_inliers or len(kt) < min_inliers:
        raise TopographError(
            "too few features to register the result orthomosaic to the truth image",
            "check that both show the same scene, or draw the labels on the result's orthomosaic",
        )
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(dt, dr, k=2)
    good = [m for m, *rest in pairs if rest and m.distance < 0.75 * rest[0].distance]
    if len(good) < min_inliers:
        raise TopographError(
            f"only {len(good)} feature matches between the result orthomosaic and the truth image",
            "check that both show the same scene, or draw the labels on the result's orthomosaic",
        )
    pt = np.float32([kt[m.queryIdx].pt for m in good]) / ft
    pr = np.float32([kr[m.trainIdx].pt for m in good]) / fr
    thr = 0.01 * max(result_ortho.shape[:2])
    m, inl = cv2.estimateAffinePartial2D(
        pt, pr, method=cv2.RANSAC, ransacReprojThreshold=thr, maxIters=5000, confidence=0.999
    )
    n_inl = int(inl.sum()) if inl is not None else 0
    if m is None or n_inl < min_inliers:
        raise TopographError(
            f"no consistent similarity between the result orthomosaic and the truth image ({n_inl} inliers)",
            "check that both show the same scene, or draw the labels on the result's orthomosaic",
        )
    # refit on inliers by least squares
    m_ls, _ = cv2.estimateAffinePartial2D(pt[inl[:, 0] > 0], pr[inl[:, 0] > 0], method=cv2.LMEDS)
    matrix = (m_ls if m_ls is not None else m).astype(np.float64)
    reg = OrthoRegistration(matrix, "sift", len(good), n_inl, _registration_ncc(result_ortho, truth_ortho, matrix))
    if refine:
        reg = _refine_ecc(result_ortho, truth_ortho, reg, max_side)
    log.info(
        "registered the truth to the result: scale %.4f, rotation %.2f°, %d/%d inliers, NCC %.3f (%s)",
        reg.scale,
        reg.rotation_deg,
        reg.n_inliers,
        reg.n_matches,
        reg.ncc,
        reg.method,
    )
    return reg


def _registration_ncc(result_ortho: np.ndarray, truth_ortho: np.ndarray, matrix: np.ndarray) -> float:
    import cv2

    rg = _gray_u8(result_ortho).astype(np.float32)
    tg = _gray_u8(truth_ortho).astype(np.float32)
    h, w = rg.shape
    warped = cv2.warpAffine(tg, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=np.nan)
    valid = np.isfinite(warped) & (rg > 0)
    if result_ortho.ndim == 3:
        valid &= np.isfinite(result_ortho).all(axis=2)
    return _ncc(rg, np.nan_to_num(warped), valid)


def _refine_ecc(
    result_ortho: np.ndarray, truth_ortho: np.ndarray, reg: OrthoRegistration, max_side: int
) -> OrthoRegistration:
    """ECC affine refinement at ≤ ``max_side`` px: maximises the correlation of the truth and the warped result.

    ``findTransformECC(template=truth, input=result)`` finds ``W`` with ``result(W x) ≈ truth(x)``, i.e. the
    truth → result map itself; the result's empty (black) mosaic border is masked out.
    """
    import cv2

    res, fr = _downscale(_gray_u8(result_ortho).astype(np.float32) / 255.0, max_side)
    tru, ft = _downscale(_gray_u8(truth_ortho).astype(np.float32) / 255.0, max_side)
    # in downsampled pixels: x_r = fr (A x_t / ft + b)
    w0 = np.hstack([reg.matrix[:, :2] * (fr / ft), reg.matrix[:, 2:] * fr])
    mask = (res > 0).astype(np.uint8)
    try:
        _, w = cv2.findTransformECC(
            tru,
            res,
            w0.astype(np.float32),
            cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6),
            mask,
            5,
        )
    except cv2.error as exc:
        log.debug("ECC refinement failed (%s); keeping the feature registration", exc)
        return reg
    w = w.astype(np.float64)
    matrix = np.hstack([w[:, :2] * (ft / fr), w[:, 2:] / fr])
    ncc = _registration_ncc(result_ortho, truth_ortho, matrix)
    if not np.isfinite(ncc) or (np.isfinite(reg.ncc) and ncc < reg.ncc):
        return reg
    return OrthoRegistration(matrix, "sift+ecc", reg.n_matches, reg.n_inliers, ncc)


def identity_registration() -> OrthoRegistration:
    """The registration of labels drawn on the result's own orthomosaic."""
    return OrthoRegistration(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "identity")


def map_labels(labels: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Truth labels in the result frame: ``out(A x + b) = labels(x)`` by nearest neighbour.

    Args:
        labels: (h, w) int labels in the truth frame.
        matrix: (2, 3) truth → result pixels.
        shape: (H, W) of the result.

    Returns:
        (H, W) int32 labels; :data:`IGNORE_LABEL` outside the truth raster.
    """
    import cv2

    return cv2.warpAffine(
        np.ascontiguousarray(labels, dtype=np.int32),
        np.asarray(matrix, dtype=np.float64),
        (int(shape[1]), int(shape[0])),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=IGNORE_LABEL,
    )


def coverage(
    labels: np.ndarray, region_ids: list[int], valid_result: np.ndarray, matrix: np.ndarray
) -> tuple[float, dict[int, float]]:
    """Fraction of the labelled truth pixels whose place in the result has a height.

    ``valid_result`` (H, W) bool is pulled back into the truth frame (``v(x) = valid(A x + b)``).

    Returns:
        ``(overall, per_region)`` fractions in [0, 1].
    """
    import cv2

    pulled = cv2.warpAffine(
        valid_result.astype(np.uint8),
        np.asarray(matrix, dtype=np.float64),
        (labels.shape[1], labels.shape[0]),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    ).astype(bool)
    per: dict[int, float] = {}
    hit = total = 0
    for lab in region_ids:
        m = labels == lab
        n = int(m.sum())
        if n == 0:
            continue
        k = int(pulled[m].sum())
        per[int(lab)] = k / n
        hit += k
        total += n
    return (hit / total if total else 0.0), per


# ----------------------------------------------------------------------------------------------------
# Table 1
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionResult:
    """One region of Table 1 (heights in the height map's unit)."""

    label: int
    name: str
    true_height: float
    mean: float
    std: float
    n_pixels: int
    accuracy: float


@dataclass(frozen=True)
class Table1Result:
    """Table-1 summary: per-region results, the global shift, mean accuracy/precision and rescale."""

    regions: tuple[RegionResult, ...]
    shift: float
    mean_accuracy: float
    mean_precision: float
    rescale: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "shift": self.shift,
            "mean_accuracy": self.mean_accuracy,
            "mean_precision": self.mean_precision,
            "rescale": self.rescale,
            "regions": [r.__dict__ for r in self.regions],
        }


def evaluate_regions(
    labels: np.ndarray,
    region_heights: Mapping[int, float],
    height: np.ndarray,
    names: Mapping[int, str] | None = None,
    erode_px: int = 0,
    min_pixels: int = 10,
) -> Table1Result:
    """Table-1 accuracy and precision of an estimated height map against labelled regions.

    Args:
        labels: (H, W) integer region labels in the same frame as ``height`` (labels not in
            ``region_heights`` are ignored).
        region_heights: true height of each label.
        height: (H, W) estimated heights (NaN = no estimate).
        names: optional label names.
        erode_px: shrink every region by this many pixels first (keeps edges out of the statistics).
        min_pixels: regions with fewer valid pixels are skipped.

    Returns:
        The per-region statistics and the summary.

    Raises:
        ValueError: shapes differ, or fewer than two regions have enough pixels.
    """
    import cv2

    if labels.shape != height.shape:
        raise ValueError(f"labels {labels.shape} and height {height.shape} must have one shape")
    kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8) if erode_px > 0 else None
    stats = []
    for lab, h_true in sorted(region_heights.items()):
        mask = (labels == lab).astype(np.uint8)
        if kernel is not None:
            mask = cv2.erode(mask, kernel)
        vals = height[(mask > 0) & np.isfinite(height)]
        if vals.size < min_pixels:
            continue
        stats.append((int(lab), float(h_true), float(vals.mean()), float(vals.std()), int(vals.size)))
    if len(stats) < 2:
        raise ValueError("fewer than two regions have enough valid pixels for the Table-1 evaluation")
    h_true = np.array([s[1] for s in stats])
    h_est = np.array([s[2] for s in stats])
    shift = float(np.mean(h_true - h_est))
    acc = np.abs(h_est + shift - h_true)
    var = float(np.var(h_est))
    rescale = float(np.mean((h_true - h_true.mean()) * (h_est - h_est.mean())) / var) if var > 0 else float("nan")
    regions = tuple(
        RegionResult(
            label=s[0],
            name=(names or {}).get(s[0], str(s[0])),
            true_height=s[1],
            mean=s[2],
            std=s[3],
            n_pixels=s[4],
            accuracy=float(a),
        )
        for s, a in zip(stats, acc, strict=True)
    )
    return Table1Result(
        regions=regions,
        shift=shift,
        mean_accuracy=float(acc.mean()),
        mean_precision=float(np.mean([s[3] for s in stats])),
        rescale=rescale,
    )


@dataclass(frozen=True)
class RescaledTable1:
    """Table 1 of a height map as is (``table``) and after the optimal rescale ``table.rescale``
    (``rescaled``; None when the rescale is undefined, e.g. a flat map), heights in µm."""

    table: Table1Result
    rescaled: Table1Result | None

    def to_dict(self) -> dict[str, Any]:
        """``{"shift_um", "mean_accuracy_um", "mean_precision_um", "rescale", "rescaled": {...}, "regions":
        [...]}``; each region: ``label``, ``name``, ``true_height_um``, ``mean_um``, ``accuracy_um``,
        ``precision_um``, ``n_pixels`` and accuracy / precision after the rescale."""
        base, scaled = self.table, self.rescaled
        scaled_by_label = {r.label: r for r in scaled.regions} if scaled is not None else {}
        regions = []
        for r in base.regions:
            s = scaled_by_label.get(r.label)
            regions.append(
                {
                    "label": r.label,
                    "name": r.name,
                    "true_height_um": r.true_height,
                    "mean_um": r.mean,
                    "accuracy_um": r.accuracy,
                    "precision_um": r.std,
                    "n_pixels": r.n_pixels,
                    "rescaled_accuracy_um": s.accuracy if s is not None else None,
                    "rescaled_precision_um": s.std if s is not None else None,
                }
            )
        return {
            "shift_um": base.shift,
            "mean_accuracy_um": base.mean_accuracy,
            "mean_precision_um": base.mean_precision,
            "rescale": base.rescale,
            "rescaled": {
                "mean_accuracy_um": scaled.mean_accuracy if scaled is not None else None,
                "mean_precision_um": scaled.mean_precision if scaled is not None else None,
            },
            "regions": regions,
        }


def table1(
    labels: np.ndarray,
    region_heights_um: Mapping[int, float],
    height_um: np.ndarray,
    names: Mapping[int, str] | None = None,
    *,
    erode_px: int = 3,
    min_pixels: int = 10,
) -> RescaledTable1:
    """Table-1 statistics of a height map against labels in its frame, as is and after the optimal rescale.

    :func:`evaluate_regions` twice: on ``h`` and on ``a · h`` with ``a = cov(h_true, h_est) / var(h_est)``
    from the first pass (the paper's "CM (scaled)" columns).

    Raises:
        TopographError: fewer than two regions have ``min_pixels`` valid pixels.
    """
    try:
        base = evaluate_regions(
            labels, dict(region_heights_um), height_um, names, erode_px=erode_px, min_pixels=min_pixels
        )
    except ValueError as exc:
        raise TopographError(
            f"Table 1 cannot be computed: {exc}",
            "check the registration (NCC) and that the result covers the regions; lower --erode-px",
        ) from exc
    scaled = None
    if np.isfinite(base.rescale):
        scaled = evaluate_regions(
            labels, dict(region_heights_um), base.rescale * height_um, names, erode_px=erode_px, min_pixels=min_pixels
        )
    return RescaledTable1(base, scaled)


@dataclass(frozen=True)
class MesoEvaluation:
    """Outcome of :func:`evaluate_meso`: the registration, the coverage of the labelled truth pixels (overall
    and per region label) and Table 1; ``result`` / ``truth`` the sources, ``height_unit``, ``erode_px``."""

    result: str
    truth: str
    height_unit: str
    erode_px: int
    registration: OrthoRegistration
    coverage: float
    coverage_per_region: dict[int, float]
    table1: RescaledTable1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``registration``, ``coverage``, ``coverage_per_region``, ``table1``
        (:meth:`RescaledTable1.to_dict`), ``height_unit``, ``erode_px``, ``result`` and ``truth``."""
        return {
            "result": self.result,
            "truth": self.truth,
            "height_unit": self.height_unit,
            "erode_px": self.erode_px,
            "registration": self.registration.to_dict(),
            "coverage": self.coverage,
            "coverage_per_region": {str(k): v for k, v in self.coverage_per_region.items()},
            "table1": self.table1.to_dict(),
        }


def evaluate_meso(
    result: MesoResult,
    truth: MesoTruth,
    *,
    erode_px: int = 3,
    refine: bool = True,
    registration: OrthoRegistration | None = None,
) -> MesoEvaluation:
    """Register a result to the truth, map the labels into the result frame, and compute Table 1 and coverage.

    Args:
        result: the result height map (+ orthomosaic).
        truth: the ground truth.
        erode_px: erosion of every region in result pixels before the statistics.
        refine: ECC refinement of the registration.
        registration: skip the registration and use this one.

    Returns:
        The evaluation (:meth:`MesoEvaluation.to_dict` for JSON).
    """
    if registration is None:
        if truth.ortho is None:
            if truth.labels.shape != result.height.shape:
                raise TopographError(
                    f"the truth has no ortho image and its labels ({truth.labels.shape[1]}×{truth.labels.shape[0]} px) "
                    f"are not on the result's grid ({result.height.shape[1]}×{result.height.shape[0]} px)",
                    "add ortho.png (the image the labels were drawn on) to the truth folder",
                )
            registration = identity_registration()
        else:
            if result.ortho is None:
                raise TopographError(
                    "the result's orthomosaic is needed to register it to the truth",
                    "pass --ortho O.png or a run folder",
                )
            registration = register_ortho(result.ortho, truth.ortho, refine=refine)
    labels_r = map_labels(truth.labels, registration.matrix, result.height.shape)
    region_ids = sorted(truth.region_heights_um)
    cov, cov_per = coverage(truth.labels, region_ids, np.isfinite(result.height), registration.matrix)
    tab = table1(labels_r, truth.region_heights_um, result.height, truth.region_names, erode_px=erode_px)
    return MesoEvaluation(
        result=result.source,
        truth=truth.source,
        height_unit=result.height_unit,
        erode_px=int(erode_px),
        registration=registration,
        coverage=cov,
        coverage_per_region={int(k): v for k, v in cov_per.items()},
        table1=tab,
    )


def rasterize_points(xy_px: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Average point values into the pixels of a raster (NaN where no point falls).

    Used to evaluate a sparse cloud (e.g. a peer method's points mapped into the label frame) with the same
    Table-1 code as a dense height map.

    Args:
        xy_px: (N, 2) pixel coordinates ``(x, y)`` in the raster (rounded to the nearest pixel).
        values: (N,) values (e.g. heights in µm).
        shape: (H, W) of the raster.

    Returns:
        (H, W) float32 mean value per pixel.
    """
    xy = np.rint(np.asarray(xy_px, dtype=float)).astype(np.int64)
    v = np.asarray(values, dtype=float)
    h, w = shape
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h) & np.isfinite(v)
    flat = xy[ok, 1] * w + xy[ok, 0]
    s = np.bincount(flat, weights=v[ok], minlength=h * w)
    n = np.bincount(flat, minlength=h * w)
    out = np.full(h * w, np.nan, dtype=np.float64)
    out[n > 0] = s[n > 0] / n[n > 0]
    return out.reshape(h, w).astype(np.float32)
