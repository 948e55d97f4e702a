"""Fixing the tilt gauge: express the reconstruction relative to the scene's dominant plane.

A common tilt of all cameras is indistinguishable from a tilted object plane (rotating the whole world
leaves every image unchanged), so the optimisation determines the height map only up to a plane
``h = a x + b y + c``. After optimisation the model is rotated (to first order in the slopes) so that
the robustly fitted dominant plane of the height map becomes ``h = 0``:

* surface points: ``h' = h - (a x + b y + c)``,
* camera centres (nadirs): ``X' = X + a Z``, ``Y' = Y + b Z``, ``Z' = Z - (a X + b Y + c)``,
* object-plane normals (camera frame): ``n' = R_n^T (a, b, 1) / |(a, b, 1)|``,

followed by one global scale so that the object unit stays the model's gauge (geometric-mean camera
height equal to the focal length).
"""

from __future__ import annotations

import numpy as np
import torch

from topograph.meso.functional.projection import normal_z
from topograph.meso.functional.splat import GridSpec
from topograph.meso.models.camera import MesoModel
from topograph.meso.mosaic import pixel_coordinates


def fit_dominant_plane(height: np.ndarray, grid: GridSpec, iterations: int = 15) -> tuple[float, float, float]:
    """Robust plane ``h = a x + b y + c`` through the dominant surface of a height map.

    Iteratively reweighted least squares with Tukey biweights (scale 4.685 x 1.4826 MAD), so that
    raised objects covering a minority of the area do not tilt the plane.

    Args:
        height: (H, W) heights (NaN = unknown).
        grid: the map's grid (object coordinates of the cells).
        iterations: IRLS iterations.

    Returns:
        ``(a, b, c)`` in height units per object unit, and height units.
    """
    ii, jj = np.nonzero(np.isfinite(height))
    if ii.size < 3:
        return 0.0, 0.0, 0.0
    x = grid.origin[0] + grid.cell * jj
    y = grid.origin[1] + grid.cell * ii
    h = height[ii, jj].astype(float)
    a = np.column_stack((x, y, np.ones_like(x)))
    w = np.ones_like(h)
    coef = np.zeros(3)
    for _ in range(iterations):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], h * sw, rcond=None)
        r = h - a @ coef
        s = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-9
        u = r / (4.685 * s)
        w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if w.sum() < 3:
            break
    return float(coef[0]), float(coef[1]), float(coef[2])


def _rotation_from_normal(n: torch.Tensor) -> torch.Tensor:
    """(N, 3) unit normals -> (N, 3, 3) rotations taking each normal to e_z (stable Rodrigues form)."""
    nx, ny, nz = n[:, 0], n[:, 1], n[:, 2]
    zero = torch.zeros_like(nx)
    a = torch.stack((ny, -nx, zero), dim=1)
    ax = torch.stack(
        (
            torch.stack((zero, -a[:, 2], a[:, 1]), 1),
            torch.stack((a[:, 2], zero, -a[:, 0]), 1),
            torch.stack((-a[:, 1], a[:, 0], zero), 1),
        ),
        dim=1,
    )
    eye = torch.eye(3, dtype=n.dtype).expand(n.shape[0], 3, 3)
    return nz[:, None, None] * eye + ax + a[:, :, None] * a[:, None, :] / (1.0 + nz)[:, None, None]


@torch.no_grad()
def level_model(model: MesoModel, plane: tuple[float, float, float], image_size: tuple[int, int]) -> None:
    """Rotate the model in place so that the plane ``h = a x + b y + c`` (object units) becomes ``h = 0``.

    The heights are re-expressed through the :class:`~topograph.meso.models.heights.HeightModel` protocol
    (``maps`` / ``set_maps``): explicit maps are rewritten; a CNN stores the result as its fixed correction
    (its network weights are unchanged).

    Args:
        model: the optimised model (parameters are modified).
        plane: ``(a, b, c)`` from :func:`fit_dominant_plane` (heights in object units).
        image_size: ``(W, H)`` of the images.
    """
    a, b, c = plane
    pose = model.pose
    dev = pose.position.device
    # camera-centric heights relative to the plane, at the object positions of the map pixels
    maps = model.heights.maps
    n, _, mh, mw = maps.shape
    uv = pixel_coordinates(image_size, (mh, mw), dev)
    pts = model.object_points(uv, maps.reshape(n, -1))
    new_maps = maps.reshape(n, -1) - (a * pts[..., 0] + b * pts[..., 1] + c)
    z = model.camera_heights()
    nadir = model.nadirs()
    x, y = nadir[:, 0], nadir[:, 1]
    new_nadir = torch.stack((x + a * z, y + b * z), dim=1)
    new_z = z - (a * x + b * y + c)
    # normals: n' = R_n^T d' with d' the new "down" direction in the old world frame
    nvec = torch.cat((pose.tilt, normal_z(pose.tilt)[:, None]), dim=1)
    rot = _rotation_from_normal(nvec)  # camera -> world
    down = torch.tensor([a, b, 1.0], dtype=nvec.dtype, device=dev)
    down = down / torch.linalg.norm(down)
    new_n = torch.einsum("nji,j->ni", rot, down)
    # global scale so that the geometric mean of Z / f stays 1 (the model's gauge)
    f = model.focal()
    s = torch.exp(-torch.log(new_z / f).mean())
    new_tilt = new_n[:, :2]
    axis_foot = new_nadir - new_z[:, None] * new_tilt / new_n[:, 2:3]  # the parameter is the axis footprint
    pose.position.copy_(axis_foot * s)
    pose.log_scale.copy_(torch.log(new_z * s / f))
    pose.tilt.copy_(new_tilt)
    model.heights.set_maps((new_maps * s).reshape(maps.shape))
