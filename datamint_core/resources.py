"""Resources: what a model predicts on.

A resource is a descriptor (``id``, ``filename``, ``mimetype``, ``modality``, ``metadata``)
plus pixel data that is loaded only when first used, from an in-memory array or a local
file: ``.npy``/``.npz``, or with the reader extras DICOM (a file or a series directory),
NIfTI, PNG and JPEG (see :mod:`datamint_core.io`). A resource built from a DICOM, NIfTI or
image file takes its spacing, affine, modality and metadata from the file (where the caller
gave none) when the file is first read: reading any of them reads it. Shapes:

- image  ``(H, W)`` or ``(H, W, C)``
- volume ``(D, H, W)`` or ``(D, H, W, C)``, ``D`` the axial axis
- video  ``(T, H, W)`` or ``(T, H, W, C)``

Channels are last, always: ``C`` is colour (RGB) or co-registered modalities (T1, T1c,
T2, FLAIR stacked by :func:`datamint_core.io.read_case`), optionally named by
``channel_names`` (one name per channel; it travels in the JSON form). Geometry is
spatial only: ``spacing`` and ``affine`` describe ``(H, W)`` / ``(D, H, W)`` whatever the
channels; masks and annotations are spatial (never a channel axis).

A slice of a volume and a frame of a video are :class:`ImageResource` objects whose pixels
are *views* of their parent's array, never copies; a slice of a multi-channel volume is a
multi-channel image ``(H, W, C)`` with the volume's ``channel_names``.

JSON form (what a client sends)::

    {"kind": "volume", "id": "ct-1", "modality": "CT",
     "spacing": [2.5, 0.7, 0.7],
     "pixel_data": {"encoding": "npy_base64", "data": "k05VTVBZ..."}}

``pixel_data`` may instead be ``{"encoding": "list", "data": [[...]]}`` (small inputs only)
or a ``"path"`` to a local ``.npy``/``.npz`` file. ``kind`` may be left out when the pixel
data says it: 2 dimensions make an image, 3 a volume, 4 a video (a multi-channel volume
``(D, H, W, C)`` needs ``"kind": "volume"``). ``"channel_names": ["t1", "t2"]`` names the
channels of the last axis.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from datamint_core._limits import (
    MAX_DIMENSIONS,
    active_limits,
    check_deadline,
    check_decoded_size,
    limits_applied,
)
from datamint_core.errors import InputTooLargeError, ResourceError

SliceAxis = Literal["axial", "coronal", "sagittal"]

#: Which array axis of a ``(D, H, W)`` volume each anatomical slice axis indexes.
SLICE_AXES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}

_DESCRIPTOR_KEYS = ("id", "filename", "mimetype", "modality", "metadata")
#: Longest channel name accepted (names are labels such as ``t1c`` or ``flair``).
MAX_CHANNEL_NAME = 64
_PIXEL_ENCODINGS = ("npy_base64", "list")


class BaseResource:
    """A thing to predict on: a descriptor plus lazily loaded pixel data.

    Args:
        pixels: the pixel array, if already in memory.
        path: a local ``.npy`` or ``.npz`` file to read the pixels from on first use.
        id: the resource's identifier (Datamint resource id, or anything the caller likes).
        filename: original file name, for the caller's records.
        mimetype: original MIME type.
        modality: imaging modality (``CT``, ``MR``, ``US``, ...).
        metadata: free-form JSON-ready metadata.
        channel_names: one distinct name per channel (the last axis of a multi-channel
            array), e.g. ``["t1", "t1c", "t2", "flair"]``; the pixels must have that axis.
    """

    kind: ClassVar[str]
    _accepted_ndims: ClassVar[tuple[int, ...]]
    _shape_text: ClassVar[str]
    #: The number of dimensions of a pixel array that has a channel axis (last).
    _channel_ndim: ClassVar[int]

    def __init__(
        self,
        pixels: np.ndarray | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        id: str | None = None,
        filename: str | None = None,
        mimetype: str | None = None,
        modality: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        channel_names: Any = None,
    ) -> None:
        self.id = id
        self._channel_names = _checked_channel_names(channel_names, self._label())
        if (pixels is None) == (path is None):
            raise ResourceError(
                f"{self._label()} needs exactly one pixel source: an array (pixels=...) or a "
                "local file (path=...: .npy, .npz, DICOM, NIfTI, PNG or JPEG)."
            )
        self.filename = filename
        self.mimetype = mimetype
        self._modality = modality
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ResourceError(
                f"metadata must be a JSON object (dict), got {type(metadata).__name__}."
            )
        self._metadata: dict[str, Any] = dict(metadata or {})
        self.path = os.fspath(path) if path is not None else None
        self._pixels: np.ndarray | None = None
        if pixels is not None:
            self._pixels = self._checked(np.asarray(pixels))

    @property
    def pixels(self) -> np.ndarray:
        """The pixel array, read from ``path`` on first access."""
        if self._pixels is None:
            assert self.path is not None
            if _is_array_file(self.path):
                self._pixels = self._checked(_read_array_file(self.path))
            else:
                from datamint_core.io._read import decode_path

                decoded = decode_path(self.path, self.kind)
                self._pixels = self._checked(decoded.pixels)
                self._adopt_file_fields(decoded)
        return self._pixels

    @property
    def modality(self) -> str | None:
        """Imaging modality; from the file (DICOM) when not given and read from a path."""
        self._read_file_fields()
        return self._modality

    @modality.setter
    def modality(self, modality: str | None) -> None:
        self._modality = modality

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form JSON-ready metadata; the file's own (DICOM tags, NIfTI header facts)
        under the caller's when read from a path."""
        self._read_file_fields()
        return self._metadata

    @metadata.setter
    def metadata(self, metadata: Mapping[str, Any]) -> None:
        self._metadata = dict(metadata)

    def _read_file_fields(self) -> None:
        """Read the file now if it can still fill in descriptor or geometry fields."""
        if self._pixels is None and self.path is not None and not _is_array_file(self.path):
            self.pixels  # noqa: B018 - reading the pixels fills the fields in

    def _adopt_file_fields(self, decoded: Any) -> None:
        """Take what the file says where the caller said nothing."""
        if self._modality is None:
            self._modality = decoded.modality
        if self.mimetype is None:
            self.mimetype = decoded.mimetype
        self._metadata = {**decoded.metadata, **self._metadata}
        if self._channel_names is None and decoded.channel_names is not None:
            self._channel_names = tuple(decoded.channel_names)

    @property
    def channel_names(self) -> tuple[str, ...] | None:
        """The names of the channels (the last axis), when given."""
        return self._channel_names

    @channel_names.setter
    def channel_names(self, channel_names: Any) -> None:
        names = _checked_channel_names(channel_names, self._label())
        if self._pixels is not None:
            self._check_channel_count(self._pixels, names)
        self._channel_names = names

    @property
    def num_channels(self) -> int:
        """Channels of the pixel array: the size of its last axis, or 1 without one."""
        pixels = self.pixels
        return int(pixels.shape[-1]) if pixels.ndim == self._channel_ndim else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The pixel array's shape without its channel axis: what a mask of it has."""
        pixels = self.pixels
        return tuple(pixels.shape[: self._channel_ndim - 1])

    @property
    def is_loaded(self) -> bool:
        """Whether the pixel data is in memory yet."""
        return self._pixels is not None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the pixel array (loads it)."""
        return tuple(self.pixels.shape)

    def _label(self) -> str:
        return f"{type(self).__name__} {self.id!r}" if self.id is not None else type(self).__name__

    def _checked(self, array: np.ndarray) -> np.ndarray:
        if array.ndim not in self._accepted_ndims:
            raise ResourceError(
                f"{self._label()} has pixel data of shape {array.shape}; "
                f"expected {self._shape_text}."
            )
        if array.dtype == object or array.dtype.kind in "USV":
            raise ResourceError(
                f"{self._label()} has pixel data of dtype {array.dtype}; "
                "expected a numeric or boolean array."
            )
        self._check_channel_count(array, self._channel_names)
        return array

    def _check_channel_count(self, array: np.ndarray, names: tuple[str, ...] | None) -> None:
        if names is None:
            return
        if array.ndim != self._channel_ndim:
            raise ResourceError(
                f"{self._label()} has {len(names)} channel_names {list(names)} but pixel data "
                f"of shape {array.shape}, which has no channel axis; expected "
                f"{self._shape_text} with C = {len(names)}."
            )
        if array.shape[-1] != len(names):
            raise ResourceError(
                f"{self._label()} has {len(names)} channel_names {list(names)} but "
                f"{array.shape[-1]} channels (pixel data of shape {array.shape}); give one "
                "name per channel of the last axis."
            )

    def _descriptor(self) -> dict[str, Any]:
        self._read_file_fields()
        return {key: getattr(self, key) for key in _DESCRIPTOR_KEYS}

    def _extra_fields(self, read_file: bool = True) -> dict[str, Any]:
        return {} if self._channel_names is None else {"channel_names": list(self._channel_names)}

    def to_dict(
        self, *, pixel_encoding: Literal["npy_base64", "list", "none"] = "npy_base64"
    ) -> dict[str, Any]:
        """Return the JSON form of this resource.

        Args:
            pixel_encoding: ``npy_base64`` (compact, exact dtype), ``list`` (nested lists,
                for tiny inputs) or ``none`` (descriptor only; keeps ``path`` if there is one).
        """
        data: dict[str, Any] = {"kind": self.kind}
        if pixel_encoding == "none":
            # The descriptor as given, without reading the file: the path stands for it.
            fields = {key: getattr(self, f"_{key}", None) for key in ("modality", "metadata")}
            descriptor = {**{k: getattr(self, k) for k in ("id", "filename", "mimetype")}, **fields}
            data.update({k: v for k, v in descriptor.items() if v not in (None, {})})
            data.update(self._extra_fields(read_file=False))
        else:
            data.update({k: v for k, v in self._descriptor().items() if v not in (None, {})})
            data.update(self._extra_fields())
        if pixel_encoding == "npy_base64":
            data["pixel_data"] = {"encoding": "npy_base64", "data": encode_npy_base64(self.pixels)}
        elif pixel_encoding == "list":
            data["pixel_data"] = {
                "encoding": "list",
                "data": self.pixels.tolist(),
                "dtype": str(self.pixels.dtype),
            }
        elif pixel_encoding == "none":
            if self.path is not None:
                data["path"] = self.path
        else:
            raise ValueError(
                f"Unknown pixel_encoding {pixel_encoding!r}; use 'npy_base64', 'list' or 'none'."
            )
        return data

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, BaseResource)
        return (
            self._descriptor() == other._descriptor()
            and _fields_equal(self._extra_fields(), other._extra_fields())
            and self.pixels.dtype == other.pixels.dtype
            and np.array_equal(self.pixels, other.pixels)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        where = f"shape={self._pixels.shape}" if self._pixels is not None else f"path={self.path!r}"
        return f"{type(self).__name__}(id={self.id!r}, {where})"


class ImageResource(BaseResource):
    """A 2-D image ``(H, W)`` or ``(H, W, C)``; also what a slice or a frame is.

    Args:
        spacing: pixel size along ``(H, W)`` (row spacing, column spacing) in mm, when known;
            read from the file (DICOM PixelSpacing, PNG/JPEG resolution) when left out.
        **kwargs: see :class:`BaseResource`.
    """

    kind = "image"
    _accepted_ndims = (2, 3)
    _shape_text = "(H, W) or (H, W, C)"
    _channel_ndim = 3

    def __init__(
        self,
        pixels: np.ndarray | None = None,
        *,
        spacing: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(pixels, **kwargs)
        self._spacing = _checked_spacing(spacing, 2)

    @property
    def spacing(self) -> tuple[float, float] | None:
        """Pixel size along ``(H, W)`` in mm, when known."""
        self._read_file_fields()
        return self._spacing  # type: ignore[return-value]

    @spacing.setter
    def spacing(self, spacing: tuple[float, float] | None) -> None:
        self._spacing = _checked_spacing(spacing, 2)

    def _adopt_file_fields(self, decoded: Any) -> None:
        super()._adopt_file_fields(decoded)
        if self._spacing is None and decoded.spacing is not None:
            self._spacing = _checked_spacing(decoded.spacing, 2)

    def _extra_fields(self, read_file: bool = True) -> dict[str, Any]:
        spacing = self.spacing if read_file else self._spacing
        fields = super()._extra_fields(read_file)
        return fields if spacing is None else {"spacing": list(spacing), **fields}


class VolumeResource(BaseResource):
    """A volume ``(D, H, W)``, or ``(D, H, W, C)`` with channels, and its geometry.

    Args:
        spacing: voxel size along ``(D, H, W)``, in millimetres, when known.
        affine: 4x4 voxel-to-world matrix of ``(d, h, w, 1)``, when known.
        **kwargs: see :class:`BaseResource` (``channel_names`` among them).
    """

    kind = "volume"
    _accepted_ndims = (3, 4)
    _shape_text = "(D, H, W) or (D, H, W, C) with D the axial axis"
    _channel_ndim = 4

    def __init__(
        self,
        pixels: np.ndarray | None = None,
        *,
        spacing: tuple[float, float, float] | None = None,
        affine: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(pixels, **kwargs)
        self._spacing = _checked_spacing(spacing, 3)
        self._affine = _checked_affine(affine)

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """Voxel size along ``(D, H, W)`` in mm, when known."""
        self._read_file_fields()
        return self._spacing  # type: ignore[return-value]

    @spacing.setter
    def spacing(self, spacing: tuple[float, float, float] | None) -> None:
        self._spacing = _checked_spacing(spacing, 3)

    @property
    def affine(self) -> np.ndarray | None:
        """4x4 matrix from ``(d, h, w, 1)`` to RAS millimetres, when known."""
        self._read_file_fields()
        return self._affine

    @affine.setter
    def affine(self, affine: np.ndarray | None) -> None:
        self._affine = _checked_affine(affine)

    def _adopt_file_fields(self, decoded: Any) -> None:
        super()._adopt_file_fields(decoded)
        if self._spacing is None and decoded.spacing is not None:
            self._spacing = _checked_spacing(decoded.spacing, 3)
        if self._affine is None and decoded.affine is not None:
            self._affine = _checked_affine(decoded.affine)

    @property
    def num_slices(self) -> int:
        """Number of axial slices (``D``)."""
        return int(self.pixels.shape[0])

    def get_slice(self, slice_index: int, axis: SliceAxis = "axial") -> ImageResource:
        """Return one slice as an image whose pixels are a view of this volume.

        A slice of a ``(D, H, W, C)`` volume is an ``(H, W, C)`` image with the same
        ``channel_names``.

        Raises:
            ValueError: unknown axis, or an index outside the volume.
        """
        array_axis = _array_axis(axis)
        size = self.pixels.shape[array_axis]
        if not isinstance(slice_index, (int, np.integer)) or not 0 <= slice_index < size:
            raise ResourceError(
                f"slice_index={slice_index!r} is outside {self._label()} "
                f"({size} {axis} slices); accepted: an integer from 0 to {size - 1}."
            )
        spacing = self.spacing
        return ImageResource(
            _slice_view(self.pixels, int(slice_index), array_axis),
            spacing=None if spacing is None else _without(spacing, array_axis),
            id=self.id,
            filename=self.filename,
            mimetype=self.mimetype,
            modality=self.modality,
            metadata={**self.metadata, "slice_index": int(slice_index), "slice_axis": axis},
            channel_names=self._channel_names,
        )

    def iter_slices(self, axis: SliceAxis = "axial") -> Iterator[ImageResource]:
        """Yield every slice along ``axis``, each a view of this volume."""
        for index in range(self.pixels.shape[_array_axis(axis)]):
            yield self.get_slice(index, axis)

    def _extra_fields(self, read_file: bool = True) -> dict[str, Any]:
        spacing = self.spacing if read_file else self._spacing
        affine = self.affine if read_file else self._affine
        fields = super()._extra_fields(read_file)
        if spacing is not None:
            fields["spacing"] = list(spacing)
        if affine is not None:
            fields["affine"] = affine.tolist()
        return fields


class VideoResource(BaseResource):
    """A video ``(T, H, W)`` or ``(T, H, W, C)``."""

    kind = "video"
    _accepted_ndims = (3, 4)
    _shape_text = "(T, H, W) or (T, H, W, C)"
    _channel_ndim = 4

    @property
    def num_frames(self) -> int:
        """Number of frames (``T``)."""
        return int(self.pixels.shape[0])

    def get_frame(self, frame_index: int) -> ImageResource:
        """Return one frame as an image whose pixels are a view of this video.

        Raises:
            ValueError: an index outside the video.
        """
        if not isinstance(frame_index, (int, np.integer)) or not 0 <= frame_index < self.num_frames:
            raise ResourceError(
                f"frame_index={frame_index!r} is outside {self._label()} "
                f"({self.num_frames} frames); accepted: an integer from 0 to "
                f"{self.num_frames - 1}."
            )
        return ImageResource(
            self.pixels[int(frame_index)],
            id=self.id,
            filename=self.filename,
            mimetype=self.mimetype,
            modality=self.modality,
            metadata={**self.metadata, "frame_index": int(frame_index)},
            channel_names=self._channel_names,
        )

    def iter_frames(self) -> Iterator[ImageResource]:
        """Yield every frame, each a view of this video."""
        for index in range(self.num_frames):
            yield self.get_frame(index)


RESOURCE_KINDS: dict[str, type[BaseResource]] = {
    cls.kind: cls for cls in (ImageResource, VolumeResource, VideoResource)
}
_KIND_BY_NDIM = {2: "image", 3: "volume", 4: "video"}


def resource_from_dict(data: Mapping[str, Any]) -> BaseResource:
    """Build a resource from its JSON form (see the module docstring).

    Raises:
        ResourceError: unknown keys, an unknown ``kind``, no or two pixel sources, or pixel
            data that cannot be decoded; the message says what is accepted.
    """
    if not isinstance(data, Mapping):
        raise ResourceError(f"A resource must be a JSON object (dict), got {type(data).__name__}.")
    allowed = {"kind", "pixel_data", "path", "spacing", "affine", "channel_names"}
    allowed.update(_DESCRIPTOR_KEYS)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ResourceError(
            f"Unknown resource field(s) {unknown}; accepted fields: {sorted(allowed)}."
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
    kwargs: dict[str, Any] = {key: data.get(key) for key in _DESCRIPTOR_KEYS}
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


def as_resources(model_input: Any) -> list[BaseResource]:
    """Turn what a caller passed to ``predict`` into a list of resources.

    Accepts a resource, a resource dict, a list of either, a pandas DataFrame of resource
    records (what MLflow's scoring server and ``mlflow.pyfunc`` hand over), a numpy object
    array of resource dicts, or ``{"resources": [...]}``.

    Raises:
        ResourceError: anything else, or a malformed entry (its position is named).
    """
    if isinstance(model_input, BaseResource):
        return [model_input]
    if isinstance(model_input, Mapping):
        if set(model_input) == {"resources"}:
            return as_resources(model_input["resources"])
        return [resource_from_dict(model_input)]
    if isinstance(model_input, np.ndarray):
        if model_input.dtype != object:
            raise ResourceError(
                f"Got a bare numeric array of shape {model_input.shape}; wrap it so its kind "
                "is explicit: ImageResource(array), VolumeResource(array) or VideoResource(array)."
            )
        model_input = model_input.ravel().tolist()
    elif _is_dataframe(model_input):
        model_input = [
            {
                key: _dataframe_cell(key, value)
                for key, value in record.items()
                if not _is_missing(value)
            }
            for record in model_input.to_dict(orient="records")
        ]
    if not isinstance(model_input, (list, tuple)):
        raise ResourceError(
            f"Cannot predict on input of type {type(model_input).__name__}; accepted: resource "
            "objects, resource dicts, a list of them, or a pandas DataFrame of resource records."
        )
    resources: list[BaseResource] = []
    for position, item in enumerate(model_input):
        if isinstance(item, BaseResource):
            resources.append(item)
            continue
        check_deadline()  # a request's deadline stops decoding at the next resource
        if isinstance(item, Mapping):
            # MLflow's scoring server hands `inputs` records over with every value wrapped in
            # a numpy array (0-d for scalars and objects).
            item = {key: _unwrap_numpy(value) for key, value in item.items()}
        try:
            resources.append(resource_from_dict(item))
        except InputTooLargeError as error:
            raise InputTooLargeError(f"Input #{position}: {error}") from None
        except (ValueError, TypeError) as error:  # ResourceError is a ValueError
            raise ResourceError(f"Input #{position}: {error}") from None
    return resources


def encode_npy_base64(array: np.ndarray) -> str:
    """Encode an array as base64 of its ``.npy`` bytes (exact dtype and shape)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buffer.getbuffer()).decode("ascii")


