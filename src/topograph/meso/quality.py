"""Quality gates: the run's own evidence that registration, dense matching, camera refinement or the
heights failed, turned into one line naming the failing step and what to try.

A swirl of misregistered copies still gives a small photometric loss (the running reconstruction blurs to
whatever the images agree on), so the loss is not a gate. The gates use evidence a failed run cannot fake:

* **registration**: each image against the mosaic of the *other* images (leave-one-out), sampled at the
  image's own back-projected pixels, compared by the normalised cross-correlation of band-passed grey
  values (Eq. ``NCC = <a b> / (|a| |b|)`` over the overlap). A registered image correlates (0.8-0.99 on
  rendered and real sets); a misplaced one does not (< 0.3).
* **dense matching**: the share of flow-grid pixels with at least one forward-backward consistent match
  that agrees with the cameras (measured on registered sets: > 50 %).
* **camera refinement**: the refinement on the dense matches ends with finite cameras (recorded and warned,
  not blocking: the cameras of the rounds are kept, and the registration gate judges them).
* **height coverage**: the share of the mosaic whose height is observed by at least two images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from topograph.errors import QualityError
from topograph.meso.config import CheckConfig
from topograph.meso.functional.splat import sample_bilinear, splat_bilinear
from topograph.meso.models.camera import MesoModel
from topograph.meso.mosaic import grid_around, pixel_coordinates

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class Gate:
    """One quality gate: ``step`` it judges, whether it ``passed``, the measured ``value`` against
    ``threshold``, a one-line ``detail`` and a ``hint`` of what to try."""

    step: str
    passed: bool
    value: float
    threshold: float
    detail: str
    hint: str
    blocking: bool = True
    """False: a failure is a warning (recorded), the gates after it decide (see :func:`refinement_gate`)."""

    def line(self) -> str:
        """``<step> failed: <detail> — try: <hint>``."""
        return f"{self.step} failed: {self.detail} — try: {self.hint}"


@dataclass(frozen=True)
class QualityReport:
    """Every gate of a run, and the per-image registration scores (leave-one-out NCC, overlap share); built
    once, at the end of the run, from the gates each step returned (:func:`enforce`)."""

    gates: tuple[Gate, ...] = ()
    registration_ncc: np.ndarray | None = None
    registration_overlap: np.ndarray | None = None
    registration_residual_px: np.ndarray | None = None
    """(N,) median misfit (image pixels) of each image's feature matches under the final cameras
    (:func:`link_residuals`; None without feature links)."""

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed and g.blocking]

    @property
    def status(self) -> str:
        """``ok`` or ``failed``."""
        return "failed" if self.failed else "ok"

    def to_dict(self, names: tuple[str, ...]) -> dict[str, Any]:
        per_image = None
        if self.registration_ncc is not None and self.registration_overlap is not None:
            res = self.registration_residual_px
            if res is None:
                res = np.full(len(names), np.nan)
            per_image = [
                {"image": n, "ncc_with_mosaic": _finite(c), "overlap": float(o), "residual_px": _finite(r)}
                for n, c, o, r in zip(names, self.registration_ncc, self.registration_overlap, res, strict=True)
            ]
        return {
            "status": self.status,
            "failed": [g.line() for g in self.failed],
            "gates": [
                {
                    "step": g.step,
                    "passed": g.passed,
                    "blocking": g.blocking,
                    "value": _finite(g.value),
                    "threshold": g.threshold,
                }
                for g in self.gates
            ],
            "registration": per_image,
        }


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def enforce(gate: Gate, cfg: CheckConfig) -> Gate:
    """Judge ``gate``: stop the run with its one line when it failed and ``cfg.gates == "stop"``, else log a
    failure. Returns ``gate``, for the run's :class:`QualityReport`."""
    if gate.passed:
        return gate
    if not gate.blocking:
        log.warning(gate.line())
        return gate
    log.error(gate.line())
    if cfg.gates == "stop":
        raise QualityError(
            f"{gate.step} failed: {gate.detail}",
            f"try: {gate.hint} (or --set checks.gates=mark to write the failed result, marked failed)",
        )
    return gate


