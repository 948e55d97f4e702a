"""The plain two-view SEM baseline of the literature (3D-SEM style): the extreme-tilt pair, rectified
along the affine epipolar direction, OpenCV SGBM, orthographic (affine) triangulation.

Used by benchmarks/bench_sem_dense.py to compare with topograph's multi-view fusion on the same data and
the same (refined) cameras.
"""

from __future__ import annotations

import cv2
import numpy as np

from topograph.geometry.dense_triangulation import NormalEquations, viewing_direction_nullspace
from topograph.types import AffineCamera


def rectifying_maps(cam_i: AffineCamera, cam_j: AffineCamera) -> tuple[np.ndarray, np.ndarray]:
    """Affine maps (2×3) taking each image to rectified (u, v) with equal v along epipolar lines.

    ``v = q·X`` for the world direction ``q = d_i × d_j`` seen by both cameras (``M d = 0``); each image
    expresses it as ``v = α·(x − t)`` with ``α M = q``; ``u`` runs along the epipolar lines.
    """
    q = np.cross(viewing_direction_nullspace(cam_i), viewing_direction_nullspace(cam_j))
    maps = []
    alphas = [np.linalg.lstsq(c.matrix.T, q, rcond=None)[0] for c in (cam_i, cam_j)]
    norm = np.linalg.norm(alphas[0])
    for cam, alpha in zip((cam_i, cam_j), alphas, strict=True):
        alpha = alpha / norm
        beta = np.array([alpha[1], -alpha[0]]) / np.linalg.norm(alpha)
        a = np.vstack([beta, alpha])
        maps.append(np.hstack([a, (-a @ cam.translation)[:, None]]))
    return maps[0], maps[1]


def sgbm_two_view(
    image_i: np.ndarray, image_j: np.ndarray, cam_i: AffineCamera, cam_j: AffineCamera, max_disp: int = 96
) -> np.ndarray:
    """(N, 3) points from SGBM on the rectified pair (image_i is the reference)."""
    a_i, a_j = rectifying_maps(cam_i, cam_j)
    h, w = image_i.shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    uv = np.vstack([corners @ a_i.T, corners @ a_j.T])
    off = -uv.min(axis=0) + 2
    size = (int(np.ceil(np.ptp(uv[:, 0]))) + 4, int(np.ceil(np.ptp(uv[:, 1]))) + 4)
    a_i = a_i.copy()
    a_j = a_j.copy()
    a_i[:, 2] += off
    a_j[:, 2] += off
    u8 = [np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8) for im in (image_i, image_j)]
    r_i = cv2.warpAffine(u8[0], a_i, size, flags=cv2.INTER_CUBIC)
    r_j = cv2.warpAffine(u8[1], a_j, size, flags=cv2.INTER_CUBIC)
    bs = 5
    sgbm = cv2.StereoSGBM_create(
        minDisparity=-max_disp // 2,
        numDisparities=max_disp,
        blockSize=bs,
        P1=8 * bs * bs,
        P2=32 * bs * bs,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        disp12MaxDiff=1,
        mode=cv2.STEREO_SGBM_MODE_HH,
    )
    disp = sgbm.compute(r_i, r_j).astype(np.float32) / 16.0
    valid = disp > (-max_disp // 2)
    vv, uu = np.nonzero(valid)
    d = disp[vv, uu]
    inv_i = cv2.invertAffineTransform(a_i)
    inv_j = cv2.invertAffineTransform(a_j)
    pi = np.stack([uu, vv, np.ones_like(uu)], 1).astype(np.float64) @ inv_i.T
    pj = np.stack([uu - d, vv, np.ones_like(uu)], 1).astype(np.float64) @ inv_j.T
    inside = (pi[:, 0] >= 0) & (pi[:, 0] <= w - 1) & (pi[:, 1] >= 0) & (pi[:, 1] <= h - 1)
    pi, pj = pi[inside], pj[inside]
    acc = NormalEquations(len(pi))
    ones = np.ones(len(pi), bool)
    acc.add_view(cam_i, pi, ones)
    acc.add_view(cam_j, pj, ones)
    pts = acc.solve(2)
    return pts[np.isfinite(pts).all(axis=1)]
