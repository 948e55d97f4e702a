"""The mesoscopic pipeline as one function: images on disk -> reconstruction -> files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from topograph.io.staging import output_transaction
from topograph.meso.config import MesoConfig
from topograph.meso.data import load_images
from topograph.meso.outputs import write_inputs, write_outputs
from topograph.meso.paths import expand_images
from topograph.meso.progress import ProgressSink
from topograph.meso.reconstruct import MesoReconstruction, reconstruct

log = logging.getLogger("topograph")


def run_meso(
    paths: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    cfg: MesoConfig | None = None,
    progress: ProgressSink | None = None,
    command: str | None = None,
    resume: bool = False,
) -> tuple[MesoReconstruction, dict[str, Path]]:
    """Reconstruct a phone sequence and write the orthomosaic, height map, mesh, cameras and figures.

    Args:
        paths: the images, in acquisition order, or one folder (its images sorted by name).
        out_dir: output folder (created).
        cfg: configuration (defaults when None).
        progress: optional progress sink (e.g. :class:`topograph.meso.progress.RichProgress`).
        command: the command line, saved in summary.json and the report for reproducibility.
        resume: continue an interrupted run from ``out_dir/checkpoint.pt`` (same images and settings).

    ``out_dir`` is checked and locked before any compute and replaced as a whole when everything,
    ``report.html`` included, was written (:func:`topograph.io.staging.output_transaction`).

    Returns:
        The reconstruction and the written files by name.

    Raises:
        TopographError: unreadable or inconsistent input, missing focal length, no overlap.
    """
    if isinstance(paths, (str, Path)):
        paths = expand_images([Path(paths)])  # one folder (or file), not a sequence of its characters
    out = Path(out_dir)
    # The folder is checked and locked before any compute; the checkpoint lives in OUT itself (so an
    # interrupted run can resume), every other file is staged and OUT replaced as a whole at the end.
    with output_transaction(out, paths) as stage:
        images = load_images(paths)
        rec = reconstruct(images, cfg, progress, checkpoint=out / "checkpoint.pt", resume=resume)
        staged = write_outputs(rec, stage, command)
        write_inputs(images, stage)
        from topograph.report.html import write_report

        staged["report_html"] = write_report(stage)
    files = {name: out / path.relative_to(stage) for name, path in staged.items()}
    log.info("wrote %d files to %s (report: %s)", len(files), out, files["report_html"])
    return rec, files
