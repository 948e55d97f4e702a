"""``topograph batch``: many datasets in one run, on a local Dask cluster or an existing scheduler."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from topograph.errors import EXIT_INPUT, TopographError


def batch_defaults(
    config: Path | None,
    sets: list[str],
    tilts: str | None,
    tilt_axis_deg: float | None,
    pixel_size_um: float | None,
    sparse_only: bool,
) -> dict[str, Any]:
    """Options given on the command line for every dataset (a manifest's own values win)."""
    from topograph.batch.engines import parse_overrides

    overrides: dict[str, Any] = {}
    for item in sets:
        overrides.update(parse_overrides(item, "--set"))
    defaults: dict[str, Any] = {
        "config": str(config.resolve()) if config else None,
        "tilts_deg": tilts,
        "tilt_axis_deg": tilt_axis_deg,
        "pixel_size_um": pixel_size_um,
        "sparse_only": True if sparse_only else None,  # an option of the SEM table (topograph.options)
        "set": overrides or None,
    }
    return {k: v for k, v in defaults.items() if v is not None}


def _results_table(results: list[Any]) -> Table:
    table = Table(title="Datasets", title_justify="left")
    for col in ("dataset", "engine", "state", "", "time s", "error"):
        table.add_column(col)
    for r in results:
        colour = "green" if r.state == "done" else "red"
        table.add_row(
            r.name,
            r.engine or "?",
            f"[{colour}]{r.state}[/]",
            r.action,
            f"{r.wall_s:.1f}" if r.wall_s is not None else "",
            (r.error or "")[:200],
        )
    return table


_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def check_cluster_options(workers: int | None, threads_per_worker: int, memory_limit: str) -> None:
    """Worker counts and the memory limit, checked before any worker starts."""
    if workers is not None and workers < 1:
        raise TopographError(f"--workers must be at least 1, got {workers}", "e.g. --workers 2")
    if threads_per_worker < 1:
        raise TopographError(f"--threads-per-worker must be at least 1, got {threads_per_worker}", "e.g. 1")
    if memory_limit.strip().lower() not in ("auto", "none", "0") and not _MEMORY.match(memory_limit):
        raise TopographError(
            f"--memory-limit must be auto, none or a size, got '{memory_limit}'", "e.g. --memory-limit 4GB"
        )


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("batch")
    def batch_command(
        manifest: Path | None = typer.Argument(
            None, help="Manifest (.csv or .yaml) listing the datasets, their engine and options (docs/batch.md)."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Batch output folder: OUT/<dataset>/, table and report."),
        glob_pattern: str | None = typer.Option(
            None, "--glob", help="Instead of a manifest: one dataset per matching folder, e.g. 'grains/*/' (quoted)."
        ),
        engine: str | None = typer.Option(
            None, "--engine", help="Engine of datasets that do not name one: sem, meso, or auto (detect from files)."
        ),
        workers: int | None = typer.Option(
            None, "--workers", "-w", help="Local worker processes (default: number of CPU cores)."
        ),
        threads_per_worker: int = typer.Option(1, "--threads-per-worker", help="Datasets a worker runs at once."),
        memory_limit: str = typer.Option(
            "auto", "--memory-limit", help="Memory per local worker: auto (machine memory / workers), 4GB, or none."
        ),
        scheduler: str | None = typer.Option(
            None, "--scheduler", help="Use a running Dask scheduler (tcp://host:8786 or a scheduler file)."
        ),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed datasets again."),
        force: bool = typer.Option(False, "--force", help="Run every dataset again, also those already done."),
        config: Path | None = typer.Option(None, "--config", help="Engine configuration YAML for every dataset."),
        sets: list[str] = typer.Option(
            [], "--set", help="Configuration override for every dataset, key=value (repeatable): dense.enabled=false."
        ),
        tilts: str | None = typer.Option(None, "--tilts", help="SEM: stage tilts for every dataset: 0,5,10."),
        tilt_axis_deg: float | None = typer.Option(None, "--tilt-axis-deg", help="SEM: tilt-axis direction, deg."),
        pixel_size_um: float | None = typer.Option(None, "--pixel-size-um", help="SEM: pixel size in µm."),
        sparse_only: bool = typer.Option(False, "--sparse-only", help="SEM: stop after the sparse reconstruction."),
    ) -> None:
        """Process many datasets (one Dask task each); skip those already done; write a table and a report.

        Exit status 1 when any dataset failed (its error is in OUT/<dataset>/status.json and the table).
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from topograph.batch import ClusterOptions, datasets_from_glob, read_manifest, run_batch
        from topograph.cli import err_console

        check_cluster_options(workers, threads_per_worker, memory_limit)
        if (manifest is None) == (glob_pattern is None):
            raise TopographError("give either a MANIFEST or --glob", "e.g. topograph batch --glob 'grains/*/' -o OUT")
        if retry_failed and force:
            raise TopographError("--retry-failed and --force exclude each other", "--force already re-runs everything")
        defaults = batch_defaults(config, sets, tilts, tilt_axis_deg, pixel_size_um, sparse_only)
        if engine and engine.lower() != "auto":
            defaults["engine"] = engine.lower()
        if manifest is not None:
            specs = read_manifest(manifest, defaults)
        else:
            specs = datasets_from_glob(glob_pattern, engine, {k: v for k, v in defaults.items() if k != "engine"})
        cluster = ClusterOptions(
            workers=workers or os.cpu_count() or 1,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            scheduler=scheduler,
        )
        mode = "force" if force else "retry_failed" if retry_failed else "normal"
        columns = (
            TextColumn("[bold]batch[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        counts = {"done": 0, "failed": 0, "skipped": 0}
        with Progress(*columns, console=err_console, transient=False) as progress:
            bar = progress.add_task("batch", total=len(specs), status="starting workers")

            def on_result(result: Any) -> None:
                counts["skipped" if result.action == "skipped" else result.state] += 1
                done, failed, skipped = counts["done"], counts["failed"], counts["skipped"]
                status = f"[green]{done} done[/] [red]{failed} failed[/] {skipped} skipped — last: {result.name}"
                progress.update(bar, advance=1, status=status)

            result = run_batch(
                specs,
                out,
                cluster,
                mode=mode,
                command=shlex.join(["topograph", *sys.argv[1:]]),
                on_result=on_result,
            )
        err_console.print(_results_table(result.results))
        c = result.counts
        err_console.print(
            f"{c['done']} done, {c['failed']} failed ({c['ran']} run, {c['skipped']} skipped) in {result.wall_s:.1f} s"
            f" → {result.csv_path}, {result.report_path}"
        )
        if c["failed"]:
            err_console.print("[red]some datasets failed[/]: fix them and re-run with --retry-failed")
            raise typer.Exit(EXIT_INPUT)  # 3: some datasets could not give a result (topograph.errors)
