"""Run checkpoints of the mesoscopic engine: save, load and check that a checkpoint fits the run.

A checkpoint holds everything needed to continue an interrupted run bit for bit (on CPU): the model's
parameters, the round being optimised (or the next one to start), and inside a round the optimiser
state (Adam moments and current learning rates), the running reconstruction, the iteration counter and
the divergence bookkeeping; plus the history so far. Batches are a pure function of (seed, round,
iteration), so no random-generator state is needed. Files are written atomically (temp file + rename).

Security: a checkpoint may come from a shared or downloaded run folder, so reading one must never run
code. The file holds only tensors (``torch.load(..., weights_only=True)``, which refuses any other
pickled object) and one JSON string with every non-tensor value; tensors are referenced from the JSON
by name. Dicts with non-string keys (optimizer state is keyed by parameter index) and tuples are encoded
explicitly so that they come back with the same types.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from topograph.errors import TopographError
from topograph.io.atomic import atomic_path

log = logging.getLogger("topograph")

FORMAT_VERSION = 2
"""2: tensors + a JSON state string (version 1 pickled arbitrary objects and is refused)."""


@dataclass
class RoundState:
    """Where a round stands: next iteration to run and the state needed to run it.

    ``optimizer`` is ``torch.optim.Optimizer.state_dict()``; ``recon`` is
    :meth:`topograph.meso.optimise.batching.RunningReconstruction.state_dict`; ``best`` the lowest accepted loss;
    ``rollbacks`` how many times the round rolled back so far.
    """

    round_index: int
    iteration: int
    optimizer: dict
    recon: dict
    best: float
    rollbacks: int


@dataclass
class Checkpoint:
    """A saved run: ``model`` state dict; ``next_round`` the first round not finished; ``round_state`` the
    state inside ``next_round`` (None = start it from scratch); ``history`` one dict per iteration;
    ``fingerprint`` identifies the inputs and configuration (:func:`topograph.fingerprint.digest`);
    ``extra`` free plain data."""

    model: dict
    next_round: int
    round_state: RoundState | None
    history: list[dict[str, Any]]
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Plain-JSON form of a tree of dicts, lists, tuples, numbers, strings and tensors."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, tensors) for k, v in obj.items()}}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"a checkpoint cannot hold {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj["__dict__"].items()}


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically: ``{"tensors": {name: tensor}, "state": JSON text}``."""
    rs = ckpt.round_state
    state = {
        "version": FORMAT_VERSION,
        "model": ckpt.model,
        "next_round": ckpt.next_round,
        "round_state": None if rs is None else rs.__dict__,
        "history": ckpt.history,
        "fingerprint": ckpt.fingerprint,
        "extra": ckpt.extra,
    }
    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(_encode(state, tensors))
    with atomic_path(path) as tmp:
        torch.save({"tensors": tensors, "state": text}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` without running any code from the file.

    Args:
        path: the file.
        fingerprint: if given, the checkpoint must have been written by a run with this fingerprint.

    Raises:
        TopographError: missing or unreadable file, a file holding anything but tensors and the JSON
            state (e.g. a crafted pickle), other format version, or a different run.
    """
    p = Path(path)
    if not p.is_file():
        raise TopographError(f"no checkpoint at {p}", "run without --resume first, or point --out at the earlier run")
    try:
        # weights_only: the unpickler accepts tensors and plain containers only and never calls code.
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is the same user-facing problem
        raise TopographError(
            f"the checkpoint {p} cannot be read safely (not a topograph checkpoint, or it holds objects "
            f"other than tensors: {exc.__class__.__name__})",
            "delete it and rerun without --resume",
        ) from exc
    try:
        tensors = payload["tensors"]
        if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            raise TypeError("non-tensor entries")
        state = _decode(json.loads(payload["state"]), tensors)
    except Exception as exc:  # noqa: BLE001 - wrong layout, version 1, damaged JSON
        raise TopographError(
            f"the checkpoint {p} has another format version", "delete it and rerun without --resume"
        ) from exc
    if not isinstance(state, dict) or state.get("version") != FORMAT_VERSION:
        raise TopographError(f"the checkpoint {p} has another format version", "delete it and rerun without --resume")
    if fingerprint is not None and state["fingerprint"] != fingerprint:
        raise TopographError(
            f"the checkpoint {p} belongs to another run (different images or settings)",
            "resume with the same images and options, or rerun without --resume",
        )
    rs = state["round_state"]
    return Checkpoint(
        model=state["model"],
        next_round=int(state["next_round"]),
        round_state=None if rs is None else RoundState(**rs),
        history=list(state["history"]),
        fingerprint=state["fingerprint"],
        extra=dict(state.get("extra") or {}),
    )
