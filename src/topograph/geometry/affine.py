"""Scaled orthographic (affine) cameras of a tilting SEM stage, in the one world frame of topograph.

Frame (docs/conventions.md, with a figure):

* Image: x to the right (columns), y **down** (rows), as displayed. Angles *in the image* are measured
  **counter-clockwise as displayed** from the image x axis (toward −y).
* World = specimen (stage) frame, right-handed: X, Y span the substrate plane, **Z points toward the
  detector** (out of the screen when the image is looked at). At zero tilt and rotation X is the image x
  axis and Y the image **up** direction (−y), so the world→camera rotation is
  ``R₀ = diag(1, −1, −1)`` (camera frame: x right, y down, z along the beam into the specimen).
* Stage rotation φ turns the specimen right-handedly about Z; stage tilt θ then turns it
  right-handedly about the tilt axis ``u = (cos a, sin a, 0)``, ``a`` the axis direction in the image
  (counter-clockwise from x). A view's world→camera rotation is ``R = R₀ · Rot(u, θ) · Rz(φ)``.
  Consequence (a check anyone can do on a real series): with the axis along x (a = 0), points above the
  eucentric height move **down** in the image as the tilt increases.
* The camera's third row ``R[2]`` is the beam direction (into the specimen); :func:`toward_detector`
  gives ``−R[2]``.
"""

from __future__ import annotations

import numpy as np

from topograph.types import AffineCamera

R0 = np.diag([1.0, -1.0, -1.0])
"""World→camera rotation of the untilted, unrotated stage: image x = X, image y = −Y, beam = −Z."""


def rotation_about_axis(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues' formula: ``R = I + sin θ [u]× + (1 − cos θ) [u]×²`` for the unit axis ``u``."""
    u = np.asarray(axis, dtype=float)
    u = u / np.linalg.norm(u)
    kx = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1.0 - np.cos(angle_rad)) * (kx @ kx)


def tilt_axis_vector(tilt_axis_deg: float) -> np.ndarray:
    """Unit tilt axis ``u = (cos a, sin a, 0)`` in the world frame for an image direction ``a`` (CCW from x)."""
    a = np.deg2rad(tilt_axis_deg)
    return np.array([np.cos(a), np.sin(a), 0.0])


def image_direction_deg(vector_cam: np.ndarray) -> float:
    """Direction (degrees, counter-clockwise as displayed from the image x axis) of a camera-frame vector.

    The camera frame has y pointing down, so the displayed angle is ``atan2(−v_y, v_x)``.
    """
    return float(np.rad2deg(np.arctan2(-vector_cam[1], vector_cam[0])))


def toward_detector(camera: AffineCamera) -> np.ndarray:
    """Unit world vector from the specimen toward the detector of a view: ``−R[2]``."""
    return -np.asarray(camera.rotation[2], dtype=float)


def stage_rotation_matrix(tilt_deg: float, tilt_axis_deg: float = 0.0, stage_rotation_deg: float = 0.0) -> np.ndarray:
    """World→camera rotation of one view: ``R = R₀ · Rot(u(a), θ) · Rz(φ)`` (module docstring)."""
    rz = rotation_about_axis(np.array([0.0, 0.0, 1.0]), np.deg2rad(stage_rotation_deg))
    return R0 @ rotation_about_axis(tilt_axis_vector(tilt_axis_deg), np.deg2rad(tilt_deg)) @ rz


def camera_from_stage(
    tilt_deg: float,
    tilt_axis_deg: float = 0.0,
    stage_rotation_deg: float = 0.0,
    pixel_size_um: float | None = None,
    translation_px: np.ndarray | None = None,
) -> AffineCamera:
    """Camera of one view from stage metadata: R from tilt and rotation, ``k = 1 / pixel size``, s = 0.

    Without a pixel size the world is in pixel units (k = 1).
    """
    k = 1.0 if pixel_size_um is None else 1.0 / float(pixel_size_um)
    t = np.zeros(2) if translation_px is None else np.asarray(translation_px, dtype=float)
    return AffineCamera(
        rotation=stage_rotation_matrix(tilt_deg, tilt_axis_deg, stage_rotation_deg),
        scale=k,
        skew=0.0,
        translation=t,
    )


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Angle of the relative rotation ``R_b R_aᵀ`` in degrees: ``acos((tr − 1) / 2)``."""
    rel = np.asarray(r_b) @ np.asarray(r_a).T
    c = np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.rad2deg(np.arccos(c)))


def decompose_affine_matrix(m: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Split a 2×3 matrix ``M = k [[1, 0, 0], [s, 1, 0]] R`` into ``(k, s, R)``.

    With rows ``m1 = k r1`` and ``m2 = k (s r1 + r2)``: ``k = |m1|``, ``r1 = m1 / k``,
    ``s = (m2 · r1) / k``, ``r2 = (m2 − k s r1) / |…|``, ``r3 = r1 × r2``. (The small deviation from
    orthonormality of a noisy ``M`` goes into ``|r2|`` and is dropped.)
    """
    m = np.asarray(m, dtype=float)
    k = float(np.linalg.norm(m[0]))
    r1 = m[0] / k
    s = float(m[1] @ r1) / k
    r2 = m[1] - k * s * r1
    r2 = r2 / np.linalg.norm(r2)
    r3 = np.cross(r1, r2)
    return k, s, np.vstack([r1, r2, r3])
