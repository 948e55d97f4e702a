"""Optional ``roma`` matcher: the RoMa dense matcher of the ``romatch`` package, with weights from local files.

Nothing is downloaded: both the RoMa weights (``roma_outdoor.pth``) and the DINOv2 ViT-L/14 backbone weights
(``dinov2_vitl14_pretrain.pth``) are read from user-given paths with ``torch.load(..., weights_only=True)``
(plain tensors only; a file that needs code to unpickle is refused) and handed to ``romatch.roma_outdoor``
as ``weights=`` and ``dinov2_weights=``, which then skips its own hub downloads. ``romatch`` is imported when
the matcher is created, never at registration.

RoMa reports coordinates normalised to [-1, 1] over the image extent (``x_px' = W/2 (x_n + 1)``, origin at
the top-left image corner); they are shifted by −0.5 px to this package's pixel-centre convention.

Reference:
    J. Edstedt, Q. Sun, G. Bökman, M. Wadenbäck, M. Felsberg, "RoMa: Robust Dense Feature Matching",
    CVPR 2024.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from topograph.errors import OptionalDependencyError, TopographError
from topograph.matching.base import check_image, config_from_options, matchers, to_uint8
from topograph.matching.config import RomaConfig
from topograph.types import Matches

log = logging.getLogger("topograph")

_WEIGHTS_FIX = (
    "download the RoMa weights manually (roma_outdoor.pth and dinov2_vitl14_pretrain.pth) and pass "
    "--roma-weights PATH and --roma-dinov2-weights PATH"
)


def _weights_path(value: str | None, what: str) -> Path:
    if value is None or str(value).strip() == "":
        raise TopographError(f"the roma matcher needs the {what} weights, but no path was given", _WEIGHTS_FIX)
    path = Path(value).expanduser()
    if not path.is_file():
        raise TopographError(f"{what} weights file not found: {path}", _WEIGHTS_FIX)
    return path


def load_state_dict(path: str | Path, what: str = "RoMa", map_location: str = "cpu") -> dict[str, Any]:
    """Load a plain PyTorch state dict with ``torch.load(..., weights_only=True)``.

    Args:
        path: Local weights file.
        what: Name used in error messages ("RoMa", "DINOv2").
        map_location: Torch device the tensors are loaded to.

    Returns:
        The state dict (parameter name → tensor).

    Raises:
        TopographError: The file cannot be read, needs arbitrary code to unpickle (refused by
            ``weights_only``) or is not a mapping of tensors.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TopographError(
            f"cannot load the {what} weights from {path} as plain tensors ({reason[:200]})",
            "give the original .pth state-dict file; files that need code to unpickle are refused",
        ) from exc
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise TopographError(
            f"{what} weights file {path} does not hold a state dict of tensors",
            "give the original .pth state-dict file of the RoMa release",
        )
    return dict(state)


