"""``topograph batch``: six generated SEM datasets (one corrupt) on a 2-worker LocalCluster.

Checks the results table against each dataset's ground truth and its own summary.json, the isolated
failure, the skip-on-rerun (nothing recomputed), ``retry_failed`` and the re-run of a repaired dataset,
plus the manifest, fingerprint and table rules on their own.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from topograph.batch import ClusterOptions, DatasetSpec, dataset_fingerprint, read_manifest, run_batch  # noqa: E402
from topograph.batch.manifest import build_specs, datasets_from_glob  # noqa: E402
from topograph.batch.runner import open_client  # noqa: E402
from topograph.batch.table import flatten_summary  # noqa: E402
from topograph.batch.task import DatasetTask, needs_run, read_status, record_lost  # noqa: E402
from topograph.errors import TopographError  # noqa: E402
from topograph.io.atomic import write_json  # noqa: E402
from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset  # noqa: E402

N_GOOD = 5
SIZE = 220
GOOD = [f"grain{i:02d}" for i in range(N_GOOD)]
DENSE = [GOOD[0], GOOD[2], GOOD[4]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five grains of increasing size (24 … 56 µm), a corrupt copy of the first one, and a manifest."""
    root = tmp_path_factory.mktemp("grains")
    truth = {}
    for i, name in enumerate(GOOD):
        ds = render_sem_series(
            GrainSpec(seed=20 + i, diameter_um=24.0 + 8.0 * i), tilts_deg=(0, 5, 10), image_size=(SIZE, SIZE), seed=i
        )
        save_sem_dataset(ds, root / name)
        truth[name] = ds
    corrupt = root / "corrupt"
    corrupt.mkdir()
    for f in sorted((root / GOOD[0]).glob("view_*.tif")):
        raw = f.read_bytes()
        (corrupt / f.name).write_bytes(raw[:200] if f.name == "view_01.tif" else raw)
    px2 = round(truth[GOOD[2]].pixel_size_um, 6)
    # three datasets run the dense stage (grain metrics), two and the corrupt one stop after the sparse stage
    rows = [
        "name,path,engine,tilts_deg,pixel_size_um,set.matching.sift.ratio,set.dense.enabled",
        f"{GOOD[0]},{GOOD[0]},sem,,,,",
        f"{GOOD[1]},{GOOD[1]},sem,0;5;10,,,false",
        f"{GOOD[2]},{GOOD[2]},sem,,{px2},,",
        f"{GOOD[3]},{GOOD[3]},,,,,false",  # engine detected from the FEI tags
        f"{GOOD[4]},{GOOD[4]},sem,,,0.75,",
        "corrupt,corrupt,sem,,,,false",
    ]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"root": root, "truth": truth, "px2": px2}


@pytest.fixture(scope="module")
def client():
    with open_client(ClusterOptions(workers=2, threads_per_worker=1, memory_limit="4GB")) as c:
        yield c


@pytest.fixture(scope="module")
def first_run(data: dict, client, tmp_path_factory: pytest.TempPathFactory) -> dict:
    specs = read_manifest(data["root"] / "manifest.csv")
    out = tmp_path_factory.mktemp("batch_out")
    seen: list[str] = []
    result = run_batch(specs, out, client=client, on_result=lambda r: seen.append(r.name))
    return {"specs": specs, "out": out, "result": result, "seen": seen}


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["dataset"]: r for r in csv.DictReader(fh)}


def test_batch_isolates_the_corrupt_dataset(first_run: dict, data: dict) -> None:
    result, out = first_run["result"], first_run["out"]
    by_name = {r.name: r for r in result.results}
    assert sorted(first_run["seen"]) == sorted([*GOOD, "corrupt"])
    assert result.counts == {"datasets": 6, "done": 5, "failed": 1, "ran": 6, "skipped": 0}
    bad = by_name["corrupt"]
    assert bad.state == "failed" and bad.error_type == "TopographError" and "view_01.tif" in bad.error
    status = read_status(out / "corrupt")
    assert status["state"] == "failed" and "view_01.tif" in status["error"] and status["fingerprint"]
    assert (out / "corrupt" / "batch.log").is_file()
    for name in GOOD:
        assert by_name[name].state == "done", by_name[name].error
        assert read_status(out / name)["state"] == "done"
        assert (out / name / "summary.json").is_file()
        assert (out / name / "dense.ply").is_file() == (name in DENSE)  # per-dataset set.dense.enabled
    # the tasks really ran on both worker processes
    assert len({r.worker for r in result.results}) == 2
    # every fingerprint is the one the client computes from the same inputs and options
    for spec in first_run["specs"]:
        assert read_status(out / spec.name)["fingerprint"] == dataset_fingerprint(spec)


