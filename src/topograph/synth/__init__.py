"""Synthetic scenes and renderers with exact ground truth, for tests and benchmarks."""
