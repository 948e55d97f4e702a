"""Pairwise matching: the :class:`Matcher` interface and its registry (``sift``, ``dense``, ``roma``).

Importing this package registers the built-in matchers; ``roma`` imports its optional backend
(``romatch``) only when it is created.
"""

from topograph.matching import dense, roma, sift
from topograph.matching.base import Matcher, create_matcher, matchers
from topograph.matching.dense import DenseConfig, DenseFlow, DenseMatcher, dense_flow
from topograph.matching.roma import RomaConfig, RomaMatcher
from topograph.matching.sift import SiftConfig, SiftFeatures, SiftMatcher

__all__ = [
    "DenseConfig",
    "DenseFlow",
    "DenseMatcher",
    "Matcher",
    "RomaConfig",
    "RomaMatcher",
    "SiftConfig",
    "SiftFeatures",
    "SiftMatcher",
    "create_matcher",
    "dense",
    "dense_flow",
    "matchers",
    "roma",
    "sift",
]
