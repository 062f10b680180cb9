"""What a batch job reads: a directory of studies or a manifest table, one resource per row.

A row is a plain dict (it travels through process pools and Arrow as is)::

    {"id": "ct-001", "path": "/data/ct-001.nii.gz", "kind": None, "spacing": None,
     "affine": None, "modality": "CT", "filename": None, "mimetype": None,
     "metadata": '{"PatientAge": "061Y"}'}

``metadata`` stays a JSON string until the row is read, so rows stay flat; so does
``prompts``, an interactive model's prompts for that row (the ``prompts`` param, see
:mod:`datamint_core.prompts`).

**Multi-modal cases**: a manifest with one path column per channel, named ``path:<channel>``
(``id,path:t1,path:t1c,path:t2,path:flair``), reads each row as one case whose channels are
stacked in column order (:func:`datamint_core.io.read_case`, grids checked). Such a row's
``channels`` holds ``[[channel, path], ...]`` as a JSON string, and its ``path`` is the
first channel's.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from datamint_core.errors import BatchInputError
from datamint_core.resources import BaseResource
from datamint_core.wire import plain_record, record_with_file, resource_from_dict

#: Columns of a manifest; only ``path`` is required (``id`` defaults to it).
MANIFEST_COLUMNS = (
    "id",
    "path",
    "kind",
    "spacing",
    "affine",
    "modality",
    "filename",
    "mimetype",
    "metadata",
    "prompts",
)
#: The columns of a row that are resource fields (``path`` and ``channels`` are read).
_RECORD_COLUMNS = (
    "id", "kind", "spacing", "affine", "modality", "filename", "mimetype", "metadata"
)
#: Prefix of a manifest's per-channel path columns (``path:t1``, ``path:flair``).
CHANNEL_PATH_PREFIX = "path:"
_MANIFEST_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def iter_inputs(source: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield one row per study in ``source``, streamed (never the whole table at once).

    Args:
        source: a directory (each entry not starting with ``.`` or ``_`` is one study: a
            file, or a directory such as a DICOM series) or a manifest table (``.parquet``,
            ``.csv``, ``.jsonl``) with the columns in :data:`MANIFEST_COLUMNS`. Relative
            paths in a manifest are relative to the manifest's directory.

    Raises:
        BatchInputError: the source does not exist, is an unknown table format, has unknown
            columns or no ``path`` column, or repeats an id.
    """
    path = Path(source)
    if path.is_dir():
        rows: Iterator[dict[str, Any]] = (
            _row({"id": entry.name, "path": os.fspath(entry)}) for entry in _studies(path)
        )
    elif path.is_file():
        rows = _manifest_rows(path)
    else:
        raise BatchInputError(
            f"Batch input {os.fspath(source)!r} does not exist; give a directory of studies or "
            f"a manifest table ({', '.join(sorted(_MANIFEST_SUFFIXES))})."
        )
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise BatchInputError(
                f"Batch input {os.fspath(source)!r} names id {row['id']!r} twice; every row "
                "needs its own id (one output row per id)."
            )
        seen.add(row["id"])
        yield row


def count_inputs(source: str | os.PathLike[str]) -> int:
    """Count the rows :func:`iter_inputs` yields, reading as little as possible."""
    path = Path(source)
    if path.is_dir():
        return sum(1 for _ in _studies(path))
    if path.is_file() and _manifest_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in iter_inputs(source))


def load_resource(row: Mapping[str, Any]) -> BaseResource:
    """Read the study a row names (any format :func:`datamint_core.io.read` takes), with the
    row's kind, geometry and descriptors laid over what the file says
    (:func:`datamint_core.wire.record_with_file`: the one way from a record to a resource).

    Raises:
        ResourceError: the file cannot be read (as the row's kind), or the row's fields are
            not valid.
        ImportError: the study's format needs an extra that is not installed.
    """
    from datamint_core.io._read import decode_path, file_name_of
    from datamint_core.io.case import decode_case

    # A table row: missing cells dropped, Arrow's arrays as lists, metadata as JSON text.
    record = plain_record({k: v for k, v in row.items() if k in _RECORD_COLUMNS}, table=True)
    if row.get("channels"):
        decoded, filename = decode_case(dict(json.loads(row["channels"]))), None
    else:
        decoded = decode_path(row["path"], record.get("kind"))
        filename = file_name_of(row["path"])
    return resource_from_dict(record_with_file(record, decoded, filename))


