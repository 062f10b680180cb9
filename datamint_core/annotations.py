"""What a medical-imaging model returns: annotations, and the specs that declare them.

Field names follow the Datamint annotation JSON, so ``Annotation.to_dict()`` is what the
Datamint platform reads. Masks travel run-length encoded, never as nested lists::

    {"shape": [D, H, W], "rle": [false_run, true_run, false_run, ...], "order": "C"}

Example:
    >>> import json
    >>> liver = SegmentationAnnotation("liver", np.eye(3, dtype=bool), confidence=0.9)
    >>> Annotation.from_dict(json.loads(json.dumps(liver.to_dict()))) == liver
    True

Why one module of some 600 lines: the annotation classes, their specs and the run-length
mask encoding are the Datamint annotation JSON, one wire format; the RLE encoder and decoder
work a chunk at a time for clinical-size masks and are documented where the format is.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from enum import Enum
from functools import partial
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "Annotation",
    "AnnotationScope",
    "AnnotationSpec",
    "AnnotationType",
    "BoxAnnotation",
    "CategoryAnnotation",
    "LineAnnotation",
    "NumericAnnotation",
    "PointAnnotation",
    "SegmentationAnnotation",
    "TextAnnotation",
    "decode_mask_rle",
    "encode_mask_rle",
]


class AnnotationType(str, Enum):
    """Kind of annotation, as the Datamint platform names it."""

    CATEGORY = "category"
    LABEL = "label"
    SEGMENTATION = "segmentation"
    SQUARE = "square"  # bounding box
    CIRCLE = "circle"
    POINT = "point"
    LINE = "line"
    REGION = "region"
    NUMERIC = "numeric"
    TEXT = "text"


class AnnotationScope(str, Enum):
    """What part of the data an annotation describes."""

    IMAGE = "image"
    FRAME = "frame"
    SLICE = "slice"
    VOLUME = "volume"


_SLICE_AXES = ("axial", "sagittal", "coronal")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


# Field checks, named in each field's metadata: take the field's name and value, return the
# value normalised. `Annotation.__post_init__` runs them on every field not left at None.


def _enum_member(enum_class: type[Enum], name: str, value: Any) -> Any:
    try:
        return enum_class(value)
    except ValueError:
        accepted = _quoted([member.value for member in enum_class])
        raise ValueError(f"{name} must be one of {accepted}; got {value!r}") from None


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string; got {value!r}")
    return value


def _finite_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _index(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _confidence(name: str, value: Any) -> float:
    confidence = _finite_float(name, value)
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"{name} must be within [0, 1]; got {value!r}")
    return confidence


def _slice_axis(name: str, value: Any) -> str:
    if value not in _SLICE_AXES:
        raise ValueError(f"{name} must be one of {_quoted(_SLICE_AXES)}; got {value!r}")
    return value


def _bool_mask(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return value  # shared, never copied: masks can be hundreds of megabytes
    return np.asarray(value, dtype=bool)


def _positive_floats(name: str, value: Any) -> tuple[float, ...]:
    sizes = tuple(_finite_float(f"each {name} value", size) for size in value)
    if min(sizes, default=0.0) <= 0:
        raise ValueError(f"{name} values must be positive; got {value!r}")
    return sizes


def _affine(name: str, value: Any) -> np.ndarray:
    affine = np.asarray(value, dtype=float)
    non_finite = np.count_nonzero(~np.isfinite(affine))
    if affine.shape != (4, 4) or non_finite:
        raise ValueError(
            f"{name} must be a 4x4 matrix of finite numbers; got shape {affine.shape} "
            f"with {non_finite} non-finite values"
        )
    return affine


def _points(name: str, value: Any) -> tuple[tuple[float, float], ...]:
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a list of (x, y) pairs; got {value!r}")
    points = []
    for point in value:
        if (
            isinstance(point, str)
            or not isinstance(point, Sequence | np.ndarray)
            or len(point) != 2
        ):
            raise ValueError(f"each of the {name} must be an (x, y) pair; got {point!r}")
        points.append((_finite_float(name, point[0]), _finite_float(name, point[1])))
    if len(points) < 2:
        raise ValueError(f"a line needs at least 2 {name}; got {len(points)}")
    return tuple(points)


def json_form(annotation: Annotation, *, rle_arrays: bool = False) -> dict[str, Any]:
    """The JSON form of :meth:`Annotation.to_dict`.

    Args:
        rle_arrays: leave each mask's run lengths as one ``int64`` numpy array instead of a
            list of ints, for a writer that serializes it in pieces (a volume mask can have
            millions of runs).
    """
    data: dict[str, Any] = {"type": annotation.type.value}
    for item in dataclasses.fields(annotation):
        value = getattr(annotation, item.name)
        if value is not None:
            encode = item.metadata.get("to_json", _to_json)
            if rle_arrays and encode is encode_mask_rle:
                encode = _encode_mask_rle_array
            data[item.name] = encode(value)
    return data


def _check_keys(
    data: Any, required: Sequence[str], optional: Sequence[str], what: str
) -> Mapping[str, Any]:
    """Reject a JSON object that lacks a required key or carries a key nobody reads."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a dict; got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{what} is missing required key(s) {_quoted(missing)}")
    unknown = sorted(str(key) for key in data if key not in required and key not in optional)
    if unknown:
        accepted = _quoted([*required, *optional])
        raise ValueError(f"{what} has unknown key(s) {_quoted(unknown)}; accepted keys: {accepted}")
    return data


