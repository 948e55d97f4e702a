"""``topograph meso``: stitch a phone sequence into an orthomosaic and a height map."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from topograph.cli.console import err_console
from topograph.cli.options import with_config_options
from topograph.config import apply_overrides, from_yaml
from topograph.errors import EXIT_QUALITY, TopographError
from topograph.meso.paths import expand_images
from topograph.options import MESO, parse_sets

console = err_console


def check_scale_points(cfg) -> None:  # noqa: ANN001 - MesoConfig, imported lazily
    """Two scale points less than a pixel apart would fail only after minutes of compute: checked first."""
    sp = cfg.scale.scale_points
    if sp is not None and len(sp) == 4:
        x1, y1, x2, y2 = sp
        if math.hypot(x2 - x1, y2 - y1) < 1.0:
            raise TopographError(
                f"the two scale points ({x1:g}, {y1:g}) and ({x2:g}, {y2:g}) are less than 1 px apart",
                "give two distinct points a known distance apart, e.g. --scale-points 10,20,400,20",
            )


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("meso")
    @with_config_options(MESO)
    def meso_command(
        images: list[Path] = typer.Argument(..., help="Overlapping phone images in acquisition order, or a folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        config: Path | None = typer.Option(
            None, "--config", help="YAML configuration (see `topograph config show meso`)."
        ),
        preset: str = typer.Option(
            "default", "--preset", help="default, or fast (fewer iterations: about half the time)."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Continue an interrupted run from OUT/checkpoint.pt (same images and options)."
        ),
        sets: list[str] | None = typer.Option(
            None, "--set", help="Any config key: --set loss.tv_weight=1e-4 (repeatable)."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        config_overrides: dict | None = None,
    ) -> None:
        """Jointly register, stitch and rectify the images: orthomosaic, height map (µm), mesh, cameras."""
        from topograph.meso.config import MesoConfig, preset_config
        from topograph.meso.pipeline import run_meso
        from topograph.progress import NoSteps, reporting

        cfg = from_yaml(MesoConfig, config) if config else preset_config(preset)
        cfg = apply_overrides(cfg, {**(config_overrides or {}), **parse_sets(sets)})
        MESO.check_values(cfg)  # values from --config / --set, checked as their flags are
        check_scale_points(cfg)
        paths = expand_images(images)
        if cfg.scale.reference_image >= len(paths):
            raise TopographError(
                f"--reference-image {cfg.scale.reference_image} does not exist ({len(paths)} images)",
                f"use 0 … {len(paths) - 1}",
            )
        with reporting(NoSteps() if no_progress else None):  # None: the CLI's display, rounds with their loss
            run = run_meso(paths, out, cfg, command=shlex.join(["topograph", *sys.argv[1:]]), resume=resume)
        rec = run.reconstruction
        table = Table(title="Cameras", title_justify="left")
        for col in ("#", "image", "x", "y", "height", "tilt °", "angle °"):
            table.add_column(col, justify="right")
        cams = rec.cameras
        k = cams.mm_per_unit or 1.0
        unit = "mm" if cams.mm_per_unit else "px"
        for i, name in enumerate(cams.names):
            tilt = float(abs(complex(*cams.tilts[i])))
            z = cams.heights_mm[i] if cams.mm_per_unit else cams.heights[i]
            table.add_row(
                str(i),
                name,
                f"{cams.positions[i, 0] * k:.3f}",
                f"{cams.positions[i, 1] * k:.3f}",
                f"{z:.3f}",
                f"{__import__('math').degrees(tilt):.2f}",
                f"{cams.angles_deg[i]:+.2f}",
            )
        console.print(table)
        console.print(
            f"positions and heights in {unit}; mosaic {rec.height.shape[1]}x{rec.height.shape[0]} px"
            + (f" at {rec.pixel_size_mm * 1000:.1f} µm/px" if rec.pixel_size_mm else " (no absolute scale)")
        )
        for w in run.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        if run.status == "failed":  # written because checks.gates=mark: usable for diagnosis only
            for gate in rec.quality.failed:
                console.print(f"[bold red]failed:[/] {gate.line()}", highlight=False)
            console.print(f"[bold red]FAILED[/] (result written for diagnosis, marked failed) → {out}")
            raise typer.Exit(EXIT_QUALITY)
        console.print(f"[green]done[/] in {run.timings_s.get('total', 0.0):.1f} s → {out} ({len(run.files)} files)")
