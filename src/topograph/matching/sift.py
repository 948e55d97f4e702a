"""SIFT matcher: OpenCV SIFT keypoints, RootSIFT descriptors, Lowe ratio test and mutual nearest neighbours.

Detection and matching are split (:meth:`SiftMatcher.detect`, :meth:`SiftMatcher.match_features`) so a
series of N views runs N detections, not two per pair.

References:
    D. G. Lowe, "Distinctive Image Features from Scale-Invariant Keypoints", IJCV 60(2), 2004.
    R. Arandjelović and A. Zisserman, "Three things everyone should know to improve object retrieval"
    (RootSIFT), CVPR 2012.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from topograph.matching.base import check_image, config_from_options, empty_matches, matchers, to_uint8
from topograph.matching.config import SiftConfig
from topograph.types import Matches

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class SiftFeatures:
    """Keypoints of one image.

    ``xy`` (N, 2) float64 px (origin at the centre of the top-left pixel); ``descriptors`` (N, 128) float32
    (RootSIFT or SIFT); ``size`` (N,) keypoint diameter in px; ``shape`` (H, W) of the image.
    """

    xy: np.ndarray
    descriptors: np.ndarray
    size: np.ndarray
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.xy.shape[0])


def root_sift(descriptors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT: ``d' = sqrt(d / ||d||_1)``, so ``||d'||_2 = 1`` and ``d'_a · d'_b`` is the Hellinger kernel.

    Args:
        descriptors: (N, D) non-negative SIFT descriptors.

    Returns:
        (N, D) float32 unit-L2 descriptors.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / (np.abs(d).sum(axis=1, keepdims=True) + eps)
    return np.sqrt(np.maximum(d, 0.0)).astype(np.float32)


def nearest_neighbours(
    desc_i: np.ndarray, desc_j: np.ndarray, chunk_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact two nearest neighbours i→j and the nearest neighbour j→i from one pass of block matrix products.

    Squared distances come from ``||a - b||² = ||a||² + ||b||² - 2 a·b``; each block of ``chunk_size`` rows
    of ``desc_i`` is multiplied with all of ``desc_j`` once and reduced along both axes.

    Args:
        desc_i: (N, D) float32 descriptors of view i.
        desc_j: (M, D) float32 descriptors of view j, M ≥ 2.
        chunk_size: Rows per block.

    Returns:
        ``nn_ij`` (N,) index in j of each i's nearest neighbour; ``d1`` (N,) and ``d2`` (N,) Euclidean
        distances to the first and second nearest neighbour; ``nn_ji`` (M,) index in i of each j's nearest
        neighbour.
    """
    a = np.ascontiguousarray(desc_i, dtype=np.float32)
    b = np.ascontiguousarray(desc_j, dtype=np.float32)
    n, m = a.shape[0], b.shape[0]
    sq_a = np.einsum("ij,ij->i", a, a)
    sq_b = np.einsum("ij,ij->i", b, b)
    if np.allclose(sq_a, 1.0, atol=1e-4) and np.allclose(sq_b, 1.0, atol=1e-4):
        return _nearest_neighbours_unit(a, b, chunk_size)
    nn_ij = np.empty(n, dtype=np.int64)
    best1 = np.empty(n, dtype=np.float32)
    best2 = np.empty(n, dtype=np.float32)
    col_best = np.full(m, np.inf, dtype=np.float32)
    col_block = np.zeros(m, dtype=np.int64)
    step = max(int(chunk_size), 1)
    for s in range(0, n, step):
        dist = a[s : s + step] @ b.T  # (c, M) dot products, turned in place into squared distances
        dist *= -2.0
        dist += sq_b[None, :]
        dist += sq_a[s : s + step, None]
        rows = np.arange(dist.shape[0])
        # Column minima only (a min along axis 0 is vectorised, an argmin is not): remember the block.
        vc = dist.min(axis=0)
        better = vc < col_best
        col_best[better] = vc[better]
        col_block[better] = s
        k1 = np.argmin(dist, axis=1)
        best1[s : s + step] = dist[rows, k1]
        dist[rows, k1] = np.inf
        best2[s : s + step] = dist.min(axis=1)
        nn_ij[s : s + step] = k1
    # j -> i: for the columns whose minimum lies in a block, find the row there (small products, row argmin).
    nn_ji = np.zeros(m, dtype=np.int64)
    for s in np.unique(col_block):
        cols = np.flatnonzero(col_block == s)
        sub = b[cols] @ a[s : s + step].T
        sub *= -2.0
        sub += sq_a[None, s : s + step]
        nn_ji[cols] = np.argmin(sub, axis=1) + s
    d1 = np.sqrt(np.maximum(best1, 0.0))
    d2 = np.sqrt(np.maximum(best2, 0.0))
    return nn_ij, d1, d2, nn_ji


