"""The per-image registration table and the seam figure: written as files and shown in the HTML report; a
deliberately misregistered image is the worst row of the table and the brightest part of the seam map."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from meso_toy import make_model, toy_scene, true_links

from topograph.meso.config import MesoConfig
from topograph.meso.outputs import write_registration
from topograph.meso.quality import (
    QualityReport,
    link_residuals,
    registration_gate,
    registration_rows,
    registration_scores,
    seam_map,
)

MOVED = 4


@pytest.fixture(scope="module")
def scene():
    return toy_scene(3, 2, size=(96, 72), step=20.0)


def test_misregistered_image_is_worst_in_table_and_seam_map(scene, tmp_path):
    pos = scene.positions.copy()
    pos[MOVED] += (7.0, -5.0)  # deliberately misregistered
    model = make_model(len(scene.pixels), scene.size, scene.focal_px, pos)
    names = tuple(f"toy_{k:02d}.png" for k in range(len(pos)))
    ncc, overlap = registration_scores(model, scene.pixels)
    residual = link_residuals(model, true_links(scene.positions, scene.size), len(pos))
    assert int(np.argmax(residual)) == MOVED and residual[MOVED] > 5.0, residual
    assert np.nanmin(residual) < 0.01  # images not linked to the moved one fit exactly
    gate = registration_gate(names, ncc, overlap, MesoConfig().checks)
    report = QualityReport((gate,), ncc, overlap, residual)
    rows = registration_rows(names, report, 0.5)
    assert rows[0]["image"] == names[MOVED] and not rows[0]["passed"]
    assert rows[0]["residual_px"] == pytest.approx(residual[MOVED])

    seams = seam_map(model, scene.pixels)
    owned = [seams.owner == k for k in range(len(pos))]
    assert all(o.any() for o in owned)  # every image owns part of the mosaic
    dis = seams.disagreement
    near_moved = np.nanmedian(np.where(owned[MOVED], dis, np.nan))
    far = np.nanmedian(np.where(owned[0], dis, np.nan))  # image 0 does not overlap image 4's content much
    assert near_moved > 2.0 * far, (near_moved, far)

    rec = SimpleNamespace(names=names, quality=report, config=MesoConfig(), seams=seams)
    files = write_registration(rec, tmp_path)
    text = files["registration_csv"].read_text().splitlines()
    assert text[0].startswith("image,ncc_with_mosaic") and text[1].startswith(names[MOVED]) and text[1].endswith("no")
    assert files["seams_png"].stat().st_size > 5000

    from topograph.report.html import build_report

    summary = {"engine": "meso", "status": report.status, "quality_gates": report.to_dict(names)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    html = build_report(tmp_path)
    table = html[html.index("Registration per image") :]
    assert table.index(names[MOVED]) < min(table.index(n) for n in names if n != names[MOVED])
    assert "FAIL" in table[: table.index("</tr>", table.index(names[MOVED]))]
    assert "registration_seams.png" in html and "Seams between the images" in html
