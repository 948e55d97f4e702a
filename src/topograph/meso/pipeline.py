"""The mesoscopic pipeline as one function: images on disk -> reconstruction -> files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from topograph.meso.config import MesoConfig
from topograph.meso.data import load_images
from topograph.meso.outputs import write_outputs
from topograph.meso.progress import ProgressSink
from topograph.meso.reconstruct import MesoReconstruction, reconstruct

log = logging.getLogger("topograph")


def run_meso(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    cfg: MesoConfig | None = None,
    progress: ProgressSink | None = None,
) -> tuple[MesoReconstruction, dict[str, Path]]:
    """Reconstruct a phone sequence and write the orthomosaic, height map, mesh, cameras and figures.

    Args:
        paths: the images, in acquisition order.
        out_dir: output folder (created).
        cfg: configuration (defaults when None).
        progress: optional progress sink (e.g. :class:`topograph.meso.progress.RichProgress`).

    Returns:
        The reconstruction and the written files by name.

    Raises:
        TopographError: unreadable or inconsistent input, missing focal length, no overlap.
    """
    images = load_images(paths)
    rec = reconstruct(images, cfg, progress)
    files = write_outputs(rec, out_dir)
    log.info("wrote %d files to %s", len(files), out_dir)
    return rec, files