_RLE_CHUNK = 1 << 22


def encode_mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """Run-length encode a mask over its C-order flattening.

    Args:
        mask: Array of any shape; non-zero values count as True.

    Returns:
        ``{"shape": [...], "rle": [...], "order": "C"}`` with builtin ints only. Runs
        alternate False, True, False, ... and the first run is False (it may be 0 long).
    """
    mask = np.asarray(mask, dtype=bool)
    return {
        "shape": [int(size) for size in mask.shape],
        "rle": _run_lengths(mask).tolist(),
        "order": "C",
    }


def _encode_mask_rle_array(mask: np.ndarray) -> dict[str, Any]:
    """:func:`encode_mask_rle` with the run lengths left as one ``int64`` numpy array."""
    mask = np.asarray(mask, dtype=bool)
    return {"shape": [int(size) for size in mask.shape], "rle": _run_lengths(mask), "order": "C"}


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """The alternating False/True run lengths of a boolean mask's C-order flattening."""
    flat = mask.ravel(order="C")
    # The last index of every run but the final one, found a chunk at a time: a whole-mask
    # np.diff would hold a second mask-sized array (78 MB for a 300x512x512 mask).
    pieces = [
        np.flatnonzero(chunk[1:] != chunk[:-1]) + start
        for start in range(0, max(flat.size - 1, 0), _RLE_CHUNK)
        for chunk in (flat[start : start + _RLE_CHUNK + 1],)
    ]
    run_ends = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.intp)
    counts = np.diff(run_ends.astype(np.int64), prepend=-1, append=flat.size - 1)
    if flat.size and flat[0]:
        counts = np.concatenate((np.zeros(1, dtype=np.int64), counts))
    return counts


def decode_mask_rle(data: Mapping[str, Any]) -> np.ndarray:
    """Rebuild a boolean mask from the output of `encode_mask_rle`.

    Args:
        data: ``{"shape": [...], "rle": [...], "order": "C"}``; ``"order"`` may be left out.

    Returns:
        A C-contiguous boolean array of the given shape.

    Raises:
        ValueError: If a key is missing or unknown, the order is not ``"C"``, the shape is
            not a list of non-negative integers, or the run lengths are not non-negative
            integers summing to the number of voxels in the shape.
    """
    data = _check_keys(data, ["shape", "rle"], ["order"], "an RLE mask")
    if data.get("order", "C") != "C":
        raise ValueError(f"an RLE mask's order must be 'C'; got {data['order']!r}")
    shape = data["shape"]
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise ValueError(f"an RLE mask's shape must be a list of integers; got {shape!r}")
    shape = tuple(_index("each size in an RLE mask's shape", size) for size in shape)
    counts = np.asarray(data["rle"])
    if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
        raise ValueError(f"an RLE mask's rle must be a flat list of integers; got {data['rle']!r}")
    counts = counts.astype(np.int64, copy=False)  # an empty JSON list reads as float
    if counts.size and counts.min() < 0:
        raise ValueError(f"an RLE mask's run lengths must be non-negative; got {counts.min()}")
    voxel_count = math.prod(shape)
    if int(counts.sum()) != voxel_count:
        raise ValueError(
            f"an RLE mask's run lengths sum to {int(counts.sum())}, but its shape {list(shape)} "
            f"holds {voxel_count} voxels"
        )
    run_values = np.arange(counts.size) % 2 == 1
    return np.repeat(run_values, counts).reshape(shape)


