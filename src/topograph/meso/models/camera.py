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
        angle, tilt, pos, shift = self.pose.angle, self.pose.tilt, self.nadirs(), self.pose.rolling
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
