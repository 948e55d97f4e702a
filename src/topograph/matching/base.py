"""The matcher interface, the matcher registry and helpers shared by the implementations.

A matcher turns two images of one specimen into raw correspondences (:class:`~topograph.types.Matches`);
outlier rejection (RANSAC on the affine epipolar constraint) happens afterwards in the pipeline, so every
matcher hands downstream stages the same container whatever algorithm produced it.

Built-in matchers (``sift``, ``dense``, ``roma``) register themselves when their modules are imported
(:func:`topograph.matching.register_builtins`, done by :func:`create_matcher` and by any name taken from
:mod:`topograph.matching`); third-party packages add
``[project.entry-points."topograph.matchers"] name = "pkg.mod:Factory"`` where ``Factory(**options)``
returns an object satisfying :class:`Matcher`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar, runtime_checkable

import cv2
import numpy as np

from topograph.config import from_dict
from topograph.errors import TopographError
from topograph.registry import Registry
from topograph.types import Matches

C = TypeVar("C")


@runtime_checkable
class Matcher(Protocol):
    """Finds correspondences between two views.

    Implementations are configured once (``create_matcher(name, **options)``) and then called per pair.
    """

    name: str

    def match(self, image_i: np.ndarray, image_j: np.ndarray, i: int, j: int) -> Matches:
        """Correspond two views.

        Args:
            image_i: View ``i``, float32 (H, W) in [0, 1].
            image_j: View ``j``, float32 (H', W') in [0, 1].
            i: Index of view ``i`` in the series (stored in the result).
            j: Index of view ``j`` in the series.

        Returns:
            Raw (not outlier-filtered) matches; ``xy_i``/``xy_j`` (N, 2) in px with the origin at the centre
            of the top-left pixel, ``scores`` (N,) in [0, 1].
        """
        ...


matchers: Registry[Matcher] = Registry("matcher", "topograph.matchers")
"""Registry of matcher factories; ``matchers.names()`` lists built-ins and plugins."""


def create_matcher(name: str, **options: Any) -> Matcher:
    """Build the matcher registered as ``name`` with its configuration ``options``.

    Args:
        name: Registered matcher name (``sift``, ``dense``, ``roma`` or a plugin).
        **options: Fields of that matcher's config dataclass (e.g. ``ratio=0.75`` for ``sift``).

    Returns:
        A configured :class:`Matcher`.

    Raises:
        TopographError: Unknown name (the message lists the known ones) or an unknown/invalid option.
    """
    from topograph.matching import register_builtins

    register_builtins()
    return matchers.create(name, **options)


def config_from_options(cls: type[C], options: dict[str, Any], matcher: str) -> C:
    """Build the config dataclass ``cls`` from keyword ``options`` with strict keys and type coercion.

    ``None`` values are dropped so that unset pipeline/CLI options keep the defaults.

    Raises:
        TopographError: An option that ``cls`` does not have (the message lists the valid ones).
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - names)
    if unknown:
        raise TopographError(
            f"unknown option '{unknown[0]}' for the {matcher} matcher",
            f"valid options: {', '.join(sorted(names))}",
        )
    return from_dict(cls, {k: v for k, v in options.items() if v is not None}, prefix=f"{matcher}.")


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate a matcher input and return it as float32 (H, W).

    Raises:
        ValueError: ``image`` is not a 2-D real array.
    """
    arr = np.asarray(image)
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} must be a 2-D (H, W) real array, got shape {arr.shape} and dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return (arr.astype(np.float32) / float(info.max)).astype(np.float32)
    return arr.astype(np.float32, copy=False)


def to_uint8(
    image: np.ndarray,
    stretch_percent: float = 0.0,
    clahe: bool = False,
    clahe_clip: float = 2.0,
    clahe_tile: int = 8,
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Convert a float image in [0, 1] to uint8 for OpenCV, optionally stretching its contrast.

    The percentile stretch maps the ``stretch_percent`` and ``100 - stretch_percent`` percentiles to 0 and
    255 (``u = 255 (v - lo) / (hi - lo)``), which matters for SEM images that use only part of the range:
    detector thresholds in OpenCV are absolute grey-level thresholds. CLAHE then equalises local contrast.

    Args:
        image: float (H, W) in [0, 1].
        stretch_percent: Percentile clipped at each end; 0 keeps the [0, 1] → [0, 255] mapping.
        clahe: Apply contrast-limited adaptive histogram equalisation afterwards.
        clahe_clip: CLAHE clip limit.
        clahe_tile: CLAHE tile grid size (tiles per side).
        limits: Explicit ``(lo, hi)`` grey values mapped to 0 and 255 (overrides ``stretch_percent``), so
            that two images of a pair can share one mapping.

    Returns:
        uint8 (H, W).
    """
    img = np.asarray(image, dtype=np.float32)
    lo, hi = 0.0, 1.0
    if limits is not None:
        lo, hi = float(limits[0]), float(limits[1])
    elif stretch_percent > 0:
        finite = img[np.isfinite(img)]
        if finite.size:
            lo, hi = (float(v) for v in np.percentile(finite, [stretch_percent, 100.0 - stretch_percent]))
    if hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    out = np.nan_to_num((img - lo) * (255.0 / (hi - lo)) + 0.5, nan=0.0)
    u8 = np.clip(out, 0, 255).astype(np.uint8)
    if clahe:
        u8 = cv2.createCLAHE(clipLimit=float(clahe_clip), tileGridSize=(int(clahe_tile), int(clahe_tile))).apply(u8)
    return u8


def empty_matches(i: int, j: int) -> Matches:
    """Matches with no correspondences."""
    return Matches(i, j, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
