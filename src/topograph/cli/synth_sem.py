"""``topograph synth sem``: render an SEM tilt series of a random grain with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from topograph.errors import TopographError


def parse_tilts(text: str) -> list[float]:
    """``"0,5,10"`` → ``[0.0, 5.0, 10.0]``; a clear error names the option."""
    try:
        tilts = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise TopographError(
            f"--tilts must be numbers separated by commas, got '{text}'", "e.g. --tilts 0,5,10"
        ) from exc
    if not tilts:
        raise TopographError("--tilts is empty", "e.g. --tilts 0,5,10")
    return tilts


def parse_size(text: str) -> tuple[int, int]:
    """``"800"`` → (800, 800); ``"1024x768"`` (width × height) → (768, 1024) as (H, W)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError as exc:
        raise TopographError(f"--size must be N or WxH in pixels, got '{text}'", "e.g. --size 800") from exc
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[1], vals[0]
    raise TopographError(f"--size must be N or WxH in pixels, got '{text}'", "e.g. --size 1024x768")


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    """Add ``topograph synth sem`` to ``synth_app``."""

    @synth_app.command("sem")
    def synth_sem(
        out: Path = typer.Argument(..., help="Output folder (images + truth/)."),
        tilts: str = typer.Option("0,5,10", "--tilts", help="Stage tilts in degrees, one per view."),
        tilt_axis_deg: float = typer.Option(
            0.0, "--tilt-axis-deg", help="Tilt-axis direction in the image, ° counter-clockwise from x as displayed."
        ),
        size: str = typer.Option("800", "--size", help="Image size in px: N (square) or WxH."),
        seed: int = typer.Option(0, "--seed", help="Seed of the grain shape and texture."),
        noise_seed: int = typer.Option(0, "--noise-seed", help="Seed of the image noise."),
        noise: float = typer.Option(0.02, "--noise", help="Noise σ at mid-grey (0 = none)."),
        pixel_size_um: float | None = typer.Option(
            None, "--pixel-size-um", help="Pixel size in µm (default: the grain fills ~60 % of the field)."
        ),
        diameter_um: float = typer.Option(40.0, "--diameter-um", help="Nominal grain diameter, µm."),
        no_metadata: bool = typer.Option(False, "--no-metadata", help="Write plain 8-bit PNGs without metadata."),
    ) -> None:
        """Render a synthetic SEM tilt series of one grain, with its exact 3-D ground truth."""
        from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

        ds = render_sem_series(
            GrainSpec(seed=seed, diameter_um=diameter_um),
            tilts_deg=parse_tilts(tilts),
            tilt_axis_deg=tilt_axis_deg,
            image_size=parse_size(size),
            pixel_size_um=pixel_size_um,
            noise=noise,
            seed=noise_seed,
        )
        save_sem_dataset(ds, out, with_metadata=not no_metadata)
        typer.echo(
            f"{len(ds.images)} views → {out}  (pixel {ds.pixel_size_um:.4g} µm, grain {ds.grain_diameter_um:.1f} µm "
            f"equivalent diameter, volume {ds.true_volume_um3:.1f} µm³; truth in {Path(out) / 'truth'})"
        )
