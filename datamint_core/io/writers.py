"""Write what a model found: masks as NIfTI or DICOM SEG, and an overlay picture.

All three take the model's annotations for one resource (``model.predict(...)[0]``) and
write in datamint's geometry (:mod:`datamint_core.io.geometry`): a volume mask ``(D, H, W)``
is written with the source volume's affine, so it lies voxel for voxel on the source.
Files are written atomically (a temporary name beside the target, then renamed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datamint_core._extras import require
from datamint_core._files import atomic_path
from datamint_core.annotations import (
    Annotation,
    AnnotationScope,
    BoxAnnotation,
    SegmentationAnnotation,
)
from datamint_core.errors import ResourceError
from datamint_core.io.geometry import dhw_to_nifti
from datamint_core.resources import BaseResource, ImageResource, VolumeResource

#: Label colours (RGB), one per label in order; chosen to stay apart on gray images.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
_OVERLAY_ALPHA = 0.45
_MIN_OVERLAY_WIDTH = 384


def label_volume(
    annotations: Sequence[Annotation], shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Merge segmentation masks into one label map: 0 background, 1.. one per label name.

    Masks of the same ``identifier`` share a label; where masks overlap, the later wins.
    Slice-scoped masks are placed on their slice of a ``shape`` volume.

    Returns:
        ``(labels, names)``: the label map (``uint8``, or ``uint16`` past 255 labels) and the
        label names, ``names[i]`` being label ``i + 1``.

    Raises:
        ResourceError: no segmentation among the annotations, or masks of different shapes.
    """
    masks = [a for a in annotations if isinstance(a, SegmentationAnnotation)]
    if not masks:
        found = sorted({type(a).__name__ for a in annotations}) or ["nothing"]
        raise ResourceError(
            f"There is no segmentation mask to write (the model returned {', '.join(found)}); "
            "accepted: SegmentationAnnotation results."
        )
    names = segmentation_names(masks)
    volume_shape = shape or next(
        (m.mask.shape for m in masks if m.scope is AnnotationScope.VOLUME), masks[0].mask.shape
    )
    labels = np.zeros(volume_shape, dtype=np.uint8 if len(names) < 256 else np.uint16)
    for mask in masks:
        target = _mask_target(labels, mask)
        target[mask.mask] = names.index(mask.identifier) + 1
    return labels, names


def segmentation_names(annotations: Sequence[Annotation]) -> list[str]:
    """The label names of the segmentation masks, in the order they first appear: label
    ``i + 1`` of a label map, segment ``i + 1`` of a DICOM SEG."""
    names: list[str] = []
    for annotation in annotations:
        if isinstance(annotation, SegmentationAnnotation) and annotation.identifier not in names:
            names.append(annotation.identifier)
    return names


def _mask_target(labels: np.ndarray, mask: SegmentationAnnotation) -> np.ndarray:
    """The part of ``labels`` a mask covers (the whole map, or one slice of it)."""
    if mask.mask.shape == labels.shape:
        return labels
    if labels.shape[:1] == (1,) and mask.mask.shape == labels.shape[1:] and not mask.slice_index:
        return labels[0]  # a 2-D image's mask, on the image seen as a one-slice volume
    if labels.ndim == 3 and mask.mask.ndim == 2 and mask.slice_index is not None:
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[mask.slice_axis or "axial"]
        key: list[Any] = [slice(None)] * 3
        key[axis] = mask.slice_index
        target = labels[tuple(key)]
        if target.shape == mask.mask.shape:
            return target
    raise ResourceError(
        f"The mask {mask.identifier!r} of shape {mask.mask.shape} does not fit the label map "
        f"of shape {labels.shape}; accepted: masks of the source's shape, or slice masks "
        "with their slice_index."
    )


def write_nifti(
    annotations: Sequence[Annotation],
    path: str | os.PathLike[str],
    *,
    source: VolumeResource | None = None,
) -> str:
    """Write segmentation masks as a NIfTI label map with the source volume's affine.

    Label ``i + 1`` is the ``i``-th label name; the names are stored in the file's header
    extension (JSON, ``{"labels": {"1": "liver", ...}}``). The ``(D, H, W)`` map is written
    as nibabel's ``(W, H, D)`` = ``(i, j, k)`` with the affine turned back to ``(i, j, k)``,
    so a mask predicted on a NIfTI volume reads back with that file's affine and shape.

    Args:
        annotations: the model's annotations for one volume.
        path: a ``.nii`` or ``.nii.gz`` file to write.
        source: the volume predicted on; its affine (else the masks' own) places the map.

    Returns:
        The path written.

    Raises:
        ResourceError: no masks, no affine anywhere, or masks that do not fit the source.
        ImportError: ``pip install "datamint[nifti]"``.
    """
    nibabel = require("nibabel", "Writing NIfTI")
    shape = source.spatial_shape if source is not None else None
    labels, names = label_volume(annotations, shape)
    if labels.ndim == 2:
        labels = labels[None]
    affine = _affine_for(annotations, source)
    image = nibabel.Nifti1Image(np.asarray(labels.transpose(2, 1, 0)), dhw_to_nifti(affine))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_intent("label")
    legend = {"labels": {str(index + 1): name for index, name in enumerate(names)}}
    image.header.extensions.append(
        nibabel.nifti1.Nifti1Extension("comment", json.dumps(legend).encode())
    )
    suffix = ".nii.gz" if os.fspath(path).lower().endswith(".gz") else ".nii"
    with atomic_path(path, format_suffix=suffix) as temporary:
        nibabel.save(image, temporary)
    return os.fspath(path)


