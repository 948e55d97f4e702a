"""The batch's results table: one row per dataset, its status plus its flattened quality figures and metrics.

Columns: the status columns of :data:`STATUS_COLUMNS`, then every scalar of the engine's ``summary.json``
under its dotted path, with two short prefixes: ``grain.*`` for ``dense.grain_metrics.*`` and ``areal.*``
for ``dense.areal_parameters_grain_top.*``. A quantity written as ``{"value": v, "unit": u, ...}`` becomes
the column ``<path>`` = v (its unit goes to the units map: Parquet field metadata and the report). A list
of numbers (one per view) becomes ``<path>.mean`` and ``<path>.max`` plus ``<path>`` as ``;``-joined
text; a list of strings is joined with ``; ``. Nested lists (the match-count matrix) and the top-level
``command`` / ``engine`` are left out — they stay in each dataset's ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topograph.batch.task import DatasetResult
from topograph.io.atomic import atomic_path, write_text

log = logging.getLogger("topograph")

STATUS_COLUMNS: tuple[str, ...] = (
    "dataset",
    "engine",
    "state",
    "action",
    "error",
    "error_type",
    "wall_s",
    "fingerprint",
    "worker",
    "out_dir",
)
PREFIXES: dict[str, str] = {"dense.grain_metrics": "grain", "dense.areal_parameters_grain_top": "areal"}
"""Summary paths shortened in column names."""
SKIPPED_KEYS: frozenset[str] = frozenset({"command", "engine"})
"""Top-level summary keys left out (the command line; the engine is a status column)."""

Scalar = bool | int | float | str | None


@dataclass(frozen=True)
class ResultsTable:
    """Rows of plain scalars under ``columns`` (missing cells are None) and the unit of each quantity column."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, Scalar], ...]
    units: Mapping[str, str]

    def column(self, name: str) -> list[Scalar]:
        """All values of one column, in row order (None where missing)."""
        return [row.get(name) for row in self.rows]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def flatten_summary(summary: Mapping[str, Any]) -> tuple[dict[str, Scalar], dict[str, str]]:
    """Flatten an engine summary into ``(columns → scalar, columns → unit)`` (rules in the module docstring)."""
    values: dict[str, Scalar] = {}
    units: dict[str, str] = {}

    def walk(prefix: str, obj: Any) -> None:
        key = PREFIXES.get(prefix, prefix)
        if isinstance(obj, Mapping):
            if "value" in obj and (obj["value"] is None or _is_number(obj["value"])):
                values[key] = obj["value"]
                if isinstance(obj.get("unit"), str):
                    units[key] = obj["unit"]
                return
            for k, v in obj.items():
                if not prefix and k in SKIPPED_KEYS:
                    continue
                walk(f"{key}.{k}" if key else str(k), v)
        elif isinstance(obj, (list, tuple)):
            if obj and all(_is_number(v) or v is None for v in obj):
                nums = [float(v) for v in obj if v is not None and math.isfinite(float(v))]
                values[key] = ";".join("" if v is None else f"{v:.6g}" for v in obj)
                values[f"{key}.mean"] = sum(nums) / len(nums) if nums else None
                values[f"{key}.max"] = max(nums) if nums else None
            elif all(isinstance(v, str) for v in obj):
                values[key] = "; ".join(obj)
        elif obj is None or isinstance(obj, (bool, int, float, str)):
            values[key] = obj

    walk("", summary)
    return values, units


def build_table(results: Sequence[DatasetResult]) -> ResultsTable:
    """One row per dataset (in the given order): status columns, then the union of the flattened summaries."""
    columns: list[str] = list(STATUS_COLUMNS)
    seen = set(columns)
    rows: list[dict[str, Scalar]] = []
    units: dict[str, str] = {}
    for r in results:
        flat, u = flatten_summary(r.summary) if r.summary else ({}, {})
        units.update(u)
        row: dict[str, Scalar] = {
            "dataset": r.name,
            "engine": r.engine,
            "state": r.state,
            "action": r.action,
            "error": r.error,
            "error_type": r.error_type,
            "wall_s": r.wall_s,
            "fingerprint": r.fingerprint,
            "worker": r.worker,
            "out_dir": r.out_dir,
        }
        for k, v in flat.items():
            if k in seen and k in STATUS_COLUMNS:
                k = f"summary.{k}"
            if k not in seen:
                seen.add(k)
                columns.append(k)
            row[k] = v
        rows.append(row)
    return ResultsTable(tuple(columns), tuple(rows), units)


def _csv_cell(v: Scalar) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return str(v)


def write_csv(path: str | Path, table: ResultsTable) -> Path:
    """Write the table as UTF-8 CSV with a header row (empty cell = missing), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_csv_cell(row.get(c)) for c in table.columns])
    return write_text(path, buf.getvalue())


def column_type(values: Sequence[Scalar]) -> str:
    """``bool``, ``int64``, ``float64`` or ``string``: the narrowest type holding every non-missing value."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(_is_number(v) for v in present):
        return "int64" if all(isinstance(v, int) for v in present) else "float64"
    return "string"


def write_parquet(path: str | Path, table: ResultsTable) -> Path | None:
    """Write the table as Parquet (typed columns, units in the field metadata), atomically.

    Returns:
        The path, or None when ``pyarrow`` is not installed (a warning says so; the CSV has the same data).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        log.warning("pyarrow is not installed: no Parquet table (pip install 'topograph[batch]'); the CSV has it all")
        return None
    types = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    arrays, fields = [], []
    for name in table.columns:
        values = table.column(name)
        kind = column_type(values)
        if kind == "string":
            values = [None if v is None else str(v) for v in values]
        elif kind == "float64":
            values = [None if v is None else float(v) for v in values]
        meta = {"unit": table.units[name]} if name in table.units else None
        fields.append(pa.field(name, types[kind], metadata=meta))
        arrays.append(pa.array(values, type=types[kind]))
    pa_table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    with atomic_path(path) as tmp:
        pq.write_table(pa_table, tmp)
    return Path(path)