def _import_romatch() -> Any:
    try:
        return importlib.import_module("romatch")
    except ImportError as exc:
        raise OptionalDependencyError("romatch", "the roma matcher", extra="roma") from exc


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _call_supported(fn: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments its signature accepts (romatch versions differ)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def normalized_to_pixels(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """RoMa normalised coordinates → px: ``x = W/2 (x_n + 1) − 0.5``, ``y = H/2 (y_n + 1) − 0.5``.

    Args:
        xy: (..., 2) coordinates in [-1, 1] over the image extent.
        width: Image width W, px.
        height: Image height H, px.

    Returns:
        (..., 2) float64 px, origin at the centre of the top-left pixel.
    """
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([width / 2.0 * (xy[..., 0] + 1.0) - 0.5, height / 2.0 * (xy[..., 1] + 1.0) - 0.5], axis=-1)


class RomaMatcher:
    """RoMa dense matcher from local weights (see :class:`RomaConfig`)."""

    name = "roma"

    def __init__(self, config: RomaConfig | None = None) -> None:
        cfg = config or RomaConfig()
        self.config = cfg
        weights_path = _weights_path(cfg.weights, "RoMa")
        dinov2_path = _weights_path(cfg.dinov2_weights, "DINOv2")
        romatch = _import_romatch()
        import torch

        self.device = _resolve_device(cfg.device)
        weights = load_state_dict(weights_path, "RoMa", self.device)
        dinov2 = load_state_dict(dinov2_path, "DINOv2", self.device)
        log.info("roma: building the model on %s from %s and %s", self.device, weights_path, dinov2_path)
        amp_dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        try:
            self.model = _call_supported(
                romatch.roma_outdoor,
                device=self.device,
                weights=weights,
                dinov2_weights=dinov2,
                coarse_res=int(cfg.coarse_res),
                upsample_res=int(cfg.upsample_res),
                amp_dtype=amp_dtype,
            )
        except RuntimeError as exc:
            raise TopographError(
                f"the RoMa weights do not fit the RoMa model ({str(exc).splitlines()[0][:200]})",
                "pass the roma_outdoor.pth and dinov2_vitl14_pretrain.pth files of the RoMa release",
            ) from exc

    def match(self, image_i: np.ndarray, image_j: np.ndarray, i: int, j: int) -> Matches:
        """Dense RoMa warp of the pair, returned as sampled or dense px correspondences.

        Returns:
            Matches with ``scores`` = RoMa certainty in [0, 1].
        """
        import torch

        cfg = self.config
        img_i = check_image(image_i, "image_i")
        img_j = check_image(image_j, "image_j")
        (h_i, w_i), (h_j, w_j) = img_i.shape, img_j.shape
        with tempfile.TemporaryDirectory(prefix="topograph-roma-") as tmp:
            # romatch reads images by path (some versions re-open them for the upsampling pass)
            path_i, path_j = Path(tmp) / "view_i.png", Path(tmp) / "view_j.png"
            cv2.imwrite(str(path_i), to_uint8(img_i))
            cv2.imwrite(str(path_j), to_uint8(img_j))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(cfg.seed))
                warp, certainty = self.model.match(str(path_i), str(path_j), device=self.device)
                if cfg.mode == "sample":
                    corr, cert = self.model.sample(warp, certainty, num=int(cfg.num_samples))
                else:
                    corr, cert = self._dense_grid(warp, certainty)
        corr = corr.detach().float().cpu().numpy().reshape(-1, 4)
        cert = cert.detach().float().cpu().numpy().reshape(-1)
        xy_i = normalized_to_pixels(corr[:, :2], w_i, h_i)
        xy_j = normalized_to_pixels(corr[:, 2:], w_j, h_j)
        log.debug("roma %d–%d: %d correspondences (%s mode)", i, j, xy_i.shape[0], cfg.mode)
        return Matches(i, j, xy_i, xy_j, np.clip(cert.astype(np.float64), 0.0, 1.0))

    def _dense_grid(self, warp: Any, certainty: Any) -> tuple[Any, Any]:
        """View i's half of the warp, thinned by ``stride`` and thresholded at ``min_certainty``."""
        cfg = self.config
        # a symmetric RoMa model returns [A→B | B→A] side by side: (hs, 2·ws, 4)
        ws = warp.shape[1] // 2 if getattr(self.model, "symmetric", False) else warp.shape[1]
        s = max(int(cfg.stride), 1)
        w = warp[:, :ws][::s, ::s].reshape(-1, 4)
        c = certainty[:, :ws][::s, ::s].reshape(-1)
        keep = c >= cfg.min_certainty
        return w[keep], c[keep]


@matchers.register("roma")
def create_roma(**options: Any) -> RomaMatcher:
    """Factory of the ``roma`` matcher; ``options`` are :class:`RomaConfig` fields."""
    return RomaMatcher(config_from_options(RomaConfig, options, "roma"))
