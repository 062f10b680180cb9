"""What an evaluation reads: reference label maps (a directory, a manifest, a project) and
the label names, matched to predictions by case.

A case's key is its id without the image file extension and without nnU-Net's channel
suffix (``liver_003.nii.gz`` and ``liver_003_0000.nii.gz`` are both ``liver_003``), so the
ids ``datamint batch`` gives the files of ``imagesTr/`` meet the files of ``labelsTr/``.

Projects are read as training reads them (:class:`datamint_core.training.ImageDataset`): a
Medical Segmentation Decathlon or nnU-Net v2 raw directory (NIfTI, or DICOM series with
DICOM SEG labels; one file per channel or a 4-D file), by path or by name under the projects
root (``DATAMINT_PROJECTS_DIR``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamint_core.batch._inputs import iter_inputs
from datamint_core.errors import BatchInputError, EvaluationInputError

_EXTENSIONS = (".nii.gz", ".nii", ".npy", ".npz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def case_key(case_id: str) -> str:
    """The id without its image extension and nnU-Net channel suffix (``_0000``)."""
    name = os.path.basename(str(case_id).rstrip("/"))
    for extension in _EXTENSIONS:
        if name.lower().endswith(extension):
            name = name[: -len(extension)]
            break
    return _CHANNEL_SUFFIX.sub("", name)


def reference_rows(source: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The reference label maps of ``source`` (a directory or a manifest), by case key.

    Raises:
        EvaluationInputError: the source cannot be listed, or two entries share a case key.
    """
    rows: dict[str, dict[str, Any]] = {}
    try:
        for row in iter_inputs(source):
            key = case_key(row["id"])
            if key in rows:
                raise EvaluationInputError(
                    f"The labels {os.fspath(source)!r} hold two label maps for case {key!r} "
                    f"({rows[key]['path']!r} and {row['path']!r}); give one per case."
                )
            rows[key] = row
    except BatchInputError as error:
        raise EvaluationInputError(f"Cannot list the labels: {error}") from None
    return rows


def parse_labels(labels: Mapping[Any, Any]) -> dict[int, str]:
    """``{value: name}`` from a Decathlon ``{"1": "liver"}`` or an nnU-Net ``{"liver": 1}``
    labels map; the background (value 0) is left out.

    Raises:
        EvaluationInputError: not one of those forms, or a name or value given twice.
    """
    parsed: dict[int, str] = {}
    for key, value in labels.items():
        if _is_label_value(key) and isinstance(value, str) and value.strip():
            number, name = int(key), value
        elif not _is_label_value(key) and isinstance(key, str) and _is_label_value(value):
            number, name = int(value), key
        else:
            raise EvaluationInputError(
                f"Cannot read the label {key!r}: {value!r}; accepted: {{value: name}} as in a "
                'Decathlon dataset.json ({"1": "liver"}) or {name: value} as in nnU-Net\'s '
                '({"liver": 1}), one integer value per name.'
            )
        if number == 0:
            continue
        if number in parsed or name in parsed.values():
            raise EvaluationInputError(f"The labels {dict(labels)!r} give a value or name twice.")
        parsed[number] = name
    if not parsed:
        raise EvaluationInputError(
            f"The labels {dict(labels)!r} name no foreground label (a value other than 0)."
        )
    return dict(sorted(parsed.items()))


def _is_label_value(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def labels_from_file(path: str | os.PathLike[str]) -> dict[int, str]:
    """The labels of a ``dataset.json`` (its ``labels`` map) or of a JSON labels map."""
    content = _read_json(Path(path))
    labels = content.get("labels", content) if isinstance(content, Mapping) else None
    if not isinstance(labels, Mapping):
        raise EvaluationInputError(
            f"{os.fspath(path)!r} holds no labels map; accepted: a dataset.json with 'labels', "
            'or a JSON object such as {"1": "liver"}.'
        )
    return parse_labels(labels)


def project_cases(project: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The labelled cases of a local project, and its labels as the label files hold them.

    Returns:
        ``([{"id", "images": [path per channel], "channels": [names], "label", "project"},
        ...], {value in the label files: name})``, in the project's case order.

    Raises:
        EvaluationInputError: no such local project, or it cannot be read.
    """
    from datamint_core.errors import ProjectDataError, ProjectNotFoundError
    from datamint_core.training import ImageDataset
    from datamint_core.training._layout import read_layout

    try:
        dataset = ImageDataset(project, source="local")
        layout = read_layout(dataset.root)  # type: ignore[arg-type]
    except (ProjectNotFoundError, ProjectDataError, ValueError) as error:
        raise EvaluationInputError(str(error)) from None
    cases = [
        {"id": case.case_id, "images": list(case.images),
         "channels": list(layout.channel_names), "label": case.label,
         "project": os.fspath(layout.root)}
        for case in layout.training
    ]
    return cases, dict(zip(layout.label_values, layout.label_names, strict=True))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationInputError(f"{os.fspath(path)!r} does not exist.") from None
    except ValueError as error:
        raise EvaluationInputError(f"{os.fspath(path)!r} is not JSON: {error}") from None
