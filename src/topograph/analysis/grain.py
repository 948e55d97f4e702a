"""Shape metrics of one closed grain mesh (volume, area, sphericity, L/I/S, Feret diameters, convexity).

All lengths are in the mesh's unit; areas in unit², volumes in unit³. When the mesh was closed from a
visible top surface (``closure="base"`` or ``"mirrored"``), the unseen underside is modelled, and
:attr:`GrainMetrics.relies_on_underside` names the quantities that depend on that model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import trimesh
from scipy.optimize import minimize

from topograph.errors import TopographError

log = logging.getLogger("topograph")

CLOSURE_TEXT = {
    "none": "none (the mesh was closed as given)",
    "base": "flat base on the substrate plane",
    "mirrored": "mirrored about the substrate plane",
}
"""Accepted ``closure`` keys and the sentence stored in the metrics."""

DIMENSIONS_METHOD = "extents of the convex hull along the principal axes of inertia of the solid"

_UNDERSIDE_ALWAYS = (
    "volume",
    "surface_area",
    "equivalent_sphere_diameter",
    "sphericity",
    "length_l",
    "length_i",
    "length_s",
    "elongation",
    "flatness",
    "feret_min",
    "convexity",
)
"""Quantities that integrate over the whole solid or are measured along its inertia axes / narrowest
direction, hence always depend on a modelled underside. ``feret_max`` is checked per mesh."""

_UNIT_POWER = {  # power of the length unit of every quantity
    "volume": 3,
    "surface_area": 2,
    "equivalent_sphere_diameter": 1,
    "sphericity": 0,
    "length_l": 1,
    "length_i": 1,
    "length_s": 1,
    "elongation": 0,
    "flatness": 0,
    "feret_max": 1,
    "feret_min": 1,
    "convexity": 0,
}


@dataclass(frozen=True)
class GrainMetrics:
    """3-D shape descriptors of a closed grain mesh.

    Lengths in ``unit``, ``surface_area`` in unit², ``volume`` in unit³; ratios are dimensionless.
    """

    unit: str
    closure: str
    """How the solid was closed: "none (the mesh was closed as given)", "flat base on the substrate plane"
    or "mirrored about the substrate plane"."""
    volume: float
    surface_area: float
    equivalent_sphere_diameter: float
    """(6V/π)^(1/3)."""
    sphericity: float
    """Wadell: π^(1/3) (6V)^(2/3) / A (1 for a sphere)."""
    length_l: float
    """Longest principal dimension L."""
    length_i: float
    """Intermediate principal dimension I."""
    length_s: float
    """Shortest principal dimension S."""
    elongation: float
    """I / L."""
    flatness: float
    """S / I."""
    feret_max: float
    """Largest distance between two points of the solid (between convex-hull vertices)."""
    feret_min: float
    """Smallest caliper width over all directions."""
    convexity: float
    """Solidity V / V_hull."""
    relies_on_underside: frozenset[str]
    """Names of the quantities that depend on the unseen (modelled) underside; empty for a measured closed mesh."""
    dimensions_method: str = DIMENSIONS_METHOD
    n_vertices: int = 0
    n_faces: int = 0

    def unit_of(self, name: str) -> str:
        """The unit string of quantity ``name`` ("um", "um^2", "um^3" or "1" for ratios)."""
        power = _UNIT_POWER[name]
        return "1" if power == 0 else self.unit if power == 1 else f"{self.unit}^{power}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: every quantity as ``{"value", "unit", "relies_on_underside"}`` plus the context."""
        out: dict[str, Any] = {
            "unit": self.unit,
            "closure": self.closure,
            "principal_dimensions_method": self.dimensions_method,
            "relies_on_underside": sorted(self.relies_on_underside),
            "n_vertices": self.n_vertices,
            "n_faces": self.n_faces,
        }
        for name in _UNIT_POWER:
            out[name] = {
                "value": float(getattr(self, name)),
                "unit": self.unit_of(name),
                "relies_on_underside": name in self.relies_on_underside,
            }
        return out

    def columns(self) -> list[tuple[str, str]]:
        """(header, formatted value) pairs for a one-row table; a trailing * marks underside-dependent values."""
        u = _pretty_unit(self.unit)

        def mark(*names: str) -> str:
            return "*" if any(n in self.relies_on_underside for n in names) else ""

        return [
            (f"V\n{u}³", f"{self.volume:.4g}{mark('volume')}"),
            (f"A\n{u}²", f"{self.surface_area:.4g}{mark('surface_area')}"),
            (f"ESD\n{u}", f"{self.equivalent_sphere_diameter:.4g}{mark('equivalent_sphere_diameter')}"),
            ("Ψ", f"{self.sphericity:.3f}{mark('sphericity')}"),
            (f"L\n{u}", f"{self.length_l:.4g}{mark('length_l')}"),
            (f"I\n{u}", f"{self.length_i:.4g}{mark('length_i')}"),
            (f"S\n{u}", f"{self.length_s:.4g}{mark('length_s')}"),
            ("I/L", f"{self.elongation:.3f}{mark('elongation')}"),
            ("S/I", f"{self.flatness:.3f}{mark('flatness')}"),
            (f"Feret max\n{u}", f"{self.feret_max:.4g}{mark('feret_max')}"),
            (f"Feret min\n{u}", f"{self.feret_min:.4g}{mark('feret_min')}"),
            ("solidity", f"{self.convexity:.3f}{mark('convexity')}"),
        ]

    def one_line(self) -> str:
        """All metrics on one line of text, e.g. ``V µm³=4.189  A µm²=12.57 ...``."""
        return "  ".join(f"{' '.join(h.split())}={v}" for h, v in self.columns())