def test_table_holds_each_datasets_own_figures(first_run: dict, data: dict) -> None:
    out = first_run["out"]
    rows = _csv_rows(out / "batch_results.csv")
    assert list(rows) == [*GOOD, "corrupt"]  # manifest order
    assert rows["corrupt"]["state"] == "failed" and rows["corrupt"]["grain.volume"] == ""
    assert rows[GOOD[3]]["engine"] == "sem"
    assert float(rows[GOOD[2]]["pixel_size_um"]) == data["px2"]  # per-dataset option reached the engine
    esd, true_esd = [], []
    for name in GOOD:
        row = rows[name]
        summary = json.loads((out / name / "summary.json").read_text())
        # the row carries this dataset's own numbers (not another's), to full precision
        assert int(row["n_tracks"]) == summary["n_tracks"]
        assert float(row["reprojection_rms_px_after.max"]) == max(summary["reprojection_rms_px_after"])
        assert float(row["reprojection_rms_px_after.max"]) < 1.0
        if name not in DENSE:
            assert row["grain.volume"] == ""
            continue
        metrics = summary["dense"]["grain_metrics"]
        assert float(row["grain.volume"]) == metrics["volume"]["value"]
        assert float(row["grain.sphericity"]) == metrics["sphericity"]["value"]
        esd.append(float(row["grain.equivalent_sphere_diameter"]))
        true_esd.append((6.0 * data["truth"][name].true_volume_um3 / math.pi) ** (1.0 / 3.0))
    ratio = np.array(esd) / np.array(true_esd)
    assert np.all((ratio > 0.6) & (ratio < 1.3)), ratio
    assert list(np.argsort(esd)) == list(np.argsort(true_esd))  # sizes ranked as the truth ranks them

    import pyarrow.parquet as pq

    table = pq.read_table(out / "batch_results.parquet")
    assert table.num_rows == 6 and table.column_names == list(next(iter(rows.values())))
    field = table.schema.field("grain.volume")
    assert str(field.type) == "double" and field.metadata[b"unit"] == b"um^3"
    volumes = dict(zip(table.column("dataset").to_pylist(), table.column("grain.volume").to_pylist(), strict=True))
    assert {n: volumes[n] for n in DENSE} == {n: float(rows[n]["grain.volume"]) for n in DENSE}
    assert volumes["corrupt"] is None and volumes[GOOD[1]] is None


def test_batch_report_has_distribution_figures(first_run: dict) -> None:
    report = first_run["result"].report_path
    text = report.read_text(encoding="utf-8")
    for name in [*GOOD, "corrupt"]:
        assert f">{name}</a>" in text
    for stem in ("size", "sphericity", "elongation", "flatness"):
        png = report.parent / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"{stem}.png" in text
    assert text.count("data:image/png;base64,") >= 4
    batch = json.loads((first_run["out"] / "batch.json").read_text())
    assert batch["counts"]["failed"] == 1


