"""Prompts: their JSON form, their validation against a resource, and how they are routed."""

from __future__ import annotations

import json
import math
import runpy
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import (
    BaseDatamintModel,
    Box,
    FewShotExample,
    ImageResource,
    InvalidRequestError,
    LabelPrompts,
    Point,
    PromptError,
    Prompts,
    Scribble,
    SegmentationAnnotation,
    VolumeResource,
    prediction_mode,
)
from datamint_core.prompts import MAX_POINTS, prepare_prompts

EXAMPLE = Path(__file__).parents[2] / "examples" / "interactive_model.py"


def region_grower() -> BaseDatamintModel:
    return runpy.run_path(str(EXAMPLE))["RegionGrower"]()


finite = st.floats(-1e6, 1e6, allow_nan=False)
coords = st.lists(finite, min_size=2, max_size=3).map(tuple)


@st.composite
def boxes(draw):
    start = draw(coords)
    extent = draw(st.lists(st.floats(0, 100), min_size=len(start), max_size=len(start)))
    return Box(start, tuple(s + e for s, e in zip(start, extent, strict=True)))


@st.composite
def scribbles(draw):
    mask = draw(st.lists(st.booleans(), min_size=1, max_size=60))
    return Scribble.from_mask(np.array(mask), draw(st.booleans()))


@st.composite
def examples(draw):
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    image = draw(st.lists(finite, min_size=math.prod(shape), max_size=math.prod(shape)))
    mask = draw(st.lists(st.booleans(), min_size=math.prod(shape), max_size=math.prod(shape)))
    return FewShotExample(np.reshape(image, shape), np.reshape(mask, shape))


label_prompts = st.builds(
    LabelPrompts,
    st.text(min_size=1, max_size=12),
    points=st.lists(st.builds(Point, coords, st.booleans()), max_size=4).map(tuple),
    boxes=st.lists(boxes(), max_size=2).map(tuple),
    scribbles=st.lists(scribbles(), max_size=2).map(tuple),
    examples=st.lists(examples(), max_size=1).map(tuple),
)
prompts_strategy = st.builds(
    Prompts,
    st.lists(label_prompts, max_size=3, unique_by=lambda e: e.label).map(tuple),
    st.sampled_from(["index", "world"]),
)


@given(prompts_strategy)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_prompts_round_trip_exactly_through_their_json_text(prompts):
    text = json.dumps(prompts.to_json())
    again = Prompts.from_json(json.loads(text))
    assert again == prompts
    assert json.dumps(again.to_json()) == text
    assert Prompts.from_json(text) == prompts


def test_a_scribble_decodes_to_the_mask_it_was_encoded_from():
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1, 2, 1:4] = True
    mask[0, 0, 0] = True
    scribble = Scribble.from_mask(mask)
    assert scribble.counts[0] == 0  # starts with foreground
    assert np.array_equal(scribble.mask(mask.shape), mask)


GRID = (6, 8, 10)
#: A 2 mm x 1 mm x 0.5 mm grid whose rows run along -y: world (x, y, z) from (d, h, w).
AFFINE = np.array([[0, 0, 0.5, 10], [0, -1, 0, 20], [2, 0, 0, -30], [0, 0, 0, 1.0]])


def checked(data, *, shape=GRID, kinds=("points", "boxes", "scribbles"), labels=("lesion",)):
    return Prompts.from_json(data).checked(shape, AFFINE, kinds=kinds, labels=labels)