def decode_npy_base64(text: str) -> np.ndarray:
    """Decode what :func:`encode_npy_base64` wrote; never unpickles.

    The array's declared size is checked against the request's decode budget
    (:mod:`datamint_core._limits`) before anything is allocated.

    Raises:
        ResourceError: not base64, or not the bytes of a numeric ``.npy`` array.
        InputTooLargeError: the declared array is over the decode budget.
    """
    if not isinstance(text, (str, bytes)):
        raise ResourceError(f"npy_base64 data must be a string; got {type(text).__name__}.")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ResourceError("pixel data is not valid base64.") from None
    return load_array(io.BytesIO(raw), "the base64 pixel data", ".npy")


def check_pixel_dtype(dtype: Any, where: str = "pixel data") -> np.dtype:
    """Return ``dtype`` as a numpy dtype if it is a plain numeric or boolean scalar type.

    Sub-array dtypes (``"(6000,6000)f8"``), structured, object, complex, datetime, void and
    string dtypes are refused: none of them is pixel data, and some allocate far more than
    their declared shape says.

    Raises:
        ResourceError: anything else; names the accepted dtypes.
    """
    try:
        parsed = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):
        parsed = None
    if parsed is None or parsed.kind not in "biuf" or parsed.subdtype is not None or parsed.fields:
        shown = str(parsed) if parsed is not None else repr(dtype)
        raise ResourceError(
            f"{where} has dtype {shown[:80]}; accepted: a plain numeric or boolean dtype "
            f"({', '.join(_ACCEPTED_DTYPES)})."
        )
    return parsed


