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
    * ``shutter`` (): the rolling-shutter skew of the whole sweep, pixels per row for a photo moving as
      fast as the median photo: every photo's skew is this times its own motion (the sensor's line delay is
      one constant of the phone; the motion follows from the capture order, see ``MesoModel.rolling_shifts``).
      One number cannot trade against the lens or the tilts the way a free term per photo can, so the
      default rounds train it (group ``shutter``); on a steady sequence it stays near 0.
    * ``log_gain`` (N,), ``bias`` (N,): intensity correction ``g I + b`` (means removed: no collapse).
    * ``log_colour`` (N, 3): white balance, per-channel gains ``c`` on top of ``g``: ``g c_k I_k + b``. Gauge:
      the mean over the images of each channel and the mean over the channels of each image are removed
      (the first is the colour of the reconstruction, the second is ``g``). Its own group ``colour``; while
      it is untrained and zero the photometric model is exactly ``g I + b`` (same arithmetic).
    """

    def __init__(self, n_images: int, positions: Tensor | None = None) -> None:
        super().__init__()
        pos = torch.zeros(n_images, 2) if positions is None else positions.detach().clone().float()
        self.position = nn.Parameter(pos)
        self.log_scale = nn.Parameter(torch.zeros(n_images))
        self.tilt = nn.Parameter(torch.zeros(n_images, 2))
        self.angle = nn.Parameter(torch.zeros(n_images))
        self.rolling = nn.Parameter(torch.zeros(n_images, 2))
        self.shutter = nn.Parameter(torch.zeros(()))
        self.log_gain = nn.Parameter(torch.zeros(n_images))
        self.log_colour = nn.Parameter(torch.zeros(n_images, 3))
        self.bias = nn.Parameter(torch.zeros(n_images))

    @property
    def n_images(self) -> int:
        return int(self.position.shape[0])

    def relative_scale(self) -> Tensor:
        """(N,) ``Z_i / f`` in object units per image pixel (geometric mean 1)."""
        return torch.exp(self.log_scale - self.log_scale.mean())

    def colour(self) -> Tensor:
        """(N, 3) white-balance log gains with both gauges removed (class docstring)."""
        c = self.log_colour - self.log_colour.mean(0, keepdim=True)
        return c - c.mean(1, keepdim=True)

    def photometric(self, intensities: Tensor, index: Tensor | None = None) -> Tensor:
        """Apply the gains and bias: (N, P, C) intensities -> (N, P, C) corrected, ``g_i c_ik I_k + b_i``.

        The white-balance factor is applied only when the ``colour`` group trains or holds values, so a run
        without it computes exactly what the single-gain model did (the CNN toy of tests/test_meso_rounds.py
        is chaotic in its last bits: its plateau moved 6.0 -> 5.7 with an all-zero, untrained colour term
        that changed only the order of a sum, and 5.9 / 5.0 with seeds 1 / 2; docs/benchmarks.md)."""
        gain = torch.exp(self.log_gain - self.log_gain.mean())
        bias = self.bias - self.bias.mean()
        if index is not None:
            gain, bias = gain[index], bias[index]
        out = intensities * gain[:, None, None] + bias[:, None, None]
        if intensities.shape[-1] == 3 and (self.log_colour.requires_grad or bool(self.log_colour.detach().any())):
            colour = self.colour() if index is None else self.colour()[index]
            out = out + intensities * gain[:, None, None] * torch.expm1(colour)[:, None, :]
        return out

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups by name (see ``topograph.meso.config.PARAMETER_GROUPS``)."""
        return {
            "position": [self.position],
            "scale": [self.log_scale],
            "tilt": [self.tilt],
            "angle": [self.angle],
            "rolling": [self.rolling],
            "shutter": [self.shutter],
            "gain": [self.log_gain],
            "colour": [self.log_colour],
            "bias": [self.bias],
        }