def _affine_for(annotations: Sequence[Annotation], source: VolumeResource | None) -> np.ndarray:
    if source is not None and source.affine is not None:
        return source.affine
    for annotation in annotations:
        affine = getattr(annotation, "affine", None)
        if affine is not None:
            return affine
    spacing = source.spacing if source is not None else None
    spacing = spacing or next(
        (a.spacing for a in annotations if getattr(a, "spacing", None) and len(a.spacing) == 3),
        None,
    )
    if spacing is None:
        raise ResourceError(
            "Cannot place the mask in space: neither the source volume nor the masks carry "
            "an affine or a spacing. Read the source with datamint_core.io.read (which keeps "
            "its affine) or give VolumeResource(..., affine=...)."
        )
    return np.diag([*spacing, 1.0])


def write_dicom_seg(
    annotations: Sequence[Annotation],
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str],
) -> str:
    """Write segmentation masks as a DICOM SEG object referencing the source series.

    One segment per label name (binary, automatic, algorithm ``datamint``); the SEG shares
    the source's study, patient and frame of reference and references each source image.

    Args:
        annotations: the model's annotations for the volume read from ``source``.
        path: the ``.dcm`` file to write.
        source: the DICOM file or series directory the prediction was made on.

    Returns:
        The path written.

    Raises:
        ResourceError: no masks, or masks that do not match the source's slices.
        ImportError: ``pip install "datamint[dicom]"`` (highdicom).
    """
    highdicom = require("highdicom", "Writing DICOM SEG")
    from pydicom.sr.codedict import codes

    from datamint_core.io.dicom import ordered_source_datasets
    from datamint_core.version import __version__

    datasets, frame_order = ordered_source_datasets(os.fspath(source))
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    slices = len(frame_order) if frame_order is not None else len(datasets)
    labels, names = label_volume(annotations, (slices, rows, columns))
    if labels.ndim == 2:
        labels = labels[None]
    if labels.shape != (slices, rows, columns):
        raise ResourceError(
            f"The masks have shape {labels.shape}, but the source {os.fspath(source)!r} has "
            f"{slices} slices of {rows}x{columns}; write the prediction made on that source."
        )
    if frame_order is not None:  # a multi-frame source: frames in the file's own order
        file_order = np.empty_like(labels)
        file_order[np.asarray(frame_order)] = labels
        labels = file_order
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name="datamint", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        highdicom.seg.SegmentDescription(
            segment_number=index + 1,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for index, name in enumerate(names)
    ]
    segmentation = highdicom.seg.Segmentation(
        source_images=datasets,
        pixel_array=labels,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=highdicom.UID(),
        series_number=900,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="datamint",
        manufacturer_model_name="datamint",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=False,
    )
    with atomic_path(path, format_suffix=".dcm") as temporary:
        segmentation.save_as(temporary)
    return os.fspath(path)


