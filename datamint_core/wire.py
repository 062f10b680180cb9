"""The wire form: what a caller or a client sends, turned into resources.

:func:`as_resources` is the one way in, for every path a resource travels: ``predict``
(in process and in the pyfunc wrapper), the server's payload decoder, the MLServer
runtime's V2 inputs, and the batch and Spark rows. It takes resources, resource records
(dicts), a list of them, ``{"resources": [...]}``, a pandas DataFrame of records or a numpy
object array of them; table cells are made plain first (:func:`plain_record`), and each
record is built by :func:`resource_from_dict`. A file already read (a multipart part, a
batch row's study, :func:`datamint_core.io.read`) becomes a record by
:func:`record_with_file`; a local ``.npy``/``.npz`` given whole (``datamint predict``,
``validate``) by :func:`arrays_to_records`.

JSON form of one resource (:func:`resource_from_dict`; what ``to_dict`` writes)::

    {"kind": "volume", "id": "ct-1", "modality": "CT",
     "spacing": [2.5, 0.7, 0.7],
     "pixel_data": {"encoding": "npy_base64", "data": "k05VTVBZ..."}}

``pixel_data`` may instead be ``{"encoding": "list", "data": [[...]]}`` (small inputs only)
or a ``"path"`` to a local file (``.npy``/``.npz``, or with the reader extras DICOM, NIfTI,
PNG, JPEG). In process (never over JSON) ``pixel_data`` may be the numpy array itself: an
array is passed as an array, not copied. ``kind`` may be left out when the pixel data says
it: 2 dimensions make an image, 3 a volume, 4 a video (a multi-channel volume ``(D, H, W,
C)`` needs ``"kind": "volume"``). ``"channel_names": ["t1", "t2"]`` names the channels of
the last axis.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from datamint_core._limits import MAX_DIMENSIONS, check_deadline, check_decoded_size
from datamint_core._npy import NPY_MAGIC, check_pixel_dtype, decode_npy_base64, load_array, load_npz
from datamint_core.errors import InputTooLargeError, ResourceError
from datamint_core.resources import (
    DESCRIPTOR_KEYS,
    RESOURCE_KINDS,
    BaseResource,
    ImageResource,
    VolumeResource,
)

#: The encodings of inline pixel data in JSON.
PIXEL_ENCODINGS = ("npy_base64", "list")
#: The fields of a resource's JSON form.
RESOURCE_FIELDS = frozenset(
    {"kind", "pixel_data", "path", "spacing", "affine", "channel_names", *DESCRIPTOR_KEYS}
)
_KIND_BY_NDIM = {2: "image", 3: "volume", 4: "video"}


def as_resources(model_input: Any) -> list[BaseResource]:
    """Turn what a caller passed to ``predict`` into a list of resources.

    Accepts a resource, a resource dict, a list of either, a pandas DataFrame of resource
    records (what MLflow's scoring server and ``mlflow.pyfunc`` hand over), a numpy object
    array of resource dicts, or ``{"resources": [...]}``. Each entry that is not a resource
    is made plain (:func:`plain_record`) and built by :func:`resource_from_dict`.

    Raises:
        ResourceError: anything else, or a malformed entry (its position is named).
        InputTooLargeError: an entry's pixel data is over the decode budget (named).
    """
    resources: list[BaseResource] = []
    for position, item in enumerate(wire_entries(model_input)):
        if isinstance(item, BaseResource):
            resources.append(item)
            continue
        check_deadline()  # a request's deadline stops decoding at the next resource
        try:
            resources.append(resource_from_dict(item))
        except InputTooLargeError as error:
            raise InputTooLargeError(f"Input #{position}: {error}") from None
        except (ValueError, TypeError) as error:  # ResourceError is a ValueError
            raise ResourceError(f"Input #{position}: {error}") from None
    return resources


def wire_entries(model_input: Any) -> list[Any]:
    """The entries of ``model_input`` in order, as :func:`as_resources` takes them: resources
    as they are, records made plain (:func:`plain_record`), anything else as it is.

    Raises:
        ResourceError: ``model_input`` is none of the forms :func:`as_resources` accepts.
    """
    if isinstance(model_input, BaseResource):
        return [model_input]
    if isinstance(model_input, Mapping):
        if set(model_input) == {"resources"}:
            return wire_entries(model_input["resources"])
        return _plain_entries([model_input], table=False)
    if isinstance(model_input, np.ndarray):
        if model_input.dtype != object:
            raise ResourceError(
                f"Got a bare numeric array of shape {model_input.shape}; wrap it so its kind "
                "is explicit: ImageResource(array), VolumeResource(array) or VideoResource(array)."
            )
        model_input = model_input.ravel().tolist()
    elif _is_dataframe(model_input):
        return _plain_entries(model_input.to_dict(orient="records"), table=True)
    if not isinstance(model_input, (list, tuple)):
        raise ResourceError(
            f"Cannot predict on input of type {type(model_input).__name__}; accepted: resource "
            "objects, resource dicts, a list of them, or a pandas DataFrame of resource records."
        )
    return _plain_entries(model_input, table=False)


def _plain_entries(entries: Any, *, table: bool) -> list[Any]:
    plain = []
    for position, entry in enumerate(entries):
        try:
            plain.append(plain_record(entry, table=table) if isinstance(entry, Mapping) else entry)
        except ResourceError as error:
            raise ResourceError(f"Input #{position}: {error}") from None
    return plain


def plain_record(record: Mapping[str, Any], *, table: bool = False) -> dict[str, Any]:
    """A resource record with plain values, as :func:`resource_from_dict` reads them.

    Numpy values are unwrapped (MLflow's scoring server hands ``inputs`` records over with
    every value wrapped in a numpy array, 0-d for scalars and objects; Arrow hands list
    cells over as arrays), except numeric ``pixel_data``: an array passed as an array.

    Args:
        table: the record is a table row (a DataFrame, Spark or Arrow row, a CSV line):
            its missing cells (``None``, NaN, where other rows have the column) are dropped
            and its ``metadata`` may be a JSON object written as a string.
    """
    plain = {}
    for key, value in record.items():
        if table and is_missing(value):
            continue
        if key == "pixel_data" and isinstance(value, np.ndarray) and value.dtype != object:
            plain[key] = value
        elif table and key == "metadata" and isinstance(value, str):
            plain[key] = _metadata_cell(value)
        else:
            plain[key] = _plain_value(value)
    return plain


def resource_from_dict(data: Mapping[str, Any]) -> BaseResource:
    """Build a resource from its JSON form (see the module docstring).

    Raises:
        ResourceError: unknown keys, an unknown ``kind``, no or two pixel sources, or pixel
            data that cannot be decoded; the message says what is accepted.
    """
    if not isinstance(data, Mapping):
        raise ResourceError(f"A resource must be a JSON object (dict), got {type(data).__name__}.")
    unknown = sorted(set(data) - RESOURCE_FIELDS)
    if unknown:
        raise ResourceError(
            f"Unknown resource field(s) {unknown}; accepted fields: {sorted(RESOURCE_FIELDS)}."
        )
    has_pixels, has_path = data.get("pixel_data") is not None, data.get("path") is not None
    if has_path:
        check_path_field(data["path"])
    if has_pixels == has_path:
        raise ResourceError(
            f"Resource {data.get('id', '')!r} needs exactly one of 'pixel_data' "
            "(inline pixels) or 'path' (a local file: .npy, .npz, DICOM, NIfTI, PNG or JPEG)."
        )
    pixels = _decode_pixel_data(data["pixel_data"], data.get("id")) if has_pixels else None

    kind = data.get("kind")
    if kind is None:
        if pixels is None:
            raise ResourceError(
                f"Resource {data.get('id', '')!r} gives a path but no 'kind'; "
                f"add 'kind': one of {sorted(RESOURCE_KINDS)}."
            )
        kind = _KIND_BY_NDIM.get(pixels.ndim)
        if kind is None:
            raise ResourceError(
                f"Resource {data.get('id', '')!r} has {pixels.ndim}-D pixel data and no 'kind'; "
                "2-D is an image, 3-D a volume, 4-D a video - or set 'kind' explicitly."
            )
    cls = RESOURCE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ResourceError(
            f"Unknown resource kind {kind!r}; accepted kinds: {sorted(RESOURCE_KINDS)}."
        )
    kwargs: dict[str, Any] = {key: data.get(key) for key in DESCRIPTOR_KEYS}
    kwargs["channel_names"] = data.get("channel_names")
    if cls is VolumeResource:
        kwargs["spacing"] = data.get("spacing")
        kwargs["affine"] = data.get("affine")
    elif data.get("affine") is not None:
        raise ResourceError(
            f"'affine' describes volumes; resource {data.get('id', '')!r} is of kind {kind!r}."
        )
    elif cls is ImageResource:
        kwargs["spacing"] = data.get("spacing")
    elif data.get("spacing") is not None:
        raise ResourceError(
            f"'spacing' describes images and volumes; resource {data.get('id', '')!r} "
            f"is of kind {kind!r}."
        )
    return cls(pixels, path=data.get("path") if not has_pixels else None, **kwargs)


def record_with_file(
    record: Mapping[str, Any], decoded: Any, filename: str | None = None
) -> dict[str, Any]:
    """A resource record whose pixels come from a file already read: what the file says
    fills in what the record leaves out, and the record's ``metadata`` is laid over the
    file's. The pixels are the file's array, passed as it is.

    Args:
        record: the resource's fields (its JSON form, without a pixel source).
        decoded: what a reader found (:class:`datamint_core.io._decoded.Decoded`: pixels,
            kind, spacing, affine, modality, mimetype, metadata, channel names).
        filename: the file's name, unless the record gives one.
    """
    found: dict[str, Any] = {
        "kind": decoded.kind,
        "filename": filename,
        "mimetype": decoded.mimetype,
        "modality": decoded.modality,
        "channel_names": list(decoded.channel_names) if decoded.channel_names else None,
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
    merged["pixel_data"] = decoded.pixels
    return merged


def check_path_field(path: Any) -> str:
    """Return a resource's ``path`` field if it is a usable local path string.

    Raises:
        ResourceError: not a string, empty, or holding a NUL byte.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path or "\0" in path:
        shown = repr(path)[:100] if isinstance(path, str) else f"a {type(path).__name__}"
        raise ResourceError(
            f"'path' must be a non-empty string naming a local .npy/.npz file, without NUL "
            f"bytes; got {shown}."
        )
    return path


def arrays_to_records(path_or_stream: str | BinaryIO, content_type: str) -> list[dict[str, Any]]:
    """Resource JSON forms for a local ``.npy`` (one array) or ``.npz`` (one per array) file.

    The kind of each resource follows its dimensions (2: image, 3: volume, 4: video); an
    ``.npz`` array's name becomes the resource's ``id``.
    """
    source = path_or_stream if isinstance(path_or_stream, str) else None
    where = repr(source) if source is not None else f"the {content_type} input"
    with open(source, "rb") if source is not None else _seekable(path_or_stream) as file:
        if content_type == "npy":
            if file.read(2) == b"PK":
                raise ResourceError("The npy input holds an .npz archive; give content type npz.")
            file.seek(0)
            return [{"pixel_data": load_array(file, where, ".npy")}]
        if file.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise ResourceError("The npz input holds a single .npy array; give content type npy.")
        file.seek(0)
        return [
            {"id": name, "pixel_data": array}
            for name, array in load_npz(file, where).items()
        ]


def _seekable(stream: BinaryIO) -> BinaryIO:
    return stream if stream.seekable() else io.BytesIO(stream.read())


def _decode_pixel_data(pixel_data: Any, resource_id: Any) -> np.ndarray:
    label = f"Resource {resource_id!r}" if resource_id is not None else "Resource"
    if isinstance(pixel_data, np.ndarray):
        # In process, the array itself (a multipart part's, already decoded and charged to
        # the request's budget): taken as it is, never copied; only its dtype is checked.
        try:
            check_pixel_dtype(pixel_data.dtype, "the pixel array")
        except ResourceError as error:
            raise ResourceError(f"{label}: {error}") from None
        return pixel_data
    if (
        not isinstance(pixel_data, Mapping)
        or "encoding" not in pixel_data
        or "data" not in pixel_data
    ):
        raise ResourceError(
            f"{label}: 'pixel_data' must be an object with 'encoding' (one of "
            f"{list(PIXEL_ENCODINGS)}) and 'data'. In process it may be the numpy array itself."
        )
    encoding = pixel_data["encoding"]
    try:
        if encoding == "npy_base64":
            return decode_npy_base64(pixel_data["data"])
        if encoding == "list":
            return _decode_list(pixel_data["data"], pixel_data.get("dtype"))
    except ResourceError as error:
        raise ResourceError(f"{label}: {error}") from None
    except InputTooLargeError as error:
        raise InputTooLargeError(f"{label}: {error}") from None
    except (ValueError, TypeError, OverflowError) as error:
        raise ResourceError(f"{label}: unreadable {encoding} pixel data ({error}).") from None
    raise ResourceError(
        f"{label}: unknown pixel encoding {encoding!r}; accepted: {list(PIXEL_ENCODINGS)}."
    )


def _decode_list(data: Any, dtype: Any) -> np.ndarray:
    """Nested lists as an array, within the decode budget."""
    target = check_pixel_dtype(dtype, "list pixel data") if dtype is not None else None
    if not isinstance(data, (list, tuple)):
        raise ResourceError(
            f"list pixel data must be nested lists of numbers; got {type(data).__name__} "
            "(in process, give a numpy array itself as 'pixel_data')."
        )
    shape = []
    first = data
    while isinstance(first, (list, tuple)):
        shape.append(len(first))
        if len(shape) > MAX_DIMENSIONS or not first:
            break
        first = first[0]
    itemsize = target.itemsize if target is not None else 8  # JSON numbers decode as 64-bit
    check_decoded_size(shape, itemsize, "the list pixel data")
    array = np.asarray(data)
    check_pixel_dtype(array.dtype, "list pixel data (its values)")
    return array if target is None else _cast_exactly(array, target)


def _cast_exactly(array: np.ndarray, target: np.dtype) -> np.ndarray:
    """Cast to ``target``, refusing values it cannot hold (never wrapping around)."""
    if array.size and target.kind in "iu" and array.dtype.kind in "iuf":
        info = np.iinfo(target)
        low, high = array.min(), array.max()
        if not (np.isfinite(low) and np.isfinite(high)) or low < info.min or high > info.max or (
            array.dtype.kind == "f" and not np.array_equal(array, np.trunc(array))
        ):
            raise ResourceError(
                f"list pixel data holds values from {low} to {high}, which dtype {target} "
                f"cannot hold exactly; accepted: integers from {info.min} to {info.max}."
            )
    if array.size and target.kind == "b" and array.dtype.kind != "b":
        if not np.isin(array, (0, 1)).all():
            raise ResourceError("list pixel data for dtype bool must hold only 0/1 or true/false.")
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target)
    if target.kind == "f" and not np.array_equal(np.isfinite(cast), np.isfinite(array)):
        raise ResourceError(
            f"list pixel data holds values too large for dtype {target}; accepted: values "
            f"within +/-{np.finfo(target).max:g}."
        )
    return cast


def _is_dataframe(value: Any) -> bool:
    # Whoever built a DataFrame imported pandas; never import it here just for a check.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _plain_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _plain_value(value.item())
        if value.dtype == object:  # Arrow's nested lists: an array of arrays
            return [_plain_value(item) for item in value]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _metadata_cell(value: str) -> Any:
    # Table columns (Spark, Arrow, CSV) hold metadata as a JSON string.
    try:
        return json.loads(value)
    except ValueError:
        raise ResourceError(
            f"metadata {value[:80]!r} is not valid JSON; in a table, give metadata as a "
            "JSON object written as a string."
        ) from None


def is_missing(value: Any) -> bool:
    """Whether a table cell holds nothing: ``None`` or NaN (a Python or numpy float).

    DataFrames pad a record with NaN or ``None`` where other rows have a column it lacks;
    Arrow and Spark hand missing cells over as ``None``.
    """
    return value is None or (isinstance(value, (float, np.floating)) and bool(value != value))