def _studies(directory: Path) -> Iterator[Path]:
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.startswith((".", "_")):
            yield Path(entry.path)


def _manifest_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in _MANIFEST_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise BatchInputError(
        f"Cannot tell the table format of {os.fspath(path)!r}; a manifest is "
        f"{', '.join(sorted(_MANIFEST_SUFFIXES))}, or give a directory of studies."
    )


def _manifest_rows(path: Path) -> Iterator[dict[str, Any]]:
    kind = _manifest_format(path)
    base = path.parent
    if kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        _check_columns(table.schema_arrow.names, path)
        for batch in table.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield _row(record, base)
    elif kind == "csv":
        with open(path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            _check_columns(reader.fieldnames or [], path)
            for record in reader:
                yield _row({k: (v if v != "" else None) for k, v in record.items()}, base)
    else:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise BatchInputError(
                        f"Line {number} of {os.fspath(path)!r} is not JSON ({error}); "
                        "accepted: one JSON object per line."
                    ) from None
                if not isinstance(record, dict):
                    raise BatchInputError(
                        f"Line {number} of {os.fspath(path)!r} is not a JSON object; "
                        "accepted: one JSON object per line."
                    )
                _check_columns(list(record), path)
                yield _row(record, base)


def _check_columns(names: list[str], path: Path) -> None:
    channels = [name for name in names if name.startswith(CHANNEL_PATH_PREFIX)]
    unknown = sorted(set(names) - set(MANIFEST_COLUMNS) - set(channels))
    bad = [name for name in channels if not name[len(CHANNEL_PATH_PREFIX) :].strip()]
    problem = None
    if unknown or bad:
        problem = f"unknown column(s) {sorted(unknown + bad)}"
    elif "path" in names and channels:
        problem = "both a 'path' column and per-channel 'path:<channel>' columns"
    elif "path" not in names and not channels:
        problem = "no 'path' column"
    if problem:
        raise BatchInputError(
            f"Manifest {os.fspath(path)!r} has {problem}; accepted columns: "
            f"{list(MANIFEST_COLUMNS)} ('path' required, 'metadata' a JSON object as a "
            "string), or instead of 'path' one 'path:<channel>' column per channel of a "
            "multi-modal case (path:t1, path:t2, ...)."
        )


def _row(record: Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    channels = [
        (column[len(CHANNEL_PATH_PREFIX) :], _resolved(record[column], base))
        for column in record
        if column.startswith(CHANNEL_PATH_PREFIX)
    ]
    if channels:
        missing = [name for name, value in channels if value is None]
        if missing:
            raise BatchInputError(
                f"Row {record.get('id')!r} has no path for channel(s) {missing}; every row "
                "of a multi-modal manifest needs a path in each 'path:<channel>' column."
            )
        record = {**record, "path": channels[0][1]}
    path = record.get("path")
    if path is None or str(path).strip() == "":
        raise BatchInputError(
            f"A manifest row has no path: {dict(record)!r}; every row needs a 'path' "
            f"(accepted columns: {list(MANIFEST_COLUMNS)})."
        )
    path = str(path)
    if base is not None and "://" not in path and not os.path.isabs(path):
        path = os.fspath(base / path)
    row = {column: record.get(column) for column in MANIFEST_COLUMNS}
    row["path"] = path
    row["channels"] = json.dumps(channels) if channels else None
    row["id"] = str(record["id"]) if record.get("id") is not None else str(record["path"])
    for key in ("spacing", "affine"):
        if isinstance(row[key], str):  # a CSV cell holds JSON text
            try:
                row[key] = json.loads(row[key])
            except ValueError:
                raise BatchInputError(
                    f"Row {row['id']!r}: {key} {row[key][:80]!r} is not JSON; give a list of "
                    "numbers, e.g. [2.5, 0.7, 0.7]."
                ) from None
    for key in ("metadata", "prompts"):
        if isinstance(row[key], Mapping):
            row[key] = json.dumps(row[key])
    return row


def _resolved(value: Any, base: Path | None) -> str | None:
    """A manifest cell's path, relative to the manifest's directory; None when empty."""
    if value is None or str(value).strip() == "":
        return None
    path = str(value)
    if base is not None and "://" not in path and not os.path.isabs(path):
        path = os.fspath(base / path)
    return path