_ACCEPTED_DTYPES = ("bool", "uint8", "int16", "int32", "int64", "float16", "float32", "float64")


def _decode_pixel_data(pixel_data: Any, resource_id: Any) -> np.ndarray:
    label = f"Resource {resource_id!r}" if resource_id is not None else "Resource"
    if (
        not isinstance(pixel_data, Mapping)
        or "encoding" not in pixel_data
        or "data" not in pixel_data
    ):
        raise ResourceError(
            f"{label}: 'pixel_data' must be an object with 'encoding' (one of "
            f"{list(_PIXEL_ENCODINGS)}) and 'data'."
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
        f"{label}: unknown pixel encoding {encoding!r}; accepted: {list(_PIXEL_ENCODINGS)}."
    )


def _decode_list(data: Any, dtype: Any) -> np.ndarray:
    """Nested lists (or an array already decoded) as an array, within the decode budget."""
    target = check_pixel_dtype(dtype, "list pixel data") if dtype is not None else None
    if isinstance(data, np.ndarray):  # decoded by the caller (a multipart part, in process)
        check_pixel_dtype(data.dtype, "list pixel data")
        return data if target is None else _cast_exactly(data, target)
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


def _is_array_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in (".npy", ".npz")


def _read_array_file(path: str) -> np.ndarray:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".npy", ".npz"):
        raise ResourceError(
            f"Cannot read pixel data from {path!r}: accepted local files are .npy and .npz."
        )
    if not os.path.isfile(path):
        raise ResourceError(f"Cannot read pixel data from {path!r}: no such file.")
    with open(path, "rb") as file:
        return load_array(file, repr(path), suffix)


