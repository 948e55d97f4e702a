"""Typed containers of the mesoscopic engine (NumPy; torch lives only inside the engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ExifInfo:
    """Camera facts read from one image's EXIF (``None`` = absent)."""

    focal_mm: float | None = None
    """Effective focal length (EXIF FocalLength), mm."""
    focal_35mm: float | None = None
    """35 mm-equivalent focal length, mm."""
    pixel_pitch_um: float | None = None
    """Sensor pixel pitch of the stored image, micrometres (from FocalPlaneXResolution or the 35 mm
    equivalent)."""
    focus_distance_m: float | None = None
    """EXIF SubjectDistance, metres."""
    camera: str | None = None


@dataclass(frozen=True)
class MesoImages:
    """An ordered set of phone images of one scene.

    ``pixels`` (N, H, W, 3) uint8 RGB; ``names`` and ``exif`` one per image; ``paths`` where known.
    """

    names: tuple[str, ...]
    pixels: np.ndarray
    exif: tuple[ExifInfo, ...]
    paths: tuple[Path | None, ...] = ()

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4 or self.pixels.shape[3] != 3:
            raise ValueError(f"MesoImages.pixels must be (N, H, W, 3), got {self.pixels.shape}")
        if self.pixels.dtype != np.uint8:
            raise ValueError(f"MesoImages.pixels must be uint8, got {self.pixels.dtype}")
        n = self.pixels.shape[0]
        if len(self.names) != n or len(self.exif) != n:
            raise ValueError("MesoImages needs one name and one ExifInfo per image")
        if self.paths and len(self.paths) != n:
            raise ValueError("MesoImages.paths must be empty or have one entry per image")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[1])

    def subset(self, keep: list[int]) -> MesoImages:
        """The images at indices ``keep``, in that order."""
        paths = tuple(self.paths[k] for k in keep) if self.paths else ()
        return MesoImages(
            tuple(self.names[k] for k in keep), self.pixels[keep], tuple(self.exif[k] for k in keep), paths
        )


@dataclass(frozen=True)
class Intrinsics:
    """Resolved camera intrinsics and absolute-scale inputs (sources in ``source``)."""

    focal_mm: float
    """Effective focal length ``f_eff``, mm."""
    pixel_pitch_mm: float
    focal_px: float
    """Initial pinhole focal length in pixels."""
    magnification: float | None
    """Given magnification of the reference image (None if from scale points or unknown)."""
    source: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InputChecks:
    """Results of the input checks; ``warnings`` holds one line per problem found."""

    sharpness: np.ndarray
    """(N,) sharpness scores relative to the set's median (1 = median)."""
    blurry: tuple[str, ...]
    overlap: np.ndarray | None = None
    """(N, N) overlap fractions from the initialisation (0 = no verified overlap)."""
    isolated: tuple[str, ...] = ()
    focal_mm: tuple[float | None, ...] = ()
    focus_distance_m: tuple[float | None, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {
            "images": list(names),
            "sharpness_relative": self.sharpness.tolist(),
            "blurry": list(self.blurry),
            "overlap": None if self.overlap is None else self.overlap.tolist(),
            "isolated": list(self.isolated),
            "exif_focal_mm": list(self.focal_mm),
            "exif_focus_distance_m": list(self.focus_distance_m),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class CameraEstimate:
    """Recovered cameras in the object frame.

    Object units: ``mm_per_unit`` mm each when the scale is known, otherwise mosaic pixels.
    ``positions`` (N, 2) nadirs; ``heights`` (N,) ``Z_i``; ``tilts`` (N, 2) ``(n_x, n_y)``;
    ``angles_deg`` (N,); ``gains`` / ``biases`` (N,); ``heights_mm`` (N,) from Eq. 8 (NaN if unknown).
    """

    names: tuple[str, ...]
    positions: np.ndarray
    heights: np.ndarray
    tilts: np.ndarray
    angles_deg: np.ndarray
    gains: np.ndarray
    biases: np.ndarray
    focal_px: float
    distortion: dict[str, Any]
    heights_mm: np.ndarray
    mm_per_unit: float | None

    def to_dict(self) -> dict[str, Any]:
        cams = []
        for i, name in enumerate(self.names):
            cams.append(
                {
                    "name": name,
                    "position_units": self.positions[i].tolist(),
                    "position_mm": None
                    if self.mm_per_unit is None
                    else (self.positions[i] * self.mm_per_unit).tolist(),
                    "height_units": float(self.heights[i]),
                    "height_mm": None if not np.isfinite(self.heights_mm[i]) else float(self.heights_mm[i]),
                    "tilt_normal": [float(self.tilts[i, 0]), float(self.tilts[i, 1])],
                    "tilt_deg": float(np.degrees(np.arcsin(min(1.0, float(np.hypot(*self.tilts[i])))))),
                    "in_plane_angle_deg": float(self.angles_deg[i]),
                    "gain": float(self.gains[i]),
                    "bias": float(self.biases[i]),
                }
            )
        return {
            "focal_px": self.focal_px,
            "mm_per_unit": self.mm_per_unit,
            "distortion": self.distortion,
            "cameras": cams,
        }
