"""Chaining pairwise matches into tracks: exact recovery, missing views, inconsistent chains, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from topograph.errors import TopographError
from topograph.geometry.tracks import build_tracks, match_count_matrix, spread_subset
from topograph.synth.scene import make_affine_scene
from topograph.types import Matches, Tracks


def _pair(xy: np.ndarray, i: int, j: int, ids: np.ndarray, rng: np.random.Generator, jitter: float = 0.0) -> Matches:
    ids = rng.permutation(ids)
    return Matches(i, j, xy[i, ids] + rng.uniform(-jitter, jitter, (ids.size, 2)), xy[j, ids])


def _truth_id(tracks_xy: np.ndarray, true_xy: np.ndarray) -> np.ndarray:
    """For every output track and view, the index of the true point it shows (−1 where unseen)."""
    f, p, _ = tracks_xy.shape
    out = -np.ones((f, p), dtype=int)
    for v in range(f):
        seen = np.isfinite(tracks_xy[v, :, 0])
        d = np.linalg.norm(tracks_xy[v, seen, None, :] - true_xy[v, None, :, :], axis=2)
        out[v, seen] = np.argmin(d, axis=1)
        assert d.min(axis=1).max() < 1e-2
    return out


def test_tracks_chain_across_views_with_missing_views() -> None:
    _, _, tr = make_affine_scene(4, 300, [0, 4, 8, 12], seed=0)
    xy = tr.xy
    rng = np.random.default_rng(1)
    full, two, three = np.arange(200), np.arange(200, 250), np.arange(250, 300)
    matches = [
        _pair(xy, 0, 1, np.concatenate([full, two]), rng, jitter=1e-9),  # float round-off still chains
        _pair(xy, 1, 2, np.concatenate([full, three]), rng),
        _pair(xy, 3, 2, np.concatenate([full, three]), rng),
        _pair(xy, 0, 2, full[:50], rng),  # a redundant pair closes loops without splitting anything
    ]
    matches[2] = Matches(2, 3, matches[2].xy_j, matches[2].xy_i)  # either direction works
    t = build_tracks(matches, 4)
    assert t.n_views == 4 and t.n_tracks == 300
    ids = _truth_id(t.xy, xy)
    # every track shows one true point in all the views where it is seen
    for p in range(t.n_tracks):
        seen = ids[:, p][ids[:, p] >= 0]
        assert np.unique(seen).size == 1
    first = np.array([ids[:, p][ids[:, p] >= 0][0] for p in range(t.n_tracks)])
    assert sorted(first) == list(range(300))
    vis = t.visible
    assert vis[:, np.isin(first, full)].all()
    assert (vis[:, np.isin(first, two)] == np.array([[1], [1], [0], [0]], dtype=bool)).all()
    assert (vis[:, np.isin(first, three)] == np.array([[0], [1], [1], [1]], dtype=bool)).all()
    assert t.complete().n_tracks == 200


def test_inconsistent_chains_are_dropped() -> None:
    _, _, tr = make_affine_scene(3, 60, [0, 5, 10], seed=2)
    xy = tr.xy
    rng = np.random.default_rng(3)
    ids = np.arange(60)
    wrong = Matches(0, 2, xy[0, [5]], xy[2, [6]])  # links point 5 in view 0 with point 6 in view 2
    t = build_tracks([_pair(xy, 0, 1, ids, rng), _pair(xy, 1, 2, ids, rng), wrong], 3)
    assert t.n_tracks == 58
    ids_out = _truth_id(t.xy, xy)
    assert not np.isin(ids_out, [5, 6]).any()


def test_empty_and_nonfinite_matches() -> None:
    assert build_tracks([], 3).xy.shape == (3, 0, 2)
    a = np.array([[1.0, 2.0], [np.nan, 3.0], [5.0, 6.0]])
    b = np.array([[1.5, 2.5], [4.0, 3.0], [5.5, 6.5]])
    t = build_tracks([Matches(0, 1, a, b)], 2)
    assert t.n_tracks == 2 and np.isfinite(t.xy).all()


def test_match_count_matrix() -> None:
    z = np.zeros((5, 2))
    m = match_count_matrix([Matches(0, 1, z, z), Matches(2, 1, z[:3], z[:3]), Matches(0, 1, z[:2], z[:2])], 3)
    assert m.dtype.kind == "i"
    assert (m == m.T).all()
    assert m[0, 1] == 7 and m[1, 2] == 3 and m[0, 2] == 0 and np.trace(m) == 0


@pytest.mark.parametrize("pair", [(0, 3), (1, 1), (-1, 0)])
def test_bad_pair_indices_raise(pair: tuple[int, int]) -> None:
    z = np.zeros((2, 2))
    with pytest.raises(TopographError):
        build_tracks([Matches(pair[0], pair[1], z, z)], 3)
    with pytest.raises(TopographError):
        match_count_matrix([Matches(pair[0], pair[1], z, z)], 3)


def test_spread_subset_covers_the_image_and_prefers_the_most_seen_tracks() -> None:
    """A cap keeps every part of the field (not the first N tracks, which cluster where the detector found
    them first) and, within a region, the tracks seen in every view."""
    rng = np.random.default_rng(4)
    n = 4000
    xy0 = np.concatenate([rng.uniform(0, 200, (3000, 2)), rng.uniform(0, 1000, (1000, 2))])  # dense corner
    xy = np.stack([xy0, xy0 + 1.0, xy0 + 2.0])
    two_views = rng.random(n) < 0.5
    xy[2, two_views] = np.nan
    tracks = Tracks(xy)
    keep = spread_subset(tracks, 500, cells_per_side=10)
    assert keep.size == 500 and np.all(np.diff(keep) > 0)
    # the 100 cells of the grid each hold kept tracks; the first 500 tracks lie in 4 of them
    cells = set(map(tuple, (xy0[keep] // 100).astype(int)))
    assert len(cells) == 100, len(cells)
    # within a crowded cell the tracks seen in all three views come first
    assert tracks.visible[:, keep].all(axis=0).mean() > 0.85  # 0.5 of all tracks; 0.886 measured
    np.testing.assert_array_equal(spread_subset(tracks, 0), np.arange(n))
    np.testing.assert_array_equal(spread_subset(tracks, n + 5), np.arange(n))
