"""Run folders that appear complete or not at all.

A run writes into a hidden staging folder beside ``OUT``; only when it finishes are the files moved into
``OUT`` (each with an atomic rename). A run that fails leaves ``OUT`` as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from topograph.errors import TopographError


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder; on success move its content into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TopographError(f"output path {out} exists and is not a folder", "choose another -o/--out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted(stage.rglob("*")):
            rel = src.relative_to(stage)
            dst = out / rel
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
