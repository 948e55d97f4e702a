"""Which datasets a batch runs: a manifest file (CSV or YAML) or a glob of folders.

Manifest as CSV (one dataset per row; empty cells = not given; lists separated by ``;``)::

    name,path,engine,tilts_deg,pixel_size_um,set
    g01,grains/g01,sem,0;5;10,0.05,dense.enabled=false
    g02,grains/g02,sem,,,
    desk,phone/desk,meso,,,

Columns ``set.<dotted key>`` (e.g. ``set.matching.sift.ratio``) are configuration overrides too.

Manifest as YAML (``defaults`` apply to every dataset; a dataset's own values win)::

    defaults:
      engine: sem
      set: {dense.enabled: false}
    datasets:
      - {name: g01, path: grains/g01, tilts_deg: [0, 5, 10], pixel_size_um: 0.05}
      - {path: [grains/g02/a.tif, grains/g02/b.tif, grains/g02/c.tif]}

``path`` is a folder holding the images or a list of image files; relative paths are relative to the
manifest. ``name`` defaults to the folder's name and names the output folder ``OUT/<name>``. Every
other key is an engine option (:mod:`topograph.batch.engines`). Without ``engine`` it is detected from
the files (:func:`detect_engine`): TIFFs with SEM vendor tags → ``sem``; photos with camera EXIF → ``meso``.
"""

from __future__ import annotations

import csv
import glob
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topograph.batch.engines import get_engine, parse_overrides, parse_scalar
from topograph.errors import TopographError

log = logging.getLogger("topograph")

RESERVED_NAMES: frozenset[str] = frozenset({"batch_report", "batch_results.csv", "batch_results.parquet", "batch.json"})
"""Names of the batch's own outputs in ``OUT``; no dataset may take them."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPEC_KEYS = ("name", "path", "engine")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a batch.

    Attributes:
        name: output folder name under the batch's ``OUT`` (letters, digits, ``._-``).
        engine: engine name ("sem", "meso" or a plugin); empty when it could not be detected.
        inputs: absolute paths: one folder of images, or the image files.
        options: engine options, already checked by the engine (absolute file paths).
        problem: why the dataset cannot run (engine detection failed); it is then recorded as failed
            without being submitted.
    """

    name: str
    engine: str
    inputs: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None


def detect_engine(inputs: Sequence[str | Path]) -> str | None:
    """The engine a dataset's files call for, or None when they do not tell.

    TIFFs carrying SEM vendor metadata (FEI/Thermo, Zeiss) → ``"sem"``; JPEG/PNG/TIFF photos whose EXIF
    names a camera make or model → ``"meso"``. Unreadable files are skipped (the engine reports them).
    """
    from topograph.io.images import IMAGE_EXTENSIONS
    from topograph.io.sem_metadata import read_sem_metadata

    files: list[Path] = []
    for p in (Path(i) for i in inputs):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
    for f in files:
        try:
            if read_sem_metadata(f).vendor is not None:
                return "sem"
        except Exception:  # noqa: BLE001 - a corrupt file tells nothing; the engine reports it
            continue
    for f in files:
        if _has_camera_exif(f):
            return "meso"
    return None


