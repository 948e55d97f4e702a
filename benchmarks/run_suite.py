"""The topograph benchmark suite: topograph and COLMAP side by side on data with ground truth.

    python benchmarks/run_suite.py            # full suite (< 30 min on the 2-core reference machine)
    python benchmarks/run_suite.py --quick    # small datasets, for development

Datasets (generated into the work folder, deterministic): rendered SEM grains at several seeds and sizes,
the real quartz SEM series from ../shared/data when present (no ground truth: time, memory and point
counts only), and rendered mesoscopic cut-card phantoms. Methods: topograph (``run_sem`` / the
mesoscopic engine) and COLMAP through ``pycolmap`` (SIFT, exhaustive matching, incremental mapping;
CPU wheels have no dense MVS, so its sparse points are evaluated). Every method runs in its own
subprocess, timed by wall clock, with its peak resident memory read from ``os.wait4``. Evaluation
uses the same code as ``topograph eval``. The result tables are written into docs/benchmarks.md
between ``<!-- suite:start -->`` and ``<!-- suite:end -->``; raw results go to ``WORK/results.json``.

Not part of the tests: it takes minutes and writes outside the repository's source tree.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TOPOGRAPH_SHARED_DATA", REPO.parent / "shared" / "data"))
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- suite:start -->", "<!-- suite:end -->"

log = logging.getLogger("benchmarks")

# Zhou et al. 2021 (CVPR), Table 1: real cut-card phantom, means over 7 regions, µm.
PAPER_TABLE1 = [
    ("Zhou et al. 2021 (their method)", 26.3, 37.8, None),
    ("COLMAP as reported there", 95.6, 26.2, None),
    ("COLMAP rescaled ×2.65, as reported there", 23.7, 69.5, 2.65),
]


# ----------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: ``kind`` is "sem" (synthetic, with truth), "sem-real" (no truth) or "meso"."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def dataset_plan(quick: bool) -> list[Dataset]:
    """The datasets of a run: SEM grains (2 seeds / sizes), quartz when present, 2 meso phantoms."""
    if quick:
        sem = [Dataset("sem-grain-s1-400px", "sem", {"seed": 1, "size": 400})]
        meso = [Dataset("meso-cards-s0-320px", "meso", {"seed": 0, "image_size": [320, 240], "raster": [3, 2]})]
    else:
        sem = [
            Dataset("sem-grain-s1-600px", "sem", {"seed": 1, "size": 600}),
            Dataset("sem-grain-s2-900px", "sem", {"seed": 2, "size": 900}),
        ]
        # The engine's default schedule costs ~25 CPU-minutes on 15 images of 1000×750 here: the phantoms
        # are rendered at 480×360 (12 images) so that the whole suite fits in 30 minutes.
        meso = [
            Dataset("meso-cards-s0-480px", "meso", {"seed": 0, "image_size": [480, 360], "raster": [4, 3]}),
            Dataset("meso-cards-s1-480px", "meso", {"seed": 1, "image_size": [480, 360], "raster": [4, 3]}),
        ]
    out = list(sem)
    quartz = SHARED_DATA / "sem" / "quartz"
    if (quartz / "Quarz_01.png").is_file():
        out.append(Dataset("sem-quartz-real", "sem-real", {"path": str(quartz)}))
    return out + meso


def make_dataset(ds: Dataset, data_root: Path) -> Path:
    """Render (or locate) a dataset; rendering is skipped when the folder is already complete."""
    if ds.kind == "sem-real":
        return Path(ds.params["path"])
    out = data_root / ds.name
    marker = out / ".complete"
    if marker.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    if ds.kind == "sem":
        from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

        size = int(ds.params["size"])
        series = render_sem_series(
            GrainSpec(seed=int(ds.params["seed"])),
            tilts_deg=(0.0, 5.0, 10.0),
            image_size=(size, size),
            seed=int(ds.params["seed"]),
        )
        save_sem_dataset(series, out)
    elif ds.kind == "meso":
        import cv2

        from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset

        kw: dict[str, Any] = {"seed": int(ds.params["seed"]), "scene": ds.params.get("scene", "cut_cards")}
        if "image_size" in ds.params:
            kw["image_size"] = tuple(ds.params["image_size"])
        if "raster" in ds.params:
            kw["raster"] = tuple(ds.params["raster"])
        data = render_meso_sequence(MesoSynthConfig(**kw))
        write_meso_dataset(data, out)
        ortho = out / "truth" / "ortho.png"
        if not ortho.is_file() and data.truth.texture is not None:
            # the truth image in the label frame, needed to register a result orthomosaic to the labels
            tex = (np.clip(data.truth.texture, 0.0, 1.0) * 255.0).round().astype(np.uint8)
            cv2.imwrite(str(ortho), cv2.cvtColor(tex, cv2.COLOR_RGB2BGR))
    else:
        raise ValueError(f"unknown dataset kind {ds.kind}")
    marker.write_text("ok\n")
    return out


def sem_images(path: Path) -> list[Path]:
    exts = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
    return sorted(p for p in path.iterdir() if p.suffix.lower() in exts and p.is_file())


# ----------------------------------------------------------------------------------------------------
# Workers (run in a subprocess each: `run_suite.py --worker METHOD KIND DATA OUT`)
# ----------------------------------------------------------------------------------------------------


def worker_topograph(kind: str, data: Path, out: Path) -> dict[str, Any]:
    """topograph with its default configuration."""
    if kind in ("sem", "sem-real"):
        from topograph.sem.pipeline import run_sem

        run = run_sem(
            sem_images(data), out, command="benchmarks/run_suite.py (topograph.sem.pipeline.run_sem)", use_cache=False
        )
        info: dict[str, Any] = {"timings_s": run.timings_s, "camera_source": run.reconstruction.camera_source}
        info["n_sparse_points"] = len(run.reconstruction.points)
        info["reprojection_rms_px"] = [float(v) for v in run.reconstruction.rms_px_after]
        return info
    return _topograph_meso(data, out)


def _topograph_meso(data: Path, out: Path) -> dict[str, Any]:
    """The mesoscopic engine with its default configuration, plus the magnification of the first image.

    The magnification is what a user supplies for absolute scale (paper Eqs. 7-8: a reference of known
    size in the first image); the synthetic dataset records it in ``truth/truth.json``. ``run_meso`` writes
    the whole run folder (``topograph meso``'s outputs), which ``topograph eval meso`` reads.
    """
    from topograph.meso.config import MesoConfig, ScaleConfig
    from topograph.meso.pipeline import run_meso

    images = sorted((data / "images").glob("*.jpg"))
    truth_json = data / "truth" / "truth.json"
    magnification = None
    if truth_json.is_file():
        magnification = json.loads(truth_json.read_text()).get("magnification_image0")
    cfg = MesoConfig(scale=ScaleConfig(magnification=magnification))
    run = run_meso(images, out, cfg)
    rec, files = run.reconstruction, run.files
    return {
        "timings_s": rec.timings,
        "height_unit": rec.scale.height_unit,
        "magnification": magnification,
        "files": sorted(files),
        "settings": "MesoConfig() defaults + magnification of image 0",
    }


def _colmap_images(kind: str, data: Path, img_dir: Path) -> list[str]:
    """8-bit copies COLMAP can read (SEM TIFFs are 16-bit); meso JPEGs are linked as they are."""
    import cv2

    img_dir.mkdir(parents=True, exist_ok=True)
    names = []
    if kind == "meso":
        for p in sorted((data / "images").glob("*.jpg")):
            shutil.copy2(p, img_dir / p.name)
            names.append(p.name)
        return names
    for p in sem_images(data):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            import tifffile

            img = tifffile.imread(p)
        if img.dtype != np.uint8:
            img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255.0).round().astype(np.uint8)
        name = p.stem + ".png"
        cv2.imwrite(str(img_dir / name), img)
        names.append(name)
    return names


def worker_colmap(kind: str, data: Path, out: Path) -> dict[str, Any]:
    """COLMAP (pycolmap): SIFT on CPU, exhaustive matching, incremental mapping; sparse points.

    Meso: COLMAP's defaults (SIMPLE_RADIAL camera, focal from EXIF). SEM: COLMAP's pinhole model cannot
    represent the affine SEM cameras; its defaults fail to initialise on 3 views 5° apart, so the
    attempts go from the defaults to a long fixed focal length (near-orthographic) with the initial-pair
    and triangulation-angle thresholds relaxed; the first attempt that registers every image is kept.
    """
    import pycolmap

    out.mkdir(parents=True, exist_ok=True)
    img_dir = out / "images"
    names = _colmap_images(kind, data, img_dir)
    first = img_dir / names[0]
    import cv2

    h, w = cv2.imread(str(first), cv2.IMREAD_GRAYSCALE).shape[:2]
    if kind == "meso":
        attempts: list[dict[str, Any]] = [{"label": "defaults"}]
    else:
        attempts = [
            {"label": "defaults, relaxed init", "relax": True},
            {"label": "SIMPLE_PINHOLE f=5·width fixed, relaxed thresholds", "focal_factor": 5.0, "relax": True},
            {"label": "SIMPLE_PINHOLE f=3·width fixed, relaxed thresholds", "focal_factor": 3.0, "relax": True},
        ]
    tried = []
    best = None
    for att in attempts:
        work = out / f"attempt_{len(tried)}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        db = work / "database.db"
        reader = pycolmap.ImageReaderOptions()
        if "focal_factor" in att:
            reader.camera_model = "SIMPLE_PINHOLE"
            reader.camera_params = f"{att['focal_factor'] * w},{w / 2.0},{h / 2.0}"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.use_gpu = False
        extraction.num_threads = 2
        pycolmap.extract_features(
            db,
            img_dir,
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.num_threads = 2
        opts.random_seed = 0
        if att.get("relax"):
            opts.mapper.init_min_tri_angle = 0.5
            opts.mapper.init_min_num_inliers = 30
            opts.mapper.init_max_forward_motion = 1.0
            opts.min_model_size = 2
        if "focal_factor" in att:
            opts.ba_refine_focal_length = False
            opts.mapper.filter_min_tri_angle = 0.1
            opts.triangulation.min_angle = 0.1
            opts.mapper.ba_local_min_tri_angle = 0.1
        maps = pycolmap.incremental_mapping(db, img_dir, work / "sparse", opts)
        rec = max(maps.values(), key=lambda m: (m.num_reg_images(), m.num_points3D())) if maps else None
        n_reg = rec.num_reg_images() if rec is not None else 0
        tried.append({"attempt": att["label"], "registered": n_reg, "points": rec.num_points3D() if rec else 0})
        if rec is not None and (best is None or n_reg > best[1].num_reg_images()):
            best = (att, rec)
        if n_reg == len(names):
            break
    info: dict[str, Any] = {
        "attempts": tried,
        "n_images": len(names),
        "dense": "not available (pycolmap CPU wheel: no PatchMatch MVS)",
    }
    if best is None:
        info["status"] = "failed: no model"
        return info
    att, rec = best
    xyz = np.array([p.xyz for p in rec.points3D.values()], dtype=float)
    np.save(out / "points.npy", xyz)
    views = []
    for image in rec.images.values():
        pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        r = np.asarray(pose.rotation.matrix(), dtype=float)
        t = np.asarray(pose.translation, dtype=float)
        views.append({"name": image.name, "rotation": r.tolist(), "centre": (-r.T @ t).tolist()})
    views.sort(key=lambda v: v["name"])
    (out / "cameras.json").write_text(json.dumps({"views": views}, indent=1))
    info.update(
        {
            "status": "ok"
            if rec.num_reg_images() == len(names)
            else f"partial: {rec.num_reg_images()}/{len(names)} images",
            "settings": att["label"],
            "n_points": int(len(xyz)),
            "registered": int(rec.num_reg_images()),
            "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        }
    )
    return info


def run_worker(method: str, kind: str, data: Path, out: Path) -> int:
    """Subprocess entry: run one method on one dataset; write ``worker.json`` into ``out``."""
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    try:
        info = worker_topograph(kind, data, out) if method == "topograph" else worker_colmap(kind, data, out)
        info.setdefault("status", "ok")
    except Exception as exc:  # the suite records any failure of a method and goes on
        import traceback

        info = {"status": f"failed: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    info["inner_wall_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    from topograph.io.atomic import write_json

    write_json(out / "worker.json", info)
    return 0


def run_timed(method: str, ds: Dataset, data: Path, out: Path, timeout_s: float) -> dict[str, Any]:
    """Run a worker in a subprocess; wall time and peak RSS of that process (``os.wait4``)."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, ds.kind, str(data), str(out)]
    log_path = out.parent / f"{out.name}.log"
    t0 = time.perf_counter()
    with log_path.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        deadline = t0 + timeout_s
        status = rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    info: dict[str, Any] = {}
    if (out / "worker.json").is_file():
        info = json.loads((out / "worker.json").read_text())
    elif wall >= timeout_s:
        info = {"status": f"failed: timed out after {timeout_s:.0f} s"}
    else:
        info = {"status": f"failed: exit code {proc.returncode} (see {log_path})"}
    info["wall_s"] = wall
    info["peak_rss_mb"] = rusage.ru_maxrss / 1024.0 if rusage is not None else None  # Linux: KiB
    info["cpu_s"] = rusage.ru_utime + rusage.ru_stime if rusage is not None else None
    return info


# ----------------------------------------------------------------------------------------------------
# Evaluation (same code as `topograph eval`)
# ----------------------------------------------------------------------------------------------------


def evaluate_sem_output(method: str, data: Path, out: Path) -> dict[str, Any]:
    from topograph.analysis.evaluate_sem import evaluate_sem_truth
    from topograph.synth.sem import load_sem_truth

    truth = load_sem_truth(data)
    if method == "topograph":
        from topograph.cli.eval import _read_cameras
        from topograph.io.exports import read_ply

        cloud_path = next((out / n for n in ("dense.ply", "sparse.ply") if (out / n).is_file()), None)
        if cloud_path is None:
            return {"error": "no cloud written"}
        tilts, rots = _read_cameras(out / "cameras.json")
        res = evaluate_sem_truth(read_ply(cloud_path).xyz, truth, recovered_tilts_deg=tilts, recovered_rotations=rots)
        res["cloud"] = cloud_path.name
        return res
    if not (out / "points.npy").is_file():
        return {"error": "no points"}
    xyz = np.load(out / "points.npy")
    cams = json.loads((out / "cameras.json").read_text())["views"]
    rots = [np.asarray(v["rotation"]) for v in cams] if len(cams) == len(truth.cameras) else None
    res = evaluate_sem_truth(xyz, truth, recovered_rotations=rots)
    res["cloud"] = "sparse points"
    return res


def evaluate_colmap_meso(data: Path, out: Path) -> dict[str, Any]:
    """COLMAP's sparse points in the truth frame, evaluated with the same Table-1 code.

    COLMAP's frame (arbitrary similarity) is mapped onto the truth by the least-squares similarity of its
    camera centres to the true camera positions (truth/poses.csv: nadir x, y and height z in mm) — this uses
    the true poses, which only favours COLMAP. Both reflection branches are tried (the truth frame is
    left-handed); the one placing the points below the cameras is kept. Points then give heights
    ``z`` (µm) at label-raster pixels ``((x, y) − origin) / texel``; pixels with points are averaged
    (:func:`rasterize_points`) and the regions' statistics computed as for a height map.
    """
    import csv

    from topograph.analysis.evaluate_meso import load_meso_truth, rasterize_points, table1

    if not (out / "points.npy").is_file():
        return {"error": "no points"}
    truth = load_meso_truth(data)
    xyz = np.load(out / "points.npy")
    cams = {v["name"]: np.asarray(v["centre"]) for v in json.loads((out / "cameras.json").read_text())["views"]}
    with (data / "truth" / "poses.csv").open() as fh:
        poses = {
            r["image"]: np.array([float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])]) for r in csv.DictReader(fh)
        }
    common = sorted(set(cams) & set(poses))
    if len(common) < 3:
        return {"error": f"only {len(common)} registered cameras"}
    src = np.array([cams[n] for n in common])
    dst = np.array([poses[n] for n in common])
    best = None
    for flip in (False, True):
        a, s, t = _fit_branch(src, dst, flip)
        pts = s * xyz @ a.T + t
        cam_resid = float(np.sqrt(np.mean(np.sum((s * src @ a.T + t - dst) ** 2, axis=1))))
        below = float(np.median(pts[:, 2])) < float(np.median(dst[:, 2]))
        key = (not below, cam_resid)
        if best is None or key < best[0]:
            best = (key, pts, cam_resid, s)
    assert best is not None
    _, pts, cam_resid, s = best
    doc = json.loads((data / "truth" / "truth.json").read_text())
    origin = np.asarray(doc["raster"]["origin_mm"], dtype=float)
    texel = float(doc["raster"]["pixel_size_mm"])
    xy_px = (pts[:, :2] - origin) / texel
    raster = rasterize_points(xy_px, pts[:, 2] * 1000.0, truth.labels.shape)
    tab = table1(truth.labels, truth.region_heights_um, raster, truth.region_names, erode_px=3, min_pixels=3).to_dict()
    inside = np.isfinite(raster)
    return {
        "table1": tab,
        "camera_alignment_rms_mm": cam_resid,
        "n_points": int(len(xyz)),
        "points_in_raster": int(inside.sum()),
        "coverage": float(np.mean(inside[np.isin(truth.labels, list(truth.region_heights_um))])),
        "note": "sparse points; frame from camera centres vs true poses; coverage = labelled texels holding a point",
    }


