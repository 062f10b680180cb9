"""The local engine: a process pool, the model loaded once per worker, rows streamed.

At most ``2 * workers`` chunks of rows are in flight at once, and results are committed in
parts of ``rows_per_part`` rows as they come back, so memory does not grow with the input.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Any

from datamint_core.batch._progress import Progress
from datamint_core.batch._rows import STATUS_FAILED, output_row_for_failure, predict_row
from datamint_core.batch._store import commit_part, part_name

#: Rows sent to a worker in one task: amortises the inter-process hop, keeps memory small.
CHUNK_ROWS = 4

_worker_model: Any = None
_worker_load_error: str | None = None


class ModelLoadError(RuntimeError):
    """A worker could not load the model; the job stops (no row can succeed)."""


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
) -> None:
    """Predict on every row in a pool of ``workers`` processes, committing parts as it goes.

    Raises:
        ModelLoadError: a worker could not load the model.
    """
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
        broken = _drain(model_uri, pending, output_dir, params, workers, collect)
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
        workers, mp_context=context, initializer=_load_worker_model, initargs=(model_uri,)
    ) as pool:
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < 2 * workers:
                chunk = list(islice(pending, CHUNK_ROWS))
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


def _load_worker_model(model_uri: str) -> None:
    global _worker_model, _worker_load_error
    from datamint_core.flavor import load_model

    try:
        _worker_model = load_model(model_uri)
    except Exception as error:  # reported by the first task, which stops the job
        _worker_load_error = f"{type(error).__name__}: {error}"


def _predict_chunk(
    rows: list[dict[str, Any]], params: dict[str, Any], output_dir: str
) -> list[dict[str, Any]]:
    if _worker_model is None:
        raise ModelLoadError(f"A batch worker could not load the model: {_worker_load_error}")
    return [predict_row(_worker_model, row, params, output_dir) for row in rows]
