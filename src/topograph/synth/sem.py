"""Synthetic SEM tilt series of one powder grain, with exact ground truth.

The grain is a height field on the flat substrate: the true surface is ``Z = h(X, Y) ≥ 0`` with
``h = 0`` on the substrate ``Z = 0``. ``h`` is stored on a fine regular grid and the true surface is
the **bilinear interpolant** of that grid (zero outside it), so every quantity derived from it is
exact: the volume enclosed by the cap and a flat base on the substrate is ``∫ h dA = Δ² Σ h_ij`` (the
grid border is zero), ray–surface hits satisfy ``Z = h(X, Y)`` to the bisection tolerance, and the
saved ``surface_height.tif`` reproduces the surface bit for bit.

The analytic model behind the grid (:class:`GrainSpec`):

* footprint ``ρ(X, Y) = |(X, Y)| / r(φ)`` with ``r(φ) = R₀ (1 + Σₙ cₙ cos(n φ + ψₙ))``, n = 2 … N+1;
* cap ``H g(ρ) (1 + B(X, Y))`` with ``g(ρ) = ((1 − ρ² + ε)^p − ε^p) / ((1 + ε)^p − ε^p)`` — steep but
  not vertical sides (``ε`` bounds the edge slope) — and smooth Gaussian bumps ``B``;
* flat facets: the cap is cut by a few planes with a polynomial smooth minimum.

Views are rendered by orthographic ray casting through cameras built from the physical description alone
(:func:`physical_camera`: a right-handed stage turned about its tilt axis, seen with Y up on the screen,
the picture optionally rotated after capture) — not from the engine's own camera code, so that a
convention error there is caught (docs/conventions.md). Shading is a view-consistent solid
texture evaluated at the 3-D hit point times a secondary-electron yield ``1 / cos(α)^γ`` (α between
the surface normal and the beam), with edge brightening, blur and shot-like noise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from topograph.errors import TopographError
from topograph.io.atomic import atomic_path, write_json
from topograph.types import AffineCamera, HeightMap

log = logging.getLogger("topograph")

TRUTH_FORMAT = "topograph-sem-truth"
TRUTH_VERSION = 1
_MAX_TILT_DEG = 75.0
_CHUNK_RAYS = 1 << 17
_FEI_TAG = 34682  # FEI_HELIOS: INI text


# ----------------------------------------------------------------------------------------------------
# Grain model
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrainSpec:
    """Parameters of a random grain; the same spec always gives the same grain.

    All lengths in µm; ``*_fraction`` / ``*_amplitude`` values are relative.
    """

    seed: int = 0
    """Seed of the grain's random shape and surface texture."""
    diameter_um: float = 40.0
    """Nominal footprint diameter ``2 R₀``."""
    height_fraction: float = 0.5
    """Cap amplitude ``H = height_fraction · diameter_um`` (before bumps and facets)."""
    roughness: float = 0.12
    """Scale of the footprint harmonics: ``cₙ ~ roughness · N(0, 1) / n``."""
    n_harmonics: int = 5
    """Number of footprint harmonics (orders 2 … n_harmonics + 1)."""
    profile_exponent: float = 0.45
    """``p`` of the cap profile ``(1 − ρ²)^p``: below 1 the sides are steep."""
    edge_softening: float = 0.03
    """``ε`` of the cap profile; bounds the slope at the contact line (0 = vertical edge)."""
    n_bumps: int = 10
    """Number of smooth Gaussian bumps/dents on the cap."""
    bump_amplitude: float = 0.12
    """Largest relative bump height (fraction of the local cap height)."""
    n_facets: int = 4
    """Number of flat facets cut into the cap."""
    facet_softness: float = 0.006
    """Blend width of the facet edges, as a fraction of the diameter."""

    def __post_init__(self) -> None:
        checks = [
            (self.diameter_um > 0, "diameter_um must be > 0", "e.g. diameter_um=40"),
            (0 < self.height_fraction <= 2, "height_fraction must be in (0, 2]", "e.g. height_fraction=0.5"),
            (0 <= self.roughness <= 0.5, "roughness must be in [0, 0.5]", "e.g. roughness=0.12"),
            (self.n_harmonics >= 0, "n_harmonics must be ≥ 0", "e.g. n_harmonics=5"),
            (0 < self.profile_exponent <= 4, "profile_exponent must be in (0, 4]", "e.g. 0.45"),
            (self.edge_softening >= 0, "edge_softening must be ≥ 0", "e.g. edge_softening=0.03"),
            (self.n_bumps >= 0 and self.n_facets >= 0, "n_bumps and n_facets must be ≥ 0", "use 0 to disable"),
            (0 <= self.bump_amplitude <= 0.6, "bump_amplitude must be in [0, 0.6]", "e.g. bump_amplitude=0.12"),
            (self.facet_softness > 0, "facet_softness must be > 0", "e.g. facet_softness=0.006"),
        ]
        for ok, cause, fix in checks:
            if not ok:
                raise TopographError(f"GrainSpec: {cause}", fix)


