"""Microscope metadata from SEM TIFF files, normalised to :class:`~topograph.types.SemMetadata`.

One reader per vendor, each a *mapping table* (rosettasciio style): a vendor key path → the
normalised field and a converter that states the units. The raw vendor tree is kept verbatim in
``SemMetadata.original`` (keyed by vendor) so nothing is lost.

* FEI / Thermo Fisher: TIFF tag 34682 (``TiffFile.fei_metadata``), INI sections in SI units
  (m, rad, V). Tilt ``[Stage] StageT`` rad → deg, rotation ``[Stage] StageR`` rad → deg, pixel size
  ``[Scan] PixelWidth`` m → µm, working distance ``[<beam>] WD`` m → mm, ``HV`` V → kV; magnification
  ``[Image] MagCanvasRealWidth / HFW``; data-bar rows = image rows − ``[Image] ResolutionY``.
* Zeiss SmartSEM: TIFF tag 34118 (``TiffFile.sem_metadata``), a dict ``key → (label, value[, unit])``.
  Tilt ``ap_stage_at_t`` (``ap_tilt_angle`` is the tilt-correction angle, not the stage tilt), rotation
  ``ap_stage_at_r``, pixel size ``ap_image_pixel_size`` (``ap_pixel_size`` refers to the display, not
  the stored image) or field width ``ap_width`` / image columns, WD ``ap_wd``, magnification ``ap_mag``
  (``105 X`` or ``'4.53 K X'``), beam energy ``ap_actualkv`` (EHT).

Malformed values (non-numbers, unknown units, non-positive lengths) are skipped with a logged warning;
a reader never fails on a field.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topograph.errors import TopographError
from topograph.types import SemMetadata

logger = logging.getLogger("topograph")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# Units → factor to the normalised unit.
LENGTH_TO_UM: dict[str, float] = {
    "fm": 1e-9,
    "pm": 1e-6,
    "nm": 1e-3,
    "um": 1.0,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek mu U+03BC
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}
ANGLE_TO_DEG: dict[str, float] = {"°": 1.0, "deg": 1.0, "rad": 180.0 / math.pi, "mrad": 0.180 / math.pi}
VOLTAGE_TO_KV: dict[str, float] = {"V": 1e-3, "kV": 1.0, "MV": 1e3}
_MAG_PREFIX: dict[str, float] = {"": 1.0, "K": 1e3, "k": 1e3, "M": 1e6}


class MetadataValueError(ValueError):
    """A vendor value that cannot be converted (not a number, unknown unit, out of range)."""


@dataclass(frozen=True)
class FieldRule:
    """One row of a vendor mapping table.

    Attributes:
        field: the :class:`SemMetadata` field it sets.
        path: key path into the vendor tree (``"$beam"`` stands for the FEI beam section).
        convert: raw value → float in the normalised unit; raises :class:`MetadataValueError`.
        positive: reject values ≤ 0 (lengths, energies).
    """

    field: str
    path: tuple[str, ...]
    convert: Callable[[Any], float]
    positive: bool = False


@dataclass(frozen=True)
class MetadataReading:
    """What a vendor reader found.

    Attributes:
        metadata: the normalised metadata (first valid rule per field wins).
        candidates: every valid value per field as ``(source label, value)``, so that callers can
            detect contradictory sources (e.g. two stage-tilt tags that disagree).
    """

    metadata: SemMetadata
    candidates: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# converters


def to_float(value: Any) -> float:
    """A finite float from a number or a numeric string; :class:`MetadataValueError` otherwise."""
    if isinstance(value, bool):
        raise MetadataValueError(f"{value!r} is not a number")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError as exc:
            raise MetadataValueError(f"{value!r} is not a number") from exc
    else:
        raise MetadataValueError(f"{value!r} is not a number")
    if not math.isfinite(out):
        raise MetadataValueError(f"{value!r} is not finite")
    return out


def scaled(factor: float) -> Callable[[Any], float]:
    """Converter for a plain number in a fixed unit: ``v ↦ factor · v`` (e.g. m → µm: 1e6)."""

    def convert(value: Any) -> float:
        return factor * to_float(value)

    return convert


def zeiss_quantity(units: Mapping[str, float], default_unit: str | None = None) -> Callable[[Any], float]:
    """Converter for a Zeiss entry ``(label, value[, unit])`` (or ``'value unit'``) using ``units``.

    Args:
        units: unit string → factor to the normalised unit.
        default_unit: unit assumed when the entry has none; ``None`` makes a missing unit an error.
    """

    def convert(entry: Any) -> float:
        number, unit = _zeiss_number_unit(entry)
        unit = unit or default_unit
        if unit is None:
            raise MetadataValueError(f"{entry!r} has no unit")
        if unit not in units:
            raise MetadataValueError(f"unknown unit {unit!r} in {entry!r} (known: {', '.join(units)})")
        return units[unit] * to_float(number)

    return convert


def parse_zeiss_magnification(entry: Any) -> float:
    """Magnification from a Zeiss ``ap_mag`` entry: ``('Mag', 105, 'X')`` → 105, ``'4.53 K X'`` → 4530."""
    number, unit = _zeiss_number_unit(entry)
    if isinstance(number, str):
        m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([kKM]?)\s*[xX]?\s*", number)
        if not m:
            raise MetadataValueError(f"cannot read a magnification from {number!r}")
        return to_float(m.group(1)) * _MAG_PREFIX[m.group(2)]
    if unit not in (None, "", "X", "x"):
        raise MetadataValueError(f"unknown magnification unit {unit!r}")
    return to_float(number)


def _zeiss_number_unit(entry: Any) -> tuple[Any, str | None]:
    """Split a Zeiss entry ``(label, value[, unit])`` into ``(value, unit)``; a string value stays a string."""
    if isinstance(entry, tuple):
        if len(entry) == 3:
            return entry[1], str(entry[2])
        if len(entry) == 2:
            value = entry[1]
        else:
            raise MetadataValueError(f"unexpected Zeiss entry {entry!r}")
    else:
        value = entry
    if isinstance(value, str):
        parts = value.split()
        if len(parts) == 2:
            try:
                return to_float(parts[0]), parts[1]
            except MetadataValueError:
                pass
    return value, None


# ----------------------------------------------------------------------------------------------------
# mapping tables

_RAD_TO_DEG = 180.0 / math.pi

FEI_RULES: tuple[FieldRule, ...] = (
    FieldRule("tilt_deg", ("Stage", "StageT"), scaled(_RAD_TO_DEG)),  # rad → deg
    FieldRule("tilt_deg", ("$beam", "StageTa"), scaled(_RAD_TO_DEG)),
    FieldRule("stage_rotation_deg", ("Stage", "StageR"), scaled(_RAD_TO_DEG)),
    FieldRule("stage_rotation_deg", ("$beam", "StageR"), scaled(_RAD_TO_DEG)),
    FieldRule("pixel_size_um", ("Scan", "PixelWidth"), scaled(1e6), positive=True),  # m → µm
    FieldRule("pixel_size_um", ("EScan", "PixelWidth"), scaled(1e6), positive=True),
    FieldRule("working_distance_mm", ("$beam", "WD"), scaled(1e3), positive=True),  # m → mm
    FieldRule("working_distance_mm", ("Stage", "WorkingDistance"), scaled(1e3), positive=True),
    FieldRule("beam_energy_kv", ("$beam", "HV"), scaled(1e-3), positive=True),  # V → kV
    FieldRule("beam_energy_kv", ("Beam", "HV"), scaled(1e-3), positive=True),
)
"""FEI/Thermo INI sections (SI units) → normalised fields. ``$beam`` = the section named by ``[Beam] Beam``."""

ZEISS_RULES: tuple[FieldRule, ...] = (
    FieldRule("tilt_deg", ("ap_stage_at_t",), zeiss_quantity(ANGLE_TO_DEG, default_unit="°")),
    FieldRule("stage_rotation_deg", ("ap_stage_at_r",), zeiss_quantity(ANGLE_TO_DEG, default_unit="°")),
    FieldRule("pixel_size_um", ("ap_image_pixel_size",), zeiss_quantity(LENGTH_TO_UM), positive=True),
    FieldRule("working_distance_mm", ("ap_wd",), zeiss_quantity({k: v * 1e-3 for k, v in LENGTH_TO_UM.items()}), True),
    FieldRule("magnification", ("ap_mag",), parse_zeiss_magnification, positive=True),
    FieldRule("beam_energy_kv", ("ap_actualkv",), zeiss_quantity(VOLTAGE_TO_KV), positive=True),
    FieldRule("beam_energy_kv", ("ap_manualkv",), zeiss_quantity(VOLTAGE_TO_KV), positive=True),
)
"""Zeiss SmartSEM ``(label, value, unit)`` entries → normalised fields."""


# ----------------------------------------------------------------------------------------------------
# derived fields (need the image shape or several keys)


def _fei_magnification(tree: Mapping[str, Any], shape: tuple[int, int]) -> float | None:
    """Magnification = ``[Image] MagCanvasRealWidth`` / horizontal field width (both m)."""
    canvas = _lookup(tree, ("Image", "MagCanvasRealWidth"))
    hfw = _lookup(tree, ("$beam", "HFW"))
    if hfw is _MISSING:
        hfw = _lookup(tree, ("Scan", "HorFieldsize"))
    if canvas is _MISSING or hfw is _MISSING:
        return None
    canvas_m, hfw_m = to_float(canvas), to_float(hfw)
    if canvas_m <= 0 or hfw_m <= 0:
        raise MetadataValueError(f"non-positive canvas width {canvas_m} or field width {hfw_m}")
    return canvas_m / hfw_m


def _fei_data_bar_rows(tree: Mapping[str, Any], shape: tuple[int, int]) -> int | None:
    """Data-bar rows = image rows − ``[Image] ResolutionY`` (else ``[PrivateFei] DatabarHeight``)."""
    res_y = _lookup(tree, ("Image", "ResolutionY"))
    if res_y is not _MISSING:
        rows = shape[0] - int(round(to_float(res_y)))
        if 0 <= rows < shape[0]:
            return rows
        raise MetadataValueError(f"[Image] ResolutionY = {res_y} does not fit an image of {shape[0]} rows")
    bar = _lookup(tree, ("PrivateFei", "DatabarHeight"))
    if bar is not _MISSING:
        rows = int(round(to_float(bar)))
        if 0 <= rows < shape[0]:
            return rows
    return None


def _zeiss_pixel_size_from_width(tree: Mapping[str, Any], shape: tuple[int, int]) -> float | None:
    """Pixel size (µm) = scanned field width ``ap_width`` / image columns (when no ``ap_image_pixel_size``)."""
    if "ap_width" not in tree:
        return None
    width_um = zeiss_quantity(LENGTH_TO_UM)(tree["ap_width"])
    if width_um <= 0:
        raise MetadataValueError(f"non-positive field width {width_um} µm")
    return width_um / shape[1]


def _zeiss_data_bar_rows(tree: Mapping[str, Any], shape: tuple[int, int]) -> int | None:
    """Rows beyond the stored scan (``dp_image_store`` 'W * H'); ``None`` when the bar is drawn inside the scan."""
    entry = tree.get("dp_image_store")
    if entry is None:
        return None
    value = entry[1] if isinstance(entry, tuple) else entry
    m = re.fullmatch(r"\s*(\d+)\s*\*\s*(\d+)\s*", str(value))
    if not m:
        raise MetadataValueError(f"cannot read a store resolution from {value!r}")
    store_w, store_h = int(m.group(1)), int(m.group(2))
    if store_w == shape[1] and shape[0] > store_h:
        return shape[0] - store_h
    return None


FEI_DERIVED: tuple[tuple[str, str, Callable[[Mapping[str, Any], tuple[int, int]], float | int | None]], ...] = (
    ("magnification", "[Image] MagCanvasRealWidth / HFW", _fei_magnification),
    ("data_bar_rows", "rows − [Image] ResolutionY", _fei_data_bar_rows),
)
ZEISS_DERIVED: tuple[tuple[str, str, Callable[[Mapping[str, Any], tuple[int, int]], float | int | None]], ...] = (
    ("pixel_size_um", "ap_width / columns", _zeiss_pixel_size_from_width),
    ("data_bar_rows", "rows − dp_image_store", _zeiss_data_bar_rows),
)


@dataclass(frozen=True)
class VendorReader:
    """A vendor's reader: where its tree comes from and its mapping tables."""

    name: str
    tiff_attribute: str
    """``tifffile.TiffFile`` property holding the parsed tree (e.g. ``"fei_metadata"``)."""
    rules: tuple[FieldRule, ...]
    derived: tuple[tuple[str, str, Callable[[Mapping[str, Any], tuple[int, int]], float | int | None]], ...]


