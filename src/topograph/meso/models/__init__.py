"""Parameter containers (``nn.Module``) of the mesoscopic engine."""

from topograph.meso.models.camera import MesoModel
from topograph.meso.models.distortion import (
    Distortion,
    NoDistortion,
    PiecewiseLinearDistortion,
    PolynomialDistortion,
    distortion_models,
)
from topograph.meso.models.heights import HeightMaps
from topograph.meso.models.pose import PoseModel

__all__ = [
    "Distortion",
    "HeightMaps",
    "MesoModel",
    "NoDistortion",
    "PiecewiseLinearDistortion",
    "PolynomialDistortion",
    "PoseModel",
    "distortion_models",
]