def _fit_branch(src: np.ndarray, dst: np.ndarray, flip: bool) -> tuple[np.ndarray, float, np.ndarray]:
    from topograph.analysis.evaluate_sem import MIRROR, weighted_similarity

    m = MIRROR if flip else np.eye(3)
    r, s, t = weighted_similarity(src @ m.T, dst)
    return r @ m, s, t


def count_points(method: str, out: Path) -> dict[str, Any]:
    """No truth (real series): the size of the cloud that would be evaluated."""
    if method == "topograph":
        from topograph.io.exports import read_ply

        cloud = next((out / n for n in ("dense.ply", "sparse.ply") if (out / n).is_file()), None)
        return {"n_points": len(read_ply(cloud)), "cloud": cloud.name} if cloud else {}
    return (
        {"n_points": int(len(np.load(out / "points.npy"))), "cloud": "sparse points"}
        if (out / "points.npy").is_file()
        else {}
    )


def evaluate_output(method: str, ds: Dataset, data: Path, out: Path, run: dict[str, Any]) -> dict[str, Any]:
    if not str(run.get("status", "")).startswith(("ok", "partial")):
        return {}
    try:
        if ds.kind == "sem-real":
            return count_points(method, out)
        if ds.kind == "sem":
            return evaluate_sem_output(method, data, out)
        if ds.kind == "meso":
            if method == "topograph":
                from topograph.analysis.evaluate_meso import evaluate_meso, load_meso_result, load_meso_truth

                return evaluate_meso(load_meso_result(run_dir=out), load_meso_truth(data)).to_dict()
            return evaluate_colmap_meso(data, out)
    except Exception as exc:  # recorded in the table, the suite goes on
        log.exception("evaluation of %s on %s failed", method, ds.name)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {}


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    versions = [f"Python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("torch", "cv2", "pycolmap"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} not installed")
    return f"{cpu}, {os.cpu_count()} logical cores{mem}, {platform.system()} {platform.release()}; " + ", ".join(
        versions
    )


