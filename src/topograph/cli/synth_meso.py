"""``topograph synth meso``: render a phone sequence with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from topograph.errors import TopographError


def _pair(text: str, what: str, example: str, minimum: int) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError as exc:
        raise TopographError(f"{what} must look like {example}, got '{text}'", f"e.g. {what} {example}") from exc
    if a < minimum or b < minimum:
        raise TopographError(f"{what} is too small: {text}", f"use e.g. {example}")
    return a, b


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @synth_app.command("meso")
    def synth_meso(
        out: Path = typer.Argument(..., help="Output folder (images/ and truth/)."),
        scene: str = typer.Option("cut_cards", "--scene", help="cut_cards, relief or dome."),
        size: str = typer.Option("1000x750", "--size", help="Image size WIDTHxHEIGHT."),
        raster: str = typer.Option("5x3", "--raster", help="Columns x rows of the freehand path."),
        distortion_scale: float = typer.Option(1.0, "--distortion-scale", help="0 = distortion-free camera."),
        jpeg_quality: int = typer.Option(92, "--jpeg-quality", help="JPEG quality (1-100)."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
    ) -> None:
        """Render a cut-cards (or smooth-relief) phone sequence with its ground truth (docs/ground-truth.md)."""
        from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset

        if scene not in ("cut_cards", "relief", "dome"):
            raise TopographError(f"unknown scene '{scene}'", "use cut_cards, relief or dome")
        if not 1 <= jpeg_quality <= 100:
            raise TopographError(f"--jpeg-quality must be 1..100, got {jpeg_quality}", "e.g. 92")
        cfg = MesoSynthConfig(
            scene=scene,  # type: ignore[arg-type]
            image_size=_pair(size, "--size", "1000x750", 32),
            raster=_pair(raster, "--raster", "5x3", 1),
            distortion_scale=distortion_scale,
            jpeg_quality=jpeg_quality,
            seed=seed,
        )
        data = render_meso_sequence(cfg)
        write_meso_dataset(data, out)
        t = data.truth
        typer.echo(
            f"wrote {len(data.names)} images to {out / 'images'} and the truth to {out / 'truth'}; "
            f"GSD {t.gsd_mm * 1000:.1f} µm, magnification of image 0 {t.magnifications[0]:.5f}, "
            f"pixel pitch {t.pixel_pitch_mm * 1000:.2f} µm"
        )
