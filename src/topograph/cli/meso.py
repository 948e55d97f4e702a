"""``topograph meso``: stitch a phone sequence into an orthomosaic and a height map."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from topograph.cli.console import err_console
from topograph.config import apply_overrides, from_yaml
from topograph.errors import EXIT_QUALITY, TopographError
from topograph.meso.paths import expand_images

console = err_console


def check_scale_and_threads(cfg) -> None:  # noqa: ANN001 - MesoConfig, imported lazily
    """Values that would fail only after minutes of compute (or never): checked before the run starts."""
    sc = cfg.scale
    for key, value, example in (
        ("--focal-mm (scale.focal_mm)", sc.focal_mm, "--focal-mm 4.2"),
        ("--pixel-pitch-um (scale.pixel_pitch_um)", sc.pixel_pitch_um, "--pixel-pitch-um 1.4"),
        ("--magnification (scale.magnification)", sc.magnification, "--magnification 0.07"),
        ("--scale-distance-mm (scale.scale_distance_mm)", sc.scale_distance_mm, "--scale-distance-mm 10"),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise TopographError(f"{key} must be a positive number, got {value:g}", f"e.g. {example}")
    if sc.scale_points is not None and len(sc.scale_points) == 4:
        x1, y1, x2, y2 = sc.scale_points
        if not all(math.isfinite(v) for v in sc.scale_points):
            raise TopographError(f"--scale-points must be finite, got {list(sc.scale_points)}", "e.g. 10,20,400,20")
        if math.hypot(x2 - x1, y2 - y1) < 1.0:
            raise TopographError(
                f"the two scale points ({x1:g}, {y1:g}) and ({x2:g}, {y2:g}) are less than 1 px apart",
                "give two distinct points a known distance apart, e.g. --scale-points 10,20,400,20",
            )
    if sc.reference_image < 0:
        raise TopographError(f"--reference-image must be >= 0, got {sc.reference_image}", "e.g. --reference-image 0")
    if cfg.threads < 0:
        raise TopographError(f"--threads must be >= 0 (0 = all cores), got {cfg.threads}", "e.g. --threads 2")


def parse_points(text: str | None) -> list[float] | None:
    """``"x1,y1,x2,y2"`` -> four floats (clear error otherwise)."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise TopographError(
            f"--scale-points must be four numbers, got '{text}'", "e.g. --scale-points 10,20,400,20"
        ) from exc
    if len(vals) != 4:
        raise TopographError(f"--scale-points needs four numbers x1,y1,x2,y2, got {len(vals)}", "e.g. 10,20,400,20")
    return vals


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise TopographError(f"--set needs KEY=VALUE, got '{item}'", "e.g. --set loss.tv_weight=1e-4")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_regularizer(text: str | None) -> str | None:
    """``--regularizer``: ``cnn`` or ``tv`` (case-insensitive)."""
    if text is None:
        return None
    value = text.strip().lower()
    if value not in ("cnn", "tv"):
        raise TopographError(f"--regularizer must be cnn or tv, got '{text}'", "e.g. --regularizer tv")
    return value


def parse_cnn(text: str | None) -> list[int] | None:
    """``--cnn 16,16,16,32,32`` -> filter counts of the CNN's down blocks (clear error otherwise)."""
    if text is None:
        return None
    from topograph.meso.models.cnn import parse_filters

    try:
        return list(parse_filters(text))
    except ValueError as exc:
        raise TopographError(
            f"--cnn needs positive integer filter counts, got '{text}'", "e.g. --cnn 16,16,16,32,32"
        ) from exc


