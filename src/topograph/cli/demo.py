"""``topograph demo sem|meso``: generate a small dataset, reconstruct it, evaluate it against its truth."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from topograph.errors import TopographError

console = Console(stderr=True)


def demo_sem(out: Path, size: int, seed: int) -> dict:
    """Render a grain tilt series (FEI-style TIFFs), run the full SEM pipeline, evaluate the dense cloud."""
    from topograph.analysis.evaluate_sem import evaluate_cloud
    from topograph.progress import StageLine
    from topograph.sem.pipeline import run_sem
    from topograph.synth.sem import GrainSpec, load_sem_truth, render_sem_series, save_sem_dataset

    with console.status("rendering a grain tilt series (0/5/10°)"):
        ds = render_sem_series(GrainSpec(seed=seed), tilts_deg=(0.0, 5.0, 10.0), image_size=(size, size), seed=seed)
        data = save_sem_dataset(ds, out / "data")
    with console.status("reconstructing") as status:
        run = run_sem(
            [data],
            out / "result",
            command=f"topograph sem {data} -o {out / 'result'}",
            progress=StageLine(status.update),
        )
    truth = load_sem_truth(data)
    with console.status("evaluating against the ground truth"):
        res = evaluate_cloud(
            run.dense.cloud.xyz,
            truth.surface_points(),
            truth.distance_to_surface,
            specimen_size=truth.grain_diameter_um,
            mode="rigid",
            allow_mirror=False,
            visible_truth_points=truth.visible_surface_points(run.dense.reference_view, stride=2, grain_only=True),
            point_groups={"grain": lambda p: truth.height_at(p[:, 0], p[:, 1]) > 0.02 * truth.grain_height_um},
        )
    grain = res["groups"]["grain"]
    rows = {
        "recovered tilts (true 0/5/10°)": ", ".join(f"{t:+.2f}°" for t in run.reconstruction.tilts_deg),
        "dense points on the grain": f"{grain['n']:,}",
        "RMS distance to the true surface": f"{grain['rms_distance']:.3f} µm ({grain['rms_distance_pct']:.3f} % of D)",
        "median distance": f"{grain['median_distance']:.3f} µm ({grain['median_distance_pct']:.3f} % of D)",
        "coverage of the visible grain": f"{100 * res['completeness']:.1f} %",
        "volume (closed on the substrate)": f"{run.dense.metrics.volume:.0f} µm³ "
        f"(true {truth.true_volume_um3:.0f} µm³)",
        "time": f"{run.timings_s['total']:.1f} s",
    }
    return {"rows": rows, "report": out / "result" / "report.html", "result": out / "result", "data": data}


def demo_meso(out: Path, size: int, seed: int, quick: bool = False) -> dict:
    """Render a cut-cards phone sequence, run the mesoscopic engine, evaluate the heights (Table-1 protocol)."""
    module = importlib.import_module("topograph.meso.demo")
    return module.run_demo(out, size=size, seed=seed, console=console, quick=quick)


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        engine: str = typer.Argument("sem", help="sem or meso"),
        out: Path = typer.Option(Path("topograph-demo"), "--out", "-o", help="Folder for the data and the results."),
        size: int = typer.Option(0, "--size", help="Image size in px (0: the engine's default)."),
        seed: int = typer.Option(0, "--seed", help="Random seed of the generated dataset."),
        quick: bool = typer.Option(False, "--quick", help="meso: 6 images and the fast preset (a smoke test)."),
    ) -> None:
        """Generate a small dataset, reconstruct it, evaluate it against its exact truth, show the report path."""
        if engine == "sem":
            result = demo_sem(out / "sem", size or 600, seed)
        elif engine == "meso":
            result = demo_meso(out / "meso", size, seed, quick)
        else:
            raise TopographError(f"unknown engine '{engine}'", "use: topograph demo sem, or topograph demo meso")
        table = Table(title=f"topograph demo {engine}", title_justify="left", show_header=False)
        for k, v in result["rows"].items():
            table.add_row(k, v)
        console.print(table)
        console.print(f"report: [bold]{result['report']}[/] (open it in a browser)")