def test_world_points_and_boxes_convert_to_the_voxels_the_affine_maps_them_to():
    world = AFFINE @ np.array([3, 5, 7, 1.0])
    prompts = checked(
        {
            "space": "world",
            "labels": {
                "lesion": {
                    "points": [{"at": list(world[:3])}],
                    "boxes": [{"start": [10.5, 15, -28], "end": [12, 18, -22]}],
                }
            },
        }
    )
    assert prompts.space == "index"
    assert prompts["lesion"].points[0].voxel() == (3, 5, 7)
    box = prompts["lesion"].boxes[0]
    assert box.start == (1.0, 2.0, 1.0) and box.end == (4.0, 5.0, 4.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"labels": {"lesion": {"points": [{"at": [1, 2, 99]}]}}}, "lies outside the grid"),
        ({"labels": {"lesion": {"points": [{"at": [1, 2]}]}}}, "has 2 coordinates for a 3-D"),
        ({"labels": {"lesion": {"points": [{"at": [1, float("nan"), 2]}]}}}, "finite numbers"),
        ({"labels": {"liver": {"points": [{"at": [1, 2, 3]}]}}}, "accepted labels: ['lesion']"),
        ({"labels": {"lesion": {"examples": []}}}, None),
        ({"labels": {"lesion": {"pionts": []}}}, "unknown key(s) ['pionts']"),
        (
            {"labels": {"lesion": {"boxes": [{"start": [3, 3, 3], "end": [1, 9, 9]}]}}},
            "start <= end",
        ),
        ({"labels": {"lesion": {"scribbles": [{"counts": [5, 5]}]}}}, "runs over the whole grid"),
        ({"space": "ras", "labels": {}}, "accepted: ['index', 'world']"),
        (
            {"labels": {"lesion": {"points": [{"at": [1, 2, 3], "positive": "yes"}]}}},
            "true or false",
        ),
        ("{not json", "not valid JSON"),
        ({"labels": {"lesion": {"points": [{"at": [0, 0, 0]}] * (MAX_POINTS + 1)}}}, "at most"),
    ],
)
def test_a_bad_prompt_is_a_prompt_error_naming_it_and_what_is_accepted(data, message):
    if message is None:  # an empty list of a kind the mode does not take is no prompt at all
        checked(data)
        return
    with pytest.raises(PromptError) as caught:
        checked(data)
    assert message in str(caught.value)
    assert caught.value.http_status == 422


def test_a_kind_the_mode_does_not_take_is_refused_by_name():
    data = {"labels": {"lesion": {"boxes": [{"start": [0, 0, 0], "end": [1, 1, 1]}]}}}
    with pytest.raises(
        PromptError, match=r"does not take boxes; accepted prompt kinds: \['points'\]"
    ):
        checked(data, kinds=("points",))


def test_world_prompts_need_a_volume_with_an_affine():
    data = {"space": "world", "labels": {"lesion": {"points": [{"at": [0, 0, 0]}]}}}
    with pytest.raises(PromptError, match="need a volume with an affine"):
        Prompts.from_json(data).checked(GRID, None)


@pytest.mark.parametrize("affine", [np.zeros((4, 4)), np.diag([1.0, 1.0, 0.0, 1.0])])
def test_world_prompts_on_a_volume_with_a_singular_affine_are_a_prompt_error_not_a_crash(affine):
    data = {"space": "world", "labels": {"lesion": {"points": [{"at": [0, 0, 0]}]}}}
    volume = VolumeResource(np.zeros((3, 4, 5)), affine=affine)
    with pytest.raises(PromptError, match="need an invertible affine"):
        prepare_prompts(data, [volume], kinds=("points",), labels=None)


def test_a_volume_prompt_becomes_the_slice_s_own_2d_prompt():
    scribble = np.zeros(GRID, dtype=bool)
    scribble[2, 3, 4:6] = True
    prompts = checked(
        {
            "labels": {
                "lesion": {
                    "points": [{"at": [2.2, 5, 6]}, {"at": [3, 1, 1], "positive": False}],
                    "boxes": [{"start": [1, 0, 0], "end": [2, 4, 4]}],
                    "scribbles": [Scribble.from_mask(scribble).to_json()],
                }
            }
        }
    )
    axial = prompts.for_slice(GRID, 0, 2)["lesion"]
    assert axial.points == (Point((5, 6)),)
    assert axial.boxes == (Box((0, 0), (4, 4)),)
    assert np.array_equal(axial.scribbles[0].mask(GRID[1:]), scribble[2])
    coronal = prompts.for_slice(GRID, 1, 1)["lesion"]
    assert coronal.points == (Point((3, 1), positive=False),)