def load_npz(file: Any, where: str) -> dict[str, np.ndarray]:
    """Read every array of an open, seekable ``.npz`` file, each checked as :func:`load_array`
    checks a ``.npy``.

    The zip's declared sizes are checked against the decode budget before any member is
    read, and each member's ``.npy`` header before its array is allocated.

    Returns:
        ``{name: array}``, names without their ``.npy`` suffix, in archive order.

    Raises:
        ResourceError: not an ``.npz`` archive, or a member that is not a numeric ``.npy``.
        InputTooLargeError: the arrays are over the decode budget.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            budget = active_limits().max_decoded_bytes
            if budget is not None and declared > budget:
                check_decoded_size([declared], 1, where)  # raises, naming the limit
            arrays = {}
            for member in members:
                name = member.filename
                if not name.endswith(".npy"):
                    raise _unreadable(where, f"member {name[:100]!r} is not an .npy array")
                with archive.open(member) as stream:
                    if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
                        raise _unreadable(where, f"member {name[:100]!r} is not .npy bytes")
                    arrays[name[: -len(".npy")]] = _read_npy_body(
                        stream, f"{where} (member {name[:100]!r})", member.file_size
                    )
            return arrays
    except (ResourceError, InputTooLargeError):
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        RuntimeError,  # an encrypted member
        NotImplementedError,  # an unknown compression method
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        raise _unreadable(where, f"{type(error).__name__}: {error}") from None


NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_READ_CHUNK = 8 * 1024**2
#: numpy's own limit on a .npy header (numpy.lib.format, max_header_size).
_MAX_NPY_HEADER = 10000
_NPY_HEADER_ITEM = re.compile(
    r"""\s*['"](descr|fortran_order|shape)['"]\s*:\s*"""
    r"""(?:'([^'\\]*)'|"([^"\\]*)"|(True|False)|\(([0-9,\sL]*)\))\s*(,|(?=\}))"""
)


