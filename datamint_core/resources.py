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

A file other than ``.npy``/``.npz`` is read by the reader the integration layer registers
(:func:`datamint_core._extensions.read_file`, filled in by ``import datamint_core``), so
this domain module never imports :mod:`datamint_core.io`.

This module is the three classes and the checks of their fields, one concept; it runs past
500 lines because each class documents its shapes and geometry where they are used.

The JSON form (what a client sends, what :meth:`BaseResource.to_dict` writes) and every
other way in are :mod:`datamint_core.wire`'s; the ``.npy``/``.npz`` decoder is
:mod:`datamint_core._npy`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from datamint_core import _extensions
from datamint_core._npy import encode_npy_base64, is_array_file, read_array_file
from datamint_core.errors import ResourceError

SliceAxis = Literal["axial", "coronal", "sagittal"]

#: Which array axis of a ``(D, H, W)`` volume each anatomical slice axis indexes.
SLICE_AXES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}

#: The descriptor fields every resource has (beside its pixels and geometry).
DESCRIPTOR_KEYS = ("id", "filename", "mimetype", "modality", "metadata")
#: Longest channel name accepted (names are labels such as ``t1c`` or ``flair``).
MAX_CHANNEL_NAME = 64
_COUNT_WORDS = {2: "two", 3: "three"}

__all__ = [
    "RESOURCE_KINDS",
    "SLICE_AXES",
    "BaseResource",
    "ImageResource",
    "ResourceError",
    "SliceAxis",
    "VideoResource",
    "VolumeResource",
]


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
            if is_array_file(self.path):
                self._pixels = self._checked(read_array_file(self.path))
            else:
                decoded = _extensions.read_file(self.path, self.kind)
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
        if self._pixels is None and self.path is not None and not is_array_file(self.path):
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
        return {key: getattr(self, key) for key in DESCRIPTOR_KEYS}

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
