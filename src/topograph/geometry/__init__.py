"""Pure NumPy/SciPy geometry of affine cameras: conventions, factorization, triangulation, bundle adjustment."""
