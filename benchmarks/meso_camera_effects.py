"""Ablation of the real-camera effects of the phone renderer: each effect alone against the clean sequence.

Renders the cut-cards phantom (same seed, same scene and path) clean and with one effect at a time (or all),
reconstructs it with the chosen preset and prints Table-1 accuracy in GSD, one JSON line per run:

    python benchmarks/meso_camera_effects.py --effects clean exposure blur rolling specular all
    python benchmarks/meso_camera_effects.py --effects rolling+blur rolling+exposure   # pairs

Timings are whole-reconstruction wall and CPU seconds of this process (other jobs may run beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time

EFFECTS = {
    "clean": {},
    "exposure": {"exposure_jitter": 0.3, "white_balance_jitter": 0.15},
    "blur": {"motion_blur_images": (3, 9)},
    "rolling": {"rolling_shutter": 0.01},
    "specular": {"specular": 0.4},
    "all": {
        "exposure_jitter": 0.3,
        "white_balance_jitter": 0.15,
        "motion_blur_images": (3, 9),
        "rolling_shutter": 0.01,
        "specular": 0.4,
    },
}


def effect_settings(effect: str) -> dict:
    """The renderer settings of ``effect``: a name of ``EFFECTS`` or several joined by ``+`` (a combination)."""
    out: dict = {}
    for name in effect.split("+"):
        if name not in EFFECTS:
            raise SystemExit(f"error: unknown effect {name!r}; choose from {', '.join(EFFECTS)} (join with +)")
        out.update(EFFECTS[name])
    return out


def with_rounds(cfg, changes: list[str]):
    """``cfg`` with round settings changed: ``NAME.FIELD=VALUE`` (a JSON value) or ``NAME.train-=GROUP``."""
    from dataclasses import replace

    schedule = list(cfg.schedule)
    for change in changes:
        key, value = change.split("=", 1)
        name, field = key.split(".", 1)
        k = next((k for k, lvl in enumerate(schedule) if lvl.name == name), None)
        if k is None:
            raise SystemExit(f"error: no round {name!r}; the rounds are {', '.join(lvl.name for lvl in schedule)}")
        if field == "train-":
            schedule[k] = replace(schedule[k], train=tuple(g for g in schedule[k].train if g != value))
        else:
            schedule[k] = replace(schedule[k], **{field: json.loads(value)})
    return replace(cfg, schedule=tuple(schedule))


def run(
    effect: str, size: tuple[int, int], preset: str, seed: int, settings: dict, rounds: list[str] | None = None
) -> dict:
    import numpy as np
    import torch

    from topograph.analysis.evaluate_meso_synthetic import evaluate_synthetic
    from topograph.meso.config import preset_config, replace_settings
    from topograph.meso.reconstruct import reconstruct
    from topograph.meso.types import ExifInfo, MesoImages
    from topograph.synth.meso import MesoSynthConfig, render_meso_sequence

    torch.set_num_threads(1)
    seq = render_meso_sequence(MesoSynthConfig(image_size=size, seed=seed, **effect_settings(effect)))
    t = seq.truth
    exif = ExifInfo(focal_mm=t.focal_mm, pixel_pitch_um=t.pixel_pitch_mm * 1000.0)
    cfg = replace_settings(
        preset_config(preset), {"threads": 1, "scale.magnification": float(t.magnifications[0]), **settings}
    )
    cfg = with_rounds(cfg, rounds or [])
    c0, w0 = os.times(), time.perf_counter()
    rec = reconstruct(MesoImages(seq.names, seq.images, (exif,) * len(seq.names)), cfg)
    c1, w1 = os.times(), time.perf_counter()
    ev = evaluate_synthetic(rec, t, erode_px=3)
    skew = None
    if t.rolling_px_per_row is not None:  # recovered row shifts against the truth's, common part removed (a gauge)
        est = rec.model.rolling_shifts().detach().numpy().astype(float)
        true = t.rolling_shift_px_per_row()
        err = (est - est.mean(0)) - (true - true.mean(0))
        skew = {
            "true_rms": float(np.sqrt(np.mean((true - true.mean(0)) ** 2))),
            "error_rms": float(np.sqrt(np.mean(err**2))),
        }
    return {
        "effect": effect,
        "settings": settings,
        "rounds": rounds or [],
        "accuracy_gsd": round(ev.table1.mean_accuracy / ev.gsd_um, 3),
        "precision_gsd": round(ev.table1.mean_precision / ev.gsd_um, 3),
        "rescale": round(ev.table1.rescale, 3),
        "registration_max_px": round(float(ev.registration_px.max()), 3),
        "registration_px": [round(float(v), 2) for v in ev.registration_px],
        "blurry": list(rec.checks.blurry),
        "rolling_skew_px_per_row": skew,
        "status": rec.quality.status,
        "wall_s": round(w1 - w0, 1),
        "cpu_s": round((c1.user + c1.system) - (c0.user + c0.system), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--effects", nargs="+", default=list(EFFECTS), help="effects, or combinations like rolling+blur")
    p.add_argument("--size", default="320x240", help="image size WxH")
    p.add_argument("--preset", default="fast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="config override key=value (JSON value)")
    p.add_argument("--round", action="append", default=[], help="round override NAME.FIELD=VALUE or NAME.train-=GROUP")
    p.add_argument("--verbose", action="store_true", help="log the engine's steps (INFO) to stderr")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    size = tuple(int(v) for v in a.size.lower().split("x"))
    settings = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        try:
            settings[k] = json.loads(v)
        except json.JSONDecodeError:
            settings[k] = v
    for effect in a.effects:
        effect_settings(effect)  # an unknown name stops here, before any run
    for effect in a.effects:
        print(json.dumps(run(effect, size, a.preset, a.seed, settings, a.round)), flush=True)


if __name__ == "__main__":
    main()
