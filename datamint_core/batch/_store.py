"""The output directory of a batch job: Parquet parts committed atomically, and resume.

Layout::

    OUTPUT/
      _datamint_batch.json               the job: model URI and params (a rerun must match)
      part-<run>-<task>-<seq>.parquet    committed parts, one row per input
      _masks/<id>-<hash>.npz             the masks of each row that has any (a name Parquet
                                         readers skip, so OUTPUT reads as one table)
      .part-....parquet.incomplete       a part being written (never read; removed on rerun)
      _pending-<run>/rows.parquet        the Spark engine's input rows (removed after the run)

A part is written under a temporary name and ``os.replace``d into place, so a killed job
leaves whole parts or nothing. Names starting with ``.`` or ``_`` are skipped by Parquet
readers (pyarrow, Spark, pandas), so ``pandas.read_parquet(OUTPUT)`` reads exactly the
committed rows. A part's name depends only on the run, the task and the part's sequence
number in it, so a retried Spark task overwrites its own parts instead of adding rows.

Resume: a rerun first rewrites every committed part without its ``failed`` rows (atomically,
part by part), then skips every id that is left (all ``ok``): failed rows are retried, done
ones are not, and no id is ever in two committed rows.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datamint_core._extras import require
from datamint_core._files import INCOMPLETE_SUFFIX, write_atomically
from datamint_core.batch._rows import MASK_DIR, OUTPUT_COLUMNS, STATUS_OK
from datamint_core.errors import OutputMismatchError

JOB_FILE = "_datamint_batch.json"
#: Where the Spark engine stages its input rows (one directory per run).
STAGING_PREFIX = "_pending-"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"


def require_pyarrow() -> Any:
    """Import pyarrow, or say which extra brings it."""
    require("pyarrow.parquet", "Batch output (Parquet)")
    return require("pyarrow", "Batch output (Parquet)")


def output_schema() -> Any:
    """The Arrow schema of every part."""
    pa = require_pyarrow()
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in OUTPUT_COLUMNS.items()])


def new_run_id() -> str:
    """A short id naming one run's parts."""
    return uuid.uuid4().hex[:12]


def prepare_output(output_dir: str | os.PathLike[str], job: Mapping[str, Any]) -> set[str]:
    """Make ``output_dir`` ready for a (re)run of ``job``; return the ids already done.

    Removes parts, masks and staged inputs left behind by a killed run, drops ``failed`` rows from
    committed parts (they are retried), and records ``job``.

    Raises:
        OutputMismatchError: the directory holds results of another model or other params.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    job_file = output / JOB_FILE
    if job_file.exists():
        recorded = json.loads(job_file.read_text())
        if recorded != json.loads(json.dumps(dict(job))):
            raise OutputMismatchError(
                f"{os.fspath(output)!r} holds the results of another batch job ({recorded}); "
                f"this one is {dict(job)}. Rerun with the same model and params to resume, "
                "or give a new output directory."
            )
    else:
        text = json.dumps(dict(job), indent=2, sort_keys=True).encode()
        write_atomically(job_file, text)
    incomplete = f".*{INCOMPLETE_SUFFIX}"
    for stale in [*output.glob(incomplete), *output.glob(f"{MASK_DIR}/{incomplete}")]:
        stale.unlink(missing_ok=True)
    for staging in output.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(staging, ignore_errors=True)
    done: set[str] = set()
    for part in committed_parts(output):
        done.update(_drop_failed_rows(part))
    return done


def committed_parts(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The committed parts in ``output_dir``, sorted by name."""
    return sorted(Path(output_dir).glob(f"{PART_PREFIX}*{PART_SUFFIX}"))


def part_name(run_id: str, task: int | str, sequence: int) -> str:
    """The file name of a part: fixed by run, task and sequence, so a retry overwrites it."""
    return f"{PART_PREFIX}{run_id}-{task}-{sequence:05d}{PART_SUFFIX}"


def commit_part(output_dir: str | os.PathLike[str], name: str, rows: Iterable[dict]) -> int:
    """Write ``rows`` as the part ``name`` atomically; return how many rows it holds."""
    pa = require_pyarrow()
    table = pa.Table.from_pylist(list(rows), schema=output_schema())
    _write_table_atomically(Path(output_dir) / name, table)
    return table.num_rows


def read_results(output_dir: str | os.PathLike[str]) -> Any:
    """Read every committed row of a batch output as a pandas DataFrame."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    parts = committed_parts(output_dir)
    if not parts:
        return output_schema().empty_table().to_pandas()
    return pa.concat_tables(_in_output_schema(pq.read_table(part)) for part in parts).to_pandas()


def _in_output_schema(table: Any) -> Any:
    """``table`` with every output column, in order: a part written before a column was added
    (``error_code``) reads with that column empty."""
    pa = require_pyarrow()
    schema = output_schema()
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names)


def _drop_failed_rows(part: Path) -> list[str]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    ok = pc.equal(table["status"], STATUS_OK)
    kept = table.filter(ok)
    if kept.num_rows == 0:
        part.unlink()
    elif kept.num_rows < table.num_rows:
        _write_table_atomically(part, kept)
    return kept["id"].to_pylist()


def _write_table_atomically(target: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    write_atomically(target, lambda file: pq.write_table(table, file))
