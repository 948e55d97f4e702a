"""The ``topograph`` command line (typer + rich).

Each engine adds its commands from its own module (``register(app, synth_app)``); this module only
builds the app and turns :class:`~topograph.errors.TopographError` into one line and a non-zero exit.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from topograph.errors import TopographError

app = typer.Typer(
    name="topograph",
    help="Measured 3D from close-range images: SEM tilt series and mesoscopic phone photogrammetry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Generate datasets with exact ground truth.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")

err_console = Console(stderr=True)

# Modules that add commands; each defines ``register(app, synth_app)``.
_COMMAND_MODULES: list[str] = [
    "sem",
    "config",
    "analyze",
    "report",
    "synth_sem",
    "batch",
    "eval",
    "meso",
    "synth_meso",
    "demo",
]


@app.callback()
def _global_options(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print warnings and errors."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    level = "WARNING" if quiet else log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise TopographError(f"unknown log level '{log_level}'", "use DEBUG, INFO, WARNING or ERROR")
    logger = logging.getLogger("topograph")
    logger.handlers.clear()
    logger.addHandler(RichHandler(console=err_console, show_path=False, show_time=False, markup=False))
    logger.setLevel(level)
    logger.propagate = False


for _name in _COMMAND_MODULES:
    importlib.import_module(f"topograph.cli.{_name}").register(app, synth_app)


def main() -> None:
    """Console entry point: run the app; user errors print one line and exit with status 2."""
    try:
        app()
    except TopographError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM during a run (topograph.io.staging.Interrupted)
        _interrupted(exc)
    except SystemExit as exc:  # typer turns KeyboardInterrupt into a silent exit 130: say it once
        interrupt = _interrupt_in_chain(exc)
        if interrupt is None:
            raise
        _interrupted(interrupt)
    except OSError as exc:  # a file-system failure outside the checked paths: one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        fix = _OS_FIXES.get(exc.errno or 0, "check the path and the disk, then rerun")
        err_console.print(
            f"[bold red]error:[/] {exc.strerror or exc}{where} — {fix}", highlight=False, markup=True, soft_wrap=True
        )
        sys.exit(2)


_OS_FIXES = {
    errno.EACCES: "make the file or folder readable / writable for you (ls -l shows who owns it), or use a copy",
    errno.EPERM: "make the file or folder readable / writable for you (ls -l shows who owns it), or use a copy",
    errno.EROFS: "the disk is read-only: write the results to another folder with -o",
    errno.ENOSPC: "free some disk space or write the results to another disk with -o",
    errno.ENOENT: "check the spelling of the path and the current folder",
}


def _interrupt_in_chain(exc: BaseException) -> KeyboardInterrupt | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _interrupted(exc: KeyboardInterrupt) -> None:
    err_console.print("[bold red]interrupted[/] (the output folder is unchanged)")
    sys.exit(128 + getattr(exc, "signum", 2))
