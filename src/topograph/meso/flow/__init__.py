"""The flow step before the first height round: dense matches -> cameras refined on them -> heights.

* :mod:`.dense_matches` -- dense correspondences between neighbouring images (plane + parallax).
* :mod:`.camera_refinement` -- cameras and lens refined on the matches (the least-squares problem; the
  damping loop is :mod:`topograph.geometry.levenberg_marquardt`).
* :mod:`.heights` -- closed-form heights of the matches, fused into maps that start the height model.
"""
