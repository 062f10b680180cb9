"""Batch inference over a whole dataset: locally (a process pool) or on Apache Spark.

Example::

    from datamint_core.batch import read_annotations, read_results, run_batch

    report = run_batch("models:/liver-seg/3", "/data/cohort", "/data/out", {"mode": "volume"})
    results = read_results("/data/out")          # one row per study: id, status, error, ...
    annotations = read_annotations(results.annotations[0], "/data/out")

The same from the command line: ``datamint batch -m URI -i INPUT -o OUTPUT``. Parquet output
needs pyarrow (``pip install "datamint[batch]"``), the Spark engine pyspark
(``pip install "datamint[spark]"``); neither is imported until used. One job at a time
writes an output directory: a second one is refused with :class:`OutputInUseError`.
"""

from datamint_core.batch._inputs import MANIFEST_COLUMNS
from datamint_core.batch._job import BatchReport, run_batch
from datamint_core.batch._rows import read_annotations
from datamint_core.batch._store import read_results
from datamint_core.errors import BatchInputError, OutputInUseError, OutputMismatchError

__all__ = [
    "MANIFEST_COLUMNS",
    "BatchInputError",
    "BatchReport",
    "OutputInUseError",
    "OutputMismatchError",
    "read_annotations",
    "read_results",
    "run_batch",
]