def _pretty_unit(unit: str) -> str:
    return "µm" if unit == "um" else unit


def grain_metrics(mesh: trimesh.Trimesh, unit: str = "um", closure: str = "none") -> GrainMetrics:
    """Measure a closed grain mesh.

    Equations: equivalent sphere diameter d = (6V/π)^(1/3); Wadell sphericity Ψ = π^(1/3)(6V)^(2/3)/A;
    principal dimensions L ≥ I ≥ S are the extents of the convex hull along the eigenvectors of the
    solid's inertia tensor; elongation I/L, flatness S/I; Feret max = max pairwise distance of hull
    vertices; Feret min = min over unit directions n of (max − min of hull vertices · n), searched over
    hull face normals and 2000 directions, then refined by Nelder–Mead (exact for polytopes whose minimum
    width is attained at a face, an upper bound within ~0.1 % otherwise); convexity (solidity) V / V_hull.

    Args:
        mesh: a watertight mesh with consistent winding (inward winding is flipped, with a log message).
        unit: length unit of the vertices ("um" or "px").
        closure: ``"none"`` (a measured closed mesh), ``"base"`` or ``"mirrored"`` (from
            :func:`~topograph.analysis.mesh.close_with_base`).

    Returns:
        :class:`GrainMetrics`.

    Raises:
        TopographError: unknown closure, empty mesh, mesh not closed or not orientable.
    """
    if closure not in CLOSURE_TEXT:
        raise TopographError(f"unknown closure '{closure}'", f"use one of: {', '.join(CLOSURE_TEXT)}")
    if mesh is None or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise TopographError("the mesh is empty (no faces)", "check the input file")
    if not np.isfinite(mesh.vertices).all():
        raise TopographError("the mesh has non-finite vertex coordinates", "remove NaN/inf vertices")
    if not mesh.is_watertight:
        n_open = _count_open_edges(mesh)
        raise TopographError(
            f"the mesh is not closed ({n_open} boundary edges), so it has no volume",
            "use --close base (or --close mirrored) or a closed mesh",
        )
    if not mesh.is_winding_consistent:
        raise TopographError(
            "the mesh's faces are not consistently oriented", "repair the mesh (fix normals) before measuring it"
        )
    if mesh.volume < 0:
        log.info("mesh normals point inward; measuring the inverted mesh")
        mesh = trimesh.Trimesh(vertices=mesh.vertices, faces=np.asarray(mesh.faces)[:, ::-1], process=False)
    volume = float(mesh.volume)
    if not volume > 0:
        raise TopographError("the closed mesh encloses no volume", "check that the mesh is a solid")
    area = float(mesh.area)
    hull = mesh.convex_hull
    hull_v = np.asarray(hull.vertices, dtype=float)

    esd = (6.0 * volume / np.pi) ** (1.0 / 3.0)
    sphericity = np.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / area
    lengths = principal_dimensions(mesh, hull_v)
    fmax, pair = feret_max(hull_v)
    fmin = feret_min(hull_v, np.asarray(hull.face_normals, dtype=float))

    relies: set[str] = set()
    if closure != "none":
        relies.update(_UNDERSIDE_ALWAYS)
        n_top = mesh.metadata.get("topograph_n_top_vertices")
        # feret_max is measured on hull vertices; it is visible-only if both ends are top vertices.
        ends = [np.flatnonzero((np.asarray(mesh.vertices) == hull_v[k]).all(axis=1)) for k in pair]
        if n_top is None or not all(len(e) and (e < n_top).any() for e in ends):
            relies.add("feret_max")
    return GrainMetrics(
        unit=unit,
        closure=CLOSURE_TEXT[closure],
        volume=volume,
        surface_area=area,
        equivalent_sphere_diameter=float(esd),
        sphericity=float(sphericity),
        length_l=float(lengths[0]),
        length_i=float(lengths[1]),
        length_s=float(lengths[2]),
        elongation=float(lengths[1] / lengths[0]),
        flatness=float(lengths[2] / lengths[1]) if lengths[1] > 0 else float("nan"),
        feret_max=float(fmax),
        feret_min=float(fmin),
        convexity=float(volume / hull.volume),
        relies_on_underside=frozenset(relies),
        n_vertices=len(mesh.vertices),
        n_faces=len(mesh.faces),
    )


