"""Turn the tutorial scripts of this folder into Jupyter notebooks (and check that they are in sync).

The scripts are the source: plain Python in the "percent" cell format (as jupytext reads it). A line
``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell whose lines are comments (``# text``).
Every notebook is written without outputs, with deterministic cell ids, so regenerating it from an
unchanged script gives the same file byte for byte.

Usage::

    python examples/make_notebooks.py            # (re)write examples/*.ipynb from examples/*_tutorial.py
    python examples/make_notebooks.py --check    # exit 1 when a notebook differs from its script
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT_GLOB = "*_tutorial.py"
CELL_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
NOTEBOOK_METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python", "pygments_lexer": "ipython3"},
}


@dataclass(frozen=True)
class Cell:
    """One notebook cell: ``kind`` is "code" or "markdown"; ``source`` its text without trailing newline."""

    kind: str
    source: str


def _trim(lines: list[str]) -> list[str]:
    """Drop blank lines at both ends."""
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _uncomment(line: str) -> str:
    """A markdown line stored as a comment: ``# text`` → ``text``, ``#`` → empty."""
    if line.startswith("# "):
        return line[2:]
    if line.rstrip() == "#":
        return ""
    raise ValueError(f"a markdown cell line must start with '# ': {line!r}")


def parse_cells(script: str) -> list[Cell]:
    """Split a percent-format script into cells.

    Text before the first ``# %%`` marker is not allowed (it would be lost in the notebook): the
    scripts start with a markdown cell. Empty cells are dropped.

    Args:
        script: the script's text.

    Returns:
        The cells in order.

    Raises:
        ValueError: text before the first marker, or a markdown line that is not a comment.
    """
    cells: list[Cell] = []
    kind: str | None = None
    lines: list[str] = []

    def flush() -> None:
        body = _trim(list(lines))
        if kind is None:
            if body:
                raise ValueError("the script must start with a '# %%' cell marker")
            return
        if kind == "markdown":
            body = [_uncomment(line) for line in body]
        if body:
            cells.append(Cell(kind, "\n".join(body)))

    for line in script.splitlines():
        m = CELL_MARKER.match(line)
        if m:
            flush()
            kind = "markdown" if "[markdown]" in m.group("rest") else "code"
            lines = []
        else:
            lines.append(line)
    flush()
    return cells


def _source_lines(text: str) -> list[str]:
    """Notebook JSON stores a cell's source as a list of lines, each but the last ending in a newline."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def notebook_json(script: str, stem: str) -> str:
    """The notebook (nbformat 4.5, no outputs) of a percent-format script, as JSON text.

    Args:
        script: the script's text.
        stem: the file stem, used to build stable cell ids (``<stem>-00``, ``<stem>-01`` ...).

    Returns:
        The notebook file's text (one-space indent, trailing newline).
    """
    cells = []
    for k, cell in enumerate(parse_cells(script)):
        entry: dict[str, object] = {
            "cell_type": cell.kind,
            "id": f"{stem.replace('_', '-')}-{k:02d}",
            "metadata": {},
            "source": _source_lines(cell.source),
        }
        if cell.kind == "code":
            entry["execution_count"] = None
            entry["outputs"] = []
        cells.append(entry)
    doc = {"cells": cells, "metadata": NOTEBOOK_METADATA, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def notebook_path(script_path: Path) -> Path:
    """``x_tutorial.py`` → ``x_tutorial.ipynb`` beside it."""
    return script_path.with_suffix(".ipynb")


def scripts(folder: Path = HERE) -> list[Path]:
    """The tutorial scripts of ``folder``, sorted by name."""
    return sorted(folder.glob(SCRIPT_GLOB))


def out_of_sync(folder: Path = HERE) -> list[Path]:
    """Notebooks that are missing or differ from what their script generates."""
    stale = []
    for py in scripts(folder):
        nb = notebook_path(py)
        want = notebook_json(py.read_text(encoding="utf-8"), py.stem)
        if not nb.is_file() or nb.read_text(encoding="utf-8") != want:
            stale.append(nb)
    return stale


def write_notebooks(folder: Path = HERE) -> list[Path]:
    """Regenerate every notebook of ``folder`` (each written via a temp file + rename)."""
    written = []
    for py in scripts(folder):
        nb = notebook_path(py)
        tmp = nb.with_name(f".{nb.name}.tmp")
        tmp.write_text(notebook_json(py.read_text(encoding="utf-8"), py.stem), encoding="utf-8")
        tmp.replace(nb)
        written.append(nb)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a notebook is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = out_of_sync()
        for nb in stale:
            print(f"out of sync: {nb.name} (run python examples/make_notebooks.py)", file=sys.stderr)
        return 1 if stale else 0
    for nb in write_notebooks():
        print(f"wrote {nb.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
