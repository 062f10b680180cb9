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
  ``.npy`` bytes (``np.save``) or an ``.npz`` with one array; arrays are never unpickled.
  A part may also hold a DICOM file, NIfTI (``.nii``, ``.nii.gz``: a whole volume in one
  compressed part), PNG or JPEG; several files under one part name are one DICOM series.
- **a multi-modal case** (one resource, several co-registered channels): list the parts,
  in channel order, as ``"pixel_data": {"encoding": "multipart", "parts": ["t1", "t1c",
  "t2", "flair"]}``; each part (a file, or a series of files) is one channel, named after
  its part unless the resource gives ``channel_names``. Their grids must agree (shape,
  and affine within :data:`datamint_core.io.AFFINE_TOLERANCE_MM`); the channels are stacked
  as :func:`datamint_core.io.read_case` stacks them.

A request may carry up to ``--max-parts`` file parts (default 4096: a series of that many
slices), raisable like the other limits.

For example, with curl::

    curl -F 'request={"resources": [{"kind": "volume", "id": "ct-1",
               "pixel_data": {"encoding": "multipart", "part": "ct"}}],
               "params": {"mode": "volume"}};type=application/json' \\
         -F 'ct=@ct.npy;type=application/octet-stream' http://127.0.0.1:8080/invocations

    curl -F 'request={"resources": [{"id": "brats-1", "pixel_data": {"encoding":
               "multipart", "parts": ["t1", "t1c", "t2", "flair"]}}]}' \\
         -F t1=@t1.nii.gz -F t1c=@t1c.nii.gz -F t2=@t2.nii.gz -F flair=@flair.nii.gz \\
         http://127.0.0.1:8080/invocations

**Answer**: ``{"predictions": [[annotation, ...], ...]}``, one list per resource, in order;
each annotation is ``Annotation.to_dict()`` (masks run-length encoded).

**Errors** carry ``{"error_code": ..., "message": ...}``; an error raised by the decoder or
the model is answered with the status and code its class declares
(:mod:`datamint_core.errors`, the one mapping every server shares):

- 400 ``MALFORMED_REQUEST``: not JSON, an unknown envelope, a missing or stray multipart part;
- 403 ``PATH_NOT_ALLOWED``: a resource names a local ``path`` outside the allowed directories;
- 400 ``MALFORMED_REQUEST`` also for JSON nested deeper than ``MAX_JSON_DEPTH``, an
  envelope of the wrong shape (``dataframe_split`` columns that are not a list of names,
  a resource that is not an object, ...), a ``path`` that is not a string or holds a NUL;
- 408 ``REQUEST_TIMEOUT``: the client did not send the whole request within the read
  deadline (``--read-timeout``);
- 413 ``REQUEST_TOO_LARGE``: the body is larger than the server's limit;
- 413 ``INPUT_TOO_LARGE``: the pixel data would decode to more than ``--max-decoded-bytes``
  (checked from the declared shape and dtype before anything is allocated), or the request
  would run more than ``--max-slices`` slices or frames;
- 415 ``UNSUPPORTED_MEDIA_TYPE``: neither JSON nor multipart;
- 422 ``INVALID_RESOURCE``: a resource that cannot be built (unknown fields, unreadable
  pixels, a wrong dtype or shape);