@dataclass(frozen=True)
class _GrainModel:
    """Random parameters drawn from a :class:`GrainSpec` (see the module docstring for the model)."""

    spec: GrainSpec
    harmonics: np.ndarray  # (N, 3): order n, amplitude cₙ, phase ψₙ
    bumps: np.ndarray  # (M, 4): centre X, centre Y, sigma, amplitude
    facets: np.ndarray  # (F, 6): point X, Y, height, direction angle, radial slope m, lateral slope q

    @property
    def r0(self) -> float:
        return 0.5 * self.spec.diameter_um

    @property
    def cap_height(self) -> float:
        return self.spec.height_fraction * self.spec.diameter_um

    def footprint_radius(self, phi: np.ndarray) -> np.ndarray:
        """``r(φ) = R₀ (1 + Σₙ cₙ cos(n φ + ψₙ))`` in µm."""
        s = np.ones_like(phi)
        for n, c, psi in self.harmonics:
            s = s + c * np.cos(n * phi + psi)
        return self.r0 * s

    def profile(self, rho: np.ndarray) -> np.ndarray:
        """``g(ρ) = ((1 − ρ² + ε)^p − ε^p) / ((1 + ε)^p − ε^p)`` for ρ < 1, else 0."""
        p, eps = self.spec.profile_exponent, self.spec.edge_softening
        w = np.clip(1.0 - rho * rho, 0.0, None)
        return ((w + eps) ** p - eps**p) / ((1.0 + eps) ** p - eps**p)

    def rho(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.hypot(x, y) / self.footprint_radius(np.arctan2(y, x))

    def base_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cap with bumps, before facets: ``H g(ρ) (1 + B)``."""
        b = np.zeros_like(x)
        for cx, cy, sig, amp in self.bumps:
            b += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sig * sig))
        return self.cap_height * self.profile(self.rho(x, y)) * np.clip(1.0 + b, 0.25, None)

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Full analytic height ``h(X, Y)`` in µm (µm inputs, any matching shapes)."""
        rho = self.rho(x, y)
        h = self.base_height(x, y)
        k = self.spec.facet_softness * self.spec.diameter_um
        for px, py, hp, ang, m, q in self.facets:
            ux, uy = math.cos(ang), math.sin(ang)
            plane = hp + m * ((x - px) * ux + (y - py) * uy) + q * (-(x - px) * uy + (y - py) * ux)
            h = smooth_min(h, plane, k)
        return np.where(rho < 1.0, np.clip(h, 0.0, None), 0.0)

    def max_radius(self) -> float:
        return float(self.footprint_radius(np.linspace(0.0, 2.0 * np.pi, 4096, endpoint=False)).max())


def grain_footprint_radius(spec: GrainSpec, phi_rad: np.ndarray) -> np.ndarray:
    """Footprint boundary ``r(φ) = R₀ (1 + Σₙ cₙ cos(n φ + ψₙ))`` of the analytic grain, µm (before facets)."""
    return _grain_model(spec).footprint_radius(np.asarray(phi_rad, dtype=np.float64))


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum ``min(a, b) − max(k − |a − b|, 0)² / (4k)`` (exact min where |a − b| ≥ k)."""
    gap = np.clip(k - np.abs(a - b), 0.0, None)
    return np.minimum(a, b) - gap * gap / (4.0 * k)


def _grain_model(spec: GrainSpec) -> _GrainModel:
    """Draw the random harmonics, bumps and facets of ``spec`` from ``default_rng(spec.seed)``."""
    rng = np.random.default_rng(spec.seed)
    orders = np.arange(2, spec.n_harmonics + 2, dtype=float)
    amps = spec.roughness * rng.normal(size=orders.size) / np.maximum(orders - 1.0, 1.0)
    total = np.abs(amps).sum()
    if total > 0.55:  # keep r(φ) ≥ 0.45 R₀
        amps *= 0.55 / total
    harmonics = np.column_stack([orders, amps, rng.uniform(0, 2 * np.pi, orders.size)])
    model = _GrainModel(spec, harmonics, np.zeros((0, 4)), np.zeros((0, 6)))

    r0 = model.r0
    bumps = []
    for _ in range(spec.n_bumps):
        ang, rr = rng.uniform(0, 2 * np.pi), 0.75 * math.sqrt(rng.uniform())
        rad = rr * float(model.footprint_radius(np.array(ang)))
        sig = rng.uniform(0.12, 0.4) * r0
        bumps.append([rad * math.cos(ang), rad * math.sin(ang), sig, rng.uniform(-1, 1) * spec.bump_amplitude])
    model = _GrainModel(spec, harmonics, np.array(bumps).reshape(-1, 4), model.facets)

    facets = []
    delta = 1e-4 * spec.diameter_um
    for _ in range(spec.n_facets):
        ang = rng.uniform(0, 2 * np.pi)
        rr = rng.uniform(0.3, 0.6) * float(model.footprint_radius(np.array(ang)))
        ux, uy = math.cos(ang), math.sin(ang)
        px, py = rr * ux, rr * uy
        hp = float(model.base_height(np.array(px), np.array(py)))
        slope = float(
            model.base_height(np.array(px + delta * ux), np.array(py + delta * uy))
            - model.base_height(np.array(px - delta * ux), np.array(py - delta * uy))
        ) / (2 * delta)
        m = min(slope, -1e-3) * rng.uniform(0.2, 0.5)  # shallower than the cap: cuts a flat table inward
        q = rng.uniform(-0.3, 0.3) * abs(m)
        facets.append([px, py, hp, ang, m, q])
    return _GrainModel(spec, harmonics, model.bumps, np.array(facets).reshape(-1, 6))


def grain_height_grid(spec: GrainSpec, spacing_um: float, margin_um: float | None = None) -> HeightMap:
    """Sample the grain's height ``h(X, Y)`` on a square grid centred on the world origin.

    The grid spans the footprint plus a substrate margin (default 8 % of the diameter, at least three
    zero nodes), so its border is zero and its bilinear interpolant is continuous with the substrate.

    Args:
        spec: grain parameters.
        spacing_um: grid spacing Δ in µm.
        margin_um: substrate ring around the footprint, µm.

    Returns:
        :class:`HeightMap` with ``height[j, i] = h(x0 + i Δ, y0 + j Δ)`` (float32, µm) and
        ``origin = (x0, y0)``.
    """
    if not spacing_um > 0:
        raise TopographError(f"grid spacing must be > 0, got {spacing_um}", "pass a positive spacing_um")
    model = _grain_model(spec)
    margin = 0.08 * spec.diameter_um if margin_um is None else float(margin_um)
    half = model.max_radius() + max(margin, 3.0 * spacing_um)
    n = int(math.ceil(2.0 * half / spacing_um)) + 1
    x0 = -0.5 * (n - 1) * spacing_um
    axis = x0 + spacing_um * np.arange(n)
    grid = np.empty((n, n), dtype=np.float32)
    rows = max(1, (1 << 18) // n)
    for j0 in range(0, n, rows):
        yy, xx = np.meshgrid(axis[j0 : j0 + rows], axis, indexing="ij")
        grid[j0 : j0 + rows] = model.height(xx, yy)
    grid[:2], grid[-2:], grid[:, :2], grid[:, -2:] = 0.0, 0.0, 0.0, 0.0
    return HeightMap(height=grid, pixel_size=float(spacing_um), unit="um", lateral_unit="um", origin=(x0, x0))


# ----------------------------------------------------------------------------------------------------
# Bilinear surface and ray casting
# ----------------------------------------------------------------------------------------------------


def _zero_bordered(surface: HeightMap) -> HeightMap:
    """``surface`` with at least two rings of zero nodes (padded, origin shifted, when its border is not zero)."""
    g = np.asarray(surface.height)
    if g.ndim != 2 or min(g.shape) < 2:
        raise TopographError(f"a surface grid must be 2-D with ≥ 2 nodes per side, got {g.shape}", "pass (ny, nx)")
    if not np.isfinite(g).all():
        raise TopographError("the surface grid holds NaN or inf", "fill the holes before ray casting")
    border = np.concatenate([g[:2].ravel(), g[-2:].ravel(), g[:, :2].ravel(), g[:, -2:].ravel()])
    if g.shape[0] >= 4 and g.shape[1] >= 4 and not border.any():
        return surface
    d = surface.pixel_size
    return HeightMap(
        height=np.pad(g, 2).astype(np.float32),
        pixel_size=d,
        unit=surface.unit,
        lateral_unit=surface.lateral_unit,
        origin=(surface.origin[0] - 2 * d, surface.origin[1] - 2 * d),
    )


def _bilinear_uv(flat: np.ndarray, nx: int, ny: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a grid (raveled ``flat``) at grid coordinates (u, v).

    Outside the grid the two outermost node rings are zero, so clamping the cell index gives 0 there.
    """
    fi = np.floor(u)
    fj = np.floor(v)
    fu = u - fi
    fv = v - fj
    k = np.clip(fj, 0, ny - 2).astype(np.intp) * nx + np.clip(fi, 0, nx - 2).astype(np.intp)
    h00 = flat.take(k)
    h10 = flat.take(k + 1)
    h01 = flat.take(k + nx)
    h11 = flat.take(k + nx + 1)
    return h00 + fu * (h10 - h00) + fv * ((h01 - h00) + fu * (h11 - h01 - h10 + h00))


def surface_height_at(surface: HeightMap, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True surface height ``h(X, Y)`` (µm): bilinear interpolant of ``surface`` (0 outside the grid)."""
    surface = _zero_bordered(surface)
    g = np.asarray(surface.height, dtype=np.float64)
    ny, nx = g.shape
    u = (np.asarray(x, dtype=np.float64) - surface.origin[0]) / surface.pixel_size
    v = (np.asarray(y, dtype=np.float64) - surface.origin[1]) / surface.pixel_size
    return _bilinear_uv(g.ravel(), nx, ny, u, v)


def _ray_frame(camera: AffineCamera, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rays of ``camera``: ``X(τ) = P0 + τ d`` with ``d = −R[2]`` (toward the detector; ``R[2]`` is the
    beam direction into the specimen).

    From ``x = k [[1, 0, 0], [s, 1, 0]] R X + t``: ``a = (x − t_x) / k``, ``b = (y − t_y) / k − s a`` and
    ``P0 = Rᵀ (a, b, 0)``, so every point of the ray projects exactly onto the pixel.

    Returns:
        (N, 3) points ``P0`` and the unit direction ``d`` (3,).
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    a = (xy[:, 0] - camera.translation[0]) / camera.scale
    b = (xy[:, 1] - camera.translation[1]) / camera.scale - camera.skew * a
    r = camera.rotation
    p0 = a[:, None] * r[0] + b[:, None] * r[1]
    return p0, -r[2]


@dataclass(frozen=True)
class RayHits:
    """Where pixel rays meet the true surface.

    ``points`` (N, 3) µm; ``depth`` (N,) ray parameter τ = −(R X)_z (larger = nearer the detector);
    ``on_grain`` (N,) True where the hit lies on the grain (Z > 0) rather than the substrate.
    """

    points: np.ndarray
    depth: np.ndarray
    on_grain: np.ndarray


class RayCaster:
    """First intersections of orthographic rays with a height-field surface ``Z = h(X, Y)``.

    Each ray is parametrised by its height: ``(X, Y)(Z) = G + Z c`` with ``G`` its substrate point and
    ``c = d_xy / d_z``. It descends from above the grain top; where the ray is above the maximum of
    ``h`` over the 3 × 3 blocks of ``block`` cells around it, it skips ``block − 2`` cells at once (no
    crossing is possible there); elsewhere it steps so that its horizontal advance is ``step_fraction``
    of the grid spacing. The first sign change of ``f = Z − h(X, Y)`` is refined by bisection to
    ``tol_um``. Rays over bare substrate stop at ``Z = 0`` exactly.

    Args:
        surface: the true height grid (its bilinear interpolant is the surface; 0 off the grid).
        step_fraction: horizontal march step as a fraction of the grid spacing (< 1).
        tol_um: bisection tolerance on Z, µm.
        block: side of the empty-space-skipping blocks, grid cells.
    """

    def __init__(self, surface: HeightMap, *, step_fraction: float = 0.5, tol_um: float = 1e-5, block: int = 16):
        if not 0 < step_fraction < 1:
            raise TopographError(f"step_fraction must be in (0, 1), got {step_fraction}", "e.g. 0.5")
        if block < 4:
            raise TopographError(f"block must be ≥ 4 cells, got {block}", "e.g. block=16")
        surface = _zero_bordered(surface)
        grid = np.asarray(surface.height, dtype=np.float64)
        if grid.min() < 0:
            raise TopographError("the surface grid has negative heights", "heights are Z ≥ 0 above the substrate")
        self.surface = surface
        self.ny, self.nx = grid.shape
        self.flat = grid.ravel()
        self.flat32 = self.flat.astype(np.float32)
        self.step_fraction = float(step_fraction)
        self.tol = float(tol_um)
        self.z_top = float(grid.max()) * (1.0 + 1e-6) + 1e-9
        self.block = int(block)
        nby, nbx = -(-self.ny // block), -(-self.nx // block)
        padded = np.zeros((nby * block, nbx * block), dtype=np.float32)
        padded[: self.ny, : self.nx] = grid
        bmax = padded.reshape(nby, block, nbx, block).max(axis=(1, 3))
        bmax = np.pad(bmax, 1, mode="constant")
        dil = np.max([bmax[1 + dj : 1 + dj + nby, 1 + di : 1 + di + nbx] for dj in (-1, 0, 1) for di in (-1, 0, 1)], 0)
        self.block_max = dil.astype(np.float64).ravel()
        self.nbx, self.nby = nbx, nby

    def cast(self, camera: AffineCamera, xy: np.ndarray) -> RayHits:
        """Hits of the rays through pixels ``xy`` (N, 2) of ``camera``."""
        p0, d = _ray_frame(camera, xy)
        if d[2] < 0.05:
            raise TopographError(
                "a view is tilted too far for the height-field renderer", f"keep |tilt| ≤ {_MAX_TILT_DEG:g}°"
            )
        spacing = self.surface.pixel_size
        x0, y0 = self.surface.origin
        t_ground = -p0[:, 2] / d[2]
        gu = (p0[:, 0] + t_ground * d[0] - x0) / spacing
        gv = (p0[:, 1] + t_ground * d[1] - y0) / spacing
        cu, cv = d[0] / d[2] / spacing, d[1] / d[2] / spacing
        z_hit = np.empty(gu.size)
        for c0 in range(0, gu.size, _CHUNK_RAYS):
            sl = slice(c0, c0 + _CHUNK_RAYS)
            z_hit[sl] = self._march(gu[sl], gv[sl], cu, cv)
        tau = (z_hit - p0[:, 2]) / d[2]
        points = p0 + tau[:, None] * d
        return RayHits(points=points, depth=tau, on_grain=z_hit > 0.0)

    def _march(self, gu: np.ndarray, gv: np.ndarray, cu: float, cv: float) -> np.ndarray:
        """Z of the first crossing of ``f(Z) = Z − h(G + Z c)`` for rays with substrate points (gu, gv) (grid units).

        ``(cu, cv)``: grid cells of horizontal travel per µm of height. The march runs in float32 (it only
        brackets the crossing); the bisection runs in float64.
        """
        nx, ny, b = self.nx, self.ny, self.block
        horizontal = math.hypot(cu, cv)
        z_top = self.z_top
        n_steps = max(1, int(math.ceil(z_top * horizontal / self.step_fraction)))
        dz = z_top / n_steps
        jump = (b - 2) / horizontal if horizontal > 0 else math.inf
        n = gu.size
        z = np.full(n, z_top)
        z_lo = np.zeros(n)
        z_hi = np.full(n, z_top)
        gu32, gv32 = gu.astype(np.float32), gv.astype(np.float32)
        active = np.arange(n)
        while active.size:
            za = z[active]
            u = gu[active] + za * cu
            v = gv[active] + za * cv
            bi = np.clip(np.floor(u / b), 0, self.nbx - 1).astype(np.intp)
            bj = np.clip(np.floor(v / b), 0, self.nby - 1).astype(np.intp)
            bound = self.block_max[bj * self.nbx + bi]
            skip = za > bound
            # air above every height nearby: descend up to block − 2 cells horizontally
            z_skip = np.maximum(za - jump, bound)
            # near the surface: one fine step, then test for a crossing
            z_fine = np.maximum(za - dz, 0.0)
            zf32 = z_fine.astype(np.float32)
            fine = ~skip
            crossed = np.zeros(active.size, dtype=bool)
            if fine.any():
                zf = zf32[fine]
                h = _bilinear_uv(
                    self.flat32,
                    nx,
                    ny,
                    gu32[active[fine]] + zf * np.float32(cu),
                    gv32[active[fine]] + zf * np.float32(cv),
                )
                crossed[fine] = (h >= zf) | (zf <= 0)
            landed = skip & (z_skip <= 0.0)  # reached bare substrate (the block maximum there is 0)
            z_new = np.where(skip, z_skip, z_fine)
            done = crossed | landed
            idx = active[done]
            z_lo[idx] = np.where(landed[done], 0.0, z_new[done])
            z_hi[idx] = np.where(landed[done], 0.0, za[done])
            z[active] = z_new
            active = active[~done]
        exact = (z_hi <= 0.0) | ((z_lo <= 0.0) & (_bilinear_uv(self.flat, nx, ny, gu, gv) <= 0.0))
        out = np.zeros(n)
        ref = np.flatnonzero(~exact)
        if ref.size:
            lo, hi, ru, rv = z_lo[ref], z_hi[ref], gu[ref], gv[ref]
            width = float(np.max(hi - lo))
            for _ in range(max(1, int(math.ceil(math.log2(max(width, self.tol) / self.tol))))):
                mid = 0.5 * (lo + hi)
                below = _bilinear_uv(self.flat, nx, ny, ru + mid * cu, rv + mid * cv) >= mid
                lo = np.where(below, mid, lo)
                hi = np.where(below, hi, mid)
            out[ref] = 0.5 * (lo + hi)
        return out


def cast_rays(
    surface: HeightMap, camera: AffineCamera, xy: np.ndarray, *, step_fraction: float = 0.5, tol_um: float = 1e-5
) -> RayHits:
    """First intersection of the rays through pixels ``xy`` (N, 2) of ``camera`` with the surface.

    Convenience wrapper of :class:`RayCaster` (see there for the method); reuse a :class:`RayCaster`
    when casting many batches against one surface.
    """
    return RayCaster(surface, step_fraction=step_fraction, tol_um=tol_um).cast(camera, xy)


# ----------------------------------------------------------------------------------------------------
# Texture and SEM shading
# ----------------------------------------------------------------------------------------------------


_PERM_BITS = 10
_PERM_MASK = (1 << _PERM_BITS) - 1


def solid_noise(points: np.ndarray, seed: int, wavelengths_um: Sequence[float], gain: float = 0.85) -> np.ndarray:
    """Band-limited 3-D value noise ``T(P) = Σ_o a_o V_o(R_o P / λ_o) / Σ_o a_o``.

    ``V_o`` is trilinear interpolation, with smoothstep weights, of random lattice values in [−1, 1] looked up
    through a nested permutation hash ``v[π(π(π(i) + j) + k)]`` (period 1024 lattice cells, tables drawn
    per octave); each octave o has wavelength ``λ_o``, amplitude ``a_o = gain^o`` and its own random
    rotation ``R_o`` (no axis-aligned artefacts). ``T`` depends only on the world point, so it is attached
    to the surface and identical in every view.

    Args:
        points: (N, 3) world points, µm.
        seed: texture seed.
        wavelengths_um: lattice spacing of each octave, µm.
        gain: amplitude ratio between successive octaves.

    Returns:
        (N,) float32, zero-mean, about unit standard deviation (clipped to ±3).
    """
    rng = np.random.default_rng([seed, 0x5E3])
    pts_t = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3).T)  # (3, N): fast matmul
    out = np.zeros(pts_t.shape[1], dtype=np.float32)
    total = 0.0
    m = _PERM_MASK
    three, two = np.float32(3.0), np.float32(2.0)
    for o, lam in enumerate(wavelengths_um):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        perm = rng.permutation(m + 1).astype(np.int32)
        perm = np.concatenate([perm, perm])  # sums of two indices (≤ 2046) need no mask
        vals = rng.uniform(-1.0, 1.0, size=m + 1).astype(np.float32)
        p = ((q / lam) @ pts_t).astype(np.float32)
        base = np.floor(p)
        f = p - base
        ib = base.astype(np.int32) & m
        wx, wy, wz = (fk * fk * (three - two * fk) for fk in f)  # smoothstep weights
        px0 = perm.take(ib[0])
        px1 = perm.take(ib[0] + 1)
        iy0, iz0 = ib[1], ib[2]
        iz1 = iz0 + 1
        lerp_z = []
        for pxy in (perm.take(px0 + iy0), perm.take(px1 + iy0), perm.take(px0 + iy0 + 1), perm.take(px1 + iy0 + 1)):
            c0 = vals.take(perm.take(pxy + iz0))
            c1 = vals.take(perm.take(pxy + iz1))
            lerp_z.append(c0 + wz * (c1 - c0))
        z00, z10, z01, z11 = lerp_z
        y0 = z00 + wx * (z10 - z00)
        y1 = z01 + wx * (z11 - z01)
        amp = gain**o
        out += np.float32(amp) * (y0 + wy * (y1 - y0))
        total += amp * amp
    # trilinear value noise of uniform[−1, 1] lattice values has a standard deviation ≈ 0.33
    return np.clip(out / np.float32(0.33 * math.sqrt(max(total, 1e-12))), -3.0, 3.0)


def grain_albedo(points: np.ndarray, seed: int, wavelengths_um: Sequence[float]) -> np.ndarray:
    """Unshaded grain brightness ``A = 0.4 (1 + 0.28 T) + 0.3 S``, view-independent.

    ``T``: :func:`solid_noise` over ``wavelengths_um``; ``S = smoothstep((T' − 1.2) / 0.8)``: sparse bright
    specks (like fine debris on a powder grain) from a second noise ``T'`` over the two finest octaves,
    which give blob-like features to match.

    Args:
        points: (N, 3) surface points, µm.
        seed: texture seed.
        wavelengths_um: octave wavelengths of ``T``, µm (coarse to fine).

    Returns:
        (N,) float32.
    """
    t = solid_noise(points, seed, wavelengths_um)
    fine = list(wavelengths_um[-2:]) if len(wavelengths_um) > 1 else list(wavelengths_um)
    s = np.clip((solid_noise(points, seed + 104729, fine) - np.float32(1.2)) / np.float32(0.8), 0.0, 1.0)
    s = s * s * (np.float32(3.0) - np.float32(2.0) * s)
    return np.float32(0.4) * (np.float32(1.0) + np.float32(0.28) * t) + np.float32(0.3) * s


def _octaves(largest_um: float, smallest_um: float, n_max: int = 6) -> list[float]:
    """Wavelengths ``largest / 2^o`` not finer than ``smallest`` (at least one)."""
    out = [largest_um / 2.0**o for o in range(n_max) if largest_um / 2.0**o >= smallest_um]
    return out or [largest_um]


def se_yield(cos_alpha: np.ndarray, gamma: float = 1.0, max_gain: float = 2.2) -> np.ndarray:
    """Secondary-electron yield ``δ(α) = min(1 / cos(α)^γ, max_gain)`` (α: normal vs beam)."""
    return np.minimum(np.clip(cos_alpha, 1e-3, None) ** (-gamma), max_gain)


@dataclass(frozen=True)
class RenderedView:
    """One rendered view with its per-pixel truth (all (H, W)).

    ``image`` float32 [0, 1] (blurred, noisy); ``albedo`` float32: the unshaded, view-independent surface
    texture; ``height`` float32: Z (µm) of the visible surface point; ``depth`` float64 τ = −(R X)_z;
    ``grain`` bool: the pixel sees the grain.
    """

    image: np.ndarray
    albedo: np.ndarray
    height: np.ndarray
    depth: np.ndarray
    grain: np.ndarray


def render_view(
    surface: HeightMap,
    camera: AffineCamera,
    image_shape: tuple[int, int],
    *,
    texture_seed: int,
    texture_largest_um: float,
    noise: float = 0.02,
    blur_sigma_px: float = 0.6,
    rng: np.random.Generator | None = None,
    caster: RayCaster | None = None,
    substrate_albedo: float = 0.22,
    contrast: float = 1.0,
) -> RenderedView:
    """Render one SEM view of a height-field surface by ray casting.

    Linear signal ``L = A(P) · δ(α) · (1 + 0.12 n·e_det) + 0.25 E`` with the view-independent albedo
    ``A`` (:func:`grain_albedo` on the grain, ``0.22 (1 + 0.1 T_s(P))`` on the substrate, both evaluated at
    the 3-D hit point P), ``δ`` the SE yield of :func:`se_yield` with α between the (smoothed) surface
    normal n and the beam ``R[2]``, ``e_det`` the horizontal direction of a side detector and ``E`` an
    edge-brightening map at occluding contours (:func:`_edge_map`). Then the tone curve
    ``I = 0.95 tanh(L / 0.95)``, a Gaussian blur and shot-like noise ``N(0, σ² I / 0.5)`` (σ = ``noise``
    at mid-grey), clipped to [0, 1]. Texture octaves finer than 3 px are dropped (no aliasing).

    Args:
        surface: true height grid (µm).
        camera: the view's camera.
        image_shape: (H, W) pixels.
        texture_seed: seed of the surface texture (the same for every view).
        texture_largest_um: wavelength of the coarsest texture octave, µm.
        noise: noise σ at mid-grey.
        blur_sigma_px: Gaussian blur σ in px (0 disables).
        rng: generator for the noise.
        caster: a :class:`RayCaster` of ``surface`` to reuse across views.
        substrate_albedo: mean brightness of the substrate (0.22; dark ~0.08, bright ~0.6).
        contrast: scale of the image about its mean before the noise (1 = as rendered; 0.3 = low contrast).

    Returns:
        :class:`RenderedView`.
    """
    import cv2

    hh, ww = image_shape
    pixel_um = 1.0 / camera.scale
    caster = RayCaster(surface) if caster is None else caster
    surface = caster.surface
    grid = np.asarray(surface.height, dtype=np.float32)
    gy, gx = np.gradient(grid, np.float32(surface.pixel_size))
    gx_flat, gy_flat = gx.ravel(), gy.ravel()
    ny, nx = grid.shape
    beam = -camera.rotation[2]  # toward the detector
    det = np.array([-1.0, -1.0]) / math.sqrt(2.0)
    octaves_g = _octaves(texture_largest_um, 3.0 * pixel_um)
    octaves_s = _octaves(0.7 * texture_largest_um, 3.0 * pixel_um)

    lin = np.empty(hh * ww, dtype=np.float32)
    albedo = np.empty(hh * ww, dtype=np.float32)
    height = np.empty(hh * ww, dtype=np.float32)
    depth = np.empty(hh * ww, dtype=np.float64)
    grain = np.empty(hh * ww, dtype=bool)
    rows = max(1, (2 * _CHUNK_RAYS) // ww)
    xs = np.arange(ww, dtype=np.float64)
    for r0 in range(0, hh, rows):
        yy, xx = np.meshgrid(np.arange(r0, min(hh, r0 + rows), dtype=np.float64), xs, indexing="ij")
        sl = slice(r0 * ww, r0 * ww + yy.size)
        hits = caster.cast(camera, np.column_stack([xx.ravel(), yy.ravel()]))
        p = hits.points
        u = (p[:, 0] - surface.origin[0]) / surface.pixel_size
        v = (p[:, 1] - surface.origin[1]) / surface.pixel_size
        nxv = -_bilinear_uv(gx_flat, nx, ny, u, v)
        nyv = -_bilinear_uv(gy_flat, nx, ny, u, v)
        norm = np.sqrt(nxv * nxv + nyv * nyv + 1.0)
        cos_a = (nxv * beam[0] + nyv * beam[1] + beam[2]) / norm
        side = 1.0 + 0.12 * (nxv * det[0] + nyv * det[1]) / norm
        g = hits.on_grain
        alb = np.empty(p.shape[0], dtype=np.float32)
        if g.any():
            alb[g] = grain_albedo(p[g], texture_seed, octaves_g)
        if (~g).any():
            alb[~g] = substrate_albedo * (1.0 + 0.1 * solid_noise(p[~g], texture_seed + 7919, octaves_s))
        albedo[sl] = alb
        lin[sl] = alb * (se_yield(cos_a) * side).astype(np.float32)
        height[sl] = p[:, 2]
        depth[sl] = hits.depth
        grain[sl] = g

    shape = (hh, ww)
    lin2 = lin.reshape(shape)
    depth2 = depth.reshape(shape)
    edge = _edge_map(depth2, pixel_um, grain.reshape(shape))
    img = np.float32(0.95) * np.tanh((lin2 + np.float32(0.25) * edge) / np.float32(0.95))
    if contrast != 1.0:
        img = np.float32(img.mean()) + np.float32(contrast) * (img - np.float32(img.mean()))
    if blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma_px, borderType=cv2.BORDER_REFLECT)
    if noise > 0:
        gen = rng if rng is not None else np.random.default_rng(0)
        sigma = noise * np.sqrt(np.clip(img, 0.0, None) / 0.5)
        img = img + sigma.astype(np.float32) * gen.standard_normal(shape, dtype=np.float32)
    image = np.clip(img, 0.0, 1.0).astype(np.float32)
    return RenderedView(
        image=image,
        albedo=albedo.reshape(shape),
        height=height.reshape(shape),
        depth=depth2,
        grain=grain.reshape(shape),
    )


def _edge_map(depth: np.ndarray, pixel_um: float, grain: np.ndarray) -> np.ndarray:
    """SE edge effect: ``E = blur(clip(max_nb(τ − τ_nb) / (4 px), 0, 1))`` on the occluding side, in [0, 1]."""
    import cv2

    pad = np.pad(depth, 1, mode="edge")
    step = np.zeros_like(depth)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        step = np.maximum(step, depth - pad[dy : dy + depth.shape[0], dx : dx + depth.shape[1]])
    e = np.clip(step / (4.0 * pixel_um), 0.0, 1.0).astype(np.float32) * grain
    e = cv2.GaussianBlur(e, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    return np.clip(e * 2.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SemTruth:
    """Exact ground truth of a synthetic SEM tilt series (lengths in µm, angles in degrees).

    The true surface is the bilinear interpolant of ``surface`` (the grain on the substrate ``Z = 0``,
    which continues as ``Z = 0`` beyond the grid).
    """

    cameras: tuple[AffineCamera, ...]
    tilts_deg: tuple[float, ...]
    tilt_axis_deg: float
    pixel_size_um: float
    image_shape: tuple[int, int]
    """(H, W) of every view, px."""
    surface: HeightMap
    true_volume_um3: float
    """``∫ h dA``: volume between the grain's top surface and a flat base on the substrate."""
    grain_diameter_um: float
    """Equivalent-circle diameter ``√(4 A / π)`` of the footprint area A (grid nodes with h > 0)."""
    max_feret_um: float
    """Largest caliper width of the footprint."""
    grain_height_um: float
    footprint_area_um2: float
    specimen_centre_um: tuple[float, float, float]
    """World point imaged at the image centre of every view."""
    view_heights: tuple[np.ndarray, ...] = ()
    """Per view (H, W) float32: Z of the surface point seen by each pixel, µm."""
    view_masks: tuple[np.ndarray, ...] = ()
    """Per view (H, W) bool: the pixel sees the grain (not the substrate)."""
    spec: GrainSpec | None = None

    @property
    def surface_height(self) -> np.ndarray:
        """(ny, nx) float32 true height grid, µm."""
        return self.surface.height

    @property
    def grid_spacing_um(self) -> float:
        return float(self.surface.pixel_size)

    @property
    def grid_origin_um(self) -> tuple[float, float]:
        """(X, Y) of grid node [0, 0]; node [j, i] is at ``origin + Δ (i, j)``."""
        return (float(self.surface.origin[0]), float(self.surface.origin[1]))

    @property
    def grain_mask(self) -> np.ndarray:
        """(ny, nx) bool: grid nodes on the grain (h > 0)."""
        return self.surface.height > 0

    def height_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True height ``h(X, Y)`` in µm (bilinear interpolant; 0 off the grid)."""
        return surface_height_at(self.surface, x, y)

    @cached_property
    def _samples(self) -> tuple[np.ndarray, np.ndarray, float]:
        area = self.surface.height.size * self.grid_spacing_um**2
        spacing = max(self.grid_spacing_um, math.sqrt(1.5 * area / 4e6))
        pts, nrm = sample_height_surface(self.surface, spacing)
        return pts, nrm, spacing

    @cached_property
    def _tree(self):  # noqa: ANN202 - scipy.spatial.cKDTree
        from scipy.spatial import cKDTree

        return cKDTree(self._samples[0])

    def surface_points(self, grain_only: bool = False) -> np.ndarray:
        """(N, 3) dense samples of the true surface (grain top and the substrate ring of the grid), µm.

        Spacing along the surface ≤ max(grid spacing, √(1.5 · grid area / 4·10⁶)), adaptive on steep sides.
        """
        pts = self._samples[0]
        return pts[pts[:, 2] > 0] if grain_only else pts

    def true_points(self, n: int, seed: int = 0, grain_only: bool = True) -> np.ndarray:
        """``n`` random samples (without replacement when possible) of :meth:`surface_points`, (n, 3) µm."""
        pts = self.surface_points(grain_only)
        rng = np.random.default_rng(seed)
        return pts[rng.choice(pts.shape[0], size=n, replace=n > pts.shape[0])]

    def distance_to_surface(self, points: np.ndarray) -> np.ndarray:
        """Unsigned distance (µm) from (N, 3) points to the true surface.

        Nearest dense sample ``q`` (KD-tree) refined to the distance to its tangent plane ``|(P − q)·n_q|``
        when the foot of the perpendicular lies within one sample spacing of ``q`` (else ``|P − q|``),
        combined with the exact distance to the substrate plane beyond the grid. Error ≪ the sample
        spacing on smooth parts, ≤ one spacing at creases (contact line, facet edges).
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        samples, normals, spacing = self._samples
        _, idx = self._tree.query(p, workers=-1)
        diff = p - samples[idx]
        dn = np.einsum("ij,ij->i", diff, normals[idx])
        d2 = np.einsum("ij,ij->i", diff, diff)
        tangential = np.sqrt(np.clip(d2 - dn * dn, 0.0, None))
        dist = np.where(tangential <= spacing, np.abs(dn), np.sqrt(d2))
        # substrate plane outside the grid: distance to {Z = 0, (X, Y) outside the grid rectangle}
        ny, nx = self.surface.height.shape
        x0, y0 = self.grid_origin_um
        x1, y1 = x0 + (nx - 1) * self.grid_spacing_um, y0 + (ny - 1) * self.grid_spacing_um
        inside = np.minimum.reduce([p[:, 0] - x0, x1 - p[:, 0], p[:, 1] - y0, y1 - p[:, 1]])
        plane = np.hypot(np.clip(inside, 0.0, None), p[:, 2])
        return np.minimum(dist, plane)

    def visible_surface_points(self, view: int, stride: int = 1, grain_only: bool = True) -> np.ndarray:
        """(M, 3) true surface points (µm) seen through pixel centres of ``view`` (every ``stride`` px)."""
        if not 0 <= view < len(self.cameras):
            raise TopographError(f"view {view} does not exist", f"use 0 … {len(self.cameras) - 1}")
        hh, ww = self.image_shape
        yy, xx = np.mgrid[0:hh:stride, 0:ww:stride]
        hits = cast_rays(self.surface, self.cameras[view], np.column_stack([xx.ravel(), yy.ravel()]).astype(float))
        return hits.points[hits.on_grain] if grain_only else hits.points


@dataclass(frozen=True, eq=False)
class SemDataset(SemTruth):
    """A rendered tilt series: the :class:`SemTruth` plus ``images`` ((H, W) float32 in [0, 1]) and their names."""

    images: tuple[np.ndarray, ...] = ()
    names: tuple[str, ...] = ()
    render: dict | None = None
    """Render settings (noise, seed, blur) for the record."""


def sample_height_surface(surface: HeightMap, spacing_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples and unit normals of the bilinear surface, adaptive to slope.

    Each grid cell is split into ``m_x × m_y`` sub-cells with ``m = ⌈3-D edge length / spacing⌉`` and
    sampled at the sub-cell centres, so steep sides are as dense as flat parts.

    Returns:
        (N, 3) points and (N, 3) unit normals ``(−h_X, −h_Y, 1) / ‖·‖``, µm.
    """
    g = np.asarray(surface.height, dtype=np.float64)
    d = surface.pixel_size
    x0, y0 = surface.origin
    h00, h10, h01, h11 = g[:-1, :-1], g[:-1, 1:], g[1:, :-1], g[1:, 1:]
    ex = np.maximum(np.abs(h10 - h00), np.abs(h11 - h01))
    ey = np.maximum(np.abs(h01 - h00), np.abs(h11 - h10))
    mx = np.ceil(np.hypot(d, ex) / spacing_um).astype(np.int64).clip(1, 64)
    my = np.ceil(np.hypot(d, ey) / spacing_um).astype(np.int64).clip(1, 64)
    key = mx * 65 + my
    pts_all, nrm_all = [], []
    for kk in np.unique(key):
        jj, ii = np.nonzero(key == kk)
        mxk, myk = int(kk // 65), int(kk % 65)
        su, sv = np.meshgrid((np.arange(mxk) + 0.5) / mxk, (np.arange(myk) + 0.5) / myk, indexing="xy")
        su, sv = su.ravel()[None, :], sv.ravel()[None, :]
        a, b = h00[jj, ii][:, None], h10[jj, ii][:, None]
        c, e = h01[jj, ii][:, None], h11[jj, ii][:, None]
        z = a + su * (b - a) + sv * ((c - a) + su * (e - c - b + a))
        hx = ((b - a) + sv * (e - c - b + a)) / d
        hy = ((c - a) + su * (e - c - b + a)) / d
        x = x0 + (ii[:, None] + su) * d
        y = y0 + (jj[:, None] + sv) * d
        pts_all.append(np.column_stack([x.ravel(), y.ravel(), z.ravel()]))
        nrm = np.column_stack([-hx.ravel(), -hy.ravel(), np.ones(hx.size)])
        nrm_all.append(nrm / np.linalg.norm(nrm, axis=1, keepdims=True))
    return np.vstack(pts_all), np.vstack(nrm_all)


def _footprint_stats(surface: HeightMap) -> tuple[float, float, float, np.ndarray]:
    """Footprint area (µm²), equivalent diameter, max Feret (µm) and hull vertices (K, 2) of nodes with h > 0."""
    from scipy.spatial import ConvexHull

    d = surface.pixel_size
    mask = surface.height > 0
    count = int(mask.sum())
    if count < 3:
        raise TopographError("the grain footprint is empty on the grid", "use a smaller grid spacing or larger grain")
    area = count * d * d
    # the hull of the footprint is the hull of its boundary nodes (nodes with a 4-neighbour outside)
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    jj, ii = np.nonzero(mask & ~inner)
    xy = np.column_stack([surface.origin[0] + ii * d, surface.origin[1] + jj * d])
    hull = xy[ConvexHull(xy).vertices]
    diff = hull[:, None, :] - hull[None, :, :]
    feret = float(np.sqrt((diff**2).sum(-1)).max())
    return area, math.sqrt(4.0 * area / math.pi), feret, hull


SPECIMENS = ("grain", "notched_grain", "l_block", "two_grains")
"""Test objects: a random grain; the grain with an off-centre notch (chiral at a glance); an L-shaped block
(chiral, flat top); two grains of different size side by side."""


def physical_camera(
    tilt_deg: float,
    tilt_axis_deg: float,
    pixel_size_um: float,
    image_rotation_deg: float = 0.0,
    translation_px: np.ndarray | None = None,
) -> AffineCamera:
    """Camera of one view built from the physical description alone (not from the engine's
    :mod:`topograph.geometry.affine`, so that a convention error there shows up in the tests).

    The stage (world X, Y on the substrate, Z toward the detector, right-handed) is turned right-handedly
    by ``tilt_deg`` about the unit axis ``u = (cos a, sin a, 0)`` (scipy ``Rotation.from_rotvec(θ u)``); the
    detector sees the lab X to the right and the lab Y **up** on the screen; the captured picture is then
    turned counter-clockwise on the screen by ``image_rotation_deg`` (a file re-saved rotated). Pixel
    coordinates: column = east / pixel, row = −north / pixel (+ translation).
    """
    from scipy.spatial.transform import Rotation

    a = math.radians(tilt_axis_deg)
    u = np.array([math.cos(a), math.sin(a), 0.0])
    specimen = Rotation.from_rotvec(math.radians(tilt_deg) * u).as_matrix()
    b = math.radians(image_rotation_deg)
    screen = np.array([[math.cos(b), -math.sin(b)], [math.sin(b), math.cos(b)]])  # CCW on the screen (east, north)
    to_pixels = np.array([[1.0, 0.0], [0.0, -1.0]]) @ screen  # (east, north) → (column, row)
    rows = to_pixels @ specimen[:2]  # (2, 3): pixel axes of the lab-frame image of the tilted specimen
    r3 = np.cross(rows[0], rows[1])
    t = np.zeros(2) if translation_px is None else np.asarray(translation_px, dtype=float)
    return AffineCamera(rotation=np.vstack([rows, r3]), scale=1.0 / pixel_size_um, skew=0.0, translation=t)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def specimen_height_grid(spec: GrainSpec, spacing_um: float, specimen: str = "grain") -> HeightMap:
    """Height grid of a test object (:data:`SPECIMENS`), centred on the world origin, zero border.

    * ``grain``: :func:`grain_height_grid`.
    * ``notched_grain``: the grain with a notch of 60 % of its height cut into one side, off-centre
      (a 0.9 R × 0.22 R groove from the rim toward the centre at 35° in the first quadrant).
    * ``l_block``: an L of two slabs (D × 0.35 D and 0.35 D × 0.8 D), height 0.3 D, sides sloped over
      0.06 D (smoothstep), top textured by small bumps so that it can be matched.
    * ``two_grains``: the grain (seed s) and a smaller one (seed s + 1, 0.65 D) side by side.
    """
    if specimen not in SPECIMENS:
        raise TopographError(f"unknown specimen {specimen!r}", f"use one of {', '.join(SPECIMENS)}")
    if specimen == "grain":
        return grain_height_grid(spec, spacing_um)
    d = spec.diameter_um
    if specimen == "two_grains":
        small = GrainSpec(**{**asdict(spec), "seed": spec.seed + 1, "diameter_um": 0.65 * d})
        big_m, small_m = _grain_model(spec), _grain_model(small)
        c_big, c_small = np.array([-0.42 * d, -0.1 * d]), np.array([0.5 * d, 0.22 * d])
        half = max(np.abs(c_big).max() + big_m.max_radius(), np.abs(c_small).max() + small_m.max_radius())
        half += max(0.08 * d, 3 * spacing_um)
    elif specimen == "l_block":
        half = 0.62 * d + max(0.08 * d, 3 * spacing_um)
    else:
        half = _grain_model(spec).max_radius() + max(0.08 * d, 3 * spacing_um)
    n = int(math.ceil(2.0 * half / spacing_um)) + 1
    x0 = -0.5 * (n - 1) * spacing_um
    axis = x0 + spacing_um * np.arange(n)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    if specimen == "two_grains":
        grid = np.maximum(big_m.height(xx - c_big[0], yy - c_big[1]), small_m.height(xx - c_small[0], yy - c_small[1]))
    elif specimen == "l_block":
        w = 0.06 * d

        def slab(xa: float, xb: float, ya: float, yb: float) -> np.ndarray:
            return (
                _smoothstep((xx - xa) / w)
                * _smoothstep((xb - xx) / w)
                * _smoothstep((yy - ya) / w)
                * _smoothstep((yb - yy) / w)
            )

        foot = np.maximum(slab(-0.5 * d, 0.5 * d, -0.5 * d, -0.15 * d), slab(-0.5 * d, -0.15 * d, -0.5 * d, 0.3 * d))
        rng = np.random.default_rng(spec.seed)
        bumps = np.zeros_like(xx)
        for cx, cy, amp in rng.uniform([-0.5, -0.5, -1.0], [0.5, 0.3, 1.0], size=(12, 3)):
            bumps += 0.02 * d * amp * np.exp(-((xx - cx * d) ** 2 + (yy - cy * d) ** 2) / (2 * (0.08 * d) ** 2))
        grid = foot * (0.3 * d + bumps)
    else:  # notched grain
        model = _grain_model(spec)
        grid = model.height(xx, yy)
        r0 = model.r0
        ang = math.radians(35.0)
        along = xx * math.cos(ang) + yy * math.sin(ang)
        across = -xx * math.sin(ang) + yy * math.cos(ang)
        w = 0.05 * d
        groove = _smoothstep((along - 0.25 * r0) / w) * _smoothstep((0.11 * r0 - np.abs(across - 0.1 * r0)) / w)
        grid = grid * (1.0 - 0.6 * groove)
    grid = np.clip(grid, 0.0, None).astype(np.float32)
    grid[:2], grid[-2:], grid[:, :2], grid[:, -2:] = 0.0, 0.0, 0.0, 0.0
    return HeightMap(height=grid, pixel_size=float(spacing_um), unit="um", lateral_unit="um", origin=(x0, x0))


def render_sem_series(
    spec: GrainSpec | None = None,
    tilts_deg: Sequence[float] = (0.0, 5.0, 10.0),
    tilt_axis_deg: float = 0.0,
    image_size: tuple[int, int] = (800, 800),
    pixel_size_um: float | None = None,
    noise: float = 0.02,
    seed: int = 0,
    *,
    blur_sigma_px: float = 0.6,
    oversample: float = 2.0,
    fill_fraction: float = 0.6,
    specimen: str = "grain",
    image_rotation_deg: float = 0.0,
    drift_px: Sequence[Sequence[float]] | None = None,
    centre_offset_px: tuple[float, float] = (0.0, 0.0),
    allow_clipping: bool = False,
    substrate_albedo: float = 0.22,
    contrast: float = 1.0,
) -> SemDataset:
    """Render an SEM tilt series of a test object with exact ground truth.

    Cameras are :func:`physical_camera` (built from the physical description, docs/conventions.md): the stage
    turns right-handedly by ``tilt`` about the axis at ``tilt_axis_deg`` counter-clockwise from the screen's
    x axis; the picture is then turned by ``image_rotation_deg`` (0/90/180/270: files re-saved rotated) and
    shifted by ``drift_px[f]``. The translation puts the specimen centre (centre of the footprint's bounding
    box, half its height) at the image centre plus ``centre_offset_px``. The truth records the tilt axis *as
    it appears in the images* (``tilt_axis_deg + image_rotation_deg``).

    Args:
        spec: grain parameters (default :class:`GrainSpec()`).
        tilts_deg: stage tilt of each view, degrees (|tilt| ≤ 75).
        tilt_axis_deg: tilt-axis direction on the screen at capture, degrees counter-clockwise from x.
        image_size: (H, W) pixels.
        pixel_size_um: µm per pixel; ``None`` fits the footprint's largest extent to ``fill_fraction``
            of the smaller image side.
        noise: noise σ at mid-grey (0 = noiseless).
        seed: seed of the noise (the grain and its texture come from ``spec.seed``).
        blur_sigma_px: Gaussian blur σ, px.
        oversample: grid nodes per pixel along each axis (the grid spacing is pixel / oversample).
        fill_fraction: footprint extent / image side when the pixel size is automatic.
        specimen: test object (:data:`SPECIMENS`).
        image_rotation_deg: rotation of every saved picture, counter-clockwise on the screen, degrees.
        drift_px: per-view image shift (dx, dy) in px (scan drift between views).
        centre_offset_px: where the specimen centre lies relative to the image centre, px.
        allow_clipping: let the specimen cross the image border (otherwise that is an error).
        substrate_albedo: substrate brightness (dark ~0.08, default 0.22, bright ~0.6).
        contrast: image contrast about its mean (1 = as rendered).

    Returns:
        :class:`SemDataset`.
    """
    spec = GrainSpec() if spec is None else spec
    tilts = tuple(float(t) for t in tilts_deg)
    hh, ww = (int(v) for v in image_size)
    if not tilts:
        raise TopographError("no tilt angles given", "pass at least one tilt, e.g. --tilts 0,5,10")
    if any(not math.isfinite(t) or abs(t) > _MAX_TILT_DEG for t in tilts):
        raise TopographError(f"tilts must be within ±{_MAX_TILT_DEG}°, got {list(tilts)}", "e.g. --tilts 0,5,10")
    if not math.isfinite(tilt_axis_deg) or not math.isfinite(image_rotation_deg):
        raise TopographError(f"tilt axis must be a finite angle, got {tilt_axis_deg}", "e.g. --tilt-axis-deg 0")
    if hh < 16 or ww < 16:
        raise TopographError(f"image size {ww}×{hh} px is too small", "use at least 16 px per side, e.g. --size 800")
    if noise < 0 or not math.isfinite(noise):
        raise TopographError(f"noise must be ≥ 0, got {noise}", "e.g. --noise 0.02")
    if not 0.05 <= fill_fraction <= 1.0:
        raise TopographError(f"fill_fraction must be in [0.05, 1], got {fill_fraction}", "e.g. 0.6")
    if oversample < 1:
        raise TopographError(f"oversample must be ≥ 1, got {oversample}", "e.g. oversample=2")
    drift = np.zeros((len(tilts), 2)) if drift_px is None else np.asarray(drift_px, dtype=float).reshape(-1, 2)
    if drift.shape[0] != len(tilts):
        raise TopographError(f"{drift.shape[0]} drift shifts for {len(tilts)} views", "give one (dx, dy) per view")
    coarse = specimen_height_grid(spec, spec.diameter_um / 200.0, specimen)
    extent = float(max(coarse.height.shape) * coarse.pixel_size)
    if pixel_size_um is None:
        _, _, feret0, _ = _footprint_stats(coarse)
        pixel_size_um = feret0 / (fill_fraction * min(hh, ww))
    elif not (pixel_size_um > 0 and math.isfinite(pixel_size_um)):
        raise TopographError(f"pixel size must be > 0, got {pixel_size_um}", "e.g. --pixel-size-um 0.05")
    pixel_size_um = float(pixel_size_um)

    # cap the grid at ~4096² nodes
    spacing = max(pixel_size_um / oversample, extent / 4096.0)
    surface = specimen_height_grid(spec, spacing, specimen)
    volume = float(surface.height.sum(dtype=np.float64)) * spacing * spacing
    area, eq_diam, feret, hull = _footprint_stats(surface)
    h_max = float(surface.height.max())
    centre = np.array(
        [0.5 * (hull[:, 0].min() + hull[:, 0].max()), 0.5 * (hull[:, 1].min() + hull[:, 1].max()), h_max / 2]
    )
    image_centre = np.array([(ww - 1) / 2.0, (hh - 1) / 2.0]) + np.asarray(centre_offset_px, dtype=float)
    outline = np.vstack(
        [np.column_stack([hull, np.zeros(len(hull))]), np.column_stack([hull, np.full(len(hull), h_max)])]
    )

    cameras = []
    for f, t in enumerate(tilts):
        cam0 = physical_camera(t, tilt_axis_deg, pixel_size_um, image_rotation_deg)
        shift = image_centre - cam0.project(centre[None])[0] + drift[f]
        cam = physical_camera(t, tilt_axis_deg, pixel_size_um, image_rotation_deg, shift)
        proj = cam.project(outline)
        if not allow_clipping and (proj.min() < 0 or proj[:, 0].max() > ww - 1 or proj[:, 1].max() > hh - 1):
            raise TopographError(
                f"the grain ({feret:.1f} µm wide, {h_max:.1f} µm high) does not fit in the {ww}×{hh} px field "
                f"at {pixel_size_um:g} µm/px and tilt {t:g}°",
                "use a larger --size or --pixel-size-um, a smaller --diameter-um, or omit --pixel-size-um to auto-fit",
            )
        cameras.append(cam)

    log.info(
        "synthetic %s: %.1f µm eq. diameter, %.1f µm high, volume %.1f µm³; %d views of %d×%d px at %.4g µm/px",
        specimen,
        eq_diam,
        h_max,
        volume,
        len(tilts),
        ww,
        hh,
        pixel_size_um,
    )
    rng = np.random.default_rng(seed)
    caster = RayCaster(surface)
    images, heights, masks = [], [], []
    for t, cam in zip(tilts, cameras, strict=True):
        view = render_view(
            surface,
            cam,
            (hh, ww),
            texture_seed=spec.seed,
            texture_largest_um=spec.diameter_um / 6.0,
            noise=noise,
            blur_sigma_px=blur_sigma_px,
            rng=rng,
            caster=caster,
            substrate_albedo=substrate_albedo,
            contrast=contrast,
        )
        log.debug("rendered view at tilt %g°: %.1f %% grain pixels", t, 100.0 * view.grain.mean())
        images.append(view.image)
        heights.append(view.height)
        masks.append(view.grain)
    image_axis = (tilt_axis_deg + image_rotation_deg + 180.0) % 360.0 - 180.0
    return SemDataset(
        cameras=tuple(cameras),
        tilts_deg=tilts,
        tilt_axis_deg=float(image_axis),
        pixel_size_um=pixel_size_um,
        image_shape=(hh, ww),
        surface=surface,
        true_volume_um3=volume,
        grain_diameter_um=eq_diam,
        max_feret_um=feret,
        grain_height_um=h_max,
        footprint_area_um2=area,
        specimen_centre_um=(float(centre[0]), float(centre[1]), float(centre[2])),
        view_heights=tuple(heights),
        view_masks=tuple(masks),
        spec=spec,
        images=tuple(images),
        names=tuple(f"view_{i:02d}" for i in range(len(tilts))),
        render={
            "noise": noise,
            "seed": seed,
            "blur_sigma_px": blur_sigma_px,
            "oversample": oversample,
            "specimen": specimen,
            "capture_tilt_axis_deg": float(tilt_axis_deg),
            "image_rotation_deg": float(image_rotation_deg),
            "drift_px": drift.tolist(),
            "substrate_albedo": substrate_albedo,
            "contrast": contrast,
        },
    )


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------


def fei_metadata_text(
    tilt_deg: float, pixel_size_um: float, image_shape: tuple[int, int], tilt_axis_deg: float = 0.0
) -> str:
    """FEI/Thermo INI header (TIFF tag 34682) of a synthetic view.

    ``[Stage] StageT`` is the tilt in rad, ``StageR`` = 0 rad, ``[Scan] PixelWidth`` in m, ``[EBeam] WD``
    in m (10 mm), ``[Image] ResolutionY`` = image rows (no data bar), ``ScanRotation`` = 0. FEI tags hold
    no tilt-axis direction (docs/conventions.md); ``tilt_axis_deg`` is accepted for the record only.
    """
    hh, ww = image_shape
    px_m = pixel_size_um * 1e-6
    t = math.radians(tilt_deg)
    a = 0.0
    sections = {
        "User": {"User": "topograph", "UserText": "topograph synthetic SEM grain"},
        "System": {"Type": "SEM", "Software": "topograph.synth.sem", "Source": "FEG"},
        "Beam": {"HV": 10000, "Spot": 3, "ScanRotation": a, "Beam": "EBeam", "Scan": "EScan"},
        "EBeam": {
            "HV": 10000,
            "HFW": ww * px_m,
            "VFW": hh * px_m,
            "WD": 0.01,
            "ScanRotation": a,
            "StageR": 0.0,
            "StageTa": t,
            "StageTb": 0,
        },
        "Scan": {
            "PixelWidth": px_m,
            "PixelHeight": px_m,
            "HorFieldsize": ww * px_m,
            "VerFieldsize": hh * px_m,
        },
        "Stage": {
            "StageX": 0.0,
            "StageY": 0.0,
            "StageZ": 0.01,
            "StageR": 0.0,
            "StageT": t,
            "StageTb": 0,
            "WorkingDistance": 0.01,
        },
        "Image": {"ResolutionX": ww, "ResolutionY": hh, "DigitalContrast": 1, "DigitalBrightness": 0},
    }
    lines = []
    for name, kv in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items())
        lines.append("")
    return "\r\n".join(lines)


def _camera_json(cam: AffineCamera) -> dict:
    return {
        "rotation": cam.rotation.tolist(),
        "scale": float(cam.scale),
        "skew": float(cam.skew),
        "translation": cam.translation.tolist(),
    }


def save_sem_dataset(ds: SemDataset, out_dir: str | Path, *, with_metadata: bool = True) -> Path:
    """Write a rendered series and its ground truth (every file atomically).

    Layout (see docs/ground-truth.md): ``view_NN.tif`` — 16-bit TIFF with the FEI tag 34682
    (:func:`fei_metadata_text`) — or, with ``with_metadata=False``, 8-bit ``view_NN.png`` without any
    metadata; ``truth/truth.json`` (cameras, tilts, pixel size, volume, diameters, units, grid),
    ``truth/surface_height.tif`` (float32 µm), ``truth/grain_mask.png``, ``truth/view_NN_height.tif``
    (float32 µm) and ``truth/view_NN_mask.png``.

    Returns:
        ``out_dir``.
    """
    import cv2
    import tifffile

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TopographError(f"output path {out} exists and is not a folder", "choose a folder path for the dataset")
    truth_dir = out / "truth"
    files = []
    for i, img in enumerate(ds.images):
        name = ds.names[i] if i < len(ds.names) else f"view_{i:02d}"
        if with_metadata:
            fname = f"{name}.tif"
            data = np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16)
            text = fei_metadata_text(ds.tilts_deg[i], ds.pixel_size_um, ds.image_shape, ds.tilt_axis_deg)
            with atomic_path(out / fname) as tmp:
                tifffile.imwrite(tmp, data, extratags=[(_FEI_TAG, "s", 0, text, True)])
        else:
            fname = f"{name}.png"
            with atomic_path(out / fname) as tmp:
                _write_png(cv2, tmp, np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8))
        files.append(fname)

    with atomic_path(truth_dir / "surface_height.tif") as tmp:
        tifffile.imwrite(tmp, ds.surface.height.astype(np.float32))
    with atomic_path(truth_dir / "grain_mask.png") as tmp:
        _write_png(cv2, tmp, ds.grain_mask.astype(np.uint8) * 255)
    view_truth = []
    for i, (hgt, msk) in enumerate(zip(ds.view_heights, ds.view_masks, strict=True)):
        entry = {"height": f"view_{i:02d}_height.tif", "mask": f"view_{i:02d}_mask.png"}
        with atomic_path(truth_dir / entry["height"]) as tmp:
            tifffile.imwrite(tmp, hgt.astype(np.float32))
        with atomic_path(truth_dir / entry["mask"]) as tmp:
            _write_png(cv2, tmp, msk.astype(np.uint8) * 255)
        view_truth.append(entry)

    ny, nx = ds.surface.height.shape
    doc = {
        "format": TRUTH_FORMAT,
        "version": TRUTH_VERSION,
        "units": {"length": "um", "angle": "deg", "image": "px", "volume": "um3"},
        "camera_model": "x = k [[1, 0, 0], [s, 1, 0]] R X + t (world X, Y on the substrate, Z toward the beam)",
        "image_size": {"height": ds.image_shape[0], "width": ds.image_shape[1]},
        "pixel_size_um": ds.pixel_size_um,
        "tilt_axis_deg": ds.tilt_axis_deg,
        "tilts_deg": list(ds.tilts_deg),
        "specimen_centre_um": list(ds.specimen_centre_um),
        "views": [
            {"file": f, "tilt_deg": t, "camera": _camera_json(c), **vt}
            for f, t, c, vt in zip(files, ds.tilts_deg, ds.cameras, view_truth, strict=False)
        ],
        "grain": {
            "volume_um3": ds.true_volume_um3,
            "equivalent_diameter_um": ds.grain_diameter_um,
            "max_feret_um": ds.max_feret_um,
            "height_um": ds.grain_height_um,
            "footprint_area_um2": ds.footprint_area_um2,
            "spec": asdict(ds.spec) if ds.spec is not None else None,
        },
        "surface": {
            "file": "surface_height.tif",
            "grain_mask": "grain_mask.png",
            "shape": [ny, nx],
            "spacing_um": ds.grid_spacing_um,
            "origin_um": list(ds.grid_origin_um),
            "interpolation": "bilinear; node [j, i] at origin + spacing * (i, j); height 0 outside the grid",
        },
        "render": ds.render,
        "metadata_in_images": bool(with_metadata),
    }
    write_json(truth_dir / "truth.json", doc)
    log.info("wrote %d views and ground truth to %s", len(files), out)
    return out


def _write_png(cv2, path: Path, img: np.ndarray) -> None:  # noqa: ANN001 - the cv2 module
    if not cv2.imwrite(str(path), img):
        raise TopographError(f"could not write {path}", "check that the folder is writable")


def _truth_json(path: Path) -> tuple[Path, dict]:
    path = Path(path)
    for cand in (path / "truth" / "truth.json", path / "truth.json", path):
        if cand.is_file():
            try:
                doc = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TopographError(f"cannot read {cand}: {exc}", "regenerate it with `topograph synth sem`") from exc
            if doc.get("format") != TRUTH_FORMAT:
                raise TopographError(f"{cand} is not a topograph SEM truth file", "point to a `synth sem` output")
            return cand.parent, doc
    raise TopographError(f"no truth/truth.json under {path}", "point to a folder written by `topograph synth sem`")


def load_sem_truth(path: str | Path) -> SemTruth:
    """Read the ground truth written by :func:`save_sem_dataset` (the dataset folder or its ``truth/``)."""
    import cv2
    import tifffile

    truth_dir, doc = _truth_json(Path(path))
    surf = doc["surface"]
    height = tifffile.imread(truth_dir / surf["file"]).astype(np.float32)
    surface = HeightMap(height=height, pixel_size=float(surf["spacing_um"]), origin=tuple(surf["origin_um"]))
    cams, vh, vm = [], [], []
    for v in doc["views"]:
        c = v["camera"]
        cams.append(AffineCamera(np.array(c["rotation"]), c["scale"], c["skew"], np.array(c["translation"])))
        if (truth_dir / v.get("height", "")).is_file() and (truth_dir / v.get("mask", "")).is_file():
            vh.append(tifffile.imread(truth_dir / v["height"]).astype(np.float32))
            vm.append(cv2.imread(str(truth_dir / v["mask"]), cv2.IMREAD_GRAYSCALE) > 0)
    g = doc["grain"]
    spec = (
        GrainSpec(**{f.name: g["spec"][f.name] for f in fields(GrainSpec) if f.name in g["spec"]})
        if g.get("spec")
        else None
    )
    return SemTruth(
        cameras=tuple(cams),
        tilts_deg=tuple(float(t) for t in doc["tilts_deg"]),
        tilt_axis_deg=float(doc["tilt_axis_deg"]),
        pixel_size_um=float(doc["pixel_size_um"]),
        image_shape=(int(doc["image_size"]["height"]), int(doc["image_size"]["width"])),
        surface=surface,
        true_volume_um3=float(g["volume_um3"]),
        grain_diameter_um=float(g["equivalent_diameter_um"]),
        max_feret_um=float(g["max_feret_um"]),
        grain_height_um=float(g["height_um"]),
        footprint_area_um2=float(g["footprint_area_um2"]),
        specimen_centre_um=tuple(float(v) for v in doc["specimen_centre_um"]),
        view_heights=tuple(vh) if len(vh) == len(cams) else (),
        view_masks=tuple(vm) if len(vm) == len(cams) else (),
        spec=spec,
    )


def load_sem_dataset(path: str | Path) -> SemDataset:
    """Read a dataset written by :func:`save_sem_dataset`: the truth plus the images as float32 in [0, 1]."""
    import cv2
    import tifffile

    truth = load_sem_truth(path)
    truth_dir, doc = _truth_json(Path(path))
    root = truth_dir.parent
    images, names = [], []
    for v in doc["views"]:
        f = root / v["file"]
        if not f.is_file():
            raise TopographError(f"image {f} is missing", "regenerate the dataset with `topograph synth sem`")
        raw = tifffile.imread(f) if f.suffix.lower() in (".tif", ".tiff") else cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        images.append((raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)).astype(np.float32))
        names.append(f.stem)
    base = {fl.name: getattr(truth, fl.name) for fl in fields(SemTruth)}
    return SemDataset(**base, images=tuple(images), names=tuple(names), render=doc.get("render"))
