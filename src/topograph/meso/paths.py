"""The photos of a sequence from what the user gave: files as given, a folder expanded to its images.

No torch here: the CLI checks the input before the engine (and PyTorch) is imported.
"""

from __future__ import annotations

from pathlib import Path

from topograph.errors import TopographError

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def expand_images(items: list[Path]) -> list[Path]:
    """Files as given; a folder expands to its images sorted by name. Each file's declared size is checked
    from its header (an image of 50 000 × 50 000 px is refused before anything decodes it)."""
    from topograph.io.images import check_declared_size

    out: list[Path] = []
    for item in items:
        if not item.exists() and not item.is_symlink():
            raise TopographError(f"input path does not exist: {item}", "check the spelling and the current directory")
        if item.is_symlink() and not item.exists():
            raise TopographError(
                f"{item} is a link to a missing file", "restore the file it points to, or leave it out"
            )
        if item.is_dir():
            dangling = sorted(p for p in item.iterdir() if p.is_symlink() and not p.exists())
            if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in dangling):
                raise TopographError(
                    f"{dangling[0]} is a link to a missing file", "restore the file it points to, or remove the link"
                )
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise TopographError(
                    f"no JPEG/PNG/TIFF images in folder {item}", "pass the image files or a folder with them"
                )
            out.extend(found)
        else:
            out.append(item)
    for path in out:
        if path.is_file():
            check_declared_size(path)
    return out