# -- routing --------------------------------------------------------------------------------


class PointsOnVolumes(BaseDatamintModel):
    annotation_specs = None

    def __init__(self):
        super().__init__()
        self.seen = []

    @prediction_mode("volume", prompts=("points",))
    def segment(self, model_input, prompts=None):
        self.seen.append(prompts)
        return [[] for _ in model_input]


def test_a_handler_declares_its_prompt_kinds_and_the_metadata_says_so():
    assert region_grower().router.mode_params()["image"] == {
        "params": ["prompts"],
        "required": [],
        "prompts": ["points", "boxes", "scribbles"],
    }
    grower = region_grower().router.mode_params()
    assert grower["slice"]["prompts"] == grower["volume"]["prompts"] == grower["image"]["prompts"]
    assert PointsOnVolumes().router.mode_params()["volume"]["prompts"] == ["points"]


def test_the_handler_gets_typed_index_prompts_one_per_input():
    model = PointsOnVolumes()
    volume = VolumeResource(np.zeros(GRID), affine=AFFINE)
    world = (AFFINE @ np.array([1, 2, 3, 1.0]))[:3].tolist()
    model.predict(
        [volume, volume],
        params={
            "mode": "volume",
            "prompts": json.dumps(
                {"space": "world", "labels": {"any": {"points": [{"at": world}]}}}
            ),
        },
    )
    (given,) = model.seen
    assert len(given) == 2 and all(p["any"].points[0].voxel() == (1, 2, 3) for p in given)


def test_prompts_to_a_mode_that_takes_none_are_refused_naming_the_modes_that_do():
    model = region_grower()
    with pytest.raises(InvalidRequestError, match=r"takes no prompts; accepted: .*'image'"):
        model.predict(
            [VolumeResource(np.zeros((2, 4, 4)))],
            params={"mode": "frame", "prompts": {"labels": {}}},
        )


def blob_image() -> np.ndarray:
    image = np.zeros((32, 32))
    image[4:12, 4:12] = 1.0
    image[20:28, 18:30] = 1.0
    return image


def test_the_example_grows_a_positive_click_and_a_negative_click_removes_it():
    model = region_grower()
    image = ImageResource(blob_image())
    click = {"labels": {"lesion": {"points": [{"at": [6, 6]}]}}}
    (annotations,) = model.predict([image], params={"mode": "image", "prompts": click})
    (mask,) = [a.mask for a in annotations]
    assert mask.sum() == 64 and mask[6, 6] and not mask[22, 22]
    both = {"labels": {"lesion": {"points": [{"at": [6, 6]}, {"at": [22, 22]}]}}}
    (annotations,) = model.predict([image], params={"mode": "image", "prompts": both})
    assert annotations[0].mask.sum() == 64 + 96
    undo = {
        "labels": {
            "lesion": {
                "points": [{"at": [6, 6]}, {"at": [22, 22]}, {"at": [5, 5], "positive": False}]
            }
        }
    }
    (annotations,) = model.predict([image], params={"mode": "image", "prompts": undo})
    assert annotations[0].mask.sum() == 96 and not annotations[0].mask[6, 6]


def test_volume_prompts_reach_each_slice_in_its_own_coordinates():
    volume = np.stack([blob_image()] * 4)
    model = region_grower()
    prompts = {
        "labels": {
            "lesion": {
                "points": [{"at": [2, 6, 6]}],
                "boxes": [{"start": [0, 18, 18], "end": [1, 29, 29]}],
            }
        }
    }
    (annotations,) = model.predict(
        [VolumeResource(volume)], params={"mode": "volume", "prompts": prompts}
    )
    (mask,) = [a.mask for a in annotations if isinstance(a, SegmentationAnnotation)]
    assert mask.shape == volume.shape
    assert mask[2, 4:12, 4:12].all() and not mask[[0, 1, 3], 4:12, 4:12].any()
    assert mask[0:2, 20:28, 18:30].all() and not mask[2:, 20:28, 18:30].any()