def write_overlay_png(
    resource: BaseResource,
    annotations: Sequence[Annotation],
    path: str | os.PathLike[str],
    *,
    slice_index: int | None = None,
) -> str:
    """Draw the annotations over an image, or one axial slice of a volume, with a legend.

    Each label name gets its own colour (:data:`PALETTE`, in the order labels first
    appear); masks are blended over the grayscale picture with their outline drawn solid,
    boxes drawn as rectangles, and a legend under the picture names each colour.

    Args:
        resource: the image or volume predicted on.
        annotations: the model's annotations for it.
        path: the ``.png`` file to write.
        slice_index: the axial slice of a volume to draw; by default the one where the
            masks cover the most pixels.

    Returns:
        The path written.

    Raises:
        ResourceError: a slice index outside the volume, or a resource that is not an image
            or a volume.
        ImportError: ``pip install "datamint[images]"``.
    """
    require("PIL", "Writing the overlay picture")
    from PIL import Image, ImageDraw, ImageFont

    picture, layers, names, index = _overlay_layers(resource, annotations, slice_index)
    if picture.ndim == 3 and resource.channel_names is not None:
        picture = picture[..., 0]  # named channels (modalities): draw over the first
    gray = picture.mean(axis=2) if picture.ndim == 3 else picture
    rgb = np.repeat(window_to_uint8(gray, resource.metadata)[..., None], 3, axis=2)
    rgb = rgb.astype(np.float32)
    for layer, colour in layers:
        if layer is None:
            continue
        rgb[layer] = (1 - _OVERLAY_ALPHA) * rgb[layer] + _OVERLAY_ALPHA * np.asarray(colour)
        rgb[_outline(layer)] = colour
    image = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
    scale = max(1, int(np.ceil(_MIN_OVERLAY_WIDTH / image.width)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    for annotation in annotations:
        if isinstance(annotation, BoxAnnotation) and _on_slice(annotation, index):
            colour = PALETTE[names.index(annotation.identifier) % len(PALETTE)]
            box = [
                annotation.x_min * scale,
                annotation.y_min * scale,
                annotation.x_max * scale,
                annotation.y_max * scale,
            ]
            draw.rectangle(box, outline=colour, width=2)
    font = ImageFont.load_default()
    line = 18
    title = f"slice {index}" if index is not None else "image"
    legend = Image.new("RGB", (image.width, line * (len(names) + 1) + 8), (0, 0, 0))
    legend_draw = ImageDraw.Draw(legend)
    legend_draw.text((6, 4), title, fill=(255, 255, 255), font=font)
    for position, name in enumerate(names):
        top = 4 + line * (position + 1)
        colour = PALETTE[position % len(PALETTE)]
        legend_draw.rectangle([6, top + 2, 20, top + 14], fill=colour)
        legend_draw.text((28, top + 2), name, fill=(255, 255, 255), font=font)
    canvas = Image.new("RGB", (image.width, image.height + legend.height))
    canvas.paste(image, (0, 0))
    canvas.paste(legend, (0, image.height))
    with atomic_path(path, format_suffix=".png") as temporary:
        canvas.save(temporary, format="PNG", optimize=True)
    return os.fspath(path)


def _overlay_layers(
    resource: BaseResource, annotations: Sequence[Annotation], slice_index: int | None
) -> tuple[np.ndarray, list[tuple[np.ndarray | None, tuple[int, int, int]]], list[str], int | None]:
    """The 2-D picture, one (mask, colour) per mask annotation, label names, slice drawn."""
    names: list[str] = []
    for annotation in annotations:
        if annotation.identifier not in names:
            names.append(annotation.identifier)
    masks = [a for a in annotations if isinstance(a, SegmentationAnnotation)]
    if isinstance(resource, VolumeResource):
        if slice_index is None:
            slice_index = _busiest_slice(masks, resource.num_slices)
        picture = resource.get_slice(slice_index).pixels
        layers = [(_mask_on_slice(m, slice_index), _colour(m, names)) for m in masks]
        return picture, layers, names, slice_index
    if isinstance(resource, ImageResource):
        layers = [(m.mask if m.mask.ndim == 2 else None, _colour(m, names)) for m in masks]
        return resource.pixels, layers, names, None
    raise ResourceError(
        f"An overlay is drawn on an image or a volume slice; got a {resource.kind} resource."
    )


def _colour(annotation: Annotation, names: list[str]) -> tuple[int, int, int]:
    return PALETTE[names.index(annotation.identifier) % len(PALETTE)]


def _busiest_slice(masks: Sequence[SegmentationAnnotation], depth: int) -> int:
    counts = np.zeros(depth, dtype=np.int64)
    for mask in masks:
        if mask.mask.ndim == 3 and mask.mask.shape[0] == depth:
            counts += mask.mask.reshape(depth, -1).sum(axis=1)
        elif mask.slice_index is not None and (mask.slice_axis or "axial") == "axial":
            counts[mask.slice_index] += int(mask.mask.sum())
    return int(np.argmax(counts)) if counts.any() else depth // 2


def _mask_on_slice(mask: SegmentationAnnotation, index: int) -> np.ndarray | None:
    if mask.mask.ndim == 3:
        return mask.mask[index]
    if mask.slice_index == index and (mask.slice_axis or "axial") == "axial":
        return mask.mask
    return None


def _on_slice(annotation: Annotation, index: int | None) -> bool:
    return index is None or annotation.slice_index in (None, index)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def window_to_uint8(pixels: np.ndarray, metadata: Mapping[str, Any]) -> np.ndarray:
    """Window pixels into 0..255: the file's window (DICOM WindowCenter/WindowWidth) when
    the metadata has one, else the 1st to 99th percentile of the values."""
    values = np.asarray(pixels, dtype=np.float32)
    center, width = metadata.get("WindowCenter"), metadata.get("WindowWidth")
    if isinstance(center, (int, float)) and isinstance(width, (int, float)) and width > 0:
        low, high = center - width / 2, center + width / 2
    else:
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    if high <= low:
        high = low + 1
    scaled = np.nan_to_num((values - low) / (high - low), nan=0.0)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
