"""Distribution figures: a histogram and the empirical cumulative distribution of one value over datasets
(the batch report's figures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topograph.io.atomic import atomic_path


def ecdf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF: sorted values ``x₍ᵢ₎`` and ``F = i / n`` for i = 1 … n."""
    x = np.sort(np.asarray(values, dtype=float))
    return x, np.arange(1, x.size + 1) / max(x.size, 1)


def distribution_figure(values: Sequence[float], title: str, xlabel: str, path: str | Path) -> Path:
    """Histogram and cumulative curve of ``values`` side by side, saved as PNG (atomically).

    Args:
        values: one value per dataset (n ≥ 1).
        title: figure title.
        xlabel: x-axis label with unit.
        path: output ``.png`` path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    v = np.asarray(values, dtype=float)
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.8, wspace=0.25)
    bins = int(np.clip(np.ceil(np.sqrt(v.size)) + 1, 3, 30))
    half = 0.05 * (abs(float(v[0])) or 1.0)  # one value (or all equal): a small range around it
    rng = None if np.ptp(v) > 0 else (float(v[0]) - half, float(v[0]) + half)
    ax_h.hist(v, bins=bins, range=rng, color="#4878a8", edgecolor="white")
    ax_h.set_xlabel(xlabel)
    ax_h.set_ylabel("datasets")
    ax_h.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_h.set_title(f"histogram (n = {v.size})")
    x, f = ecdf(v)
    ax_c.step(np.concatenate([[x[0]], x]), np.concatenate([[0.0], f]), where="post", color="#c0504d")
    ax_c.plot(x, f, "o", ms=3, color="#c0504d")
    ax_c.set_ylim(0, 1.02)
    ax_c.set_xlabel(xlabel)
    ax_c.set_ylabel("fraction ≤ x")
    ax_c.set_title(f"cumulative (median {np.median(v):.4g})")
    ax_c.grid(alpha=0.3)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
