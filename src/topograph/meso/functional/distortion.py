"""Radial lens (un)distortion as pure torch functions.

Two radial models share one convention: a *distorted* point ``r_d`` (pixels, relative to the distortion
centre) is undistorted by a radially dependent relative magnification, ``r_u = M(|r_d|) r_d`` (paper
Eq. 3). ``M(0) = 1`` fixes the global magnification (it is absorbed by the camera heights).

* Piecewise linear ``M`` on ``n_r`` knots spaced ``dr`` apart (paper Eq. 2), analytically invertible.
* Even polynomial ``M(r) = 1 + sum_k c_k (r / r_norm)^(2k)``, inverted by Newton iterations.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-12


def piecewise_linear_magnification(radius: Tensor, knots: Tensor, knot_spacing: float) -> Tensor:
    """Relative magnification ``M(r)`` interpolated linearly between knots (paper Eq. 2).

    ``M(r) = (1 + floor(r/dr) - r/dr) M_floor(r/dr) + (r/dr - floor(r/dr)) M_floor(r/dr)+1``. Beyond the
    last knot the last segment is extended linearly.

    Args:
        radius: (...) radial distances from the distortion centre, pixels (>= 0).
        knots: (n_r,) magnification values ``M_t`` at radii ``t * knot_spacing``.
        knot_spacing: ``dr``, pixels.

    Returns:
        (...) magnification ``M(radius)``, same shape as ``radius``.
    """
    n = knots.shape[0]
    t = radius / knot_spacing
    idx = torch.clamp(torch.floor(t), 0, n - 2).long()
    w = t - idx.to(t.dtype)
    return (1.0 - w) * knots[idx] + w * knots[idx + 1]


def piecewise_linear_inverse_radius(radius_u: Tensor, knots: Tensor, knot_spacing: float) -> Tensor:
    """Invert ``g(r) = r M(r)`` for the piecewise linear model: the distorted radius of ``radius_u``.

    On knot segment ``j`` the magnification is affine, ``M(r) = a + b r``, so ``g(r) = b r^2 + a r`` and
    ``r = 2 r_u / (a + sqrt(a^2 + 4 b r_u))`` (the numerically stable root). ``g`` must be increasing,
    which holds for any physical lens distortion.

    Args:
        radius_u: (...) undistorted radii, pixels.
        knots: (n_r,) magnification values.
        knot_spacing: ``dr``, pixels.

    Returns:
        (...) distorted radii, pixels.
    """
    n = knots.shape[0]
    r_knots = torch.arange(n, dtype=knots.dtype, device=knots.device) * knot_spacing
    g_knots = r_knots * knots
    j = torch.searchsorted(g_knots.detach().contiguous(), radius_u.detach().contiguous(), right=True) - 1
    j = torch.clamp(j, 0, n - 2)
    m0 = knots[j]
    m1 = knots[j + 1]
    b = (m1 - m0) / knot_spacing
    a = m0 - b * j.to(radius_u.dtype) * knot_spacing
    disc = torch.clamp(a * a + 4.0 * b * radius_u, min=_EPS)
    return 2.0 * radius_u / (a + torch.sqrt(disc))


def polynomial_magnification(radius: Tensor, coefficients: Tensor, radius_norm: float) -> Tensor:
    """Even-polynomial relative magnification ``M(r) = 1 + sum_k c_k (r / r_norm)^(2k)``, k = 1..K.

    Args:
        radius: (...) radii, pixels.
        coefficients: (K,) coefficients ``c_k``.
        radius_norm: normalising radius, pixels (e.g. the half diagonal).

    Returns:
        (...) magnification, same shape as ``radius``.
    """
    s2 = (radius / radius_norm) ** 2
    out = torch.ones_like(radius)
    power = torch.ones_like(radius)
    for k in range(coefficients.shape[0]):
        power = power * s2
        out = out + coefficients[k] * power
    return out


def polynomial_inverse_radius(
    radius_u: Tensor, coefficients: Tensor, radius_norm: float, iterations: int = 8
) -> Tensor:
    """Invert ``g(r) = r M(r)`` for the polynomial model by Newton iterations.

    Args:
        radius_u: (...) undistorted radii, pixels.
        coefficients: (K,) coefficients of :func:`polynomial_magnification`.
        radius_norm: normalising radius, pixels.
        iterations: Newton steps (quadratic convergence from ``r = r_u``; 8 is ample).

    Returns:
        (...) distorted radii, pixels.
    """
    r = radius_u.clone()
    for _ in range(iterations):
        s2 = (r / radius_norm) ** 2
        m = torch.ones_like(r)
        dm = torch.zeros_like(r)  # d M / d r
        power = torch.ones_like(r)
        for k in range(coefficients.shape[0]):
            dm = dm + coefficients[k] * 2.0 * (k + 1) * power * r / radius_norm**2
            power = power * s2
            m = m + coefficients[k] * power
        g = r * m - radius_u
        dg = m + r * dm
        r = r - g / torch.clamp(dg, min=1e-6)
    return r


def apply_radial(points: Tensor, magnification: Tensor) -> Tensor:
    """Scale points radially: ``r <- M r`` (paper Eq. 3).

    Args:
        points: (..., 2) points relative to the distortion centre.
        magnification: (...) factors.

    Returns:
        (..., 2) scaled points.
    """
    return points * magnification.unsqueeze(-1)


def radius_of(points: Tensor) -> Tensor:
    """Euclidean norm over the last axis, (..., 2) -> (...), with a safe gradient at zero."""
    return torch.sqrt(torch.clamp((points * points).sum(-1), min=_EPS))
