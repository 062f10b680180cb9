"""Prompts: the points, boxes, scribbles and few-shot examples an interactive model takes.

Prompts are data. They are grouped per label (the label the model should segment), and
their coordinates are either *index* coordinates of the resource's pixel grid (``(d, h, w)``
for a volume, ``(h, w)`` for an image; a voxel's centre is at whole numbers) or *world*
coordinates in millimetres (RAS+, the library's frame), which the resource's affine maps
to index coordinates. Scribbles are masks on the resource's grid, run-length encoded.

JSON form (what a client sends as the ``prompts`` param)::

    {"space": "index",                       # or "world"
     "labels": {
       "lesion": {
         "points": [{"at": [12, 40.5, 33], "positive": true}],
         "boxes": [{"start": [10, 30, 20], "end": [14, 50, 40]}],
         "scribbles": [{"counts": [1200, 7, 56, 3], "positive": false}],
         "examples": [{"shape": [2, 2], "image": [0, 1, 2, 3], "mask": [3, 1]}]}}}

``counts`` are run lengths over the grid in C order, alternating background and
foreground and starting with background (a mask that starts with foreground starts with
0). A box's ``start`` and ``end`` are its corners, both inside the box.

:meth:`Prompts.from_json` and :meth:`Prompts.to_json` round-trip exactly. Before any model
code runs, :func:`prepare_prompts` checks prompts against each resource (inside its grid,
a label the model declares, a kind the mode takes, finite numbers, bounded counts) and
converts them to index coordinates; a violation is a :class:`PromptError` (HTTP 422)
naming the prompt and what is accepted.

Example::

    prompts = Prompts([LabelPrompts("lesion", points=[Point((12, 40, 33))])])
    model.predict([volume], params={"mode": "volume", "prompts": prompts.to_json()})

Why one module of some 700 lines: the prompt kinds share one coordinate frame, one JSON
form and one check against the resource's grid (:func:`prepare_prompts`); the classes, their
JSON form and those checks are one concept read together.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from datamint_core.errors import PromptError
from datamint_core.routing import PROMPT_KINDS

COORDINATE_SPACES = ("index", "world")

#: Bounds on one request's prompts (all labels together): a client cannot make the server
#: build more than this, whatever it sends.
MAX_LABELS = 64
MAX_POINTS = 4096
MAX_BOXES = 256
MAX_SCRIBBLES = 64
MAX_SCRIBBLE_RUNS = 200_000
MAX_EXAMPLES = 16
MAX_EXAMPLE_VALUES = 4 * 1024 * 1024
#: The longest JSON text accepted as a ``prompts`` param.
MAX_PROMPTS_JSON_CHARS = 1024 * 1024

_LIMITS = {
    "points": MAX_POINTS,
    "boxes": MAX_BOXES,
    "scribbles": MAX_SCRIBBLES,
    "examples": MAX_EXAMPLES,
}


@dataclasses.dataclass(frozen=True)
class Point:
    """A click: ``at`` in index or world coordinates; ``positive`` False for a background
    (correcting) click."""

    at: tuple[float, ...]
    positive: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _coordinates(self.at, "at"))
        object.__setattr__(self, "positive", _flag(self.positive, "positive"))

    def voxel(self) -> tuple[int, ...]:
        """The index of the voxel the point lies in (index coordinates)."""
        return tuple(math.floor(c + 0.5) for c in self.at)

    def to_json(self) -> dict[str, Any]:
        return {"at": list(self.at), "positive": self.positive}


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box from corner ``start`` to corner ``end`` (both inside it)."""

    start: tuple[float, ...]
    end: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _coordinates(self.start, "start"))
        object.__setattr__(self, "end", _coordinates(self.end, "end"))
        if len(self.start) != len(self.end):
            raise PromptError(
                f"start has {len(self.start)} coordinates and end {len(self.end)}; accepted: "
                "corners with the same number of coordinates."
            )
        if any(s > e for s, e in zip(self.start, self.end, strict=True)):
            raise PromptError(
                f"start={list(self.start)} is beyond end={list(self.end)}; accepted: "
                "start <= end on every axis."
            )

    def voxels(self) -> tuple[slice, ...]:
        """The index slices of the voxels the box covers (index coordinates)."""
        return tuple(
            slice(math.floor(s + 0.5), math.floor(e + 0.5) + 1)
            for s, e in zip(self.start, self.end, strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        return {"start": list(self.start), "end": list(self.end)}


@dataclasses.dataclass(frozen=True)
class Scribble:
    """Strokes drawn on the resource's grid: a run-length-encoded mask (see the module)."""

    counts: tuple[int, ...]
    positive: bool = True

    def __post_init__(self) -> None:
        counts = _sequence(self.counts, "counts")
        if len(counts) > MAX_SCRIBBLE_RUNS:
            raise PromptError(
                f"counts has {len(counts)} runs; accepted: at most {MAX_SCRIBBLE_RUNS}."
            )
        if not all(_is_count(c) for c in counts):
            raise PromptError(
                "counts holds a value that is not a non-negative integer; "
                "accepted: run lengths (integers >= 0)."
            )
        object.__setattr__(self, "counts", tuple(int(c) for c in counts))
        object.__setattr__(self, "positive", _flag(self.positive, "positive"))

    @classmethod
    def from_mask(cls, mask: np.ndarray, positive: bool = True) -> Scribble:
        """Encode a boolean mask (C order) as a scribble."""
        return cls(_encode(np.asarray(mask, dtype=bool)), positive)

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """Decode onto a grid of ``shape``.

        Raises:
            PromptError: the runs do not add up to the grid's size.
        """
        return _decode(self.counts, tuple(shape), "counts")

    def to_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "positive": self.positive}


@dataclasses.dataclass(frozen=True, eq=False)
class FewShotExample:
    """An image and its mask, showing the model what the label looks like."""

    image: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.dtype.kind not in "biuf":
            raise PromptError(f"image has dtype {image.dtype}; accepted: numbers.")
        image = image.astype(np.float64)
        if image.ndim not in (2, 3) or image.size > MAX_EXAMPLE_VALUES:
            raise PromptError(
                f"image has shape {list(image.shape)}; accepted: 2 or 3 dimensions and at most "
                f"{MAX_EXAMPLE_VALUES} values."
            )
        if not np.isfinite(image).all():
            raise PromptError("image holds NaN or infinity; accepted: finite numbers.")
        mask = np.asarray(self.mask, dtype=bool)
        if mask.shape != image.shape:
            raise PromptError(
                f"mask has shape {list(mask.shape)} and image {list(image.shape)}; "
                "accepted: the same shape."
            )
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "mask", mask)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FewShotExample):
            return NotImplemented
        return np.array_equal(self.image, other.image) and np.array_equal(self.mask, other.mask)

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.image.shape),
            "image": self.image.ravel().tolist(),
            "mask": list(_encode(self.mask)),
        }