def _f(v: Any, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return format(v, fmt)


def render_tables(results: list[dict[str, Any]], command: str, started: str, total_s: float, colmap_note: str) -> str:
    lines = [
        START,
        "",
        f"Generated by `{command}` on {started} (whole suite {total_s / 60:.1f} min).",
        "",
        f"Machine: {machine_description()}.",
        "",
        colmap_note,
        "",
        "### SEM: cloud vs true surface",
        "",
        "Similarity alignment with the mirror allowed (robust ICP); distances to the exact true surface in % of the",
        "grain's equivalent diameter; *grain* = points over the grain footprint; completeness = visible grain",
        "points with a cloud point within 1 % of the diameter; scale = alignment scale (1 = correct absolute",
        "scale); tilt error = largest error of the recovered relative rotation angles; reproj. = reprojection",
        "error of the sparse points (topograph: largest per-view RMS after bundle adjustment; COLMAP: its mean).",
        "The real quartz series has no ground truth: only time, memory, points and reprojection error.",
        "",
        "| dataset | method | status | points | RMS % | median % | grain RMS % | grain median % | completeness "
        "| scale | tilt err ° | reproj. px | wall s | CPU s | peak MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["kind"] not in ("sem", "sem-real"):
            continue
        ev, run = r.get("evaluation", {}), r["run"]
        grain = ev.get("groups", {}).get("grain", {})
        n_points = ev.get("n_points", run.get("n_points", run.get("n_sparse_points")))
        tilt = ev.get("rotations", {}).get("max_abs_error_deg")
        reproj = run.get("mean_reprojection_error_px")
        if reproj is None and run.get("reprojection_rms_px"):
            reproj = float(np.max(run["reprojection_rms_px"]))
        status = _status(run, ev)
        lines.append(
            f"| {r['dataset']} | {r['method']} | {status} | {n_points if n_points is not None else '—'} | "
            f"{_f(ev.get('rms_distance_pct'))} | {_f(ev.get('median_distance_pct'))} | "
            f"{_f(grain.get('rms_distance_pct'))} | "
            f"{_f(grain.get('median_distance_pct'))} | {_f(ev.get('completeness'), '.1%')} | "
            f"{_f(ev.get('alignment', {}).get('scale'), '.3f')} | {_f(tilt, '.3f')} | {_f(reproj, '.2f')} | "
            f"{_f(run.get('wall_s'), '.1f')} | {_f(run.get('cpu_s'), '.1f')} | "
            f"{_f(run.get('peak_rss_mb'), '.0f')} |"
        )
    lines += [
        "",
        "### Mesoscopic: Table-1 protocol (µm)",
        "",
        "Mean over regions (background + 6 cards) of the accuracy |mean + Δh − h_true| and the precision (std)",
        "after the one global shift Δh; rescale = optimal factor cov(h_true, h_est)/var(h_est) (1 = ideal);",
        'rescaled = the same after that factor (the paper\'s "CM (scaled)"); coverage = labelled area with a height',
        "(COLMAP: with a sparse point). topograph: orthomosaic registered to the truth image, regions eroded by",
        "3 px. COLMAP: sparse points put in the truth frame by the similarity of its camera centres to the true",
        "camera positions, heights per region from the points that fall in it.",
        "",
        "| dataset | method | status | accuracy | precision | rescale | rescaled acc. | rescaled prec. | coverage "
        "| wall s | CPU s | peak MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["kind"] != "meso":
            continue
        ev, run = r.get("evaluation", {}), r["run"]
        tab = ev.get("table1", {})
        resc = tab.get("rescaled", {})
        lines.append(
            f"| {r['dataset']} | {r['method']} | {_status(run, ev)} | {_f(tab.get('mean_accuracy_um'), '.1f')} | "
            f"{_f(tab.get('mean_precision_um'), '.1f')} | {_f(tab.get('rescale'), '.3f')} | "
            f"{_f(resc.get('mean_accuracy_um'), '.1f')} | {_f(resc.get('mean_precision_um'), '.1f')} | "
            f"{_f(ev.get('coverage'), '.1%')} | {_f(run.get('wall_s'), '.1f')} | {_f(run.get('cpu_s'), '.1f')} | "
            f"{_f(run.get('peak_rss_mb'), '.0f')} |"
        )
    for name, acc, prec, resc in PAPER_TABLE1:
        lines.append(
            f"| real cut cards (paper, GPU) | {name} | published | {acc:.1f} | {prec:.1f} | {_f(resc, '.2f')} "
            "| — | — | — | — | — | — |"
        )
    colmap_rows = [r for r in results if r["method"] == "colmap" and r["run"].get("settings")]
    if colmap_rows:
        lines += [
            "",
            "COLMAP settings that produced each model (first of the attempts that registered every image):",
            "",
        ]
        lines += [f"- {r['dataset']}: {r['run']['settings']}" for r in colmap_rows]
    lines += [
        "",
        "The paper's rows are quoted from Zhou et al. 2021, Table 1 (a real phantom of cut playing cards measured",
        "with calipers, card heights 295–625 µm, GPU); the synthetic phantoms here have card heights of 4–14",
        "ground-sample distances, so the numbers are comparable in kind, not in value.",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def _status(run: dict[str, Any], ev: dict[str, Any]) -> str:
    s = str(run.get("status", "?"))
    if "error" in ev:
        s = f"eval failed: {ev['error']}"
    s = s.replace("|", "/").replace("\n", " ")
    return s if len(s) <= 60 else s[:57] + "…"


def write_doc(block: str, doc: Path = DOC) -> None:
    """Replace the text between the suite markers (or append the block); the rest of the file is kept."""
    from topograph.io.atomic import write_text

    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    write_text(doc, text)


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------


def colmap_available() -> tuple[bool, str]:
    try:
        import pycolmap
    except ImportError:
        return False, "COLMAP: pycolmap is not installed here (`pip install pycolmap`), so only topograph ran."
    return True, (
        f"COLMAP: pycolmap {pycolmap.__version__} (CPU wheel; no CUDA, so no PatchMatch dense MVS: "
        "its sparse points are "
        "evaluated). SIFT on CPU, exhaustive matching, incremental mapping; settings per dataset in WORK/results.json."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        method, kind, data, out = argv[1:5]
        return run_worker(method, kind, Path(data), Path(out))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small datasets, for development")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "topograph-bench")
    ap.add_argument("--no-colmap", action="store_true", help="skip COLMAP")
    ap.add_argument("--only", choices=["sem", "meso"], help="only the SEM or the mesoscopic datasets")
    ap.add_argument("--timeout", type=float, default=900.0, help="per-method time limit, seconds")
    ap.add_argument(
        "--reevaluate",
        action="store_true",
        help="run no method: evaluate the outputs already in WORK/runs again (timings kept from WORK/results.json) "
        "and rewrite the tables",
    )
    ap.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="markdown file whose suite block is rewritten (default docs/benchmarks.md; WORK/benchmarks-quick.md "
        "with --quick, so development runs leave the published table alone)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("topograph").setLevel(logging.WARNING)

    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python benchmarks/run_suite.py" + (" " + shlex.join(argv) if argv else "")
    has_colmap, colmap_note = colmap_available()
    methods = ["topograph"] + (["colmap"] if has_colmap and not args.no_colmap else [])
    if args.no_colmap:
        colmap_note = "COLMAP: skipped (--no-colmap)."
    plan = [d for d in dataset_plan(args.quick) if args.only is None or d.kind.startswith(args.only)]
    work = args.work.resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    if args.reevaluate:
        return reevaluate(work, plan, args, colmap_note)
    results: list[dict[str, Any]] = []
    for ds in plan:
        t0 = time.perf_counter()
        try:
            data = make_dataset(ds, work / "data")
        except Exception as exc:  # a generator failure is recorded, the suite goes on
            log.exception("dataset %s could not be made", ds.name)
            for m in methods:
                results.append({"dataset": ds.name, "kind": ds.kind, "method": m, "run": {"status": f"no data: {exc}"}})
            continue
        log.info("dataset %s ready (%.1f s)", ds.name, time.perf_counter() - t0)
        for method in methods:
            out = work / "runs" / ds.name / method
            run = run_timed(method, ds, data, out, args.timeout)
            log.info(
                "%s on %s: %s in %.1f s, peak %.0f MB",
                method,
                ds.name,
                run.get("status"),
                run["wall_s"],
                run["peak_rss_mb"] or 0,
            )
            ev = evaluate_output(method, ds, data, out, run)
            results.append(
                {
                    "dataset": ds.name,
                    "kind": ds.kind,
                    "method": method,
                    "params": ds.params,
                    "run": run,
                    "evaluation": ev,
                }
            )
            _log_summary(ds, method, ev)
    total = time.perf_counter() - t_start
    from topograph.io.atomic import write_json

    write_json(work / "results.json", {"command": command, "started": started, "total_s": total, "results": results})
    doc = args.doc or (work / "benchmarks-quick.md" if args.quick else DOC)
    write_doc(render_tables(results, command, started, total, colmap_note), doc)
    log.info("suite done in %.1f min: %s, %s", total / 60.0, doc, work / "results.json")
    return 0


def reevaluate(work: Path, plan: list[Dataset], args: argparse.Namespace, colmap_note: str) -> int:
    """Evaluate the stored runs again with the current evaluation code and rewrite the tables."""
    from topograph.io.atomic import write_json

    stored = json.loads((work / "results.json").read_text())
    by_name = {d.name: d for d in plan}
    for r in stored["results"]:
        ds = by_name.get(r["dataset"])
        if ds is None:
            continue
        data = Path(ds.params["path"]) if ds.kind == "sem-real" else work / "data" / ds.name
        r["evaluation"] = evaluate_output(r["method"], ds, data, work / "runs" / ds.name / r["method"], r["run"])
        _log_summary(ds, r["method"], r["evaluation"])
    write_json(work / "results.json", stored)
    doc = args.doc or (work / "benchmarks-quick.md" if args.quick else DOC)
    write_doc(
        render_tables(stored["results"], stored["command"], stored["started"], stored["total_s"], colmap_note), doc
    )
    log.info("re-evaluated %d runs: %s", len(stored["results"]), doc)
    return 0


def _log_summary(ds: Dataset, method: str, ev: dict[str, Any]) -> None:
    if "error" in ev:
        log.info("  evaluation failed: %s", ev["error"])
    elif ds.kind == "sem" and ev:
        log.info(
            "  RMS %.2f %%, median %.2f %%, completeness %.1f %%",
            ev["rms_distance_pct"],
            ev["median_distance_pct"],
            100 * ev["completeness"],
        )
    elif ds.kind == "meso" and ev:
        t = ev["table1"]
        log.info(
            "  accuracy %.1f µm, precision %.1f µm, rescale %.3f",
            t["mean_accuracy_um"],
            t["mean_precision_um"],
            t["rescale"],
        )


if __name__ == "__main__":
    sys.exit(main())
