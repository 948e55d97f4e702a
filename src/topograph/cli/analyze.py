"""``topograph analyze``: grain shape metrics of a mesh or point cloud, areal parameters of a height map."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from topograph.errors import TopographError

log = logging.getLogger("topograph")

HEIGHT_MAP_SUFFIXES = (".tif", ".tiff")


def read_height_map(path: Path, pixel_size_um: float | None) -> tuple[Any, float, str, str]:
    """Read a float height-map TIFF.

    The pixel size is ``pixel_size_um`` when given (it overrides the file), else the ``pixel_size_um`` key
    of a JSON ImageDescription; the height unit is its ``height_unit`` / ``unit`` key (default "um").

    Returns:
        (height (H, W) float64, pixel size µm, height unit, where the pixel size came from).

    Raises:
        TopographError: missing/unreadable file, not a single 2-D map, or no pixel size.
    """
    import numpy as np
    import tifffile

    if not path.is_file():
        raise TopographError(f"file not found: {path}", "check the path")
    try:
        with tifffile.TiffFile(str(path)) as tif:
            height = tif.pages[0].asarray()
            descriptions = [t.value for t in tif.pages[0].tags.values() if t.code == 270]
    except Exception as exc:
        raise TopographError(f"cannot read height map {path}: {exc}", "give a float32 TIFF height map") from exc
    height = np.squeeze(np.asarray(height, dtype=float))
    if height.ndim != 2:
        raise TopographError(f"{path.name} is not a single 2-D height map (shape {height.shape})", "give one map")
    meta: dict[str, Any] = {}
    for text in descriptions:
        try:
            parsed = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(parsed, dict):
            meta.update(parsed)
    unit = str(meta.get("height_unit", meta.get("unit", "um")))
    if meta.get("pixel_size_um") is not None and pixel_size_um is None:
        return height, float(meta["pixel_size_um"]), unit, "file description"
    if pixel_size_um is None:
        raise TopographError(
            f"{path.name} does not record its pixel size", "pass --pixel-size-um (lateral size of one pixel in µm)"
        )
    return height, float(pixel_size_um), unit, "--pixel-size-um"


def _one_row_table(title: str, columns: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header, _ in columns:
        table.add_column(header, justify="right")
    table.add_row(*[value for _, value in columns])
    return table


def analyze_geometry(
    path: Path,
    close: str | None,
    unit: str | None,
    grid_step: float | None,
    base_level: str,
    substrate_tol: float | None,
) -> tuple[Any, dict[str, Any]]:
    """Load a mesh or cloud, close it if needed and measure it. Returns (GrainMetrics, JSON section)."""
    from topograph.analysis.grain import grain_metrics
    from topograph.analysis.mesh import CLOSURES, read_geometry, solid_from_cloud, solid_from_open_mesh

    if close is not None and close not in CLOSURES:
        raise TopographError(f"unknown --close '{close}'", f"use one of: {', '.join(CLOSURES)}")
    mesh, cloud, file_unit = read_geometry(path)
    if unit is None:
        unit = file_unit or "um"
        if file_unit is None:
            log.warning("%s does not record its length unit; assuming µm (override with --unit)", path.name)
    notes: list[str] = []
    closure = "none"
    if cloud is not None:
        closure = close or "base"
        mesh, notes = solid_from_cloud(
            cloud, grid_step, closure=closure, base_level=base_level, substrate_tol=substrate_tol, unit=unit
        )
        kind = "point cloud"
    else:
        kind = "mesh"
        if close is not None:
            if mesh.is_watertight:
                notes.append(f"the mesh is already closed; --close {close} was not applied")
            else:
                closure = close
                mesh, notes = solid_from_open_mesh(mesh, closure=close, base_level=base_level, unit=unit)
    metrics = grain_metrics(mesh, unit=unit, closure=closure)
    return metrics, {"kind": kind, "notes": notes, "grain": metrics.to_dict()}


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze(
        path: Path | None = typer.Argument(
            None, help="Mesh (PLY/STL/OBJ), point cloud (PLY without faces) or height map (float32 TIFF)."
        ),
        close: str | None = typer.Option(
            None, "--close", help="Close an open surface into a solid: 'base' (flat base) or 'mirrored'."
        ),
        json_out: Path | None = typer.Option(None, "--json", help="Write all results to this JSON file."),
        height_map: Path | None = typer.Option(
            None, "--height-map", help="Also compute ISO 25178 areal parameters of this float32 TIFF height map."
        ),
        pixel_size_um: float | None = typer.Option(
            None,
            "--pixel-size-um",
            help="Pixel size of the height map in µm (overrides the value recorded in the TIFF).",
        ),
        form: str = typer.Option(
            "plane", "--form", help="Form removed before areal parameters: plane|poly2|poly3|none."
        ),
        unit: str | None = typer.Option(
            None, "--unit", help="Length unit of the mesh/cloud when the file does not say (default um)."
        ),
        grid_step: float | None = typer.Option(
            None, "--grid-step", help="Cell size for meshing a point cloud (default: ~4 points per cell)."
        ),
        base_level: str = typer.Option(
            "rim", "--base-level", help="Substrate level for closure: 'rim' (median rim height) or 'lowest'."
        ),
        substrate_tol: float | None = typer.Option(
            None,
            "--substrate-tol",
            help="Height above the substrate level that still counts as substrate (cloud; default 3 × rim noise).",
        ),
    ) -> None:
        """Measure a grain (volume, area, sphericity, L/I/S, Feret, convexity) or a surface (Sa, Sq, Sz ...)."""
        from topograph.analysis.surface import areal_parameters
        from topograph.io.atomic import write_json

        if path is None and height_map is None:
            raise TopographError("nothing to analyze", "give a mesh, point cloud or height map (or --height-map)")
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the one-row tables into 80 columns
            console = Console(width=200)
        result: dict[str, Any] = {}
        maps: list[Path] = []
        if path is not None and path.suffix.lower() in HEIGHT_MAP_SUFFIXES:
            if height_map is not None:
                raise TopographError("two height maps given (PATH and --height-map)", "analyze one height map per run")
            maps.append(path)
        elif path is not None:
            metrics, section = analyze_geometry(path, close, unit, grid_step, base_level, substrate_tol)
            result.update({"input": str(path), **section})
            console.print(_one_row_table(f"Grain metrics — {path.name} ({section['kind']})", metrics.columns()))
            if metrics.relies_on_underside:
                console.print(f"* depends on the modelled underside (closure: {metrics.closure})")
            for note in section["notes"]:
                console.print(f"• {note}")
        if height_map is not None:
            maps.append(height_map)
        for hm_path in maps:
            height, pixel, hunit, source = read_height_map(hm_path, pixel_size_um)
            params = areal_parameters(height, pixel, form=form, unit=hunit)
            result["surface"] = {
                "input": str(hm_path),
                "pixel_size_um": pixel,
                "pixel_size_from": source,
                **params.to_dict(),
            }
            console.print(_one_row_table(f"Areal parameters — {hm_path.name} (form removed: {form})", params.columns()))
            console.print("• Sz = Sp + Sv (highest peak to lowest valley); Sv is reported as a positive depth")
        if json_out is not None:
            write_json(json_out, result)
            console.print(f"wrote {json_out}")
