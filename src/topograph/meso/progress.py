"""Progress reporting for the optimisation rounds (a rich progress bar showing the loss, or nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console


class ProgressSink(Protocol):
    """Receives the start of each round and one update per iteration."""

    def start(self, name: str, total: int) -> None: ...

    def update(self, loss: float) -> None: ...

    def stop(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, name: str, total: int) -> None:
        return None

    def update(self, loss: float) -> None:
        return None

    def stop(self) -> None:
        return None


class RichProgress:
    """A rich progress bar per round on stderr, with the current loss and the ETA (also a
    :class:`topograph.progress.StepReporter` for counted steps between the rounds)."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: int | None = None
        self._started = False

    def start(self, name: str, total: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._task = self._progress.add_task(name, total=total, loss="-")

    def update(self, loss: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.3e}" if loss == loss else "-")  # NaN: none

    def stop(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False

    # topograph.progress.StepReporter: counted steps outside the rounds (e.g. the flow matches) on the same
    # display, with their ETA.
    def stage(self, name: str) -> None:
        return None

    def begin(self, description: str, total: int) -> None:
        self.start(description, total)

    def step(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1)

    def end(self) -> None:
        self._task = None
