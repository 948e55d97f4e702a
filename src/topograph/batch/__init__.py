"""Many datasets in one run: ``topograph batch`` on a Dask LocalCluster or an existing scheduler.

Modules, one job each:

* :mod:`~topograph.batch.manifest`: which datasets (CSV/YAML manifest or a glob of folders), engine detection;
* :mod:`~topograph.batch.engines`: the engines a batch can run (option checks, the run call), a registry;
* :mod:`~topograph.batch.task`: one dataset as one picklable task: fingerprint, skip, run, ``status.json``;
* :mod:`~topograph.batch.runner`: the Dask client, submission, gathering, failure isolation;
* :mod:`~topograph.batch.table`: the results table (CSV, Parquet);
* :mod:`~topograph.batch.report`: distribution plots and ``batch_report.html``.

Dask (``distributed``) is imported only when a batch runs (extra ``topograph[batch]``).
"""

from topograph.batch.engines import Engine, engines, get_engine
from topograph.batch.manifest import DatasetSpec, build_specs, datasets_from_glob, detect_engine, read_manifest
from topograph.batch.runner import BatchResult, ClusterOptions, run_batch
from topograph.batch.table import ResultsTable, build_table, flatten_summary
from topograph.batch.task import DatasetResult, DatasetTask, dataset_fingerprint, run_dataset

__all__ = [
    "BatchResult",
    "ClusterOptions",
    "DatasetResult",
    "DatasetSpec",
    "DatasetTask",
    "Engine",
    "ResultsTable",
    "build_specs",
    "build_table",
    "dataset_fingerprint",
    "datasets_from_glob",
    "detect_engine",
    "engines",
    "flatten_summary",
    "get_engine",
    "read_manifest",
    "run_batch",
    "run_dataset",
]
