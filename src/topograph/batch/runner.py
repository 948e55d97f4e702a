"""Run a batch on Dask: an in-process ``LocalCluster`` or an existing scheduler; one task per dataset.

Every dataset is one call of :func:`topograph.batch.task.run_dataset` submitted with ``Client.submit``;
results are gathered with ``as_completed`` as they finish. A worker that dies (e.g. killed by its nanny
at the memory limit) fails only its dataset. At the end the table (CSV + Parquet), the batch report and
``OUT/batch.json`` are written.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topograph import __version__
from topograph.batch.manifest import DatasetSpec
from topograph.batch.report import write_batch_report
from topograph.batch.table import ResultsTable, build_table, write_csv, write_parquet
from topograph.batch.task import STATUS_FILE, DatasetResult, DatasetTask, Mode, record_lost, run_dataset
from topograph.errors import OptionalDependencyError, TopographError
from topograph.io.atomic import write_json

log = logging.getLogger("topograph")

RESULTS_CSV = "batch_results.csv"
RESULTS_PARQUET = "batch_results.parquet"
BATCH_JSON = "batch.json"
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Environment of LocalCluster workers: one BLAS/OpenMP thread per task."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where the tasks run.

    Attributes:
        workers: LocalCluster worker processes (ignored with ``scheduler``).
        threads_per_worker: tasks a worker runs at once (each task keeps its libraries to one thread).
        memory_limit: per LocalCluster worker: ``"auto"`` (machine memory / workers), ``"4GB"``, bytes, or
            None / 0 for no limit. The nanny restarts a worker above 95 % of it; that dataset is recorded failed.
        scheduler: address of a running scheduler (``tcp://host:8786``) or a scheduler file (JSON) instead
            of a LocalCluster.
        allowed_failures: LocalCluster: how many times a dataset whose worker died is tried again (an
            existing scheduler uses its own ``distributed.scheduler.allowed-failures``).
    """

    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str | int | None = "auto"
    scheduler: str | None = None
    allowed_failures: int = 1


@dataclass
class BatchResult:
    """What a batch produced."""

    results: list[DatasetResult]
    table: ResultsTable
    csv_path: Path
    parquet_path: Path | None
    report_path: Path
    wall_s: float
    """Processing time: from submitting the tasks to the last result (cluster start-up excluded)."""
    startup_s: float = 0.0
    """Time to start the LocalCluster (or connect to the scheduler)."""
    counts: dict[str, int] = field(default_factory=dict)


ResultHook = Callable[[DatasetResult], None]


def _need_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise OptionalDependencyError("distributed", "topograph batch", extra="batch") from exc
    return distributed


@contextlib.contextmanager
def open_client(options: ClusterOptions) -> Iterator[Any]:
    """A ``distributed.Client`` on a new LocalCluster (closed afterwards) or on an existing scheduler.

    Raises:
        TopographError: bad worker counts, or the scheduler cannot be reached.
    """
    distributed = _need_distributed()
    if options.scheduler:
        address = options.scheduler
        kwargs: dict[str, Any] = {}
        if not address.startswith(("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")):
            if not Path(address).is_file():
                raise TopographError(
                    f"--scheduler '{address}' is neither an address nor a scheduler file",
                    "give tcp://host:8786 or the path of the JSON file written by dask scheduler --scheduler-file",
                )
            kwargs, address = {"scheduler_file": address}, None
        try:
            client = distributed.Client(address, timeout="20s", **kwargs)
        except (OSError, TimeoutError) as exc:
            raise TopographError(
                f"cannot reach the Dask scheduler at {options.scheduler}: {exc}",
                "start it first (docs/batch.md) and check the address and firewall",
            ) from exc
        try:
            log.info("connected to %s (%d workers)", options.scheduler, len(client.scheduler_info().get("workers", {})))
            yield client
        finally:
            client.close()
        return
    if options.workers < 1 or options.threads_per_worker < 1:
        raise TopographError("--workers and --threads-per-worker must be at least 1", "e.g. --workers 2")
    memory = options.memory_limit if options.memory_limit not in (None, "", "0", 0, "none") else 0
    import dask

    # a dataset whose worker dies is tried on allowed_failures + 1 workers in all, then recorded as failed
    with dask.config.set({"distributed.scheduler.allowed-failures": options.allowed_failures}):
        cluster = distributed.LocalCluster(
            n_workers=options.workers,
            threads_per_worker=options.threads_per_worker,
            processes=True,
            memory_limit=memory,
            dashboard_address=":0",  # any free port (the diagnostics dashboard needs bokeh)
            env=WORKER_ENV,
            silence_logs=logging.ERROR,
        )
    client = distributed.Client(cluster)
    try:
        log.info(
            "LocalCluster: %d worker process(es) × %d thread(s), memory limit %s each; diagnostics at %s",
            options.workers,
            options.threads_per_worker,
            memory or "none",
            client.dashboard_link,
        )
        yield client
    finally:
        client.close()
        cluster.close()


