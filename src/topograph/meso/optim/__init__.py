"""Optimisation helpers: the per-group Adam builder and its sanity check."""

from topograph.meso.optim.optimizer import build_optimizer, check_sanity

__all__ = ["build_optimizer", "check_sanity"]
