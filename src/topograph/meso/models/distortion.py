"""Radial undistortion models shared by all images: piecewise linear, even polynomial, none.

Every model maps raw pixel coordinates ``uv`` to undistorted coordinates relative to its centre (the
principal point), and back. Models are chosen by name through :data:`distortion_models`; ``none`` is
a null object with the same interface (its centre is the fixed image centre).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from topograph.meso.functional.distortion import (
    apply_radial,
    piecewise_linear_inverse_radius,
    piecewise_linear_magnification,
    polynomial_inverse_radius,
    polynomial_magnification,
    radius_of,
)
from topograph.registry import Registry


class Distortion(nn.Module):
    """Base class: a distortion centre and a radial magnification profile ``M(r)`` with ``M(0) = 1``."""

    name = "base"

    def __init__(self, image_size: tuple[int, int], optimise_centre: bool = True) -> None:
        super().__init__()
        w, h = image_size
        self.image_size = (int(w), int(h))
        centre = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0])
        if optimise_centre:
            self.centre = nn.Parameter(centre)
        else:
            self.register_buffer("centre", centre)
        self.radius_max = 1.15 * 0.5 * math.hypot(w, h)
        """Largest radius the profile is defined for, pixels (half diagonal plus room for the centre)."""

    def magnification(self, radius: Tensor) -> Tensor:
        """(...) radii of distorted points -> (...) relative magnification ``M``."""
        raise NotImplementedError

    def distorted_radius(self, radius_u: Tensor) -> Tensor:
        """Inverse of ``r -> r M(r)``."""
        raise NotImplementedError

    def undistort(self, uv: Tensor) -> Tensor:
        """(P, 2) raw pixel coordinates -> (P, 2) undistorted points relative to the centre (Eq. 3)."""
        rel = uv - self.centre
        return apply_radial(rel, self.magnification(radius_of(rel)))

    def distort(self, xy: Tensor) -> Tensor:
        """(P, 2) undistorted points relative to the centre -> (P, 2) raw pixel coordinates."""
        ru = radius_of(xy)
        rd = self.distorted_radius(ru)
        return xy * (rd / ru).unsqueeze(-1) + self.centre

    def groups(self) -> dict[str, list[nn.Parameter]]:
        out: dict[str, list[nn.Parameter]] = {"distortion": [p for n, p in self.named_parameters() if n != "centre"]}
        if isinstance(self.centre, nn.Parameter):
            out["centre"] = [self.centre]
        return out

    def profile(self, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """``(radii_px, magnification)`` sampled on ``[0, radius_max]`` for plots and JSON."""
        with torch.no_grad():
            r = torch.linspace(0.0, self.radius_max, n, device=self.centre.device)
            m = self.magnification(r)
        return r.cpu().numpy(), m.cpu().numpy()

    def describe(self) -> dict:
        """Plain-data description for cameras.json."""
        r, m = self.profile(61)
        return {
            "model": self.name,
            "centre_px": self.centre.detach().cpu().numpy().tolist(),
            "profile_radius_px": r.tolist(),
            "profile_magnification": m.tolist(),
        }


distortion_models: Registry[Distortion] = Registry("distortion model", "topograph.meso.distortion")


@distortion_models.register("piecewise")
class PiecewiseLinearDistortion(Distortion):
    """Nonparametric piecewise-linear magnification profile on ``n_knots`` knots (paper Eq. 2).

    Knot 0 (``r = 0``) is fixed at 1; the others are optimised.
    """

    name = "piecewise"

    def __init__(self, image_size: tuple[int, int], optimise_centre: bool = True, n_knots: int = 30, **_: object):
        super().__init__(image_size, optimise_centre)
        self.n_knots = int(n_knots)
        self.knot_spacing = self.radius_max / (self.n_knots - 1)
        self.knots = nn.Parameter(torch.ones(self.n_knots - 1))

    def _all_knots(self) -> Tensor:
        return torch.cat((torch.ones(1, dtype=self.knots.dtype, device=self.knots.device), self.knots))

    def magnification(self, radius: Tensor) -> Tensor:
        return piecewise_linear_magnification(radius, self._all_knots(), self.knot_spacing)

    def distorted_radius(self, radius_u: Tensor) -> Tensor:
        return piecewise_linear_inverse_radius(radius_u, self._all_knots(), self.knot_spacing)

    def describe(self) -> dict:
        out = super().describe()
        out["knot_spacing_px"] = self.knot_spacing
        out["knots"] = self._all_knots().detach().cpu().numpy().tolist()
        return out


@distortion_models.register("poly")
class PolynomialDistortion(Distortion):
    """Even-polynomial magnification ``M(r) = 1 + sum_k c_k (r / r_norm)^(2k)``."""

    name = "poly"

    def __init__(self, image_size: tuple[int, int], optimise_centre: bool = True, poly_terms: int = 4, **_: object):
        super().__init__(image_size, optimise_centre)
        self.radius_norm = 0.5 * math.hypot(*image_size)
        self.coefficients = nn.Parameter(torch.zeros(int(poly_terms)))

    def magnification(self, radius: Tensor) -> Tensor:
        return polynomial_magnification(radius, self.coefficients, self.radius_norm)

    def distorted_radius(self, radius_u: Tensor) -> Tensor:
        return polynomial_inverse_radius(radius_u, self.coefficients, self.radius_norm)

    def describe(self) -> dict:
        out = super().describe()
        out["radius_norm_px"] = self.radius_norm
        out["coefficients"] = self.coefficients.detach().cpu().numpy().tolist()
        return out


@distortion_models.register("none")
class NoDistortion(Distortion):
    """No distortion: ``M = 1``; the principal point is the fixed image centre."""

    name = "none"

    def __init__(self, image_size: tuple[int, int], optimise_centre: bool = False, **_: object):
        super().__init__(image_size, optimise_centre=False)

    def magnification(self, radius: Tensor) -> Tensor:
        return torch.ones_like(radius)

    def distorted_radius(self, radius_u: Tensor) -> Tensor:
        return radius_u

    def undistort(self, uv: Tensor) -> Tensor:
        return uv - self.centre

    def distort(self, xy: Tensor) -> Tensor:
        return xy + self.centre