def _nearest_neighbours_unit(
    a: np.ndarray, b: np.ndarray, chunk_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`nearest_neighbours` for unit-L2 descriptors (RootSIFT): ``||a − b||² = 2 − 2 a·b``, so the
    neighbours are the largest dot products and each block needs the product and three reductions only
    (no distance arithmetic over the block): ~30 % less time per pair on quartz."""
    n, m = a.shape[0], b.shape[0]
    nn_ij = np.empty(n, dtype=np.int64)
    best1 = np.empty(n, dtype=np.float32)
    best2 = np.empty(n, dtype=np.float32)
    col_best = np.full(m, -np.inf, dtype=np.float32)
    col_block = np.zeros(m, dtype=np.int64)
    step = max(int(chunk_size), 1)
    for s in range(0, n, step):
        dot = a[s : s + step] @ b.T
        rows = np.arange(dot.shape[0])
        vc = dot.max(axis=0)
        better = vc > col_best
        col_best[better] = vc[better]
        col_block[better] = s
        k1 = np.argmax(dot, axis=1)
        best1[s : s + step] = dot[rows, k1]
        dot[rows, k1] = -np.inf
        best2[s : s + step] = dot.max(axis=1)
        nn_ij[s : s + step] = k1
    nn_ji = np.zeros(m, dtype=np.int64)
    for s in np.unique(col_block):
        cols = np.flatnonzero(col_block == s)
        nn_ji[cols] = np.argmax(b[cols] @ a[s : s + step].T, axis=1) + s
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * best1, 0.0))
    d2 = np.sqrt(np.maximum(2.0 - 2.0 * best2, 0.0))
    return nn_ij, d1, d2, nn_ji


def select_matches(
    nn_ij: np.ndarray, d1: np.ndarray, d2: np.ndarray, nn_ji: np.ndarray, ratio: float, mutual: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the Lowe ratio test ``d1 < ratio · d2`` and the mutual check ``nn_ji[nn_ij[k]] == k``.

    Returns:
        ``idx_i`` (K,), ``idx_j`` (K,) matched keypoint indices and ``scores`` (K,) = ``1 - d1/d2`` in [0, 1]
        (distinctiveness: 0 for an ambiguous match, 1 for a unique one).
    """
    idx_i = np.arange(nn_ij.shape[0])
    keep = np.ones(nn_ij.shape[0], dtype=bool)
    if ratio < 1.0:
        keep &= d1 < ratio * d2
    if mutual:
        keep &= nn_ji[nn_ij] == idx_i
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(d2 > 0, 1.0 - d1 / d2, 0.0)
    return idx_i[keep], nn_ij[keep], np.clip(scores[keep], 0.0, 1.0)


class SiftMatcher:
    """OpenCV SIFT + RootSIFT + ratio test + mutual check (see :class:`SiftConfig`)."""

    name = "sift"

    def __init__(self, config: SiftConfig | None = None) -> None:
        self.config = config or SiftConfig()

    def detect(self, image: np.ndarray) -> SiftFeatures:
        """Detect SIFT keypoints and compute (Root)SIFT descriptors of one image.

        Args:
            image: float32 (H, W) in [0, 1].

        Returns:
            The image's :class:`SiftFeatures`; keypoint coordinates are OpenCV's subpixel positions
            (pixel centres at integer coordinates), mapped back to full resolution when detection ran on a
            downscaled copy (``x = (x_s + 0.5) / s - 0.5``).
        """
        cfg = self.config
        img = check_image(image)
        h, w = img.shape
        u8 = to_uint8(img, cfg.stretch_percent, cfg.clahe, cfg.clahe_clip, cfg.clahe_tile)
        scale = 1.0
        if cfg.max_image_side > 0 and max(h, w) > cfg.max_image_side:
            scale = cfg.max_image_side / max(h, w)
            u8 = cv2.resize(u8, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        sift = cv2.SIFT_create(
            nfeatures=int(cfg.n_features),
            nOctaveLayers=int(cfg.n_octave_layers),
            contrastThreshold=float(cfg.contrast_threshold),
            edgeThreshold=float(cfg.edge_threshold),
            sigma=float(cfg.sigma),
        )
        keypoints, desc = sift.detectAndCompute(u8, None)
        if desc is None or len(keypoints) == 0:
            return SiftFeatures(np.zeros((0, 2)), np.zeros((0, 128), np.float32), np.zeros(0), (h, w))
        xy = np.array([kp.pt for kp in keypoints], dtype=np.float64)
        size = np.array([kp.size for kp in keypoints], dtype=np.float64)
        if scale != 1.0:
            xy = (xy + 0.5) / scale - 0.5
            size = size / scale
        desc = root_sift(desc) if cfg.root_sift else desc.astype(np.float32)
        return SiftFeatures(xy, desc, size, (h, w))

    def match_features(self, features_i: SiftFeatures, features_j: SiftFeatures, i: int, j: int) -> Matches:
        """Match two precomputed feature sets.

        Duplicate correspondences (OpenCV emits one keypoint per dominant orientation at the same spot)
        are collapsed to the highest-scoring one.

        Returns:
            Raw matches between views ``i`` and ``j`` with ``scores = 1 - d1/d2``.
        """
        cfg = self.config
        if len(features_i) < 2 or len(features_j) < 2:
            return empty_matches(i, j)
        nn_ij, d1, d2, nn_ji = nearest_neighbours(features_i.descriptors, features_j.descriptors, cfg.chunk_size)
        idx_i, idx_j, scores = select_matches(nn_ij, d1, d2, nn_ji, cfg.ratio, cfg.mutual)
        xy_i = features_i.xy[idx_i]
        xy_j = features_j.xy[idx_j]
        order = np.argsort(-scores, kind="stable")
        key = np.round(np.hstack([xy_i, xy_j])[order] * 100.0)
        _, first = np.unique(key, axis=0, return_index=True)
        keep = np.sort(order[first])
        log.debug(
            "sift %d–%d: %d / %d keypoints, %d matches (%d duplicates dropped)",
            i,
            j,
            len(features_i),
            len(features_j),
            keep.size,
            idx_i.size - keep.size,
        )
        return Matches(i, j, xy_i[keep], xy_j[keep], scores[keep].astype(np.float64))

    def match(self, image_i: np.ndarray, image_j: np.ndarray, i: int, j: int) -> Matches:
        """Detect in both images and match them (see :meth:`detect` and :meth:`match_features`)."""
        return self.match_features(self.detect(image_i), self.detect(image_j), i, j)


@matchers.register("sift")
def create_sift(**options: Any) -> SiftMatcher:
    """Factory of the ``sift`` matcher; ``options`` are :class:`SiftConfig` fields."""
    return SiftMatcher(config_from_options(SiftConfig, options, "sift"))
