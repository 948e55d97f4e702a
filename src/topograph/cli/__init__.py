"""The ``topograph`` command line (typer + rich).

Each engine adds its commands from its own module (``register(app, synth_app)``); this module builds the
app and owns the habits every command shares:

* ``--version``; shell completion (``--install-completion`` / ``--show-completion``);
* exit status by kind of failure (see :mod:`topograph.errors`): 0 success, 1 internal error,
  2 usage error, 3 input error, 4 quality failure (``--strict``), 130 interrupted;
* the result path alone on stdout, everything else (log, progress, tables) on stderr;
* the log of a run kept with it as ``OUT/log.txt``.
"""

from __future__ import annotations

import errno
import functools
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.logging import RichHandler
from rich.markup import escape

from topograph import __version__
from topograph.cli.console import err_console
from topograph.errors import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_QUALITY,
    EXIT_USAGE,
    TopographError,
)
from topograph.hints import cli_active, enter_cli, leave
from topograph.progress import RichSteps, reporting

app = typer.Typer(
    name="topograph",
    help=(
        "Measured 3D from close-range images: SEM tilt series and mesoscopic phone photogrammetry.\n\n"
        "Exit status: 0 success, 2 usage error, 3 input error, 4 quality failure (--strict), 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Generate datasets with exact ground truth.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


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
# Commands whose ``--out`` is a folder of results: its path goes to stdout and the log to OUT/log.txt.
_RUN_COMMANDS = {"sem", "meso", "demo", "batch", "report", "synth sem", "synth meso"}
LOG_NAME = "log.txt"


class RunLog(logging.Handler):
    """Collects the formatted log of one command (for ``OUT/log.txt``) and counts its warnings."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.n_warnings = 0
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.n_warnings += 1
        self.lines.append(self.format(record))


class _State:
    """What the current invocation learnt: its run folder and the --strict flag."""

    run_dir: Path | None = None
    interrupt: KeyboardInterrupt | None = None
    strict: bool = False
    run_log: RunLog | None = None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"topograph {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print warnings and errors."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    strict: bool = typer.Option(
        False, "--strict", help="Exit with status 4 when the run logged a quality warning (its files are kept)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    level = "WARNING" if quiet else log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"unknown log level '{log_level}': use DEBUG, INFO, WARNING or ERROR")
    logger = logging.getLogger("topograph")
    logger.handlers.clear()
    console_handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    console_handler.setLevel(level)
    logger.addHandler(console_handler)
    _State.run_log = RunLog()
    logger.addHandler(_State.run_log)  # the file log keeps INFO even with --quiet
    logger.setLevel(logging.DEBUG if level == "DEBUG" else logging.INFO)
    logger.propagate = False
    _State.strict = strict
    # Messages keep their --flags for every command of this app, also when it runs in-process (CliRunner).
    token = enter_cli()
    ctx.call_on_close(lambda: leave(token))


def _track_run_folder(callback: Any) -> Any:
    """Wrap a command so that its ``out`` argument is remembered as the run folder."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out", kwargs.get("run_dir"))
        _State.run_dir = Path(out) if out is not None else None
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt as exc:  # typer turns it into a bare exit code 130: keep which signal it was
            _State.interrupt = exc
            raise

    return wrapper


for _name in _COMMAND_MODULES:
    importlib.import_module(f"topograph.cli.{_name}").register(app, synth_app)

for _typer, _prefix in ((app, ""), (synth_app, "synth ")):
    for _info in _typer.registered_commands:
        _cmd_name = _info.name or (_info.callback.__name__ if _info.callback else "")
        if _info.callback is not None and _prefix + _cmd_name in _RUN_COMMANDS:
            _info.callback = _track_run_folder(_info.callback)


def result_path(out: Path) -> Path:
    """The path printed on stdout for a run folder: its ``report.html`` (a batch's ``batch_report.html``; a demo's
    one or two levels down), else the folder."""
    for name in ("report.html", "batch_report.html"):
        if (out / name).is_file():
            return out.resolve() / name
    reports = sorted(out.glob("*/*/report.html")) + sorted(out.glob("*/report.html"))
    return reports[0].resolve() if reports else out.resolve()


def _keep_log(out: Path, run_log: RunLog) -> None:
    """Append this command's log to ``OUT/log.txt`` (the run folder keeps the history of its runs)."""
    try:
        with open(out / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(f"# topograph {__version__}: {' '.join(['topograph', *sys.argv[1:]])}\n")
            f.write("\n".join(run_log.lines) + "\n")
    except OSError as exc:
        err_console.print(f"[yellow]warning:[/] could not write {out / LOG_NAME}: {exc}")


def _click_exceptions() -> tuple[tuple[type[BaseException], ...], ...]:
    """(exit, abort, usage-error) exception types of the click that typer runs on, without needing the separate
    ``click`` package (typer >= 0.20 vendors its own; older typer depends on click)."""
    exits: list[type[BaseException]] = [typer.Exit]
    aborts: list[type[BaseException]] = [typer.Abort]
    errors: list[type[BaseException]] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    try:
        import click
    except ImportError:
        click = None
    if click is not None:
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
        errors.append(click.ClickException)
    try:
        from typer import _click
    except ImportError:
        _click = None
    if _click is not None:
        errors.append(_click.ClickException)
    return tuple(exits), tuple(aborts), tuple(errors)


_EXIT, _ABORT, _CLICK_ERRORS = _click_exceptions()


def run(args: list[str] | None = None) -> int:
    """Run the command line on ``args`` (default ``sys.argv[1:]``) and return the exit status."""
    _State.run_dir = None
    _State.run_log = None
    _State.interrupt = None
    _State.strict = False
    try:
        steps = RichSteps(err_console)  # progress of long steps with ETA, opened by the first one
        try:
            with cli_active(), reporting(steps):
                code = app(args=args, prog_name="topograph", standalone_mode=False)
        except BaseException:
            steps.stop(clear=True)  # the error line, not a half-filled display, is the last thing shown
            raise
        steps.stop()
        code = code if isinstance(code, int) else EXIT_OK
        if code == EXIT_INTERRUPTED or _State.interrupt is not None:  # standalone_mode=False returns Exit(130)
            return _interrupted(_State.interrupt or KeyboardInterrupt())
    except _EXIT as exc:  # --version, --help, completion
        return int(getattr(exc, "exit_code", EXIT_OK) or EXIT_OK)
    except _ABORT as exc:  # Ctrl-C / SIGTERM (click turns KeyboardInterrupt into Abort)
        return _interrupted(exc)
    except _CLICK_ERRORS as exc:  # usage errors found by the option parser
        exc.show()
        return int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except TopographError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        from topograph.errors import OptionalDependencyError

        err = OptionalDependencyError("torch", "the meso engine", extra="meso")
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return err.exit_code
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM during a run (topograph.io.staging.Interrupted)
        return _interrupted(exc)
    except OSError as exc:  # a file-system failure outside the checked paths: one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        fix = _OS_FIXES.get(exc.errno or 0, "check the path and the disk, then rerun")
        err_console.print(f"[bold red]error:[/] {escape(f'{exc.strerror or exc}{where} — {fix}')}", soft_wrap=True)
        return EXIT_INPUT
    out = _State.run_dir
    if code == EXIT_OK and out is not None and out.is_dir():
        if _State.run_log is not None:
            _keep_log(out, _State.run_log)
        print(result_path(out), flush=True)
        if _State.strict and _State.run_log is not None and _State.run_log.n_warnings:
            err_console.print(f"[bold red]quality:[/] {_State.run_log.n_warnings} warning(s) and --strict: exit 4")
            return EXIT_QUALITY
    return code


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


def _interrupted(exc: BaseException) -> int:
    """One line for Ctrl-C / SIGTERM; the status is 128 + the signal number (130 for Ctrl-C)."""
    err_console.print("[bold red]interrupted[/] (the output folder is unchanged)")
    signum = getattr(_interrupt_in_chain(exc), "signum", None)
    return EXIT_INTERRUPTED if signum is None else 128 + int(signum)


def main() -> None:
    """Console entry point: exit with the status of :func:`run` (internal errors keep their traceback)."""
    try:
        sys.exit(run())
    except SystemExit:
        raise
    except Exception:
        import traceback

        traceback.print_exc()
        err_console.print("[bold red]internal error[/] (a bug): please report it with the traceback above")
        sys.exit(EXIT_INTERNAL)
