"""Per-stage feature residuals of a real, feature-initialised meso run (issue 18, point 3: the aerial series).

Runs :func:`topograph.meso.reconstruct.reconstruct` on a folder of photos (EXIF intrinsics) and records,
after the initialisation, each round and the flow step, the median misfit of every photo's SIFT inlier
matches under the current cameras (:func:`topograph.meso.quality.link_residuals`, flat back-projection,
pixels of the input images), then the registration gate per photo. Prints one JSON line per stage and one
with the gate figures::

    python benchmarks/meso_aerial_stages.py /tmp/aerial900 --set loss.tie_weight=1e-3 --set loss.tie_scale=2

``--init-cache FILE`` keeps the checks and initialisation (the SIFT matching of all pairs) between runs
of one folder. Timings are whole-process CPU seconds (other jobs may run beside it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pickle
import resource
import sys
import time
from pathlib import Path


def _stats(names: tuple[str, ...], residual_px) -> dict:
    import numpy as np

    ok = np.isfinite(residual_px)
    worst = np.argsort(np.where(ok, -residual_px, np.inf))[:3]
    return {
        "median_px": round(float(np.median(residual_px[ok])), 3),
        "worst": [[Path(names[i]).stem, round(float(residual_px[i]), 2)] for i in worst if ok[i]],
        "per_image": {Path(n).stem: round(float(r), 2) for n, r in zip(names, residual_px, strict=True)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--set", action="append", default=[], help="dotted config key=value (YAML value)")
    p.add_argument("--preset", default="default")
    p.add_argument("--init-cache", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import torch
    import yaml

    from topograph.meso.config import preset_config, replace_settings
    from topograph.meso.data import load_images
    from topograph.meso.optimise import rounds as rounds_mod
    from topograph.meso.quality import link_residuals

    rec_mod = importlib.import_module("topograph.meso.reconstruct")  # the package exports the function

    torch.set_num_threads(1)
    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = replace_settings(preset_config(args.preset), {"threads": 1, "checks.gates": "mark", **sets})
    images = load_images(sorted(args.folder.glob("*.jpg")))
    state: dict = {}
    stages: list[dict] = []

    def record(stage: str, model) -> None:
        init = state["init"]
        res = link_residuals(model, init.links, len(state["names"]))
        row = {"stage": stage, **_stats(state["names"], res)}
        stages.append(row)
        print(json.dumps(row), flush=True)

    original_init = rec_mod.check_and_initialise

    def cached_init(images, cfg):
        if args.init_cache is not None and args.init_cache.exists():
            out = pickle.loads(args.init_cache.read_bytes())
            logging.info("initialisation read from %s", args.init_cache)
            # the cache holds the kept images' pixels too; the configuration is this run's (reference renumbered)
            ref = {"scale.reference_image": out[4].scale.reference_image}
            out = (*out[:4], replace_settings(cfg, ref))
        else:
            out = original_init(images, cfg)
            if args.init_cache is not None:
                args.init_cache.write_bytes(pickle.dumps(out))
        state["init"], state["names"] = out[3], out[0].names
        return out

    original_start = rec_mod.start_model

    def start_model(*a, **k):
        model = original_start(*a, **k)
        record("feature initialisation", model)
        return model

    original_solve = rounds_mod.solve_round

    def solve_round(model, batched, level, *a, **k):
        out = original_solve(model, batched, level, *a, **k)
        record(f"after the {level.name} round (1/{level.downsample})", model)
        return out

    original_flow = rounds_mod._flow_step

    def flow_step(model, *a, **k):
        out = original_flow(model, *a, **k)
        record("after the flow step", model)
        return out

    rec_mod.check_and_initialise = cached_init
    rec_mod.start_model = start_model
    rounds_mod.solve_round = solve_round
    rounds_mod._flow_step = flow_step

    c0, w0 = os.times(), time.perf_counter()
    rec = rec_mod.reconstruct(images, cfg)
    c1, w1 = os.times(), time.perf_counter()
    q = rec.quality
    record("final (registration check)", rec.model)
    gate = {
        Path(n).stem: [round(float(c), 3), round(float(o), 2)]
        for n, c, o in zip(rec.names, q.registration_ncc, q.registration_overlap, strict=True)
    }
    print(
        json.dumps(
            {
                "status": q.status,
                "failed": [g.line() for g in q.failed],
                "n_images": len(rec.names),
                "ncc_overlap": gate,
                "settings": sets,
                "wall_s": round(w1 - w0, 1),
                "cpu_s": round((c1.user + c1.system) - (c0.user + c0.system), 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
