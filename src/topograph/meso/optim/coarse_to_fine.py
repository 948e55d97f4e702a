"""A generic coarse-to-fine driver (the schedule is data; the per-round solver is a function)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

L = TypeVar("L")
S = TypeVar("S")


def coarse_to_fine(
    levels: Sequence[L],
    solve_level: Callable[[L, S], S],
    state: S,
    resample_state: Callable[[L | None, L, S], S] | None = None,
) -> S:
    """Run ``solve_level`` over ``levels`` in order, threading ``state`` through.

    Args:
        levels: the rounds, coarsest first (e.g. ``LevelConfig`` rows).
        solve_level: ``(level, state) -> state`` optimises one round.
        state: the initial state (e.g. the model).
        resample_state: optional ``(previous_level, next_level, state) -> state`` run before each round
            to carry resolution-dependent state across rounds (identity when omitted).

    Returns:
        The state after the last round.
    """
    previous: L | None = None
    for level in levels:
        if resample_state is not None:
            state = resample_state(previous, level, state)
        state = solve_level(level, state)
        previous = level
    return state
