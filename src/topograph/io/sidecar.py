"""User-supplied metadata: a sidecar file (YAML/JSON) and command-line overrides.

Priority for every field: command line > sidecar > file tags. The winner's origin is recorded in
``SemMetadata.source`` (``"cli"``, ``"sidecar"`` or the vendor name).

Sidecar format (YAML or JSON; all keys optional, unknown keys are an error)::

    pixel_size_um: 0.12          # global values, applied to every image
    tilt_axis_deg: 0
    stage_rotation_deg: 0
    working_distance_mm: 10
    tilts_deg: [0, 5, 10]        # one tilt per image, in input order (natural file-name order for a folder)
    images:                      # per-image values (by file name or stem); they beat global values
      a.tif: {tilt_deg: 5}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from topograph.errors import TopographError
from topograph.types import SemMetadata

logger = logging.getLogger("topograph")

IMAGE_KEYS: tuple[str, ...] = (
    "tilt_deg",
    "tilt_axis_deg",
    "stage_rotation_deg",
    "pixel_size_um",
    "working_distance_mm",
    "beam_energy_kv",
    "magnification",
)
"""Keys allowed per image in a sidecar (all :class:`SemMetadata` float fields)."""
GLOBAL_KEYS: tuple[str, ...] = tuple(k for k in IMAGE_KEYS if k != "tilt_deg") + ("tilts_deg", "images")
"""Keys allowed at the top level of a sidecar."""
_POSITIVE = {"pixel_size_um", "working_distance_mm", "beam_energy_kv", "magnification"}
TILT_CONFLICT_DEG = 0.5
"""Two tilt values for one image from sources of equal rank that differ by more than this are a contradiction."""


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TopographError(f"{where}: '{key}' must be a finite number, got {value!r}", f"write e.g. {key}: 1.5")
    value = float(value)
    if key in _POSITIVE and value <= 0:
        raise TopographError(f"{where}: '{key}' must be positive, got {value}", f"give a positive {key}")
    if key in _LIMITS and abs(value) > _LIMITS[key]:
        raise TopographError(
            f"{where}: '{key}' {value:g} is outside ±{_LIMITS[key]:g}°", f"give {key} in degrees within that range"
        )
    return value


_LIMITS = {"tilts_deg": 80.0, "tilt_axis_deg": 360.0, "stage_rotation_deg": 360.0}
"""Largest magnitude (degrees) a value can have: SEM stages tilt by at most ~75° (at 80° the specimen is
seen almost edge-on); a larger tilt is a typing error (89, 1e308), not a measurement."""


def _tilt_list(values: Any, where: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TopographError(
            f"{where}: 'tilts_deg' must be a list of numbers, got {values!r}", "write tilts_deg: [0, 5, 10]"
        )
    return tuple(_number(v, "tilts_deg", where) for v in values)


@dataclass(frozen=True)
class MetadataOverrides:
    """Command-line metadata that beats the sidecar and the file tags.

    Attributes:
        tilts_deg: one stage tilt per image (degrees), in input order; ``None`` = not given.
        tilt_axis_deg: tilt-axis direction in the image, degrees counter-clockwise (as displayed) from the
            image x axis (docs/conventions.md).
        pixel_size_um: pixel size on the specimen, µm.
        stage_rotation_deg: stage rotation, degrees.
    """

    tilts_deg: tuple[float, ...] | None = None
    tilt_axis_deg: float | None = None
    pixel_size_um: float | None = None
    stage_rotation_deg: float | None = None

    def __post_init__(self) -> None:
        where = "command line"
        if self.tilts_deg is not None:
            object.__setattr__(self, "tilts_deg", _tilt_list(self.tilts_deg, where))
        for key in ("tilt_axis_deg", "pixel_size_um", "stage_rotation_deg"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _number(value, key, where))

    def values_for(self, index: int, n_images: int) -> dict[str, float]:
        """Values for image ``index`` (input order) of a series of ``n_images``.

        Raises:
            TopographError: ``tilts_deg`` does not have one value per image.
        """
        out: dict[str, float] = {}
        if self.tilts_deg is not None:
            _check_tilt_count(self.tilts_deg, n_images, "the command-line tilt list")
            out["tilt_deg"] = self.tilts_deg[index]
        for key in ("tilt_axis_deg", "pixel_size_um", "stage_rotation_deg"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def _check_tilt_count(tilts: Sequence[float], n_images: int, what: str) -> None:
    if len(tilts) != n_images:
        raise TopographError(
            f"{what} has {len(tilts)} tilts but the series has {n_images} images",
            "give exactly one tilt per image, in input order (natural file-name order for a folder)",
        )


@dataclass(frozen=True)
class Sidecar:
    """Parsed sidecar: global values, an optional tilt list and per-image values."""

    path: Path | None = None
    defaults: Mapping[str, float] = field(default_factory=dict)
    tilts_deg: tuple[float, ...] | None = None
    images: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"sidecar {self.path}" if self.path else "sidecar"

    def check_names(self, names: Sequence[str]) -> None:
        """Every per-image entry must name an image of the series (by file name or stem).

        Raises:
            TopographError: naming the first unknown entry.
        """
        known = set(names) | {Path(n).stem for n in names}
        for key in self.images:
            if key not in known:
                raise TopographError(
                    f"{self.where} lists image '{key}', which is not among the inputs ({', '.join(names)})",
                    "correct the file name in the sidecar or remove the entry",
                )

    def values_for(self, name: str, index: int, n_images: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
        """Values for one image and every sidecar tilt that applies to it.

        Args:
            name: the image's file name.
            index: its position in input order.
            n_images: number of images of the series.

        Returns:
            ``(values, tilt_candidates)``: per-image entries beat global values and the tilt list;
            ``tilt_candidates`` lists each sidecar source of a tilt for the contradiction check.
        """
        values = dict(self.defaults)
        tilts: list[tuple[str, float]] = []
        if self.tilts_deg is not None:
            _check_tilt_count(self.tilts_deg, n_images, f"the tilts_deg list in {self.where}")
            values["tilt_deg"] = self.tilts_deg[index]
            tilts.append((f"{self.where} tilts_deg[{index}]", self.tilts_deg[index]))
        entry = self.images.get(name, self.images.get(Path(name).stem))
        if entry is not None:
            values.update(entry)
            if "tilt_deg" in entry:
                tilts.append((f"{self.where} images.{name}.tilt_deg", entry["tilt_deg"]))
        return values, tilts


def parse_sidecar(data: Any, path: Path | None = None) -> Sidecar:
    """Validate a sidecar mapping (strict keys, numbers only).

    Raises:
        TopographError: an unknown key (named), a non-number, a non-positive length.
    """
    where = f"sidecar {path}" if path else "sidecar"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TopographError(f"{where} must hold a mapping of keys to values", "see the sidecar format in the docs")
    defaults: dict[str, float] = {}
    tilts: tuple[float, ...] | None = None
    images: dict[str, dict[str, float]] = {}
    for key, value in data.items():
        if key not in GLOBAL_KEYS:
            raise TopographError(f"{where}: unknown key '{key}'", f"use only: {', '.join(GLOBAL_KEYS)}")
        if key == "tilts_deg":
            tilts = _tilt_list(value, where)
        elif key == "images":
            if not isinstance(value, Mapping):
                raise TopographError(
                    f"{where}: 'images' must map file names to values", "write images: {a.tif: {tilt_deg: 5}}"
                )
            for name, entry in value.items():
                if not isinstance(entry, Mapping):
                    raise TopographError(f"{where}: images.{name} must be a mapping", "write {tilt_deg: 5}")
                parsed: dict[str, float] = {}
                for k, v in entry.items():
                    if k not in IMAGE_KEYS:
                        raise TopographError(
                            f"{where}: unknown key 'images.{name}.{k}'", f"use only: {', '.join(IMAGE_KEYS)}"
                        )
                    parsed[k] = _number(v, k, where)
                images[str(name)] = parsed
        else:
            defaults[key] = _number(value, key, where)
    return Sidecar(path=path, defaults=defaults, tilts_deg=tilts, images=images)


def load_sidecar(path: str | Path) -> Sidecar:
    """Read a sidecar YAML or JSON file (safe loader; JSON is read as YAML).

    Raises:
        TopographError: the file is missing, is not valid YAML/JSON, or has unknown keys.
    """
    path = Path(path)
    if not path.is_file():
        raise TopographError(f"sidecar file not found: {path}", "check the path given for the sidecar")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        from topograph.config import yaml_error_line

        raise TopographError(
            f"cannot parse sidecar {path}: {yaml_error_line(exc)}", "write it as YAML or JSON"
        ) from exc
    return parse_sidecar(data, path)


def merge_metadata(
    file_metadata: SemMetadata,
    sidecar_values: Mapping[str, float] | None = None,
    cli_values: Mapping[str, float] | None = None,
    name: str = "",
) -> SemMetadata:
    """Combine metadata with priority command line > sidecar > file tags; record provenance.

    Args:
        file_metadata: what the vendor tags said (its ``source`` is kept for untouched fields).
        sidecar_values: field → value from the sidecar.
        cli_values: field → value from the command line.
        name: image name for log messages.

    Returns:
        A new :class:`SemMetadata`; ``source[field]`` is ``"cli"``, ``"sidecar"`` or the file's source.
        ``vendor`` stays the file's vendor, or becomes ``"sidecar"`` / ``"cli"`` when the file had none.
    """
    values: dict[str, Any] = {}
    source = dict(file_metadata.source)
    for level, given in (("sidecar", sidecar_values or {}), ("cli", cli_values or {})):
        for key, value in given.items():
            previous = values.get(key, getattr(file_metadata, key))
            if previous is not None and not math.isclose(previous, value, rel_tol=1e-9, abs_tol=1e-12):
                logger.info(
                    "%s: %s %.6g (%s) overridden by %.6g (%s)", name, key, previous, source.get(key, "?"), value, level
                )
            values[key] = value
            source[key] = level
    vendor = file_metadata.vendor
    if vendor is None and values:
        vendor = "cli" if cli_values else "sidecar"
    return replace(file_metadata, **values, vendor=vendor, source=source)
