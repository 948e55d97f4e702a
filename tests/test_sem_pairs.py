"""Pair selection of the sparse SEM matching: linear in the number of views, tilt neighbours + widest pair."""

from __future__ import annotations

import itertools

import numpy as np

from topograph.sem.sparse import detection_downscale, series_pairs
from topograph.types import ImageSet, SemImage, SemMetadata


def _series(tilts: list[float | None], shape: tuple[int, int] = (8, 8)) -> ImageSet:
    return ImageSet(
        tuple(SemImage(f"v{k}", np.zeros(shape, np.float32), SemMetadata(tilt_deg=t)) for k, t in enumerate(tilts))
    )


def test_pairs_follow_tilt_order_and_include_the_widest_baseline():
    tilts = [10.0, -15.0, 0.0, 15.0, -5.0, 5.0, -10.0]  # not in tilt order on purpose
    pairs = series_pairs(_series(tilts), window=2)
    order = list(np.argsort(tilts))
    assert len(pairs) == 12  # 6 neighbours + 5 second neighbours + the widest pair, not 21
    for a, b in itertools.pairwise(order):
        assert (min(a, b), max(a, b)) in pairs
    assert (min(order[0], order[-1]), max(order[0], order[-1])) in pairs
    # no pair spans more than two tilt steps except the widest one
    rank = {int(v): r for r, v in enumerate(order)}
    wide = [p for p in pairs if abs(rank[p[0]] - rank[p[1]]) > 2]
    assert wide == [(min(order[0], order[-1]), max(order[0], order[-1]))]
    assert all(i < j for i, j in pairs) and pairs == sorted(set(pairs))


def test_pairs_grow_linearly_and_fall_back_to_all_pairs():
    counts = [len(series_pairs(_series([float(5 * k) for k in range(n)]), 2)) for n in (5, 7, 10)]
    assert counts == [8, 12, 18]  # 2n − 2
    assert len(series_pairs(_series([0.0, 5.0, 10.0, 15.0]), 2)) == 6  # window covers the series: all
    assert len(series_pairs(_series([0.0] * 6), 0)) == 15  # window 0: every pair


def test_pairs_use_file_order_without_tilts():
    pairs = series_pairs(_series([None] * 6), window=1)
    assert pairs == [(0, 1), (0, 5), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_detection_downscale():
    assert detection_downscale(_series([0.0, 5.0], (600, 800)), 800) == 1.0
    assert detection_downscale(_series([0.0, 5.0], (1536, 2048)), 800) == 2048 / 800
    assert detection_downscale(_series([0.0, 5.0], (1536, 2048)), 0) == 1.0