def load_array(file: Any, where: str, suffix: str) -> np.ndarray:
    """Read one numeric array from an open, seekable ``.npy``/``.npz`` (``suffix``) file.

    The header is read first; its dtype and declared size are checked (see
    :func:`check_pixel_dtype`, :func:`datamint_core._limits.check_decoded_size`) and the
    file must hold that many bytes before the array is allocated; never unpickles. See
    :func:`load_npz` for the ``.npz`` checks; an ``.npz`` given here must hold one array.

    Raises:
        ResourceError: not ``.npy``/``.npz`` bytes, a dtype that is not plain numeric, or
            fewer bytes than the header declares.
        InputTooLargeError: the declared array is over the decode budget.
    """
    magic = NPY_MAGIC if suffix == ".npy" else _ZIP_MAGIC
    if file.read(len(magic)) != magic:
        raise _unreadable(where, f"it is not a {suffix} file (its first bytes are wrong)")
    if suffix == ".npy":
        start = file.tell()
        available = file.seek(0, os.SEEK_END) - start
        file.seek(start)
        # A user's own file (no request limits) is mapped copy-on-write, not read: a 1 GB
        # volume costs the pages a model touches, shared with the page cache. A request's
        # file is read, so that no client-reachable file can change under the server.
        name = getattr(file, "name", None)
        map_path = name if isinstance(name, str) and not limits_applied() else None
        return _read_npy_body(file, where, available + len(magic), map_path)
    file.seek(0)
    arrays = load_npz(file, where)
    if len(arrays) != 1:
        raise _unreadable(
            where, f"it holds {len(arrays)} arrays ({sorted(arrays)[:10]}); a resource file "
            "must hold one"
        )
    return next(iter(arrays.values()))


