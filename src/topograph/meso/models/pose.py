"""Per-image camera parameters: lateral position, height, tilt, in-plane angle, rolling shutter, gains and bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PoseModel(nn.Module):
    """Camera poses and photometric corrections of ``n`` images.

    Parameters (one row per image):

    * ``position`` (N, 2): where the optical axis meets the object plane, object units. The nadir
      (vanishing point) ``R = position + Z (n_x, n_y) / n_z`` follows from the tilt (see
      ``MesoModel.nadirs``); this parameterisation keeps a tilt change from moving the footprint, which
      decouples tilt from position and makes the optimisation better conditioned.
    * ``log_scale`` (N,): camera height ``Z_i = f exp(log_scale_i - mean(log_scale))``; the mean is
      removed so that the global scale of the object frame is fixed (object unit ~ one image pixel).
    * ``tilt`` (N, 2): ``(n_x, n_y)`` of the object-plane normal in the camera frame.
    * ``angle`` (N,): in-plane rotation, radians.
    * ``rolling`` (N, 2): rolling-shutter image motion ``s`` in pixels per row (see
      :func:`topograph.meso.functional.projection.rolling_shutter`); a hand-held sweep skews each photo
      along its motion. A shear common to every image is a near-gauge (a sheared scene), and the term can
      trade against lens and tilts, so no default round trains it (``topograph.meso.config``).
    * ``log_gain`` (N,), ``bias`` (N,): intensity correction ``g I + b`` (means removed: no collapse).
    """

    def __init__(self, n_images: int, positions: Tensor | None = None) -> None:
        super().__init__()
        pos = torch.zeros(n_images, 2) if positions is None else positions.detach().clone().float()
        self.position = nn.Parameter(pos)
        self.log_scale = nn.Parameter(torch.zeros(n_images))
        self.tilt = nn.Parameter(torch.zeros(n_images, 2))
        self.angle = nn.Parameter(torch.zeros(n_images))
        self.rolling = nn.Parameter(torch.zeros(n_images, 2))
        self.log_gain = nn.Parameter(torch.zeros(n_images))
        self.bias = nn.Parameter(torch.zeros(n_images))

    @property
    def n_images(self) -> int:
        return int(self.position.shape[0])

    def relative_scale(self) -> Tensor:
        """(N,) ``Z_i / f`` in object units per image pixel (geometric mean 1)."""
        return torch.exp(self.log_scale - self.log_scale.mean())

    def photometric(self, intensities: Tensor, index: Tensor | None = None) -> Tensor:
        """Apply gain and bias: (N, P, C) intensities -> (N, P, C) corrected intensities. (Per-channel
        white-balance gains were tried: they moved the CNN continuation toy's plateau from 6.0 to 5.4 units,
        tests/test_meso_rounds.py, and were taken out at the merge.)"""
        gain = torch.exp(self.log_gain - self.log_gain.mean())
        bias = self.bias - self.bias.mean()
        if index is not None:
            gain, bias = gain[index], bias[index]
        return intensities * gain[:, None, None] + bias[:, None, None]

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups by name (see ``topograph.meso.config.PARAMETER_GROUPS``)."""
        return {
            "position": [self.position],
            "scale": [self.log_scale],
            "tilt": [self.tilt],
            "angle": [self.angle],
            "rolling": [self.rolling],
            "gain": [self.log_gain],
            "bias": [self.bias],
        }
