"""Read one case: its image channels stacked last, its label map, its geometry.

Images and label maps are read with :mod:`datamint_core.io` (NIfTI, DICOM series), so they
share its geometry: ``(D, H, W)`` arrays and an affine to RAS millimetres. A DICOM SEG label
is laid on its source series slice by slice, through the SOP Instance UIDs it references.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datamint_core._extras import require
from datamint_core.errors import ProjectDataError
from datamint_core.io._decoded import Decoded
from datamint_core.io._read import decode_path, detect_format
from datamint_core.io.geometry import spacing_of

#: How far (mm) two channels' or an image's and its label's grids may differ and still agree.
GRID_TOLERANCE_MM = 1e-3


@dataclass
class TrainingCase:
    """One case, read: its pixels, its label map and its geometry.

    Attributes:
        case_id: the case's name.
        image: ``(D, H, W)`` for one channel, ``(D, H, W, C)`` for several (channels last).
        label: ``(D, H, W)`` label map: ``0`` background, ``i`` the ``i``-th label name
            (``label_names[i - 1]``); ``None`` for an unlabelled case.
        spacing: voxel size along ``(D, H, W)`` in mm.
        affine: 4x4 ``(d, h, w, 1)`` -> RAS mm.
        label_names: the labels, background excluded.
        channel_names: one name per channel.
        metadata: where the case came from (``image_paths``, ``label_path``, ...).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    label_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slices(self) -> int:
        """The number of axial slices (``D``)."""
        return int(self.image.shape[0])

    def to_resource(self) -> Any:
        """The image as a :class:`~datamint_core.VolumeResource` with this case's geometry."""
        from datamint_core.resources import VolumeResource

        # A (D, H, W, C) case keeps its channels' names; one channel has no channel axis.
        names = self.channel_names if self.image.ndim == 4 else None
        return VolumeResource(self.image, spacing=self.spacing, affine=self.affine,
                              id=self.case_id, metadata=dict(self.metadata),
                              channel_names=names)


