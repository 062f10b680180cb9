"""What ``POST /invocations`` accepts, and what it answers.

**JSON** (``Content-Type: application/json``): one of these envelopes, each with an
optional ``"params"`` object (``mode``, ``confidence_threshold`` and the mode's params)::

    {"resources": [resource, ...], "params": {"mode": "slice", "slice_index": 3}}
    {"inputs": [resource, ...]}                       # MLflow; a single resource also works
    {"instances": [resource, ...]}                    # MLflow (TF-serving style)
    {"dataframe_records": [resource, ...]}            # MLflow, pandas orient="records"
    {"dataframe_split": {"columns": [...], "data": [[...], ...]}}   # pandas orient="split"

A ``resource`` is the JSON form of :mod:`datamint_core.resources`, pixels inline as
``{"encoding": "npy_base64", "data": "<base64 of the .npy bytes>"}``.

**Multipart** (``Content-Type: multipart/form-data``), so a large volume travels as raw
``.npy`` bytes rather than base64 or nested lists:

- a part named ``request`` holding one of the JSON envelopes above, in which a resource's
  pixel data refers to another part: ``"pixel_data": {"encoding": "multipart", "part": "ct"}``;
- one *file* part (one with a filename) per array, named as referenced, holding the
  ``.npy`` bytes (``np.save``); arrays are never unpickled.

For example, with curl::

    curl -F 'request={"resources": [{"kind": "volume", "id": "ct-1",
               "pixel_data": {"encoding": "multipart", "part": "ct"}}],
               "params": {"mode": "volume"}};type=application/json' \\
         -F 'ct=@ct.npy;type=application/octet-stream' http://127.0.0.1:8080/invocations

**Answer**: ``{"predictions": [[annotation, ...], ...]}``, one list per resource, in order;
each annotation is ``Annotation.to_dict()`` (masks run-length encoded).

**Errors** carry ``{"error_code": ..., "message": ...}``:

- 400 ``MALFORMED_REQUEST``: not JSON, an unknown envelope, a missing or stray multipart part;
- 403 ``PATH_NOT_ALLOWED``: a resource names a local ``path`` outside the allowed directories;
- 413 ``REQUEST_TOO_LARGE``: the body is larger than the server's limit;
- 415 ``UNSUPPORTED_MEDIA_TYPE``: neither JSON nor multipart;
- 422 ``INVALID_RESOURCE``: a resource that cannot be built (unknown fields, unreadable
  pixels, a wrong dtype or shape);
- 422 ``INVALID_PARAMETER_VALUE``: well-formed input the model cannot serve as asked: an
  unknown mode, a missing or unexpected param, a slice or frame index out of range
  (``datamint_core.routing.InvalidRequestError``, which a model may raise itself to refuse
  an input as the client's fault);
- 422 ``UNSUPPORTED_MODE``: the model serves neither the mode nor a default;
- 500 ``MODEL_ERROR``: the model itself failed (any other exception, a ``ValueError`` of its
  own included, or a result that is not one list of annotations per input); the server
  logs it and keeps serving;
- 504 ``REQUEST_TIMEOUT``: the request took longer than the server's timeout.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np

from datamint_core.annotations import Annotation
from datamint_core.resources import BaseResource, ResourceError, as_resources, load_npy

#: Envelope keys that hold the resources, ours first.
INPUT_KEYS = ("resources", "inputs", "instances", "dataframe_records", "dataframe_split")
#: The multipart part that holds the JSON envelope.
REQUEST_PART = "request"
#: The pixel-data encoding that points at a multipart part.
MULTIPART_ENCODING = "multipart"


class RequestError(Exception):
    """A request the server refuses; carries its HTTP status and JSON error body."""

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


def malformed(message: str) -> RequestError:
    """A 400 for a request whose envelope cannot be read."""
    return RequestError(400, "MALFORMED_REQUEST", message)


def parse_json_envelope(body: bytes | str | Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Split a JSON request into its resource records and its params.

    Returns:
        ``(records, params)``: the resource JSON forms, in order, and the params object.

    Raises:
        RequestError: 400 when the body is not JSON or not one of the accepted envelopes.
    """
    if isinstance(body, Mapping):
        envelope: Any = body
    else:
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise malformed(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(envelope, Mapping):
        raise malformed(
            f"The request body must be a JSON object with one of the keys {list(INPUT_KEYS)} "
            f"and optionally 'params'; got a JSON {type(envelope).__name__}."
        )
    keys = [key for key in INPUT_KEYS if key in envelope]
    unknown = sorted(set(envelope) - {*INPUT_KEYS, "params"})
    if len(keys) != 1 or unknown:
        found = f"found keys {sorted(envelope)}" if envelope else "found an empty object"
        raise malformed(
            f"The request body must have exactly one of the keys {list(INPUT_KEYS)} and "
            f"optionally 'params'; {found}."
        )
    params = envelope.get("params") or {}
    if not isinstance(params, Mapping):
        raise malformed(f"'params' must be a JSON object; got {type(params).__name__}.")
    key = keys[0]
    return _records(key, envelope[key]), dict(params)


def _records(key: str, data: Any) -> list[Any]:
    if key == "dataframe_split":
        if not isinstance(data, Mapping) or not {"columns", "data"} <= set(data):
            raise malformed(
                "'dataframe_split' must be an object with 'columns' and 'data' "
                "(pandas DataFrame.to_dict(orient='split'))."
            )
        columns, rows = data["columns"], data["data"]
        if not isinstance(rows, list) or not all(
            isinstance(row, list) and len(row) == len(columns) for row in rows
        ):
            raise malformed(
                f"'dataframe_split.data' must be a list of rows of {len(columns)} values, "
                "one per column."
            )
        return [{c: v for c, v in zip(columns, row, strict=True) if v is not None} for row in rows]
    if key in ("inputs", "instances") and isinstance(data, Mapping):
        return [data]
    if not isinstance(data, list):
        raise malformed(f"'{key}' must be a list of resource objects; got {type(data).__name__}.")
    if key == "dataframe_records":
        return [
            {c: v for c, v in record.items() if v is not None}
            if isinstance(record, Mapping)
            else record
            for record in data
        ]
    return data


def check_paths(records: Sequence[Any], allow_path_dirs: Sequence[str] | None) -> None:
    """Refuse resources that name a local file outside the allowed directories.

    Args:
        records: resource JSON forms.
        allow_path_dirs: resolved directories whose files may be read; ``None`` allows any
            path (the command line reading the caller's own files).

    Raises:
        RequestError: 403 naming the path and what the operator must allow.
    """
    if allow_path_dirs is None:
        return
    for position, record in enumerate(records):
        path = record.get("path") if isinstance(record, Mapping) else None
        if path is None:
            continue
        resolved = os.path.realpath(str(path))
        if not any(os.path.commonpath([resolved, d]) == d for d in allow_path_dirs):
            where = (
                f"the allowed directories {list(allow_path_dirs)}"
                if allow_path_dirs
                else "any directory: this server reads no local files"
            )
            raise RequestError(
                403,
                "PATH_NOT_ALLOWED",
                f"Input #{position} names the local path {path!r}, which is outside {where}. "
                "Send the pixels inline (npy_base64) or as a multipart part, or start the "
                "server with --allow-path-dir DIR.",
            )


def build_resources(
    records: list[Any],
    arrays: Mapping[str, BinaryIO] | None = None,
    allow_path_dirs: Sequence[str] | None = None,
) -> list[BaseResource]:
    """Turn resource JSON forms into resources, taking multipart arrays where referenced.

    Args:
        records: resource JSON forms (:func:`parse_json_envelope`).
        arrays: multipart file parts by name, each holding ``.npy`` bytes.
        allow_path_dirs: see :func:`check_paths`.

    Raises:
        RequestError: 400 for a missing or unreferenced part, 403 for a path not allowed,
            422 for a resource that cannot be built.
    """
    check_paths(records, allow_path_dirs)
    if arrays is not None:
        records = _with_part_arrays(records, arrays)
    try:
        return as_resources(records)
    except ResourceError as error:
        raise RequestError(422, "INVALID_RESOURCE", str(error)) from None


def _with_part_arrays(records: list[Any], arrays: Mapping[str, BinaryIO]) -> list[Any]:
    used: set[str] = set()
    resolved = []
    for position, record in enumerate(records):
        pixel_data = record.get("pixel_data") if isinstance(record, Mapping) else None
        if not (isinstance(pixel_data, Mapping) and pixel_data.get("encoding") == "multipart"):
            resolved.append(record)
            continue
        name = pixel_data.get("part")
        if name not in arrays:
            raise malformed(
                f"Input #{position} refers to the multipart part {name!r}, which the request "
                f"does not have; its file parts are {sorted(arrays)}."
            )
        used.add(name)
        resolved.append(_with_part(record, arrays[name], name, position))
    unused = sorted(set(arrays) - used)
    if unused:
        raise malformed(
            f"The multipart part(s) {unused} are not referenced by any resource; refer to a "
            'part with "pixel_data": {"encoding": "multipart", "part": NAME}.'
        )
    return resolved


def _with_part(record: Mapping[str, Any], part: Any, name: str, position: int) -> dict[str, Any]:
    """The record with its pixels from a part: ``.npy`` bytes, or image files.

    A part holding a DICOM file, NIfTI, PNG or JPEG is read with :mod:`datamint_core.io`;
    several file parts under one name are one DICOM series. What the file says (kind,
    spacing, affine, modality, metadata) fills in what the record leaves out.
    """
    files = part if isinstance(part, list) else [part]
    first = getattr(files[0], "file", files[0])
    first.seek(0)
    named_npy = str(getattr(files[0], "filename", None) or "").lower().endswith(".npy")
    if len(files) == 1 and (first.read(len(_NPY_MAGIC)) == _NPY_MAGIC or named_npy):
        array = _read_npy_part(first, name, position)
        # An array under the "list" encoding is taken as it is (np.asarray: no copy).
        return {**record, "pixel_data": {"encoding": "list", "data": array}}
    from datamint_core.io.uploads import decode_uploads

    uploads = [(getattr(f, "filename", None), getattr(f, "file", f)) for f in files]
    try:
        decoded = decode_uploads(uploads, record.get("kind"))
    except ResourceError as error:
        raise RequestError(422, "INVALID_RESOURCE", f"Input #{position}: {error}") from None
    except ImportError as error:
        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE", f"Input #{position}: {error}") from None
    found: dict[str, Any] = {
        "kind": decoded.kind,
        "filename": uploads[0][0],
        "mimetype": decoded.mimetype,
        "modality": decoded.modality,
    }
    if decoded.spacing is not None and decoded.kind != "video":
        found["spacing"] = list(decoded.spacing)
    if decoded.affine is not None and decoded.kind == "volume":
        found["affine"] = decoded.affine
    merged = {key: value for key, value in found.items() if value is not None}
    merged.update({key: value for key, value in record.items() if value is not None})
    given = record.get("metadata")
    merged["metadata"] = {**decoded.metadata, **given} if isinstance(given, Mapping) else given
    if merged["metadata"] is None:
        merged["metadata"] = decoded.metadata
    merged["pixel_data"] = {"encoding": "list", "data": decoded.pixels}
    return merged


_NPY_MAGIC = b"\x93NUMPY"


def _read_npy_part(stream: BinaryIO, name: str, position: int) -> np.ndarray:
    stream.seek(0)
    try:
        return load_npy(stream, f"the multipart part {name!r}")
    except ResourceError as error:
        raise RequestError(422, "INVALID_RESOURCE", f"Input #{position}: {error}") from None


def predictions_to_json(result: Sequence[Sequence[Annotation]]) -> bytes:
    """The response body: ``{"predictions": [[annotation dict, ...], ...]}``."""
    predictions = [[annotation.to_dict() for annotation in entry] for entry in result]
    return json.dumps({"predictions": predictions}, separators=(",", ":")).encode()


def arrays_to_records(path_or_stream: str | BinaryIO, content_type: str) -> list[dict[str, Any]]:
    """Resource JSON forms for a local ``.npy`` (one array) or ``.npz`` (one per array) file.

    The kind of each resource follows its dimensions (2: image, 3: volume, 4: video); an
    ``.npz`` array's name becomes the resource's ``id``.
    """
    source = (
        path_or_stream if isinstance(path_or_stream, str) else io.BytesIO(path_or_stream.read())
    )
    try:
        loaded = np.load(source, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ResourceError(f"Cannot read {content_type} input: {error}") from None
    if content_type == "npy":
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            raise ResourceError("The npy input holds an .npz archive; give content type npz.")
        return [{"pixel_data": {"encoding": "list", "data": loaded}}]
    if isinstance(loaded, np.ndarray):
        raise ResourceError("The npz input holds a single .npy array; give content type npy.")
    with loaded:
        return [
            {"id": name, "pixel_data": {"encoding": "list", "data": loaded[name]}}
            for name in loaded.files
        ]
