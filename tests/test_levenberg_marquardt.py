"""The generic Levenberg-Marquardt loop (geometry/levenberg_marquardt.py) on problems with exact answers."""

from __future__ import annotations

import numpy as np

from topograph.geometry.levenberg_marquardt import damped_step, levenberg_marquardt


def _exponential_problem():
    """``y = a exp(b t) + c`` sampled without noise: the fit must return (a, b, c) exactly."""
    t = np.linspace(0.0, 2.0, 40)
    truth = np.array([2.0, -1.3, 0.5])

    def residuals(x):
        return x[0] * np.exp(x[1] * t) + x[2] - (truth[0] * np.exp(truth[1] * t) + truth[2])

    def normal_equations(x):
        r = residuals(x)
        e = np.exp(x[1] * t)
        jac = np.column_stack((e, x[0] * t * e, np.ones_like(t)))
        return jac.T @ jac, jac.T @ r, float(r @ r)

    return truth, normal_equations, lambda x: float(residuals(x) @ residuals(x))


def test_converges_to_the_exact_parameters():
    truth, normal_equations, cost = _exponential_problem()
    result = levenberg_marquardt(np.array([1.0, -0.5, 0.0]), normal_equations, cost, iterations=100)
    np.testing.assert_allclose(result.x, truth, atol=1e-6)
    assert result.cost < 1e-12
    assert 0 < result.iterations < 100  # stopped once no step improves


def test_never_returns_a_worse_point():
    _, normal_equations, cost = _exponential_problem()
    x0 = np.array([1.0, -1.0, 0.0])
    for iterations in (0, 1, 3):
        result = levenberg_marquardt(x0, normal_equations, cost, iterations=iterations)
        assert cost(result.x) <= cost(x0)
    assert levenberg_marquardt(x0, normal_equations, cost, iterations=0).x is not None


def test_damped_step_leaves_unconstrained_parameters_alone():
    hess = np.diag([4.0, 0.0])  # the second parameter does not enter the cost
    step = damped_step(hess, np.array([2.0, 0.0]), damping=0.0)
    assert abs(step[0] + 0.5) < 1e-9 and step[1] == 0.0


def test_reports_every_accepted_step_with_its_cost():
    _, normal_equations, cost = _exponential_problem()
    seen: list[float] = []
    result = levenberg_marquardt(np.array([1.0, -0.5, 0.0]), normal_equations, cost, iterations=5, on_step=seen.append)
    assert len(seen) == result.iterations == 5
    assert all(b < a for a, b in zip(seen, seen[1:], strict=False))  # accepted steps lower the cost
    assert seen[-1] == result.cost