@dataclasses.dataclass(frozen=True)
class LabelPrompts:
    """The prompts for one label."""

    label: str
    points: tuple[Point, ...] = ()
    boxes: tuple[Box, ...] = ()
    scribbles: tuple[Scribble, ...] = ()
    examples: tuple[FewShotExample, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label or len(self.label) > 256:
            raise PromptError(
                f"label {_short(self.label)} is not valid; accepted: a non-empty string of at "
                "most 256 characters."
            )
        for kind, item_type in (
            ("points", Point),
            ("boxes", Box),
            ("scribbles", Scribble),
            ("examples", FewShotExample),
        ):
            items = tuple(getattr(self, kind))
            if len(items) > _LIMITS[kind]:
                raise PromptError(
                    f"{len(items)} {kind} for label {self.label!r}; accepted: at most "
                    f"{_LIMITS[kind]}."
                )
            if not all(isinstance(item, item_type) for item in items):
                raise PromptError(f"{kind} must hold {item_type.__name__} objects.")
            object.__setattr__(self, kind, items)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The prompt kinds present."""
        return tuple(kind for kind in PROMPT_KINDS if getattr(self, kind))

    def to_json(self) -> dict[str, Any]:
        return {
            kind: [item.to_json() for item in getattr(self, kind)]
            for kind in PROMPT_KINDS
            if getattr(self, kind)
        }


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Every prompt of one request for one resource, per label.

    Args:
        labels: one :class:`LabelPrompts` per label (each label once).
        space: ``"index"`` or ``"world"`` (RAS mm; needs a volume with an affine).
    """

    labels: tuple[LabelPrompts, ...] = ()
    space: str = "index"

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if len(labels) > MAX_LABELS:
            raise PromptError(f"{len(labels)} labels; accepted: at most {MAX_LABELS}.")
        names = [entry.label for entry in labels if isinstance(entry, LabelPrompts)]
        if len(names) != len(labels):
            raise PromptError("labels must hold LabelPrompts objects.")
        if len(set(names)) != len(names):
            raise PromptError(f"labels {names} name a label twice; accepted: each label once.")
        if self.space not in COORDINATE_SPACES:
            raise PromptError(
                f"space={_short(self.space)} is not valid; accepted: {list(COORDINATE_SPACES)}."
            )
        object.__setattr__(self, "labels", labels)
        counts = {kind: sum(len(getattr(e, kind)) for e in labels) for kind in PROMPT_KINDS}
        for kind, count in counts.items():
            if count > _LIMITS[kind]:
                raise PromptError(
                    f"{count} {kind} in all; accepted: at most {_LIMITS[kind]} per request."
                )

    def __getitem__(self, label: str) -> LabelPrompts:
        for entry in self.labels:
            if entry.label == label:
                return entry
        raise KeyError(label)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The prompt kinds present, over every label."""
        present = {kind for entry in self.labels for kind in entry.kinds}
        return tuple(kind for kind in PROMPT_KINDS if kind in present)

    # -- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON form (a dict); :meth:`from_json` reads it back to an equal object."""
        return {"space": self.space, "labels": {e.label: e.to_json() for e in self.labels}}

    @classmethod
    def from_json(cls, data: Any) -> Prompts:
        """Read the JSON form: a dict, a JSON string, or a :class:`Prompts` (returned as is).

        Raises:
            PromptError: names the first thing wrong and what is accepted.
        """
        if isinstance(data, Prompts):
            return data
        if isinstance(data, (str, bytes)):
            data = _loads(data)
        _keys(data, "prompts", {"space", "labels"})
        labels = data.get("labels", {})
        if not isinstance(labels, Mapping):
            raise PromptError(
                f"prompts.labels is a {type(labels).__name__}; accepted: an object "
                '{"<label>": {"points": [...], ...}}.'
            )
        if len(labels) > MAX_LABELS:
            raise PromptError(f"{len(labels)} labels; accepted: at most {MAX_LABELS}.")
        return cls(
            tuple(_label_from_json(label, value) for label, value in labels.items()),
            data.get("space", "index"),
        )

    # -- geometry --------------------------------------------------------------------------

    def checked(
        self,
        spatial_shape: Sequence[int],
        affine: np.ndarray | None = None,
        *,
        kinds: Iterable[str] = PROMPT_KINDS,
        labels: Iterable[str] | None = None,
    ) -> Prompts:
        """Check against a grid and a model's declaration; return them in index coordinates.

        Args:
            spatial_shape: the resource's grid (``(D, H, W)`` or ``(H, W)``).
            affine: its voxel-to-RAS matrix (needed for world coordinates).
            kinds: the prompt kinds the handler takes.
            labels: the labels the model declares; None takes any label.

        Raises:
            PromptError: a prompt outside the grid, of another dimensionality, of a kind or
                label not taken, or world coordinates without an affine.
        """
        shape = tuple(int(n) for n in spatial_shape)
        kinds = tuple(kinds)
        declared = None if labels is None else list(labels)
        if self.space == "world":
            if affine is None or len(shape) != 3:
                raise PromptError(
                    'prompts in "world" space need a volume with an affine; this resource has '
                    f"none (grid {list(shape)}); accepted: index coordinates, or a volume with "
                    "an affine."
                )
            matrix = np.asarray(affine, dtype=np.float64)
            try:
                to_index = np.linalg.inv(matrix)
            except np.linalg.LinAlgError:
                to_index = None
            if to_index is None or not np.isfinite(to_index).all():
                raise PromptError(
                    "prompts in \"world\" space need an invertible affine; this volume's affine "
                    f"{_short(matrix.tolist())} maps no world point back to one voxel; "
                    "accepted: index coordinates, or a volume whose affine is invertible."
                )
        checked = []
        for entry in self.labels:
            where = f"prompts.labels[{entry.label!r}]"
            if declared is not None and entry.label not in declared:
                raise PromptError(
                    f"{where}: the model does not segment label {entry.label!r}; accepted "
                    f"labels: {declared}."
                )
            for kind in entry.kinds:
                if kind not in kinds:
                    raise PromptError(
                        f"{where}.{kind}: this mode does not take {kind}; accepted prompt "
                        f"kinds: {list(kinds)}."
                    )
            points = []
            for n, point in enumerate(entry.points):
                at = (
                    _world_to_index(point.at, to_index, f"{where}.points[{n}]")
                    if self.space == "world"
                    else point.at
                )
                point = Point(at, point.positive)
                _inside(point.at, shape, f"{where}.points[{n}].at")
                points.append(point)
            boxes = []
            for n, box in enumerate(entry.boxes):
                if self.space == "world":
                    box = _world_box_to_index(box, to_index, f"{where}.boxes[{n}]")
                _inside(box.start, shape, f"{where}.boxes[{n}].start")
                _inside(box.end, shape, f"{where}.boxes[{n}].end")
                boxes.append(box)
            for n, scribble in enumerate(entry.scribbles):
                if sum(scribble.counts) != math.prod(shape):
                    raise PromptError(
                        f"{where}.scribbles[{n}].counts add up to {sum(scribble.counts)} voxels; "
                        f"accepted: runs over the whole grid {list(shape)} "
                        f"({math.prod(shape)} voxels, C order)."
                    )
            checked.append(dataclasses.replace(entry, points=tuple(points), boxes=tuple(boxes)))
        return Prompts(tuple(checked), "index")

    def for_slice(self, spatial_shape: Sequence[int], axis: int, index: int) -> Prompts:
        """The prompts of one slice, in the slice's own 2-D index coordinates.

        Points whose voxel lies in the slice, boxes that cross it (cut to 2-D) and each
        scribble's strokes on it; index-space prompts of a volume only.
        """
        shape = tuple(int(n) for n in spatial_shape)
        if self.space != "index" or len(shape) != 3:
            raise PromptError("for_slice needs index-space prompts of a volume.")

        def drop(values: tuple[float, ...]) -> tuple[float, ...]:
            return values[:axis] + values[axis + 1 :]

        entries = []
        for entry in self.labels:
            points = tuple(
                Point(drop(p.at), p.positive) for p in entry.points if p.voxel()[axis] == index
            )
            boxes = tuple(
                Box(drop(b.start), drop(b.end))
                for b in entry.boxes
                if b.voxels()[axis].start <= index < b.voxels()[axis].stop
            )
            scribbles = []
            for scribble in entry.scribbles:
                strokes = np.take(scribble.mask(shape), index, axis=axis)
                if strokes.any():
                    scribbles.append(Scribble.from_mask(strokes, scribble.positive))
            entries.append(
                dataclasses.replace(entry, points=points, boxes=boxes, scribbles=tuple(scribbles))
            )
        return Prompts(tuple(entries), "index")


def prepare_prompts(
    raw: Any,
    resources: Sequence[Any],
    *,
    kinds: Iterable[str],
    labels: Iterable[str] | None,
) -> list[Prompts]:
    """Check a request's ``prompts`` param against its resources; one :class:`Prompts` per
    resource, in index coordinates.

    ``raw`` is one prompts object (for every resource) or a list with one per resource,
    each a dict, a JSON string or a :class:`Prompts`.

    Raises:
        PromptError: see :meth:`Prompts.from_json` and :meth:`Prompts.checked`.
    """
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        raw = _loads(raw)
    if isinstance(raw, (list, tuple)):
        if len(raw) != len(resources):
            raise PromptError(
                f"prompts is a list of {len(raw)} for {len(resources)} resource(s); accepted: "
                "one prompts object for every resource, or a list with one per resource."
            )
        parsed = [Prompts.from_json(item) for item in raw]
    else:
        parsed = [Prompts.from_json(raw)] * len(resources)
    kinds = tuple(kinds)
    labels = None if labels is None else tuple(labels)
    output = []
    for position, (prompts, resource) in enumerate(zip(parsed, resources, strict=True)):
        shape = getattr(resource, "spatial_shape", None)
        if shape is None or len(shape) not in (2, 3) or getattr(resource, "kind", "") == "video":
            raise PromptError(
                f"resource #{position} is a {getattr(resource, 'kind', type(resource).__name__)};"
                " accepted with prompts: images and volumes."
            )
        try:
            output.append(
                prompts.checked(
                    shape, getattr(resource, "affine", None), kinds=kinds, labels=labels
                )
            )
        except PromptError as error:
            prefix = f"resource #{position}: " if len(resources) > 1 else ""
            raise PromptError(f"{prefix}{error}") from None
    return output


# -- JSON readers ------------------------------------------------------------------------------


def _label_from_json(label: Any, value: Any) -> LabelPrompts:
    where = f"prompts.labels[{_short(label)}]"
    try:
        _keys(value, where, set(PROMPT_KINDS))
        items: dict[str, tuple[Any, ...]] = {}
        for kind in PROMPT_KINDS:
            entries = value.get(kind, [])
            if not isinstance(entries, list):
                raise PromptError(f"{kind} is a {type(entries).__name__}; accepted: a list.")
            if len(entries) > _LIMITS[kind]:
                raise PromptError(
                    f"{len(entries)} {kind}; accepted: at most {_LIMITS[kind]} per request."
                )
            reader = _READERS[kind]
            parsed = []
            for n, entry in enumerate(entries):
                try:
                    parsed.append(reader(entry))
                except PromptError as error:
                    raise PromptError(f"{kind}[{n}]: {error}") from None
            items[kind] = tuple(parsed)
        return LabelPrompts(label, **items)
    except PromptError as error:
        raise PromptError(f"{where}: {error}") from None


def _point(data: Any) -> Point:
    _keys(data, "point", {"at", "positive"}, required={"at"})
    return Point(data["at"], data.get("positive", True))


def _box(data: Any) -> Box:
    _keys(data, "box", {"start", "end"}, required={"start", "end"})
    return Box(data["start"], data["end"])


def _scribble(data: Any) -> Scribble:
    _keys(data, "scribble", {"counts", "positive"}, required={"counts"})
    return Scribble(data["counts"], data.get("positive", True))


def _example(data: Any) -> FewShotExample:
    _keys(data, "example", {"shape", "image", "mask"}, required={"shape", "image", "mask"})
    shape = _sequence(data["shape"], "shape")
    if len(shape) not in (2, 3) or not all(_is_count(n) and n > 0 for n in shape):
        raise PromptError(f"shape={_short(shape)}; accepted: 2 or 3 positive integers.")
    size = math.prod(int(n) for n in shape)
    image = _sequence(data["image"], "image")
    if size > MAX_EXAMPLE_VALUES or len(image) != size:
        raise PromptError(
            f"image holds {len(image)} values for shape {list(shape)}; accepted: exactly the "
            f"shape's size, at most {MAX_EXAMPLE_VALUES}."
        )
    if not all(_is_number(v) for v in image):
        raise PromptError("image holds a value that is not a number; accepted: numbers.")
    mask_counts = Scribble(data["mask"]).counts
    shape = tuple(int(n) for n in shape)
    return FewShotExample(
        np.asarray(image, dtype=np.float64).reshape(shape), _decode(mask_counts, shape, "mask")
    )


_READERS = {"points": _point, "boxes": _box, "scribbles": _scribble, "examples": _example}


# -- helpers -----------------------------------------------------------------------------------


def _keys(data: Any, what: str, known: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        raise PromptError(
            f"{what} is a {type(data).__name__}; accepted: an object with keys {sorted(known)}."
        )
    unknown = [key for key in data if key not in known]
    if unknown:
        raise PromptError(
            f"{what} has unknown key(s) {_short(sorted(map(str, unknown)))}; accepted keys: "
            f"{sorted(known)}."
        )
    missing = sorted(required - set(data))
    if missing:
        raise PromptError(f"{what} lacks {missing}; accepted keys: {sorted(known)}.")


def _sequence(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    if not isinstance(value, (list, tuple)):
        raise PromptError(f"{name}={_short(value)} is not a list; accepted: a list of numbers.")
    return value


def _coordinates(value: Any, name: str) -> tuple[float, ...]:
    values = _sequence(value, name)
    if len(values) not in (2, 3):
        raise PromptError(
            f"{name}={_short(values)} has {len(values)} coordinates; accepted: 2 (h, w) for "
            "an image, 3 (d, h, w), or (x, y, z) in world space, for a volume."
        )
    if not all(_is_number(v) and math.isfinite(v) for v in values):
        raise PromptError(f"{name}={_short(values)} is not valid; accepted: finite numbers.")
    return tuple(float(v) for v in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise PromptError(f"{name}={_short(value)} is not valid; accepted: true or false.")
    return bool(value)


def _inside(at: tuple[float, ...], shape: tuple[int, ...], where: str) -> None:
    if len(at) != len(shape):
        raise PromptError(
            f"{where}={_short(list(at))} has {len(at)} coordinates for a {len(shape)}-D grid "
            f"{list(shape)}; accepted: {len(shape)} coordinates."
        )
    if not all(-0.5 <= c < n - 0.5 for c, n in zip(at, shape, strict=True)):
        raise PromptError(
            f"{where}={_short([round(c, 3) for c in at])} lies outside the grid {list(shape)}; "
            "accepted: index coordinates c with -0.5 <= c < n - 0.5 on each axis (or world "
            "coordinates inside the volume)."
        )


def _world_to_index(at: tuple[float, ...], to_index: np.ndarray, where: str) -> tuple[float, ...]:
    if len(at) != 3:
        raise PromptError(
            f"{where}: world coordinates {_short(list(at))} have {len(at)} values; accepted: "
            "(x, y, z) in RAS millimetres."
        )
    index = to_index @ np.array([*at, 1.0])
    return tuple(float(v) for v in index[:3])


def _world_box_to_index(box: Box, to_index: np.ndarray, where: str) -> Box:
    """The index-space box that holds a world box (its eight corners, as the grid may be
    oblique to the world axes)."""
    if len(box.start) != 3:
        _world_to_index(box.start, to_index, where)  # raises: world space is 3-D
    corners = [
        _world_to_index(
            tuple(np.where(np.array(bits, dtype=bool), box.end, box.start)), to_index, where
        )
        for bits in np.ndindex(2, 2, 2)
    ]
    array = np.array(corners)
    return Box(tuple(array.min(axis=0)), tuple(array.max(axis=0)))


def _encode(mask: np.ndarray) -> tuple[int, ...]:
    flat = mask.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return tuple(int(r) for r in runs)


def _decode(counts: Sequence[int], shape: tuple[int, ...], name: str) -> np.ndarray:
    size = math.prod(shape)
    if sum(counts) != size:
        raise PromptError(
            f"{name} runs add up to {sum(counts)}; accepted: runs over the whole grid "
            f"{list(shape)} ({size} values, C order)."
        )
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(shape)


def _loads(text: str | bytes) -> Any:
    if len(text) > MAX_PROMPTS_JSON_CHARS:
        raise PromptError(
            f"prompts is {len(text)} characters of JSON; accepted: at most "
            f"{MAX_PROMPTS_JSON_CHARS}."
        )
    try:
        return json.loads(text)
    except ValueError as error:
        raise PromptError(f"prompts is not valid JSON ({error}).") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = [
    "COORDINATE_SPACES",
    "PROMPT_KINDS",
    "Box",
    "FewShotExample",
    "LabelPrompts",
    "Point",
    "PromptError",
    "Prompts",
    "Scribble",
    "prepare_prompts",
]
