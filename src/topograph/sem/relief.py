"""How much height a tilt series can resolve: height resolution from the tilt difference, and the parallax
the specimen's relief actually produces (MeX's rule "height : diagonal at least 1 : 70" in other words)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topograph.types import Reconstruction

MATCH_PRECISION_PX = 0.1
"""Correspondence precision the resolution is quoted for (sub-pixel flow / refined tracks reach ~0.1 px)."""

MIN_RELIEF_PARALLAX_PX = 5.0
"""Relief parallax below which heights are mostly noise (a few disparity levels between lowest and highest)."""


@dataclass(frozen=True)
class ReliefCheck:
    """``largest_tilt_difference_deg``: the widest pair of the series; ``height_resolution_px``: height step
    (in px of the reference view) that moves a point by ``match_precision_px`` in that pair;
    ``relief_px``: 2nd–98th percentile height range of the sparse cloud along the reference view's
    direction, px; ``relief_parallax_px``: the disparity that range produces in the widest pair."""

    largest_tilt_difference_deg: float
    match_precision_px: float
    height_resolution_px: float
    relief_px: float
    relief_parallax_px: float

    def summary(self, pixel_size_um: float | None) -> dict[str, float | None]:
        """JSON-ready figures (µm values only when the pixel size is known)."""
        um = (lambda v: v * pixel_size_um) if pixel_size_um else (lambda v: None)
        return {
            "largest_tilt_difference_deg": self.largest_tilt_difference_deg,
            "match_precision_px": self.match_precision_px,
            "height_resolution_px": self.height_resolution_px,
            "height_resolution_um": um(self.height_resolution_px),
            "relief_px": self.relief_px,
            "relief_um": um(self.relief_px),
            "relief_parallax_px": self.relief_parallax_px,
        }

    def describe(self, pixel_size_um: float | None) -> str:
        res = f"{self.height_resolution_px:.2f} px"
        relief = f"{self.relief_px:.0f} px"
        if pixel_size_um:
            res += f" ({self.height_resolution_px * pixel_size_um:.3g} µm)"
            relief += f" ({self.relief_px * pixel_size_um:.3g} µm)"
        return (
            f"height resolution {res} per {self.match_precision_px:g} px of matching error at the largest tilt "
            f"difference {self.largest_tilt_difference_deg:.2f}°; relief {relief} gives "
            f"{self.relief_parallax_px:.1f} px of parallax"
        )

    def warning(self, min_parallax_px: float = MIN_RELIEF_PARALLAX_PX) -> str | None:
        if self.relief_parallax_px >= min_parallax_px:
            return None
        return (
            f"little parallax: the relief gives only {self.relief_parallax_px:.1f} px of disparity between the "
            f"most different views ({self.largest_tilt_difference_deg:.1f}° apart), heights will be noisy — "
            "raise the tilt difference or the magnification"
        )


def height_resolution_px(tilt_difference_deg: float, match_precision_px: float = MATCH_PRECISION_PX) -> float:
    """Height step seen as ``match_precision_px`` of disparity by two orthographic views ``Δθ`` apart.

    The disparity of a point at height z is d = x (cos Δθ − 1) + z sin Δθ, so δz = δd / sin Δθ.
    """
    s = abs(np.sin(np.deg2rad(tilt_difference_deg)))
    return float(match_precision_px / s) if s > 0 else float("inf")


def check_relief(recon: Reconstruction, ref: int = 0, match_precision_px: float = MATCH_PRECISION_PX) -> ReliefCheck:
    """Height resolution and relief parallax of a reconstruction (heights along view ``ref``'s direction)."""
    tilts = np.asarray(recon.tilts_deg, dtype=float)
    dtheta = float(tilts.max() - tilts.min())
    cam = recon.cameras[ref]
    depth_px = cam.scale * (recon.points.xyz @ cam.rotation[2])  # along the view direction, in px of view ref
    depth_px = depth_px[np.isfinite(depth_px)]
    relief = float(np.subtract(*np.percentile(depth_px, [98, 2]))) if depth_px.size else 0.0
    parallax = relief * abs(float(np.sin(np.deg2rad(dtheta))))
    return ReliefCheck(dtheta, match_precision_px, height_resolution_px(dtheta, match_precision_px), relief, parallax)
