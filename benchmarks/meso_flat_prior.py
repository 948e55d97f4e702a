"""The flat-scene prior of the flow step's camera refinement on curved specimens (issue 18, point 7).

Renders the ``dome`` phantom (the textured background curved as one paraboloid cap over the whole scene,
peak ``A`` GSD, corners at 0) for each amplitude, reconstructs it with each ``heights.flow.flat_weight``
and prints one JSON line per run: the height map's RMS error after the one global shift and the fraction
of the relief recovered (``relief_ratio``, 1 = full size, below 1 = flattened):

    python benchmarks/meso_flat_prior.py --amplitudes 4 12 36 --weights 0.3 0.1 0

Timings are whole-reconstruction wall and CPU seconds of this process (other jobs may run beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time


def run(scene: str, amplitude_gsd: float, flat_weight: float, size: tuple[int, int], preset: str, seed: int) -> dict:
    import torch

    from topograph.analysis.evaluate_meso_synthetic import evaluate_relief
    from topograph.meso.config import preset_config, replace_settings
    from topograph.meso.reconstruct import reconstruct
    from topograph.meso.types import ExifInfo, MesoImages
    from topograph.synth.meso import MesoSynthConfig, render_meso_sequence

    torch.set_num_threads(1)
    seq = render_meso_sequence(
        MesoSynthConfig(scene=scene, image_size=size, seed=seed, relief_amplitude_gsd=amplitude_gsd)  # type: ignore[arg-type]
    )
    t = seq.truth
    exif = ExifInfo(focal_mm=t.focal_mm, pixel_pitch_um=t.pixel_pitch_mm * 1000.0)
    cfg = replace_settings(
        preset_config(preset),
        {"threads": 1, "scale.magnification": float(t.magnifications[0]), "heights.flow.flat_weight": flat_weight},
    )
    c0, w0 = os.times(), time.perf_counter()
    rec = reconstruct(MesoImages(seq.names, seq.images, (exif,) * len(seq.names)), cfg)
    c1, w1 = os.times(), time.perf_counter()
    ev = evaluate_relief(rec, t)
    out = {"scene": scene, "amplitude_gsd": amplitude_gsd, "flat_weight": flat_weight}
    out.update({k: round(v, 4) if isinstance(v, float) else v for k, v in ev.to_dict().items()})
    out.update(
        status=rec.quality.status,
        wall_s=round(w1 - w0, 1),
        cpu_s=round((c1.user + c1.system) - (c0.user + c0.system), 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", default="dome", choices=("dome", "relief"))
    p.add_argument("--amplitudes", type=float, nargs="+", default=[4.0, 12.0, 36.0], help="peak height, GSD")
    p.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.1, 0.0], help="heights.flow.flat_weight")
    p.add_argument("--size", default="320x240", help="image size WxH")
    p.add_argument("--preset", default="fast")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    size = tuple(int(v) for v in a.size.lower().split("x"))
    for amp in a.amplitudes:
        for wgt in a.weights:
            print(json.dumps(run(a.scene, amp, wgt, size, a.preset, a.seed)), flush=True)


if __name__ == "__main__":
    main()
