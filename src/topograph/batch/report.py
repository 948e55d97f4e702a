"""The batch report: distribution plots of the grain metrics and ``batch_report.html``.

Built from the :class:`~topograph.batch.table.ResultsTable` (the same data as ``batch_results.csv``), so it
can be rebuilt from the saved table. Each distribution figure shows a histogram and the empirical
cumulative distribution ``F(x) = #{xᵢ ≤ x} / n`` of one column over the datasets that have it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from topograph.batch.table import ResultsTable
from topograph.io.atomic import write_text
from topograph.report.distributions import distribution_figure

log = logging.getLogger("topograph")

REPORT_DIR = "batch_report"
REPORT_HTML = "batch_report.html"
DISTRIBUTIONS: tuple[tuple[str, str, str], ...] = (
    ("grain.equivalent_sphere_diameter", "Size: equivalent-sphere diameter (6V/π)^(1/3)", "size"),
    ("grain.feret_max", "Size: maximum Feret diameter", "feret_max"),
    ("grain.sphericity", "Sphericity (Wadell) π^(1/3) (6V)^(2/3) / A", "sphericity"),
    ("grain.elongation", "Elongation I / L", "elongation"),
    ("grain.flatness", "Flatness S / I", "flatness"),
    ("reprojection_rms_px_after.max", "Reprojection RMS after bundle adjustment, worst view", "reprojection_rms"),
)
"""(column, title, file stem) of each distribution figure (drawn when at least one dataset has the column)."""
SUMMARY_COLUMNS: tuple[str, ...] = (
    "dataset",
    "engine",
    "state",
    "action",
    "error",
    "wall_s",
    "unit",
    "n_tracks",
    "reprojection_rms_px_after.max",
    "grain.volume",
    "grain.equivalent_sphere_diameter",
    "grain.sphericity",
    "grain.elongation",
    "grain.flatness",
)
"""Columns shown in the HTML table (the CSV / Parquet files hold every column)."""


def _numbers(table: ResultsTable, column: str) -> list[float]:
    out = []
    for row in table.rows:
        v = row.get(column)
        if row.get("state") == "done" and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out.append(float(v))
    return out


def _axis_label(column: str, table: ResultsTable) -> str:
    unit = table.units.get(column)
    if column.startswith("reprojection"):
        unit = "px"
    if unit in (None, "1"):
        return column
    pretty = unit.replace("um", "µm").replace("^2", "²").replace("^3", "³")
    return f"{column} [{pretty}]"


def draw_distributions(table: ResultsTable, out_dir: str | Path) -> list[tuple[Path, str]]:
    """Every figure of :data:`DISTRIBUTIONS` that has data; returns ``(path, title)`` pairs.

    Datasets in another length unit than the majority (pixel units when no pixel size was known) are left
    out of the size figures, and the title says how many.
    """
    out = Path(out_dir)
    figures = []
    units = [row.get("grain.unit") for row in table.rows if row.get("state") == "done" and row.get("grain.unit")]
    main_unit = max(set(units), key=units.count) if units else None
    for column, title, stem in DISTRIBUTIONS:
        values = _numbers(table, column)
        if column in ("grain.equivalent_sphere_diameter", "grain.feret_max") and main_unit is not None:
            keep = [
                float(r[column])
                for r in table.rows
                if r.get("grain.unit") == main_unit and r.get("state") == "done" and r.get(column) is not None
            ]
            if len(keep) < len(values):
                title = f"{title} ({len(values) - len(keep)} dataset(s) in other units left out)"
            values = keep
        if not values:
            continue
        figures.append((distribution_figure(values, title, _axis_label(column, table), out / f"{stem}.png"), title))
    return figures


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def build_html(table: ResultsTable, figures: Sequence[tuple[Path, str]], info: Mapping[str, Any]) -> str:
    """``batch_report.html``: counts, the main columns of the table, failures and the figures (embedded)."""
    from topograph.report.html import image_data_uri

    counts: dict[str, int] = {}
    for row in table.rows:
        key = f"{row.get('state')} ({row.get('action')})"
        counts[key] = counts.get(key, 0) + 1
    cols = [c for c in SUMMARY_COLUMNS if c in table.columns]
    head = "".join(f"<th>{html.escape(_axis_label(c, table))}</th>" for c in cols)
    body = "".join(
        f"<tr class='{html.escape(str(row.get('state')))}'>"
        + "".join(
            f"<td><a href='../{html.escape(str(row['dataset']))}/'>{_cell(row['dataset'])}</a></td>"
            if c == "dataset"
            else f"<td>{_cell(row.get(c))}</td>"
            for c in cols
        )
        + "</tr>"
        for row in table.rows
    )
    figs = []
    for path, title in figures:
        uri, note = image_data_uri(path)
        src = uri or html.escape(path.name)
        figs.append(
            f"<figure><img src='{src}' alt='{html.escape(title)}'><figcaption>{html.escape(path.name)}"
            f"{' — ' + html.escape(note) if note else ''}</figcaption></figure>"
        )
    info_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in info.items())
    count_text = ", ".join(f"{n} {html.escape(k)}" for k, n in sorted(counts.items()))
    no_figs = "<p>No dataset has grain metrics (the dense stage did not run or every dataset failed).</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>topograph batch report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; max-width: 28em; }}
tr.failed td {{ background: #fbe3e3; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>topograph batch report</h1>
<p>{len(table.rows)} datasets: {count_text}. Every column is in <a href="../batch_results.csv">batch_results.csv</a>
(and batch_results.parquet); each dataset's files are in its own folder.</p>
<table>{info_rows}</table>
<h2>Datasets</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Distributions</h2>
{"".join(figs) or no_figs}
</body></html>
"""


def write_batch_report(out_root: str | Path, table: ResultsTable, info: Mapping[str, Any]) -> Path:
    """Draw the figures into ``OUT/batch_report/`` and write ``OUT/batch_report/batch_report.html``."""
    report_dir = Path(out_root) / REPORT_DIR
    report_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_distributions(table, report_dir)
    path = report_dir / REPORT_HTML
    write_text(path, build_html(table, figures, info))
    log.info("batch report: %s", path)
    return path
