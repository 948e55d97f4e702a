"""The report's hand-written SVG charts: valid XML, inert labels, bars and points where the values say."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from topograph.report.svg_charts import bar_chart, histogram_svg, line_chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def _svg(uri: str) -> ET.Element:
    assert uri.startswith("data:image/svg+xml;base64,")
    return ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 0.312), (-10.7, 0.8), (3.0, 3.0), (0.0, 2.5e-5)])
def test_nice_ticks_cover_the_range_in_round_steps(lo, hi):
    t = nice_ticks(lo, hi)
    assert t[0] <= lo and t[-1] >= hi and 3 <= len(t) <= 12
    steps = {round(b - a, 12) for a, b in zip(t, t[1:], strict=False)}
    assert len(steps) == 1
    mantissa = float(f"{steps.pop():.1e}".split("e")[0])
    assert mantissa in (1.0, 2.0, 5.0)


def test_bar_heights_follow_the_values_and_labels_are_escaped():
    root = _svg(bar_chart(["0", "1"], {"a <script>": [1.0, 2.0], "b": [0.5, None]}, "RMS (px)"))
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 3  # the missing value draws no bar
    heights = {r.find(f"{NS}title").text: float(r.get("height")) for r in bars}
    assert heights["1: 2"] == pytest.approx(2 * heights["0: 1"], rel=0.02)
    assert heights["0: 0.5"] == pytest.approx(0.5 * heights["0: 1"], rel=0.02)
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "a <script>" in texts  # parsed back from &lt;script&gt;: text, not an element
    assert not list(root.iter(f"{NS}script"))


def test_line_points_are_ordered_like_the_values():
    root = _svg(line_chart([0, 1, 2], {"recovered": [0.0, -5.0, -10.0], "metadata": [0.0, None, -10.0]}, "tilt"))
    circles = list(root.iter(f"{NS}circle"))
    assert len(circles) == 5
    ys = [float(c.get("cy")) for c in circles[:3]]
    assert ys[0] < ys[1] < ys[2]  # SVG y grows downward: decreasing tilt goes down
    assert ys[1] - ys[0] == pytest.approx(ys[2] - ys[1], rel=1e-3)


def test_histogram_draws_one_curve_per_view_peaking_where_its_samples_are():
    rng = np.random.default_rng(0)
    samples = {"view 0": rng.normal(0.3, 0.02, 2000).tolist(), "view 1": rng.normal(0.6, 0.02, 2000).tolist()}
    root = ET.fromstring(histogram_svg(samples, "residual (px)", bins=20))
    lines = list(root.iter(f"{NS}polyline"))
    assert len(lines) == 2
    # Heights of the polyline vertices: the highest vertex (smallest y) of each curve sits at its mean.
    peaks = []
    for line in lines:
        pts = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        peaks.append(min(pts, key=lambda p: p[1])[0])
    assert peaks[0] < peaks[1]
    xs = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    x_at = {round(c): k for k, c in enumerate(sorted({p[0] for p in xs}))}
    assert len(x_at) == 20