def _count_open_edges(mesh: trimesh.Trimesh) -> int:
    _, counts = np.unique(np.asarray(mesh.edges_sorted), axis=0, return_counts=True)
    return int((counts != 2).sum())


def principal_dimensions(mesh: trimesh.Trimesh, points: np.ndarray | None = None) -> np.ndarray:
    """L ≥ I ≥ S: extents of ``points`` (default: the mesh vertices) along the solid's principal axes of inertia.

    The axes are the eigenvectors of the inertia tensor of the closed mesh (uniform density) about its
    centre of mass. Returns (3,) lengths sorted in decreasing order.
    """
    pts = np.asarray(mesh.vertices if points is None else points, dtype=float)
    _, axes = np.linalg.eigh(np.asarray(mesh.moment_inertia, dtype=float))
    proj = (pts - np.asarray(mesh.center_mass)) @ axes
    return np.sort(np.ptp(proj, axis=0))[::-1]


def feret_max(points: np.ndarray, block: int = 2048) -> tuple[float, tuple[int, int]]:
    """Largest pairwise distance of (M, 3) points (pass convex-hull vertices) and the index pair attaining it.

    Exact, O(M²) in blocks of ``block`` rows.
    """
    p = np.asarray(points, dtype=float)
    best, pair = -1.0, (0, 0)
    sq = (p * p).sum(axis=1)
    for s in range(0, len(p), block):
        d2 = sq[s : s + block, None] + sq[None, :] - 2.0 * p[s : s + block] @ p.T
        k = int(np.argmax(d2))
        i, j = divmod(k, len(p))
        if d2[i, j] > best:
            best, pair = float(d2[i, j]), (s + i, j)
    # Recompute the winner directly to avoid cancellation in the expanded form.
    return float(np.linalg.norm(p[pair[0]] - p[pair[1]])), pair


def feret_min(points: np.ndarray, candidate_normals: np.ndarray | None = None, n_directions: int = 2000) -> float:
    """Smallest caliper width min_n (max_k p_k·n − min_k p_k·n) of (M, 3) points (pass convex-hull vertices).

    Candidates: ``candidate_normals`` (hull face normals: exact when the minimum is attained at a face)
    and ``n_directions`` Fibonacci directions on the half sphere; the five best are refined with
    Nelder–Mead over spherical angles.
    """
    p = np.asarray(points, dtype=float)
    p = p - p.mean(axis=0)
    dirs = [_fibonacci_hemisphere(n_directions)]
    if candidate_normals is not None and len(candidate_normals):
        normals = np.asarray(candidate_normals, dtype=float)
        if len(normals) > 20000:
            normals = normals[np.linspace(0, len(normals) - 1, 20000).astype(int)]
        dirs.append(normals)
    d = np.concatenate(dirs)
    widths = np.concatenate([np.ptp(p @ d[s : s + 4096].T, axis=0) for s in range(0, len(d), 4096)])
    best = float(widths.min())

    def width(angles: np.ndarray) -> float:
        t, f = angles
        n = np.array([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)])
        return float(np.ptp(p @ n))

    for k in np.argsort(widths)[:5]:
        n = d[k] / np.linalg.norm(d[k])
        start = np.array([np.arccos(np.clip(n[2], -1, 1)), np.arctan2(n[1], n[0])])
        res = minimize(width, start, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 400})
        best = min(best, float(res.fun))
    return best


def _fibonacci_hemisphere(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit vectors with z ≥ 0 (a width is the same for n and −n)."""
    i = np.arange(n) + 0.5
    z = i / n
    phi = np.pi * (1.0 + 5.0**0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])
