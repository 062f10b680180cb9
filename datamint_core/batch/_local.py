"""The local engine: a process pool, the model loaded once per worker, rows streamed.

At most ``2 * workers`` chunks of rows are in flight at once, and results are committed in
parts of ``rows_per_part`` rows as they come back, so memory does not grow with the input.

By default there is one worker per two cores (:func:`default_workers`). The workers share
the machine's cores: each computes with ``cores // workers`` threads
(:func:`threads_per_worker`; ``--threads-per-worker`` or
``DATAMINT_BATCH_THREADS_PER_WORKER`` to choose), set through ``OMP_NUM_THREADS`` and its
siblings before the model loads and through the extras' thread hooks
(``torch.set_num_threads``) after. Without that, each worker's torch takes every core and
the pool runs slower than one process. Rows go out one per task when there are few of them
for the workers, so no worker is left holding several while another idles.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Any

from datamint_core import _extensions
from datamint_core._env import DATAMINT_BATCH_THREADS_PER_WORKER
from datamint_core._numbers import COUNT, parse
from datamint_core.batch._progress import Progress
from datamint_core.batch._rows import STATUS_FAILED, output_row_for_failure, predict_row
from datamint_core.batch._store import commit_part, part_name
from datamint_core.errors import ModelLoadError

#: Rows sent to a worker in one task: amortises the inter-process hop, keeps memory small.
CHUNK_ROWS = 4
#: Cores per local worker when the worker count is left to the default (see default_workers).
CORES_PER_DEFAULT_WORKER = 2
#: The variables the usual compute libraries (OpenMP, MKL, OpenBLAS, ...) read at start.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

_worker_model: Any = None
_worker_load_error: str | None = None


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """Local workers when none is asked for: one per :data:`CORES_PER_DEFAULT_WORKER` cores
    (at least one), so that each computes with that many threads.

    On 2 cores that is one worker: measured with ``bench/clinical_batch.py`` (6 CT volumes,
    a small 3-D torch network), two workers of one thread each ran fewer cases per minute
    than a plain single-process loop, one worker of two threads as many. Each worker pays
    for its own interpreter, imports and model load, while a multi-threaded model already
    keeps the cores busy; more workers pay off where there are cores to spare for the
    single-threaded reading and writing of the others.
    """
    return max(1, available_cores() // CORES_PER_DEFAULT_WORKER)


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """Compute threads for each of ``workers`` processes: ``threads`` when given, else
    ``DATAMINT_BATCH_THREADS_PER_WORKER``, else the cores shared out (at least 1).

    Raises:
        ValueError: a value that is not a positive integer.
    """
    if threads is not None:
        return int(parse(COUNT, threads, "threads_per_worker"))
    from_env = DATAMINT_BATCH_THREADS_PER_WORKER.get()
    return max(1, available_cores() // workers) if from_env is None else from_env


def run_local(
    model_uri: str,
    rows: Iterable[dict[str, Any]],
    output_dir: str,
    params: dict[str, Any],
    *,
    workers: int,
    rows_per_part: int,
    run_id: str,
    progress: Progress,
    expected_rows: int | None = None,
    threads: int | None = None,
) -> None:
    """Predict on every row in a pool of ``workers`` processes, committing parts as it goes.

    Args:
        expected_rows: how many rows ``rows`` holds, when known: no more workers than rows
            are started, and few rows go out one per task.
        threads: compute threads per worker (see :func:`threads_per_worker`).

    Raises:
        ModelLoadError: a worker could not load the model.
    """
    if expected_rows is not None:
        workers = max(1, min(workers, expected_rows))
    threads = threads_per_worker(workers, threads)
    chunk_rows = CHUNK_ROWS
    if expected_rows is not None:
        chunk_rows = max(1, min(CHUNK_ROWS, math.ceil(expected_rows / (4 * workers))))
    pending = iter(rows)
    buffer: list[dict[str, Any]] = []
    sequence = 0

    def collect(results: list[dict[str, Any]]) -> None:
        nonlocal sequence
        buffer.extend(results)
        progress.update(len(results), sum(r["status"] == STATUS_FAILED for r in results))
        while len(buffer) >= rows_per_part:
            commit_part(output_dir, part_name(run_id, "local", sequence), buffer[:rows_per_part])
            del buffer[:rows_per_part]
            sequence += 1

    while True:
        broken = _drain(
            model_uri, pending, output_dir, params, workers, threads, chunk_rows, collect
        )
        if not broken:
            break
        # A worker died (a crash in native code, the OOM killer): its chunks are recorded
        # as failed, and the remaining rows go to a fresh pool.
        collect([output_row_for_failure(row, broken[1]) for row in broken[0]])
    if buffer:
        commit_part(output_dir, part_name(run_id, "local", sequence), buffer)


def _drain(
    model_uri: str,
    pending: Iterator[dict[str, Any]],
    output_dir: str,
    params: dict[str, Any],
    workers: int,
    threads: int,
    chunk_rows: int,
    collect: Any,
) -> tuple[list[dict[str, Any]], BaseException] | None:
    """Run chunks through one pool until rows run out or the pool breaks.

    Returns:
        ``None`` when every row is done, else the rows in flight when the pool broke and
        the error.
    """
    context = multiprocessing.get_context("spawn")
    in_flight: dict[Future, list[dict[str, Any]]] = {}
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_load_worker_model,
        initargs=(model_uri, threads, os.getpid()),
    ) as pool:
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < 2 * workers:
                chunk = list(islice(pending, chunk_rows))
                if not chunk:
                    exhausted = True
                    break
                in_flight[pool.submit(_predict_chunk, chunk, params, output_dir)] = chunk
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                chunk = in_flight.pop(future)
                try:
                    collect(future.result())
                except BrokenProcessPool as error:
                    lost = chunk + [row for rows in in_flight.values() for row in rows]
                    for other in in_flight:
                        other.cancel()
                    pool.shutdown(wait=True, cancel_futures=True)
                    return lost, error
    return None


def _load_worker_model(model_uri: str, threads: int, job_pid: int) -> None:
    global _worker_model, _worker_load_error
    from datamint_core.flavor import load_model

    _die_with_the_job(job_pid)
    # Before the model's libraries load: OpenMP and BLAS read these once, at start.
    os.environ.update({variable: str(threads) for variable in THREAD_VARIABLES})
    try:
        _worker_model = load_model(model_uri)
    except Exception as error:  # reported by the first task, which stops the job
        _worker_load_error = f"{type(error).__name__}: {error}"
    _extensions.limit_threads(threads)


def _die_with_the_job(job_pid: int) -> None:
    """Have the kernel kill this worker when the job's process dies, however it dies.

    A job killed with ``kill -9`` cannot shut its pool down: without this its workers would
    finish their chunk for nobody, then wait for work forever. Linux only (``prctl``
    ``PR_SET_PDEATHSIG``); elsewhere the pool's own shutdown is all there is.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    set_parent_death_signal = 1  # PR_SET_PDEATHSIG in <linux/prctl.h>
    ctypes.CDLL(None).prctl(set_parent_death_signal, signal.SIGKILL)
    if os.getppid() != job_pid:  # the job died before the signal was armed
        os._exit(1)


def _predict_chunk(
    rows: list[dict[str, Any]], params: dict[str, Any], output_dir: str
) -> list[dict[str, Any]]:
    if _worker_model is None:
        raise ModelLoadError(f"A batch worker could not load the model: {_worker_load_error}")
    return [predict_row(_worker_model, row, params, output_dir) for row in rows]
