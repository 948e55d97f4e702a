"""``topograph config show|init ENGINE``: print or write the full default configuration as commented YAML."""

from __future__ import annotations

from pathlib import Path

import typer

from topograph.config import to_commented_yaml
from topograph.errors import TopographError
from topograph.io.atomic import write_text
from topograph.options import default_config


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show or write the default configuration of an engine.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(engine: str = typer.Argument(..., help="sem or meso")) -> None:
        """Print the full default configuration of ENGINE as commented YAML."""
        typer.echo(to_commented_yaml(default_config(engine)), nl=False)

    @config_app.command("init")
    def init(
        engine: str = typer.Argument(..., help="sem or meso"),
        path: Path | None = typer.Argument(None, help="File to write (default: ENGINE.yaml)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    ) -> None:
        """Write the default configuration of ENGINE to a YAML file to edit and pass with --config."""
        target = path or Path(f"{engine}.yaml")
        if target.exists() and not force:
            raise TopographError(f"{target} already exists", "pass --force to overwrite it or choose another path")
        write_text(target, to_commented_yaml(default_config(engine)))
        typer.echo(f"wrote {target}")