def _band_pass(img: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Grey values minus their masked Gaussian mean (illumination and exposure differences removed)."""
    m = mask.astype(np.float32)
    blur = cv2.GaussianBlur(img * m, (0, 0), sigma_px)
    wsum = cv2.GaussianBlur(m, (0, 0), sigma_px)
    return np.where(wsum > 1e-3, img - blur / np.maximum(wsum, 1e-3), 0.0).astype(np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation ``<a b> / (|a| |b|)`` of zero-mean samples (NaN when either is flat)."""
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def _small_renders(
    model: MesoModel, pixels: np.ndarray, long_side: int, device: torch.device | str
) -> tuple[float, tuple[int, int], torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Every image resampled to a long side of ``long_side`` px and back-projected with its own heights:
    ``(f, (h, w), uv, points, grey)`` with the resampling factor, the small size, its (h w, 2) full-image pixel
    coordinates, and per image its (h w, 2) object points and (h w,) photometrically corrected grey values."""
    n, h_full, w_full = pixels.shape[:3]
    f = min(1.0, long_side / max(h_full, w_full))
    h, w = max(8, round(h_full * f)), max(8, round(w_full * f))
    uv = pixel_coordinates((w_full, h_full), (h, w), device)
    points, grey = [], []
    for i in range(n):
        small = cv2.resize(pixels[i], (w, h), interpolation=cv2.INTER_AREA) if f < 1.0 else pixels[i]
        img = torch.from_numpy(small.astype(np.float32) / 255.0).to(device)
        idx = torch.tensor([i], device=device)
        hmap = model.heights(img.permute(2, 0, 1)[None], idx).reshape(1, -1)
        points.append(model.object_points(uv, hmap, idx)[0])
        grey.append(model.pose.photometric(img.reshape(1, -1, 3), idx)[0].mean(-1))
    return f, (h, w), uv, points, grey


@torch.no_grad()
def registration_scores(
    model: MesoModel, pixels: np.ndarray, long_side: int = 256, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out NCC of every image with the mosaic of the others, at a long side of ``long_side`` px.

    Args:
        model: the registered model (poses, distortion, heights).
        pixels: (N, H, W, 3) uint8 images.
        long_side: working resolution of the check.
        device: compute device.

    Returns:
        ``(ncc, overlap)``: (N,) NCC of the band-passed grey values over the pixels the other images
        cover (NaN when fewer than 2 % are covered), and (N,) that covered share.
    """
    n = pixels.shape[0]
    f, (h, w), _, points, grey = _small_renders(model, pixels, long_side, device)
    grid = grid_around(torch.cat(points), 1.0 / f)
    splats = [splat_bilinear(grid.to_grid(p), g[:, None], grid.shape) for p, g in zip(points, grey, strict=True)]
    total = torch.stack(splats).sum(0)
    own_density = 0.25  # a quarter of one image's sample density per cell
    ncc, overlap = np.full(n, np.nan), np.zeros(n)
    for i in range(n):
        others = total - splats[i]
        mean = others[0] / others[1].clamp_min(1e-6)
        sampled = sample_bilinear(torch.stack((mean, others[1])), grid.to_grid(points[i])).cpu().numpy()
        covered = (sampled[:, 1] > own_density).reshape(h, w)
        overlap[i] = float(covered.mean())
        if overlap[i] < 0.02:
            continue
        sigma = max(2.0, 0.03 * max(h, w))
        a = _band_pass(grey[i].cpu().numpy().reshape(h, w), covered, sigma)
        b = _band_pass(sampled[:, 0].reshape(h, w).astype(np.float32), covered, sigma)
        inner = cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if inner.sum() >= 64:
            ncc[i] = _ncc(a[inner], b[inner])
    return ncc, overlap


def registration_gate(names: tuple[str, ...], ncc: np.ndarray, overlap: np.ndarray, cfg: CheckConfig) -> Gate:
    """Fail when any image does not correlate with the mosaic of the others (or overlaps none of them)."""
    bad = [k for k in range(len(names)) if not (np.isfinite(ncc[k]) and ncc[k] >= cfg.min_registration_ncc)]
    worst = float(np.nanmin(ncc)) if np.isfinite(ncc).any() else float("nan")
    listed = ", ".join(f"{names[k]} ({ncc[k]:.2f})" if np.isfinite(ncc[k]) else f"{names[k]} (no overlap)" for k in bad)
    return Gate(
        step="registration",
        passed=not bad,
        value=worst,
        threshold=cfg.min_registration_ncc,
        detail=f"{len(bad)} of {len(names)} images do not match the mosaic of the others "
        f"(NCC < {cfg.min_registration_ncc:g}): {listed[:300]}",
        hint="remove those images, take the photos with more overlap (~70 %), or another --init",
    )


def match_gate(coverage: float, n_matches: int, cfg: CheckConfig) -> Gate:
    """Fail when dense flow found consistent matches for too few pixels (the images were not registered)."""
    return Gate(
        step="dense matching",
        passed=coverage >= cfg.min_match_coverage,
        value=coverage,
        threshold=cfg.min_match_coverage,
        detail=f"consistent flow matches for only {100 * coverage:.1f} % of the pixels "
        f"({n_matches:,} matches; registered sets give > 50 %)",
        hint="more overlap between neighbouring photos, fewer photos of unrelated areas, or another --init",
    )


def refinement_gate(status: str) -> Gate:
    """Record a camera refinement on the dense matches that produced non-finite cameras.

    Not blocking: the refinement then keeps the cameras of the rounds (measured: tiny rendered sets whose
    registration is fine can give a NaN refinement), so the registration gate after the rounds decides."""
    return Gate(
        blocking=False,
        step="camera refinement",
        passed=status != "nan",
        value=0.0 if status == "nan" else 1.0,
        threshold=1.0,
        detail="the refinement on the dense matches gave non-finite cameras (camera heights nan)",
        hint="check the EXIF focal length (--focal-mm), more overlap, or --set heights.flow.refine_iterations=0",
    )


def height_gate(coverage: float, cfg: CheckConfig) -> Gate:
    """Fail when too little of the mosaic has a height observed by at least two images."""
    return Gate(
        step="height coverage",
        passed=coverage >= cfg.min_height_coverage,
        value=coverage,
        threshold=cfg.min_height_coverage,
        detail=f"heights observed by two or more images on only {100 * coverage:.0f} % of the mosaic",
        hint="more overlap between neighbouring photos (~70 %)",
    )


def registration_rows(names: tuple[str, ...], report: QualityReport, threshold: float) -> list[dict[str, Any]]:
    """The per-image registration table, worst NCC first: image, NCC with the mosaic of the others,
    covered share, feature residual (px, NaN without links) and whether the image passes the gate."""
    n = len(names)
    ncc = report.registration_ncc if report.registration_ncc is not None else np.full(n, np.nan)
    cover = report.registration_overlap if report.registration_overlap is not None else np.zeros(n)
    res = report.registration_residual_px if report.registration_residual_px is not None else np.full(n, np.nan)
    order = sorted(range(n), key=lambda k: ncc[k] if np.isfinite(ncc[k]) else -np.inf)
    return [
        {
            "image": names[k],
            "ncc_with_mosaic": _finite(ncc[k]),
            "overlap": float(cover[k]),
            "residual_px": _finite(res[k]),
            "passed": bool(np.isfinite(ncc[k]) and ncc[k] >= threshold),
        }
        for k in order
    ]


def registration_csv(rows: list[dict[str, Any]]) -> str:
    """:func:`registration_rows` as CSV text (empty cells for unknown values)."""
    lines = ["image,ncc_with_mosaic,overlap,residual_px,passed"]
    for r in rows:
        cells = [r["image"]] + [
            "" if r[k] is None else f"{r[k]:.4f}" for k in ("ncc_with_mosaic", "overlap", "residual_px")
        ]
        lines.append(",".join([*cells, "yes" if r["passed"] else "no"]))
    return "\n".join(lines) + "\n"


@torch.no_grad()
def link_residuals(model: MesoModel, links: tuple, n: int) -> np.ndarray:
    """(N,) median distance (image pixels) between the flat back-projections of each image's feature
    matches and those of their partners, under the model's cameras (NaN for images without links).

    The misfit ``|X_i(u_i) - X_j(u_j)|`` is divided by the image's object units per pixel; relief adds its
    parallax to it (the matches are back-projected without heights)."""
    if not links:
        return np.full(n, np.nan)
    device = model.log_focal.device
    per_image: list[list[np.ndarray]] = [[] for _ in range(n)]
    scale = model.pose.relative_scale().cpu().numpy()
    for lk in links:
        ui = torch.as_tensor(lk.uv_i, dtype=torch.float32, device=device)
        uj = torch.as_tensor(lk.uv_j, dtype=torch.float32, device=device)
        xi = model.object_points(ui, index=torch.tensor([lk.i], device=device))[0]
        xj = model.object_points(uj, index=torch.tensor([lk.j], device=device))[0]
        d = torch.linalg.norm(xi - xj, dim=1).cpu().numpy()
        per_image[lk.i].append(d / scale[lk.i])
        per_image[lk.j].append(d / scale[lk.j])
    return np.array([float(np.median(np.concatenate(v))) if v else np.nan for v in per_image])


@dataclass(frozen=True)
class SeamMap:
    """Where the images meet in the mosaic, on a coarse grid: ``grey`` (H, W) mean grey value (NaN where no
    image), ``owner`` (H, W) index of the image seen closest to its centre (-1 where none; its borders are
    the seams), ``disagreement`` (H, W) RMS spread of the band-passed grey values of the images covering a
    cell, in units of their overall RMS (NaN where fewer than two images), ``cell`` the grid spacing."""

    grey: np.ndarray
    owner: np.ndarray
    disagreement: np.ndarray
    cell: float


@torch.no_grad()
def seam_map(model: MesoModel, pixels: np.ndarray, long_side: int = 320, device: torch.device | str = "cpu") -> SeamMap:
    """The :class:`SeamMap` of a registered model, images resampled to a long side of ``long_side`` px.

    A well-registered image agrees with the others where they overlap (disagreement ~ noise, < 0.5); a
    misplaced one doubles edges along its overlaps (disagreement ~ 1 or more)."""
    n, h_full, w_full = pixels.shape[:3]
    f, (h, w), uv, points, greys = _small_renders(model, pixels, long_side, device)
    centre = torch.tensor([(w_full - 1) / 2.0, (h_full - 1) / 2.0], device=device)
    closeness = (1.0 - torch.linalg.norm((uv - centre) / centre, dim=1) / np.sqrt(2.0))[:, None]
    sigma = max(2.0, 0.03 * max(h, w))
    values = []
    for grey in greys:
        band = _band_pass(grey.cpu().numpy().reshape(h, w), np.ones((h, w), bool), sigma).reshape(-1)
        values.append(torch.stack((grey, torch.from_numpy(band).to(device)), dim=1))
    grid = grid_around(torch.cat(points), 1.0 / f)
    shape = grid.shape
    grey_sum = torch.zeros(shape, device=device)
    weight_sum = torch.zeros(shape, device=device)
    band_sum = torch.zeros(shape, device=device)
    band_sq = torch.zeros(shape, device=device)
    count = torch.zeros(shape, device=device)
    best = torch.full(shape, -1.0, device=device)
    owner = torch.full(shape, -1, dtype=torch.long, device=device)
    for i in range(n):
        sp = splat_bilinear(grid.to_grid(points[i]), torch.cat((values[i], closeness), dim=1), shape)
        wgt = sp[-1]
        seen = wgt > 0.25  # about one sample per cell at this resolution
        mean = sp[:-1] / wgt.clamp_min(1e-6)
        grey_sum += sp[0]
        weight_sum += wgt
        band_sum += torch.where(seen, mean[1], 0.0)
        band_sq += torch.where(seen, mean[1] ** 2, 0.0)
        count += seen.float()
        closer = seen & (mean[2] > best)
        best = torch.where(closer, mean[2], best)
        owner = torch.where(closer, torch.full_like(owner, i), owner)
    grey = torch.where(weight_sum > 0.25, grey_sum / weight_sum.clamp_min(1e-6), torch.nan)
    multi = count >= 2
    mean_b = band_sum / count.clamp_min(1.0)
    spread = torch.sqrt(torch.clamp(band_sq / count.clamp_min(1.0) - mean_b**2, min=0.0))
    rms = torch.sqrt((band_sq[count > 0].sum() / count[count > 0].sum()).clamp_min(1e-12))
    disagreement = torch.where(multi, spread / rms, torch.nan)
    return SeamMap(grey.cpu().numpy(), owner.cpu().numpy(), disagreement.cpu().numpy(), grid.cell)
