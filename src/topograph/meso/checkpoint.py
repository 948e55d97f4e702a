"""Run checkpoints of the mesoscopic engine: save, load and check that a checkpoint fits the run.

A checkpoint holds everything needed to continue an interrupted run bit for bit (on CPU): the model's
parameters, the round being optimised (or the next one to start), and inside a round the optimiser
state (Adam moments and current learning rates), the running reconstruction, the iteration counter and
the divergence bookkeeping; plus the history so far. Batches are a pure function of (seed, round,
iteration), so no random-generator state is needed. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from topograph.errors import TopographError
from topograph.io.atomic import atomic_path

log = logging.getLogger("topograph")

FORMAT_VERSION = 1


@dataclass
class RoundState:
    """Where a round stands: next iteration to run and the state needed to run it.

    ``optimizer`` is ``torch.optim.Optimizer.state_dict()``; ``recon`` is
    :meth:`topograph.meso.batching.RunningReconstruction.state_dict`; ``best`` the lowest accepted loss;
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
    ``fingerprint`` identifies the inputs and configuration; ``extra`` free plain data."""

    model: dict
    next_round: int
    round_state: RoundState | None
    history: list[dict[str, Any]]
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


def run_fingerprint(names: tuple[str, ...], image_shape: tuple[int, ...], config: dict[str, Any]) -> str:
    """SHA-256 of the image names, their array shape and the configuration (plain data).

    Keys that do not change the computation (output paths, threads, device) should be removed from
    ``config`` by the caller.
    """
    blob = json.dumps({"names": list(names), "shape": list(image_shape), "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically (``torch.save`` of plain containers and tensors)."""
    rs = ckpt.round_state
    payload = {
        "version": FORMAT_VERSION,
        "model": {k: v.detach().cpu().clone() for k, v in ckpt.model.items()},
        "next_round": ckpt.next_round,
        "round_state": None if rs is None else rs.__dict__,
        "history": ckpt.history,
        "fingerprint": ckpt.fingerprint,
        "extra": ckpt.extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the file.
        fingerprint: if given, the checkpoint must have been written by a run with this fingerprint.

    Raises:
        TopographError: missing or unreadable file, other format version, or a different run.
    """
    p = Path(path)
    if not p.is_file():
        raise TopographError(f"no checkpoint at {p}", "run without --resume first, or point --out at the earlier run")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any read failure is the same user-facing problem
        raise TopographError(
            f"the checkpoint {p} cannot be read ({exc.__class__.__name__})", "delete it and rerun"
        ) from exc
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        raise TopographError(f"the checkpoint {p} has another format version", "delete it and rerun without --resume")
    if fingerprint is not None and payload["fingerprint"] != fingerprint:
        raise TopographError(
            f"the checkpoint {p} belongs to another run (different images or settings)",
            "resume with the same images and options, or rerun without --resume",
        )
    rs = payload["round_state"]
    return Checkpoint(
        model=payload["model"],
        next_round=int(payload["next_round"]),
        round_state=None if rs is None else RoundState(**rs),
        history=list(payload["history"]),
        fingerprint=payload["fingerprint"],
        extra=dict(payload.get("extra", {})),
    )
