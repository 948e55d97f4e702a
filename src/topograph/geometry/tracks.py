"""Chaining pairwise matches into multi-view tracks.

Every match end is an observation node keyed by ``(view, round(x, 3), round(y, 3))``, so keypoints found
once per image (SIFT) or dense matches sampled on one reference grid chain across pairs. Matches are edges;
tracks are the connected components of this graph (union-find via ``scipy.sparse.csgraph``). A component
that holds two different points in one view is inconsistent (a mismatch somewhere in the chain) and is
dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from topograph.errors import TopographError
from topograph.types import Matches, Tracks

logger = logging.getLogger("topograph")

KEY_DECIMALS = 3
"""Observation keys round coordinates to 10⁻³ px."""


def _check_pairs(matches: Sequence[Matches], n_views: int) -> None:
    for m in matches:
        if not (0 <= m.i < n_views and 0 <= m.j < n_views) or m.i == m.j:
            raise TopographError(
                f"matches between views {m.i} and {m.j} do not fit a series of {n_views} views",
                "pair indices must be two different views in 0..n_views-1",
            )


def build_tracks(matches: Sequence[Matches], n_views: int) -> Tracks:
    """Union-find of pairwise matches into tracks seen in at least two views.

    Args:
        matches: pairwise :class:`Matches` (any pairs, any order; non-finite rows are ignored).
        n_views: number of views F.

    Returns:
        :class:`Tracks` (F, P, 2), NaN where a track is not seen; tracks are ordered by their first
        observation in the input. Tracks that claim two different points in one view are dropped.

    Raises:
        TopographError: a pair index outside ``0..n_views-1`` or a pair of a view with itself.
    """
    _check_pairs(matches, n_views)
    views, coords = [], []
    for m in matches:
        ok = np.isfinite(m.xy_i).all(axis=1) & np.isfinite(m.xy_j).all(axis=1)
        k = int(ok.sum())
        views += [np.full(k, m.i), np.full(k, m.j)]
        coords += [m.xy_i[ok], m.xy_j[ok]]
    if not views or sum(v.size for v in views) == 0:
        return Tracks(np.full((n_views, 0, 2), np.nan))
    # observations are ordered (pair0 ends i, pair0 ends j, pair1 ends i, ...); edge e joins e and e + k
    view = np.concatenate(views)
    xy = np.concatenate(coords)
    sizes = np.array([v.size for v in views])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    src = np.concatenate([np.arange(starts[2 * p], starts[2 * p + 1]) for p in range(len(views) // 2)])
    dst = np.concatenate([np.arange(starts[2 * p + 1], starts[2 * p + 2]) for p in range(len(views) // 2)])

    q = np.round(xy * 10**KEY_DECIMALS).astype(np.int64)
    keys = np.column_stack([view.astype(np.int64), q])
    _, first, node = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    node = node.ravel()
    n_nodes = first.size
    from scipy.sparse import coo_matrix  # imported where used: a run can load it beside its matching
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (node[src], node[dst])), shape=(n_nodes, n_nodes))
    n_comp, comp = connected_components(graph, directed=False)

    node_view = view[first]
    node_xy = xy[first]
    pair_key = comp.astype(np.int64) * n_views + node_view
    uniq, counts = np.unique(pair_key, return_counts=True)
    bad = np.zeros(n_comp, dtype=bool)
    bad[uniq[counts > 1] // n_views] = True
    n_seen = np.bincount(comp, minlength=n_comp)
    keep = ~bad & (n_seen >= 2)
    # deterministic order: by first appearance of any observation in the input
    first_obs = np.full(n_comp, np.iinfo(np.int64).max)
    np.minimum.at(first_obs, comp, first)
    kept = np.nonzero(keep)[0]
    kept = kept[np.argsort(first_obs[kept], kind="stable")]
    track_of = np.full(n_comp, -1)
    track_of[kept] = np.arange(kept.size)

    out = np.full((n_views, kept.size, 2), np.nan)
    sel = keep[comp]
    out[node_view[sel], track_of[comp[sel]]] = node_xy[sel]
    if bad.any():
        logger.info("tracks: dropped %d inconsistent chains (two points in one view)", int(bad.sum()))
    logger.debug("tracks: %d observations → %d tracks", n_nodes, kept.size)
    return Tracks(out)


def match_count_matrix(matches: Sequence[Matches], n_views: int) -> np.ndarray:
    """Symmetric (F, F) int matrix of the number of matches between every pair of views.

    Raises:
        TopographError: a pair index outside ``0..n_views-1`` or a pair of a view with itself.
    """
    _check_pairs(matches, n_views)
    out = np.zeros((n_views, n_views), dtype=np.int64)
    for m in matches:
        out[m.i, m.j] += len(m)
        out[m.j, m.i] += len(m)
    return out


def spread_subset(tracks: Tracks, max_tracks: int, cells_per_side: int = 32) -> np.ndarray:
    """Indices (sorted) of at most ``max_tracks`` tracks spread evenly over the image, the most-seen first.

    The tracks' first observed positions are binned on a ``cells_per_side`` × ``cells_per_side`` grid over
    their bounding box; within a cell the tracks seen in the most views come first (then the lower index).
    Tracks are taken rank by rank over all cells — every cell's best, then every cell's second, … — so a
    cap keeps the whole field of view and the tracks that constrain the most views. All tracks when
    ``max_tracks`` ≤ 0 or ≥ their number.
    """
    n = tracks.n_tracks
    if max_tracks <= 0 or max_tracks >= n:
        return np.arange(n)
    vis = tracks.visible
    first = np.argmax(vis, axis=0)
    xy = tracks.xy[first, np.arange(n)]  # (P, 2) position in the first view that sees the track
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    cell_xy = np.minimum(((xy - lo) / np.maximum(hi - lo, 1e-9) * cells_per_side).astype(np.intp), cells_per_side - 1)
    cell = cell_xy[:, 1] * cells_per_side + cell_xy[:, 0]
    seen = vis.sum(axis=0)
    order = np.lexsort((np.arange(n), -seen, cell))  # by cell, then most views, then index
    sorted_cell = cell[order]
    starts = np.flatnonzero(np.r_[True, sorted_cell[1:] != sorted_cell[:-1]])
    rank = np.empty(n, np.intp)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    pick = np.lexsort((np.arange(n), -seen, rank))[:max_tracks]  # rank by rank, most views first
    return np.sort(pick)
