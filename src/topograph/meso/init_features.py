"""Initial cameras (position, height, tilt, in-plane angle) from SIFT matches, robust to rotated photos and
to repetitive, low-texture scenes (crop rows, paper fibres, fabric).

Phase correlation (:mod:`topograph.meso.init_positions`) finds translations only; photos taken on the way
back along a second flight line are rotated by up to 180 degrees and correlate with nothing. Here:

1. every image is contrast-equalised (CLAHE: low-texture fields get keypoints) and described by RootSIFT
   at a long side of ``size`` pixels;
2. every pair is matched (ratio test) and a homography is fitted by MAGSAC++ (a hand-held or gimbal-less
   camera is tilted: a similarity leaves most true matches outliers). A pair is a *link* only when its
   inliers are many, spread over the overlap (not a cluster on one repeated feature) and the homography's
   local Jacobian is a plausible view change (singular values in [0.5, 2]; repeated texture and fixed
   sensor blemishes give collapsed maps);
3. the links are solved *jointly* (:mod:`topograph.meso.init_global`): a linear similarity solve, then the
   flat tilted-camera model fitted to every link's inlier matches at once (robust loss), and links that
   disagree with the rest (loop closure) rejected one round at a time. Images no consistent link reaches
   are returned unlinked (the caller leaves them out and names them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from topograph.errors import TopographError

if TYPE_CHECKING:
    from topograph.meso.init_global import FeatureTies

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class PairLink:
    """Matched inliers of images ``i`` and ``j``: ``uv_i``, ``uv_j`` (K, 2) full-resolution pixels, and the
    homography ``h_ij`` (3, 3) taking pixels of ``i`` to pixels of ``j``."""

    i: int
    j: int
    uv_i: np.ndarray
    uv_j: np.ndarray
    h_ij: np.ndarray

    @property
    def inliers(self) -> int:
        return len(self.uv_i)


@dataclass(frozen=True)
class FeatureInit:
    """Result of :func:`feature_initialisation`, in the model's parameterisation (object unit ~ one image
    pixel, geometric-mean camera height = focal length):

    ``positions`` (N, 2) where the optical axes meet the object plane, ``angles`` (N,) in-plane angles
    (radians), ``tilts`` (N, 2) plane normals ``(n_x, n_y)`` in the camera frames, ``log_scales`` (N,)
    camera heights ``Z = f exp(log_scale)``; ``inliers`` (N, N) inlier counts of the accepted links;
    ``overlap`` (N, N) shares of image i mapped inside image j; ``linked`` (N,) whether the image is in the
    initialised group (others have zeros); ``residual_px`` (N,) median misfit of each image's matches
    after the joint fit (NaN when unlinked); ``links`` the accepted links; ``rejected`` the pairs dropped
    as inconsistent with the others; ``ties`` the links' matches kept as ties of the photometric rounds."""

    positions: np.ndarray
    angles: np.ndarray
    tilts: np.ndarray
    log_scales: np.ndarray
    inliers: np.ndarray
    overlap: np.ndarray
    linked: np.ndarray
    residual_px: np.ndarray
    links: tuple[PairLink, ...] = ()
    rejected: tuple[tuple[int, int], ...] = ()
    ties: FeatureTies | None = None


