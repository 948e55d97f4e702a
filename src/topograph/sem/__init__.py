"""SEM engine: tilt series -> affine cameras -> sparse and dense clouds, height map, mesh, grain metrics.

The entry point is :func:`topograph.sem.pipeline.run_sem` (also ``from topograph import run_sem``); the
stages are in :mod:`topograph.sem.sparse` and :mod:`topograph.sem.dense`, the settings in
:mod:`topograph.sem.config`. Nothing here imports PyTorch.
"""