VENDOR_READERS: tuple[VendorReader, ...] = (
    VendorReader("fei", "fei_metadata", FEI_RULES, FEI_DERIVED),
    VendorReader("zeiss", "sem_metadata", ZEISS_RULES, ZEISS_DERIVED),
)


# ----------------------------------------------------------------------------------------------------
# table interpreter


class _Missing:
    pass


_MISSING: Any = _Missing()


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Value at ``path`` in ``tree``; ``$beam`` resolves to ``[Beam] Beam`` (default ``EBeam``)."""
    node: Any = tree
    for key in path:
        if key == "$beam":
            beam = tree.get("Beam", {}).get("Beam") if isinstance(tree.get("Beam"), Mapping) else None
            key = beam if isinstance(beam, str) and beam else "EBeam"
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    if node == "" or node is None:
        return _MISSING
    return node


def _label(vendor: str, path: tuple[str, ...], tree: Mapping[str, Any]) -> str:
    if vendor == "fei":
        section = path[0]
        if section == "$beam":
            beam = tree.get("Beam", {}).get("Beam") if isinstance(tree.get("Beam"), Mapping) else None
            section = beam if isinstance(beam, str) and beam else "EBeam"
        return f"fei [{section}] {'.'.join(path[1:])}"
    return f"{vendor} {'.'.join(path)}"


def apply_rules(
    vendor: str,
    tree: Mapping[str, Any],
    rules: tuple[FieldRule, ...],
    derived: tuple[tuple[str, str, Callable[[Mapping[str, Any], tuple[int, int]], float | int | None]], ...],
    shape: tuple[int, int],
    where: str = "",
) -> tuple[dict[str, Any], dict[str, list[tuple[str, float]]]]:
    """Run a vendor mapping table over ``tree``.

    Args:
        vendor: vendor name used in labels and logs.
        tree: the raw vendor metadata.
        rules: the mapping table; for each field the first valid rule wins.
        derived: ``(field, description, function(tree, shape))`` for fields computed from several keys;
            used only when no rule gave the field.
        shape: ``(rows, cols)`` of the stored image.
        where: file name for log messages.

    Returns:
        ``(values, candidates)``: the chosen value per field and every valid ``(label, value)`` per field.
    """
    values: dict[str, Any] = {}
    candidates: dict[str, list[tuple[str, float]]] = {}
    for rule in rules:
        raw = _lookup(tree, rule.path)
        if raw is _MISSING:
            continue
        label = _label(vendor, rule.path, tree)
        try:
            value = rule.convert(raw)
            if rule.positive and value <= 0:
                raise MetadataValueError(f"{raw!r} must be positive")
        except MetadataValueError as exc:
            logger.warning("%s: ignoring %s = %r for %s: %s", where or vendor, label, raw, rule.field, exc)
            continue
        candidates.setdefault(rule.field, []).append((label, value))
        values.setdefault(rule.field, value)
    for name, description, func in derived:
        if name in values:
            continue
        try:
            value = func(tree, shape)
        except (MetadataValueError, KeyError, TypeError) as exc:
            logger.warning("%s: cannot derive %s from %s %s: %s", where or vendor, name, vendor, description, exc)
            continue
        if value is not None:
            values[name] = value
            if isinstance(value, float):
                candidates.setdefault(name, []).append((f"{vendor} {description}", value))
    return values, candidates


def read_tiff_metadata(tif: Any, where: str = "") -> MetadataReading:
    """Normalised metadata of an open ``tifffile.TiffFile`` (all vendors whose tags are present).

    When tags of several vendors are present, the first reader in :data:`VENDOR_READERS` sets a field;
    all valid values remain in ``candidates``.

    Args:
        tif: an open ``tifffile.TiffFile``.
        where: file name for log messages.

    Returns:
        :class:`MetadataReading`; ``metadata.vendor`` is ``None`` when no vendor tag is present.
    """
    page = tif.pages.first
    shape = (int(page.shape[0]), int(page.shape[1])) if len(page.shape) >= 2 else (0, 0)
    if len(page.shape) == 3 and page.shape[0] in (3, 4) and page.shape[2] not in (3, 4):
        shape = (int(page.shape[1]), int(page.shape[2]))
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    candidates: dict[str, list[tuple[str, float]]] = {}
    original: dict[str, Any] = {}
    vendor: str | None = None
    for reader in VENDOR_READERS:
        try:
            tree = getattr(tif, reader.tiff_attribute)
        except Exception as exc:  # a corrupt vendor tag must not stop the image from loading
            logger.warning("%s: cannot parse %s metadata: %s", where, reader.name, exc)
            continue
        if not isinstance(tree, Mapping) or not tree:
            continue
        vendor = vendor or reader.name
        original[reader.name] = tree
        found, cands = apply_rules(reader.name, tree, reader.rules, reader.derived, shape, where)
        for name, value in found.items():
            if name not in values:
                values[name] = value
                source[name] = reader.name
        for name, items in cands.items():
            candidates.setdefault(name, []).extend(items)
    if vendor is not None:
        logger.debug("%s: %s metadata %s", where, vendor, {k: values[k] for k in sorted(values)})
    metadata = SemMetadata(**values, vendor=vendor, source=source, original=original)
    return MetadataReading(metadata, {k: tuple(v) for k, v in candidates.items()})


def is_tiff(path: str | Path) -> bool:
    """True when the file starts with a TIFF / BigTIFF signature."""
    with open(path, "rb") as fh:
        return fh.read(4) in _TIFF_MAGIC


def read_sem_metadata(path: str | Path) -> SemMetadata:
    """Normalised microscope metadata of one image file.

    Args:
        path: a TIFF (FEI/Thermo tag 34682, Zeiss tag 34118) or any other image file.

    Returns:
        :class:`SemMetadata` in fixed units (deg, µm, mm, kV); ``vendor`` and all fields ``None`` for an
        image without vendor tags (plain PNG/JPEG/TIFF).

    Raises:
        TopographError: the file does not exist or is a TIFF that cannot be parsed.

    Example:
        >>> md = read_sem_metadata("FEI-Helios-Ebeam-8bits.tif")  # doctest: +SKIP
        >>> md.pixel_size_um, md.working_distance_mm, md.data_bar_rows  # doctest: +SKIP
        (3.3724, 4.03466, 29)
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise TopographError(f"image file not found: {path}", "check the path")
    if not is_tiff(path):
        return SemMetadata()
    try:
        with tifffile.TiffFile(path) as tif:
            return read_tiff_metadata(tif, where=path.name).metadata
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise TopographError(
            f"cannot read the TIFF file {path}: {exc}", "check that the file is a complete TIFF"
        ) from exc
