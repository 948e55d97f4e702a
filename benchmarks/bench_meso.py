"""Benchmark of the mesoscopic engine on a rendered cut-cards sequence (the issue's acceptance case).

Renders 15 images at 1000x750 (not timed), writes them as JPEG with EXIF, then runs the whole process
(`run_meso`: load, checks, initialisation, optimisation, outputs) in a fresh child process per repeat and
prints wall time, peak RSS and the Table-1 / registration / distortion errors against the truth.

    python benchmarks/bench_meso.py                       # default: 1000x750, 5x3 images, all cores
    python benchmarks/bench_meso.py --repeat 3 --compare-none
    python benchmarks/bench_meso.py --config my_schedule.yaml   # any MesoConfig YAML (topograph config init meso)
    python benchmarks/bench_meso.py --raster 7x3 --size 1000x750 --upscale 4032x3024 --preset fast   # 12 MP

``--upscale`` renders at ``--size`` and resamples every JPEG to the given size (EXIF kept: the pixel pitch
follows from PixelXDimension), so 1, 3 and 12 MP runs share one scene, truth and GSD in micrometres; the
poses and the lens are compared in rendered pixels (the upscaled coordinates divided by the factor).
With ``--workdir`` the rendered (and upscaled) images are kept and reused by the next run with the same
scene and size (``data/render.json``). The child samples its resident memory every 0.2 s and reports the
peak of each phase (the span between two log lines), so the stage that sets the peak is named.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path


class MemorySampler(logging.Handler):
    """Resident memory sampled every ``interval_s`` in a thread; each log line starts a phase, and every phase
    keeps its peak RSS, its CPU seconds and its wall seconds (``phases()``)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        super().__init__(logging.INFO)
        import psutil

        self.proc = psutil.Process()
        self.t0 = time.perf_counter()
        self.marks: list[list] = [["start", 0.0, self._cpu(), self._rss()]]  # name, t, cpu, peak
        self._samples_lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self.thread.start()

    def _rss(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def _cpu(self) -> float:
        c = self.proc.cpu_times()
        return c.user + c.system

    def _run(self, interval_s: float) -> None:
        while not self.done.wait(interval_s):
            rss = self._rss()
            with self._samples_lock:
                self.marks[-1][3] = max(self.marks[-1][3], rss)

    def emit(self, record: logging.LogRecord) -> None:
        rss = self._rss()
        with self._samples_lock:
            self.marks[-1][3] = max(self.marks[-1][3], rss)
            self.marks.append([record.getMessage()[:90], time.perf_counter() - self.t0, self._cpu(), rss])

    def phases(self) -> list[dict]:
        self.done.set()
        self.thread.join()
        end = ["end", time.perf_counter() - self.t0, self._cpu(), 0.0]
        out = []
        for a, b in zip(self.marks, [*self.marks[1:], end], strict=True):
            out.append({"after": a[0], "wall_s": b[1] - a[1], "cpu_s": b[2] - a[2], "peak_rss_mb": a[3]})
        return out


class Upscaled:
    """A reconstruction from upscaled images read in the rendered pixels of the truth: pixel ``u`` of the
    rendering is ``(u + 0.5) f - 0.5`` of the upscaled image (the resampling's pixel-centre convention)."""

    def __init__(self, rec, factor: float) -> None:
        self.rec, self.f = rec, factor

    def __getattr__(self, name: str):
        return getattr(self.rec, name)

    def _up(self, uv):
        return (uv + 0.5) * self.f - 0.5

    def ground_points(self, uv, plane_height=None):
        return self.rec.ground_points(self._up(uv), plane_height)

    def undistort_pixels(self, uv):
        return (self.rec.undistort_pixels(self._up(uv)) + 0.5) / self.f - 0.5


def _child(args: dict, queue: mp.Queue) -> None:
    sampler = MemorySampler()
    logging.getLogger("topograph").addHandler(sampler)
    logging.getLogger("topograph").setLevel(logging.INFO)
    from topograph.analysis.evaluate_meso_synthetic import evaluate_synthetic
    from topograph.config import from_yaml
    from topograph.meso.config import MesoConfig, preset_config, replace_settings
    from topograph.meso.pipeline import run_meso
    from topograph.synth.meso import MesoSynthConfig, make_meso_truth

    truth = make_meso_truth(MesoSynthConfig(**args["synth"]))
    paths = sorted(Path(args["images"]).glob("*.jpg"))
    cfg = from_yaml(MesoConfig, args["config"]) if args["config"] else preset_config(args["preset"])
    cfg = replace_settings(
        cfg,
        {
            "threads": args["threads"],
            "scale.magnification": float(truth.magnifications[0]),
            "distortion.model": args["distortion"],
        },
    )
    t0 = time.perf_counter()
    rec = run_meso(paths, args["out"], cfg).reconstruction
    wall = time.perf_counter() - t0
    phases = sampler.phases()  # the run's phases; the evaluation below is not part of the run's peak
    factor = rec.image_size[0] / truth.image_size[0]
    ev = evaluate_synthetic(Upscaled(rec, factor) if factor != 1 else rec, truth, erode_px=args["erode"])
    queue.put({"wall_s": wall, "timings": rec.timings, "phases": phases, **ev.to_dict()})


def upscale(folder: Path, size: tuple[int, int]) -> None:
    """Resample every JPEG in ``folder`` to ``size`` (bicubic), keeping its EXIF."""
    from PIL import Image

    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as im:
            exif = im.info.get("exif", b"")
            big = im.convert("RGB").resize(size, Image.BICUBIC)
        big.save(path, quality=92, exif=exif)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1000x750")
    p.add_argument("--raster", default="5x3")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--erode", type=int, default=4, help="region erosion in mosaic pixels for Table 1")
    p.add_argument("--compare-none", action="store_true", help="also run with --distortion none")
    p.add_argument("--workdir", type=Path, default=None, help="keep data and outputs here")
    p.add_argument("--config", type=Path, default=None, help="MesoConfig YAML for every run (default: the defaults)")
    p.add_argument("--preset", default="default", help="default or fast (when no --config)")
    p.add_argument("--upscale", default=None, help="WxH: resample the rendered JPEGs to this size")
    a = p.parse_args()

    from topograph.synth.meso import MesoSynthConfig, make_meso_truth, render_meso_sequence, write_meso_dataset

    w, h = (int(v) for v in a.size.split("x"))
    cols, rows = (int(v) for v in a.raster.split("x"))
    synth = {"image_size": (w, h), "raster": (cols, rows), "seed": a.seed}
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_meso_"))
    stamp = work / "data" / "render.json"
    key = json.dumps({"synth": synth, "upscale": a.upscale})
    if stamp.is_file() and stamp.read_text() == key:
        print(f"reusing the rendered images in {work / 'data'}")
    else:
        t0 = time.perf_counter()
        stamp.unlink(missing_ok=True)
        data = render_meso_sequence(MesoSynthConfig(**synth))
        write_meso_dataset(data, work / "data")
        print(f"rendered {len(data.names)} images {w}x{h} in {time.perf_counter() - t0:.1f} s -> {work / 'data'}")
        if a.upscale:
            upscale(work / "data" / "images", tuple(int(v) for v in a.upscale.split("x")))
        stamp.write_text(key)
    truth = make_meso_truth(MesoSynthConfig(**synth))
    print(f"GSD {truth.gsd_mm * 1000:.1f} um; card heights {sorted(truth.region_heights_um.values())} um")
    print(f"load average at start {os.getloadavg()[0]:.1f}")

    ctx = mp.get_context("spawn")
    variants = ["piecewise"] + (["none"] if a.compare_none else [])
    results = {}
    for variant in variants:
        runs = []
        for r in range(a.repeat):
            q: mp.Queue = ctx.Queue()
            args = {
                "synth": synth,
                "images": str(work / "data" / "images"),
                "out": str(work / f"out_{variant}_{r}"),
                "threads": a.threads,
                "distortion": variant,
                "erode": a.erode,
                "config": str(a.config) if a.config else None,
                "preset": a.preset,
            }
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (before.ru_utime, before.ru_stime)
            proc = ctx.Process(target=_child, args=(args, q))
            proc.start()
            res = q.get()
            proc.join()
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            res["peak_rss_mb"] = usage.ru_maxrss / 1024.0
            res["cpu_user_s"], res["cpu_system_s"] = usage.ru_utime - cpu[0], usage.ru_stime - cpu[1]
            cpu = (usage.ru_utime, usage.ru_stime)
            res["load_average"] = os.getloadavg()[0]
            runs.append(res)
            top = sorted(res["phases"], key=lambda x: -x["peak_rss_mb"])[:3]
            print("  peak RSS by phase: " + "; ".join(f"{x['peak_rss_mb']:.0f} MB after '{x['after']}'" for x in top))
            slow = sorted(res["phases"], key=lambda x: -x["cpu_s"])[:5]
            print("  CPU by phase: " + "; ".join(f"{x['cpu_s']:.0f} s after '{x['after']}'" for x in slow))
            t1 = res["table1_um"]
            print(
                f"[{variant} run {r}] wall {res['wall_s']:.1f} s, CPU {res['cpu_user_s']:.0f} s user + "
                f"{res['cpu_system_s']:.0f} s system, peak RSS {res['peak_rss_mb']:.0f} MB | "
                f"accuracy {t1['mean_accuracy']:.1f} um ({res['mean_accuracy_gsd']:.2f} GSD), "
                f"precision {t1['mean_precision']:.1f} um ({res['mean_precision_gsd']:.2f} GSD), "
                f"rescale {t1['rescale']:.3f} | registration max {res['registration_max_px']:.2f} px, "
                f"distortion max {res['distortion_max_px']:.2f} px (rms {res['distortion_rms_px']:.2f}) | "
                f"load average {res['load_average']:.1f}"
            )
        walls = sorted(x["wall_s"] for x in runs)
        results[variant] = {"median_wall_s": walls[len(walls) // 2], "runs": runs}
        print(f"[{variant}] median wall time {walls[len(walls) // 2]:.1f} s over {len(runs)} run(s)")
    (work / "bench_meso.json").write_text(json.dumps(results, indent=2))
    print(f"details: {work / 'bench_meso.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
