"""The full image deformation model: distortion -> rotation -> tilted pinhole -> shift -> rectification."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from topograph.meso.functional.projection import (
    Projection,
    normal_z,
    orthorectify,
    projection_named,
    rectify_to_reference,
    rolling_shutter,
    rotate_in_plane,
)
from topograph.meso.models.distortion import Distortion
from topograph.meso.models.pose import PoseModel


def sweep_motion(nadirs: Tensor, angle: Tensor, relative_scale: Tensor) -> Tensor:
    """(N, 2) image-plane motion of each photo of a sweep, in the image's own axes (unit speed, signed).

    A rolling shutter reads row ``y`` a line delay ``tau y`` after the middle row; a phone moving at image
    velocity ``v`` (pixels per second) then skews the photo by ``s = -tau v`` pixels per row. ``tau`` is one
    constant of the sensor, and a hand-held sweep moves at a steady pace along straight lines, so ``v`` has
    one speed and the direction of the photo's line, signed by the way it runs. The lines run along the
    sweep's main axis ``a`` (the leading eigenvector of ``sum u_k u_k^T`` over the unit steps ``u_k`` between
    capture-order neighbours); a step within 45 degrees of it is on a line, and a photo moves along ``a`` with
    the sign of its on-line steps' sum projected on ``a`` (the turn of a serpentine path is not its motion:
    the photo was taken moving along its line). A photo with no step on a line moves along the mean unit
    direction of its two steps.
    Carried into the image frame, ``v_i ~ -Rot(-theta_i) u_i / (Z_i / f)``, and normalised by the median
    ``|v_i|``, so ``s_i = shutter * v_i`` with ``shutter`` the skew of a photo at the median height.

    The speed is one number rather than each photo's step length: a steady sweep's photos are spaced by the
    shutter's timing, not by a change of speed (measured on the renderer's 5 x 3 sweep at the truth: central
    differences of the nadirs left 0.95-1.0 px at the frame's top and bottom rows of the four photos at the
    row ends, 0.02-0.26 px elsewhere; docs/benchmarks.md, issue 18 session 12).

    Args:
        nadirs: (N, 2) camera nadirs in capture order, object units.
        angle: (N,) in-plane angles, radians.
        relative_scale: (N,) ``Z_i / f``, object units per image pixel.

    Returns:
        (N, 2) motion, unitless (median norm 1; zeros for fewer than 2 images).
    """
    n = nadirs.shape[0]
    if n < 2:
        return torch.zeros_like(nadirs)
    step = nadirs[1:] - nadirs[:-1]
    unit = step / torch.linalg.norm(step, dim=1, keepdim=True).clamp_min(1e-12)
    axis = torch.linalg.eigh(unit.T @ unit)[1][:, -1]  # eigenvalues ascending: the main axis is the last
    aligned = ((unit @ axis).abs() > math.sqrt(0.5)).to(unit.dtype)  # within 45 degrees of the main axis
    zero = unit.new_zeros(1)
    w_back, w_fwd = torch.cat((zero, aligned)), torch.cat((aligned, zero))  # photo i: steps i-1 and i
    none = (w_back + w_fwd) == 0
    has_back, has_fwd = torch.cat((zero, torch.ones_like(aligned))), torch.cat((torch.ones_like(aligned), zero))
    w_back, w_fwd = torch.where(none, has_back, w_back), torch.where(none, has_fwd, w_fwd)
    pad = unit.new_zeros(1, 2)
    d = w_back[:, None] * torch.cat((pad, unit)) + w_fwd[:, None] * torch.cat((unit, pad))
    along = d @ axis  # on a line: the line's direction, signed (a photo's jitter off the line is not motion)
    d = torch.where((~none)[:, None], torch.sign(along)[:, None] * axis[None, :], d)
    d = d / torch.linalg.norm(d, dim=1, keepdim=True).clamp_min(1e-12)
    c, s = torch.cos(angle), torch.sin(angle)
    img = torch.stack((c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]), dim=1)
    img = -img / relative_scale[:, None]
    return img / torch.linalg.norm(img, dim=1).median().clamp_min(1e-9)


class MesoModel(nn.Module):
    """Owns every parameter of the back-projection (paper Sec. 3.1, Fig. 2e).

    Args:
        n_images: number of images.
        focal_px: initial pinhole focal length in pixels of the full-resolution images.
        distortion: the shared radial undistortion model (a null object for "none").
        heights: the camera-centric height model (``forward(images, index) -> (N, 1, H, W)``,
            ``regularization()``, ``groups()``).
        positions: optional (N, 2) initial camera positions, object units.
        rectification: ``"ortho"`` (Eqs. 4-5) or ``"reference"`` (Eq. 6, to ``reference_image``).
        projection: the back-projection strategy (:class:`~topograph.meso.functional.projection.Projection`)
            or its name, ``"expansion"`` (supplement Eqs. 4-5) or ``"exact"``.
        reference_image: index of the reference view.
    """

    def __init__(
        self,
        n_images: int,
        focal_px: float,
        distortion: Distortion,
        heights: nn.Module,
        positions: Tensor | None = None,
        rectification: str = "ortho",
        projection: str | Projection = "expansion",
        reference_image: int = 0,
    ) -> None:
        super().__init__()
        if rectification not in ("ortho", "reference"):
            raise ValueError(f"rectification must be 'ortho' or 'reference', got {rectification!r}")
        self.pose = PoseModel(n_images, positions)
        self.distortion = distortion
        self.heights = heights
        self.log_focal = nn.Parameter(torch.tensor(math.log(focal_px), dtype=torch.float32))
        self.rectification = rectification
        self.projection = projection_named(projection)
        self.reference_image = int(reference_image)

    @property
    def n_images(self) -> int:
        return self.pose.n_images

    def focal(self) -> Tensor:
        """() pinhole focal length in pixels."""
        return torch.exp(self.log_focal)

    def camera_heights(self) -> Tensor:
        """(N,) camera heights ``Z_i`` above the object plane, object units."""
        return self.focal() * self.pose.relative_scale()

    def nadirs(self) -> Tensor:
        """(N, 2) camera nadirs ``R`` (vanishing points): the optical-axis footprint plus ``Z n_xy / n_z``."""
        tilt = self.pose.tilt
        return self.pose.position + self.camera_heights()[:, None] * tilt / normal_z(tilt)[:, None]

    def rolling_shifts(self) -> Tensor:
        """(N, 2) rolling-shutter image motion ``s_i`` of every image, pixels per row: the free per-image term
        plus the sweep's skew times each photo's own motion (:func:`sweep_motion`; the motion is taken from
        the current nadirs without gradient, so the skew does not pull the positions)."""
        with torch.no_grad():
            motion = sweep_motion(self.nadirs(), self.pose.angle, self.pose.relative_scale())
        return self.pose.rolling + self.pose.shutter * motion

    def flat_points(self, uv: Tensor, index: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Back-project pixels onto the object plane ignoring height.

        Args:
            uv: (P, 2) raw pixel coordinates of the full-resolution images (shared by all images).
            index: optional (N,) subset of images.

        Returns:
            ``(relative, positions, Z)``: (N, P, 2) points relative to each nadir, (N, 2) nadirs,
            (N,) camera heights.
        """
        xy = self.distortion.undistort(uv)
        angle, tilt, pos, shift = self.pose.angle, self.pose.tilt, self.nadirs(), self.rolling_shifts()
        z = self.camera_heights()
        if index is not None:
            angle, tilt, pos, z, shift = angle[index], tilt[index], pos[index], z[index], shift[index]
        rotated = rotate_in_plane(rolling_shutter(xy, shift), angle)
        rel = self.projection.backproject(rotated, tilt, z, self.focal())
        return rel, pos, z

    def object_points(self, uv: Tensor, height: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """Back-project and rectify pixels (the full deformation of Fig. 2e).

        Args:
            uv: (P, 2) raw pixel coordinates (full-resolution pixel units).
            height: optional (N, P) camera-centric heights at those pixels, object units.
            index: optional (N,) subset of images.

        Returns:
            (N, P, 2) positions on the common object plane, object units.
        """
        rel, pos, z = self.flat_points(uv, index)
        if height is None:
            return rel + pos[:, None, :]
        if self.rectification == "ortho":
            return orthorectify(rel, height, z) + pos[:, None, :]
        zr = self.camera_heights()[self.reference_image]
        pr = self.nadirs()[self.reference_image]
        return rectify_to_reference(rel + pos[:, None, :], height, pos, z, pr, zr)

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """All trainable parameters by group name."""
        out: dict[str, list[nn.Parameter]] = {}
        out.update(self.pose.groups())
        out.update(self.distortion.groups())
        out.update(self.heights.groups())
        out["focal"] = [self.log_focal]
        return {k: v for k, v in out.items() if v}
