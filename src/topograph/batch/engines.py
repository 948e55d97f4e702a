"""The engines a batch can run, behind one small interface.

A batch task names its engine ("sem", "meso" or a plugin) and carries the dataset's options as a plain
dict. :data:`engines` maps the name to an :class:`Engine`, which checks the options (on the client,
before anything is submitted), lists the option files whose content belongs to the fingerprint, and
runs the engine on one dataset (in a worker). Third-party engines register through the entry-point
group ``topograph.batch_engines`` (``name = "pkg.module:EngineClass"``).

Options every engine accepts:

* ``config``: YAML configuration file of the engine (``topograph config show <engine>``);
* ``set``: mapping of dotted configuration keys to values, applied after ``config``
  (``{"dense.enabled": false}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from topograph.errors import TopographError
from topograph.registry import Registry


class Engine(Protocol):
    """One reconstruction engine as the batch sees it."""

    name: str

    def check_options(self, options: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
        """Validate and normalise a dataset's options (raise :class:`TopographError` naming ``where``).

        Relative file paths are resolved against ``base_dir`` (the manifest's folder) and made absolute.
        """
        ...

    def option_files(self, options: Mapping[str, Any]) -> list[Path]:
        """Files named by the options whose bytes belong to the dataset's fingerprint."""
        ...

    def run(self, inputs: Sequence[str], out_dir: Path, options: Mapping[str, Any], command: str) -> dict[str, Any]:
        """Run on one dataset, write its outputs into ``out_dir`` and return its summary (plain JSON types)."""
        ...


engines: Registry[Engine] = Registry("batch engine", "topograph.batch_engines")

_COMMON_KEYS = ("config", "set")


def _number(value: Any, key: str, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TopographError(f"{where}: option '{key}' must be a number, got {value!r}", f"write e.g. {key}: 1.5")
    try:
        out = float(value)
    except ValueError as exc:
        raise TopographError(f"{where}: option '{key}' must be a number, got {value!r}", f"e.g. {key}: 1.5") from exc
    if not math.isfinite(out) or (positive and out <= 0):
        raise TopographError(
            f"{where}: option '{key}' must be a {'positive ' if positive else ''}finite number, got {value!r}",
            f"fix {key} in the manifest",
        )
    return out


def _number_list(value: Any, key: str, where: str) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise TopographError(f"{where}: option '{key}' must be a list of numbers, got {value!r}", f"e.g. {key}: 0,5,10")
    return [_number(v, key, where) for v in value]


def _existing_file(value: Any, key: str, where: str, base_dir: Path) -> str:
    path = Path(base_dir) / Path(str(value)).expanduser()
    if not path.is_file():
        raise TopographError(
            f"{where}: the {key} file {path} does not exist", "check the path (relative to the manifest)"
        )
    return str(path.resolve())


def parse_overrides(value: Any, where: str) -> dict[str, Any]:
    """``set`` as a mapping of dotted keys; a string ``"a.b=1;c.d=x"`` is accepted too."""
    if value is None:
        return {}
    if isinstance(value, str):
        out: dict[str, Any] = {}
        for item in (v.strip() for v in value.split(";")):
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise TopographError(f"{where}: cannot read the override '{item}'", "write set as key=value;key=value")
            out[key.strip()] = parse_scalar(val.strip())
        return out
    if not isinstance(value, Mapping):
        raise TopographError(
            f"{where}: 'set' must map configuration keys to values", "e.g. set: {dense.enabled: false}"
        )
    return {str(k): v for k, v in value.items()}


def parse_scalar(text: str) -> Any:
    """A value typed on a command line or in a CSV cell, read as YAML (``false`` → False, ``0.7`` → 0.7)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _unknown(options: Mapping[str, Any], allowed: Sequence[str], engine: str, where: str) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise TopographError(
            f"{where}: option '{extra[0]}' is not known to the {engine} engine",
            f"valid options: {', '.join(sorted(allowed))}",
        )


def _load_config(cls: type, options: Mapping[str, Any]) -> Any:
    from topograph.config import apply_overrides, from_yaml

    cfg = from_yaml(cls, Path(options["config"])) if options.get("config") else cls()
    return apply_overrides(cfg, dict(options.get("set") or {}))


class SemEngine:
    """The SEM tilt-series engine (:func:`topograph.sem.pipeline.run_sem`).

    Options besides ``config`` / ``set``: ``tilts_deg`` (one per image, input order), ``tilt_axis_deg``,
    ``pixel_size_um``, ``stage_rotation_deg`` (as ``topograph sem``'s flags) and ``sidecar`` (a metadata file).
    """

    name = "sem"
    KEYS: ClassVar[tuple[str, ...]] = (
        *_COMMON_KEYS,
        "tilts_deg",
        "tilt_axis_deg",
        "pixel_size_um",
        "stage_rotation_deg",
        "sidecar",
    )

    def check_options(self, options: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
        from topograph.sem.config import SemConfig

        _unknown(options, self.KEYS, self.name, where)
        out: dict[str, Any] = {}
        for key, value in options.items():
            if value is None or value == "":
                continue
            if key == "tilts_deg":
                out[key] = _number_list(value, key, where)
            elif key in ("tilt_axis_deg", "stage_rotation_deg"):
                out[key] = _number(value, key, where)
            elif key == "pixel_size_um":
                out[key] = _number(value, key, where, positive=True)
            elif key in ("config", "sidecar"):
                out[key] = _existing_file(value, key, where, base_dir)
            elif key == "set":
                out[key] = parse_overrides(value, where)
        _checked_config(SemConfig, out, where)
        return out

    def option_files(self, options: Mapping[str, Any]) -> list[Path]:
        return [Path(options[k]) for k in ("config", "sidecar") if options.get(k)]

    def run(self, inputs: Sequence[str], out_dir: Path, options: Mapping[str, Any], command: str) -> dict[str, Any]:
        from topograph.io.atomic import to_jsonable
        from topograph.io.sidecar import MetadataOverrides
        from topograph.sem.config import SemConfig
        from topograph.sem.pipeline import run_sem

        cfg = _load_config(SemConfig, options)
        tilts = options.get("tilts_deg")
        overrides = MetadataOverrides(
            tilts_deg=tuple(tilts) if tilts else None,
            tilt_axis_deg=options.get("tilt_axis_deg"),
            pixel_size_um=options.get("pixel_size_um"),
            stage_rotation_deg=options.get("stage_rotation_deg"),
        )
        run = run_sem(list(inputs), out_dir, cfg, overrides=overrides, sidecar=options.get("sidecar"), command=command)
        return to_jsonable(run.summary)


class MesoEngine:
    """The mesoscopic phone engine (``topograph.meso.pipeline.run_meso``).

    Options besides ``config`` / ``set`` are shortcuts for the absolute scale (``scale.*`` keys of the
    configuration): ``magnification``, ``focal_mm``, ``pixel_pitch_um``, ``scale_points`` (x1,y1,x2,y2)
    with ``scale_distance_mm``. ``threads`` (torch CPU threads) defaults to 1 in a batch: the parallelism
    comes from the workers.
    """

    name = "meso"
    SCALE_KEYS: ClassVar[tuple[str, ...]] = (
        "magnification",
        "focal_mm",
        "pixel_pitch_um",
        "scale_points",
        "scale_distance_mm",
    )
    KEYS: ClassVar[tuple[str, ...]] = (*_COMMON_KEYS, *SCALE_KEYS, "threads")

    def check_options(self, options: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
        _unknown(options, self.KEYS, self.name, where)
        out: dict[str, Any] = {}
        for key, value in options.items():
            if value is None or value == "":
                continue
            if key == "scale_points":
                out[key] = _number_list(value, key, where)
            elif key in self.SCALE_KEYS:
                out[key] = _number(value, key, where, positive=True)
            elif key == "threads":
                out[key] = int(_number(value, key, where, positive=True))
            elif key == "config":
                out[key] = _existing_file(value, key, where, base_dir)
            elif key == "set":
                out[key] = parse_overrides(value, where)
        try:
            from topograph.meso.config import MesoConfig, validate_config
        except ImportError:  # the engine is optional for checking: the worker reports a missing engine
            return out
        validate_config(_checked_config(MesoConfig, self._with_scale(out), where))
        return out

    def _with_scale(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Fold the scale shortcuts and the thread count into the ``set`` overrides."""
        merged = dict(options)
        sets = dict(options.get("set") or {})
        for key in self.SCALE_KEYS:
            if key in options:
                sets[f"scale.{key}"] = options[key]
        sets["threads"] = options.get("threads", sets.get("threads", 1))
        merged["set"] = sets
        return merged

    def option_files(self, options: Mapping[str, Any]) -> list[Path]:
        return [Path(options["config"])] if options.get("config") else []

    def run(self, inputs: Sequence[str], out_dir: Path, options: Mapping[str, Any], command: str) -> dict[str, Any]:
        from topograph.io.atomic import to_jsonable

        try:
            from topograph.meso.config import MesoConfig
            from topograph.meso.pipeline import run_meso
        except ImportError as exc:
            raise TopographError(
                f"the meso engine is not available in this installation ({exc})",
                "update topograph, or run this dataset with another engine",
            ) from exc
        cfg = _load_config(MesoConfig, self._with_scale(options))
        _rec, files = run_meso(list(inputs), out_dir, cfg, command=command)
        summary = _read_summary(out_dir) or {"engine": "meso", "command": command, "files": sorted(files)}
        return to_jsonable(summary)


def _checked_config(cls: type, options: Mapping[str, Any], where: str) -> Any:
    """Build the configuration once on the client so a bad key fails before any work is submitted."""
    try:
        return _load_config(cls, options)
    except TopographError as exc:
        raise TopographError(f"{where}: {exc.cause}", exc.fix) from exc


def _read_summary(out_dir: Path) -> dict[str, Any]:
    import json

    path = Path(out_dir) / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


engines.register("sem")(SemEngine)
engines.register("meso")(MesoEngine)


def get_engine(name: str) -> Engine:
    """The engine registered under ``name`` (built-in or plugin)."""
    return engines.create(name)
