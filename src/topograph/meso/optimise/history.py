"""The optimisation's record: one :class:`IterationRecord` per accepted iteration, gathered in a :class:`History`.

The solver returns the records of its round (rolled-back iterations removed); the rounds concatenate them.
Checkpoints store them as plain dicts (:meth:`IterationRecord.to_dict`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class IterationRecord:
    """One accepted iteration: round ``level`` name, ``iteration`` within it, the batch's ``loss`` (the
    optimised total), its RGB and height mean squared errors, the height regulariser ``tv`` and the
    image indices of the ``batch``."""

    level: str
    iteration: int
    loss: float
    mse_rgb: float
    mse_height: float
    tv: float
    batch: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``batch`` as a list) for checkpoints and files."""
        out = asdict(self)
        out["batch"] = list(self.batch)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(
            level=str(data["level"]),
            iteration=int(data["iteration"]),
            loss=float(data["loss"]),
            mse_rgb=float(data["mse_rgb"]),
            mse_height=float(data["mse_height"]),
            tv=float(data["tv"]),
            batch=tuple(int(b) for b in data["batch"]),
        )


@dataclass(frozen=True)
class History(Sequence[IterationRecord]):
    """Every accepted iteration of a run, in order (a read-only sequence of :class:`IterationRecord`)."""

    records: tuple[IterationRecord, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[IterationRecord]:
        return iter(self.records)

    def __getitem__(self, index):  # noqa: ANN001, ANN204 - int or slice, as for a tuple
        return self.records[index]

    def __add__(self, other: Sequence[IterationRecord]) -> History:
        return History(self.records + tuple(other))

    def of_level(self, name: str) -> tuple[IterationRecord, ...]:
        """The records of the round named ``name``."""
        return tuple(r for r in self.records if r.level == name)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Plain data, one dict per iteration."""
        return [r.to_dict() for r in self.records]

    @classmethod
    def from_dicts(cls, rows: Sequence[dict[str, Any]]) -> History:
        """Inverse of :meth:`to_dicts`."""
        return cls(tuple(IterationRecord.from_dict(r) for r in rows))