def _to_json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    return value


def _values_equal(first: Any, second: Any) -> bool:
    if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
        return first.dtype == second.dtype and bool(np.array_equal(first, second))
    return type(first) is type(second) and first == second


def _short_repr(value: Any) -> str:
    if isinstance(value, Enum):
        return repr(value.value)
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return f"<mask {value.shape}, {np.count_nonzero(value)} voxels>"
    if isinstance(value, np.ndarray):
        return f"<{value.dtype} array {value.shape}>"
    return repr(value)


@dataclass(frozen=True, eq=False, repr=False)
class Annotation:
    """Base of every annotation: the label name and where in the data it applies.

    Build one of the subclasses; read any of them back with `Annotation.from_dict`.
    Annotations are immutable; `with_fields` makes changed copies.

    Args:
        identifier: Label name, e.g. ``"liver"``.
        scope: What the annotation describes; an `AnnotationScope` or its string value.
        confidence: Model confidence within [0, 1], if the model gives one.
        frame_index: Frame of a video or multi-frame image, counted from 0.
        slice_index: Slice of a volume, counted from 0.
        slice_axis: Axis the slice is taken along: ``"axial"``, ``"sagittal"`` or ``"coronal"``.

    Raises:
        ValueError: If a field has a value outside what is accepted; the message names both.
    """

    type: ClassVar[AnnotationType]

    identifier: str = field(metadata={"check": _text})
    _: KW_ONLY
    scope: AnnotationScope = field(
        default=AnnotationScope.IMAGE, metadata={"check": partial(_enum_member, AnnotationScope)}
    )
    confidence: float | None = field(default=None, metadata={"check": _confidence})
    frame_index: int | None = field(default=None, metadata={"check": _index})
    slice_index: int | None = field(default=None, metadata={"check": _index})
    slice_axis: str | None = field(default=None, metadata={"check": _slice_axis})

    def __post_init__(self) -> None:
        if type(self) is Annotation:
            names = [subclass.__name__ for subclass in _ANNOTATION_CLASSES.values()]
            raise TypeError(f"Annotation is a base class; build one of {_quoted(names)}")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            # None passes only where it is the default. The instance is frozen: construction
            # is the one place values are normalised.
            if value is not None or item.default is not None:
                object.__setattr__(self, item.name, item.metadata["check"](item.name, value))

    def to_dict(self) -> dict[str, Any]:
        """Return the Datamint JSON form: builtin types only, None-valued fields left out."""
        return json_form(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Annotation:
        """Read an annotation from its `to_dict` form, building the subclass its type names.

        Args:
            data: A dict as written by `to_dict`, e.g. parsed from JSON.

        Returns:
            The annotation, equal to the one that wrote ``data``.

        Raises:
            ValueError: If ``"type"`` is missing or unsupported (or, called on a subclass, not
                its type), a required key is missing, a key is unknown or a value is invalid.
        """
        if not isinstance(data, Mapping) or "type" not in data:
            got = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"an annotation must be a dict with a 'type' key; got {got!r}")
        type_name = _to_json(data["type"])
        supported = _ANNOTATION_CLASSES.get(type_name) if isinstance(type_name, str) else None
        if supported is None:
            raise ValueError(
                f"annotation type {type_name!r} is not supported; supported types: "
                f"{_quoted(list(_ANNOTATION_CLASSES))}"
            )
        if cls is not Annotation and supported is not cls:
            raise ValueError(
                f"{cls.__name__}.from_dict reads type {cls.type.value!r}; got {type_name!r}"
            )
        fields = dataclasses.fields(supported)
        required = [item.name for item in fields if item.default is dataclasses.MISSING]
        optional = ["type", *(item.name for item in fields if item.name not in required)]
        _check_keys(data, required, optional, f"a {type_name!r} annotation")
        values = {item.name: data[item.name] for item in fields if item.name in data}
        for item in fields:
            if "from_json" in item.metadata and item.name in values:
                values[item.name] = item.metadata["from_json"](values[item.name])
        return supported(**values)

    def with_fields(self, **changes: Any) -> Annotation:
        """Return a validated copy with common fields changed; masks and arrays are shared.

        Example: ``annotation.with_fields(scope="slice", slice_index=12, slice_axis="axial")``.

        Raises:
            ValueError: If a name is not a common field, or a new value is invalid.
        """
        common_fields = [item.name for item in dataclasses.fields(Annotation)]
        unknown = sorted(name for name in changes if name not in common_fields)
        if unknown:
            raise ValueError(
                f"with_fields cannot change {_quoted(unknown)}; "
                f"accepted fields: {_quoted(common_fields)}"
            )
        return dataclasses.replace(self, **changes)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            _values_equal(getattr(self, item.name), getattr(other, item.name))
            for item in dataclasses.fields(self)
        )

    def __repr__(self) -> str:
        shown = (
            f"{item.name}={_short_repr(getattr(self, item.name))}"
            for item in dataclasses.fields(self)
            if getattr(self, item.name) is not None
        )
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, eq=False, repr=False)
class CategoryAnnotation(Annotation):
    """Image- or volume-level classification: ``value`` is the class name, e.g. ``"benign"``."""

    type: ClassVar[AnnotationType] = AnnotationType.CATEGORY
    value: str = field(metadata={"check": _text})


