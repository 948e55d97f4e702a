"""``topograph eval sem|meso``: score a reconstruction against ground truth (table or ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from topograph.errors import TopographError

console = Console(stderr=True)
out_console = Console()


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.{digits}f}"
    return str(v)


def check_result_file(out: Path | None) -> None:
    """``-o`` of ``eval`` names a JSON file: refuse a folder or a path under a file before evaluating."""
    if out is None:
        return
    if str(out).strip() in ("", "."):
        raise TopographError(f"-o must name a JSON file, got '{out}'", "e.g. -o result.json")
    if out.is_dir():
        raise TopographError(f"-o {out} is an existing folder", f"name a file, e.g. -o {out / 'eval.json'}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TopographError(f"-o {out} lies under {parent}, which is a file", "choose another -o")
    import os

    if not os.access(parent, os.W_OK | os.X_OK):
        raise TopographError(f"cannot write {out}: {parent} is not writable", "choose a folder you can write to")


def _emit(result: dict[str, Any], as_json: bool, out: Path | None) -> None:
    from topograph.io.atomic import to_jsonable, write_json

    if out is not None:
        write_json(out, result)
        console.print(f"[green]written[/] {out}")
    if as_json:
        out_console.print_json(json.dumps(to_jsonable(result)))


# ----------------------------------------------------------------------------------------------------
# SEM
# ----------------------------------------------------------------------------------------------------


def _read_cameras(path: Path) -> tuple[list[float] | None, list[np.ndarray] | None]:
    """Relative tilts and rotations from a topograph ``cameras.json`` (or a list of views with those keys)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TopographError(f"cannot read cameras file {path}: {exc}", "give the cameras.json of a run") from exc
    views = doc.get("views") if isinstance(doc, dict) else doc
    if not isinstance(views, list) or not views:
        raise TopographError(f"{path} has no 'views' list", "give the cameras.json written by `topograph sem`")
    tilts = [v.get("relative_tilt_deg") for v in views]
    rots = [v.get("rotation") for v in views]
    return (
        [float(t) for t in tilts] if all(t is not None for t in tilts) else None,
        [np.asarray(r, dtype=float) for r in rots] if all(r is not None for r in rots) else None,
    )


