"""Predict on a medical image file and write the result as JSON, a mask file or a picture.

What ``datamint predict`` runs when its input is a DICOM, NIfTI or picture file, or its
output is a mask (``.nii``/``.nii.gz``, DICOM SEG ``.dcm``) or an ``--overlay`` picture.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from datamint_core._files import write_atomically
from datamint_core.annotations import Annotation
from datamint_core.errors import ResourceError
from datamint_core.resources import BaseResource, ImageResource, VolumeResource


def output_format(path: str | None) -> str:
    """The suffix that decides what is written to ``path``: ``.nii``, ``.nii.gz``, ``.dcm``,
    or ``.json`` (stdout, ``.json`` and any other name get the predictions as JSON)."""
    lower = (path or "").lower()
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if lower.endswith(suffix):
            return suffix
    return ".json"


def predict_file(
    model_uri: str,
    input_path: str | Mapping[str, str],
    output_path: str | None = None,
    *,
    overlay_path: str | None = None,
    params: Mapping[str, Any] | None = None,
    fourth_axis: str = "auto",
    report: Callable[[str], None] | None = None,
) -> list[Annotation]:
    """Read ``input_path``, predict with the model, write the result where asked.

    Args:
        model_uri: the model to load.
        input_path: a DICOM file or series directory, NIfTI, PNG, JPEG, ``.npy`` or ``.npz``;
            or ``{channel name: path}``, the co-registered channels of one multi-modal case
            (:func:`datamint_core.io.read_case`).
        output_path: ``.json`` (stdout when None), ``.nii``/``.nii.gz`` or ``.dcm`` (DICOM
            SEG, for a DICOM input).
        overlay_path: also draw the annotations over the image (or the busiest slice) here.
        params: the prediction params (``mode`` and the mode's params).
        fourth_axis: how a 4-D NIfTI's fourth axis is read (``auto``, ``channels``, ``time``).
        report: called with one line per file written, saying what it holds, e.g.
            ``wrote seg.dcm (DICOM SEG, 2 segments: 'liver', 'tumor')``.

    Returns:
        The annotations found for the input.

    Raises:
        ResourceError: an unreadable input, an output the result cannot be written as.
    """
    from datamint_core.flavor import load_model
    from datamint_core.io import detect_format, read, read_case, writers
    from datamint_core.serving.payload import predictions_to_json

    suffix = output_format(output_path)
    paths = dict(input_path) if isinstance(input_path, Mapping) else {"": input_path}
    # A case's SEG references its first DICOM channel (the channels share one grid).
    formats = {path: detect_format(path) for path in paths.values()}
    dicom_source = next((p for p, found in formats.items() if found == "dicom"), None)
    if suffix == ".dcm" and dicom_source is None:
        shown = ", ".join(f"{path!r} is {found}" for path, found in formats.items())
        raise ResourceError(
            f"A DICOM SEG references its source series, so it needs a DICOM input; "
            f"{shown}. Write .nii.gz or .json instead."
        )
    if isinstance(input_path, Mapping):
        resource = read_case(paths, fourth_axis=fourth_axis)
    else:
        resource = read(input_path, fourth_axis=fourth_axis)
    model = load_model(model_uri)
    (annotations,) = model.predict([resource], dict(params or {}))
    report = report or (lambda line: None)
    names = writers.segmentation_names(annotations)
    if suffix == ".json":
        body = predictions_to_json([annotations])
        if output_path is None:
            sys.stdout.write(body.decode() + "\n")
            sys.stdout.flush()
        else:
            write_atomically(output_path, body)
            report(wrote(output_path, describe_predictions([annotations])))
    elif suffix == ".dcm":
        writers.write_dicom_seg(annotations, output_path, source=dicom_source)
        report(wrote(output_path, f"DICOM SEG, {_named(names, 'segment')}"))
    else:
        writers.write_nifti(annotations, output_path, source=_placed(resource, formats))
        report(wrote(output_path, f"NIfTI label map, {_named(names, 'label', numbered=True)}"))
    if overlay_path is not None:
        writers.write_overlay_png(resource, annotations, overlay_path)
        shown = names or sorted({a.identifier for a in annotations})
        report(wrote(overlay_path, f"overlay picture, {_named(shown, 'label')}"))
    return list(annotations)


def _placed(resource: BaseResource, formats: Mapping[str, str]) -> VolumeResource | None:
    """The volume a NIfTI label map is placed on: the resource itself, or a single DICOM
    image seen as a one-slice volume with its geometry (a view of its pixels)."""
    if isinstance(resource, VolumeResource):
        return resource
    (path, found), *others = formats.items()
    if others or found != "dicom" or not isinstance(resource, ImageResource):
        return None
    from datamint_core.io.dicom import image_affine

    return VolumeResource(resource.pixels[None], affine=image_affine(path))


def wrote(path: str, what: str) -> str:
    """The line that tells the user a file was written: ``wrote PATH (WHAT)``."""
    return f"wrote {path} ({what})"


def describe_predictions(predictions: Sequence[Sequence[Any]]) -> str:
    """What a predictions JSON holds, e.g. ``predictions JSON, 3 annotations for 1 input``."""
    count = sum(len(entry) for entry in predictions)
    inputs = len(predictions)
    return (
        f"predictions JSON, {count} annotation{'' if count == 1 else 's'} for {inputs} "
        f"input{'' if inputs == 1 else 's'}"
    )


def _named(names: Sequence[str], noun: str, *, numbered: bool = False, shown: int = 8) -> str:
    """``2 labels: 1='liver', 2='tumor'``; names past ``shown`` are counted, not listed."""
    if not names:
        return f"no {noun}s"
    listed = [
        f"{index}={name!r}" if numbered else repr(name)
        for index, name in enumerate(names[:shown], start=1)
    ]
    more = f", … ({len(names) - shown} more)" if len(names) > shown else ""
    return f"{len(names)} {noun}{'' if len(names) == 1 else 's'}: {', '.join(listed)}{more}"
