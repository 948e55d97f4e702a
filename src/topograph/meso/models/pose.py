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
    * ``log_colour`` (N, 3): per-channel gains ``c`` on top of ``g`` (white balance; the mean over the
      images of each channel removed), so the correction is ``g c_k I_k + b`` (an affine photometric model
      per image and channel; auto exposure and auto white balance of phones change ``g`` and ``c``).
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
        self.log_colour = nn.Parameter(torch.zeros(n_images, 3))
        self.bias = nn.Parameter(torch.zeros(n_images))

    @property
    def n_images(self) -> int:
        return int(self.position.shape[0])

    def relative_scale(self) -> Tensor:
        """(N,) ``Z_i / f`` in object units per image pixel (geometric mean 1)."""
        return torch.exp(self.log_scale - self.log_scale.mean())

    def gains(self) -> Tensor:
        """(N, 3) multiplicative correction ``g_i c_ik`` of every image and channel (gauge: means removed)."""
        log_g = (self.log_gain - self.log_gain.mean())[:, None] + (self.log_colour - self.log_colour.mean(0))
        return torch.exp(log_g)

    def photometric(self, intensities: Tensor, index: Tensor | None = None) -> Tensor:
        """Apply the gains and bias: (N, P, 3) intensities -> (N, P, 3) corrected intensities
        (``g_i c_ik I_k + b_i``)."""
        gain = self.gains()
        bias = self.bias - self.bias.mean()
        if index is not None:
            gain, bias = gain[index], bias[index]
        return intensities * gain[:, None, :] + bias[:, None, None]

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups by name (see ``topograph.meso.config.PARAMETER_GROUPS``)."""
        return {
            "position": [self.position],
            "scale": [self.log_scale],
            "tilt": [self.tilt],
            "angle": [self.angle],
            "rolling": [self.rolling],
            "gain": [self.log_gain, self.log_colour],
            "bias": [self.bias],
        }
