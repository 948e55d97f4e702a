"""Camera-centric height maps reparameterised by one untrained encoder-decoder CNN (paper Sec. 3.3).

One network, shared by all images, maps each camera image to its camera-centric height map. Optimising
the network weights instead of the per-pixel heights regularises the maps as a deep image prior: the
encoder-decoder has no skip connections, so information passes through a bottleneck and the degree of
compression (number of blocks and filters) is the regularisation hyper-parameter (supplement Sec. 5-6).

Blocks (supplement Table 2), for a filter list ``[k_1, ..., k_L]``:

* down block ``k``: 3x3 conv stride 2 -> norm -> LeakyReLU -> 3x3 conv -> norm -> LeakyReLU;
* up block ``k``: 2x bilinear upsampling -> 3x3 conv -> norm -> LeakyReLU -> 1x1 conv -> norm -> LeakyReLU;

encoder ``k_1 ... k_L``, decoder ``k_L ... k_1``, then a 1x1 convolution to one channel scaled by
``output_scale`` (object units). The last convolution starts at zero, so the heights start flat and the
camera parameters found in earlier rounds are not disturbed when the heights are switched on.

The network sees each image at a fixed resolution (``image size / downsample``), whatever the resolution
of the current coarse-to-fine round, so the function it represents does not change between rounds (warm
starts stay valid); its output is resized bilinearly to the round's resolution. The network inputs are
stored once (uint8, a few MB) by :meth:`HeightCNN.set_inputs`.

Normalisation: ``"instance"`` normalises each feature map over its image's pixels (BatchNorm statistics
computed per image, as in the deep-image-prior setting with one image per batch), so an image's height
map does not depend on which other images share its batch; ``"affine"`` is a learned per-channel scale
and offset (BatchNorm with fixed statistics, as in the paper's TensorFlow implementation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from topograph.meso.config import HeightConfig

NORMS = ("instance", "affine")

BYTES_PER_CNN_PIXEL = 1400.0
"""Measured peak working memory per network-input pixel of the CNN [16,16,16,32,32] (forward + backward)."""


class _Norm(nn.Module):
    """Per-channel normalisation with a learned scale and offset (see the module docstring)."""

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "instance":
            x = F.instance_norm(x, eps=1e-5)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class DownBlock(nn.Sequential):
    """3x3 conv stride 2 -> norm -> LeakyReLU -> 3x3 conv -> norm -> LeakyReLU (halves the size)."""

    def __init__(self, c_in: int, k: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(c_in, k, 3, stride=2, padding=1),
            _Norm(k, norm),
            _act(),
            nn.Conv2d(k, k, 3, padding=1),
            _Norm(k, norm),
            _act(),
        )


class UpBlock(nn.Sequential):
    """2x bilinear upsampling -> 3x3 conv -> norm -> LeakyReLU -> 1x1 conv -> norm -> LeakyReLU."""

    def __init__(self, c_in: int, k: int, norm: str) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(c_in, k, 3, padding=1),
            _Norm(k, norm),
            _act(),
            nn.Conv2d(k, k, 1),
            _Norm(k, norm),
            _act(),
        )


class EncoderDecoder(nn.Module):
    """The encoder-decoder of the paper's supplement (no skip connections), one output channel.

    Args:
        filters: ``[k_1, ..., k_L]`` filters of the down blocks (the up blocks mirror them).
        in_channels: input channels (3 for RGB).
        norm: ``"instance"`` or ``"affine"``.
        checkpoint: recompute each block's activations in the backward pass instead of storing them
            (gradient checkpointing: less memory, about one extra forward pass of time).
    """

    def __init__(self, filters: Sequence[int], in_channels: int = 3, norm: str = "instance", checkpoint: bool = False):
        super().__init__()
        if not filters or any(int(k) < 1 for k in filters):
            raise ValueError(f"filters must be a non-empty list of positive integers, got {list(filters)}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.filters = tuple(int(k) for k in filters)
        self.checkpoint = bool(checkpoint)
        blocks: list[nn.Module] = []
        c = in_channels
        for k in self.filters:
            blocks.append(DownBlock(c, k, norm))
            c = k
        for k in reversed(self.filters):
            blocks.append(UpBlock(c, k, norm))
            c = k
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this (``2 ** L``)."""
        return 2 ** len(self.filters)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) with H, W multiples of :attr:`multiple` -> (N, 1, H, W)."""
        for block in self.blocks:
            if self.checkpoint and torch.is_grad_enabled():
                x = _checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(x)


def parse_filters(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"16,16,16,32,32"`` (or a sequence) -> ``(16, 16, 16, 32, 32)``.

    Raises:
        ValueError: empty list, non-integers or non-positive entries.
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
        try:
            out = tuple(int(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"filter counts must be integers, got {text!r}") from exc
    else:
        out = tuple(int(k) for k in text)
    if not out or any(k < 1 for k in out):
        raise ValueError(f"filter counts must be positive integers, got {text!r}")
    return out


AUTO_LONG_SIDE = 160
"""Long side (pixels) of the network input chosen by :func:`auto_downsample`."""


def auto_downsample(image_size: tuple[int, int], long_side: int = AUTO_LONG_SIDE) -> int:
    """Integer factor bringing a ``(W, H)`` image's long side closest to ``long_side`` (at least 1)."""
    return max(1, round(max(image_size) / max(1, long_side)))


