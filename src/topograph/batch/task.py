"""One dataset of a batch, as one task: fingerprint → skip or run the engine → ``status.json``.

:func:`run_dataset` is a picklable top-level function that runs inside a Dask worker (or anywhere). It
never raises for a bad dataset: every exception becomes ``state: failed`` with its message, so one bad
dataset cannot stop a batch. ``OUT/<name>/status.json`` records::

    {"state": "running" | "done" | "failed", "fingerprint": "<sha256>", "error": ..., "error_type": ...,
     "traceback": ..., "engine": ..., "inputs": [...], "options": {...}, "topograph_version": ...,
     "worker": "host:pid", "timings": {"started": ISO-8601, "finished": ..., "wall_s": ..., "fingerprint_s": ...}}

The fingerprint is ``sha256`` over the topograph version, the engine, the options (option files by their
content) and the name, size and bytes of every input file, so a re-run skips exactly the datasets whose
inputs and settings are unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from topograph import __version__
from topograph.batch.manifest import DatasetSpec
from topograph.errors import TopographError
from topograph.fingerprint import FileContent, digest
from topograph.io.atomic import to_jsonable, write_json, write_text

log = logging.getLogger("topograph")

STATUS_FILE = "status.json"
LOG_FILE = "batch.log"
SUMMARY_FILE = "summary.json"
Mode = Literal["normal", "retry_failed", "force"]
"""``normal``: run new and changed datasets; ``retry_failed``: also re-run failed ones; ``force``: run all."""


@dataclass(frozen=True)
class DatasetTask:
    """What a worker needs to process one dataset (plain, picklable data)."""

    spec: DatasetSpec
    out_dir: str
    mode: Mode = "normal"
    command: str = "topograph batch"


@dataclass(frozen=True)
class DatasetResult:
    """The outcome of one dataset.

    Attributes:
        name: dataset name.
        engine: engine name.
        state: ``done`` or ``failed``.
        action: ``ran`` (processed in this batch) or ``skipped`` (already done / failed with the same fingerprint).
        fingerprint: sha256 hex digest of inputs + options + version (None when the inputs could not be read).
        error: one-line error message of a failed dataset.
        error_type: exception class name of a failed dataset.
        wall_s: wall time of the engine run, seconds (of the earlier run for a skipped dataset).
        summary: the engine's summary (``summary.json``) of a done dataset.
        out_dir: the dataset's output folder.
        worker: ``host:pid`` of the process that ran it.
    """

    name: str
    engine: str
    state: Literal["done", "failed"]
    action: Literal["ran", "skipped"]
    fingerprint: str | None
    error: str | None = None
    error_type: str | None = None
    wall_s: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    out_dir: str = ""
    worker: str = ""


def input_files(inputs: tuple[str, ...] | list[str]) -> list[Path]:
    """The files a dataset consists of: every non-hidden file directly in its folder, or the files given.

    Raises:
        TopographError: an input path does not exist or the folder holds no file.
    """
    files: list[Path] = []
    for p in (Path(i) for i in inputs):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise TopographError(f"input path does not exist: {p}", "check the dataset's path in the manifest")
    if not files:
        raise TopographError(f"the dataset folder {inputs[0]} holds no files", "put the images in the folder")
    return files


def dataset_fingerprint(spec: DatasetSpec) -> str:
    """:func:`topograph.fingerprint.digest` of the version, the engine, the options (files named by them
    by content) and the (name, size, content) of every input file.

    File names enter without their folder, so moving a dataset keeps its fingerprint.
    """
    from topograph.batch.engines import get_engine

    engine = get_engine(spec.engine)
    file_keys = {str(p) for p in engine.option_files(spec.options)}
    options = {
        key: FileContent(Path(value)) if isinstance(value, str) and value in file_keys else to_jsonable(value)
        for key, value in sorted(spec.options.items())
    }
    files = [(f.name, f.stat().st_size, FileContent(f)) for f in input_files(spec.inputs)]
    return digest(__version__, spec.engine, options, files)


def read_status(out_dir: str | Path) -> dict[str, Any] | None:
    """The dataset's ``status.json`` (None when absent or unreadable)."""
    path = Path(out_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(out_dir: str | Path) -> dict[str, Any] | None:
    """The engine's ``summary.json`` in the dataset folder (None when absent or unreadable)."""
    try:
        data = json.loads((Path(out_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def needs_run(status: Mapping[str, Any] | None, fingerprint: str, mode: Mode, has_summary: bool) -> bool:
    """Decide whether to (re)process a dataset.

    Skipped: ``done`` with the same fingerprint and its summary present (unless ``force``), and ``failed``
    with the same fingerprint (unless ``retry_failed`` or ``force``: the same inputs would fail again).
    Everything else runs: new, changed, interrupted (``running``) datasets.
    """
    if mode == "force" or status is None or status.get("fingerprint") != fingerprint:
        return True
    state = status.get("state")
    if state == "done":
        return not has_summary
    if state == "failed":
        return mode == "retry_failed"
    return True


def limit_threads(n: int = 1) -> None:
    """Limit the libraries' own thread pools (OpenCV, PyTorch, BLAS via ``OMP_NUM_THREADS``) to ``n``.

    One task per worker thread is the batch's parallelism; nested thread pools would oversubscribe the
    cores. ``OMP_NUM_THREADS`` only acts on libraries loaded afterwards (Dask's nanny also sets it before
    starting a worker).
    """
    import sys

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    import cv2

    cv2.setNumThreads(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


class _ThreadFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def _captured_log(path: Path) -> Iterator[None]:
    """Collect the ``topograph`` log records of this thread; write them to ``path`` (atomically) at the end."""
    logger = logging.getLogger("topograph")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_ThreadFilter())
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        with contextlib.suppress(OSError):
            write_text(path, buffer.getvalue())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _status_doc(task: DatasetTask, state: str, fingerprint: str | None, **extra: Any) -> dict[str, Any]:
    spec = task.spec
    return {
        "state": state,
        "dataset": spec.name,
        "engine": spec.engine,
        "fingerprint": fingerprint,
        "inputs": list(spec.inputs),
        "options": to_jsonable(dict(spec.options)),
        "topograph_version": __version__,
        "worker": _worker_id(),
        **extra,
    }


def _clear_previous(out: Path) -> None:
    """Remove the outputs of an earlier run of this dataset (only a folder the batch itself wrote)."""
    if (out / STATUS_FILE).is_file():
        shutil.rmtree(out)


def run_dataset(task: DatasetTask) -> DatasetResult:
    """Process one dataset; never raises for a bad dataset (the error is recorded instead).

    Steps: fingerprint the inputs → skip when ``status.json`` says the same fingerprint is done (or failed,
    unless retrying) → else clear the folder, write ``state: running``, run the engine into ``OUT/<name>``
    and write ``state: done`` or ``failed`` with the error, its type, the traceback of unexpected
    exceptions and the timings. The ``topograph`` log of the run goes to ``OUT/<name>/batch.log``.

    Args:
        task: the dataset, its output folder, the re-run mode and the batch command line.

    Returns:
        :class:`DatasetResult` (with the engine summary when done).
    """
    spec = task.spec
    out = Path(task.out_dir)
    t0 = time.perf_counter()
    started = _now()
    try:
        if spec.problem:
            raise TopographError(spec.problem)
        fingerprint = dataset_fingerprint(spec)
    except Exception as exc:  # noqa: BLE001 - recorded as this dataset's failure
        return _fail(task, out, None, exc, started, t0, {})
    t_fp = time.perf_counter() - t0

    status = read_status(out)
    summary = read_summary(out)
    if status is not None and not needs_run(status, fingerprint, task.mode, summary is not None):
        log.info("dataset %s: %s with the same inputs, skipped", spec.name, status.get("state"))
        return DatasetResult(
            spec.name,
            spec.engine,
            status["state"],
            "skipped",
            fingerprint,
            status.get("error"),
            status.get("error_type"),
            (status.get("timings") or {}).get("wall_s"),
            summary or {},
            str(out),
            str(status.get("worker", "")),
        )

    timings = {"started": started, "fingerprint_s": t_fp}
    try:
        _clear_previous(out)
        write_json(out / STATUS_FILE, _status_doc(task, "running", fingerprint, timings=timings))
    except OSError as exc:
        return _fail(task, out, fingerprint, exc, started, t0, timings)
    limit_threads(1)
    from topograph.batch.engines import get_engine

    with _captured_log(out / LOG_FILE):
        log.info("dataset %s: %s engine on %s", spec.name, spec.engine, ", ".join(spec.inputs))
        try:
            summary = get_engine(spec.engine).run(spec.inputs, out, spec.options, f"{task.command} [{spec.name}]")
        except Exception as exc:  # noqa: BLE001 - one bad dataset must not stop the batch
            log.error("dataset %s failed: %s", spec.name, exc)
            return _fail(task, out, fingerprint, exc, started, t0, timings)
        wall = time.perf_counter() - t0
        timings.update(finished=_now(), wall_s=wall)
        try:
            write_json(out / STATUS_FILE, _status_doc(task, "done", fingerprint, error=None, timings=timings))
        except OSError as exc:
            return _fail(task, out, fingerprint, exc, started, t0, timings)
        log.info("dataset %s done in %.1f s", spec.name, wall)
    return DatasetResult(
        spec.name, spec.engine, "done", "ran", fingerprint, None, None, wall, summary, str(out), _worker_id()
    )


def _fail(
    task: DatasetTask,
    out: Path,
    fingerprint: str | None,
    exc: BaseException,
    started: str,
    t0: float,
    timings: dict[str, Any],
) -> DatasetResult:
    user_error = isinstance(exc, TopographError)
    message = str(exc) or type(exc).__name__
    wall = time.perf_counter() - t0
    timings = {**timings, "started": started, "finished": _now(), "wall_s": wall}
    doc = _status_doc(
        task,
        "failed",
        fingerprint,
        error=message,
        error_type=type(exc).__name__,
        traceback=None if user_error else "".join(traceback.format_exception(exc)),
        timings=timings,
    )
    with contextlib.suppress(OSError):
        write_json(out / STATUS_FILE, doc)
    spec = task.spec
    return DatasetResult(
        spec.name,
        spec.engine,
        "failed",
        "ran",
        fingerprint,
        message,
        type(exc).__name__,
        wall,
        {},
        str(out),
        _worker_id(),
    )


def record_lost(task: DatasetTask, exc: BaseException) -> DatasetResult:
    """Record a dataset whose worker died (memory limit, crash) as failed, on the client.

    Keeps the fingerprint the worker wrote with ``state: running`` so that the failure is kept on a re-run
    (use ``--retry-failed`` to try it again, e.g. with a larger ``--memory-limit``).
    """
    out = Path(task.out_dir)
    status = read_status(out) or {}
    fingerprint = status.get("fingerprint")
    message = (
        f"the worker running this dataset died ({type(exc).__name__}: {exc}); it probably exceeded the worker "
        "memory limit — give more memory per worker (--memory-limit) or fewer workers"
    )
    doc = _status_doc(
        task,
        "failed",
        fingerprint,
        error=message,
        error_type=type(exc).__name__,
        timings=status.get("timings") or {},
        worker=str(status.get("worker", "")),
    )
    with contextlib.suppress(OSError):
        write_json(out / STATUS_FILE, doc)
    return DatasetResult(task.spec.name, task.spec.engine, "failed", "ran", fingerprint, message, type(exc).__name__)
