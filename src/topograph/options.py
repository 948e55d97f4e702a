"""The options of the engines, declared once.

Each engine has one table of :class:`ConfigOption` rows: a command-line flag, the configuration key it
sets and its help text. The ``topograph sem`` / ``topograph meso`` options, the options a batch manifest
accepts for a dataset and ``topograph config show`` are all generated from these tables; the type of
every option is the type of its configuration field. Any other key is reachable with ``--set key=value``
(and ``set:`` in a manifest).
"""

from __future__ import annotations

import importlib
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from topograph.errors import TopographError

Check = Callable[[Any, str], Any]
"""``check(value, name)``: the value to set, or a :class:`TopographError` naming the option ``name``."""


@dataclass(frozen=True)
class ConfigOption:
    """One option of an engine: a CLI flag (and a batch-manifest option) that sets one configuration key."""

    flag: str
    """Command-line flag, e.g. ``--matcher``; its name without dashes is the batch option (``matcher``)."""
    key: str
    """Dotted configuration key it sets, e.g. ``matching.matcher``."""
    help: str
    switch: bool | None = None
    """For a flag without a value: the value it sets (``--sparse-only`` sets ``dense.enabled`` to False)."""
    check: Check | None = None
    """Validates and converts a given value before it reaches the configuration."""
    batch_default: Any = None
    """Value in a batch when the manifest does not give one (None: the configuration's own)."""

    @property
    def name(self) -> str:
        """Python parameter / batch option name: ``--scale-points`` → ``scale_points``."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class EngineOptions:
    """An engine's configuration class and its option table."""

    engine: str
    config_path: str
    """``module:Class`` of the configuration (imported on use: the meso engine needs torch only to run)."""
    options: tuple[ConfigOption, ...]

    def config_class(self) -> type:
        module, name = self.config_path.split(":")
        return getattr(importlib.import_module(module), name)

    def field_type(self, key: str) -> Any:
        """The annotated type of the configuration field at dotted ``key``."""
        cls: Any = self.config_class()
        tp: Any = None
        for part in key.split("."):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                raise KeyError(key)
            tp = hints[part]
            cls = tp
        return tp

    def overrides(
        self, values: Mapping[str, Any], label: Callable[[ConfigOption], str] | None = None
    ) -> dict[str, Any]:
        """Dotted configuration keys for the given option values (by :attr:`ConfigOption.name`; ``None``
        and an unset switch are left out). ``label`` names an option in errors (default: its flag)."""
        out: dict[str, Any] = {}
        for opt in self.options:
            value = values.get(opt.name)
            if value is None or (opt.switch is not None and value is False):
                continue
            if opt.switch is not None:
                value = opt.switch
            name = label(opt) if label is not None else opt.flag
            out[opt.key] = opt.check(value, name) if opt.check is not None else value
        return out

    def check_values(self, cfg: Any) -> None:
        """Apply each option's check to the value ``cfg`` holds, so a value from ``--config`` or ``--set`` fails
        before the run as the flag would (the message names the flag and the key)."""
        for opt in self.options:
            if opt.check is None or opt.switch is not None:
                continue
            value: Any = cfg
            for part in opt.key.split("."):
                value = getattr(value, part)
            if value is not None:
                opt.check(value, f"{opt.flag} ({opt.key})")

    def batch_options(self) -> tuple[str, ...]:
        return tuple(opt.name for opt in self.options)


def scalar_type(tp: Any) -> type:
    """The command-line type of a configuration field: bool, int, float or str (lists are typed as text)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return scalar_type(inner[0]) if len(inner) == 1 else str
    if tp in (bool, int, float):
        return tp
    return str


def parse_sets(items: Iterable[str] | None, flag: str = "--set") -> dict[str, str]:
    """``["a.b=1", ...]`` → ``{"a.b": "1"}``. The values stay text: the configuration types each one by its
    field (so ``checks.gates=off`` stays the word ``off``, which YAML would read as False)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TopographError(f"{flag} needs KEY=VALUE, got '{item}'", "e.g. --set dense.enabled=false")
        out[key.strip()] = value.strip()
    return out