# -- hostile prompts ------------------------------------------------------------------------

hostile_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)
hostile_coords = st.lists(hostile_number, max_size=5)
hostile_label = st.one_of(st.sampled_from(["lesion", "liver", ""]), st.text(max_size=4))
hostile_entry = st.dictionaries(
    st.sampled_from(["points", "boxes", "scribbles", "examples", "bogus"]),
    st.one_of(
        st.lists(st.fixed_dictionaries({"at": hostile_coords}), max_size=3),
        st.lists(
            st.fixed_dictionaries({"start": hostile_coords, "end": hostile_coords}), max_size=2
        ),
        st.lists(
            st.fixed_dictionaries({"counts": st.lists(hostile_number, max_size=4)}), max_size=2
        ),
        st.lists(
            st.fixed_dictionaries(
                {"shape": hostile_coords, "image": hostile_coords, "mask": hostile_coords}
            ),
            max_size=1,
        ),
        hostile_number,
    ),
    max_size=3,
)
hostile_prompts = st.one_of(
    st.fixed_dictionaries(
        {"labels": st.dictionaries(hostile_label, hostile_entry, max_size=3)},
        optional={"space": st.sampled_from(["index", "world", "lps", 3])},
    ),
    st.text(max_size=20),
    st.lists(st.none(), max_size=2),
    hostile_number,
)


@given(hostile_prompts)
@settings(max_examples=300, deadline=None)
def test_hostile_prompts_are_refused_as_prompt_errors_or_served(data):
    model = region_grower()
    try:
        model.predict([ImageResource(blob_image())], params={"mode": "image", "prompts": data})
    except PromptError as error:
        assert "accepted" in str(error) or "valid JSON" in str(error)


def test_a_million_points_are_refused_before_a_million_objects_are_built():
    points = [{"at": [1, 1]}] * 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(PromptError, match="at most 4096"):
            Prompts.from_json({"labels": {"lesion": {"points": points}}})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


# -- world coordinates on a real oblique DICOM series ----------------------------------------


def test_world_prompts_on_an_oblique_dicom_series_land_on_the_voxels_simpleitk_finds(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    pytest.importorskip("pydicom")
    from datamint_core.io import read
    from tests.core.dicom_files import write_series

    a, b = math.radians(25), math.radians(20)  # rotated about z, then tilted about the rows
    row = np.array([math.cos(a), math.sin(a), 0.0])
    column = np.array([-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b)])
    normal = np.cross(row, column)
    write_series(
        tmp_path / "oblique", 7, size=24, orientation=(*row, *column), step=tuple(2.5 * normal)
    )
    volume = read(tmp_path / "oblique")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "oblique")))
    image = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(image), volume.pixels)  # same (d, h, w) order

    rng = np.random.default_rng(3)
    voxels = [tuple(int(rng.integers(0, n)) for n in volume.spatial_shape) for _ in range(20)]
    # Off-centre by up to 0.4 voxel along each grid axis: still the same voxel.
    offsets = rng.uniform(-0.4, 0.4, (len(voxels), 3))
    world_ras = [
        (volume.affine @ np.array([*np.add(v, o), 1.0]))[:3]
        for v, o in zip(voxels, offsets, strict=True)
    ]
    prompts = Prompts.from_json(
        {
            "space": "world",
            "labels": {"lesion": {"points": [{"at": list(map(float, w))} for w in world_ras]}},
        }
    ).checked(volume.spatial_shape, volume.affine)
    index_prompts = Prompts.from_json(
        {"labels": {"lesion": {"points": [{"at": list(v)} for v in voxels]}}}
    ).checked(volume.spatial_shape, volume.affine)
    for point, index_point, world, voxel in zip(
        prompts["lesion"].points, index_prompts["lesion"].points, world_ras, voxels, strict=True
    ):
        lps = (-world[0], -world[1], world[2])  # ITK's world is LPS, the library's RAS
        i, j, k = image.TransformPhysicalPointToIndex(lps)
        assert point.voxel() == index_point.voxel() == (k, j, i) == voxel
