"""Bad and hostile input: every case stops with one line naming cause and fix, exit status 2, no traceback,
and leaves the output folder as it was (absent stays absent, an old run stays intact).

Each case builds its inputs in a fresh folder, runs the real ``topograph`` entry point in-process
(:func:`topograph.cli.main`) and checks the single ``error:`` line against the cause it must name.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from topograph.cli import main
from topograph.errors import EXIT_INPUT, EXIT_USAGE

# --------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------


def _texture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    return np.clip((img - img.min()) / (np.ptp(img) + 1e-9) * 255, 0, 255).astype(np.uint8)


def _series(root: Path, n: int = 3, ext: str = ".png") -> Path:
    folder = root / "series"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = _texture(i)
        if ext == ".jpg":
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(folder / f"view_{i:02d}{ext}"), img)
    return folder


def _huge_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A small valid PNG whose header claims ``width`` × ``height`` (the CRC is recomputed)."""
    ok, buf = cv2.imencode(".png", _texture(9, 16))
    assert ok
    data = bytearray(buf.tobytes())
    ihdr = data[12:29]  # type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _old_run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text('{"old": true}\n')
    (out / "dense.ply").write_bytes(b"old cloud")


def _content(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """``setup(tmp, monkeypatch)`` builds the inputs and returns the arguments after ``topograph``."""

    setup: Callable[[Path, pytest.MonkeyPatch], list[str]]
    expect: str
    """Text the one error line must contain (case-insensitive)."""
    forbid: tuple[str, ...] = field(default_factory=tuple)
    """Text it must not contain (a wrong fix)."""


def _yaml(tmp: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _sem(tmp: Path, *extra: str, out: str | None = None) -> list[str]:
    return ["sem", str(_series(tmp)), "-o", out if out is not None else str(tmp / "out"), *extra]


def _meso(tmp: Path, *extra: str, out: str | None = None) -> list[str]:
    return ["meso", str(_series(tmp, 3, ".jpg")), "-o", out if out is not None else str(tmp / "out"), *extra]


def _no_write(monkeypatch: pytest.MonkeyPatch, blocked: Callable[[Path], bool]) -> None:
    """Simulate a folder without write permission (tests run as root, where chmod does not stop writes)."""
    import topograph.io.staging as staging

    real = staging._writable
    monkeypatch.setattr(staging, "_writable", lambda p: False if blocked(Path(p)) else real(p))


def _unreadable(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    folder = _series(tmp)
    # the first image raises "permission denied" when opened (as after chmod 000 for a non-root user)
    real_fromfile = np.fromfile

    def fromfile(path, *a, **k):  # noqa: ANN001, ANN202
        if str(path).endswith("view_00.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_fromfile(path, *a, **k)

    mp.setattr(np, "fromfile", fromfile)
    return ["sem", str(folder), "-o", str(tmp / "out")]


def _meso_unreadable(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    args = _meso(tmp, "--focal-mm", "4.2", "--pixel-pitch-um", "1.4")
    real_fromfile = np.fromfile

    def fromfile(path, *a, **k):  # noqa: ANN001, ANN202
        if str(path).endswith("view_01.jpg"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_fromfile(path, *a, **k)

    mp.setattr(np, "fromfile", fromfile)
    return args


def _eval_mismatch(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

    ds = render_sem_series(GrainSpec(seed=2), tilts_deg=(0.0, 5.0, 10.0), image_size=(160, 160), seed=2)
    truth = save_sem_dataset(ds, tmp / "truth", with_metadata=True)
    from topograph.io.exports import write_ply
    from topograph.types import PointCloud

    cloud = write_ply(tmp / "dense.ply", PointCloud(xyz=np.random.default_rng(0).random((50, 3)), unit="um"))
    cams = tmp / "cameras.json"
    cams.write_text('{"pixel_size_um": %r, "views": [{"relative_tilt_deg": 0.0}]}' % (ds.pixel_size_um * 2))
    return ["eval", "sem", "--truth", str(truth), "--cloud", str(cloud), "--cameras", str(cams), "--mode", "rigid"]


def _malicious_checkpoint(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    import torch

    out = tmp / "out"
    out.mkdir()
    marker = tmp / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"version": 2, "tensors": {}, "state": Payload()}, out / "checkpoint.pt")
    return _meso(tmp, "--focal-mm", "4.2", "--pixel-pitch-um", "1.4", "--resume")


CASES: dict[str, Case] = {
    # ---- configuration files -------------------------------------------------------------------------
    "config enabled: maybe": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "dense:\n  enabled: maybe\n"))), "must be true or false"
    ),
    "config enabled: quoted maybe": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, 'dense:\n  enabled: "maybe"\n'))), "dense.enabled"
    ),
    "config float given a list": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "matching:\n  sift:\n    ratio: [1, 2]\n"))),
        "matching.sift.ratio",
    ),
    "config int given text": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "bundle:\n  max_nfev: lots\n"))), "bundle.max_nfev"
    ),
    "config int given 2.5": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "dense:\n  stride: 2.5\n"))), "must be an integer"
    ),
    "config section given a number": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "matching: 5\n"))), "must be a mapping"
    ),
    "config unknown key": Case(lambda t, m: _sem(t, "--config", str(_yaml(t, "colour: red\n"))), "unknown"),
    "config choice not allowed": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "dense:\n  closure: round\n"))), "must be one of"
    ),
    "config multi-line YAML error": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "dense:\n  enabled: true\n   stride: [1, 2\nmatching: {\n"))),
        "not valid YAML",
    ),
    "config YAML tab indentation": Case(
        lambda t, m: _sem(t, "--config", str(_yaml(t, "dense:\n\tenabled: true\n"))), "not valid YAML"
    ),
    "config file missing": Case(lambda t, m: _sem(t, "--config", str(t / "nope.yaml")), "not found"),
    "meso config threads as text": Case(lambda t, m: _meso(t, "--config", str(_yaml(t, "threads: many\n"))), "threads"),
    "sidecar multi-line YAML error": Case(
        lambda t, m: _sem(t, "--sidecar", str(_yaml(t, "tilts_deg: [0, 5\npixel_size_um: {\n", "side.yaml"))),
        "cannot parse sidecar",
    ),
    "sidecar tilt 95 degrees": Case(
        lambda t, m: _sem(t, "--sidecar", str(_yaml(t, "tilts_deg: [0, 5, 95]\n", "side.yaml"))), "outside ±80"
    ),
    # ---- output folder ---------------------------------------------------------------------------------
    "-o under an existing file": Case(
        lambda t, m: (t / "afile").write_text("x") and _sem(t, out=str(t / "afile" / "out")), "which is a file"
    ),
    "-o an existing file": Case(lambda t, m: (t / "out").write_text("x") and _sem(t), "exists and is a file"),
    "-o empty": Case(lambda t, m: _sem(t, out=""), "empty or the current folder"),
    "-o the input folder": Case(lambda t, m: _sem(t, out=str(t / "series")), "is the input folder"),
    "-o inside the input folder": Case(
        lambda t, m: _sem(t, out=str(t / "series" / "results")), "inside the input folder"
    ),
    "-o a folder of unrelated files": Case(
        lambda t, m: (t / "out").mkdir() or (t / "out" / "thesis.docx").write_text("x") and _sem(t),
        "holds other files",
    ),
    "-o not writable": Case(
        lambda t, m: _no_write(m, lambda p: p == t) or _sem(t), "not writable", forbid=("microscope",)
    ),
    "-o read-only mount": Case(
        lambda t, m: _no_write(m, lambda p: p == t) or _sem(t, out=str(t / "deep" / "out")), "read-only disk"
    ),
    "-o old run with a read-only subfolder": Case(
        lambda t, m: (
            _old_run(t / "out")
            or (t / "out" / "figures").mkdir()
            or _no_write(m, lambda p: p.name == "figures")
            or _sem(t)
        ),
        "is read-only",
    ),
    "-o dangling link": Case(lambda t, m: (t / "out").symlink_to(t / "gone") or _sem(t), "dangling link"),
    "meso -o under a file": Case(
        lambda t, m: (t / "afile").write_text("x") and _meso(t, out=str(t / "afile" / "o")), "which is a file"
    ),
    "meso -o empty": Case(lambda t, m: _meso(t, "--focal-mm", "4", out=""), "empty or the current folder"),
    "eval sem -o an existing folder": Case(
        lambda t, m: (
            (t / "res").mkdir() or ["eval", "sem", "--truth", str(t), "--cloud", str(t / "c.ply"), "-o", str(t / "res")]
        ),
        "existing folder",
    ),
    "eval meso -o an existing folder": Case(
        lambda t, m: (t / "res").mkdir() or ["eval", "meso", "--truth", str(t), "-o", str(t / "res")],
        "existing folder",
    ),
    "eval against a truth of another pixel size": Case(_eval_mismatch, "differs from the truth's"),
    # ---- batch -----------------------------------------------------------------------------------------
    "batch --memory-limit lots": Case(
        lambda t, m: ["batch", "--glob", str(t / "*/"), "-o", str(t / "b"), "--memory-limit", "lots"],
        "--memory-limit",
    ),
    "batch --workers 0": Case(
        lambda t, m: ["batch", "--glob", str(t / "*/"), "-o", str(t / "b"), "--workers", "0"], "--workers"
    ),
    "batch --threads-per-worker -1": Case(
        lambda t, m: ["batch", "--glob", str(t / "*/"), "-o", str(t / "b"), "--threads-per-worker", "-1"],
        "--threads-per-worker",
    ),
    "batch manifest YAML error": Case(
        lambda t, m: [
            "batch",
            str(_yaml(t, "datasets:\n  - path: a\n   engine: [sem\n", "m.yaml")),
            "-o",
            str(t / "b"),
        ],
        "cannot read the manifest",
    ),
    # ---- meso options ----------------------------------------------------------------------------------
    "meso --focal-mm -4": Case(lambda t, m: _meso(t, "--focal-mm", "-4"), "--focal-mm"),
    "meso --focal-mm nan": Case(lambda t, m: _meso(t, "--focal-mm", "nan"), "--focal-mm"),
    "meso --pixel-pitch-um 0": Case(lambda t, m: _meso(t, "--pixel-pitch-um", "0"), "--pixel-pitch-um"),
    "meso --magnification 0": Case(lambda t, m: _meso(t, "--magnification", "0"), "--magnification"),
    "meso --scale-distance-mm -1": Case(
        lambda t, m: _meso(t, "--scale-points", "10,20,60,20", "--scale-distance-mm", "-1"), "--scale-distance-mm"
    ),
    "meso identical scale points": Case(
        lambda t, m: _meso(t, "--scale-points", "10,20,10,20", "--scale-distance-mm", "5"), "less than 1 px apart"
    ),
    "meso three scale numbers": Case(
        lambda t, m: _meso(t, "--scale-points", "10,20,30", "--scale-distance-mm", "5"), "four numbers"
    ),
    "meso --threads -3": Case(lambda t, m: _meso(t, "--threads", "-3"), "--threads"),
    "meso --reference-image 7 of 3": Case(lambda t, m: _meso(t, "--reference-image", "7"), "does not exist"),
    "meso image declaring 50000x50000 px": Case(
        lambda t, m: ["meso", str(_huge_png(t / "huge.png")), str(_huge_png(t / "h2.png")), "-o", str(t / "out")],
        "declares 50000×50000",
    ),
    "meso dangling link in the folder": Case(
        lambda t, m: (_series(t, 3, ".jpg") / "view_09.jpg").symlink_to(t / "gone.jpg") or _meso(t),
        "link to a missing file",
    ),
    "meso missing folder": Case(lambda t, m: ["meso", str(t / "nope"), "-o", str(t / "out")], "does not exist"),
    "meso malicious checkpoint": Case(_malicious_checkpoint, "cannot be read safely"),
    "meso unreadable image": Case(
        _meso_unreadable, "permission denied", forbid=("microscope", "re-export", "while writing")
    ),
    # ---- SEM options and series ------------------------------------------------------------------------
    "sem --tilts 0,89,10": Case(lambda t, m: _sem(t, "--tilts", "0,89,10"), "outside ±80"),
    "sem --tilts -89": Case(lambda t, m: _sem(t, "--tilts", "-89,0,5"), "outside ±80"),
    "sem --tilts 1e308": Case(lambda t, m: _sem(t, "--tilts", "0,1e308,5"), "outside ±80"),
    "sem --tilts inf": Case(lambda t, m: _sem(t, "--tilts", "0,inf,5"), "finite"),
    "sem --tilts text": Case(lambda t, m: _sem(t, "--tilts", "0,five,10"), "numbers separated by commas"),
    "sem --tilt-axis-deg 1e308": Case(lambda t, m: _sem(t, "--tilt-axis-deg", "1e308"), "outside ±360"),
    "sem --pixel-size-um 0": Case(lambda t, m: _sem(t, "--pixel-size-um", "0"), "must be positive"),
    "sem --pixel-size-um -1": Case(lambda t, m: _sem(t, "--pixel-size-um", "-1"), "must be positive"),
    "sem image declaring 50000x50000 px": Case(
        lambda t, m: _huge_png(_series(t) / "view_03.png") and _sem(t), "declares 50000×50000"
    ),
    "sem dangling link in the series": Case(
        lambda t, m: (_series(t) / "view_03.png").symlink_to(t / "gone.png") or _sem(t), "link to a missing file"
    ),
    "sem dangling link given as a file": Case(
        lambda t, m: (
            (t / "x.png").symlink_to(t / "gone.png")
            or ["sem", str(t / "x.png"), str(_series(t) / "view_00.png"), "-o", str(t / "out")]
        ),
        "link to a missing file",
    ),
    "sem unreadable image": Case(_unreadable, "permission denied", forbid=("microscope", "re-export")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_stops_with_one_line(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    case = CASES[name]
    monkeypatch.setenv("COLUMNS", "400")
    args = case.setup(tmp_path, monkeypatch)
    watched = [tmp_path / "out", tmp_path / "res"]
    before = {p: _content(p) for p in watched}
    monkeypatch.setattr(sys, "argv", ["topograph", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code in (EXIT_USAGE, EXIT_INPUT), err  # usage (a flag) or input (the data)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    line = errors[0]
    assert case.expect.lower() in line.lower(), line
    assert " — " in line, f"no fix offered: {line}"
    for bad in case.forbid:
        assert bad not in line
    for p in watched:  # no half-written output: what was there is unchanged, what was absent stays absent
        if not p.is_symlink():
            assert _content(p) == before[p], p
    assert not [q.name for q in tmp_path.iterdir() if ".staging-" in q.name]
    assert not (tmp_path / "pwned").exists()  # the malicious checkpoint ran nothing


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


def test_disk_full_while_writing_keeps_the_old_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A real (sparse) run whose writing hits ENOSPC: one line, the previous run intact, no staging left."""
    import topograph.sem.pipeline as pipeline

    out = tmp_path / "out"
    _old_run(out)
    before = _content(out)
    real = pipeline.write_outputs

    def full_disk(run, folder, **kwargs):  # noqa: ANN001, ANN003, ANN202
        real(run, folder, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "dense.ply"))

    monkeypatch.setattr(pipeline, "write_outputs", full_disk)
    monkeypatch.setenv("COLUMNS", "400")
    from topograph.synth.sem import GrainSpec, render_sem_series, save_sem_dataset

    ds = render_sem_series(GrainSpec(seed=3), tilts_deg=(0.0, 5.0, 10.0), image_size=(240, 240), seed=3)
    series = save_sem_dataset(ds, tmp_path / "grain", with_metadata=True)
    monkeypatch.setattr(sys, "argv", ["topograph", "sem", str(series), "-o", str(out), "--sparse-only"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == EXIT_INPUT and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk is full" in errors[0], err
    assert _content(out) == before
    assert not [q.name for q in tmp_path.iterdir() if ".staging-" in q.name]


def test_malicious_checkpoint_payload_is_live_but_never_runs(tmp_path: Path) -> None:
    """The crafted file does run code under a plain unpickler (so the test can fail) and not in topograph."""
    import torch

    from topograph.errors import TopographError
    from topograph.meso.optimise.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"tensors": {}, "state": Payload()}, path)
    with pytest.raises(TopographError, match="cannot be read safely"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what the old loader did
    assert marker.exists()


def test_eval_with_another_pixel_size_warns_in_similarity_mode(tmp_path: Path) -> None:
    from topograph.cli.eval import pixel_size_mismatch

    assert pixel_size_mismatch(0.2, 0.1) is not None and "+100.0 %" in pixel_size_mismatch(0.2, 0.1)
    assert pixel_size_mismatch(0.1005, 0.1) is None
    assert pixel_size_mismatch(None, 0.1) is None
