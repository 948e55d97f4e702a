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

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from topograph.errors import TopographError
from topograph.io.sidecar import MetadataOverrides
from topograph.options import EngineOptions, engine_options, number, number_list, parse_scalar, parse_sets, positive
from topograph.registry import Registry

__all__ = ["Engine", "MesoEngine", "SemEngine", "engines", "get_engine", "parse_overrides", "parse_scalar"]


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
        try:
            items = parse_sets([v.strip() for v in value.split(";") if v.strip()], "set")
            return {k: parse_scalar(v) for k, v in items.items()}
        except TopographError as exc:
            raise TopographError(
                f"{where}: cannot read the override '{value}'", "write set as key=value;key=value"
            ) from exc
    if not isinstance(value, Mapping):
        raise TopographError(
            f"{where}: 'set' must map configuration keys to values", "e.g. set: {dense.enabled: false}"
        )
    return {str(k): v for k, v in value.items()}


def _unknown(options: Mapping[str, Any], allowed: Sequence[str], engine: str, where: str) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise TopographError(
            f"{where}: option '{extra[0]}' is not known to the {engine} engine",
            f"valid options: {', '.join(sorted(allowed))}",
        )


class TableEngine:
    """An engine whose options are its option table (:mod:`topograph.options`) plus ``config`` and ``set``:
    each table option sets its configuration key; ``extra_keys`` are the engine's own (run arguments)."""

    name: ClassVar[str]
    extra_keys: ClassVar[tuple[str, ...]] = ()

    @property
    def table(self) -> EngineOptions:
        return engine_options(self.name)

    @property
    def keys(self) -> tuple[str, ...]:
        return (*_COMMON_KEYS, *self.table.batch_options(), *self.extra_keys)

    def check_options(self, options: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
        _unknown(options, self.keys, self.name, where)
        out: dict[str, Any] = {}
        for key, value in options.items():
            if value is None or value == "":
                continue
            if key == "config":
                out[key] = _existing_file(value, key, where, base_dir)
            elif key == "set":
                out[key] = parse_overrides(value, where)
            else:
                out[key] = self.check_extra(key, value, where, base_dir) if key in self.extra_keys else value
        self.check_config(self.config(out, where), where)
        return out

    def check_extra(self, key: str, value: Any, where: str, base_dir: Path) -> Any:
        """Validate one of the engine's own options."""
        return value

    def check_config(self, cfg: Any, where: str) -> None:
        """Cross-field checks of the engine's configuration."""

    def option_files(self, options: Mapping[str, Any]) -> list[Path]:
        return [Path(options["config"])] if options.get("config") else []

    def config(self, options: Mapping[str, Any], where: str = "dataset") -> Any:
        """The configuration of a dataset: ``config`` file, then the table options, then ``set``."""
        from topograph.config import apply_overrides, from_yaml

        values = {opt.name: options.get(opt.name, opt.batch_default) for opt in self.table.options}
        try:
            cls = self.table.config_class()
            cfg = from_yaml(cls, Path(options["config"])) if options.get("config") else cls()
            named = self.table.overrides(values, label=lambda o: f"option '{o.name}'")
            return apply_overrides(cfg, {**named, **dict(options.get("set") or {})})
        except TopographError as exc:
            raise TopographError(f"{where}: {exc.cause}", exc.fix) from exc


class SemEngine(TableEngine):
    """The SEM tilt-series engine (:func:`topograph.sem.pipeline.run_sem`).

    Options besides ``config`` / ``set`` and the table options of ``topograph sem``: the fields of
    :class:`~topograph.io.sidecar.MetadataOverrides` (``tilts_deg`` one per image in input order,
    ``tilt_axis_deg``, ``pixel_size_um``, ``stage_rotation_deg``) and ``sidecar`` (a metadata file).
    """

    name = "sem"
    extra_keys: ClassVar[tuple[str, ...]] = (*(f.name for f in dataclasses.fields(MetadataOverrides)), "sidecar")

    def check_extra(self, key: str, value: Any, where: str, base_dir: Path) -> Any:
        name = f"{where}: option '{key}'"
        if key == "sidecar":
            return _existing_file(value, key, where, base_dir)
        if key == "tilts_deg":
            return number_list(value, name)
        return positive(value, name) if key == "pixel_size_um" else number(value, name)

    def option_files(self, options: Mapping[str, Any]) -> list[Path]:
        return [Path(options[k]) for k in ("config", "sidecar") if options.get(k)]

    def run(self, inputs: Sequence[str], out_dir: Path, options: Mapping[str, Any], command: str) -> dict[str, Any]:
        from topograph.io.atomic import to_jsonable
        from topograph.sem.pipeline import run_sem

        metadata = {k: options[k] for k in self.extra_keys if k != "sidecar" and options.get(k) is not None}
        overrides = MetadataOverrides(**metadata)
        cfg = self.config(options)
        run = run_sem(list(inputs), out_dir, cfg, overrides=overrides, sidecar=options.get("sidecar"), command=command)
        return to_jsonable(run.summary)


class MesoEngine(TableEngine):
    """The mesoscopic phone engine (``topograph.meso.pipeline.run_meso``): the options of ``topograph meso``
    (``magnification``, ``focal_mm``, ``pixel_pitch_um``, ``scale_points`` with ``scale_distance_mm`` ...).
    ``threads`` (torch CPU threads) defaults to 1 in a batch: the parallelism comes from the workers.
    """

    name = "meso"

    def check_config(self, cfg: Any, where: str) -> None:
        from topograph.meso.config import validate_config

        try:
            validate_config(cfg)
        except TopographError as exc:
            raise TopographError(f"{where}: {exc.cause}", exc.fix) from exc

    def config(self, options: Mapping[str, Any], where: str = "dataset") -> Any:
        try:
            import topograph.meso.config  # noqa: F401
        except ImportError as exc:
            raise TopographError(
                f"the meso engine is not available in this installation ({exc})",
                "update topograph, or run this dataset with another engine",
            ) from exc
        return super().config(options, where)

    def run(self, inputs: Sequence[str], out_dir: Path, options: Mapping[str, Any], command: str) -> dict[str, Any]:
        from topograph.io.atomic import to_jsonable
        from topograph.meso.pipeline import run_meso

        return to_jsonable(run_meso(list(inputs), out_dir, self.config(options), command=command).summary)


engines.register("sem")(SemEngine)
engines.register("meso")(MesoEngine)


def get_engine(name: str) -> Engine:
    """The engine registered under ``name`` (built-in or plugin)."""
    return engines.create(name)
