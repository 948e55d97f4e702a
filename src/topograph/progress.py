"""Progress of long steps, shown by whoever runs the engines (the CLI's bar with ETA) or by nobody.

One protocol for both engines, :class:`StepReporter`: stages (open-ended work) and counted steps (a loop
with a known length, optionally with the current loss of an optimisation). The engines mark their long
loops with :func:`steps` (``for pair in steps(pairs, "dense matching")``) and their stages with
:func:`stage`. Nothing is shown unless a caller installed a reporter with :func:`reporting` (or passed
``progress=`` to ``run_sem`` / ``run_meso``) — the CLI does, with :class:`RichSteps` (stage name, bar,
done/total, loss, elapsed time and ETA on stderr). The reporter lives in a context variable, so library
callers, tests and Dask workers see no output and pay nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class StepReporter(Protocol):
    """Receives stages (open-ended work) and counted steps (work with a known total)."""

    def stage(self, name: str) -> None:
        """A new stage starts (the previous one is done)."""

    def begin(self, description: str, total: int) -> None:
        """Counted work of ``total`` steps starts."""

    def step(self, loss: float | None = None) -> None:
        """One step of the counted work is done (``loss``: the optimised value after it, if any)."""

    def end(self) -> None:
        """The counted work is over."""


_REPORTER: contextvars.ContextVar[StepReporter | None] = contextvars.ContextVar("topograph_progress", default=None)


@contextlib.contextmanager
def reporting(reporter: StepReporter | None) -> Iterator[StepReporter | None]:
    """Send the progress of the engines run inside this block to ``reporter`` (None: keep the active one)."""
    if reporter is None:
        yield current()
        return
    token = _REPORTER.set(reporter)
    try:
        yield reporter
    finally:
        _REPORTER.reset(token)


def current() -> StepReporter | None:
    """The active reporter, or None."""
    return _REPORTER.get()


def stage(name: str) -> None:
    """Announce a stage to the active reporter (no-op without one)."""
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.stage(name)


def steps(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items``, reporting each as one step of ``description`` (``total`` defaults to ``len(items)``)."""
    reporter = _REPORTER.get()
    if reporter is None:
        yield from items
        return
    if total is None:
        total = len(items) if isinstance(items, Sized) else 0
    reporter.begin(description, total)
    try:
        for item in items:
            yield item
            reporter.step()
    finally:
        reporter.end()


@contextlib.contextmanager
def counted(description: str, total: int) -> Iterator[Callable[[float | None], None]]:
    """Counted work of ``total`` steps whose steps are reported by calling the yielded function (with the
    loss after the step, if any), e.g. an optimiser's per-step callback; a no-op without a reporter."""
    reporter = _REPORTER.get()
    if reporter is None:
        yield lambda loss=None: None
        return
    reporter.begin(description, total)
    try:
        yield reporter.step
    finally:
        reporter.end()


class NoSteps:
    """A reporter that shows nothing (e.g. ``--no-progress`` inside the CLI's display)."""

    def stage(self, name: str) -> None:
        return None

    def begin(self, description: str, total: int) -> None:
        return None

    def step(self, loss: float | None = None) -> None:
        return None

    def end(self) -> None:
        return None


class StageLine(NoSteps):
    """A reporter that shows only the name of the current stage, through ``show`` (e.g. a rich status line's
    ``update``)."""

    def __init__(self, show: Callable[[str], object]) -> None:
        self.show = show

    def stage(self, name: str) -> None:
        self.show(f"[bold]{name}[/]")


class RichSteps:
    """A rich progress display on stderr: the current stage with its elapsed time, and a bar with ETA for
    counted work. ``start``/``stop`` bracket the display (the CLI opens it around one command)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,  # pipes and log files get the log lines, not a redrawn display
        )
        self._stage: Any = None
        self._task: Any = None
        self._done = 0
        self._started = False

    def start(self) -> None:
        """Open the display (also done by the first stage or counted work)."""
        if not self._started:
            self.progress.start()
            self._started = True

    def stop(self, clear: bool = False) -> None:
        """Close the display (a no-op when nothing was shown); ``clear`` erases it (e.g. before an error)."""
        self._close_stage()
        if self._started:
            if clear:
                self.progress.live.transient = True
            self.progress.stop()
            self._started = False

    def _close_stage(self) -> None:
        if self._stage is not None:
            self.progress.update(self._stage, total=1, completed=1)
            self._stage = None

    def stage(self, name: str) -> None:
        self.start()
        self._close_stage()
        self._stage = self.progress.add_task(name, total=None, loss="")

    def begin(self, description: str, total: int) -> None:
        self.start()
        self._done = 0
        self._task = self.progress.add_task(f"  {description}", total=total or None, loss="")

    def step(self, loss: float | None = None) -> None:
        if self._task is not None:
            self._done += 1
            shown = f"loss {loss:.3e}" if loss is not None and loss == loss else ""  # NaN: none
            self.progress.update(self._task, advance=1, loss=shown)

    def end(self) -> None:
        if self._task is not None:
            self.progress.update(self._task, total=self._done or 1, completed=self._done or 1)
            self._task = None