def _features(pixels: np.ndarray, size: int, n_features: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """RootSIFT keypoints (full-resolution pixels) and descriptors of CLAHE-equalised grey images."""
    h, w = pixels.shape[1:3]
    f = min(1.0, size / max(h, w))
    sift = cv2.SIFT_create(nfeatures=n_features)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    out = []
    for img in pixels:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            g = cv2.resize(g, (max(16, round(w * f)), max(16, round(h * f))), interpolation=cv2.INTER_AREA)
        kp, desc = sift.detectAndCompute(clahe.apply(g), None)
        pts = (np.array([k.pt for k in kp], np.float32).reshape(-1, 2) + 0.5) / f - 0.5
        if desc is None:
            desc = np.zeros((0, 128), np.float32)
        desc = np.sqrt(desc / (desc.sum(1, keepdims=True) + 1e-7)).astype(np.float32)  # RootSIFT (Hellinger)
        out.append((pts, desc))
    return out, f


def local_jacobian(h: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(2, 2) Jacobian of the homography ``h`` at ``point``: ``(A - x' c^T) / w`` with ``w = c . (u, 1)``,
    ``A`` the upper-left block, ``c`` the last row's first two entries and ``x'`` the mapped point."""
    p = np.array([point[0], point[1], 1.0])
    w = float(h[2] @ p)
    mapped = (h[:2] @ p) / w
    return (h[:2, :2] - np.outer(mapped, h[2, :2])) / w


def pair_link(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    i: int,
    j: int,
    threshold_px: float,
    min_inliers: int,
    min_spread_px: float,
) -> PairLink | None:
    """The link of images ``i`` and ``j`` from their features, or None (module docstring, step 2)."""
    if len(a[1]) < min_inliers or len(b[1]) < min_inliers:
        return None
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a[1], b[1], k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < 0.85 * m[1].distance]
    if len(good) < min_inliers:
        return None
    src = a[0][[m.queryIdx for m in good]]
    dst = b[0][[m.trainIdx for m in good]]
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold_px, maxIters=5000, confidence=0.999)
    if h is None or mask is None or int(mask.sum()) < min_inliers:
        return None
    keep = mask.ravel().astype(bool)
    src, dst = src[keep], dst[keep]
    sv = np.linalg.svd(local_jacobian(h, src.mean(0)), compute_uv=False)
    if not (0.5 < sv[1] and sv[0] < 2.0):  # collapsed or exploding map: repeated texture or a fixed blemish
        return None
    spread = min(np.sqrt(np.maximum(np.linalg.eigvalsh(np.cov(p.T)), 0.0)).min() for p in (src, dst))
    if spread < min_spread_px:  # a cluster of look-alike keypoints, not an overlap
        return None
    return PairLink(i, j, src.astype(np.float64), dst.astype(np.float64), h)


def overlap_share(h_ij: np.ndarray, size: tuple[int, int]) -> float:
    """Share of image i's area that ``h_ij`` maps inside image j (sampled on a 16 x 12 grid)."""
    w, ht = size
    u, v = np.meshgrid(np.linspace(0, w, 16), np.linspace(0, ht, 12))
    p = h_ij @ np.stack((u.ravel(), v.ravel(), np.ones(u.size)))
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = p[0] / p[2], p[1] / p[2]
    return float(((p[2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < ht)).mean())


def find_links(pixels: np.ndarray, size: int = 1024, min_inliers: int = 15, n_features: int = 6000) -> list[PairLink]:
    """Links of every pair of images (module docstring, steps 1-2)."""
    n, h, w = pixels.shape[:3]
    feats, f = _features(pixels, size, n_features)
    links = []
    for i in range(n):
        for j in range(i + 1, n):
            link = pair_link(feats[i], feats[j], i, j, 3.0 / f, min_inliers, 0.025 * max(h, w))
            if link is not None:
                links.append(link)
    return links


def _drop_thin(
    links: list[PairLink], names: tuple[str, ...], size: tuple[int, int], min_overlap: float
) -> list[PairLink]:
    """``links`` without those of images whose best link covers less than ``min_overlap`` of them (warned)."""
    best: dict[int, tuple[float, int]] = {}
    for lk in links:
        for k, other, hom in ((lk.i, lk.j, lk.h_ij), (lk.j, lk.i, np.linalg.inv(lk.h_ij))):
            share = overlap_share(hom, size)
            if share > best.get(k, (-1.0, -1))[0]:
                best[k] = (share, other)
    thin = {k for k, (share, _) in best.items() if share < min_overlap}
    for k in sorted(thin):
        share, other = best[k]
        log.warning(
            "%s overlaps its best-matched photo %s by only %.0f %% (< %.0f %%): too little to register it, left out",
            names[k], names[other], 100 * share, 100 * min_overlap,
        )  # fmt: skip
    return [lk for lk in links if lk.i not in thin and lk.j not in thin]


def feature_initialisation(
    pixels: np.ndarray,
    names: tuple[str, ...],
    size: int = 1024,
    min_inliers: int = 15,
    root: int | None = None,
    focal_px: float | None = None,
    projection: str = "expansion",
    min_overlap: float = 0.2,
) -> FeatureInit:
    """Positions, heights, tilts and in-plane angles of every image from SIFT links (module docstring).

    Args:
        pixels: (N, H, W, 3) uint8 images.
        names: image names (for messages).
        size: long side of the images SIFT runs on.
        min_inliers: fewest homography inliers of a link.
        root: the image whose angle is the frame's (None: the best-linked image).
        focal_px: focal length in full-resolution pixels (None: the image diagonal, a 53-degree view).
        projection: the model's back-projection (``expansion`` or ``exact``).
        min_overlap: an image whose best link covers less than this share of it is left out (named in a
            warning): the photometric rounds cannot hold it on a sliver (measured on the aerial series: the
            turning photo IMG_0455 overlaps its neighbour by 10 %, the rounds moved it 330 px off; every
            other photo has a link of 38 % or more).

    Raises:
        TopographError: fewer than half of the images (or fewer than 2) are linked.
    """
    from topograph.meso.init_global import solve_links

    n, h, w = pixels.shape[:3]
    links = find_links(pixels, size, min_inliers)
    links = _drop_thin(links, names, (w, h), min_overlap)
    focal = float(focal_px) if focal_px else float(np.hypot(w, h))
    fit = solve_links(links, n, (w, h), focal, projection, root, noise_px=1.0 / min(1.0, size / max(h, w)))
    linked = fit.linked
    if int(linked.sum()) < max(2, (n + 1) // 2):
        missing = [names[k] for k in range(n) if not linked[k]]
        raise TopographError(
            f"feature matching links only {int(linked.sum())} of {n} photos (no chain to {', '.join(missing[:6])})",
            "take the photos with more overlap (~70 % between neighbours), or check they show one scene",
        )
    inliers = np.zeros((n, n), int)
    overlap = np.zeros((n, n))
    for link in fit.links:
        inliers[link.i, link.j] = inliers[link.j, link.i] = link.inliers
        overlap[link.i, link.j] = overlap_share(link.h_ij, (w, h))
        overlap[link.j, link.i] = overlap_share(np.linalg.inv(link.h_ij), (w, h))
    for i, j in fit.rejected:
        log.warning("feature link %s - %s disagrees with the other links: not used", names[i], names[j])
    log.info(
        "initial cameras from SIFT: %d consistent links (%d rejected), residual median %.2f px, angles %s deg, "
        "tilts up to %.1f deg",
        len(fit.links), len(fit.rejected), float(np.nanmedian(fit.residual_px)),
        np.array2string(np.degrees(fit.angles), precision=0, max_line_width=200),
        float(np.degrees(np.arcsin(np.clip(np.linalg.norm(fit.tilts, axis=1).max(), 0, 1)))),
    )  # fmt: skip
    return FeatureInit(
        positions=fit.positions,
        angles=fit.angles,
        tilts=fit.tilts,
        log_scales=fit.log_scales,
        inliers=inliers,
        overlap=overlap,
        linked=linked,
        residual_px=fit.residual_px,
        links=tuple(fit.links),
        rejected=tuple(fit.rejected),
        ties=fit.ties,
    )