def _read_axis(path: Path) -> float | None:
    """The run's tilt-axis direction (``tilt_axis_deg`` of a topograph ``cameras.json``), if any."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    axis = doc.get("tilt_axis_deg") if isinstance(doc, dict) else None
    return float(axis) if isinstance(axis, (int, float)) else None


def _run_pixel_size_um(path: Path) -> float | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = doc.get("pixel_size_um") if isinstance(doc, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def pixel_size_mismatch(run_um: float | None, truth_um: float, rel_tol: float = 0.01) -> str | None:
    """A one-line warning when the run's pixel size differs from the truth's by more than ``rel_tol``."""
    if run_um is None or abs(run_um - truth_um) <= rel_tol * truth_um:
        return None
    return (
        f"the run's pixel size {run_um:.5g} µm differs from the truth's {truth_um:.5g} µm "
        f"({100 * (run_um / truth_um - 1):+.1f} %): the distances hold only after the fitted scale"
    )


def resolve_sem_inputs(cloud: Path | None, cameras: Path | None, run: Path | None) -> tuple[Path, Path | None]:
    """The cloud and cameras files, from explicit paths or a run folder (dense.ply, else sparse.ply)."""
    if run is not None:
        if not run.is_dir():
            raise TopographError(f"run folder {run} not found", "give the output folder of `topograph sem`")
        cloud = cloud or next((run / n for n in ("dense.ply", "sparse.ply") if (run / n).is_file()), None)
        cameras = cameras or ((run / "cameras.json") if (run / "cameras.json").is_file() else None)
    if cloud is None:
        raise TopographError("no cloud given", "pass --cloud CLOUD.ply or --run RUN_FOLDER")
    return cloud, cameras


def evaluate_sem_files(
    truth: Path,
    cloud: Path,
    cameras: Path | None = None,
    *,
    mode: str = "similarity",
    allow_mirror: bool = True,
    tol_fraction: float = 0.01,
) -> dict[str, Any]:
    """Evaluate a PLY cloud against a ``synth sem`` dataset or a hand-made truth surface file."""
    from topograph.analysis.evaluate_sem import evaluate_cloud, evaluate_sem_truth, load_truth_surface
    from topograph.io.exports import read_ply

    pc = read_ply(cloud)
    tilts, rots = _read_cameras(cameras) if cameras is not None else (None, None)
    if truth.is_file() and truth.suffix.lower() != ".json":
        surface = load_truth_surface(truth)
        res = evaluate_cloud(
            pc.xyz, surface, None, None, mode, completeness_tol_fraction=tol_fraction, allow_mirror=allow_mirror
        )
        res["specimen_size_definition"] = "largest principal extent of the truth surface"
        res["unit"] = "truth file unit"
        if tilts is not None:
            res["note"] = "a surface-file truth has no cameras: tilt errors are not computed"
    else:
        from topograph.synth.sem import load_sem_truth

        t = load_sem_truth(truth)
        run_px = _run_pixel_size_um(cameras) if cameras is not None else None
        mismatch = pixel_size_mismatch(run_px, float(t.pixel_size_um))
        if mismatch and mode == "rigid":
            raise TopographError(mismatch, "evaluate with --mode similarity, or against the truth of this series")
        res = evaluate_sem_truth(
            pc.xyz,
            t,
            mode=mode,  # type: ignore[arg-type]
            allow_mirror=allow_mirror,
            recovered_tilts_deg=tilts,
            recovered_rotations=rots,
            completeness_tol_fraction=tol_fraction,
            recovered_tilt_axis_deg=_read_axis(cameras) if cameras is not None else None,
        )
        if mismatch:
            res.setdefault("warnings", []).append(mismatch)
            console.print(f"[yellow]warning:[/] {mismatch}")
    res["cloud"] = str(cloud)
    res["cloud_unit"] = pc.unit
    res["cameras"] = str(cameras) if cameras else None
    res["truth_path"] = str(truth)
    return res


def print_sem_table(res: dict[str, Any]) -> None:
    unit = res.get("unit", "")
    unit = "µm" if unit == "um" else unit
    table = Table(title=f"SEM cloud vs ground truth ({res['n_points']} points)", title_justify="left")
    table.add_column("points")
    for col in (f"RMS {unit}", "RMS %", f"median {unit}", "median %", f"p95 {unit}", "p95 %"):
        table.add_column(col, justify="right")
    rows = [("all", res)] + [(name, g) for name, g in res.get("groups", {}).items()]
    for name, g in rows:
        label = f"{name} ({g['n']})" if "n" in g else name
        table.add_row(
            label,
            _fmt(g["rms_distance"]),
            _fmt(g["rms_distance_pct"]),
            _fmt(g["median_distance"]),
            _fmt(g["median_distance_pct"]),
            _fmt(g["p95_distance"]),
            _fmt(g["p95_distance_pct"]),
        )
    out_console.print(table)
    al = res["alignment"]
    out_console.print(
        f"% of the specimen size {res['specimen_size']:.4g} {unit} ({res.get('specimen_size_definition', '')}); "
        f"completeness {100 * res['completeness']:.1f} % within {res['completeness_tol']:.3g} {unit}"
    )
    out_console.print(
        f"alignment: scale {al['scale']:.5f} (1 = correct absolute scale), mirrored {al['mirrored']}, "
        f"ICP residual {al['icp_rms']:.3g}"
    )
    if "tilts" in res:
        t = res["tilts"]
        errs = ", ".join(f"{e:+.3f}" for e in t["errors_deg"])
        flip = " (sign flipped: mirror branch)" if t["sign_flipped"] else ""
        out_console.print(f"relative tilt errors °: {errs}; max |error| {t['max_abs_error_deg']:.3f}°{flip}")
    if "rotations" in res:
        out_console.print(f"relative rotation-angle errors: max |error| {res['rotations']['max_abs_error_deg']:.3f}°")


# ----------------------------------------------------------------------------------------------------
# Meso
# ----------------------------------------------------------------------------------------------------


def print_meso_table(res: dict[str, Any]) -> None:
    tab = res["table1"]
    unit = "µm" if res.get("height_unit", "um") == "um" else str(res.get("height_unit"))
    table = Table(title=f"Height accuracy and precision per region (Table 1 style), {unit}", title_justify="left")
    for col, just in (
        ("region (G.T.)", "left"),
        ("mean", "right"),
        ("Acc.", "right"),
        ("Prec.", "right"),
        ("Acc. rescaled", "right"),
        ("Prec. rescaled", "right"),
        ("pixels", "right"),
    ):
        table.add_column(col, justify=just)
    for r in tab["regions"]:
        table.add_row(
            f"{r['name']} ({r['true_height_um']:g})",
            _fmt(r["mean_um"], 1),
            _fmt(r["accuracy_um"], 1),
            _fmt(r["precision_um"], 1),
            _fmt(r["rescaled_accuracy_um"], 1),
            _fmt(r["rescaled_precision_um"], 1),
            str(r["n_pixels"]),
        )
    table.add_section()
    table.add_row(
        "mean",
        "",
        _fmt(tab["mean_accuracy_um"], 1),
        _fmt(tab["mean_precision_um"], 1),
        _fmt(tab["rescaled"]["mean_accuracy_um"], 1),
        _fmt(tab["rescaled"]["mean_precision_um"], 1),
        "",
    )
    out_console.print(table)
    reg = res["registration"]
    out_console.print(
        f"global shift Δh {tab['shift_um']:+.1f} {unit}; optimal rescale {_fmt(tab['rescale'], 4)} (1 = ideal); "
        f"coverage {100 * res['coverage']:.1f} %; regions eroded by {res['erode_px']} px"
    )
    out_console.print(
        f"registration ({reg['method']}): scale {reg['scale_result_px_per_truth_px']:.4f} result px / truth px, "
        f"rotation {reg['rotation_deg']:+.2f}°, NCC {_fmt(reg['ncc'])}"
    )
    if res.get("height_unit") not in (None, "um"):
        out_console.print(f"[yellow]heights are in '{res['height_unit']}': only the rescale factor is meaningful[/]")


def register(app: typer.Typer, synth_app: typer.Typer) -> None:
    """Add ``topograph eval sem`` and ``topograph eval meso``."""
    eval_app = typer.Typer(help="Score a reconstruction against ground truth.", no_args_is_help=True)
    app.add_typer(eval_app, name="eval")

    @eval_app.command("sem")
    def eval_sem(
        truth: Path = typer.Option(
            ..., "--truth", help="`topograph synth sem` dataset folder, or a PLY/STL/OBJ of the true surface."
        ),
        cloud: Path | None = typer.Option(None, "--cloud", help="Reconstructed cloud (PLY), in any frame."),
        cameras: Path | None = typer.Option(None, "--cameras", help="cameras.json of the run (tilt errors)."),
        run: Path | None = typer.Option(
            None, "--run", help="Run folder: uses dense.ply (else sparse.ply) and cameras.json."
        ),
        mode: str = typer.Option("similarity", "--mode", help="similarity (estimate the scale) or rigid."),
        no_mirror: bool = typer.Option(
            False, "--no-mirror", help="Skip the mirror fit (it only serves to report a mirrored cloud)."
        ),
        tol: float = typer.Option(
            0.01, "--completeness-tol", help="Completeness tolerance, fraction of the specimen size."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout instead of a table."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Also write the JSON result to this file."),
    ) -> None:
        """Align a cloud to the true surface (proper similarity, robust ICP) and report distances and completeness.

        A mirrored or upside-down cloud is a failure (exit status 1); the mirror fit is computed to say so."""
        if mode not in ("similarity", "rigid"):
            raise TopographError(f"unknown --mode '{mode}'", "use --mode similarity or --mode rigid")
        check_result_file(out)
        cloud_path, cameras_path = resolve_sem_inputs(cloud, cameras, run)
        with console.status("aligning the cloud to the truth"):
            res = evaluate_sem_files(
                truth, cloud_path, cameras_path, mode=mode, allow_mirror=not no_mirror, tol_fraction=tol
            )
        if not as_json:
            print_sem_table(res)
        _emit(res, as_json, out)
        if not res.get("orientation_ok", True):
            what = "the mirror image of the truth" if res.get("mirrored") else "upside down (Z into the substrate)"
            console.print(f"[red]failed[/]: the cloud is {what}")
            raise typer.Exit(1)

    @eval_app.command("meso")
    def eval_meso(
        truth: Path = typer.Option(
            ...,
            "--truth",
            help="`topograph synth meso` dataset, or a folder with labels.png + regions.csv (+ ortho.png).",
        ),
        run: Path | None = typer.Argument(None, help="Run folder of `topograph meso` (height map + orthomosaic)."),
        height: Path | None = typer.Option(None, "--height", help="Result height map (float TIFF)."),
        ortho: Path | None = typer.Option(None, "--ortho", help="Result orthomosaic (PNG/TIFF), co-registered."),
        erode_px: int = typer.Option(3, "--erode-px", help="Shrink every region by this many result pixels."),
        no_refine: bool = typer.Option(False, "--no-refine", help="Skip the ECC refinement of the registration."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout instead of a table."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Also write the JSON result to this file."),
    ) -> None:
        """Register the result to the truth, map the region labels into it and print the Table-1 statistics."""
        from topograph.analysis.evaluate_meso import evaluate_meso, load_meso_result, load_meso_truth

        if erode_px < 0:
            raise TopographError(f"--erode-px must be ≥ 0, got {erode_px}", "e.g. --erode-px 3")
        check_result_file(out)
        t = load_meso_truth(truth)
        result = load_meso_result(height, ortho, run)
        with console.status("registering the result to the truth"):
            res = evaluate_meso(result, t, erode_px=erode_px, refine=not no_refine).to_dict()
        if not as_json:
            print_meso_table(res)
        _emit(res, as_json, out)
