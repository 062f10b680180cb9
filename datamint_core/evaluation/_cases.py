"""What an evaluation reads: reference label maps (a directory, a manifest, a project) and
the label names, matched to predictions by case.

A case's key is its id without the image file extension and without nnU-Net's channel
suffix (``liver_003.nii.gz`` and ``liver_003_0000.nii.gz`` are both ``liver_003``), so the
ids ``datamint batch`` gives the files of ``imagesTr/`` meet the files of ``labelsTr/``.

Projects: a Medical Segmentation Decathlon directory (``dataset.json`` with ``labels``
``{"0": "background", "1": "liver"}`` and a ``training`` list of ``{"image", "label"}``
paths) or an nnU-Net v2 raw dataset (``labels`` ``{"background": 0, "liver": 1}``,
``file_ending``, ``imagesTr/<case>_0000<file_ending>`` beside ``labelsTr/<case><file_ending>``;
one channel). A name instead of a path is looked up under ``DATAMINT_PROJECTS_DIR``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from datamint_core.batch._inputs import BatchInputError, iter_inputs

_EXTENSIONS = (".nii.gz", ".nii", ".npy", ".npz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
PROJECTS_DIR_ENV = "DATAMINT_PROJECTS_DIR"


class EvaluationInputError(ValueError):
    """The evaluation's inputs cannot be used: missing, unmatched, or with bad labels."""


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


def find_project(project: str | os.PathLike[str]) -> Path:
    """A project directory: the path itself, or a name under ``DATAMINT_PROJECTS_DIR``."""
    path = Path(project)
    if (path / "dataset.json").is_file():
        return path
    root = os.environ.get(PROJECTS_DIR_ENV)
    if root and (Path(root) / os.fspath(project) / "dataset.json").is_file():
        return Path(root) / os.fspath(project)
    where = f" or under {PROJECTS_DIR_ENV}={root!r}" if root else f" (set {PROJECTS_DIR_ENV})"
    raise EvaluationInputError(
        f"No project {os.fspath(project)!r}: a project is a directory with a dataset.json "
        f"(Medical Segmentation Decathlon or nnU-Net v2 layout), given by path{where}."
    )


def project_cases(project: str | os.PathLike[str]) -> tuple[list[dict[str, str]], dict[int, str]]:
    """The labelled cases of a project and its labels.

    Returns:
        ``([{"id", "image", "label"}, ...], {value: name})``, the cases in the order of the
        project's ``training`` list (Decathlon) or of their file names (nnU-Net).

    Raises:
        EvaluationInputError: no project there, or its ``dataset.json`` cannot be used.
    """
    root = find_project(project)
    dataset = _read_json(root / "dataset.json")
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("labels"), Mapping):
        raise EvaluationInputError(
            f"{os.fspath(root / 'dataset.json')!r} has no 'labels' map; a project's dataset.json "
            "names its labels (Decathlon or nnU-Net v2 layout)."
        )
    labels = parse_labels(dataset["labels"])
    if "training" in dataset:
        cases = list(_decathlon_cases(root, dataset["training"]))
    else:
        cases = list(_nnunet_cases(root, dataset))
    if not cases:
        raise EvaluationInputError(f"The project {os.fspath(root)!r} lists no labelled case.")
    return cases, labels


def _decathlon_cases(root: Path, training: Any) -> Iterator[dict[str, str]]:
    if not isinstance(training, list):
        raise EvaluationInputError(
            "dataset.json's 'training' must be a list of {'image': ..., 'label': ...} paths."
        )
    for entry in training:
        if not (isinstance(entry, Mapping) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)):
            raise EvaluationInputError(
                f"dataset.json's training entry {entry!r} is not {{'image': path, 'label': path}}."
            )
        yield {"id": case_key(entry["image"]), "image": os.fspath(root / entry["image"]),
               "label": os.fspath(root / entry["label"])}


def _nnunet_cases(root: Path, dataset: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    ending = dataset.get("file_ending")
    if not isinstance(ending, str):
        raise EvaluationInputError(
            "dataset.json has neither a Decathlon 'training' list nor nnU-Net's 'file_ending'."
        )
    channels = dataset.get("channel_names", {"0": ""})
    if isinstance(channels, Mapping) and len(channels) > 1:
        raise EvaluationInputError(
            f"The project has {len(channels)} channels ({', '.join(map(str, channels.values()))})"
            "; datamint evaluate runs one-channel nnU-Net projects (a Decathlon project's 4-D "
            "images are one file each)."
        )
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        yield {"id": case, "image": os.fspath(root / "imagesTr" / f"{case}_0000{ending}"),
               "label": os.fspath(label)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationInputError(f"{os.fspath(path)!r} does not exist.") from None
    except ValueError as error:
        raise EvaluationInputError(f"{os.fspath(path)!r} is not JSON: {error}") from None