def read_image_channels(
    paths: tuple[str, ...], channel_names: tuple[str, ...], case_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read a case's channels and stack them last; return ``(image, affine)``.

    Raises:
        ProjectDataError: an unreadable file, a channel count other than declared, or
            channels whose grids disagree (shape or affine), naming the case and files.
    """
    volumes: list[np.ndarray] = []
    affines: list[np.ndarray] = []
    for path in paths:
        pixels, affine = _read_volume(path, case_id)
        channels = [pixels[..., c] for c in range(pixels.shape[-1])] if pixels.ndim == 4 else [
            pixels
        ]
        volumes += channels
        affines += [affine] * len(channels)
    if len(volumes) != len(channel_names):
        raise ProjectDataError(
            f"Case {case_id!r} has {len(volumes)} image channel(s) in {list(paths)}, but the "
            f"project declares {len(channel_names)} ({', '.join(channel_names)}); give one "
            "file per declared channel (<case>_0000, <case>_0001, ...) or one 4-D file."
        )
    for number, (volume, affine) in enumerate(zip(volumes, affines, strict=True)):
        if volume.shape != volumes[0].shape or not np.allclose(
            affine, affines[0], atol=GRID_TOLERANCE_MM
        ):
            raise ProjectDataError(
                f"Case {case_id!r}: channel {number} ({channel_names[number]}) lies on another "
                f"grid than channel 0 (shape {volume.shape} vs {volumes[0].shape}, or a "
                "different affine); the channels of a case must be co-registered on one grid."
            )
    image = volumes[0] if len(volumes) == 1 else np.stack(volumes, axis=-1)
    return image, affines[0]


def _read_volume(path: str, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels, affine)``: ``(D, H, W)``, or ``(D, H, W, C)`` for a 4-D NIfTI of channels."""
    try:
        decoded: Decoded = decode_path(path, "volume", fourth_axis="channels")
    except Exception as error:
        raise ProjectDataError(f"Case {case_id!r}: cannot read {path!r}: {error}") from None
    if decoded.pixels.ndim not in (3, 4) or decoded.affine is None:
        raise ProjectDataError(
            f"Case {case_id!r}: {path!r} is not a volume with a geometry (read as "
            f"{decoded.kind} of shape {decoded.pixels.shape}); accepted: NIfTI files and DICOM "
            "series directories."
        )
    return decoded.pixels, decoded.affine


def read_label_map(
    path: str,
    *,
    case_id: str,
    shape: tuple[int, ...],
    affine: np.ndarray,
    label_names: tuple[str, ...],
    label_values: tuple[int, ...],
    source_series: str | None = None,
) -> np.ndarray:
    """Read a label file as a ``(D, H, W)`` map of ``0..len(label_names)`` on the image's grid.

    Args:
        path: a NIfTI label map, or a DICOM SEG file.
        shape, affine: the image's grid, which the labels must lie on.
        label_names, label_values: the project's labels and the value of each in the files
            (a DICOM SEG's segments are matched by label name, else by segment number).
        source_series: for a DICOM SEG, the image's series directory.

    Raises:
        ProjectDataError: a label value the project does not declare, or a grid that is not
            the image's, naming the case and the file.
    """
    if detect_format(path) == "dicom" and os.path.isfile(path):
        return _read_dicom_seg(path, case_id, shape, label_names, label_values, source_series)
    pixels, label_affine = _read_volume(path, case_id)
    if pixels.ndim == 4 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.shape != tuple(shape):
        raise ProjectDataError(
            f"Case {case_id!r}: the label map {path!r} has shape {pixels.shape}, but its image "
            f"has {tuple(shape)}; the label map must lie on the image's grid."
        )
    if not np.allclose(label_affine, affine, atol=GRID_TOLERANCE_MM):
        raise ProjectDataError(
            f"Case {case_id!r}: the label map {path!r} has another affine than its image "
            f"(spacing {spacing_of(label_affine)} vs {spacing_of(affine)}); the label map must "
            "lie on the image's grid."
        )
    return _relabelled(pixels, case_id, path, label_names, label_values)


def _relabelled(
    pixels: np.ndarray, case_id: str, path: str,
    label_names: tuple[str, ...], label_values: tuple[int, ...],
) -> np.ndarray:
    """Map the file's label values to ``1..N`` (``0`` stays background)."""
    if pixels.dtype.kind == "f":
        rounded = np.rint(pixels)
        if not np.array_equal(rounded, pixels):
            raise ProjectDataError(
                f"Case {case_id!r}: the label map {path!r} holds non-integer values; a label "
                "map holds one integer label value per voxel."
            )
        pixels = rounded
    dtype = np.uint8 if len(label_names) < 256 else np.uint16
    present = np.unique(pixels)
    unknown = sorted(int(v) for v in present if v != 0 and int(v) not in label_values)
    if unknown:
        raise ProjectDataError(
            f"Case {case_id!r}: the label map {path!r} holds the value(s) {unknown}, which "
            f"dataset.json's 'labels' does not declare (declared: 0 background, "
            f"{dict(zip(label_values, label_names, strict=True))})."
        )
    if tuple(label_values) == tuple(range(1, len(label_values) + 1)):
        return pixels.astype(dtype, copy=False)
    lookup = np.zeros(int(max(label_values)) + 1, dtype=dtype)
    for index, value in enumerate(label_values):
        lookup[value] = index + 1
    return lookup[pixels.astype(np.int64)]


def _read_dicom_seg(
    path: str, case_id: str, shape: tuple[int, ...], label_names: tuple[str, ...],
    label_values: tuple[int, ...], source_series: str | None,
) -> np.ndarray:
    highdicom = require("highdicom", "Reading DICOM SEG")
    from datamint_core.io.dicom import ordered_source_datasets

    if source_series is None or not os.path.isdir(source_series):
        raise ProjectDataError(
            f"Case {case_id!r}: the DICOM SEG {path!r} needs its source DICOM series directory "
            "as the case's image."
        )
    try:
        segmentation = highdicom.seg.segread(path)
    except Exception as error:
        raise ProjectDataError(
            f"Case {case_id!r}: cannot read {path!r} as a DICOM SEG: {error}"
        ) from None
    datasets, _ = ordered_source_datasets(source_series)
    uids = [str(d.SOPInstanceUID) for d in datasets]
    numbers = list(segmentation.segment_numbers)
    masks = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=False,
        ignore_spatial_locations=True,
    )
    dtype = np.uint8 if len(label_names) < 256 else np.uint16
    labels = np.zeros(tuple(shape), dtype=dtype)
    if masks.shape[:3] != labels.shape:
        raise ProjectDataError(
            f"Case {case_id!r}: the DICOM SEG {path!r} covers {masks.shape[:3]} voxels, but its "
            f"series {source_series!r} has {labels.shape}."
        )
    for position, number in enumerate(numbers):
        name = str(segmentation.get_segment_description(number).SegmentLabel)
        if name in label_names:
            index = label_names.index(name) + 1
        elif number in label_values:
            index = label_values.index(number) + 1
        else:
            raise ProjectDataError(
                f"Case {case_id!r}: segment {number} ({name!r}) of the DICOM SEG {path!r} is "
                f"none of the project's labels {list(label_names)} (matched by name, else by "
                f"value {list(label_values)})."
            )
        labels[masks[..., position] > 0] = index
    return labels
