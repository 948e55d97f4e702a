"""Write docs/figures/conventions.svg: the image and world frames, the tilt-axis angle and the tilt sense.

Run: ``python docs/figures/make_conventions_figure.py`` (no dependencies beyond the standard library).
"""

from __future__ import annotations

import math
from pathlib import Path


def arrow(x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 2.5) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
        f'stroke-width="{width}" marker-end="url(#head-{colour.strip("#")})"/>'
    )


def text(x: float, y: float, s: str, size: int = 15, colour: str = "#222", anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}" text-anchor="{anchor}">{s}</text>'


def main() -> None:
    colours = ["#222222", "#c0392b", "#2471a3", "#1e8449", "#7d3c98"]
    defs = "".join(
        f'<marker id="head-{c.strip("#")}" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
        f'<path d="M0,0 L10,4 L0,8 z" fill="{c}"/></marker>'
        for c in colours
    )
    parts = [f"<defs>{defs}</defs>", '<rect width="100%" height="100%" fill="white"/>']

    # panel 1: the image as displayed and the world frame at zero tilt
    ox, oy = 40, 60
    parts.append(text(ox, 30, "1 · image as displayed, untilted stage", 17))
    parts.append(f'<rect x="{ox}" y="{oy}" width="300" height="240" fill="#f4f6f7" stroke="#999"/>')
    parts.append(arrow(ox, oy, ox + 120, oy, "#222222"))
    parts.append(text(ox + 125, oy + 5, "x (columns)"))
    parts.append(arrow(ox, oy, ox, oy + 110, "#222222"))
    parts.append(text(ox + 6, oy + 125, "y (rows, down)"))
    cx, cy = ox + 170, oy + 150
    parts.append(arrow(cx, cy, cx + 90, cy, "#c0392b"))
    parts.append(text(cx + 94, cy + 5, "X", colour="#c0392b"))
    parts.append(arrow(cx, cy, cx, cy - 90, "#2471a3"))
    parts.append(text(cx + 6, cy - 94, "Y (up on the screen)", colour="#2471a3"))
    parts.append(f'<circle cx="{cx}" cy="{cy}" r="9" fill="none" stroke="#1e8449" stroke-width="2.5"/>')
    parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="#1e8449"/>')
    parts.append(text(cx - 14, cy + 28, "Z toward the detector (out of the screen)", 13, "#1e8449"))
    parts.append(text(ox, oy + 275, "world: right-handed, X, Y on the substrate, Z toward the detector", 13))
    parts.append(text(ox, oy + 293, "camera at zero tilt: R₀ = diag(1, −1, −1)", 13))

    # panel 2: tilt-axis angle a, counter-clockwise as displayed
    ox2 = 400
    parts.append(text(ox2, 30, "2 · tilt axis: angle a counter-clockwise from x", 17))
    parts.append(f'<rect x="{ox2}" y="{oy}" width="300" height="240" fill="#f4f6f7" stroke="#999"/>')
    px, py = ox2 + 150, oy + 130
    a = math.radians(30.0)
    parts.append(arrow(px, py, px + 120, py, "#222222", 1.5))
    parts.append(text(px + 110, py + 18, "x", 14))
    ux, uy = 120 * math.cos(a), -120 * math.sin(a)  # screen y is down
    parts.append(
        f'<line x1="{px - ux:.1f}" y1="{py - uy:.1f}" x2="{px:.1f}" y2="{py:.1f}" stroke="#7d3c98" '
        'stroke-width="2" stroke-dasharray="5,4"/>'
    )
    parts.append(arrow(px, py, px + ux, py + uy, "#7d3c98"))
    parts.append(text(px + ux + 4, py + uy - 4, "u (tilt axis)", 14, "#7d3c98"))
    parts.append(
        f'<path d="M{px + 60:.1f},{py:.1f} A60,60 0 0,0 {px + 60 * math.cos(a):.1f},{py - 60 * math.sin(a):.1f}" '
        'fill="none" stroke="#7d3c98" stroke-width="1.5"/>'
    )
    parts.append(text(px + 66, py - 14, "a = 30°", 14, "#7d3c98"))
    parts.append(text(ox2, oy + 275, "u = (cos a, sin a, 0) in the world frame", 13))
    parts.append(text(ox2, oy + 293, "a > 0 turns from x toward the top of the image", 13))

    # panel 3: tilt sense, seen along the axis (a = 0): points above the eucentric height move down
    ox3 = 760
    parts.append(text(ox3, 30, "3 · tilt θ > 0: right-handed about u", 17))
    parts.append(f'<rect x="{ox3}" y="{oy}" width="320" height="240" fill="#f4f6f7" stroke="#999"/>')
    sx, sy = ox3 + 90, oy + 150
    parts.append(text(ox3 + 10, oy + 22, "side view along u = +X (X out of the page)", 13))
    parts.append(f'<line x1="{sx - 70}" y1="{sy}" x2="{sx + 70}" y2="{sy}" stroke="#999" stroke-width="3"/>')
    th = math.radians(20.0)
    # rotation about +X seen with X toward the viewer: Y to the right, Z up; right-handed turns Y toward Z
    ex, ey = 70 * math.cos(th), -70 * math.sin(th)
    parts.append(
        f'<line x1="{sx - ex:.1f}" y1="{sy - ey:.1f}" x2="{sx + ex:.1f}" y2="{sy + ey:.1f}" '
        'stroke="#1e8449" stroke-width="3"/>'
    )
    parts.append(text(sx + 72, sy + 4, "Y", 13, "#2471a3"))
    parts.append(arrow(sx, sy, sx, sy - 80, "#1e8449", 1.5))
    parts.append(text(sx + 4, sy - 84, "Z (detector above)", 13, "#1e8449"))
    h = 55
    p0 = (sx, sy - h)
    p1 = (sx - h * math.sin(th), sy - h * math.cos(th))
    parts.append(f'<circle cx="{p0[0]:.1f}" cy="{p0[1]:.1f}" r="4" fill="#c0392b"/>')
    parts.append(f'<circle cx="{p1[0]:.1f}" cy="{p1[1]:.1f}" r="4" fill="#c0392b"/>')
    parts.append(
        f'<path d="M{p0[0]:.1f},{p0[1]:.1f} A{h},{h} 0 0,0 {p1[0]:.1f},{p1[1]:.1f}" fill="none" '
        'stroke="#c0392b" stroke-width="1.5"/>'
    )
    parts.append(text(sx - 80, sy - h - 14, "point above the", 12, "#c0392b"))
    parts.append(text(sx - 80, sy - h + 1, "eucentric height", 12, "#c0392b"))
    parts.append(text(ox3 + 170, oy + 90, "θ turns +Y toward +Z:", 13))
    parts.append(text(ox3 + 170, oy + 108, "the point moves to −Y,", 13))
    parts.append(text(ox3 + 170, oy + 126, "i.e. DOWN in the image", 13))
    parts.append(text(ox3 + 170, oy + 144, "(rows increase).", 13))
    parts.append(text(ox3, oy + 275, "R = R₀ · Rot(u, θ) · Rz(φ) (φ: stage rotation)", 13))
    parts.append(text(ox3, oy + 293, "check on a real series: bumps move down as θ grows", 13))

    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="1110" height="380" font-family="DejaVu Sans, Arial">'
        + "".join(parts)
        + "</svg>\n"
    )
    out = Path(__file__).with_name("conventions.svg")
    out.write_text(svg, encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