def network_size(image_size: tuple[int, int], downsample: int) -> tuple[int, int]:
    """``(h, w)`` of the network's view of a ``(W, H)`` image downsampled by ``downsample``."""
    w, h = image_size
    return max(2, round(h / downsample)), max(2, round(w / downsample))


class HeightCNN(nn.Module):
    """Camera-centric heights of every image from one untrained encoder-decoder (paper Sec. 3.3).

    Same interface as :class:`topograph.meso.models.heights.HeightMaps`: ``forward(images, index)``
    returns (N, 1, H, W) heights at the size of ``images``; ``regularization()`` is 0 (the network
    structure is the regulariser); ``groups()`` puts every weight in the ``height`` group.

    Args:
        n_images: number of images.
        image_size: ``(W, H)`` of the full-resolution images.
        filters: filter counts of the down blocks, e.g. ``(16, 16, 16, 32, 32)``.
        downsample: the network runs on images downsampled by this factor; its output is upsampled
            bilinearly.
        output_scale: heights = ``output_scale`` x network output (object units).
        norm: ``"instance"`` or ``"affine"`` (module docstring).
        checkpoint: gradient checkpointing of the network blocks.
        seed: seed of the weight initialisation (deterministic networks for a given seed).
    """

    def __init__(
        self,
        n_images: int,
        image_size: tuple[int, int],
        filters: Sequence[int] = (16, 16, 16, 32, 32),
        downsample: int = 4,
        output_scale: float = 10.0,
        norm: str = "instance",
        checkpoint: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if downsample < 1:
            raise ValueError("downsample must be >= 1")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.net = EncoderDecoder(filters, 3, norm, checkpoint)
        finally:
            torch.random.set_rng_state(gen_state)
        self.n_images = int(n_images)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.downsample = int(downsample)
        self.output_scale = float(output_scale)
        h, w = network_size(self.image_size, self.downsample)
        m = self.net.multiple
        # padded to a multiple of 2^L, and at least 2 x 2 at the bottleneck (per-image statistics need > 1 pixel)
        ph, pw = max(-(-h // m), 2) * m - h, max(-(-w // m), 2) * m - w
        self.shape = (h, w)
        self.padding = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        """(left, right, top, bottom) reflection padding up to a multiple of ``2 ** L`` (at least ``2 ** (L + 1)``)."""
        self.register_buffer("inputs", torch.zeros(n_images, 3, h, w, dtype=torch.uint8), persistent=False)
        self.register_buffer("stats", torch.tensor([[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]), persistent=False)
        self.register_buffer("correction", torch.zeros(n_images, 1, h, w))
        """(N, 1, h, w) fixed additive maps (object units), set by :meth:`set_maps` (e.g. gauge levelling)."""
        self._has_inputs = False
        self._cache: tuple[tuple, Tensor] | None = None

    def set_inputs(self, pixels: np.ndarray) -> None:
        """Store the network inputs: (N, H, W, 3) uint8 full-resolution images, area-downsampled.

        Also records the per-channel mean and standard deviation used to normalise the inputs.
        """
        import cv2

        n, h_full, w_full = pixels.shape[:3]
        if n != self.n_images or (w_full, h_full) != self.image_size:
            raise ValueError(
                f"set_inputs expects {self.n_images} images of {self.image_size}, got {n} of {(w_full, h_full)}"
            )
        h, w = self.shape
        small = np.empty((n, h, w, 3), dtype=np.uint8)
        for i in range(n):
            img = pixels[i]
            small[i] = img if (h, w) == (h_full, w_full) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        t = torch.from_numpy(small).permute(0, 3, 1, 2).contiguous()
        self.inputs = t.to(self.inputs.device)
        f = t.float() / 255.0
        mean = f.mean(dim=(0, 2, 3))
        std = f.std(dim=(0, 2, 3)).clamp_min(1e-3)
        self.stats = torch.stack((mean, std)).to(self.stats.device)
        self._has_inputs = True
        self._cache = None

    def network_input(self, index: Tensor | None = None) -> Tensor:
        """(N, 3, h_p, w_p) normalised, reflection-padded network inputs of the selected images."""
        if not self._has_inputs:
            raise RuntimeError("HeightCNN.set_inputs must be called before the first forward pass")
        x = self.inputs if index is None else self.inputs[index.to(self.inputs.device)]
        x = x.float() / 255.0
        x = (x - self.stats[0][:, None, None]) / self.stats[1][:, None, None]
        if any(self.padding):
            left, right, top, bottom = self.padding
            h, w = self.shape
            mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "replicate"
            x = F.pad(x, self.padding, mode=mode)
        return x

    def _run(self, index: Tensor | None) -> Tensor:
        out = self.net(self.network_input(index))
        left, _, top, _ = self.padding
        h, w = self.shape
        corr = self.correction if index is None else self.correction[index.to(self.correction.device)]
        return out[:, :, top : top + h, left : left + w] * self.output_scale + corr

    @property
    def maps(self) -> Tensor:
        """(N, 1, h, w) current heights of every image at the network resolution (no gradient)."""
        with torch.no_grad():
            return self.native().detach().clone()

    @torch.no_grad()
    def set_maps(self, maps: Tensor) -> None:
        """Make the heights equal ``maps`` (N, 1, h, w) by adjusting the fixed additive correction.

        Used after optimisation to re-express the heights in another gauge (a plane subtracted and a
        global scale); the network weights are not changed.
        """
        self.correction += maps.to(self.correction.device).reshape(self.correction.shape) - self.maps
        self._cache = None

    def _weights_key(self) -> tuple:
        params = list(self.net.parameters())
        return (
            tuple(p._version for p in params)
            + tuple(id(p) for p in params)
            + (str(params[0].device), self.correction._version, id(self.correction))
        )

    def native(self, index: Tensor | None = None) -> Tensor:
        """(N, 1, h, w) heights at the network's own resolution (object units).

        While no network weight requires a gradient (rounds that do not train the heights) the maps of
        all images are computed once and reused until a weight changes.
        """
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.net.parameters()):
            self._cache = None
            return self._run(index)
        key = self._weights_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                maps = torch.cat(
                    [self._run(torch.arange(i, min(i + 8, self.n_images))) for i in range(0, self.n_images, 8)]
                )
            self._cache = (key, maps)
        maps = self._cache[1]
        return maps if index is None else maps[index.to(maps.device)]

    def forward(self, images: Tensor, index: Tensor | None = None) -> Tensor:
        """Height maps at the size of ``images``.

        Args:
            images: (N, C, H, W) images of this round (only their size is used; the network reads its own
                stored inputs so that it sees every image at one fixed resolution).
            index: optional (N,) image indices when ``images`` is a subset (all images when None).

        Returns:
            (N, 1, H, W) camera-centric heights, object units.
        """
        maps = self.native(index)
        size = tuple(images.shape[-2:])
        if tuple(maps.shape[-2:]) == size:
            return maps
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)

    def fit(self, target: Tensor, weight: Tensor | None = None, iterations: int = 200, lr: float = 1e-2) -> float:
        """Fit the network so that the heights approximate ``target`` (weighted least squares, Adam).

        The network's bottleneck keeps its output a regularised version of the target (the deep image
        prior): isolated errors of a measured map are not reproduced.

        Args:
            target: (N, 1, h, w) heights at the network resolution (:attr:`shape`), object units.
            weight: (N, 1, h, w) non-negative weights (None = uniform).
            iterations: Adam steps (every image in each step).
            lr: Adam learning rate.

        Returns:
            The weighted RMS misfit after the fit, object units.
        """
        target = target.to(self.correction.device)
        weight = torch.ones_like(target) if weight is None else weight.to(target.device)
        weight = weight / weight.mean().clamp_min(1e-12)
        params = list(self.net.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        gamma = 0.1 ** (1.0 / max(1, iterations))  # decay to a tenth over the fit
        misfit = float("nan")
        for _ in range(int(iterations)):
            opt.zero_grad(set_to_none=True)
            loss = (weight * (self._run(None) - target) ** 2).mean()
            loss.backward()
            opt.step()
            for g in opt.param_groups:
                g["lr"] *= gamma
            misfit = float(loss.detach()) ** 0.5
        self._cache = None
        return misfit

    def regularization(self) -> Tensor:
        """0: the network structure (its bottleneck) is the regulariser."""
        return torch.zeros((), device=self.net.head.weight.device)

    def groups(self) -> dict[str, list[nn.Parameter]]:
        return {"height": list(self.net.parameters())}

    def parameter_count(self) -> int:
        """Number of trainable weights."""
        return sum(p.numel() for p in self.net.parameters())

    def prepare(self, pixels: np.ndarray) -> None:
        """:meth:`set_inputs`: the network reads the images."""
        self.set_inputs(pixels)

    def start_from(self, target: Tensor, weight: Tensor, iterations: int, lr: float) -> float:
        """:meth:`fit` the network to ``target``; with ``iterations <= 0`` the maps become the fixed part
        (:meth:`set_maps`) and the network learns the residual from 0."""
        if iterations <= 0:
            self.set_maps(target)
            return 0.0
        return self.fit(target, weight, iterations, lr)

    def learning_rate(self, cfg: HeightConfig, default: float) -> float:
        """The network's own Adam rate ``heights.cnn_lr``."""
        return cfg.cnn_lr

    def step_bytes_per_image(self) -> float:
        """:data:`BYTES_PER_CNN_PIXEL` per network-input pixel."""
        return BYTES_PER_CNN_PIXEL * self.shape[0] * self.shape[1]

    def describe(self, cfg: HeightConfig, tv_weight: float) -> str:
        h, w = self.shape
        return f"CNN {list(cfg.cnn_filters)} on {w}x{h} inputs ({self.parameter_count()} weights)"
