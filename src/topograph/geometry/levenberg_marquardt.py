"""A generic Levenberg-Marquardt loop over caller-supplied normal equations (dense, float64).

The caller owns the model: it builds the (possibly IRLS-weighted) Gauss-Newton normal equations
``H = J^T W J``, ``g = J^T W r`` at a parameter vector and evaluates the cost of a trial vector. This
module owns only the damping strategy (Marquardt 1963), so a problem-specific solver (e.g. the mesoscopic
camera refinement, :mod:`topograph.meso.flow.camera_refinement`) does not re-implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NormalEquations = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, float]]
"""``x -> (H, g, cost(x))``: the normal-equation matrix (P, P), the gradient (P,) and the cost at ``x``."""


@dataclass(frozen=True)
class LMResult:
    """Outcome of :func:`levenberg_marquardt`: the last accepted ``x``, its ``cost`` (of the last
    normal-equation evaluation when no step was accepted), the iterations run and the final damping."""

    x: np.ndarray
    cost: float
    iterations: int
    damping: float


def damped_step(hess: np.ndarray, grad: np.ndarray, damping: float) -> np.ndarray:
    """The Levenberg-Marquardt step ``delta = -(H + lambda diag(H) + 1e-9 I)^-1 g``.

    Zero or negative diagonal entries of ``H`` (unconstrained parameters) are damped as if they were 1,
    so their step is 0 rather than undefined.

    Raises:
        numpy.linalg.LinAlgError: the damped matrix is singular.
    """
    diag = np.diag(hess).copy()
    diag[diag <= 0] = 1.0
    n = len(grad)
    return np.linalg.solve(hess + damping * np.diag(diag) + 1e-9 * np.eye(n), -grad)


def levenberg_marquardt(
    x0: np.ndarray,
    normal_equations: NormalEquations,
    cost: Callable[[np.ndarray], float],
    iterations: int,
    damping: float = 1e-3,
    tries_per_iteration: int = 8,
    min_damping: float = 1e-7,
    on_step: Callable[[float], None] | None = None,
) -> LMResult:
    """Minimise ``cost`` from ``x0`` by damped Gauss-Newton steps (Levenberg 1944, Marquardt 1963).

    Each iteration solves ``(H + lambda diag(H)) delta = -g`` (:func:`damped_step`); a step that lowers the
    cost is taken and ``lambda <- max(lambda / 3, min_damping)``; otherwise ``lambda <- 10 lambda`` and the
    step is retried (at most ``tries_per_iteration`` times). The loop ends after ``iterations`` or at the
    first iteration without an improving step.

    Args:
        x0: (P,) start.
        normal_equations: ``x -> (H, g, cost(x))`` (see :data:`NormalEquations`).
        cost: cost of a trial vector (the same function the normal equations linearise).
        iterations: at most this many accepted steps.
        damping: initial ``lambda``.
        tries_per_iteration: damping increases per iteration before giving up.
        min_damping: floor of ``lambda``.
        on_step: called with the cost after each accepted step (e.g. a progress bar's ``step``).

    Returns:
        The last accepted vector and its cost.
    """
    x = np.asarray(x0, dtype=np.float64)
    lam = float(damping)
    current = float("nan")
    done = 0
    for _ in range(int(iterations)):
        hess, grad, current = normal_equations(x)
        improved = False
        for _ in range(tries_per_iteration):
            try:
                delta = damped_step(hess, grad, lam)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            x_new = x + delta
            c_new = cost(x_new)
            if c_new < current:
                x, current = x_new, c_new
                lam = max(lam / 3.0, min_damping)
                improved = True
                break
            lam *= 10.0
        if not improved:
            break
        done += 1
        if on_step is not None:
            on_step(current)
    return LMResult(x=x, cost=current, iterations=done, damping=lam)