def _has_camera_exif(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
    except Exception:  # noqa: BLE001 - unreadable → no information
        return False
    return bool(str(exif.get(0x010F, "")).strip() or str(exif.get(0x0110, "")).strip())  # Make, Model


def safe_name(text: str) -> str:
    """A folder name usable as a dataset name: other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip("._-") or "dataset"


def _inputs(value: Any, base_dir: Path, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(";") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = []
    if not items:
        raise TopographError(f"{where}: no 'path' given", "give the dataset's folder (or its image files) as path")
    paths = [(base_dir / Path(i).expanduser()).resolve() for i in items]
    for p in paths:
        if not p.exists():
            raise TopographError(f"{where}: the path {p} does not exist", "check the path (relative to the manifest)")
    if len(paths) > 1 and any(p.is_dir() for p in paths):
        raise TopographError(f"{where}: a folder is listed with other paths", "give one folder or only image files")
    return tuple(str(p) for p in paths)


def _merge(defaults: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` over ``defaults``; the ``set`` overrides are merged key by key."""
    out = {**defaults, **entry}
    sets: dict[str, Any] = {}
    for src in (defaults, entry):
        value = src.get("set")
        if isinstance(value, Mapping):
            sets.update(value)
        elif isinstance(value, str) and value.strip():
            sets.update(parse_overrides(value, "set"))
    if sets:
        out["set"] = sets
    return out


def build_specs(
    entries: Sequence[Mapping[str, Any]],
    base_dir: str | Path,
    defaults: Mapping[str, Any] | None = None,
    source: str = "manifest",
) -> list[DatasetSpec]:
    """Check the datasets and turn them into :class:`DatasetSpec` (names unique, options valid).

    Args:
        entries: one mapping per dataset: ``path``, optional ``name`` / ``engine``, engine options.
        base_dir: folder that relative paths are relative to.
        defaults: values under every entry (an entry's own values win; ``set`` merges key by key).
        source: what the entries came from, for error messages.

    Returns:
        The specs in input order.

    Raises:
        TopographError: a missing path, a bad or duplicate name, an unknown engine or option.
    """
    base = Path(base_dir)
    specs: list[DatasetSpec] = []
    seen: dict[str, str] = {}
    for k, raw in enumerate(entries):
        where = f"{source}, dataset {k + 1}"
        if not isinstance(raw, Mapping):
            raise TopographError(
                f"{where} is not a mapping of keys to values", "write each dataset as key: value pairs"
            )
        entry = _merge(defaults or {}, {str(a): b for a, b in raw.items() if b is not None and b != ""})
        inputs = _inputs(entry.get("path"), base, where)
        name = str(
            entry.get("name") or safe_name(Path(inputs[0]).name if len(inputs) == 1 else Path(inputs[0]).parent.name)
        )
        where = f"{source}, dataset '{name}'"
        if not _NAME_RE.match(name) or name in RESERVED_NAMES:
            raise TopographError(
                f"{where}: '{name}' cannot be a dataset name",
                "use letters, digits, '.', '_' and '-' (not batch_report / batch_results.*)",
            )
        if name in seen:
            raise TopographError(
                f"{where}: two datasets are named '{name}' ({seen[name]} and {inputs[0]})",
                "give each dataset a distinct name (a manifest's name column)",
            )
        seen[name] = inputs[0]
        options = {key: value for key, value in entry.items() if key not in _SPEC_KEYS}
        engine_name = str(entry.get("engine") or "auto").lower()
        if engine_name == "auto":
            detected = detect_engine(inputs)
            if detected is None:
                log.warning("%s: cannot tell the engine from the files; it will be recorded as failed", where)
                problem = "cannot tell the engine from the files — give engine in the manifest or --engine"
                specs.append(DatasetSpec(name, "", inputs, {}, problem))
                continue
            log.debug("%s: engine %s detected from the files", where, detected)
            engine_name = detected
        engine = get_engine(engine_name)
        specs.append(DatasetSpec(name, engine_name, inputs, engine.check_options(options, where, base)))
    if not specs:
        raise TopographError(f"the {source} lists no dataset", "add at least one dataset")
    return specs


def read_manifest(path: str | Path, defaults: Mapping[str, Any] | None = None) -> list[DatasetSpec]:
    """Read a CSV or YAML manifest (format in the module docstring).

    Args:
        path: ``.csv``, ``.yaml`` or ``.yml`` file.
        defaults: batch-wide values under the manifest's own (from the command line).

    Returns:
        The datasets, in manifest order.
    """
    path = Path(path)
    if not path.is_file():
        raise TopographError(f"manifest not found: {path}", "check the path of the manifest file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        entries, file_defaults = _read_csv(path), {}
    elif suffix in (".yaml", ".yml"):
        entries, file_defaults = _read_yaml(path)
    else:
        raise TopographError(f"manifest {path.name} is neither CSV nor YAML", "use a .csv, .yaml or .yml file")
    merged = _merge(file_defaults, dict(defaults or {})) if defaults else file_defaults
    # command-line defaults beat the file's defaults, the datasets' own values beat both
    return build_specs(entries, path.parent, merged, source=f"manifest {path.name}")


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TopographError(
            f"cannot read the manifest {path}: {exc}", "save it as UTF-8 CSV with a header row"
        ) from exc
    if "path" not in header:
        raise TopographError(f"manifest {path.name} has no 'path' column", "add a header row: name,path,engine,...")
    entries = []
    for row in rows:
        entry: dict[str, Any] = {}
        sets: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:
                raise TopographError(f"manifest {path.name}: a row has more cells than the header", "check the commas")
            value = (value or "").strip()
            if not value:
                continue
            if key.startswith("set."):
                sets[key[4:]] = parse_scalar(value)
            else:
                entry[key.strip()] = value
        if sets:
            entry["set"] = {**parse_overrides(entry.get("set"), f"manifest {path.name}"), **sets}
        if entry:
            entries.append(entry)
    return entries


def _read_yaml(path: Path) -> tuple[list[Any], dict[str, Any]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        from topograph.config import yaml_error_line

        raise TopographError(f"cannot read the manifest {path}: {yaml_error_line(exc)}", "fix the YAML syntax") from exc
    if isinstance(data, list):
        return data, {}
    if not isinstance(data, Mapping) or "datasets" not in data:
        raise TopographError(f"manifest {path.name} has no 'datasets' list", "write datasets: [{path: ...}, ...]")
    extra = sorted(set(data) - {"datasets", "defaults"})
    if extra:
        raise TopographError(f"manifest {path.name}: unknown top-level key '{extra[0]}'", "use datasets and defaults")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping) or not isinstance(data["datasets"], list):
        raise TopographError(
            f"manifest {path.name}: defaults must be a mapping and datasets a list", "see docs/batch.md"
        )
    return data["datasets"], dict(defaults)


def datasets_from_glob(
    pattern: str, engine: str | None = None, defaults: Mapping[str, Any] | None = None, base_dir: str | Path = "."
) -> list[DatasetSpec]:
    """One dataset per folder matching ``pattern`` (``**`` recurses), named after the folder.

    Args:
        pattern: glob pattern, relative to ``base_dir`` unless absolute (``"grains/*/"``).
        engine: engine of every dataset; None or ``"auto"`` detects it per dataset.
        defaults: options of every dataset.
        base_dir: folder the pattern is relative to.

    Returns:
        The datasets in natural name order.
    """
    from topograph.io.images import natural_key

    base = Path(base_dir)
    full = pattern if Path(pattern).is_absolute() else str(base / pattern)
    matches = [Path(m) for m in glob.glob(full, recursive=True)]
    folders = sorted((m for m in matches if m.is_dir()), key=lambda p: natural_key(str(p)))
    skipped = len(matches) - len(folders)
    if skipped:
        log.warning("--glob '%s': %d match(es) are files, not dataset folders; they are left out", pattern, skipped)
    if not folders:
        raise TopographError(
            f"--glob '{pattern}' matches no folder", "quote the pattern and end it with /: 'grains/*/'"
        )
    entries = [{"path": str(f.resolve())} for f in folders]
    merged = dict(defaults or {})
    if engine:
        merged["engine"] = engine
    return build_specs(entries, base, merged, source=f"--glob '{pattern}'")
