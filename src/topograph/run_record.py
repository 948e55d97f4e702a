"""The shape every engine run returns.

``run_sem`` returns a :class:`topograph.sem.pipeline.SemRun`, ``run_meso`` a
:class:`topograph.meso.pipeline.MesoRun`: frozen records built once, when the run is done, holding the
engine's typed results plus the fields of :class:`RunRecord`. Both take the same kinds of arguments:
``(inputs, out_dir, cfg, *, command=..., progress=...)`` and their engine's own keywords.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol


class RunRecord(Protocol):
    """What a caller (the CLI, a batch, a notebook) can rely on in any engine's run."""

    @property
    def engine(self) -> str:
        """``sem``, ``meso`` or a plugin's name."""

    @property
    def out_dir(self) -> Path | None:
        """The output folder (None: the results were kept in memory)."""

    @property
    def command(self) -> str | None:
        """The command line saved with the results."""

    @property
    def status(self) -> Literal["ok", "failed"]:
        """``failed`` when the result is written for diagnosis only (the CLI exits with status 4)."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per quality problem found."""

    @property
    def timings_s(self) -> Mapping[str, float]:
        """Seconds per stage and ``total`` (the convention of :mod:`topograph.timing`)."""

    @property
    def summary(self) -> Mapping[str, object]:
        """The machine-readable summary (summary.json)."""