def _read_npy_body(
    stream: Any, where: str, size: int, map_path: str | None = None
) -> np.ndarray:
    """Read a ``.npy`` after its magic: header, checks, then exactly the declared bytes.

    Args:
        size: bytes the whole ``.npy`` has (magic included), as its container declares.
        map_path: the regular file ``stream`` reads, to map copy-on-write instead of reading
            (after the same checks).
    """
    version = stream.read(2)
    if len(version) != 2 or version[0] not in (1, 2, 3):
        raise _unreadable(where, "its .npy version is not 1, 2 or 3")
    length_bytes = stream.read(2 if version[0] == 1 else 4)
    header_length = int.from_bytes(length_bytes, "little")
    if len(length_bytes) not in (2, 4) or header_length > _MAX_NPY_HEADER:
        raise _unreadable(where, f"its .npy header is longer than {_MAX_NPY_HEADER} bytes")
    header = stream.read(header_length)
    if len(header) != header_length:
        raise _unreadable(where, "its .npy header is cut short")
    descr, fortran_order, shape = _parse_npy_header(
        header.decode("utf-8" if version[0] == 3 else "latin-1", errors="replace"), where
    )
    try:
        dtype = check_pixel_dtype(descr, "its array")
    except ResourceError as error:
        pickled = "O" in descr.upper() and "object" in str(error)
        reason = "it holds pickled Python objects, which are never loaded" if pickled else error
        raise _unreadable(where, str(reason).rstrip(".")) from None
    try:
        nbytes = check_decoded_size(shape, dtype.itemsize, f"the array in {where}")
    except InputTooLargeError:
        raise
    except ValueError as error:
        raise _unreadable(where, str(error).rstrip(".")) from None
    available = size - len(NPY_MAGIC) - 2 - len(length_bytes) - header_length
    if available < nbytes:
        raise _unreadable(
            where, f"it is not fully written: its header declares shape {shape} of {dtype} "
            f"({nbytes} bytes) but it holds {max(available, 0)} bytes of data"
        )
    if map_path is not None and nbytes and os.path.isfile(map_path):
        order = "F" if fortran_order else "C"
        offset = stream.tell()
        return np.memmap(map_path, dtype=dtype, mode="c", offset=offset, shape=shape, order=order)
    array = np.empty(math.prod(shape), dtype=dtype)
    buffer = memoryview(array.view(np.uint8))
    filled = 0
    while filled < nbytes:
        # Chunks, so that other threads (the server's event loop) get the GIL in between.
        count = stream.readinto(buffer[filled : filled + _READ_CHUNK])
        if not count:
            raise _unreadable(
                where, f"it is not fully written: it ends after {filled} of the {nbytes} bytes "
                "its header declares"
            )
        filled += count
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _parse_npy_header(text: str, where: str) -> tuple[str, bool, tuple[int, ...]]:
    """Parse numpy's header dict (``{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}``)
    without evaluating it; anything else (a structured dtype's list among them) is refused."""
    refused = _unreadable(
        where, "its .npy header is not the dict numpy.save writes for a plain numeric array"
    )
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise refused
    position, end, items = 1, len(body) - 1, {}
    while body[position:end].strip():
        match = _NPY_HEADER_ITEM.match(body, position, end)
        if match is None or match.group(1) in items:
            raise refused
        key, single, double, flag, dims = match.group(1, 2, 3, 4, 5)
        items[key] = (single if single is not None else double, flag, dims)
        position = match.end()
    try:
        descr, fortran, shape = items["descr"][0], items["fortran_order"][1], items["shape"][2]
    except KeyError:
        raise refused from None
    if descr is None or fortran is None or shape is None:
        raise refused
    parts = [part.strip().rstrip("L") for part in shape.split(",")]
    if parts and not parts[-1]:
        parts.pop()
    if not all(part.isdigit() for part in parts):
        raise refused
    return descr, fortran == "True", tuple(int(part) for part in parts)


