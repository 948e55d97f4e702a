"""``topograph sem``: reconstruct an SEM tilt series."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from topograph.cli.console import err_console
from topograph.cli.options import with_config_options
from topograph.config import apply_overrides, from_yaml
from topograph.errors import EXIT_QUALITY, TopographError
from topograph.options import SEM, parse_sets
from topograph.sem.config import SemConfig

console = err_console


def parse_float_list(text: str | None, what: str) -> list[float] | None:
    """Parse ``"0,5,10"`` into floats; a clear error names the option."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise TopographError(
            f"{what} must be numbers separated by commas, got '{text}'", "e.g. --tilts 0,5,10"
        ) from exc


def load_sem_config(config: Path | None) -> SemConfig:
    return from_yaml(SemConfig, config) if config else SemConfig()


def print_series_table(rows: list[dict]) -> None:
    table = Table(title="Input series", title_justify="left")
    for col in ("#", "image", "size", "tilt °", "pixel µm", "WD mm", "focus", "vendor", "from"):
        table.add_column(col)
    for k, r in enumerate(rows):
        table.add_row(
            str(k),
            str(r.get("name")),
            str(r.get("size")),
            _fmt(r.get("tilt_deg")),
            _fmt(r.get("pixel_size_um"), 5),
            _fmt(r.get("working_distance_mm")),
            _fmt(r.get("sharpness"), 2),
            str(r.get("vendor") or "—"),
            str(r.get("source") or "—"),
        )
    console.print(table)


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def print_camera_table(run) -> None:  # noqa: ANN001 - SemRun, imported lazily
    recon = run.reconstruction
    unit = "px/µm" if run.unit == "um" else "px/px"
    table = Table(title=f"Cameras ({recon.camera_source})", title_justify="left")
    for col in ("#", "image", "rel. tilt ° (after BA)", f"scale {unit}", "RMS before BA px", "RMS after BA px"):
        table.add_column(col, justify="right")
    err = run.tilt_uncertainty.uncertainty_deg if run.tilt_uncertainty is not None else None
    for f, im in enumerate(run.images.images):
        table.add_row(
            str(f),
            im.name,
            f"{recon.tilts_deg[f]:+.3f}" + (f" ± {err[f]:.2f}" if err is not None and f > 0 else ""),
            f"{recon.cameras[f].scale:.5f}",
            f"{recon.rms_px_before[f]:.3f}",
            f"{recon.rms_px_after[f]:.3f}",
        )
    console.print(table)
    console.print(f"tilt axis in the image: {run.cameras.tilt_axis_deg:.2f}° from the x axis")
    for note in recon.notes:
        console.print(f"• {note}")


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("sem")
    @with_config_options(SEM)
    def sem_command(
        images: list[Path] = typer.Argument(..., help="SEM images (TIFF/PNG/JPEG) or one folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        config: Path | None = typer.Option(
            None, "--config", help="YAML configuration (see `topograph config show sem`)."
        ),
        tilts: str | None = typer.Option(None, "--tilts", help="Stage tilts in degrees, one per image: 0,5,10."),
        tilt_axis_deg: float | None = typer.Option(
            None,
            "--tilt-axis-deg",
            help="Tilt-axis direction in the image, degrees from the x axis (default: estimated).",
        ),
        pixel_size_um: float | None = typer.Option(None, "--pixel-size-um", help="Pixel size in µm (output in µm)."),
        sidecar: Path | None = typer.Option(None, "--sidecar", help="YAML/JSON file with tilts / pixel size."),
        sets: list[str] | None = typer.Option(None, "--set", help="Any config key: --set dense.stride=2 (repeatable)."),
        no_cache: bool = typer.Option(
            False, "--no-cache", help="Recompute every stage (default: reuse OUT/cache when inputs and settings match)."
        ),
        config_overrides: dict | None = None,
    ) -> None:
        """Reconstruct a tilt series: cameras, sparse and dense clouds, height map, mesh and grain metrics."""
        from topograph.io.images import describe_series
        from topograph.io.sidecar import MetadataOverrides
        from topograph.sem.pipeline import command_line, run_sem

        cfg = apply_overrides(load_sem_config(config), {**(config_overrides or {}), **parse_sets(sets)})
        overrides = MetadataOverrides(
            tilts_deg=parse_float_list(tilts, "--tilts"), tilt_axis_deg=tilt_axis_deg, pixel_size_um=pixel_size_um
        )
        run = run_sem(
            images,
            out,
            cfg,
            overrides=overrides,
            sidecar=sidecar,
            command=command_line(),
            # Show what was parsed before the long work starts.
            on_loaded=lambda series: print_series_table(describe_series(series)),
            use_cache=not no_cache,
        )
        print_camera_table(run)
        if run.cached_stages:
            console.print(f"reused from {out / 'cache'}: {', '.join(run.cached_stages)} (use --no-cache to recompute)")
        if run.status == "failed":
            console.print(f"[red]failed[/]: {run.failure} (outputs for inspection in {out})")
            raise typer.Exit(EXIT_QUALITY)
        console.print(f"[green]done[/] in {run.timings_s['total']:.1f} s → {out}")