@dataclass(frozen=True, eq=False, repr=False)
class SegmentationAnnotation(Annotation):
    """A binary mask: (H, W) for image, frame or slice scope, (D, H, W) for volume scope.

    Args:
        mask: Array-like; converted to bool (non-zero is True) unless already bool, which is
            kept without a copy.
        spacing: Voxel size along each mask axis, in the source volume's units.
        affine: 4x4 voxel-to-world matrix of the source volume.
    """

    type: ClassVar[AnnotationType] = AnnotationType.SEGMENTATION
    mask: np.ndarray = field(
        metadata={"check": _bool_mask, "to_json": encode_mask_rle, "from_json": decode_mask_rle}
    )
    _: KW_ONLY
    spacing: tuple[float, ...] | None = field(default=None, metadata={"check": _positive_floats})
    affine: np.ndarray | None = field(default=None, metadata={"check": _affine})

    def __post_init__(self) -> None:
        super().__post_init__()
        expected_ndim = 3 if self.scope is AnnotationScope.VOLUME else 2
        if self.mask.ndim != expected_ndim:
            raise ValueError(
                "a segmentation mask must be 2-D (H, W) for scope 'image', 'frame' or 'slice', "
                f"or 3-D (D, H, W) for scope 'volume'; got a {self.mask.ndim}-D mask of shape "
                f"{self.mask.shape} with scope {self.scope.value!r}"
            )
        if self.spacing is not None and len(self.spacing) != self.mask.ndim:
            raise ValueError(
                f"spacing must hold one value per mask axis ({self.mask.ndim}); "
                f"got {self.spacing!r}"
            )

    @property
    def voxel_count(self) -> int:
        """Number of True voxels in the mask."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True, eq=False, repr=False)
class BoxAnnotation(Annotation):
    """Axis-aligned bounding box in pixel coordinates (Datamint type ``"square"``)."""

    type: ClassVar[AnnotationType] = AnnotationType.SQUARE
    x_min: float = field(metadata={"check": _finite_float})
    y_min: float = field(metadata={"check": _finite_float})
    x_max: float = field(metadata={"check": _finite_float})
    y_max: float = field(metadata={"check": _finite_float})

    def __post_init__(self) -> None:
        super().__post_init__()
        for low, high, axis in ((self.x_min, self.x_max, "x"), (self.y_min, self.y_max, "y")):
            if low > high:
                raise ValueError(f"{axis}_min ({low}) must be <= {axis}_max ({high})")


@dataclass(frozen=True, eq=False, repr=False)
class PointAnnotation(Annotation):
    """A point in pixel coordinates; ``z`` is the slice coordinate in a volume, if any."""

    type: ClassVar[AnnotationType] = AnnotationType.POINT
    x: float = field(metadata={"check": _finite_float})
    y: float = field(metadata={"check": _finite_float})
    z: float | None = field(default=None, metadata={"check": _finite_float})


@dataclass(frozen=True, eq=False, repr=False)
class LineAnnotation(Annotation):
    """A polyline through at least two (x, y) points in pixel coordinates."""

    type: ClassVar[AnnotationType] = AnnotationType.LINE
    points: tuple[tuple[float, float], ...] = field(metadata={"check": _points})


@dataclass(frozen=True, eq=False, repr=False)
class NumericAnnotation(Annotation):
    """A measured or predicted number, e.g. a volume in ``"mL"``."""

    type: ClassVar[AnnotationType] = AnnotationType.NUMERIC
    value: float = field(metadata={"check": _finite_float})
    unit: str | None = field(default=None, metadata={"check": _text})


@dataclass(frozen=True, eq=False, repr=False)
class TextAnnotation(Annotation):
    """Free text, e.g. a generated report sentence."""

    type: ClassVar[AnnotationType] = AnnotationType.TEXT
    text: str = field(metadata={"check": _text})


_ANNOTATION_CLASSES: dict[str, type[Annotation]] = {
    subclass.type.value: subclass for subclass in Annotation.__subclasses__()
}


@dataclass(frozen=True)
class AnnotationSpec:
    """What a model declares it returns: one label name and its annotation type.

    Args:
        identifier: Label name the model's annotations will carry.
        type: An `AnnotationType` or its string value.
        description: Human-readable explanation shown on the platform.
        values: For category specs only: the allowed category values (non-empty, unique).

    Raises:
        ValueError: If a field is invalid, or ``values`` is given for a non-category type.

    Example:
        >>> spec = AnnotationSpec.category("malignancy", ["benign", "malignant"])
        >>> spec.matches(CategoryAnnotation("malignancy", "benign"))
        True
    """

    identifier: str
    type: AnnotationType
    description: str | None = None
    values: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _text("identifier", self.identifier)
        object.__setattr__(self, "type", _enum_member(AnnotationType, "type", self.type))
        if self.description is not None:
            _text("description", self.description)
        if self.values is None:
            return
        if self.type is not AnnotationType.CATEGORY:
            raise ValueError(
                f"values are only accepted for 'category' specs; got type {self.type.value!r}"
            )
        values = tuple(_text("each category value", value) for value in self.values)
        if isinstance(self.values, str) or not values or len(set(values)) != len(values):
            raise ValueError(
                f"values must be a non-empty list of unique strings; got {self.values!r}"
            )
        object.__setattr__(self, "values", values)

    @classmethod
    def category(
        cls, identifier: str, values: Sequence[str], description: str | None = None
    ) -> AnnotationSpec:
        """Declare a classification output with its allowed values."""
        return cls(identifier, AnnotationType.CATEGORY, description, values)

    def matches(self, annotation: Annotation) -> bool:
        """Whether ``annotation`` is what this spec declares (and, for categories, allows)."""
        if annotation.identifier != self.identifier or annotation.type is not self.type:
            return False
        return self.values is None or getattr(annotation, "value", None) in self.values

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, leaving out None-valued fields."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return {name: _to_json(value) for name, value in values.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnnotationSpec:
        """Read a spec from its `to_dict` form.

        Raises:
            ValueError: If a required key is missing, a key is unknown or a value is invalid.
        """
        data = _check_keys(
            data, ["identifier", "type"], ["description", "values"], "an annotation spec"
        )
        return cls(**data)