def test_rerun_skips_retry_failed_and_repaired_dataset(first_run: dict, data: dict, client) -> None:
    specs, out = first_run["specs"], first_run["out"]
    before = {n: (out / n / "status.json").read_text() for n in [*GOOD, "corrupt"]}
    mtimes = {n: (out / n / "summary.json").stat().st_mtime_ns for n in GOOD}

    again = run_batch(specs, out, client=client)
    assert all(r.action == "skipped" for r in again.results)
    assert {r.name: r.state for r in again.results} == {r.name: r.state for r in first_run["result"].results}
    assert {n: (out / n / "status.json").read_text() for n in before} == before
    assert {n: (out / n / "summary.json").stat().st_mtime_ns for n in GOOD} == mtimes
    rows = _csv_rows(out / "batch_results.csv")  # the table still has every figure after a pure skip
    assert all(rows[n]["grain.volume"] for n in DENSE)

    retry = {r.name: r for r in run_batch(specs, out, client=client, mode="retry_failed").results}
    assert retry["corrupt"].action == "ran" and retry["corrupt"].state == "failed"
    assert all(retry[n].action == "skipped" for n in GOOD)

    # repair the corrupt dataset: its fingerprint changes, so a plain re-run processes it (and only it)
    shutil.copyfile(data["root"] / GOOD[0] / "view_01.tif", data["root"] / "corrupt" / "view_01.tif")
    repaired = {r.name: r for r in run_batch(specs, out, client=client).results}
    assert repaired["corrupt"].action == "ran" and repaired["corrupt"].state == "done"
    assert repaired["corrupt"].fingerprint != retry["corrupt"].fingerprint
    assert all(repaired[n].action == "skipped" for n in GOOD)
    assert _csv_rows(out / "batch_results.csv")["corrupt"]["n_tracks"] != ""


