"""Initial camera positions from phase correlation, and the pairwise overlap matrix.

Every pair of images is phase-correlated at low resolution; the translation candidates (including the
wrap-around aliases of the periodic correlation) are verified by the normalised cross-correlation of the
overlapping parts. Verified pairs form a graph; positions are its least-squares solution. Images with no
verified partner overlap nothing, which is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from topograph.errors import TopographError
from topograph.meso.config import InitConfig

if TYPE_CHECKING:
    from topograph.meso.init_global import FeatureTies

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class InitialPositions:
    """Initial camera positions (N, 2) in full-resolution image pixels and how they were obtained.

    ``overlap`` (N, N): verified overlap fraction of each pair (0 = no verified overlap); ``ncc`` (N, N):
    the normalised cross-correlation of the verified overlap; ``method``: ``"zero"`` or ``"xcorr"``.
    """

    positions: np.ndarray
    method: str
    overlap: np.ndarray
    ncc: np.ndarray
    xcorr_positions: np.ndarray
    angles: np.ndarray | None = None
    """(N,) initial in-plane angles in radians (``features`` only; None = zero)."""
    linked: np.ndarray | None = None
    """(N,) False for images no chain of matches links to the others (``features`` only; they are left
    out of the reconstruction with a warning); None = all linked."""
    tilts: np.ndarray | None = None
    """(N, 2) initial tilts ``(n_x, n_y)`` (``features`` only; None = zero)."""
    log_scales: np.ndarray | None = None
    """(N,) initial camera heights ``Z = f exp(log_scale)`` (``features`` only; None = all equal)."""
    residual_px: np.ndarray | None = None
    """(N,) median misfit (pixels) of each image's feature matches after the joint fit (``features`` only)."""
    links: tuple = ()
    """The feature links (:class:`topograph.meso.init_features.PairLink`) the cameras were fitted to."""
    ties: FeatureTies | None = None
    """Their matches as ties of the photometric rounds (``features`` only; None = untied rounds)."""


def _gray_small(pixels: np.ndarray, size: int) -> tuple[list[np.ndarray], float]:
    """Grayscale images with the long side ``size``, illumination flattened, lightly smoothed."""
    h, w = pixels.shape[1:3]
    f = min(1.0, size / max(h, w))
    out = []
    for img in pixels:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        if f < 1.0:
            g = cv2.resize(g, (max(16, round(w * f)), max(16, round(h * f))), interpolation=cv2.INTER_AREA)
        g = cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), max(4.0, 0.05 * max(g.shape)))
        out.append(g)
    return out, f


def _tukey(n: int, alpha: float = 0.2) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    lo = x < alpha / 2
    hi = x > 1 - alpha / 2
    w[lo] = 0.5 * (1 + np.cos(2 * np.pi / alpha * (x[lo] - alpha / 2)))
    w[hi] = 0.5 * (1 + np.cos(2 * np.pi / alpha * (x[hi] - 1 + alpha / 2)))
    return w


def _overlap_ncc(a: np.ndarray, b: np.ndarray, t: tuple[int, int]) -> tuple[float, float]:
    """NCC and overlap fraction of ``a`` and ``b`` when content at ``u`` in ``a`` is at ``u - t`` in ``b``."""
    h, w = a.shape
    tx, ty = t
    xa0, xa1 = max(0, tx), min(w, w + tx)
    ya0, ya1 = max(0, ty), min(h, h + ty)
    if xa1 - xa0 < 4 or ya1 - ya0 < 4:
        return 0.0, 0.0
    pa = a[ya0:ya1, xa0:xa1]
    pb = b[ya0 - ty : ya1 - ty, xa0 - tx : xa1 - tx]
    frac = pa.size / a.size
    pa = pa - pa.mean()
    pb = pb - pb.mean()
    den = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
    return (float((pa * pb).sum()) / den if den > 0 else 0.0), frac


