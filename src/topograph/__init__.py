"""topograph: measured 3D from close-range images (SEM tilt series and mesoscopic phone photogrammetry)."""

from topograph.errors import TopographError

__version__ = "0.1.0"
__all__ = ["TopographError", "__version__"]
