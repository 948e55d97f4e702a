"""The mesoscopic pipeline as one function: images on disk -> reconstruction -> files."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from topograph.io.staging import output_transaction
from topograph.meso.config import MesoConfig
from topograph.meso.data import load_images
from topograph.meso.outputs import write_inputs, write_outputs
from topograph.meso.paths import expand_images
from topograph.meso.reconstruct import MesoReconstruction, reconstruct
from topograph.progress import StepReporter, reporting, stage

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class MesoRun:
    """Everything a mesoscopic run produced, built once when its files are written.

    The fields every engine's run record has (:class:`topograph.run_record.RunRecord`): ``engine``,
    ``out_dir``, ``command``, ``config``, ``status``, ``warnings``, ``timings_s`` and ``summary``.
    """

    reconstruction: MesoReconstruction
    """Mosaic, height map, cameras, the optimised model and the quality gates."""
    files: Mapping[str, Path]
    """The written files by name (``report_html``, ``height_tiff`` ...), in ``out_dir``."""
    out_dir: Path
    config: MesoConfig
    command: str | None
    timings_s: Mapping[str, float]
    """Seconds per stage (``checks_init``, ``round_<name>``, ``mosaic`` ...) and ``total``."""
    warnings: tuple[str, ...]
    status: Literal["ok", "failed"]
    """``failed`` when a quality gate failed and the result was written for diagnosis (``checks.gates: mark``)."""
    engine: Literal["meso"] = "meso"

    @functools.cached_property
    def summary(self) -> dict[str, object]:
        """The run's summary.json."""
        return json.loads((self.out_dir / "summary.json").read_text(encoding="utf-8"))


def run_meso(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    cfg: MesoConfig | None = None,
    *,
    command: str | None = None,
    progress: StepReporter | None = None,
    resume: bool = False,
) -> MesoRun:
    """Reconstruct a phone sequence and write the orthomosaic, height map, mesh, cameras and figures.

    Args:
        inputs: the images, in acquisition order, or one folder (its images sorted by name).
        out_dir: output folder (created).
        cfg: configuration (defaults when None).
        command: the command line, saved in summary.json and the report for reproducibility.
        progress: receives the optimisation rounds (one counted step per iteration, with its loss) and the
            other counted work (default: the reporter installed with :func:`topograph.progress.reporting`).
        resume: continue an interrupted run from ``out_dir/checkpoint.pt`` (same images and settings).

    ``out_dir`` is checked and locked before any compute and replaced as a whole when everything,
    ``report.html`` included, was written (:func:`topograph.io.staging.output_transaction`).

    Returns:
        The :class:`MesoRun`: the reconstruction and the written files.

    Raises:
        TopographError: unreadable or inconsistent input, missing focal length, no overlap.
    """
    paths = expand_images([Path(inputs)]) if isinstance(inputs, (str, Path)) else list(inputs)  # a folder
    out = Path(out_dir)
    cfg = cfg or MesoConfig()
    # The folder is checked and locked before any compute; the checkpoint lives in OUT itself (so an
    # interrupted run can resume), every other file is staged and OUT replaced as a whole at the end.
    with reporting(progress), output_transaction(out, paths) as staging:
        images = load_images(paths)
        rec = reconstruct(images, cfg, checkpoint=out / "checkpoint.pt", resume=resume)
        stage("write outputs")
        staged = write_outputs(rec, staging, command)
        write_inputs(images, staging)
        from topograph.report.html import write_report

        stage("write report")
        staged["report_html"] = write_report(staging)
    files = {name: out / path.relative_to(staging) for name, path in staged.items()}
    log.info("wrote %d files to %s (report: %s)", len(files), out, files["report_html"])
    return MesoRun(
        reconstruction=rec,
        files=files,
        out_dir=out,
        config=rec.config,
        command=command,
        timings_s=MappingProxyType(rec.timings),
        warnings=tuple(rec.checks.warnings),
        status="failed" if rec.quality.status == "failed" else "ok",
    )