def test_cli_glob_on_an_existing_scheduler(data: dict, client, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from topograph.cli import app

    root = tmp_path / "two"
    shutil.copytree(data["root"] / GOOD[1], root / "good")
    (root / "bad").mkdir()
    (root / "bad" / "view_00.tif").write_bytes(b"II*\x00garbage")
    (root / "bad" / "view_01.tif").write_bytes(b"II*\x00garbage")
    (root / "notes.txt").write_text("not a dataset")
    out = tmp_path / "out"
    args = ["batch", "--glob", f"{root}/*", "--engine", "sem", "--sparse-only", "-o", str(out)]
    args += ["--scheduler", client.scheduler.address]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 3, res.output  # one dataset failed: an input error (topograph.errors)
    rows = _csv_rows(out / "batch_results.csv")
    assert rows["good"]["state"] == "done" and rows["bad"]["state"] == "failed"
    assert "grain.volume" not in rows["good"]  # --sparse-only: no dense stage, no grain metrics
    assert float(rows["good"]["reprojection_rms_px_after.max"]) < 1.0


# --------------------------------------------------------------------------------------------------
# The rules on their own (no cluster)
# --------------------------------------------------------------------------------------------------


def test_fingerprint_follows_content_not_location(data: dict, tmp_path: Path) -> None:
    src = data["root"] / GOOD[0]
    moved = tmp_path / "elsewhere"
    shutil.copytree(src, moved)
    spec = DatasetSpec("g", "sem", (str(src),), {})
    base = dataset_fingerprint(spec)
    assert dataset_fingerprint(DatasetSpec("g", "sem", (str(moved),), {})) == base
    assert dataset_fingerprint(DatasetSpec("g", "sem", (str(src),), {"pixel_size_um": 0.2})) != base
    raw = bytearray((moved / "view_02.tif").read_bytes())
    raw[-1] ^= 1
    (moved / "view_02.tif").write_bytes(bytes(raw))
    assert dataset_fingerprint(DatasetSpec("g", "sem", (str(moved),), {})) != base
    cfg = tmp_path / "sem.yaml"
    cfg.write_text("dense:\n  stride: 2\n")
    with_cfg = dataset_fingerprint(DatasetSpec("g", "sem", (str(src),), {"config": str(cfg)}))
    cfg.write_text("dense:\n  stride: 3\n")  # same path, new content
    assert dataset_fingerprint(DatasetSpec("g", "sem", (str(src),), {"config": str(cfg)})) != with_cfg


def test_needs_run_rules() -> None:
    done = {"state": "done", "fingerprint": "a"}
    failed = {"state": "failed", "fingerprint": "a"}
    assert not needs_run(done, "a", "normal", True)
    assert needs_run(done, "a", "normal", False)  # summary missing: incomplete
    assert needs_run(done, "b", "normal", True)  # changed inputs or options
    assert needs_run(done, "a", "force", True)
    assert not needs_run(done, "a", "retry_failed", True)
    assert not needs_run(failed, "a", "normal", False)
    assert needs_run(failed, "a", "retry_failed", False)
    assert needs_run({"state": "running", "fingerprint": "a"}, "a", "normal", False)  # interrupted
    assert needs_run(None, "a", "normal", False)


def test_lost_worker_is_recorded_with_its_fingerprint(tmp_path: Path) -> None:
    task = DatasetTask(DatasetSpec("g", "sem", ("/nowhere",), {}), str(tmp_path / "g"))
    write_json(tmp_path / "g" / "status.json", {"state": "running", "fingerprint": "abc", "timings": {"started": "t"}})
    result = record_lost(task, RuntimeError("KilledWorker"))
    status = read_status(tmp_path / "g")
    assert result.state == "failed" and status["state"] == "failed" and status["fingerprint"] == "abc"
    assert "memory" in status["error"]


def test_yaml_manifest_defaults_and_errors(data: dict, tmp_path: Path) -> None:
    root = data["root"]
    (tmp_path / "m.yaml").write_text(
        "defaults:\n  engine: sem\n  set: {dense.enabled: false, matching.sift.ratio: 0.7}\n"
        f"datasets:\n  - path: {root / GOOD[0]}\n  - name: second\n    path: {root / GOOD[1]}\n"
        "    set: {matching.sift.ratio: 0.75}\n    tilts_deg: [0, 5, 10]\n"
    )
    specs = read_manifest(tmp_path / "m.yaml", {"set": {"bundle.max_nfev": 50}})
    assert [s.name for s in specs] == [GOOD[0], "second"]
    assert specs[0].options["set"] == {"dense.enabled": False, "matching.sift.ratio": 0.7, "bundle.max_nfev": 50}
    assert specs[1].options["set"]["matching.sift.ratio"] == 0.75 and specs[1].options["tilts_deg"] == [0.0, 5.0, 10.0]

    def bad(entries: list[dict], match: str) -> None:
        with pytest.raises(TopographError, match=match):
            build_specs(entries, root)

    bad([{"path": GOOD[0], "engine": "sem", "tilt": 5}], "option 'tilt' is not known")
    bad([{"path": GOOD[0], "engine": "sem", "set": {"dense.nope": 1}}], "dense.nope")
    bad([{"path": GOOD[0], "engine": "sem"}, {"path": GOOD[1], "name": GOOD[0], "engine": "sem"}], "two datasets")
    bad([{"path": GOOD[0], "name": "batch_report", "engine": "sem"}], "cannot be a dataset name")
    bad([{"path": "missing_folder", "engine": "sem"}], "does not exist")
    bad([{"path": GOOD[0], "engine": "sem", "pixel_size_um": -1}], "positive")
    bad([{"path": GOOD[0], "engine": "warp"}], "unknown batch engine 'warp'")


def test_glob_detects_engine_and_flags_undetectable(data: dict, tmp_path: Path) -> None:
    import cv2

    shutil.copytree(data["root"] / GOOD[0], tmp_path / "sem_one")
    plain = tmp_path / "plain"
    plain.mkdir()
    for k in range(3):
        cv2.imwrite(str(plain / f"p{k}.png"), np.full((32, 32), 60 * k, np.uint8))
    specs = {s.name: s for s in datasets_from_glob("*/", None, {}, tmp_path)}
    assert specs["sem_one"].engine == "sem" and specs["sem_one"].problem is None
    assert specs["plain"].engine == "" and "cannot tell the engine" in specs["plain"].problem


def test_flatten_summary_rules() -> None:
    summary = {
        "engine": "sem",
        "command": "topograph sem ...",
        "n_tracks": 12,
        "rms": [0.5, 1.5, None],
        "match_counts": [[0, 3], [3, 0]],
        "notes": ["a", "b"],
        "dense": {"grain_metrics": {"unit": "um", "volume": {"value": 8.0, "unit": "um^3", "relies_on_underside": 1}}},
    }
    values, units = flatten_summary(summary)
    assert values["n_tracks"] == 12 and values["notes"] == "a; b"
    assert values["rms.mean"] == 1.0 and values["rms.max"] == 1.5 and values["rms"] == "0.5;1.5;"
    assert values["grain.volume"] == 8.0 and units == {"grain.volume": "um^3"} and values["grain.unit"] == "um"
    assert not any(k.startswith(("match_counts", "command", "engine")) for k in values)
