"""``topograph report RUN_DIR``: rebuild the self-contained HTML report of a run folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    """Add the ``report`` command to ``app`` (``synth_app`` is unused)."""

    @app.command("report")
    def report_command(
        run_dir: Path = typer.Argument(..., help="Output folder of a `topograph sem` or `topograph meso` run."),
    ) -> None:
        """Rebuild RUN_DIR/report.html from the files the run saved (no network needed to open it)."""
        from topograph.report.html import check_run_dir, write_report

        path = write_report(check_run_dir(run_dir, require_summary=True))
        console.print(f"[green]report[/] → {path}")