def parse_scalar(text: str) -> Any:
    """A value typed on a command line or in a CSV cell, read as YAML (``false`` → False, ``0.7`` → 0.7)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ---- checks shared by the tables -------------------------------------------------------------------------


def number(value: Any, flag: str) -> float:
    """A finite number."""
    out = _number(value, flag)
    if not math.isfinite(out):
        raise TopographError(f"{flag} must be a finite number, got {value!r}", f"e.g. {flag} 1.5")
    return out


def _number(value: Any, flag: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TopographError(f"{flag} must be a number, got {value!r}", f"e.g. {flag} 1.5")
    try:
        return float(value)
    except ValueError as exc:
        raise TopographError(f"{flag} must be a number, got {value!r}", f"e.g. {flag} 1.5") from exc


def positive(value: Any, flag: str) -> float:
    """A finite number > 0."""
    out = _number(value, flag)
    if not (math.isfinite(out) and out > 0):
        raise TopographError(f"{flag} must be a positive number, got {out:g}", f"e.g. {flag} 1.5")
    return out


def non_negative(value: Any, flag: str) -> float | int:
    """A number >= 0 (integers stay integers)."""
    out = _number(value, flag)
    if out < 0 or not math.isfinite(out):
        raise TopographError(f"{flag} must be >= 0, got {out:g}", f"e.g. {flag} 0")
    return int(out) if isinstance(value, int) or (isinstance(value, str) and out.is_integer()) else out


def number_list(value: Any, flag: str) -> list[float]:
    """``"1,2,3"`` or a list → floats."""
    items = value.replace(";", ",").split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TopographError(f"{flag} must be numbers separated by commas, got {value!r}", f"e.g. {flag} 1,2,3")
    try:
        out = [float(v) for v in items if str(v).strip()]
    except (TypeError, ValueError) as exc:
        raise TopographError(
            f"{flag} must be numbers separated by commas, got {value!r}", f"e.g. {flag} 1,2,3"
        ) from exc
    if not out or not all(math.isfinite(v) for v in out):
        raise TopographError(f"{flag} must be finite numbers, got {value!r}", f"e.g. {flag} 1,2,3")
    return out


def four_points(value: Any, flag: str) -> list[float]:
    """``x1,y1,x2,y2``."""
    vals = number_list(value, flag)
    if len(vals) != 4:
        raise TopographError(f"{flag} needs four numbers x1,y1,x2,y2, got {len(vals)}", f"e.g. {flag} 10,20,400,20")
    return vals


def lower_choice(*choices: str) -> Check:
    """A case-insensitive choice."""

    def check(value: Any, flag: str) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise TopographError(f"{flag} must be {' or '.join(choices)}, got '{value}'", f"e.g. {flag} {choices[-1]}")
        return text

    return check


def cnn_filters(value: Any, flag: str) -> list[int]:
    """Positive integer filter counts: ``16,16,16,32,32``."""
    items = value.replace(";", ",").split(",") if isinstance(value, str) else value
    try:
        out = [int(str(v).strip()) for v in items if str(v).strip()]
    except (TypeError, ValueError):
        out = []
    if not out or any(k < 1 for k in out):
        raise TopographError(
            f"{flag} needs positive integer filter counts, got '{value}'", f"e.g. {flag} 16,16,16,32,32"
        )
    return out


def text_path(value: Any, flag: str) -> str:
    return str(value)


# ---- the tables ------------------------------------------------------------------------------------------

SEM = EngineOptions(
    "sem",
    "topograph.sem.config:SemConfig",
    (
        ConfigOption("--crop", "load.crop_rows", "Rows to remove at the bottom (data bar)."),
        ConfigOption("--matcher", "matching.matcher", "Sparse matcher: sift (default), dense, roma."),
        ConfigOption("--roma-weights", "matching.roma.weights", "Local RoMa weights file.", check=text_path),
        ConfigOption("--roma-dinov2-weights", "matching.roma.dinov2_weights", "Local DINOv2 weights.", check=text_path),
        ConfigOption(
            "--cameras",
            "cameras.source",
            "auto (default: images decide the geometry, metadata the magnitudes), metadata, or images.",
        ),
        ConfigOption(
            "--relief",
            "cameras.relief",
            "Depth sign: auto (default), metadata (tilt sense), protrude, or recess (specimens that are holes).",
        ),
        ConfigOption(
            "--flip-relief",
            "cameras.flip_relief",
            "Take the other depth-reversal branch (relief and tilt signs together).",
            switch=True,
        ),
        ConfigOption("--sparse-only", "dense.enabled", "Stop after the sparse reconstruction.", switch=False),
        ConfigOption("--mask", "dense.mask", "Grain mask image for the reference view.", check=text_path),
        ConfigOption("--threads", "threads", "CPU threads (0 = all cores).", check=non_negative, batch_default=1),
    ),
)

MESO = EngineOptions(
    "meso",
    "topograph.meso.config:MesoConfig",
    (
        ConfigOption("--focal-mm", "scale.focal_mm", "Effective focal length in mm (default: EXIF).", check=positive),
        ConfigOption(
            "--pixel-pitch-um", "scale.pixel_pitch_um", "Sensor pixel pitch in µm (default: EXIF).", check=positive
        ),
        ConfigOption("--magnification", "scale.magnification", "Magnification of the reference image.", check=positive),
        ConfigOption(
            "--scale-points", "scale.scale_points", "x1,y1,x2,y2 in the reference image ...", check=four_points
        ),
        ConfigOption("--scale-distance-mm", "scale.scale_distance_mm", "... and their distance in mm.", check=positive),
        ConfigOption(
            "--reference-image", "scale.reference_image", "Index of the reference image (0).", check=non_negative
        ),
        ConfigOption(
            "--gsd-um",
            "output.gsd_um",
            "Mosaic/height-map pixel in µm (needs the scale; default: native GSD).",
            check=non_negative,
        ),
        ConfigOption(
            "--regularizer",
            "heights.model",
            "Height maps: cnn (default, untrained CNN prior) or tv (total variation).",
            check=lower_choice("cnn", "tv"),
        ),
        ConfigOption(
            "--cnn",
            "heights.cnn_filters",
            "Filters of the CNN's down blocks, e.g. 16,16,16,32,32 (the default).",
            check=cnn_filters,
        ),
        ConfigOption("--tv-weight", "loss.tv_weight", "Total-variation weight (with tv; 2e-5).", check=non_negative),
        ConfigOption(
            "--batch-size",
            "batching.batch_size",
            "Images per step (0 = automatic from the memory budget; default).",
            check=non_negative,
        ),
        ConfigOption("--distortion", "distortion.model", "piecewise (default), poly or none."),
        ConfigOption(
            "--init",
            "init.method",
            "Initial positions: auto (default), zero, xcorr or features (SIFT: also rotated photos).",
        ),
        ConfigOption("--rectification", "model.rectification", "ortho (default) or reference (Eq. 6)."),
        ConfigOption("--device", "device", "auto (default), cpu or cuda."),
        # a batch's parallelism comes from its workers: one torch thread per dataset unless told otherwise
        ConfigOption("--threads", "threads", "CPU threads (0 = all cores).", check=non_negative, batch_default=1),
        ConfigOption("--seed", "seed", "Random seed."),
    ),
)

ENGINES: dict[str, EngineOptions] = {e.engine: e for e in (SEM, MESO)}
"""Option tables of the built-in engines by name."""


def engine_options(engine: str) -> EngineOptions:
    """The option table of ``engine`` (a one-line error lists the known engines)."""
    if engine not in ENGINES:
        raise TopographError(f"unknown engine '{engine}'", f"choose one of: {', '.join(ENGINES)}")
    return ENGINES[engine]


def default_config(engine: str) -> Any:
    """The default configuration of ``engine``."""
    return engine_options(engine).config_class()()
