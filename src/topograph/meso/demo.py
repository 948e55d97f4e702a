"""``topograph demo meso``: render a small cut-cards phone sequence, reconstruct it, evaluate it (Table 1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from topograph.io.atomic import write_json


def run_demo(out: Path, size: int = 0, seed: int = 0, console: Any = None, quick: bool = False) -> dict[str, Any]:
    """Render a phantom into ``out/data``, reconstruct it into ``out/result``, evaluate against the truth.

    Args:
        out: demo folder.
        size: image width in px (0: 480; height is 3/4 of it).
        seed: seed of the phantom.
        console: a rich console for status messages (optional).
        quick: 6 images and the ``fast`` preset (a smoke test in well under a minute at 240 px).

    Returns:
        ``{"rows": {label: text}, "report": path, "result": path, "data": path}``.
    """
    from topograph.analysis.evaluate_meso_synthetic import evaluate_synthetic
    from topograph.meso.config import preset_config, replace_settings
    from topograph.meso.pipeline import run_meso
    from topograph.report.html import write_report
    from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset

    width = size or 480
    cfg = MesoSynthConfig(image_size=(width, width * 3 // 4), raster=(3, 2) if quick else (5, 3), seed=seed)

    def status(text: str) -> None:
        if console is not None:
            console.print(f"[bold]{text}[/]")

    status(f"rendering a cut-cards phone sequence ({cfg.raster[0] * cfg.raster[1]} images, {width} px wide)")
    phantom = render_meso_sequence(cfg)
    data = write_meso_dataset(phantom, out / "data")
    paths = sorted(p for p in (data / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    status("reconstructing (registration, stitching, height maps)")
    t0 = time.perf_counter()
    command = f"topograph demo meso --size {width}" + (" --quick" if quick else "")
    mcfg = preset_config("fast" if quick else "default")
    # the absolute scale a user gets from a ruler in the reference photo (Eqs. 7-8): here from the truth
    mcfg = replace_settings(mcfg, {"scale.magnification": float(phantom.truth.magnifications[0])})
    if quick:
        # small tensors: one thread is faster, and kind to a shared machine
        mcfg = replace_settings(mcfg, {"threads": 1})
        # 240-px photos give too few matches to refine the cameras (the refinement is refused anyway)
        mcfg = replace_settings(mcfg, {"heights.flow.refine_iterations": 0})
    command += f" (magnification {mcfg.scale.magnification:.5f})"
    rec = run_meso(paths, out / "result", mcfg, command=command).reconstruction
    elapsed = time.perf_counter() - t0
    ev = evaluate_synthetic(rec, phantom.truth)
    summary = ev.to_dict()
    write_json(out / "result" / "evaluation.json", summary)
    report = write_report(out / "result")
    t1 = ev.table1
    gsd = ev.gsd_um
    rows = {
        "images": f"{len(paths)} × {cfg.image_size[0]}×{cfg.image_size[1]} px, GSD {gsd:.1f} µm",
        "mean accuracy (Table-1 protocol)": f"{t1.mean_accuracy:.1f} µm ({t1.mean_accuracy / gsd:.2f} GSD)",
        "mean precision": f"{t1.mean_precision:.1f} µm ({t1.mean_precision / gsd:.2f} GSD)",
        "optimal rescale factor (1 is ideal)": f"{t1.rescale:.3f}",
        "registration error (max over images)": f"{float(ev.registration_px.max()):.2f} px",
        "distortion profile error (RMS)": f"{ev.distortion_rms_px:.2f} px",
        "registration NCC with the mosaic (worst image)": f"{float(min(rec.quality.registration_ncc)):.3f}",
        "time": f"{elapsed:.1f} s",
    }
    return {"rows": rows, "report": report, "result": out / "result", "data": data}
