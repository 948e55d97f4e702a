"""One fingerprint for everything that decides whether work can be reused.

:func:`digest` is the SHA-256 of a tree of values: configuration dataclasses (by their fields), numpy arrays
(shape, dtype and bytes), file contents (:class:`FileContent`), paths, mappings (by sorted key), sequences and
JSON scalars. The stage cache of a run folder, a batch's skip-if-done test and the series of an SEM run all
use it, so two equal inputs have one fingerprint whoever asks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileContent:
    """A file that enters a fingerprint by its bytes, not its path (moving it keeps the fingerprint)."""

    path: Path


def digest(*parts: Any) -> str:
    """SHA-256 (64 hex characters) of ``parts`` (see the module docstring for what each kind contributes)."""
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content (hex)."""
    return digest(FileContent(Path(path)))


def _feed(h: Any, obj: Any) -> None:
    # Each kind is tagged so that, e.g., the string "1" and the number 1 differ.
    if isinstance(obj, FileContent):
        h.update(b"F")
        with open(obj.path, "rb") as fh:
            while block := fh.read(_CHUNK):
                h.update(block)
    elif isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        h.update(b"A" + json.dumps([list(arr.shape), arr.dtype.str]).encode())
        h.update(arr.data if arr.dtype != object else repr(arr.tolist()).encode())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(b"D")
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for key in sorted(obj, key=str):
            _feed(h, str(key))
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, bytes):
        h.update(b"B" + str(len(obj)).encode() + b":" + obj)
    else:
        if isinstance(obj, Path):
            obj = str(obj)
        elif isinstance(obj, np.generic):
            obj = obj.item()
        h.update(b"J" + json.dumps(obj, default=str).encode() + b";")