def check_output_root(out_root: Path, specs: Sequence[DatasetSpec]) -> None:
    """Refuse to write into dataset folders that ``topograph batch`` did not create.

    Raises:
        TopographError: ``OUT`` is a file, or ``OUT/<name>`` holds files but no ``status.json``.
    """
    if out_root.exists() and not out_root.is_dir():
        raise TopographError(f"output path {out_root} exists and is not a folder", "choose another -o/--out folder")
    for spec in specs:
        d = out_root / spec.name
        if d.is_dir() and any(d.iterdir()) and not (d / STATUS_FILE).is_file():
            raise TopographError(
                f"{d} already holds files that topograph batch did not write",
                "choose another -o/--out folder or rename the dataset",
            )


def run_batch(
    specs: Sequence[DatasetSpec],
    out_root: str | Path,
    cluster: ClusterOptions | None = None,
    mode: Mode = "normal",
    command: str = "topograph batch",
    on_result: ResultHook | None = None,
    client: Any = None,
) -> BatchResult:
    """Process every dataset on Dask and write the table and the report.

    Args:
        specs: the datasets (from :func:`~topograph.batch.manifest.read_manifest` or ``datasets_from_glob``).
        out_root: batch output folder; dataset ``name`` goes to ``out_root/name``.
        cluster: where to run (default: LocalCluster with 2 single-threaded worker processes).
        mode: ``normal`` (skip done and failed datasets whose fingerprint is unchanged), ``retry_failed``
            (also re-run failed ones) or ``force`` (re-run everything).
        command: the batch command line, recorded in every dataset's summary.
        on_result: called on the client with each result as it arrives (progress display).
        client: an open ``distributed.Client`` to use instead of creating one from ``cluster``.

    Returns:
        :class:`BatchResult`; ``OUT/batch_results.csv``, ``.parquet``, ``batch_report/`` and ``batch.json``
        are written.
    """
    cluster = cluster or ClusterOptions()
    out = Path(out_root).resolve()
    check_output_root(out, specs)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [DatasetTask(s, str(out / s.name), mode, command) for s in specs]
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(open_client(cluster))
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        by_name = _gather(client, tasks, on_result)
        wall = time.perf_counter() - t1
    results = [by_name[t.spec.name] for t in tasks]
    return _write_outputs(out, results, wall, startup, cluster, mode, command)


def _gather(client: Any, tasks: Sequence[DatasetTask], on_result: ResultHook | None) -> dict[str, DatasetResult]:
    from distributed import as_completed

    tag = uuid.uuid4().hex[:8]
    futures = {
        client.submit(run_dataset, t, key=f"topograph-dataset-{t.spec.name}-{tag}", pure=False, retries=0): t
        for t in tasks
    }
    results: dict[str, DatasetResult] = {}
    try:
        for future in as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection: that dataset only
                log.error("dataset %s: its worker failed: %s", task.spec.name, exc)
                result = record_lost(task, exc)
            results[task.spec.name] = result
            if on_result is not None:
                on_result(result)
    except BaseException:
        client.cancel(list(futures))
        raise
    return results


def _write_outputs(
    out: Path,
    results: list[DatasetResult],
    wall: float,
    startup: float,
    cluster: ClusterOptions,
    mode: Mode,
    command: str,
) -> BatchResult:
    table = build_table(results)
    csv_path = write_csv(out / RESULTS_CSV, table)
    parquet_path = write_parquet(out / RESULTS_PARQUET, table)
    counts = {
        "datasets": len(results),
        "done": sum(r.state == "done" for r in results),
        "failed": sum(r.state == "failed" for r in results),
        "ran": sum(r.action == "ran" for r in results),
        "skipped": sum(r.action == "skipped" for r in results),
    }
    where = cluster.scheduler or f"LocalCluster {cluster.workers}×{cluster.threads_per_worker}"
    info = {
        "command": command,
        "cluster": where,
        "mode": mode,
        "processing wall time s": wall,
        "cluster start s": startup,
        "topograph": __version__,
    }
    report = write_batch_report(out, table, info)
    write_json(
        out / BATCH_JSON,
        {
            "command": command,
            "cluster": where,
            "mode": mode,
            "topograph_version": __version__,
            "wall_s": wall,
            "cluster_start_s": startup,
            "counts": counts,
            "memory_limit": cluster.memory_limit,
            "datasets": [{"name": r.name, "state": r.state, "action": r.action, "error": r.error} for r in results],
        },
    )
    log.info(
        "batch: %d done, %d failed (%d run, %d skipped) in %.1f s",
        counts["done"],
        counts["failed"],
        counts["ran"],
        counts["skipped"],
        wall,
    )
    return BatchResult(results, table, csv_path, parquet_path, report, wall, startup, counts)
