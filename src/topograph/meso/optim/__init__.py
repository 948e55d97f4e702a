"""Optimisation helpers: the coarse-to-fine driver and the per-group Adam builder."""

from topograph.meso.optim.coarse_to_fine import coarse_to_fine
from topograph.meso.optim.optimizer import build_optimizer, check_sanity

__all__ = ["build_optimizer", "check_sanity", "coarse_to_fine"]
