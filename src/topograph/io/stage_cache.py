"""Stage results cached in a run folder, keyed by a fingerprint of the inputs and settings.

A run saves the result of an expensive stage as ``OUT/cache/<stage>.npz`` together with the fingerprint
(:meth:`StageCache.key`) of everything that stage depends on (input file contents, the options of this
and every earlier stage, the topograph version). Re-running into the same folder with the same fingerprint
loads the result instead of recomputing it, so changing a late-stage option (say a dense-stage threshold) skips the
early stages. A different fingerprint, a damaged file or an unknown format simply means a cache miss.

The files hold only arrays and JSON (``numpy.load(..., allow_pickle=False)``): nothing in a run folder
can execute code when it is read back. Only frozen dataclasses defined in ``topograph`` are rebuilt.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from topograph import __version__
from topograph.fingerprint import digest
from topograph.io.atomic import atomic_path

log = logging.getLogger("topograph")

CACHE_DIR = "cache"
FORMAT = 1
"""Bumped whenever the encoding below changes: older files then miss."""


# --- encoding of dataclass trees into arrays + JSON -------------------------------------------------------


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays cannot be cached")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if not cls.__module__.startswith("topograph."):
            raise TypeError(f"{cls.__qualname__} is not a topograph dataclass")
        fields = {f.name: _encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj) if f.init}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(obj, Path):
        return {"__path__": str(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("only dicts with string keys can be cached")
        return {"__dict__": {k: _encode(v, arrays) for k, v in obj.items()}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot cache a {type(obj).__name__}")


def _resolve_class(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith("topograph."):
        raise ValueError(f"refusing to rebuild {name}")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"{name} is not a dataclass")
    return obj


def _decode(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    if "__dataclass__" in obj:
        cls = _resolve_class(obj["__dataclass__"])
        return cls(**{k: _decode(v, arrays) for k, v in obj["fields"].items()})
    if "__path__" in obj:
        return Path(obj["__path__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: _decode(v, arrays) for k, v in obj["__dict__"].items()}
    raise ValueError("unknown cache record")


class StageCache:
    """The ``cache/`` folder of a run: ``load(stage, fp)``, ``save(stage, fp, value)``, ``write(staging_dir)``.

    ``value`` is any tree of topograph dataclasses, tuples, lists, string-keyed dicts, numpy arrays and
    plain scalars. ``run_dir=None`` gives a cache that never hits and never writes (in-memory runs).
    """

    def __init__(self, run_dir: str | Path | None, enabled: bool = True) -> None:
        self.folder = Path(run_dir) / CACHE_DIR if run_dir is not None and enabled else None
        self.hits: list[str] = []
        self.misses: list[str] = []
        self.pending: dict[str, tuple[str, Any]] = {}

    @staticmethod
    def key(stage: str, *parts: Any) -> str:
        """Fingerprint of ``stage`` computed from ``parts`` (its inputs and settings), this topograph version
        and the cache format: 16 hex characters of :func:`topograph.fingerprint.digest`."""
        return digest(__version__, FORMAT, stage, *parts)[:16]

    def path(self, stage: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{stage}.npz"

    def load(self, stage: str, fp: str) -> Any | None:
        """The cached value of ``stage`` if its fingerprint is ``fp``, else None."""
        path = self.path(stage)
        if path is None or not path.is_file():
            self.misses.append(stage)
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"]))
                if meta.get("fingerprint") != fp or meta.get("format") != FORMAT:
                    self.misses.append(stage)
                    return None
                arrays = {k: data[k] for k in data.files if k != "__meta__"}
            value = _decode(meta["value"], arrays)
        except Exception as exc:  # a damaged or foreign file is a miss, never an error
            log.warning("ignoring unreadable cache file %s (%s)", path, exc)
            self.misses.append(stage)
            return None
        self.hits.append(stage)
        log.info("%s: reusing the cached result (same inputs and settings; %s)", stage, path)
        return value

    def save(self, stage: str, fp: str, value: Any) -> None:
        """Queue ``value`` for ``stage`` under ``fp``; :meth:`write` puts it in the run's (staging) folder.

        Results are written with the run's other outputs, so a run that fails leaves its folder as it was.
        """
        if self.folder is not None:
            self.pending[stage] = (fp, value)

    def write(self, run_dir: str | Path) -> list[Path]:
        """Write the queued results into ``run_dir/cache`` (atomic writes); returns the files."""
        written = []
        for stage, (fp, value) in self.pending.items():
            arrays: dict[str, np.ndarray] = {}
            meta = {"format": FORMAT, "stage": stage, "fingerprint": fp, "value": _encode(value, arrays)}
            path = Path(run_dir) / CACHE_DIR / f"{stage}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
            written.append(path)
        self.pending.clear()
        return written
