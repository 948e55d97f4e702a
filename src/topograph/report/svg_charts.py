"""Small self-contained SVG charts (grouped bars, lines with markers) for the run report.

Hand-written SVG instead of matplotlib for the per-view charts: they are a few rectangles and lines, the
text stays sharp at any zoom, and a sparse SEM run does not pay matplotlib's ~0.7 s import for them.
Every label is XML-escaped. The charts return ``data:image/svg+xml`` URIs for an ``<img>``.
"""

from __future__ import annotations

import base64
import math
from html import escape

# matplotlib's tab10 colours: the same look as the matplotlib figures of the report.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")

_W_PLOT_MIN = 260
_H_PLOT = 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 12, 30, 44


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (1, 2, 5 × 10^k steps) from ``≤ lo`` to ``≥ hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _fmt_tick(v: float) -> str:
    return f"{v:.4g}"


def _svg_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _frame(width: int, height: int, ylabel: str, xlabel: str, ticks: list[float], to_y, top: int) -> list[str]:
    """Background, y grid with tick labels and the axis labels."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    x0, x1 = _LEFT, width - _RIGHT
    for t in ticks:
        y = to_y(t)
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 - 5}" y="{y + 4:.1f}" text-anchor="end">{escape(_fmt_tick(t))}</text>')
    yb = top + _H_PLOT
    parts.append(f'<line x1="{x0}" x2="{x1}" y1="{yb}" y2="{yb}" stroke="#333"/>')
    parts.append(f'<line x1="{x0}" x2="{x0}" y1="{top}" y2="{yb}" stroke="#333"/>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(xlabel)}</text>')
    cy = top + _H_PLOT / 2
    parts.append(
        f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">{escape(ylabel)}</text>'
    )
    return parts


def _legend(parts: list[str], names: list[str], x: float, markers: bool) -> None:
    for k, name in enumerate(names):
        colour = PALETTE[k % len(PALETTE)]
        lx = x + 150 * (k % 4)
        ly = 14 * (k // 4)
        if markers:
            parts.append(
                f'<line x1="{lx}" x2="{lx + 16}" y1="{14 + ly}" y2="{14 + ly}" stroke="{colour}" stroke-width="2"/>'
            )
        else:
            parts.append(f'<rect x="{lx}" y="{8 + ly}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 20}" y="{18 + ly}">{escape(name)}</text>')


def _legend_top(n_series: int) -> int:
    """Top margin: the legend takes rows of four entries above the plot."""
    return _TOP + 14 * ((max(n_series, 1) - 1) // 4)


def _finite(values: list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def bar_chart(labels: list[str], series: dict[str, list[float | None]], ylabel: str, xlabel: str = "view") -> str:
    """Grouped bars: one group per label, one bar per series (missing values leave a gap); SVG data URI."""
    return _svg_uri(bar_svg(labels, series, ylabel, xlabel))


def line_chart(x: list[float], series: dict[str, list[float | None]], ylabel: str, xlabel: str = "view") -> str:
    """Lines with markers over shared x values (missing values break the line); SVG data URI."""
    return _svg_uri(line_svg(x, series, ylabel, xlabel))


def bar_svg(labels: list[str], series: dict[str, list[float | None]], ylabel: str, xlabel: str = "view") -> str:
    """SVG text of :func:`bar_chart`."""
    n_groups = max(len(labels), 1)
    width = _LEFT + _RIGHT + max(_W_PLOT_MIN, 34 * n_groups * max(1, len(series)) // 2 + 20 * n_groups)
    top = _legend_top(len(series))
    height = top + _H_PLOT + _BOTTOM
    values = [v for vals in series.values() for v in _finite(vals)]
    v_max = max(values + [0.0])
    ticks = nice_ticks(0.0, 1.2 * v_max if v_max > 0 else 1.0)  # headroom for the legend
    y_max = ticks[-1]

    def to_y(v: float) -> float:
        return top + _H_PLOT * (1.0 - v / y_max)

    parts = _frame(width, height, ylabel, xlabel, ticks, to_y, top)
    plot_w = width - _LEFT - _RIGHT
    group_w = plot_w / n_groups
    bar_w = 0.8 * group_w / max(1, len(series))
    for g, label in enumerate(labels):
        gx = _LEFT + g * group_w
        parts.append(
            f'<text x="{gx + group_w / 2:.1f}" y="{top + _H_PLOT + 15}" text-anchor="middle">{escape(label)}</text>'
        )
        for k, vals in enumerate(series.values()):
            v = vals[g] if g < len(vals) else None
            if v is None or not math.isfinite(float(v)):
                continue
            x = gx + 0.1 * group_w + k * bar_w
            y = to_y(max(float(v), 0.0))
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{top + _H_PLOT - y:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(f"{label}: {float(v):.4g}")}</title></rect>'
            )
    _legend(parts, list(series), _LEFT + 4, markers=False)
    parts.append("</svg>")
    return "".join(parts)


def line_svg(
    x: list[float], series: dict[str, list[float | None]], ylabel: str, xlabel: str = "view", markers: bool = True
) -> str:
    """SVG text of :func:`line_chart` (``markers=False``: lines only, for dense curves)."""
    width = _LEFT + _RIGHT + max(_W_PLOT_MIN, min(40 * len(x), 480))
    top = _legend_top(len(series))
    height = top + _H_PLOT + _BOTTOM
    values = [v for vals in series.values() for v in _finite(vals)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    ticks = nice_ticks(0.0 if lo >= 0.0 > lo - pad else lo - pad, hi + pad)  # non-negative data: axis from 0
    y_lo, y_hi = ticks[0], ticks[-1]
    x_lo, x_hi = (min(x), max(x)) if x else (0.0, 1.0)
    span = x_hi - x_lo if x_hi > x_lo else 1.0
    plot_w = width - _LEFT - _RIGHT

    def to_y(v: float) -> float:
        return top + _H_PLOT * (1.0 - (v - y_lo) / (y_hi - y_lo))

    def to_x(v: float) -> float:
        return _LEFT + 16 + (plot_w - 32) * (v - x_lo) / span

    parts = _frame(width, height, ylabel, xlabel, ticks, to_y, top)
    # Every x labelled when few; round ticks over the range when many (histogram bins).
    for xv in x if len(x) <= 12 else [t for t in nice_ticks(x_lo, x_hi) if x_lo <= t <= x_hi]:
        parts.append(
            f'<text x="{to_x(xv):.1f}" y="{top + _H_PLOT + 15}" text-anchor="middle">{escape(_fmt_tick(xv))}</text>'
        )
    for k, (name, vals) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for xv, v in zip(x, vals, strict=False):
            if v is None or not math.isfinite(float(v)):
                runs.append([])
                continue
            runs[-1].append((to_x(xv), to_y(float(v))))
        dash = ' stroke-dasharray="5 3"' if k > 0 else ""
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>')
        for xv, v in zip(x, vals, strict=False):
            if markers and v is not None and math.isfinite(float(v)):
                fill = colour if k == 0 else "white"
                parts.append(
                    f'<circle cx="{to_x(xv):.1f}" cy="{to_y(float(v)):.1f}" r="3.5" fill="{fill}" stroke="{colour}">'
                    f"<title>{escape(f'{name} {_fmt_tick(xv)}: {float(v):.4g}')}</title></circle>"
                )
    _legend(parts, list(series), _LEFT + 4, markers=True)
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(samples: dict[str, list[float]], xlabel: str, bins: int = 30, upper_quantile: float = 0.99) -> str:
    """Histograms of several samples on shared bins as lines (share of each sample per bin, %); SVG text.

    The bins span 0 to the ``upper_quantile`` of all samples pooled (the long tail of a robust fit would
    squeeze the bulk into a few bins); values beyond land in the last bin.
    """
    pooled = sorted(v for vals in samples.values() for v in vals if math.isfinite(v))
    hi = pooled[min(len(pooled) - 1, int(upper_quantile * len(pooled)))] if pooled else 1.0
    hi = hi if hi > 0 else 1.0
    width = hi / bins
    centres = [width * (k + 0.5) for k in range(bins)]
    series: dict[str, list[float | None]] = {}
    for name, vals in samples.items():
        finite = [v for v in vals if math.isfinite(v)]
        counts = [0] * bins
        for v in finite:
            counts[min(bins - 1, max(0, int(v / width)))] += 1
        series[name] = [100.0 * c / max(len(finite), 1) for c in counts]
    return line_svg(centres, series, "share of observations (%)", xlabel, markers=False)
