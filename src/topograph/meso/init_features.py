"""Initial camera positions *and in-plane angles* from SIFT matches (robust to rotated photos).

Phase correlation (:mod:`topograph.meso.init_positions`) finds translations only; photos taken on the
way back along a second flight line or sweep are rotated by up to 180 degrees and correlate with nothing.
Here every pair is matched with SIFT (ratio test) at low resolution and a similarity ``u_j = s R(phi) u_i
+ t`` is fitted by RANSAC (``cv2.estimateAffinePartial2D``). The pairs with enough inliers form a graph;
the maximum spanning tree (most inliers first) from the reference image chains the similarities into one
map ``G_i`` of every image's pixels into the reference image's pixels. With the model's flat back-projection
``X = R(theta_i) (u - c) + p_i`` (unit scale, no tilt), ``theta_i`` is the angle of ``G_i`` and
``p_i = G_i(c) - c``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from topograph.errors import TopographError

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class FeatureInit:
    """Result of :func:`feature_initialisation`: ``positions`` (N, 2) and ``angles`` (N,) radians in the
    reference image's pixel frame, ``inliers`` (N, N) RANSAC inlier counts of the pairs (0 = not linked),
    ``overlap`` (N, N) estimated overlap fractions of the linked pairs; ``linked`` (N,) whether the image
    is in the group that was initialised (unlinked images have zero position and angle)."""

    positions: np.ndarray
    angles: np.ndarray
    inliers: np.ndarray
    overlap: np.ndarray
    linked: np.ndarray


def _features(pixels: np.ndarray, size: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    h, w = pixels.shape[1:3]
    f = min(1.0, size / max(h, w))
    sift = cv2.SIFT_create(nfeatures=4000)
    out = []
    for img in pixels:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            g = cv2.resize(g, (max(16, round(w * f)), max(16, round(h * f))), interpolation=cv2.INTER_AREA)
        kp, desc = sift.detectAndCompute(g, None)
        pts = np.array([k.pt for k in kp], np.float32).reshape(-1, 2) / f
        out.append((pts, desc if desc is not None else np.zeros((0, 128), np.float32)))
    return out, f


def pairwise_similarity(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], threshold_px: float
) -> tuple[np.ndarray | None, int]:
    """Similarity mapping pixels of image a to image b (2x3), and its RANSAC inlier count."""
    if len(a[1]) < 8 or len(b[1]) < 8:
        return None, 0
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a[1], b[1], k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 8:
        return None, 0
    src = a[0][[m.queryIdx for m in good]]
    dst = b[0][[m.trainIdx for m in good]]
    model, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold_px, maxIters=4000, confidence=0.999
    )
    if model is None or mask is None:
        return None, 0
    scale = float(np.hypot(model[0, 0], model[1, 0]))
    if not 0.7 < scale < 1.4:  # photos of one sweep at one height: a wild scale is a false match
        return None, 0
    return model, int(mask.sum())


def _overlap(sim: np.ndarray, size: tuple[int, int]) -> float:
    """Share of image a's area that ``sim`` maps inside image b (sampled on a 16 x 12 grid)."""
    w, h = size
    u, v = np.meshgrid(np.linspace(0, w, 16), np.linspace(0, h, 12))
    p = sim[:, :2] @ np.stack((u.ravel(), v.ravel())) + sim[:, 2:]
    return float(((p[0] >= 0) & (p[0] < w) & (p[1] >= 0) & (p[1] < h)).mean())


def _spanning_tree(weights: np.ndarray, root: int) -> list[tuple[int, int]]:
    """Edges (parent, child) of the maximum spanning tree from ``root`` (Prim), over positive weights."""
    n = weights.shape[0]
    inside = {root}
    edges = []
    while len(inside) < n:
        best = (0.0, -1, -1)
        for p in inside:
            for c in range(n):
                if c not in inside and weights[p, c] > best[0]:
                    best = (weights[p, c], p, c)
        if best[1] < 0:
            break
        edges.append((best[1], best[2]))
        inside.add(best[2])
    return edges


def feature_initialisation(
    pixels: np.ndarray, names: tuple[str, ...], size: int = 1024, min_inliers: int = 25, root: int | None = None
) -> FeatureInit:
    """Positions and in-plane angles of every image from pairwise SIFT similarities (module docstring).

    The spanning tree grows from ``root`` (None: the image with the most inliers); images it cannot reach
    are returned unlinked (``FeatureInit.linked``).

    Raises:
        TopographError: fewer than half of the images (or fewer than 2) are linked.
    """
    n, h, w = pixels.shape[:3]
    feats, f = _features(pixels, size)
    sims: dict[tuple[int, int], np.ndarray] = {}
    inliers = np.zeros((n, n), int)
    overlap = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            sim, k = pairwise_similarity(feats[i], feats[j], 3.0 / f)
            if sim is None or k < min_inliers:
                continue
            inv = cv2.invertAffineTransform(sim)
            sims[(i, j)], sims[(j, i)] = sim, inv
            inliers[i, j] = inliers[j, i] = k
            overlap[i, j] = overlap[j, i] = _overlap(sim, (w, h))
    root = int(np.argmax(inliers.sum(1))) if root is None else root
    edges = _spanning_tree(inliers.astype(float), root)
    linked = {root} | {c for _, c in edges}
    if len(linked) < max(2, (n + 1) // 2):
        missing = [names[k] for k in range(n) if k not in linked]
        raise TopographError(
            f"feature matching links only {len(linked)} of {n} photos (no chain to {', '.join(missing[:6])})",
            "take the photos with more overlap (~70 % between neighbours), or check they show one scene",
        )
    to_root = {root: np.eye(3)}
    for p, c in edges:  # G_c = G_p @ (c -> p)
        to_root[c] = to_root[p] @ np.vstack((sims[(c, p)], [0.0, 0.0, 1.0]))
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
    eye = np.eye(3)
    positions = np.array([(to_root.get(k, eye) @ centre)[:2] - centre[:2] for k in range(n)])
    angles = np.array([np.arctan2(to_root.get(k, eye)[1, 0], to_root.get(k, eye)[0, 0]) for k in range(n)])
    mask = np.array([k in linked for k in range(n)])
    positions -= positions[mask].mean(0)
    positions[~mask] = 0.0
    log.info(
        "initial positions and angles from SIFT: %d linked pairs, angles %s deg",
        int((inliers > 0).sum() // 2),
        np.array2string(np.degrees(angles), precision=0, max_line_width=200),
    )
    return FeatureInit(positions=positions, angles=angles, inliers=inliers, overlap=overlap, linked=mask)
