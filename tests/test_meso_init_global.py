"""Joint solve of feature links: tilted cameras with known truth are recovered from exact matches, and a
wrong link (a repeated-texture false match) is rejected by loop closure instead of bending the others."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from topograph.meso.functional.projection import backproject_tilted_exact, normal_z, rotate_in_plane
from topograph.meso.init_features import PairLink
from topograph.meso.init_global import solve_links

SIZE = (400, 300)
FOCAL = 420.0


def _truth() -> dict[str, np.ndarray]:
    """Six cameras on two parallel lines, the second flown the other way round; tilts up to ~8 degrees."""
    gen = np.random.default_rng(4)
    pos = np.array([[0, 0], [150, 10], [300, 0], [0, 160], [150, 170], [300, 165]], float)
    angles = np.radians([0.0, 4.0, -3.0, 178.0, 183.0, 176.0])
    tilts = gen.uniform(-0.14, 0.14, (6, 2))
    log_scales = gen.uniform(-0.08, 0.08, 6)
    log_scales -= log_scales.mean()
    pos -= pos.mean(0)
    return {"positions": pos, "angles": angles, "tilts": tilts, "log_scales": log_scales}


def _plane_homographies(t: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each camera's pixel -> object-plane homography (exact tilted pinhole, the model's conventions)."""
    w, h = SIZE
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    u, v = np.meshgrid(np.linspace(0, w - 1, 6), np.linspace(0, h - 1, 5))
    uv = np.stack((u.ravel(), v.ravel()), 1)
    out = []
    for k in range(6):
        tilt = torch.tensor(t["tilts"][k : k + 1], dtype=torch.float64)
        z = FOCAL * float(np.exp(t["log_scales"][k]))
        rot = rotate_in_plane(torch.tensor(uv - centre)[None], torch.tensor([t["angles"][k]], dtype=torch.float64))
        rel = backproject_tilted_exact(rot, tilt, torch.tensor([z], dtype=torch.float64), torch.tensor(FOCAL))[0]
        nadir = t["positions"][k] + z * t["tilts"][k] / float(normal_z(tilt)[0])
        hom, _ = cv2.findHomography(uv, rel.numpy() + nadir, 0)
        out.append(hom)
    return out


def _links(homs: list[np.ndarray]) -> list[PairLink]:
    w, h = SIZE
    u, v = np.meshgrid(np.linspace(5, w - 6, 20), np.linspace(5, h - 6, 15))
    grid = np.stack((u.ravel(), v.ravel(), np.ones(u.size)), 1)
    links = []
    for i in range(6):
        for j in range(i + 1, 6):
            hij = np.linalg.inv(homs[j]) @ homs[i]
            p = grid @ hij.T
            uj = p[:, :2] / p[:, 2:]
            inside = (uj[:, 0] >= 0) & (uj[:, 0] < w) & (uj[:, 1] >= 0) & (uj[:, 1] < h)
            if inside.sum() >= 20:
                links.append(PairLink(i, j, grid[inside, :2], uj[inside], hij))
    return links


def test_tilted_cameras_are_recovered_and_a_wrong_link_is_rejected():
    t = _truth()
    links = _links(_plane_homographies(t))
    assert len(links) >= 8  # redundancy: loops through both lines
    clean = solve_links(links, 6, SIZE, FOCAL, "exact", root=0)
    assert clean.linked.all() and not clean.rejected
    assert np.abs(clean.positions - t["positions"]).max() < 0.5, clean.positions - t["positions"]
    wrapped = (clean.angles - t["angles"] + np.pi) % (2 * np.pi) - np.pi
    assert np.degrees(np.abs(wrapped)).max() < 0.05
    assert np.abs(clean.tilts - t["tilts"]).max() < 0.003
    assert np.abs(clean.log_scales - t["log_scales"]).max() < 0.002
    assert np.nanmax(clean.residual_px) < 0.05

    # a false match of look-alike texture: link 1-4's matches all land 25 px off (a rotated, shifted copy)
    k = next(n for n, lk in enumerate(links) if (lk.i, lk.j) == (1, 4))
    bad = links[k]
    turned = cv2.getRotationMatrix2D((200.0, 150.0), 6.0, 1.0)
    moved = np.c_[bad.uv_j, np.ones(len(bad.uv_j))] @ turned.T + (25.0, -10.0)
    links[k] = PairLink(1, 4, bad.uv_i, moved, bad.h_ij)
    fit = solve_links(links, 6, SIZE, FOCAL, "exact", root=0)
    assert fit.rejected == [(1, 4)]
    assert np.abs(fit.positions - t["positions"]).max() < 0.5
    assert np.nanmax(fit.residual_px) < 0.05