def pairwise_translations(gray: list[np.ndarray], cfg: InitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase-correlate every pair (zero-padded, so shifts do not wrap) and verify the peak by NCC.

    The cross-power spectrum is partially whitened (divided by the square root of its magnitude), a
    compromise between plain cross-correlation (robust) and phase correlation (sharp peak).

    Args:
        gray: N small grayscale images of one size.
        cfg: thresholds.

    Returns:
        ``(t, ncc, overlap)``: (N, N, 2) translations (camera j minus camera i, small-image pixels),
        (N, N) NCC and (N, N) overlap fractions; pairs failing the thresholds have ncc = overlap = 0.
    """
    n = len(gray)
    h, w = gray[0].shape
    win = np.outer(_tukey(h), _tukey(w)).astype(np.float32)
    spectra = [np.fft.rfft2((g - g.mean()) * win, s=(2 * h, 2 * w)) for g in gray]
    t = np.zeros((n, n, 2))
    ncc = np.zeros((n, n))
    ov = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            x = spectra[i] * np.conj(spectra[j])
            x /= np.sqrt(np.abs(x)) + 1e-12
            c = np.fft.irfft2(x, s=(2 * h, 2 * w))
            iy, ix = np.unravel_index(int(np.argmax(c)), c.shape)
            cand = (int(ix if ix < w else ix - 2 * w), int(iy if iy < h else iy - 2 * h))
            score, frac = _overlap_ncc(gray[i], gray[j], cand)
            if score >= cfg.min_ncc and frac >= cfg.min_overlap:
                t[i, j] = cand
                t[j, i] = (-cand[0], -cand[1])
                ncc[i, j] = ncc[j, i] = score
                ov[i, j] = ov[j, i] = frac
    return t, ncc, ov


def _components(adj: np.ndarray) -> list[list[int]]:
    n = adj.shape[0]
    seen = np.zeros(n, dtype=bool)
    comps = []
    for s in range(n):
        if seen[s]:
            continue
        stack, comp = [s], []
        seen[s] = True
        while stack:
            k = stack.pop()
            comp.append(k)
            for m in np.flatnonzero(adj[k] & ~seen):
                seen[m] = True
                stack.append(int(m))
        comps.append(sorted(comp))
    return comps


def estimate_initial_positions(
    pixels: np.ndarray,
    names: tuple[str, ...],
    cfg: InitConfig,
    focal_px: float | None = None,
    projection: str = "expansion",
) -> InitialPositions:
    """Camera positions from pairwise phase correlation, or zero (see ``InitConfig.method``); with
    ``features``, cameras (positions, heights, tilts, angles) from SIFT links solved jointly.

    Args:
        pixels: (N, H, W, 3) uint8 images.
        names: image names (for error messages).
        cfg: initialisation settings.
        focal_px: focal length in pixels (``features``; None = the image diagonal).
        projection: the model's back-projection (``features``).

    Returns:
        The initial positions in full-resolution pixels (mean zero) and the overlap matrix.

    Raises:
        TopographError: an image overlaps no other image, or the set splits into disconnected groups.
    """
    if cfg.method == "features":
        return _from_features(pixels, names, cfg, focal_px, projection)
    try:
        return _from_xcorr(pixels, names, cfg)
    except TopographError as exc:
        if cfg.method != "auto":
            raise
        log.warning("cross-correlation initialisation failed (%s): trying SIFT features", exc.cause)
        return _from_features(pixels, names, cfg, focal_px, projection)


def _from_features(
    pixels: np.ndarray, names: tuple[str, ...], cfg: InitConfig, focal_px: float | None, projection: str
) -> InitialPositions:
    from topograph.meso.init_features import feature_initialisation

    fi = feature_initialisation(pixels, names, cfg.feature_size, focal_px=focal_px, projection=projection)
    ncc = np.minimum(1.0, fi.inliers / 100.0)
    return InitialPositions(
        fi.positions, "features", fi.overlap, ncc, fi.positions, angles=fi.angles, linked=fi.linked,
        tilts=fi.tilts, log_scales=fi.log_scales, residual_px=fi.residual_px, links=fi.links, ties=fi.ties,
    )  # fmt: skip


def _from_xcorr(pixels: np.ndarray, names: tuple[str, ...], cfg: InitConfig) -> InitialPositions:
    n = pixels.shape[0]
    h, w = pixels.shape[1:3]
    gray, f = _gray_small(pixels, cfg.size)
    t, ncc, ov = pairwise_translations(gray, cfg)
    adj = ncc > 0
    isolated = [names[i] for i in range(n) if not adj[i].any()]
    if isolated:
        raise TopographError(
            f"image(s) {', '.join(isolated)} overlap no other image",
            "remove them or add images that bridge the gap (aim for ~70% overlap between neighbours)",
        )
    comps = _components(adj)
    if len(comps) > 1:
        groups = "; ".join("{" + ", ".join(names[k] for k in c) + "}" for c in comps)
        raise TopographError(
            f"the images form {len(comps)} groups that do not overlap each other: {groups}",
            "add images that bridge the groups",
        )
    rows, rhs, wts = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            if adj[i, j]:
                r = np.zeros(n)
                r[j], r[i] = 1.0, -1.0
                rows.append(r)
                rhs.append(t[i, j] / f)
                wts.append(ncc[i, j] * ov[i, j])
    a = np.array(rows)
    b = np.array(rhs)
    sw = np.sqrt(np.array(wts))[:, None]
    gauge = np.ones((1, n)) / n  # mean position zero
    sol, *_ = np.linalg.lstsq(np.vstack([a * sw, gauge]), np.vstack([b * sw, np.zeros((1, 2))]), rcond=None)
    xcorr = sol
    spread = float(np.max(np.linalg.norm(xcorr - xcorr.mean(0), axis=1)))
    if cfg.method == "zero" or (cfg.method == "auto" and spread <= cfg.zero_max_spread * min(h, w)):
        method, pos = "zero", np.zeros((n, 2))
    else:
        method, pos = "xcorr", xcorr
    log.info(
        "initial positions: %s (cross-correlation spread %.0f px, %d verified overlapping pairs)",
        method,
        spread,
        int(adj.sum() // 2),
    )
    return InitialPositions(positions=pos, method=method, overlap=ov, ncc=ncc, xcorr_positions=xcorr)
