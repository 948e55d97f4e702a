"""Back-projection of camera pixels onto the object plane and rectification by height (pure torch).

Frames (all lengths in one unit, e.g. mosaic pixels or mm):

* Camera frame: x right, y down (image axes), z along the optical axis toward the scene. An undistorted
  image point relative to the principal point ``(x, y)`` is the ray ``(x, y, f)``.
* World frame: the object plane is ``z = 0``; x, y span it (x right, y down, like the mosaic image); z
  points away from the camera, so a camera at height ``Z`` sits at ``z = -Z`` and a surface of height
  ``h`` (toward the camera, positive up) at ``z = -h``.
* Camera orientation: the object-plane normal ``n = (n_x, n_y, n_z)`` expressed in the camera frame
  (``n = (0, 0, 1)`` when image and object planes are parallel), plus an in-plane angle ``theta``. The
  camera-to-world rotation is the in-plane rotation followed by the smallest rotation taking ``n`` to
  the world z axis.
* Camera position: ``(X, Y)``, the foot of the perpendicular from the centre of projection to the
  object plane. It is the vanishing point ``R`` of vertical lines used by orthorectification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def rolling_shutter(points: Tensor, shift: Tensor) -> Tensor:
    """Undo a rolling shutter's row-linear displacement: ``p' = p + s y`` (supplement step 0).

    A sensor read out row by row while the camera moves sees row ``y`` (relative to the principal point,
    i.e. about the middle row, whose instant the pose describes) displaced by the image motion during its
    delay, ``s y`` with ``s`` the motion in pixels per row (``s_x``: skew, ``s_y``: stretch).

    Args:
        points: (N, P, 2) or (P, 2) undistorted points relative to the principal point.
        shift: (N, 2) ``s`` of each image.

    Returns:
        (N, P, 2) points on the middle row's instant.
    """
    if points.dim() == 2:
        points = points.unsqueeze(0)
    return points + shift[:, None, :] * points[..., 1:2]


def rotate_in_plane(points: Tensor, angle: Tensor) -> Tensor:
    """Rotate image-plane points by ``angle`` (supplement step 1).

    Args:
        points: (N, P, 2) or (P, 2) points relative to the principal point.
        angle: (N,) angles in radians (counter-clockwise in a y-up frame, clockwise on screen).

    Returns:
        (N, P, 2) rotated points.
    """
    if points.dim() == 2:
        points = points.unsqueeze(0)
    c = torch.cos(angle)[:, None]
    s = torch.sin(angle)[:, None]
    x, y = points[..., 0], points[..., 1]
    return torch.stack((c * x - s * y, s * x + c * y), dim=-1)


def normal_z(tilt: Tensor) -> Tensor:
    """``n_z = sqrt(1 - n_x^2 - n_y^2)`` for (..., 2) tilt components ``(n_x, n_y)``."""
    return torch.sqrt(torch.clamp(1.0 - (tilt * tilt).sum(-1), min=1e-6))


def backproject_tilted(points: Tensor, tilt: Tensor, camera_height: Tensor, focal: Tensor) -> Tensor:
    """Tilted-pinhole back-projection onto the object plane, 2nd-order expansion (supplement Eqs. 4-5).

    The exact map (supplement Eq. 3) involves ``(1 + n_z) / (n_x^2 + n_y^2)``, which is 0/0 for an
    untilted camera in the supplement's sign convention. Its second-order Taylor expansion in
    ``(n_x, n_y)`` about zero, written in this module's convention, is::

        x_obj = Z / (f n_z) * (x - x q + x q^2 + f n_x q / 2 - f n_x),   q = (n_x x + n_y y) / f

    (and the same for y with ``n_y``). The constant ``-f n_x`` term is the offset between the camera's
    nadir and where its optical axis meets the plane; the supplement's expression folds it into the
    lateral position, but it is kept here so that the camera position is the vanishing point used by
    orthorectification (Eqs. 4-5). The truncation error is below 0.1 px for tilts up to 3 degrees at a
    60-degree field of view (see :func:`backproject_tilted_exact`).

    Args:
        points: (N, P, 2) undistorted, in-plane-rotated image points relative to the principal point,
            in pixels.
        tilt: (N, 2) ``(n_x, n_y)`` of the object-plane normal in each camera frame.
        camera_height: (N,) distance ``Z`` from the centre of projection to the object plane.
        focal: () pinhole focal length ``f`` in pixels.

    Returns:
        (N, P, 2) object-plane coordinates relative to each camera's nadir, in the unit of ``Z``.
    """
    nx = tilt[:, 0:1]
    ny = tilt[:, 1:2]
    nz = normal_z(tilt)[:, None]
    x, y = points[..., 0], points[..., 1]
    q = (nx * x + ny * y) / focal
    k = camera_height[:, None] / (focal * nz)
    common = 1.0 - q + q * q
    xo = k * (x * common + focal * nx * (0.5 * q - 1.0))
    yo = k * (y * common + focal * ny * (0.5 * q - 1.0))
    return torch.stack((xo, yo), dim=-1)


def backproject_tilted_exact(points: Tensor, tilt: Tensor, camera_height: Tensor, focal: Tensor) -> Tensor:
    """Exact tilted-pinhole back-projection (reference for :func:`backproject_tilted`).

    The ray ``d = (x, y, f)`` meets the plane ``n . P = Z`` at ``P = Z d / (n . d)`` (supplement Eq. 2);
    the rotation taking ``n`` to the world z axis is applied in the stable Rodrigues form
    ``R v = n_z v + a x v + a (a . v) / (1 + n_z)`` with ``a = n x e_z = (n_y, -n_x, 0)``, which has no
    0/0 for ``n_z`` near 1.

    Args:
        points: (N, P, 2) image points relative to the principal point, pixels.
        tilt: (N, 2) ``(n_x, n_y)``.
        camera_height: (N,) ``Z``.
        focal: () ``f`` in pixels.

    Returns:
        (N, P, 2) object-plane coordinates relative to each camera's nadir.
    """
    nx = tilt[:, 0:1]
    ny = tilt[:, 1:2]
    nz = normal_z(tilt)[:, None]
    x, y = points[..., 0], points[..., 1]
    s = nx * x + ny * y + nz * focal
    c = (ny * x - nx * y) / (1.0 + nz)
    k = camera_height[:, None] / s
    xo = k * (nz * x - nx * focal + ny * c)
    yo = k * (nz * y - ny * focal - nx * c)
    return torch.stack((xo, yo), dim=-1)


@dataclass(frozen=True)
class Projection:
    """A back-projection strategy: ``backproject(points, tilt, camera_height, focal)`` with the signature of
    :func:`backproject_tilted`; ``name`` is its configuration value (``model.projection``)."""

    name: str
    backproject: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


EXPANSION = Projection("expansion", backproject_tilted)
"""Second-order expansion of the tilted pinhole (supplement Eqs. 4-5; the paper's model)."""
EXACT = Projection("exact", backproject_tilted_exact)
"""The exact tilted pinhole (supplement Eq. 2)."""
PROJECTIONS = {p.name: p for p in (EXPANSION, EXACT)}


def projection_named(name: str | Projection) -> Projection:
    """The strategy of a configuration value (``"expansion"`` or ``"exact"``); a strategy is returned as is.

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(name, Projection):
        return name
    if name not in PROJECTIONS:
        raise ValueError(f"projection must be one of {sorted(PROJECTIONS)}, got {name!r}")
    return PROJECTIONS[name]


def orthorectify(points_rel: Tensor, height: Tensor, camera_height: Tensor) -> Tensor:
    """Move back-projected points toward the vanishing point in proportion to height (paper Eqs. 4-5).

    A surface point of height ``h`` whose ray meets the object plane at ``r_obj`` lies laterally at
    ``r_obj + r_rectify`` with ``r_rectify = dr (r_obj - R) / |r_obj - R|`` and ``h = -Z dr / |r_obj - R|``,
    i.e. ``r_rectify = -(h / Z) (r_obj - R)``. The relation is exact for a pinhole camera.

    Args:
        points_rel: (N, P, 2) flat back-projection ``r_obj - R`` relative to each camera's nadir ``R``.
        height: (N, P) camera-centric heights ``h`` (same unit as ``Z``, positive toward the camera).
        camera_height: (N,) ``Z``.

    Returns:
        (N, P, 2) rectified positions relative to the nadir, ``(r_obj - R) (1 - h / Z)``.
    """
    return points_rel * (1.0 - height / camera_height[:, None]).unsqueeze(-1)


def height_from_shift(shift: Tensor, distance_to_vanishing_point: Tensor, camera_height: Tensor) -> Tensor:
    """Height implied by a signed rectification shift (paper Eq. 5): ``h = -Z dr / |r_obj - R|``.

    Args:
        shift: (...) signed shift ``dr`` along the unit vector ``(r_obj - R) / |r_obj - R|``.
        distance_to_vanishing_point: (...) ``|r_obj - R|``.
        camera_height: (...) ``Z`` (broadcastable).

    Returns:
        (...) heights.
    """
    return -camera_height * shift / distance_to_vanishing_point


def rectify_to_reference(
    points: Tensor,
    height: Tensor,
    vanishing_point: Tensor,
    camera_height: Tensor,
    reference_point: Tensor,
    reference_height: Tensor | float,
) -> Tensor:
    """Rectify back-projected points to an arbitrary untilted reference camera (paper Eq. 6).

    ``r_rectify = (h / Z_i) (Z_i - Z_ref) / (Z_ref - h) (r_obj - R_i) + h / (Z_ref - h) (R_i - R_ref)``;
    for ``Z_ref -> inf`` this is :func:`orthorectify`.

    Args:
        points: (N, P, 2) absolute flat back-projections ``r_obj``.
        height: (N, P) camera-centric heights.
        vanishing_point: (N, 2) ``R_i``.
        camera_height: (N,) ``Z_i``.
        reference_point: (2,) ``R_ref``.
        reference_height: () ``Z_ref``.

    Returns:
        (N, P, 2) rectified absolute positions ``r_obj + r_rectify``.
    """
    zi = camera_height[:, None]
    denom = reference_height - height
    a = (height / zi) * (zi - reference_height) / denom
    b = height / denom
    rel = points - vanishing_point[:, None, :]
    shift = a.unsqueeze(-1) * rel + b.unsqueeze(-1) * (vanishing_point - reference_point)[:, None, :]
    return points + shift