def _unreadable(where: str, reason: str) -> ResourceError:
    return ResourceError(f"Cannot read pixel data from {where}: {reason}. {_ACCEPTED_FILES}")


_ACCEPTED_FILES = (
    "Accepted: a numeric array written by numpy.save (.npy) or numpy.savez (.npz with one array)."
)


def _array_axis(axis: str) -> int:
    try:
        return SLICE_AXES[axis]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown slice axis {axis!r}; accepted axes: {list(SLICE_AXES)}."
        ) from None


def _slice_view(volume: np.ndarray, index: int, array_axis: int) -> np.ndarray:
    key: list[int | slice] = [slice(None)] * volume.ndim
    key[array_axis] = index
    return volume[tuple(key)]


def _checked_spacing(spacing: Any, count: int = 3) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != count or not all(np.isfinite(v) and v > 0 for v in values):
        axes = "(D, H, W)" if count == 3 else "(H, W)"
        raise ResourceError(
            f"spacing={spacing!r} is not valid; expected {_COUNT_WORDS[count]} positive numbers "
            f"{axes} in mm."
        )
    return values


_COUNT_WORDS = {2: "two", 3: "three"}


def _checked_channel_names(names: Any, label: str) -> tuple[str, ...] | None:
    """``names`` as a tuple of distinct, non-empty strings, or None."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        shown = repr(names)[:100]
        raise ResourceError(
            f"{label}: channel_names={shown} is not valid; expected a list of names, one per "
            'channel, e.g. ["t1", "t1c", "t2", "flair"].'
        )
    names = tuple(names)
    bad = [
        name
        for name in names
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_CHANNEL_NAME
    ]
    if bad or not names or len(set(names)) != len(names):
        problem = (
            f"{repr(bad[0])[:100]} is not a name"
            if bad
            else "it is empty"
            if not names
            else "it repeats a name"
        )
        raise ResourceError(
            f"{label}: channel_names={repr(list(names))[:200]} is not valid ({problem}); "
            f"expected distinct non-empty strings of at most {MAX_CHANNEL_NAME} characters, "
            "one per channel."
        )
    return names


def _without(values: tuple[float, ...], axis: int) -> tuple[float, ...]:
    return values[:axis] + values[axis + 1 :]


def _checked_affine(affine: Any) -> np.ndarray | None:
    if affine is None:
        return None
    try:
        matrix = np.asarray(affine, dtype=float)
    except (TypeError, ValueError):
        raise ResourceError("affine is not valid; expected a 4x4 matrix of numbers.") from None
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ResourceError(
            f"affine of shape {matrix.shape} is not valid; expected a 4x4 matrix of finite numbers."
        )
    return matrix


def _fields_equal(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return left.keys() == right.keys() and all(
        np.array_equal(left[key], right[key]) for key in left
    )


def _is_dataframe(value: Any) -> bool:
    # Whoever built a DataFrame imported pandas; never import it here just for a check.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _unwrap_numpy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def _dataframe_cell(column: str, value: Any) -> Any:
    # Table columns (Spark, Arrow, CSV) hold metadata as a JSON string and lists as arrays.
    if column == "metadata" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ResourceError(
                f"metadata {value[:80]!r} is not valid JSON; in a table, give metadata as a "
                "JSON object written as a string."
            ) from None
    return _unwrap_numpy(value)


def _is_missing(value: Any) -> bool:
    # DataFrames pad records with NaN/None where other rows have a column this one lacks.
    return value is None or (isinstance(value, float) and value != value)
