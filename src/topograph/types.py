"""Typed containers passed between stages.

These frozen dataclasses are the only things stages hand to each other. Arrays are NumPy; shapes and
units are given in each docstring. Cross-field invariants are checked in ``__post_init__``.

Conventions (SEM engine)
------------------------
* Image coordinates ``(x, y)`` in pixels, origin at the centre of the top-left pixel, x to the right,
  y down.
* World frame: X, Y span the substrate plane, Z is the height toward the electron beam (positive up).
  Units are micrometres when the pixel size is known, otherwise "px" (pixel units of the first view).
* Scaled orthographic camera: ``x = k [[1, 0, 0], [s, 1, 0]] R X + t`` (see :class:`AffineCamera`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LengthUnit = str  # "um" (micrometres) or "px" (pixel units of the reference view)


@dataclass(frozen=True)
class SemMetadata:
    """Microscope metadata of one SEM image, normalised to fixed units.

    Every field is optional: ``None`` means unknown. ``source`` names where each known field came from
    (e.g. ``{"tilt_deg": "fei", "pixel_size_um": "cli"}``); ``original`` keeps the raw vendor tree.
    """

    tilt_deg: float | None = None
    """Stage tilt in degrees (eucentric tilt about the tilt axis)."""
    stage_rotation_deg: float | None = None
    """Stage rotation about the stage normal, degrees."""
    tilt_axis_deg: float | None = None
    """Direction of the tilt axis in the image, degrees counter-clockwise from the image x axis."""
    pixel_size_um: float | None = None
    """Size of one image pixel on the specimen, micrometres."""
    magnification: float | None = None
    working_distance_mm: float | None = None
    beam_energy_kv: float | None = None
    vendor: str | None = None
    """"fei", "zeiss", "sidecar", "cli" or None."""
    data_bar_rows: int | None = None
    """Rows at the bottom of the image that hold the instrument's data bar (from metadata)."""
    source: dict[str, str] = field(default_factory=dict)
    original: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SemImage:
    """One SEM image: ``pixels`` float32 (H, W) in [0, 1], already cropped of the data bar."""

    name: str
    pixels: np.ndarray
    metadata: SemMetadata = field(default_factory=SemMetadata)
    path: Path | None = None
    crop_rows: int = 0
    """Rows removed from the bottom (data bar) before ``pixels``."""

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2:
            raise ValueError(f"SemImage.pixels must be 2-D (H, W), got shape {self.pixels.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


@dataclass(frozen=True)
class ImageSet:
    """An ordered series of SEM images of one specimen (ordered by tilt when tilts are known)."""

    images: tuple[SemImage, ...]

    def __post_init__(self) -> None:
        shapes = {im.shape for im in self.images}
        if len(shapes) > 1:
            raise ValueError(f"all images of a set must have one size, got {sorted(shapes)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> SemImage:
        return self.images[i]

    @property
    def names(self) -> list[str]:
        return [im.name for im in self.images]

    @property
    def tilts_deg(self) -> list[float | None]:
        return [im.metadata.tilt_deg for im in self.images]


@dataclass(frozen=True)
class Matches:
    """Correspondences between view ``i`` and view ``j``.

    ``xy_i``, ``xy_j``: (N, 2) float64 pixel coordinates; ``scores``: (N,) confidence in [0, 1]
    (1 for feature matches without a score).
    """

    i: int
    j: int
    xy_i: np.ndarray
    xy_j: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.xy_i.shape != self.xy_j.shape or self.xy_i.ndim != 2 or self.xy_i.shape[1] != 2:
            raise ValueError(f"Matches need two (N, 2) arrays, got {self.xy_i.shape} and {self.xy_j.shape}")
        if self.scores is not None and self.scores.shape != (self.xy_i.shape[0],):
            raise ValueError("Matches.scores must have shape (N,)")

    def __len__(self) -> int:
        return int(self.xy_i.shape[0])

    def subset(self, keep: np.ndarray) -> Matches:
        """Matches restricted to a boolean mask or index array ``keep``."""
        return Matches(
            self.i,
            self.j,
            self.xy_i[keep],
            self.xy_j[keep],
            None if self.scores is None else self.scores[keep],
        )


@dataclass(frozen=True)
class Tracks:
    """Multi-view tracks: ``xy`` (F, P, 2) pixel coordinates, NaN where a track is not seen in a view."""

    xy: np.ndarray

    def __post_init__(self) -> None:
        if self.xy.ndim != 3 or self.xy.shape[2] != 2:
            raise ValueError(f"Tracks.xy must have shape (F, P, 2), got {self.xy.shape}")

    @property
    def n_views(self) -> int:
        return int(self.xy.shape[0])

    @property
    def n_tracks(self) -> int:
        return int(self.xy.shape[1])

    @property
    def visible(self) -> np.ndarray:
        """(F, P) bool: track p is observed in view f."""
        return np.isfinite(self.xy).all(axis=2)

    def complete(self) -> Tracks:
        """Only the tracks seen in every view."""
        return Tracks(self.xy[:, self.visible.all(axis=0)])

    def measurement_matrix(self) -> np.ndarray:
        """W (2F, P): rows 2f and 2f+1 hold x and y of view f (NaN where unseen)."""
        f, p, _ = self.xy.shape
        return self.xy.transpose(0, 2, 1).reshape(2 * f, p).copy()


@dataclass(frozen=True)
class AffineCamera:
    """Scaled orthographic camera ``x = k [[1, 0, 0], [s, 1, 0]] R X + t``.

    ``rotation`` (3, 3) world→camera rotation; ``scale`` k in px per world unit (1 / pixel size in µm
    when the world is in µm); ``skew`` s; ``translation`` t (2,) in px.
    """

    rotation: np.ndarray
    scale: float = 1.0
    skew: float = 0.0
    translation: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def __post_init__(self) -> None:
        r = np.asarray(self.rotation, dtype=float)
        if r.shape != (3, 3):
            raise ValueError(f"AffineCamera.rotation must be (3, 3), got {r.shape}")
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation", np.asarray(self.translation, dtype=float).reshape(2))

    @property
    def matrix(self) -> np.ndarray:
        """The 2×3 affine projection matrix ``M = k [[1, 0, 0], [s, 1, 0]] R``."""
        c = np.array([[1.0, 0.0, 0.0], [self.skew, 1.0, 0.0]])
        return self.scale * c @ self.rotation

    @property
    def viewing_direction(self) -> np.ndarray:
        """Unit vector along the camera's optical axis in world coordinates (third row of R)."""
        return self.rotation[2].copy()

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project (N, 3) world points to (N, 2) pixel coordinates."""
        return np.asarray(points, dtype=float) @ self.matrix.T + self.translation


@dataclass(frozen=True)
class PointCloud:
    """``xyz`` (N, 3) in ``unit``; optional ``intensity`` (N,) in [0, 1] and ``normals`` (N, 3)."""

    xyz: np.ndarray
    unit: LengthUnit = "px"
    intensity: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"PointCloud.xyz must have shape (N, 3), got {self.xyz.shape}")
        n = self.xyz.shape[0]
        if self.intensity is not None and self.intensity.shape != (n,):
            raise ValueError("PointCloud.intensity must have shape (N,)")
        if self.normals is not None and self.normals.shape != (n, 3):
            raise ValueError("PointCloud.normals must have shape (N, 3)")

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


@dataclass(frozen=True)
class HeightMap:
    """A height map ``height`` (H, W) float32 in ``unit`` (NaN = unknown) on a regular grid.

    ``pixel_size`` is the grid spacing in ``lateral_unit``; ``origin`` the (x, y) of pixel (0, 0).
    """

    height: np.ndarray
    pixel_size: float
    unit: LengthUnit = "um"
    lateral_unit: LengthUnit = "um"
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.height.ndim != 2:
            raise ValueError(f"HeightMap.height must be 2-D, got {self.height.shape}")


@dataclass(frozen=True)
class Reconstruction:
    """Cameras and points of a tilt series.

    ``cameras``: one per view; ``points``: the triangulated cloud (one point per track);
    ``tracks``: the observations; ``rms_px_before`` / ``rms_px_after``: per-view reprojection RMS in px
    before and after bundle adjustment; ``notes``: human-readable statements (ambiguity resolution ...).
    """

    cameras: tuple[AffineCamera, ...]
    points: PointCloud
    tracks: Tracks
    rms_px_before: np.ndarray
    rms_px_after: np.ndarray
    tilts_deg: np.ndarray
    """Tilt of every view relative to the first, degrees."""
    camera_source: str
    """"metadata" or "factorization"."""
    notes: tuple[str, ...] = ()