def check_non_negative(value: float | None, flag: str, example: str) -> float | None:
    """``value`` if it is None or >= 0, else a one-line error naming ``flag``."""
    if value is not None and value < 0:
        raise TopographError(f"{flag} must be >= 0, got {value:g}", f"e.g. {flag} {example}")
    return value


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("meso")
    def meso_command(
        images: list[Path] = typer.Argument(..., help="Overlapping phone images in acquisition order, or a folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        config: Path | None = typer.Option(
            None, "--config", help="YAML configuration (see `topograph config show meso`)."
        ),
        preset: str = typer.Option(
            "default", "--preset", help="default, or fast (fewer iterations: about half the time)."
        ),
        focal_mm: float | None = typer.Option(None, "--focal-mm", help="Effective focal length in mm (default: EXIF)."),
        pixel_pitch_um: float | None = typer.Option(
            None, "--pixel-pitch-um", help="Sensor pixel pitch in µm (default: EXIF)."
        ),
        magnification: float | None = typer.Option(
            None, "--magnification", help="Magnification of the reference image."
        ),
        scale_points: str | None = typer.Option(None, "--scale-points", help="x1,y1,x2,y2 in the reference image ..."),
        scale_distance_mm: float | None = typer.Option(
            None, "--scale-distance-mm", help="... and their distance in mm."
        ),
        reference_image: int | None = typer.Option(None, "--reference-image", help="Index of the reference image (0)."),
        gsd_um: float | None = typer.Option(
            None, "--gsd-um", help="Mosaic/height-map pixel in µm (needs the scale; default: native GSD)."
        ),
        regularizer: str | None = typer.Option(
            None, "--regularizer", help="Height maps: cnn (default, untrained CNN prior) or tv (total variation)."
        ),
        cnn: str | None = typer.Option(
            None, "--cnn", help="Filters of the CNN's down blocks, e.g. 16,16,16,32,32 (the default)."
        ),
        tv_weight: float | None = typer.Option(None, "--tv-weight", help="Total-variation weight (with tv; 2e-5)."),
        batch_size: int | None = typer.Option(
            None, "--batch-size", help="Images per step (0 = automatic from the memory budget; default)."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Continue an interrupted run from OUT/checkpoint.pt (same images and options)."
        ),
        distortion: str | None = typer.Option(None, "--distortion", help="piecewise (default), poly or none."),
        init: str | None = typer.Option(
            None,
            "--init",
            help="Initial positions: auto (default), zero, xcorr or features (SIFT: also rotated photos).",
        ),
        rectification: str | None = typer.Option(None, "--rectification", help="ortho (default) or reference (Eq. 6)."),
        device: str | None = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
        threads: int | None = typer.Option(None, "--threads", help="CPU threads (0 = all cores)."),
        seed: int | None = typer.Option(None, "--seed", help="Random seed."),
        sets: list[str] | None = typer.Option(
            None, "--set", help="Any config key: --set loss.tv_weight=1e-4 (repeatable)."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    ) -> None:
        """Jointly register, stitch and rectify the images: orthomosaic, height map (µm), mesh, cameras."""
        from topograph.meso.config import MesoConfig, preset_config
        from topograph.meso.pipeline import run_meso
        from topograph.meso.progress import NullProgress, RichProgress
        from topograph.progress import NoSteps, reporting

        cfg = from_yaml(MesoConfig, config) if config else preset_config(preset)
        cfg = apply_overrides(
            cfg,
            {
                "scale.focal_mm": focal_mm,
                "scale.pixel_pitch_um": pixel_pitch_um,
                "scale.magnification": magnification,
                "scale.scale_points": parse_points(scale_points),
                "scale.scale_distance_mm": scale_distance_mm,
                "scale.reference_image": reference_image,
                "output.gsd_um": check_non_negative(gsd_um, "--gsd-um", "20"),
                "heights.model": parse_regularizer(regularizer),
                "heights.cnn_filters": parse_cnn(cnn),
                "loss.tv_weight": check_non_negative(tv_weight, "--tv-weight", "2e-5"),
                "batching.batch_size": check_non_negative(batch_size, "--batch-size", "6"),
                "distortion.model": distortion,
                "init.method": init,
                "model.rectification": rectification,
                "device": device,
                "threads": threads,
                "seed": seed,
                **parse_sets(sets),
            },
        )
        check_scale_and_threads(cfg)
        paths = expand_images(images)
        if cfg.scale.reference_image >= len(paths):
            raise TopographError(
                f"--reference-image {cfg.scale.reference_image} does not exist ({len(paths)} images)",
                f"use 0 … {len(paths) - 1}",
            )
        sink = NullProgress() if no_progress else RichProgress(console)
        with reporting(NoSteps() if no_progress else sink):  # the flow-match steps on the same bars
            rec, files = run_meso(
                paths,
                out,
                cfg,
                sink,
                command=shlex.join(["topograph", *sys.argv[1:]]),
                resume=resume,
            )
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
        for w in rec.checks.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        if rec.quality.status == "failed":  # written because checks.gates=mark: usable for diagnosis only
            for gate in rec.quality.failed:
                console.print(f"[bold red]failed:[/] {gate.line()}", highlight=False)
            console.print(f"[bold red]FAILED[/] (result written for diagnosis, marked failed) → {out}")
            raise typer.Exit(EXIT_QUALITY)
        console.print(f"[green]done[/] in {rec.timings.get('total_s', 0.0):.1f} s → {out} ({len(files)} files)")
