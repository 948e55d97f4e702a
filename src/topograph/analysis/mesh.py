"""Meshes from height fields and point clouds, closure into solids, and mesh export.

Conventions: a height grid ``height`` (H, W) holds z at grid nodes; node (row r, column c) sits at
``x = origin[0] + c * pixel_size``, ``y = origin[1] + r * pixel_size`` (rows run along +y, as image rows).
Top surfaces are wound so that their normals point up (+z); closed solids have outward normals.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh
from scipy import ndimage
from scipy.interpolate import griddata

from topograph.errors import TopographError
from topograph.io.exports import write_mesh as _write_mesh
from topograph.types import HeightMap

log = logging.getLogger("topograph")

CLOSURES = ("base", "mirrored")
"""Ways to close an open top surface: a flat base on the substrate plane, or its mirror image about that plane."""

_LIFT_REL = 1e-6
"""Top vertices at or below the base plane are lifted this fraction of the lateral extent above it
(so that no side wall has zero height)."""


def heightfield_mesh(
    height: np.ndarray,
    pixel_size: float,
    origin: tuple[float, float] = (0.0, 0.0),
    mask: np.ndarray | None = None,
) -> trimesh.Trimesh:
    """Triangulate a height grid: two triangles per grid cell whose four corner nodes are valid.

    A node is valid when its height is finite and ``mask`` (if given) is True. Only nodes used by a
    triangle become vertices. Triangles are wound counter-clockwise seen from +z (normals point up).

    Args:
        height: (H, W) heights, NaN = unknown.
        pixel_size: grid spacing in the lateral unit (> 0).
        origin: (x, y) of node (0, 0).
        mask: optional (H, W) bool, True where the node belongs to the surface.

    Returns:
        An open ``trimesh.Trimesh`` (not processed: vertex order follows the grid, row-major).

    Raises:
        TopographError: bad shapes or pixel size, or no cell with four valid corners.
    """
    z = np.asarray(height, dtype=float)
    if z.ndim != 2:
        raise TopographError(f"a height grid must be 2-D (H, W), got shape {z.shape}", "pass one height map")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise TopographError(f"pixel size must be positive, got {pixel_size}", "give the grid spacing in µm")
    valid = np.isfinite(z)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != z.shape:
            raise TopographError(f"mask shape {m.shape} differs from height shape {z.shape}", "pass a matching mask")
        valid &= m
    quad = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
    if not quad.any():
        raise TopographError(
            "the height grid has no cell with four valid corners", "check the mask and the NaN holes of the height map"
        )
    used = np.zeros_like(valid)
    used[:-1, :-1] |= quad
    used[:-1, 1:] |= quad
    used[1:, :-1] |= quad
    used[1:, 1:] |= quad
    index = np.full(z.shape, -1, dtype=np.int64)
    rows, cols = np.nonzero(used)
    index[rows, cols] = np.arange(rows.size)
    vertices = np.column_stack(
        [origin[0] + cols * float(pixel_size), origin[1] + rows * float(pixel_size), z[rows, cols]]
    )
    qr, qc = np.nonzero(quad)
    a = index[qr, qc]  # (r, c)
    b = index[qr, qc + 1]  # (r, c+1)
    c = index[qr + 1, qc]  # (r+1, c)
    d = index[qr + 1, qc + 1]  # (r+1, c+1)
    faces = np.concatenate([np.column_stack([a, b, d]), np.column_stack([a, d, c])])
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False)


def boundary_edges(mesh: trimesh.Trimesh) -> np.ndarray:
    """Directed boundary edges of a surface: edges used by exactly one face, in that face's winding order.

    Returns:
        (E, 2) int vertex indices ``(a, b)`` such that the face owning the edge traverses a → b.

    Raises:
        TopographError: the surface has edges shared by more than two faces (non-manifold).
    """
    edges = mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = edges.min(axis=1), edges.max(axis=1)
    key = lo * (int(edges.max(initial=0)) + 1) + hi
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    if (counts > 2).any():
        raise TopographError(
            f"the surface has {int((counts > 2).sum())} edges shared by more than two faces (non-manifold)",
            "repair the mesh (e.g. remove duplicate faces) before closing it",
        )
    return edges[counts[inverse.reshape(-1)] == 1]


def split_nonmanifold_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give every fan of faces around a vertex its own vertex copy (removes "bow-tie" vertices).

    Two faces sharing a vertex belong to one fan when they are linked through faces that share an edge
    containing that vertex. A vertex with k fans becomes k coincident vertices; unreferenced vertices are
    dropped. Geometry is unchanged; the result is an edge-manifold surface whose vertex stars are discs
    or half-discs (as long as no edge has more than two faces).

    Args:
        vertices: (V, 3) positions.
        faces: (F, 3) int vertex indices.

    Returns:
        (vertices, faces); the inputs themselves when no vertex needs splitting.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, dtype=np.int64)
    n_corner = f.size
    corner = np.arange(n_corner).reshape(-1, 3)
    start_v, end_v = f.ravel(), f[:, [1, 2, 0]].ravel()
    start_c, end_c = corner.ravel(), corner[:, [1, 2, 0]].ravel()
    swap = start_v > end_v
    lo_v, hi_v = np.where(swap, end_v, start_v), np.where(swap, start_v, end_v)
    lo_c, hi_c = np.where(swap, end_c, start_c), np.where(swap, start_c, end_c)
    key = lo_v * (int(f.max(initial=0)) + 1) + hi_v
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    counts = np.diff(np.r_[starts, len(ks)])
    pair = starts[counts == 2]  # manifold edges: exactly two half-edges
    i, j = order[pair], order[pair + 1]
    rows = np.concatenate([lo_c[i], hi_c[i]])
    cols = np.concatenate([lo_c[j], hi_c[j]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_corner, n_corner))
    n_comp, labels = connected_components(graph, directed=False)
    if n_comp == len(np.unique(f)):
        return vertices, faces
    position = np.zeros((n_comp, 3))
    position[labels] = np.asarray(vertices, dtype=float)[f.ravel()]
    log.debug("split %d non-manifold vertices", n_comp - len(np.unique(f)))
    return position, labels.reshape(-1, 3)


def clip_above(mesh: trimesh.Trimesh, z0: float) -> trimesh.Trimesh:
    """The part of a surface above the plane z = z0, with triangles cut exactly along the plane.

    Triangles wholly above are kept, wholly below dropped, crossing ones cut at the linear
    interpolation z = z0 along their edges (cut points shared between neighbours, winding kept).
    Vertices within 1e-9 of the extent from the plane count as below, so no zero-length edge appears.

    Args:
        mesh: a surface (any triangle mesh).
        z0: plane height.

    Returns:
        The clipped surface (unreferenced vertices removed); its new boundary lies on z = z0.

    Raises:
        TopographError: nothing of the surface lies above the plane.
    """
    v = np.asarray(mesh.vertices, dtype=float)
    f = np.asarray(mesh.faces, dtype=np.int64)
    extent = float(np.ptp(v, axis=0).max()) if len(v) else 1.0
    tiny = 1e-9 * (extent or 1.0)
    s = v[:, 2] - z0
    s = np.where(np.abs(s) <= tiny, -tiny, s)
    above = s > 0
    n_above = above[f].sum(axis=1)
    if not n_above.any():
        raise TopographError(f"no part of the surface lies above z = {z0:.6g}", "use a lower substrate level")
    whole = f[n_above == 3]
    one = f[n_above == 1]
    two = f[n_above == 2]
    one = np.take_along_axis(one, (np.argmax(above[one], axis=1)[:, None] + np.arange(3)) % 3, axis=1)
    two = np.take_along_axis(two, (np.argmin(above[two], axis=1)[:, None] + np.arange(3)) % 3, axis=1)
    # one = (A, B, C), only A above: keep (A, P_AB, P_AC). two = (C, A, B), C below: keep A, B, P_BC, P_CA.
    cut_edges = np.concatenate([one[:, [0, 1]], one[:, [0, 2]], two[:, [2, 0]], two[:, [0, 1]]])
    lo, hi = cut_edges.min(axis=1), cut_edges.max(axis=1)
    keys, inverse = np.unique(lo * len(v) + hi, return_inverse=True)
    inverse = inverse.reshape(-1)
    i, j = keys // len(v), keys % len(v)
    t = s[i] / (s[i] - s[j])
    points = v[i] + t[:, None] * (v[j] - v[i])
    points[:, 2] = z0
    p = len(v) + inverse
    n1, n2 = len(one), len(two)
    p_ab, p_ac = p[:n1], p[n1 : 2 * n1]
    p_bc, p_ca = p[2 * n1 : 2 * n1 + n2], p[2 * n1 + n2 :]
    new_faces = np.concatenate(
        [
            whole,
            np.column_stack([one[:, 0], p_ab, p_ac]),
            np.column_stack([two[:, 1], two[:, 2], p_bc]),
            np.column_stack([two[:, 1], p_bc, p_ca]),
        ]
    )
    all_v = np.concatenate([v, points])
    used, new_index = np.unique(new_faces, return_inverse=True)
    return trimesh.Trimesh(vertices=all_v[used], faces=new_index.reshape(-1, 3), process=False)


def largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The edge-connected part of a surface with the largest area (unreferenced vertices removed)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(mesh.faces, dtype=np.int64)
    adj = np.asarray(mesh.face_adjacency, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(adj)), (adj[:, 0], adj[:, 1])), shape=(len(f), len(f)))
    n, labels = connected_components(graph, directed=False)
    if n <= 1:
        return mesh
    keep = labels == int(np.argmax(np.bincount(labels, weights=np.asarray(mesh.area_faces), minlength=n)))
    used, new_index = np.unique(f[keep], return_inverse=True)
    return trimesh.Trimesh(vertices=np.asarray(mesh.vertices)[used], faces=new_index.reshape(-1, 3), process=False)


def close_with_base(
    top: trimesh.Trimesh | np.ndarray,
    base_z: float,
    *,
    closure: str = "base",
    pixel_size: float = 1.0,
    origin: tuple[float, float] = (0.0, 0.0),
    mask: np.ndarray | None = None,
) -> trimesh.Trimesh:
    """Close a visible top surface into a watertight solid standing on the plane ``z = base_z``.

    The underside is unseen, so it is modelled:

    * ``"base"``: vertical side walls from the boundary of the top down to the plane, plus a flat base cap
      (the top's triangulation projected onto the plane, wound downward). Volume = ∫ (z_top − base_z) dA.
    * ``"mirrored"``: the top reflected about the plane (z' = 2·base_z − z), joined to the top by walls
      along the boundary — a grain assumed symmetric about the substrate plane (twice the "base" volume).

    The top must be single-valued over the plane (a height field) for the cap not to overlap itself; the
    signed volume is correct either way. Vertices where two parts of the top touch only at a point are
    split first (:func:`split_nonmanifold_vertices`). Top vertices at or below the plane are lifted just
    above it (1e-6 of the lateral extent; a warning counts those clearly below) so that no wall has zero
    height; clip the top at the plane (:func:`clip_above`) or mask the substrate rather than relying on
    this, since such zero-thickness sheets count twice in the area.

    Args:
        top: an open surface (``trimesh.Trimesh``) or a height grid (H, W) with NaN = unknown.
        base_z: height of the substrate plane, same unit as the vertices.
        closure: ``"base"`` or ``"mirrored"``.
        pixel_size: grid spacing, used only when ``top`` is a height grid.
        origin: (x, y) of node (0, 0), used only when ``top`` is a height grid.
        mask: (H, W) bool nodes to keep (e.g. the grain without the substrate), only for a height grid.

    Returns:
        A watertight ``trimesh.Trimesh`` with consistent outward normals (``is_volume`` is True). The first
        ``mesh.metadata["topograph_n_top_vertices"]`` vertices are the top's.

    Raises:
        TopographError: unknown closure, empty or non-manifold top, or a top that is already closed.
    """
    if closure not in CLOSURES:
        raise TopographError(f"unknown closure '{closure}'", f"use one of: {', '.join(CLOSURES)}")
    if not np.isfinite(base_z):
        raise TopographError(f"the base level must be finite, got {base_z}", "give the substrate height")
    if not isinstance(top, trimesh.Trimesh):
        top = heightfield_mesh(np.asarray(top, dtype=float), pixel_size, origin, mask)
    if len(top.faces) == 0:
        raise TopographError("the top surface has no faces", "pass a non-empty surface")
    faces_top = np.asarray(top.faces, dtype=np.int64)
    vertices_top = np.asarray(top.vertices, dtype=float).copy()
    # Orient the top so that it faces up (its projected signed area is positive).
    tri = vertices_top[faces_top]
    e1, e2 = tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
    signed_area = float((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())
    if signed_area < 0:
        faces_top = faces_top[:, ::-1].copy()
    vertices_top, faces_top = split_nonmanifold_vertices(vertices_top, faces_top)
    top = trimesh.Trimesh(vertices=vertices_top, faces=faces_top, process=False)
    edges = boundary_edges(top)
    if len(edges) == 0:
        raise TopographError("the surface is already closed", "measure it directly, without --close")

    extent = float(np.ptp(vertices_top[:, :2], axis=0).max()) or 1.0
    floor = base_z + _LIFT_REL * extent
    below = vertices_top[:, 2] < base_z - 1e-9 * extent
    if below.any():
        log.warning(
            "%d of %d top vertices lie below the base plane z = %.6g; lifted onto it "
            "(clip the surface at the plane or mask the substrate to avoid zero-thickness sheets)",
            int(below.sum()),
            len(vertices_top),
            base_z,
        )
    vertices_top[:, 2] = np.maximum(vertices_top[:, 2], floor)

    n = len(vertices_top)
    bottom = vertices_top.copy()
    bottom[:, 2] = base_z if closure == "base" else 2.0 * base_z - vertices_top[:, 2]
    a, b = edges[:, 0], edges[:, 1]
    # The top owns a→b, so the wall runs b→a on top; a', b' are the bottom copies (index + n).
    walls = np.concatenate([np.column_stack([b, a, a + n]), np.column_stack([b, a + n, b + n])])
    cap = faces_top[:, ::-1] + n
    faces = np.concatenate([faces_top, walls, cap])
    vertices = np.concatenate([vertices_top, bottom])
    solid = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    solid.metadata["topograph_n_top_vertices"] = n
    solid.metadata["topograph_closure"] = closure
    solid.metadata["topograph_base_z"] = float(base_z)
    if not solid.is_volume:
        raise TopographError(
            "closing the surface did not give a valid solid (the top is not an orientable manifold surface)",
            "repair the top surface (consistent winding, no duplicate faces) before closing it",
        )
    return solid


def rasterize_cloud(
    cloud: np.ndarray,
    grid_step: float,
    *,
    max_gap_cells: int = 3,
    unit: str = "um",
) -> HeightMap:
    """Rasterise a point cloud to a height grid: the median z of the points in each cell.

    The grid is aligned to multiples of the step: node (r, c) sits at ``(x0 + c·step, y0 + r·step)`` with
    ``x0, y0`` multiples of the step, and its cell is the square of side ``step`` centred on it. Empty
    cells enclosed by data and no more than ``max_gap_cells`` cells from the nearest filled cell (gaps up
    to about 2·max_gap_cells wide) are filled by linear interpolation; larger gaps and the outside stay NaN.

    Args:
        cloud: (N, 3) points.
        grid_step: cell size in the cloud's lateral unit (> 0).
        max_gap_cells: largest gap half-width filled, in cells (0 disables filling).
        unit: length unit of the cloud, stored in the returned map.

    Returns:
        A :class:`~topograph.types.HeightMap` (height float32, NaN where empty).

    Raises:
        TopographError: empty or non-finite cloud, bad grid step, or a grid over 50 million cells.
    """
    xyz = np.asarray(cloud, dtype=float)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise TopographError(f"a point cloud must have shape (N, 3), got {xyz.shape}", "pass x, y, z columns")
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if len(xyz) == 0:
        raise TopographError("the point cloud is empty (no finite points)", "check the reconstruction output")
    if not np.isfinite(grid_step) or grid_step <= 0:
        raise TopographError(f"grid step must be positive, got {grid_step}", "pass a cell size in the cloud's unit")
    cols = np.rint(xyz[:, 0] / grid_step).astype(np.int64)
    rows = np.rint(xyz[:, 1] / grid_step).astype(np.int64)
    c0, r0 = int(cols.min()), int(rows.min())
    cols -= c0
    rows -= r0
    x0, y0 = c0 * float(grid_step), r0 * float(grid_step)
    h, w = int(rows.max()) + 1, int(cols.max()) + 1
    if h * w > 50_000_000:
        raise TopographError(
            f"grid step {grid_step:g} gives a {h}×{w} grid (over 50 million cells)", "use a larger --grid-step"
        )
    cell = rows * w + cols
    order = np.lexsort((xyz[:, 2], cell))
    cell_sorted, z_sorted = cell[order], xyz[order, 2]
    starts = np.flatnonzero(np.r_[True, cell_sorted[1:] != cell_sorted[:-1]])
    counts = np.diff(np.r_[starts, len(cell_sorted)])
    median = 0.5 * (z_sorted[starts + (counts - 1) // 2] + z_sorted[starts + counts // 2])
    grid = np.full(h * w, np.nan)
    grid[cell_sorted[starts]] = median
    grid = grid.reshape(h, w)
    if max_gap_cells > 0:
        grid = _fill_small_gaps(grid, max_gap_cells)
    return HeightMap(
        height=grid.astype(np.float32),
        pixel_size=float(grid_step),
        unit=unit,
        lateral_unit=unit,
        origin=(float(x0), float(y0)),
    )


def _fill_small_gaps(grid: np.ndarray, max_gap_cells: int) -> np.ndarray:
    """Fill NaN regions enclosed by data whose cells are all within ``max_gap_cells`` of data (linear)."""
    empty = ~np.isfinite(grid)
    if not empty.any() or empty.all():
        return grid
    labels, n = ndimage.label(empty)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    dist = ndimage.distance_transform_edt(empty)
    max_dist = ndimage.maximum(dist, labels, index=np.arange(1, n + 1))
    fillable = np.zeros(n + 1, dtype=bool)
    fillable[1:] = np.asarray(max_dist) <= max_gap_cells
    fillable[border] = False
    holes = fillable[labels]
    if not holes.any():
        return grid
    ring = ndimage.binary_dilation(holes, iterations=2) & ~empty
    r_src, c_src = np.nonzero(ring)
    r_dst, c_dst = np.nonzero(holes)
    filled = grid.copy()
    filled[r_dst, c_dst] = griddata(
        np.column_stack([r_src, c_src]), grid[r_src, c_src], np.column_stack([r_dst, c_dst]), method="linear"
    )
    log.debug("filled %d empty cells in %d small gaps", int(np.isfinite(filled[holes]).sum()), n)
    return filled


def mesh_from_cloud_heightfield(
    cloud: np.ndarray,
    grid_step: float,
    mask_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    *,
    max_gap_cells: int = 3,
) -> trimesh.Trimesh:
    """Mesh a 2.5-D point cloud: rasterise it (:func:`rasterize_cloud`) and triangulate the grid.

    Args:
        cloud: (N, 3) points.
        grid_step: cell size in the cloud's lateral unit.
        mask_fn: optional ``mask_fn(x, y, z) -> bool`` on (H, W) arrays of cell centres and heights;
            cells where it is False are left out (e.g. ``lambda x, y, z: z > substrate + tol``).
        max_gap_cells: gaps up to this half-width (cells) are filled by interpolation.

    Returns:
        The open top surface as a ``trimesh.Trimesh`` (normals up).
    """
    hm = rasterize_cloud(cloud, grid_step, max_gap_cells=max_gap_cells)
    mask = None
    if mask_fn is not None:
        rows, cols = np.indices(hm.height.shape)
        x = hm.origin[0] + cols * hm.pixel_size
        y = hm.origin[1] + rows * hm.pixel_size
        mask = np.asarray(mask_fn(x, y, hm.height.astype(float)), dtype=bool)
    return heightfield_mesh(hm.height.astype(float), hm.pixel_size, hm.origin, mask)


def write_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike[str], unit: str = "um") -> Path:
    """Write a mesh as PLY, STL or OBJ: :func:`topograph.io.exports.write_mesh` (the one output layer)."""
    return _write_mesh(mesh, path, unit=unit)


BASE_LEVELS = ("rim", "lowest")
"""How the substrate level is chosen: median height along the rim of the surface, or its lowest point."""


def substrate_level(height: np.ndarray, method: str = "rim") -> float:
    """Height of the substrate plane under a height grid.

    ``"rim"``: the median height of the rim nodes (valid nodes with an invalid 4-neighbour or on the grid
    border) — the substrate ring around a grain, or the grain's edge when the substrate was cut away.
    ``"lowest"``: the lowest valid height.

    Raises:
        TopographError: unknown method or no valid node.
    """
    if method not in BASE_LEVELS:
        raise TopographError(f"unknown base level '{method}'", f"use one of: {', '.join(BASE_LEVELS)}")
    z = np.asarray(height, dtype=float)
    valid = np.isfinite(z)
    if not valid.any():
        raise TopographError("the height grid has no valid node", "check the point cloud")
    if method == "lowest":
        return float(z[valid].min())
    inner = ndimage.binary_erosion(valid, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    return float(np.median(z[valid & ~inner]))


def auto_grid_step(cloud: np.ndarray, points_per_cell: float = 4.0) -> float:
    """A cell size giving about ``points_per_cell`` points per cell: sqrt(points_per_cell · A_hull / N).

    ``A_hull`` is the area of the convex hull of the cloud's (x, y); assumes the points cover it evenly.
    """
    from scipy.spatial import ConvexHull

    xy = np.asarray(cloud, dtype=float)[:, :2]
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) < 3:
        raise TopographError(f"the point cloud has only {len(xy)} points", "a surface needs at least 3 points")
    try:
        area = float(ConvexHull(xy).volume)  # in 2-D, "volume" is the area
    except Exception as exc:  # qhull fails on collinear points
        raise TopographError("the point cloud is degenerate (collinear in x, y)", "check the point cloud") from exc
    return float(np.sqrt(points_per_cell * area / len(xy)))


def substrate_noise(height: np.ndarray) -> float:
    """Robust noise level of the rim of a height grid: 1.4826 · MAD of (z − 3×3 local median) on rim nodes.

    The local median removes slow variation along the rim (a sloping substrate, a grain edge), so the
    estimate reflects point-to-point scatter. Returns 0 when the rim has fewer than 8 nodes.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    z = np.asarray(height, dtype=float)
    valid = np.isfinite(z)
    inner = ndimage.binary_erosion(valid, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    rr, cc = np.nonzero(valid & ~inner)
    if len(rr) < 8:
        return 0.0
    windows = sliding_window_view(np.pad(z, 1, constant_values=np.nan), (3, 3))[rr, cc].reshape(len(rr), 9)
    resid = z[rr, cc] - np.nanmedian(windows, axis=1)
    return float(1.4826 * np.median(np.abs(resid - np.median(resid))))


def solid_from_cloud(
    cloud: np.ndarray,
    grid_step: float | None = None,
    *,
    closure: str = "base",
    base_level: str = "rim",
    substrate_tol: float | None = None,
    max_gap_cells: int = 3,
    unit: str = "um",
) -> tuple[trimesh.Trimesh, list[str]]:
    """Closed solid of a grain from a 2.5-D point cloud of its visible top (and possibly the substrate).

    Steps: rasterise (:func:`rasterize_cloud`: median per cell, small gaps filled) → triangulate every
    valid cell → substrate level b (:func:`substrate_level`) → clip the surface at b + tol
    (:func:`clip_above`) and keep its largest connected part (the grain) → :func:`close_with_base` at b.

    Args:
        cloud: (N, 3) points, z up.
        grid_step: cell size; None picks :func:`auto_grid_step`.
        closure: "base" or "mirrored".
        base_level: "rim" or "lowest".
        substrate_tol: height above b that still counts as substrate; None = 3 × :func:`substrate_noise`.
        max_gap_cells: gap half-width filled by interpolation, cells.
        unit: length unit of the cloud (for the notes).

    Returns:
        (watertight solid, human-readable notes saying what was done).

    Raises:
        TopographError: empty cloud, or nothing rises above the substrate level.
    """
    xyz = np.asarray(cloud, dtype=float)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise TopographError(f"the point cloud is empty or not (N, 3) (shape {xyz.shape})", "check the input file")
    step = auto_grid_step(xyz) if grid_step is None else float(grid_step)
    hm = rasterize_cloud(xyz, step, max_gap_cells=max_gap_cells, unit=unit)
    z = hm.height.astype(float)
    base_z = substrate_level(z, base_level)
    tol = 3.0 * substrate_noise(z) if substrate_tol is None else float(substrate_tol)
    surface = heightfield_mesh(z, hm.pixel_size, hm.origin)
    try:
        above = clip_above(surface, base_z + tol)
    except TopographError as exc:
        raise TopographError(
            f"no part of the cloud rises above the substrate level z = {base_z:.4g} + {tol:.3g} {unit}",
            "use --base-level lowest or a smaller --substrate-tol",
        ) from exc
    grain = largest_component(above)
    solid = close_with_base(grain, base_z, closure=closure)
    how = "median height of the surface rim" if base_level == "rim" else "lowest height of the surface"
    tol_how = "3 × rim noise" if substrate_tol is None else "given"
    notes = [
        f"point cloud of {len(xyz)} points rasterised on a {step:.4g} {unit} grid "
        f"({'automatic' if grid_step is None else 'given'} step; median per cell, gaps ≤ {max_gap_cells} cells "
        "filled by linear interpolation)",
        f"substrate level z = {base_z:.4g} {unit} ({how}); surface clipped at {tol:.3g} {unit} above it "
        f"({tol_how}); kept the largest connected part ({100 * grain.area / max(above.area, 1e-300):.1f} % of the "
        "area above the cut)",
        _closure_note(closure, base_z, unit),
    ]
    return solid, notes


def solid_from_open_mesh(
    mesh: trimesh.Trimesh, *, closure: str = "base", base_level: str = "rim", unit: str = "um"
) -> tuple[trimesh.Trimesh, list[str]]:
    """Close an open top-surface mesh at its substrate level.

    The level b is the median z of the boundary vertices ("rim") or the lowest vertex ("lowest"); the
    surface is clipped at b (:func:`clip_above`), its largest connected part kept and closed at b.

    Returns:
        (watertight solid, notes saying what was done).
    """
    if base_level not in BASE_LEVELS:
        raise TopographError(f"unknown base level '{base_level}'", f"use one of: {', '.join(BASE_LEVELS)}")
    edges = boundary_edges(mesh)
    if len(edges) == 0:
        raise TopographError("the surface is already closed", "measure it directly, without --close")
    z = np.asarray(mesh.vertices, dtype=float)[:, 2]
    if base_level == "rim":
        base_z, how = float(np.median(z[np.unique(edges)])), "median height of the boundary vertices"
    else:
        base_z, how = float(z[np.unique(mesh.faces)].min()), "lowest vertex"
    above = clip_above(mesh, base_z)
    grain = largest_component(above)
    solid = close_with_base(grain, base_z, closure=closure)
    share = 100 * grain.area / max(float(mesh.area), 1e-300)
    return solid, [
        f"open mesh: substrate level z = {base_z:.4g} {unit} ({how}); clipped there, kept the largest connected "
        f"part ({share:.1f} % of the mesh area)",
        _closure_note(closure, base_z, unit),
    ]


def _closure_note(closure: str, base_z: float, unit: str) -> str:
    if closure == "base":
        return (
            f"closed with vertical walls and a flat base on the plane z = {base_z:.4g} {unit}; "
            "the underside is modelled, not measured"
        )
    return f"closed by mirroring the top about the plane z = {base_z:.4g} {unit}; the underside is assumed symmetric"


def read_geometry(path: str | os.PathLike[str]) -> tuple[trimesh.Trimesh | None, np.ndarray | None, str | None]:
    """Read a mesh (PLY/STL/OBJ) or a point cloud (PLY without faces).

    The unit comes from a ``comment unit <u>`` PLY header line or a ``# unit <u>`` OBJ line when present.

    Returns:
        (mesh or None, cloud (N, 3) or None, unit or None).

    Raises:
        TopographError: missing or unreadable file, unsupported suffix, empty geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise TopographError(f"file not found: {path}", "check the path")
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".stl", ".obj"):
        raise TopographError(f"cannot read geometry from '{path.name}'", "give a .ply, .stl or .obj file")
    unit = None
    if suffix == ".ply":
        from plyfile import PlyData

        try:
            ply = PlyData.read(str(path))
        except Exception as exc:
            raise TopographError(f"cannot read PLY file {path}: {exc}", "check that it is a valid PLY file") from exc
        unit = _unit_from_comments(list(ply.comments) + list(ply.obj_info))
        names = [e.name for e in ply.elements]
        if "vertex" not in names:
            raise TopographError(f"{path.name} has no vertex element", "give a PLY point cloud or mesh")
        has_faces = "face" in names and ply["face"].count > 0
        if not has_faces:
            v = ply["vertex"]
            if v.count == 0:
                raise TopographError(f"the point cloud {path.name} is empty (0 points)", "check the reconstruction")
            cloud = np.column_stack([np.asarray(v[k], dtype=float) for k in ("x", "y", "z")])
            return None, cloud, unit
    elif suffix == ".obj":
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            head = [line[1:] for _, line in zip(range(20), fh, strict=False) if line.startswith("#")]
        unit = _unit_from_comments(head)
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as exc:
        raise TopographError(f"cannot read mesh {path}: {exc}", "check that the file is a valid mesh") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise TopographError(f"the mesh {path.name} is empty (no faces)", "check the input file")
    return mesh, None, unit


def _unit_from_comments(comments: list[str]) -> str | None:
    for c in comments:
        m = re.match(r"\s*units?\s*[:=]?\s*(\S+)", c, flags=re.IGNORECASE)
        if m:
            return {"µm": "um", "micrometre": "um", "micrometer": "um"}.get(m.group(1), m.group(1))
    return None