- 422 ``INVALID_PARAMETER_VALUE``: well-formed input the model cannot serve as asked: an
  unknown mode, a missing or unexpected param, a slice or frame index out of range
  (``datamint_core.InvalidRequestError``, which a model may raise itself to refuse an input
  as the client's fault);
- 422 ``UNSUPPORTED_MODE``: the model serves neither the mode nor a default;
- 500 ``MODEL_ERROR``: the model itself failed (any other exception, a ``ValueError`` of its
  own included, or a result that is not one list of annotations per input); the server
  logs it and keeps serving; another error of the library's own is answered with its
  status and code (e.g. 503 ``TRACKING_SERVER_UNREACHABLE`` for a linked model);
- 504 ``REQUEST_TIMEOUT``: the request took longer than the server's timeout.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np

from datamint_core._messages import shorten
from datamint_core._npy import NPY_MAGIC, ZIP_MAGIC, load_array
from datamint_core._request_paths import check_request_paths
from datamint_core.annotations import Annotation, json_form
from datamint_core.errors import (
    DatamintError,
    InputTooLargeError,
    MalformedRequestError,
    ResourceError,
    http_answer,
)
from datamint_core.resources import BaseResource
from datamint_core.wire import as_resources, record_with_file

#: Envelope keys that hold the resources, ours first.
INPUT_KEYS = ("resources", "inputs", "instances", "dataframe_records", "dataframe_split")
#: The multipart part that holds the JSON envelope.
REQUEST_PART = "request"
#: The pixel-data encoding that points at a multipart part.
MULTIPART_ENCODING = "multipart"


class RequestError(Exception):
    """A request the server refuses; carries its HTTP status and JSON error body.

    The message is bounded (:func:`datamint_core._messages.shorten`): an error answer stays a
    few kB whatever the request held.
    """

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        message = shorten(message)
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message

    @classmethod
    def answering(cls, error: BaseException, prefix: str = "") -> RequestError:
        """The answer to ``error`` (:func:`datamint_core.errors.http_answer`: the one mapping
        from an error to a status and code), its message after ``prefix``."""
        answer = http_answer(error)
        return cls(answer.status, answer.error_code, prefix + answer.message)

    def to_dict(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


def malformed(message: str) -> RequestError:
    """A 400 for a request whose envelope cannot be read."""
    return RequestError.answering(MalformedRequestError(message))


#: How deep a request's JSON may nest: the envelope, a resource, its pixel lists and some room.
MAX_JSON_DEPTH = 32
# Mask run lengths serialized per json.dumps call in an answer: tens of milliseconds each.
_RUNS_PER_PIECE = 1 << 16


def parse_json_envelope(body: bytes | str | Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Split a JSON request into its resource records and its params.

    Returns:
        ``(records, params)``: the resource JSON forms (objects), in order, and the params
        object.

    Raises:
        RequestError: 400 when the body is not JSON, nests deeper than
            :data:`MAX_JSON_DEPTH`, or is not one of the accepted envelopes.
    """
    if isinstance(body, Mapping):
        envelope: Any = body
    else:
        try:
            envelope = json.loads(body)
        except RecursionError:
            raise _too_deep() from None
        except (ValueError, UnicodeDecodeError, TypeError) as error:
            raise malformed(f"The request body is not valid JSON: {error}.") from None
        # Only a body with more brackets than the limit can nest that deep: a cheap scan
        # spares the walk for almost every request.
        if (
            body.count(b"[" if isinstance(body, bytes) else "[")
            + body.count(b"{" if isinstance(body, bytes) else "{")
            > MAX_JSON_DEPTH
        ):
            _check_depth(envelope)
    if not isinstance(envelope, Mapping):
        raise malformed(
            f"The request body must be a JSON object with one of the keys {list(INPUT_KEYS)} "
            f"and optionally 'params'; got a JSON {type(envelope).__name__}."
        )
    keys = [key for key in INPUT_KEYS if key in envelope]
    unknown = sorted(str(key) for key in set(envelope) - {*INPUT_KEYS, "params"})
    if len(keys) != 1 or unknown:
        shown = sorted(map(str, envelope))[:20]
        found = f"found keys {shown}" if envelope else "found an empty object"
        raise malformed(
            f"The request body must have exactly one of the keys {list(INPUT_KEYS)} and "
            f"optionally 'params'; {found}."
        )
    params = envelope.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise malformed(f"'params' must be a JSON object; got {_json_type(params)}.")
    key = keys[0]
    records = _records(key, envelope[key])
    for position, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise malformed(
                f"'{key}' entry #{position} must be a resource object; got {_json_type(record)}."
            )
    return records, dict(params)


def _records(key: str, data: Any) -> list[Any]:
    """The resource records of one envelope form, its shape checked."""
    if key == "dataframe_split":
        columns = data.get("columns") if isinstance(data, Mapping) else None
        rows = data.get("data") if isinstance(data, Mapping) else None
        if not (
            isinstance(columns, list)
            and all(isinstance(column, str) for column in columns)
            and len(set(columns)) == len(columns)
        ):
            raise malformed(
                "'dataframe_split' must be an object with 'columns' (a list of distinct field "
                "names) and 'data' (a list of rows), as pandas DataFrame.to_dict(orient='split')."
            )
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
        raise malformed(f"'{key}' must be a list of resource objects; got {_json_type(data)}.")
    if key == "dataframe_records":
        return [
            {c: v for c, v in record.items() if v is not None}
            if isinstance(record, Mapping)
            else record
            for record in data
        ]
    return data


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _too_deep() -> RequestError:
    return malformed(
        f"The request JSON nests deeper than {MAX_JSON_DEPTH} levels; a request is an object "
        "holding resources whose pixel lists have at most 4 dimensions."
    )


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), f"a {type(value).__name__}")


def build_resources(
    records: list[Any],
    arrays: Mapping[str, BinaryIO] | None = None,
    allow_path_dirs: Sequence[str] | None = None,
) -> list[BaseResource]:
    """Turn resource JSON forms into resources, taking multipart arrays where referenced.

    Args:
        records: resource JSON forms (:func:`parse_json_envelope`).
        arrays: multipart file parts by name, each holding ``.npy`` bytes.
        allow_path_dirs: resolved directories whose files a ``path`` may name; ``None``
            allows any (:func:`datamint_core._request_paths.check_request_paths`).

    Raises:
        RequestError: 400 for a missing or unreferenced part, 403 for a path not allowed,
            413 for pixels over the decode limit, 422 for a resource that cannot be built.
    """
    try:
        check_request_paths(records, allow_path_dirs)
        if arrays is not None:
            records = _with_part_arrays(records, arrays)
        return as_resources(records)
    except DatamintError as error:
        raise RequestError.answering(error) from None


def _with_part_arrays(records: list[Any], arrays: Mapping[str, BinaryIO]) -> list[Any]:
    used: set[str] = set()
    resolved = []
    for position, record in enumerate(records):
        pixel_data = record.get("pixel_data") if isinstance(record, Mapping) else None
        if not (isinstance(pixel_data, Mapping) and pixel_data.get("encoding") == "multipart"):
            resolved.append(record)
            continue
        names = _part_names(pixel_data, position)
        for name in names:
            if name not in arrays:
                raise malformed(
                    f"Input #{position} refers to the multipart part {name!r}, which the "
                    f"request does not have; its file parts are {sorted(arrays)[:50]}."
                )
        used.update(names)
        if "parts" in pixel_data:
            resolved.append(_with_channel_parts(record, arrays, names, position))
        else:
            resolved.append(_with_part(record, arrays[names[0]], names[0], position))
    unused = sorted(set(arrays) - used)
    if unused:
        raise malformed(
            f"The multipart part(s) {unused[:50]} are not referenced by any resource; refer to "
            'a part with "pixel_data": {"encoding": "multipart", "part": NAME} (or "parts": '
            "[NAME, ...] for the channels of a multi-modal case)."
        )
    return resolved


def _part_names(pixel_data: Mapping[str, Any], position: int) -> list[str]:
    """The part a record refers to (``part``), or its channels' parts (``parts``), checked."""
    if ("part" in pixel_data) == ("parts" in pixel_data):
        raise malformed(
            f"Input #{position}: multipart pixel_data needs exactly one of 'part' (the name of "
            "one file part) or 'parts' (a list of part names, one channel each)."
        )
    if "part" in pixel_data:
        if not isinstance(pixel_data["part"], str):
            raise malformed(
                f"Input #{position}: 'part' must be a string naming a file part; got "
                f"{_json_type(pixel_data['part'])}."
            )
        return [pixel_data["part"]]
    names = pixel_data["parts"]
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(name, str) and name for name in names)
        or len(set(names)) != len(names)
    ):
        raise malformed(
            f"Input #{position}: 'parts' must be a list of distinct part names, one per "
            f'channel in channel order, e.g. ["t1", "t1c", "t2", "flair"]; got '
            f"{json.dumps(names)[:200]}."
        )
    return names


def _with_part(record: Mapping[str, Any], part: Any, name: str, position: int) -> dict[str, Any]:
    """The record with its pixels from a part: ``.npy`` bytes, or image files.

    A part holding a DICOM file, NIfTI, PNG or JPEG is read with :mod:`datamint_core.io`;
    several file parts under one name are one DICOM series. What the file says (kind,
    spacing, affine, modality, metadata) fills in what the record leaves out.
    """
    files = part if isinstance(part, list) else [part]
    first = getattr(files[0], "file", files[0])
    if len(files) == 1 and _is_array_part(files[0]):
        return {**record, "pixel_data": _read_npy_part(first, name, position)}
    decoded, filename = _decode_files(files, record.get("kind"), position)
    return record_with_file(record, decoded, filename)


def _with_channel_parts(
    record: Mapping[str, Any], arrays: Mapping[str, Any], names: list[str], position: int
) -> dict[str, Any]:
    """The record with its pixels stacked from one part per channel (a multi-modal case)."""
    from datamint_core.io._decoded import Decoded
    from datamint_core.io.case import stack_channels

    def loader(name: str) -> Any:
        def load() -> tuple[Decoded, str | None]:
            files = arrays[name] if isinstance(arrays[name], list) else [arrays[name]]
            if len(files) == 1 and _is_array_part(files[0]):
                array = _read_npy_part(getattr(files[0], "file", files[0]), name, position)
                kind = "volume" if array.ndim == 3 else "image"
                return Decoded(array, kind, "application/octet-stream"), name
            return _decode_files(files, None, position)

        return load

    try:
        decoded = stack_channels([(name, loader(name)) for name in names])
    except (ResourceError, InputTooLargeError) as error:
        raise RequestError.answering(error, f"Input #{position}: ") from None
    if record.get("channel_names") is None:
        record = {**record, "channel_names": list(names)}
    return record_with_file(record, decoded)


def _decode_files(files: list[Any], kind: str | None, position: int) -> tuple[Any, str | None]:
    """Read one part's files (a DICOM series, NIfTI, an image) with :mod:`datamint_core.io`."""
    from datamint_core.io.uploads import decode_uploads

    uploads = [(getattr(f, "filename", None), getattr(f, "file", f)) for f in files]
    try:
        return decode_uploads(uploads, kind), uploads[0][0]
    except (ResourceError, InputTooLargeError) as error:
        raise RequestError.answering(error, f"Input #{position}: ") from None
    except ImportError as error:
        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE", f"Input #{position}: {error}") from None


def _is_array_part(upload: Any) -> bool:
    stream = getattr(upload, "file", upload)
    stream.seek(0)
    head = stream.read(len(NPY_MAGIC))
    stream.seek(0)
    filename = str(getattr(upload, "filename", None) or "").lower()
    # A .npy file, or a .npz (a zip archive); both read by load_array within the decode budget.
    return head.startswith((NPY_MAGIC, ZIP_MAGIC)) or filename.endswith((".npy", ".npz"))


def _read_npy_part(stream: BinaryIO, name: str, position: int) -> np.ndarray:
    stream.seek(0)
    suffix = ".npz" if stream.read(2) == b"PK" else ".npy"
    stream.seek(0)
    try:
        return load_array(stream, f"the multipart part {name!r}", suffix)
    except (ResourceError, InputTooLargeError) as error:
        raise RequestError.answering(error, f"Input #{position}: ") from None


def predictions_to_json(result: Sequence[Sequence[Annotation]]) -> bytes:
    """The response body: ``{"predictions": [[annotation dict, ...], ...]}``.

    Masks' run lengths are written :data:`_RUNS_PER_PIECE` at a time. One ``json.dumps``
    of a volume mask's millions of runs holds the GIL for seconds, and with it a server's
    event loop (``/ping``, other requests' reads) while a worker thread answers.
    """
    arrays: list[np.ndarray] = []
    token = f"@datamint-runs-{uuid.uuid4().hex}-"

    def stand_in(value: Any) -> str:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        arrays.append(value)
        return f"{token}{len(arrays) - 1}"

    predictions = [
        [json_form(annotation, rle_arrays=True) for annotation in entry] for entry in result
    ]
    text = json.dumps({"predictions": predictions}, separators=(",", ":"), default=stand_in)
    if not arrays:
        return text.encode()
    # A literal split, not a regex: compiling a pattern per answer cost a small request
    # twice what the rest of its answer does.
    head, *tails = text.split(f'"{token}')
    body: list[bytes] = [head.encode()]
    for tail in tails:
        number, rest = tail.split('"', 1)
        runs = arrays[int(number)]
        body.append(b"[")
        for start in range(0, len(runs), _RUNS_PER_PIECE):
            text = json.dumps(runs[start : start + _RUNS_PER_PIECE].tolist(), separators=(",", ":"))
            body.append((b"," if start else b"") + text[1:-1].encode())
        body.append(b"]")
        body.append(rest.encode())
    return b"".join(body)
